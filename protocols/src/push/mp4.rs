//! Fragmented MP4 recordings: one file with the stream's video and audio
//! (an init segment with both tracks, then a fragment per GOP), so a file
//! cut short by a crash still plays up to its last whole fragment, and
//! every fragment starts at a keyframe, where players can seek.
//!
//! Sans IO: events in, bytes out. Payloads are not copied; a fragment is
//! its `moof` + `mdat` header followed by the frames' own bytes.

use bytes::Bytes;
use tidecast_media::{Event, Frame, MediaKind, Track, TrackId};

use crate::cmaf::boxes::{fragment_header_tracks, init_segment_tracks, timescale, Sample};
use crate::cmaf::progressive::{self, IndexedSample, Layout};

/// Most samples a recording indexes for its faststart rewrite (about 16
/// hours of 25 fps video with AAC; 32 bytes each): a longer file stays
/// fragmented.
const MAX_INDEXED: usize = 4_000_000;

/// An audio-only recording cuts a fragment this often (µs).
const AUDIO_FRAGMENT_US: i64 = 1_000_000;

/// One recorded track.
struct Recorded {
    track: Track,
    /// The track id in the file.
    id: u32,
    timescale: u32,
    /// The newest frame, waiting for the next to know its duration.
    pending: Option<Frame>,
    /// Samples of the fragment being gathered.
    samples: Vec<Sample>,
    /// The last duration, for the final frame.
    last_duration: u32,
}

/// What a recording writes: its init segment, then fragments.
#[derive(Default)]
pub struct Mp4Recorder {
    tracks: Vec<Recorded>,
    /// The stream's tracks, until the first frame fixes the file's: a
    /// stream announces its tracks one by one as their configurations
    /// arrive, all of them before its first frame.
    announced: Option<std::sync::Arc<[Track]>>,
    /// Stream time (µs) of the first recorded keyframe: the file's zero.
    base: Option<i64>,
    sequence: u32,
    /// Media written so far (µs from `base` to the last frame's end).
    pub written_us: i64,
    /// Frames written, per kind (video, audio).
    pub frames: (u64, u64),
    /// Bytes handed out so far: the file's size.
    offset: u64,
    /// Per recorded track, where each sample's bytes are in the file, for
    /// the faststart rewrite; `None` when not wanted (or grown too large).
    index: Option<Vec<Vec<IndexedSample>>>,
    /// The index outgrew [`MAX_INDEXED`] and was dropped.
    pub index_dropped: bool,
}

impl Mp4Recorder {
    /// A recorder that has seen nothing yet.
    pub fn new() -> Mp4Recorder {
        Mp4Recorder::default()
    }

    /// A recorder that also indexes its samples, for [`Mp4Recorder::progressive`].
    pub fn with_index() -> Mp4Recorder {
        Mp4Recorder { index: Some(Vec::new()), ..Mp4Recorder::default() }
    }

    /// The file rewritten with its index in front: the head and the ranges
    /// of this file to copy after it. `None` without an index.
    pub fn progressive(&self) -> Option<Result<Layout, crate::cmaf::boxes::CmafError>> {
        let index = self.index.as_ref().filter(|ix| ix.iter().any(|t| !t.is_empty()))?;
        let tracks: Vec<progressive::Indexed<'_>> = self
            .tracks
            .iter()
            .zip(index)
            .map(|(t, samples)| progressive::Indexed { track: &t.track, samples })
            .collect();
        Some(progressive::layout(&tracks))
    }

    /// Whether the recorder chose its tracks (it wrote its init segment).
    pub fn started(&self) -> bool {
        !self.tracks.is_empty()
    }

    /// Takes `ev`; returns what to append to the file, in order.
    pub fn event(&mut self, ev: Event) -> Vec<Bytes> {
        match ev {
            Event::Tracks(tracks) if !self.started() => {
                self.announced = Some(tracks);
                Vec::new()
            }
            // A later change of tracks (a new configuration) is not
            // followed: the file keeps the tracks it started with.
            Event::Tracks(_) | Event::Discontinuity => Vec::new(),
            Event::Frame(f) if !self.started() => {
                let Some(tracks) = self.announced.take() else { return Vec::new() };
                let mut out = self.choose(&tracks);
                out.extend(self.frame(f));
                out
            }
            Event::Frame(f) => self.frame(f),
        }
    }

    /// The first video and the first audio track MP4 can carry.
    fn choose(&mut self, tracks: &[Track]) -> Vec<Bytes> {
        let usable = |t: &&Track| crate::cmaf::boxes::init_segment(t).is_ok();
        // The source's own video; a ladder's rung only when it is all
        // there is (a push that selected it, `?video=360p`).
        let usable_tracks: Vec<Track> = tracks.iter().filter(usable).cloned().collect();
        let video = super::select::first_of(MediaKind::Video, &usable_tracks);
        let audio = tracks.iter().filter(|t| t.kind() == MediaKind::Audio).find(usable);
        let chosen: Vec<&Track> = [video, audio].into_iter().flatten().collect();
        if chosen.is_empty() {
            return Vec::new();
        }
        let Ok(init) = init_segment_tracks(&chosen) else { return Vec::new() };
        self.tracks = chosen
            .into_iter()
            .enumerate()
            .map(|(i, t)| Recorded {
                track: t.clone(),
                id: 1 + i as u32,
                timescale: timescale(t),
                pending: None,
                samples: Vec::new(),
                last_duration: 0,
            })
            .collect();
        if let Some(index) = &mut self.index {
            *index = vec![Vec::new(); self.tracks.len()];
        }
        self.offset += init.len() as u64;
        vec![init]
    }

    fn has_video(&self) -> bool {
        self.tracks.iter().any(|t| t.track.kind() == MediaKind::Video)
    }

    fn frame(&mut self, f: Frame) -> Vec<Bytes> {
        let Some(i) = self.tracks.iter().position(|t| t.track.id == f.track) else { return Vec::new() };
        let video = self.tracks[i].track.kind() == MediaKind::Video;
        // The file starts at a keyframe of its video (or at once without video).
        let base = match self.base {
            Some(b) => b,
            None if !video && self.has_video() => return Vec::new(),
            None if video && !f.keyframe => return Vec::new(),
            None => *self.base.insert(f.dts),
        };
        if f.dts < base {
            return Vec::new();
        }
        let mut out = Vec::new();
        // A video keyframe closes the fragment before it (its own previous
        // frame included); audio alone cuts every second.
        let cut = if video {
            f.keyframe
        } else {
            !self.has_video()
                && self.tracks[i]
                    .samples
                    .first()
                    .is_some_and(|s| f.dts - base - us(s.dts, self.tracks[i].timescale) >= AUDIO_FRAGMENT_US)
        };
        self.close_pending(i, f.dts - base);
        if cut {
            out.extend(self.fragment());
        }
        self.tracks[i].pending = Some(Frame { dts: f.dts - base, ..f });
        out
    }

    /// Gives track `i`'s pending frame its duration (up to `next_us`) and
    /// adds it to the fragment.
    fn close_pending(&mut self, i: usize, next_us: i64) {
        let t = &mut self.tracks[i];
        if let Some(p) = t.pending.take() {
            let s = Sample::from_frame(p, next_us, t.timescale);
            t.last_duration = s.duration;
            let end = us(s.dts + u64::from(s.duration), t.timescale);
            self.written_us = self.written_us.max(end);
            match t.track.kind() {
                MediaKind::Video => self.frames.0 += 1,
                MediaKind::Audio => self.frames.1 += 1,
            }
            t.samples.push(s);
        }
    }

    /// The gathered samples of every track as one fragment.
    fn fragment(&mut self) -> Vec<Bytes> {
        if self.tracks.iter().all(|t| t.samples.is_empty()) {
            return Vec::new();
        }
        self.sequence += 1;
        let runs: Vec<(u32, &[Sample])> = self.tracks.iter().map(|t| (t.id, &t.samples[..])).collect();
        let Ok(head) = fragment_header_tracks(self.sequence, &runs) else {
            for t in &mut self.tracks {
                t.samples.clear();
            }
            return Vec::new();
        };
        let mut at = self.offset + head.len() as u64;
        let mut out = vec![head];
        let count: usize = self.tracks.iter().map(|t| t.samples.len()).sum();
        if self.index.as_ref().is_some_and(|ix| ix.iter().map(Vec::len).sum::<usize>() + count > MAX_INDEXED) {
            self.index = None;
            self.index_dropped = true;
        }
        for (i, t) in self.tracks.iter_mut().enumerate() {
            for s in t.samples.drain(..) {
                let size = s.frame.payload.len();
                if let Some(track) = self.index.as_mut().and_then(|ix| ix.get_mut(i)) {
                    track.push(IndexedSample {
                        offset: at,
                        size: size as u32,
                        dts: s.dts,
                        duration: s.duration,
                        cts: s.cts,
                        keyframe: s.frame.keyframe,
                    });
                }
                at += size as u64;
                out.push(s.frame.payload);
            }
        }
        self.offset = at;
        out
    }

    /// Everything still held, as the last fragment (each track's last frame
    /// lasts as long as the one before it).
    pub fn finish(&mut self) -> Vec<Bytes> {
        for i in 0..self.tracks.len() {
            let t = &self.tracks[i];
            if let Some(p) = &t.pending {
                let d = i64::from(t.last_duration) * tidecast_media::TIMESCALE as i64 / i64::from(t.timescale.max(1));
                let next = p.dts + d.max(1);
                self.close_pending(i, next);
            }
        }
        self.fragment()
    }

    /// The ids of the recorded tracks, for tests.
    pub fn track_ids(&self) -> Vec<TrackId> {
        self.tracks.iter().map(|t| t.track.id).collect()
    }
}

/// Media ticks as microseconds.
fn us(ticks: u64, timescale: u32) -> i64 {
    (u128::from(ticks) * tidecast_media::TIMESCALE as u128 / u128::from(timescale.max(1))) as i64
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mp4_atom::{Any, Decode};
    use tidecast_media::Codec;

    /// An H.264 video track (id 0) and an AAC one (id 1), with real
    /// configuration records; other test modules use them too.
    pub(crate) fn tracks() -> Vec<Track> {
        let sps = [
            0x67, 0xf4, 0x00, 0x0d, 0x91, 0x9b, 0x28, 0x28, 0x3f, 0x60, 0x22, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00,
            0x03, 0x00, 0x64, 0x1e, 0x28, 0x53, 0x2c,
        ];
        let config = tidecast_codecs::h264::build_config(&sps, &[0x68, 0xeb, 0xe3, 0xc4, 0x48, 0x44]).unwrap();
        let info = tidecast_codecs::describe(Codec::H264, &config).unwrap();
        let video = Track { id: 0, codec: Codec::H264, config: config.into(), info };
        let aac = vec![0x12, 0x10];
        let info = tidecast_codecs::describe(Codec::Aac, &aac).unwrap();
        let audio = Track { id: 1, codec: Codec::Aac, config: aac.into(), info };
        vec![video, audio]
    }

    /// Four seconds: 25 fps video with a keyframe each second (the first
    /// frames are audio before the first keyframe), 44.1 kHz AAC.
    fn events() -> Vec<Event> {
        let mut ev = vec![Event::Tracks(tracks().into())];
        let mut frames = Vec::new();
        for a in 0..(4 * 44_100 / 1024) {
            let dts = 1_000_000 + a * 1024 * 1_000_000 / 44_100;
            frames.push(Frame { track: 1, dts, cts: 0, keyframe: true, payload: Bytes::from(vec![0xa0; 200]) });
        }
        for v in 0..100i64 {
            let dts = 1_050_000 + v * 40_000;
            frames.push(Frame { track: 0, dts, cts: 0, keyframe: v % 25 == 0, payload: Bytes::from(vec![0x65; 900]) });
        }
        frames.sort_by_key(|f| f.dts);
        ev.extend(frames.into_iter().map(Event::Frame));
        ev
    }

    #[test]
    fn one_file_with_both_tracks_a_fragment_per_gop_every_frame_from_the_first_keyframe() {
        let mut rec = Mp4Recorder::new();
        let mut out: Vec<Bytes> = events().into_iter().flat_map(|e| rec.event(e)).collect();
        out.extend(rec.finish());
        let file: Vec<u8> = out.concat();
        let mut buf = &file[..];
        let (mut traks, mut moofs, mut video, mut audio) = (0, 0, 0, 0);
        let mut first_is_key = Vec::new();
        while !buf.is_empty() {
            match Any::decode(&mut buf).expect("a box") {
                Any::Moov(m) => traks = m.trak.len(),
                Any::Moof(m) => {
                    moofs += 1;
                    for t in &m.traf {
                        let n = match &t.trun[0].samples {
                            mp4_atom::TrunSamples::Explicit(e) => e.len(),
                            _ => 0,
                        };
                        if t.tfhd.track_id == 1 {
                            video += n;
                            if let mp4_atom::TrunSamples::Explicit(e) = &t.trun[0].samples {
                                first_is_key.push(e[0].flags == Some(FLAGS_SYNC_TEST));
                            }
                        } else {
                            audio += n;
                        }
                    }
                }
                _ => {}
            }
        }
        assert_eq!(traks, 2);
        assert_eq!(moofs, 4, "one fragment per one-second GOP");
        assert_eq!(video, 100, "every video frame");
        assert!(first_is_key.iter().all(|&k| k), "each fragment starts at a keyframe");
        // Audio from the first keyframe on (50 ms of it came before).
        assert_eq!(audio as u64, rec.frames.1);
        assert!((168..=172).contains(&audio), "{audio}");
        assert!((rec.written_us - 4_000_000).abs() < 60_000, "{}", rec.written_us);
    }

    const FLAGS_SYNC_TEST: u32 = 0x0200_0000;

    #[test]
    fn audio_before_any_video_keyframe_and_unknown_tracks_are_left_out() {
        let frame = |track, dts, keyframe| Event::Frame(Frame { track, dts, cts: 0, keyframe, payload: Bytes::new() });
        let mut rec = Mp4Recorder::new();
        assert!(rec.event(frame(0, 0, true)).is_empty(), "no tracks announced yet");
        // Tracks come one at a time; the first frame fixes them.
        assert!(rec.event(Event::Tracks(tracks()[..1].to_vec().into())).is_empty());
        assert!(rec.event(Event::Tracks(tracks().into())).is_empty());
        let first = rec.event(frame(1, 0, true));
        assert_eq!(first.len(), 1, "the init segment, and no audio before the first video keyframe");
        assert_eq!(rec.track_ids(), vec![0, 1]);
        assert!(rec.event(frame(0, 10, false)).is_empty(), "no video before its first keyframe");
        assert!(rec.event(frame(9, 20, true)).is_empty(), "a track not recorded");
        assert!(rec.finish().is_empty(), "nothing recorded yet");
        assert_eq!(rec.frames, (0, 0));
    }
}

//! Cuts a stream's video into the MPEG-TS segments a Livepeer gateway
//! transcodes: each starts at a keyframe (with PAT, PMT and the parameter
//! sets), and a segment ends at the first keyframe after at least
//! [`Cutter::min_duration`] has accumulated, or earlier when the track's
//! configuration changes (new parameter sets start a new segment, as
//! MistServer's Livepeer process does). Sans-IO: frames in with `push`,
//! segments out with `poll`.
//!
//! Only the video track is sent: the renditions are video, and the
//! stream's own audio plays beside them.

use std::collections::VecDeque;

use bytes::Bytes;
use tidecast_media::{Frame, Track};

use crate::mpegts::TsMuxer;

/// A segment ready for upload.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Sequence number, from 0 for the stream.
    pub seq: u64,
    /// Decode time of its first frame (a keyframe), stream clock (µs).
    pub start_dts: i64,
    /// Its duration, µs (to the next segment's keyframe).
    pub duration_us: i64,
    /// The source's picture size.
    pub width: u32,
    /// The source's picture height.
    pub height: u32,
    /// Frames in it.
    pub frames: u32,
    /// The MPEG-TS bytes.
    pub data: Bytes,
}

/// Counters of one cutter.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CutterStats {
    /// Frames before the first keyframe (or after an oversized segment)
    /// that no segment could start with.
    pub frames_skipped: u64,
    /// Segments given up because they grew past [`Cutter::max_bytes`]
    /// without a keyframe.
    pub oversized: u64,
}

struct Open {
    start_dts: i64,
    last_dts: i64,
    frames: u32,
    data: Vec<u8>,
}

/// The segment cutter of one stream.
pub struct Cutter {
    /// Shortest segment, µs (a segment ends at the first keyframe after it).
    pub min_duration: i64,
    /// Largest segment, bytes; past it the segment is dropped (counted) and
    /// the next keyframe starts anew.
    pub max_bytes: usize,
    track: Option<Track>,
    muxer: Option<TsMuxer>,
    open: Option<Open>,
    next_seq: u64,
    /// Frame duration seen last, to close the final segment.
    last_step: i64,
    ready: VecDeque<Segment>,
    stats: CutterStats,
}

impl Default for Cutter {
    fn default() -> Self {
        Cutter::new()
    }
}

impl Cutter {
    /// A cutter with one-second segments at least and 32 MiB at most.
    pub fn new() -> Cutter {
        Cutter {
            min_duration: 1_000_000,
            max_bytes: 32 << 20,
            track: None,
            muxer: None,
            open: None,
            next_seq: 0,
            last_step: 33_333,
            ready: VecDeque::new(),
            stats: CutterStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> CutterStats {
        self.stats
    }

    /// The video track to cut (`None`: none). A different track or
    /// configuration ends the open segment: the next starts at a keyframe
    /// with the new parameter sets.
    pub fn set_track(&mut self, track: Option<Track>) {
        let same = match (&self.track, &track) {
            (Some(a), Some(b)) => a.id == b.id && a.codec == b.codec && a.config == b.config,
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        self.close(None);
        self.muxer = track.as_ref().map(|t| TsMuxer::new(std::slice::from_ref(t)));
        self.track = track;
    }

    /// Takes one frame (others than the track's are ignored).
    pub fn push(&mut self, f: &Frame) {
        let Some(track) = &self.track else { return };
        if f.track != track.id {
            return;
        }
        if let Some(o) = &self.open {
            if f.dts > o.last_dts {
                self.last_step = (f.dts - o.last_dts).min(1_000_000);
            }
            // Half a frame of slack: a one-second GOP at 30 fps is 999,990 µs
            // long in whole microseconds, and still a one-second segment.
            if f.keyframe && f.dts - o.start_dts + self.last_step / 2 >= self.min_duration {
                self.close(Some(f.dts));
            }
        }
        if self.open.is_none() {
            if !f.keyframe {
                self.stats.frames_skipped += 1;
                return;
            }
            self.open = Some(Open { start_dts: f.dts, last_dts: f.dts, frames: 0, data: Vec::new() });
        }
        let Some(bytes) = self.muxer.as_mut().and_then(|m| m.frame(f)) else { return };
        let Some(o) = &mut self.open else { return };
        if o.data.len() + bytes.len() > self.max_bytes {
            self.open = None;
            self.stats.oversized += 1;
            return;
        }
        o.data.extend_from_slice(&bytes);
        o.last_dts = o.last_dts.max(f.dts);
        o.frames += 1;
    }

    /// The stream ended: the open segment is complete.
    pub fn finish(&mut self) {
        self.close(None);
    }

    /// The next complete segment.
    pub fn poll(&mut self) -> Option<Segment> {
        self.ready.pop_front()
    }

    /// Completes the open segment; it ends at `end` (the next keyframe's
    /// decode time), else one frame after its last.
    fn close(&mut self, end: Option<i64>) {
        let (Some(o), Some(track)) = (self.open.take(), &self.track) else { return };
        if o.frames == 0 {
            return;
        }
        let end = end.unwrap_or(o.last_dts + self.last_step);
        self.ready.push_back(Segment {
            seq: self.next_seq,
            start_dts: o.start_dts,
            duration_us: (end - o.start_dts).max(1),
            width: track.info.width,
            height: track.info.height,
            frames: o.frames,
            data: Bytes::from(o.data),
        });
        self.next_seq += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidecast_codecs::h264;
    use tidecast_media::{Codec, TrackInfo};

    fn track(id: u32, pps: u8) -> Track {
        let sps = [
            0x67, 0x42, 0xc0, 0x1f, 0x91, 0x9b, 0x28, 0x28, 0x3f, 0x60, 0x22, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00,
            0x03, 0x00, 0x64, 0x1e, 0x28, 0x53, 0x2c,
        ];
        let config = h264::build_config(&sps, &[0x68, 0xeb, 0xe3, 0xc4, pps]).expect("avcC");
        Track {
            id,
            codec: Codec::H264,
            config: config.into(),
            info: TrackInfo { width: 640, height: 360, ..TrackInfo::default() },
        }
    }

    fn frame(track: u32, dts: i64, key: bool) -> Frame {
        let nal: &[u8] = if key { &[0, 0, 0, 3, 0x65, 0x88, 0x84] } else { &[0, 0, 0, 3, 0x41, 0x9a, 0x02] };
        Frame { track, dts, cts: 0, keyframe: key, payload: Bytes::from_static(nal) }
    }

    #[test]
    fn segments_start_on_keyframes_and_last_at_least_a_second() {
        let mut c = Cutter::new();
        c.set_track(Some(track(0, 0x48)));
        c.push(&frame(0, 0, false)); // before any keyframe
                                     // 30 fps, a keyframe every 0.5 s: segments of 1 s (two GOPs).
        for i in 0..90i64 {
            c.push(&frame(0, 1_000_000 + i * 33_333, i % 15 == 0));
            c.push(&frame(7, 1_000_000 + i * 33_333, true)); // another track: ignored
        }
        c.finish();
        let segs: Vec<Segment> = std::iter::from_fn(|| c.poll()).collect();
        assert_eq!(segs.len(), 3);
        for (i, s) in segs.iter().enumerate() {
            assert_eq!(s.seq, i as u64);
            assert_eq!(s.frames, 30);
            assert_eq!(s.start_dts, 1_000_000 + i as i64 * 30 * 33_333);
            assert!((s.duration_us - 999_990).abs() < 10, "{}", s.duration_us);
            assert_eq!((s.width, s.height), (640, 360));
            assert_eq!(s.data[0], 0x47, "TS packets");
            assert_eq!(s.data.len() % 188, 0);
        }
        assert_eq!(c.stats().frames_skipped, 1);
    }

    #[test]
    fn new_parameter_sets_cut_early_and_oversized_segments_are_dropped() {
        let mut c = Cutter::new();
        c.set_track(Some(track(0, 0x48)));
        for i in 0..10i64 {
            c.push(&frame(0, i * 33_333, i == 0));
        }
        c.set_track(Some(track(0, 0x49))); // new PPS: the open segment ends here
        c.push(&frame(0, 10 * 33_333, true));
        let first = c.poll().expect("the segment before the change");
        assert_eq!((first.frames, first.seq), (10, 0));
        assert!(c.poll().is_none());
        c.max_bytes = 1000;
        for i in 11..40i64 {
            c.push(&frame(0, i * 33_333, false));
        }
        assert_eq!(c.stats().oversized, 1);
        c.finish();
        assert!(c.poll().is_none(), "nothing of the oversized segment is sent");
    }
}

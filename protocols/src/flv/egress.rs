//! The FLV form of a stream, per reader: which tracks it carries, their
//! sequence headers, a tag per frame. RTMP players and HTTP-FLV viewers
//! (and RTMP push targets) read a stream through it; they differ only in
//! how a tag is framed on the wire ([`TagSink`]).

use bytes::{BufMut, Bytes, BytesMut};
use tidecast_media::{Event, MediaKind, Track};

use super::{config_tag, frame_tag_header, TagKind};

/// Where tags go: an RTMP session (one message per tag) or an FLV file.
pub trait TagSink {
    /// One tag of `kind` at `timestamp` (ms), whose body is `prefix` (a few
    /// header bytes, copied) followed by `body` (sent as it is).
    fn tag(&mut self, kind: TagKind, timestamp: u32, prefix: &[u8], body: &Bytes);
}

/// What one reader has seen of a stream, to turn its events into tags.
#[derive(Debug, Default)]
pub struct FlvEgress {
    /// The height of the ladder rung asked for (`?rendition=480p`).
    want_height: Option<u32>,
    /// The video track is a rung that has not had a keyframe yet (the
    /// stream's readers start at the source's keyframes).
    video_wait_key: bool,
    video: Option<Track>,
    audio: Option<Track>,
    base: Option<i64>,
    last_ts: u32,
    warned: bool,
}

/// What [`FlvEgress::event`] has to tell its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressNote {
    /// Nothing.
    None,
    /// The stream has tracks FLV cannot carry here, or more than one video
    /// or audio track; they are left out (said once per reader).
    TracksLeftOut,
}

impl FlvEgress {
    /// A reader that plays the rung of height `want_height` if the stream
    /// has one, else the source's video.
    pub fn new(want_height: Option<u32>) -> FlvEgress {
        FlvEgress { want_height, ..FlvEgress::default() }
    }

    /// The timestamp of the last tag, ms.
    pub fn last_timestamp(&self) -> u32 {
        self.last_ts
    }

    /// Hands `sink` the tags `ev` means for this reader.
    pub fn event(&mut self, ev: Event, sink: &mut impl TagSink) -> EgressNote {
        match ev {
            Event::Tracks(tracks) => return self.tracks(&tracks, sink),
            Event::Frame(f) => {
                let Some(track) = self.track_of(f.track) else { return EgressNote::None };
                let Some((kind, header)) = frame_tag_header(track.codec, &f) else { return EgressNote::None };
                if let Some(ts) = self.admit(f.track, f.dts, f.keyframe) {
                    sink.tag(kind, ts, &header, &f.payload);
                }
            }
            Event::Discontinuity => {}
        }
        EgressNote::None
    }

    /// The tracks in force from now on: picks this reader's video and
    /// audio, and hands `sink` their sequence headers.
    pub fn tracks(&mut self, tracks: &[Track], sink: &mut impl TagSink) -> EgressNote {
        let fits = |t: &&Track| config_tag(t).is_some();
        let videos: Vec<&Track> = tracks.iter().filter(|t| t.kind() == MediaKind::Video).filter(fits).collect();
        let wanted = self.want_height.and_then(|h| videos.iter().find(|t| t.info.height == h));
        let video = wanted.or(videos.first()).map(|t| (*t).clone());
        if video.as_ref().map(|t| t.id) != self.video.as_ref().map(|t| t.id) {
            self.video_wait_key = video.as_ref().is_some_and(|t| t.id >= tidecast_media::DERIVED_TRACK_BASE);
        }
        self.video = video;
        self.audio = tracks.iter().filter(|t| t.kind() == MediaKind::Audio).find(fits).cloned();
        let kept = usize::from(self.video.is_some()) + usize::from(self.audio.is_some());
        let own = tracks.iter().filter(|t| t.id < tidecast_media::DERIVED_TRACK_BASE).count();
        // Sequence headers go out at the current time, before the next frame.
        for t in [&self.video, &self.audio].into_iter().flatten() {
            if let Some((kind, tag)) = config_tag(t) {
                sink.tag(kind, self.last_ts, &[], &tag);
            }
        }
        if !self.warned && own > kept {
            self.warned = true;
            return EgressNote::TracksLeftOut;
        }
        EgressNote::None
    }

    /// This reader's track `id`, if it carries it.
    fn track_of(&self, id: tidecast_media::TrackId) -> Option<&Track> {
        [&self.video, &self.audio].into_iter().flatten().find(|t| t.id == id)
    }

    /// Whether this reader sends a frame of `track` at `dts` (µs; a
    /// keyframe or not) FLV can carry, and at what timestamp (ms).
    pub fn admit(&mut self, track: tidecast_media::TrackId, dts: i64, keyframe: bool) -> Option<u32> {
        let t = self.track_of(track)?;
        if t.kind() == MediaKind::Video && self.video_wait_key {
            if !keyframe {
                return None;
            }
            self.video_wait_key = false;
        }
        // Start the clock a little before the first frame, so audio that
        // precedes the first keyframe stays positive.
        let b = *self.base.get_or_insert(dts - 500_000);
        self.last_ts = flv_time(dts, b);
        Some(self.last_ts)
    }
}

/// A stream time in µs as an FLV timestamp (ms since `base`, wrapping as
/// RTMP and FLV do).
fn flv_time(dts: i64, base: i64) -> u32 {
    ((dts - base).max(0) / 1000) as u32
}

/// The FLV file form: the file header, then each tag with its 11-byte
/// header and the size that follows it. Payloads are not copied; what is
/// ready is taken with [`FlvFile::take`].
#[derive(Debug)]
pub struct FlvFile {
    head: BytesMut,
    out: Vec<Bytes>,
    queued: usize,
}

impl FlvFile {
    /// A file whose header announces video and audio as asked.
    pub fn new(video: bool, audio: bool) -> FlvFile {
        let mut head = BytesMut::with_capacity(256);
        head.put_slice(b"FLV\x01");
        head.put_u8(u8::from(audio) << 2 | u8::from(video));
        head.put_u32(9);
        head.put_u32(0); // PreviousTagSize0
        FlvFile { head, out: Vec::new(), queued: 0 }
    }

    /// Bytes ready to be taken.
    pub fn queued(&self) -> usize {
        self.queued + self.head.len()
    }

    /// Everything ready, in order.
    pub fn take(&mut self) -> Vec<Bytes> {
        if !self.head.is_empty() {
            self.out.push(self.head.split().freeze());
        }
        self.queued = 0;
        std::mem::take(&mut self.out)
    }
}

impl TagSink for FlvFile {
    fn tag(&mut self, kind: TagKind, timestamp: u32, prefix: &[u8], body: &Bytes) {
        let size = prefix.len() + body.len();
        // A tag's data size field has 24 bits; no frame comes near it
        // (RTMP messages are capped far lower), but never write a lie.
        let Ok(size24) = u32::try_from(size).map(|s| s.min(0xff_ffff)) else { return };
        if size24 as usize != size {
            return;
        }
        self.head.put_u8(match kind {
            TagKind::Audio => 8,
            TagKind::Video => 9,
        });
        self.head.put_uint(u64::from(size24), 3);
        self.head.put_uint(u64::from(timestamp & 0xff_ffff), 3);
        self.head.put_u8((timestamp >> 24) as u8);
        self.head.put_uint(0, 3); // stream id
        self.head.put_slice(prefix);
        if !body.is_empty() {
            self.queued += self.head.len() + body.len();
            self.out.push(self.head.split().freeze());
            self.out.push(body.clone());
        }
        self.head.put_u32(11 + size as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flv::{file_tags, parse_audio, parse_video, AudioTag, VideoTag};
    use tidecast_media::{Codec, Frame, TrackInfo};

    fn tracks() -> Vec<Track> {
        let video = Track {
            id: 0,
            codec: Codec::H264,
            config: Bytes::from_static(&[1, 0x64, 0, 0x1f, 0xff]),
            info: TrackInfo { width: 640, height: 360, ..TrackInfo::default() },
        };
        let audio =
            Track { id: 1, codec: Codec::Aac, config: Bytes::from_static(&[0x11, 0x90]), info: TrackInfo::default() };
        vec![video, audio]
    }

    #[test]
    fn an_flv_file_of_a_stream_reads_back_tag_by_tag() {
        let mut egress = FlvEgress::new(None);
        let mut file = FlvFile::new(true, true);
        egress.event(Event::Tracks(tracks().into()), &mut file);
        let frame = |track, dts, keyframe, data: &'static [u8]| {
            Event::Frame(Frame { track, dts, cts: 0, keyframe, payload: Bytes::from_static(data) })
        };
        egress.event(frame(1, 1_000_000, true, b"AU1"), &mut file);
        egress.event(frame(0, 1_000_000, true, b"KEY"), &mut file);
        egress.event(frame(0, 1_040_000, false, b"P"), &mut file);
        let bytes = Bytes::from(file.take().concat());
        assert_eq!(&bytes[..5], b"FLV\x01\x05");
        let tags: Vec<_> = file_tags(&bytes).collect::<Result<_, _>>().expect("a well-formed file");
        assert_eq!(tags.len(), 5, "two sequence headers and three frames");
        assert!(matches!(parse_video(&tags[0].body).unwrap(), VideoTag::Config { codec: Codec::H264, .. }));
        assert!(matches!(parse_audio(&tags[1].body).unwrap(), AudioTag::Config { codec: Codec::Aac, .. }));
        assert_eq!(
            parse_audio(&tags[2].body).unwrap(),
            AudioTag::Frame { codec: Codec::Aac, data: Bytes::from_static(b"AU1") }
        );
        // The clock starts half a second before the first frame.
        assert_eq!((tags[2].timestamp, tags[3].timestamp, tags[4].timestamp), (500, 500, 540));
        match parse_video(&tags[3].body).unwrap() {
            VideoTag::Frame { keyframe, data, .. } => assert_eq!((keyframe, &data[..]), (true, &b"KEY"[..])),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tracks_flv_cannot_carry_are_said_once() {
        let mut t = tracks();
        t.push(Track { id: 2, codec: Codec::Opus, config: Bytes::new(), info: TrackInfo::default() });
        let mut egress = FlvEgress::new(None);
        let mut file = FlvFile::new(true, true);
        assert_eq!(egress.event(Event::Tracks(t.clone().into()), &mut file), EgressNote::TracksLeftOut);
        assert_eq!(egress.event(Event::Tracks(t.into()), &mut file), EgressNote::None);
    }
}

//! FLV tag bodies, legacy and Enhanced RTMP, and the ingest that turns them
//! into media-core tracks and frames.
//!
//! Enhanced RTMP (veovera's enhanced-rtmp spec, v1/v2) sets bit 7 of a video
//! tag's first byte (`IsExHeader`); the low nibble is then a packet type and a
//! FourCC follows (`avc1`, `hvc1`, `av01`, `vp09`). Audio uses sound format 9
//! for the same purpose (`Opus`, `mp4a`). The legacy codec ids are AVC (7),
//! the widespread HEVC extension (12) and AAC (10).

pub mod egress;
pub mod http;

use crate::ingest::{Delivery, MediaSource};
use bytes::Bytes;
use tidecast_media::{Codec, Frame, Track, TrackId, TIMESCALE};

use crate::rtmp::amf::Amf0;

/// Why a tag body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlvError {
    /// The body is shorter than its header.
    #[error("{0} tag is truncated")]
    Truncated(&'static str),
    /// A codec we cannot carry; the tag is dropped.
    #[error("unsupported {0}")]
    Unsupported(String),
    /// A configuration record that does not parse.
    #[error("bad {codec} configuration: {reason}")]
    BadConfig {
        /// The codec.
        codec: &'static str,
        /// What the parser said.
        reason: String,
    },
}

/// A parsed video tag.
#[derive(Debug, PartialEq, Eq)]
pub enum VideoTag {
    /// A decoder configuration record (avcC, hvcC, av1C).
    Config {
        /// The codec.
        codec: Codec,
        /// The record.
        record: Bytes,
    },
    /// A coded frame.
    Frame {
        /// The codec.
        codec: Codec,
        /// FLV frame type 1.
        keyframe: bool,
        /// Composition offset in ms.
        cts_ms: i32,
        /// Length-prefixed NAL units or AV1 OBUs.
        data: Bytes,
    },
    /// End of sequence, command frames and metadata: nothing to carry.
    Ignored,
}

/// A parsed audio tag.
#[derive(Debug, PartialEq, Eq)]
pub enum AudioTag {
    /// AudioSpecificConfig or OpusHead.
    Config {
        /// The codec.
        codec: Codec,
        /// The record.
        record: Bytes,
    },
    /// A coded frame.
    Frame {
        /// The codec.
        codec: Codec,
        /// The access unit.
        data: Bytes,
    },
    /// Nothing to carry.
    Ignored,
}

fn si24(b: &[u8]) -> i32 {
    let v = (i32::from(b[0]) << 16) | (i32::from(b[1]) << 8) | i32::from(b[2]);
    (v << 8) >> 8
}

fn fourcc_video(f: &[u8]) -> Result<Codec, FlvError> {
    match f {
        b"avc1" => Ok(Codec::H264),
        b"hvc1" => Ok(Codec::H265),
        b"av01" => Ok(Codec::Av1),
        b"vp09" => Ok(Codec::Vp9),
        other => Err(FlvError::Unsupported(format!("video FourCC {:?}", String::from_utf8_lossy(other)))),
    }
}

/// Parses a video tag body.
pub fn parse_video(body: &Bytes) -> Result<VideoTag, FlvError> {
    const W: &str = "video";
    let Some(&b0) = body.first() else { return Err(FlvError::Truncated(W)) };
    if b0 & 0x80 != 0 {
        let frame_type = (b0 >> 4) & 0x07;
        let packet_type = b0 & 0x0f;
        if body.len() < 5 {
            return Err(FlvError::Truncated(W));
        }
        if frame_type == 5 {
            return Ok(VideoTag::Ignored); // command frame, no media
        }
        let codec = fourcc_video(&body[1..5])?;
        let keyframe = frame_type == 1;
        return match packet_type {
            0 => Ok(VideoTag::Config { codec, record: body.slice(5..) }),
            1 => {
                let with_cts = matches!(codec, Codec::H264 | Codec::H265);
                if with_cts {
                    if body.len() < 8 {
                        return Err(FlvError::Truncated(W));
                    }
                    Ok(VideoTag::Frame { codec, keyframe, cts_ms: si24(&body[5..8]), data: body.slice(8..) })
                } else {
                    Ok(VideoTag::Frame { codec, keyframe, cts_ms: 0, data: body.slice(5..) })
                }
            }
            3 => Ok(VideoTag::Frame { codec, keyframe, cts_ms: 0, data: body.slice(5..) }),
            2 | 4 => Ok(VideoTag::Ignored),
            5 => Err(FlvError::Unsupported("Enhanced RTMP MPEG2TSSequenceStart".into())),
            6 => Err(FlvError::Unsupported("Enhanced RTMP multitrack video".into())),
            other => Err(FlvError::Unsupported(format!("Enhanced RTMP video packet type {other}"))),
        };
    }
    let frame_type = b0 >> 4;
    let codec = match b0 & 0x0f {
        7 => Codec::H264,
        12 => Codec::H265,
        other => return Err(FlvError::Unsupported(format!("FLV video codec id {other}"))),
    };
    if frame_type == 5 {
        return Ok(VideoTag::Ignored);
    }
    if body.len() < 5 {
        return Err(FlvError::Truncated(W));
    }
    match body[1] {
        0 => Ok(VideoTag::Config { codec, record: body.slice(5..) }),
        1 => Ok(VideoTag::Frame { codec, keyframe: frame_type == 1, cts_ms: si24(&body[2..5]), data: body.slice(5..) }),
        _ => Ok(VideoTag::Ignored),
    }
}

/// Parses an audio tag body.
pub fn parse_audio(body: &Bytes) -> Result<AudioTag, FlvError> {
    const W: &str = "audio";
    let Some(&b0) = body.first() else { return Err(FlvError::Truncated(W)) };
    match b0 >> 4 {
        10 => {
            if body.len() < 2 {
                return Err(FlvError::Truncated(W));
            }
            match body[1] {
                0 => Ok(AudioTag::Config { codec: Codec::Aac, record: body.slice(2..) }),
                _ => Ok(AudioTag::Frame { codec: Codec::Aac, data: body.slice(2..) }),
            }
        }
        2 => Ok(AudioTag::Frame { codec: Codec::Mp3, data: body.slice(1..) }),
        9 => {
            if body.len() < 5 {
                return Err(FlvError::Truncated(W));
            }
            let codec = match &body[1..5] {
                b"Opus" => Codec::Opus,
                b"mp4a" => Codec::Aac,
                b".mp3" => Codec::Mp3,
                other => {
                    return Err(FlvError::Unsupported(format!("audio FourCC {:?}", String::from_utf8_lossy(other))))
                }
            };
            match b0 & 0x0f {
                0 => Ok(AudioTag::Config { codec, record: body.slice(5..) }),
                1 => Ok(AudioTag::Frame { codec, data: body.slice(5..) }),
                5 => Err(FlvError::Unsupported("Enhanced RTMP multitrack audio".into())),
                _ => Ok(AudioTag::Ignored),
            }
        }
        other => Err(FlvError::Unsupported(format!("FLV sound format {other}"))),
    }
}

/// Extends 32-bit millisecond timestamps that wrap into a 64-bit timeline.
#[derive(Debug, Default)]
struct Unwrapper {
    last: Option<(u32, i64)>,
}

impl Unwrapper {
    fn extend(&mut self, ts: u32) -> i64 {
        let v = match self.last {
            None => i64::from(ts),
            Some((raw, ext)) => ext + i64::from(ts.wrapping_sub(raw) as i32),
        };
        self.last = Some((ts, v));
        v
    }
}

/// Turns FLV tags (from RTMP, and later FLV over HTTP) into media-core tracks
/// and frames. Video is track 0, audio track 1.
#[derive(Debug, Default)]
pub struct FlvIngest {
    video: Option<Track>,
    audio: Option<Track>,
    frame_rate: Option<f64>,
    tracks_changed: bool,
    clock: Unwrapper,
    /// What [`FlvIngest::push`] produced and [`FlvIngest::poll`] hands out.
    out: std::collections::VecDeque<Delivery>,
    /// Frames dropped because their track had no configuration yet.
    pub dropped_before_config: u64,
}

const VIDEO: TrackId = 0;
const AUDIO: TrackId = 1;

impl FlvIngest {
    /// A fresh ingest.
    pub fn new() -> FlvIngest {
        FlvIngest::default()
    }

    /// Takes one tag (the sans-IO input every ingest shares); what it makes
    /// of it waits in [`FlvIngest::poll`]. Media the server cannot carry
    /// comes out as [`Delivery::Unsupported`]; an error here is damage that
    /// must close the session.
    pub fn push(&mut self, kind: TagKind, timestamp: u32, body: &Bytes) -> Result<(), FlvError> {
        let r = match kind {
            TagKind::Video => self.video(timestamp, body),
            TagKind::Audio => self.audio(timestamp, body),
        };
        let frame = match r {
            Ok(f) => f,
            Err(FlvError::Unsupported(what)) => {
                self.out.push_back(Delivery::Unsupported(what));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // The tracks go before the frame that came with them.
        if let Some(t) = self.take_tracks() {
            self.out.push_back(Delivery::Tracks(t));
        }
        if let Some(f) = frame {
            self.out.push_back(Delivery::Frame(f));
        }
        Ok(())
    }

    /// The track list, if it changed since the last call. Push it to the
    /// stream before the frame that came with it.
    pub fn take_tracks(&mut self) -> Option<Vec<Track>> {
        if !std::mem::take(&mut self.tracks_changed) {
            return None;
        }
        Some(self.video.iter().chain(self.audio.iter()).cloned().collect())
    }

    /// Applies onMetaData (frame rate, bitrates).
    pub fn metadata(&mut self, meta: &Amf0) {
        self.frame_rate = meta.get("framerate").and_then(Amf0::as_f64).filter(|f| *f > 0.0 && *f < 1000.0);
        if let (Some(v), Some(fr)) = (self.video.as_mut(), self.frame_rate) {
            if v.info.frame_rate.is_none() {
                v.info.frame_rate = Some(fr);
                self.tracks_changed = true;
            }
        }
    }

    fn set_track(
        slot: &mut Option<Track>,
        changed: &mut bool,
        id: TrackId,
        codec: Codec,
        record: Bytes,
    ) -> Result<(), FlvError> {
        if slot.as_ref().is_some_and(|t| t.codec == codec && t.config == record) {
            return Ok(());
        }
        let info = tidecast_codecs::describe(codec, &record)
            .map_err(|e| FlvError::BadConfig { codec: codec.name(), reason: e.to_string() })?;
        *slot = Some(Track { id, codec, config: record, info });
        *changed = true;
        Ok(())
    }

    /// Handles one video tag; returns the frame to push, if any.
    pub fn video(&mut self, timestamp: u32, body: &Bytes) -> Result<Option<Frame>, FlvError> {
        let dts_ms = self.clock.extend(timestamp);
        match parse_video(body)? {
            VideoTag::Config { codec, record } => {
                Self::set_track(&mut self.video, &mut self.tracks_changed, VIDEO, codec, record)?;
                if let (Some(v), Some(fr)) = (self.video.as_mut(), self.frame_rate) {
                    v.info.frame_rate.get_or_insert(fr);
                }
                Ok(None)
            }
            VideoTag::Frame { codec, keyframe, cts_ms, data } => {
                if self.video.as_ref().map(|t| t.codec) != Some(codec) || data.is_empty() {
                    self.dropped_before_config += 1;
                    return Ok(None);
                }
                Ok(Some(Frame {
                    track: VIDEO,
                    dts: dts_ms * 1000,
                    cts: cts_ms.saturating_mul(1000),
                    keyframe,
                    payload: data,
                }))
            }
            VideoTag::Ignored => Ok(None),
        }
    }

    /// Handles one audio tag; returns the frame to push, if any.
    pub fn audio(&mut self, timestamp: u32, body: &Bytes) -> Result<Option<Frame>, FlvError> {
        let dts_ms = self.clock.extend(timestamp);
        match parse_audio(body)? {
            AudioTag::Config { codec, record } => {
                Self::set_track(&mut self.audio, &mut self.tracks_changed, AUDIO, codec, record)?;
                Ok(None)
            }
            AudioTag::Frame { codec, data } => {
                if codec == Codec::Mp3 && self.audio.is_none() {
                    Self::set_track(&mut self.audio, &mut self.tracks_changed, AUDIO, codec, Bytes::new())?;
                }
                if self.audio.as_ref().map(|t| t.codec) != Some(codec) || data.is_empty() {
                    self.dropped_before_config += 1;
                    return Ok(None);
                }
                Ok(Some(Frame {
                    track: AUDIO,
                    dts: dts_ms * (TIMESCALE as i64 / 1000),
                    cts: 0,
                    keyframe: true,
                    payload: data,
                }))
            }
            AudioTag::Ignored => Ok(None),
        }
    }
}

impl MediaSource for FlvIngest {
    fn poll(&mut self) -> Option<Delivery> {
        if let Some(t) = self.take_tracks() {
            // Metadata changed a track (its frame rate) between tags.
            self.out.push_back(Delivery::Tracks(t));
        }
        self.out.pop_front()
    }
}

/// One tag of an FLV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTag {
    /// 8 audio, 9 video, 18 script data.
    pub kind: u8,
    /// Milliseconds (24 bits plus the extension byte).
    pub timestamp: u32,
    /// The tag body, a slice of the file.
    pub body: Bytes,
}

/// The tags of an FLV file (header, then tags each followed by its
/// PreviousTagSize). Stops at the first error; a truncated last tag is an
/// error, not a silent end.
pub fn file_tags(file: &Bytes) -> impl Iterator<Item = Result<FileTag, FlvError>> + '_ {
    let header_len = match file.get(..9) {
        Some([b'F', b'L', b'V', _, _, a, b, c, d]) => Some(u32::from_be_bytes([*a, *b, *c, *d]) as usize),
        _ => None,
    };
    let mut pos = header_len.map(|h| h.saturating_add(4));
    let mut failed = header_len.is_none();
    std::iter::from_fn(move || {
        if failed {
            failed = false; // report once, then end
            pos = None;
            return Some(Err(FlvError::Truncated("FLV file header")));
        }
        let at = pos?;
        if at >= file.len() {
            return None;
        }
        let Some(h) = file.get(at..at + 11) else {
            pos = None;
            return Some(Err(FlvError::Truncated("FLV file tag header")));
        };
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let timestamp = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let body_at = at + 11;
        let Some(body) = file.get(body_at..body_at + size).map(|_| file.slice(body_at..body_at + size)) else {
            pos = None;
            return Some(Err(FlvError::Truncated("FLV file tag")));
        };
        pos = Some(body_at + size + 4);
        Some(Ok(FileTag { kind: h[0] & 0x1f, timestamp, body }))
    })
}

/// Which RTMP message a tag travels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    /// Message type 8.
    Audio,
    /// Message type 9.
    Video,
}

/// The few bytes of an FLV tag header, kept inline: a player's writer
/// copies them next to the chunk header instead of allocating per frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagHeader {
    bytes: [u8; 8],
    len: u8,
}

impl TagHeader {
    pub(crate) fn new(parts: &[&[u8]]) -> TagHeader {
        let mut h = TagHeader { bytes: [0; 8], len: 0 };
        for p in parts {
            for &b in *p {
                if usize::from(h.len) < h.bytes.len() {
                    h.bytes[usize::from(h.len)] = b;
                    h.len += 1;
                }
            }
        }
        h
    }
}

impl std::ops::Deref for TagHeader {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The FLV tag header that goes before a frame's payload when a stream is
/// played over RTMP: legacy form for H.264 and AAC (what every player
/// reads), Enhanced RTMP for HEVC, AV1 and VP9. The payload follows
/// untouched. `None` for codecs FLV cannot carry here (Opus, VP8, MP3).
pub fn frame_tag_header(codec: Codec, frame: &Frame) -> Option<(TagKind, TagHeader)> {
    let cts = (frame.cts / 1000).clamp(-(1 << 23), (1 << 23) - 1);
    let cts = &cts.to_be_bytes()[1..];
    let kf = frame.keyframe;
    Some(match codec {
        Codec::H264 => (TagKind::Video, TagHeader::new(&[&[if kf { 0x17 } else { 0x27 }, 1], cts])),
        Codec::H265 | Codec::Av1 | Codec::Vp9 => (TagKind::Video, ex_header(codec, 1, kf, cts)?),
        Codec::Aac => (TagKind::Audio, TagHeader::new(&[&[0xaf, 1]])),
        _ => return None,
    })
}

/// The sequence-header tag body (configuration record) of a track, sent to
/// a player before its first frame and again when the record changes.
pub fn config_tag(track: &Track) -> Option<(TagKind, Bytes)> {
    let (kind, mut tag) = match track.codec {
        Codec::H264 => (TagKind::Video, vec![0x17, 0, 0, 0, 0]),
        Codec::H265 | Codec::Av1 | Codec::Vp9 => (TagKind::Video, ex_header(track.codec, 0, true, &[])?.to_vec()),
        Codec::Aac => (TagKind::Audio, vec![0xaf, 0]),
        _ => return None,
    };
    tag.extend_from_slice(&track.config);
    Some((kind, Bytes::from(tag)))
}

fn ex_header(codec: Codec, packet_type: u8, keyframe: bool, cts: &[u8]) -> Option<TagHeader> {
    let fourcc: &[u8; 4] = match codec {
        Codec::H265 => b"hvc1",
        Codec::Av1 => b"av01",
        Codec::Vp9 => b"vp09",
        _ => return None,
    };
    let first = [0x80 | (if keyframe { 1 } else { 2 } << 4) | packet_type];
    let cts = if packet_type == 1 && codec == Codec::H265 { cts } else { &[] };
    Some(TagHeader::new(&[&first, fourcc, cts]))
}

/// Builds an FLV video tag body in Enhanced RTMP form (for push targets and tests).
pub fn ex_video_tag(codec_fourcc: &[u8; 4], packet_type: u8, keyframe: bool, cts_ms: i32, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 8);
    out.push(0x80 | (if keyframe { 1 } else { 2 } << 4) | (packet_type & 0x0f));
    out.extend_from_slice(codec_fourcc);
    if packet_type == 1 && matches!(codec_fourcc, b"avc1" | b"hvc1") {
        out.extend_from_slice(&cts_ms.to_be_bytes()[1..]);
    }
    out.extend_from_slice(data);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flv_file(tags: &[(u8, u32, &[u8])]) -> Vec<u8> {
        let mut f = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        for &(kind, ts, body) in tags {
            let size = (body.len() as u32).to_be_bytes();
            let t = ts.to_be_bytes();
            f.extend_from_slice(&[kind, size[1], size[2], size[3], t[1], t[2], t[3], t[0], 0, 0, 0]);
            f.extend_from_slice(body);
            f.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
        }
        f
    }

    #[test]
    fn file_tags_walks_a_file_and_reports_truncation() {
        let file = Bytes::from(flv_file(&[(9, 0, b"key"), (8, 23, b"aac"), (9, 0x0100_0000 + 40, b"")]));
        let tags: Vec<_> = file_tags(&file).collect::<Result<_, _>>().unwrap();
        assert_eq!(tags.len(), 3);
        assert_eq!((tags[0].kind, &tags[0].body[..]), (9, &b"key"[..]));
        assert_eq!((tags[1].kind, tags[1].timestamp), (8, 23));
        assert_eq!(tags[2].timestamp, 0x0100_0000 + 40, "the extended timestamp byte is the high byte");
        let cut = file.slice(..file.len() - 6);
        assert_eq!(file_tags(&cut).last().unwrap(), Err(FlvError::Truncated("FLV file tag header")));
        let one = Bytes::from(flv_file(&[(9, 0, b"key")]));
        let cut = one.slice(..one.len() - 5);
        assert_eq!(file_tags(&cut).last().unwrap(), Err(FlvError::Truncated("FLV file tag")));
        let junk: Vec<_> = file_tags(&Bytes::from_static(b"GIF89a")).collect();
        assert_eq!(junk, vec![Err(FlvError::Truncated("FLV file header"))]);
    }

    #[test]
    fn egress_tags_parse_back_as_ingest_reads_them() {
        for codec in [Codec::H264, Codec::H265, Codec::Av1] {
            let frame = Frame { track: 0, dts: 0, cts: 40_000, keyframe: true, payload: Bytes::from_static(b"DATA") };
            let (kind, header) = frame_tag_header(codec, &frame).unwrap();
            assert_eq!(kind, TagKind::Video);
            let body = Bytes::from([&header[..], b"DATA"].concat());
            match parse_video(&body).unwrap() {
                VideoTag::Frame { codec: c, keyframe, cts_ms, data } => {
                    assert_eq!((c, keyframe, &data[..]), (codec, true, &b"DATA"[..]));
                    assert_eq!(cts_ms, if codec == Codec::Av1 { 0 } else { 40 });
                }
                other => panic!("{codec:?}: {other:?}"),
            }
        }
        let aac = Frame { track: 1, dts: 0, cts: 0, keyframe: true, payload: Bytes::from_static(b"AU") };
        let (kind, header) = frame_tag_header(Codec::Aac, &aac).unwrap();
        assert_eq!(kind, TagKind::Audio);
        let body = Bytes::from([&header[..], b"AU"].concat());
        assert_eq!(parse_audio(&body).unwrap(), AudioTag::Frame { codec: Codec::Aac, data: Bytes::from_static(b"AU") });
        assert!(frame_tag_header(Codec::Opus, &aac).is_none());
    }

    #[test]
    fn legacy_avc_and_aac() {
        let cfg = Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 2, 3]);
        assert_eq!(
            parse_video(&cfg).unwrap(),
            VideoTag::Config { codec: Codec::H264, record: Bytes::from_static(&[1, 2, 3]) }
        );
        let f = Bytes::from_static(&[0x27, 1, 0xff, 0xff, 0xd8, 9]);
        assert_eq!(
            parse_video(&f).unwrap(),
            VideoTag::Frame { codec: Codec::H264, keyframe: false, cts_ms: -40, data: Bytes::from_static(&[9]) }
        );
        assert_eq!(
            parse_audio(&Bytes::from_static(&[0xaf, 0, 0x12, 0x10])).unwrap(),
            AudioTag::Config { codec: Codec::Aac, record: Bytes::from_static(&[0x12, 0x10]) }
        );
    }

    #[test]
    fn enhanced_rtmp_hevc_and_av1() {
        let t = ex_video_tag(b"hvc1", 1, true, 33, &[5, 6]);
        assert_eq!(
            parse_video(&t).unwrap(),
            VideoTag::Frame { codec: Codec::H265, keyframe: true, cts_ms: 33, data: Bytes::from_static(&[5, 6]) }
        );
        let t = ex_video_tag(b"av01", 0, true, 0, &[0x81, 0, 0, 0]);
        assert!(matches!(parse_video(&t).unwrap(), VideoTag::Config { codec: Codec::Av1, .. }));
        let t = ex_video_tag(b"av01", 1, false, 0, &[7]);
        assert!(matches!(
            parse_video(&t).unwrap(),
            VideoTag::Frame { codec: Codec::Av1, keyframe: false, cts_ms: 0, .. }
        ));
        let t = ex_video_tag(b"hvc1", 3, false, 0, &[7]);
        assert!(matches!(parse_video(&t).unwrap(), VideoTag::Frame { codec: Codec::H265, cts_ms: 0, .. }));
    }

    #[test]
    fn bad_tags_are_errors() {
        assert!(parse_video(&Bytes::new()).is_err());
        assert!(parse_video(&Bytes::from_static(&[0x17, 1])).is_err());
        assert!(matches!(parse_video(&Bytes::from_static(&[0x12, 0, 0, 0, 0])), Err(FlvError::Unsupported(_))));
        assert!(matches!(parse_video(&ex_video_tag(b"xxxx", 1, true, 0, &[])), Err(FlvError::Unsupported(_))));
        assert!(parse_audio(&Bytes::from_static(&[0xaf])).is_err());
        assert!(matches!(parse_audio(&Bytes::from_static(&[0xb0, 0])), Err(FlvError::Unsupported(_))));
    }

    #[test]
    fn ingest_needs_config_and_unwraps_timestamps() {
        let mut ing = FlvIngest::new();
        let frame = Bytes::from_static(&[0xaf, 1, 0x21]);
        assert_eq!(ing.audio(0, &frame).unwrap(), None);
        assert_eq!(ing.dropped_before_config, 1);
        ing.audio(0, &Bytes::from_static(&[0xaf, 0, 0x12, 0x10])).unwrap();
        let tracks = ing.take_tracks().unwrap();
        assert_eq!(tracks[0].info.sample_rate, 44100);
        assert!(ing.take_tracks().is_none());
        let f = ing.audio(u32::MAX - 10, &frame).unwrap().unwrap();
        assert_eq!(f.dts, -11_000);
        let f = ing.audio(20, &frame).unwrap().unwrap();
        assert_eq!(f.dts, 20_000, "wrapped forward past 2^32 ms");
        assert_eq!(f.payload.as_ref(), &[0x21]);
    }

    #[test]
    fn push_and_poll_hand_out_tracks_before_their_frame_and_unsupported_media_as_such() {
        let mut ing = FlvIngest::new();
        ing.push(TagKind::Audio, 0, &Bytes::from_static(&[0xaf, 0, 0x12, 0x10])).unwrap();
        ing.push(TagKind::Audio, 21, &Bytes::from_static(&[0xaf, 1, 0x21])).unwrap();
        assert!(matches!(ing.poll(), Some(Delivery::Tracks(t)) if t.len() == 1));
        assert!(matches!(ing.poll(), Some(Delivery::Frame(f)) if f.dts == 21_000));
        assert_eq!(ing.poll(), None);
        // Speex (codec id 11) is refused as unsupported, not as damage.
        ing.push(TagKind::Audio, 42, &Bytes::from_static(&[0xb6, 1, 2])).unwrap();
        assert!(matches!(ing.poll(), Some(Delivery::Unsupported(_))));
        assert!(
            ing.push(TagKind::Video, 0, &Bytes::from_static(&[0x17, 0, 0, 0, 0, 1])).is_err(),
            "damage is an error"
        );
    }

    #[test]
    fn bad_config_is_reported() {
        let mut ing = FlvIngest::new();
        let err = ing.video(0, &Bytes::from_static(&[0x17, 0, 0, 0, 0, 1])).unwrap_err();
        assert!(matches!(err, FlvError::BadConfig { codec: "h264", .. }));
    }
}

//! Matroska out: a live stream as an `.mkv` file (the container FrameWorks
//! pulls its clips in, and that VLC, ffmpeg and mpv read progressively).
//!
//! Sans IO: events in, bytes out. The file is an EBML header, a Segment of
//! unknown size (it grows while the stream lasts), its Info and Tracks,
//! then a Cluster per video GOP (or every 30 s without video), each of
//! unknown size too and holding one SimpleBlock per frame: a reader
//! knows a cluster has ended when the next one begins. Payloads are the
//! media core's own bytes (length-prefixed NAL units, raw AAC and Opus
//! frames), which is what Matroska stores; the codec configuration records
//! go in `CodecPrivate`. Timestamps are milliseconds from the first
//! frame.

use bytes::{BufMut, Bytes, BytesMut};
use tidecast_media::{Codec, Event, Frame, MediaKind, Track};

/// A cluster without video ends after this long (ms); a block's timestamp
/// is an i16 relative to its cluster's.
const CLUSTER_MS: i64 = 30_000;

/// The 8-byte "unknown size" EBML length.
const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

/// Element ids (Matroska / EBML specifications).
mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const EBML_VERSION: u32 = 0x4286;
    pub const EBML_READ_VERSION: u32 = 0x42F7;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const DOC_TYPE_VERSION: u32 = 0x4287;
    pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;
    pub const SEGMENT: u32 = 0x1853_8067;
    pub const INFO: u32 = 0x1549_A966;
    pub const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
    pub const DURATION: u32 = 0x4489;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const FLAG_LACING: u32 = 0x9C;
    pub const CODEC_ID: u32 = 0x86;
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const AUDIO: u32 = 0xE1;
    pub const SAMPLING_FREQUENCY: u32 = 0xB5;
    pub const CHANNELS: u32 = 0x9F;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMESTAMP: u32 = 0xE7;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
}

/// The Matroska codec id of a codec, if Matroska carries it here.
fn codec_id(c: Codec) -> Option<&'static str> {
    Some(match c {
        Codec::H264 => "V_MPEG4/ISO/AVC",
        Codec::H265 => "V_MPEGH/ISO/HEVC",
        Codec::Av1 => "V_AV1",
        Codec::Vp8 => "V_VP8",
        Codec::Vp9 => "V_VP9",
        Codec::Aac => "A_AAC",
        Codec::Opus => "A_OPUS",
        Codec::Mp3 => "A_MPEG/L3",
    })
}

fn put_id(out: &mut BytesMut, id: u32) {
    let b = id.to_be_bytes();
    let skip = b.iter().position(|&x| x != 0).unwrap_or(3);
    out.put_slice(&b[skip..]);
}

/// An EBML variable-size integer holding `n` (the shortest form, at most
/// 8 bytes).
fn put_size(out: &mut BytesMut, n: u64) {
    let mut len = 1;
    while len < 8 && n >= (1u64 << (7 * len)) - 1 {
        len += 1;
    }
    let marked = n | (1u64 << (7 * len));
    out.put_slice(&marked.to_be_bytes()[8 - len..]);
}

fn element(out: &mut BytesMut, id: u32, body: &[u8]) {
    put_id(out, id);
    put_size(out, body.len() as u64);
    out.put_slice(body);
}

fn uint(out: &mut BytesMut, id: u32, v: u64) {
    let b = v.to_be_bytes();
    let skip = b.iter().position(|&x| x != 0).unwrap_or(7);
    element(out, id, &b[skip..]);
}

fn float(out: &mut BytesMut, id: u32, v: f64) {
    element(out, id, &v.to_be_bytes());
}

fn master(out: &mut BytesMut, id: u32, body: impl FnOnce(&mut BytesMut)) {
    let mut inner = BytesMut::new();
    body(&mut inner);
    element(out, id, &inner);
}

/// One track of the file.
struct Written {
    track: Track,
    /// Its TrackNumber.
    number: u8,
}

/// A live Matroska file of a stream, from its first video keyframe.
#[derive(Default)]
pub struct MkvWriter {
    /// The stream's tracks until the first frame fixes the file's.
    announced: Option<std::sync::Arc<[Track]>>,
    tracks: Vec<Written>,
    /// Stream time (µs) of the file's zero.
    base: Option<i64>,
    /// The open cluster's timestamp (ms).
    cluster: Option<i64>,
    /// The file's head, until its first block.
    pending_head: Option<BytesMut>,
    /// A finished file's duration (ms), written in its Info.
    duration_ms: Option<f64>,
}

impl MkvWriter {
    /// A writer that has seen nothing yet.
    pub fn new() -> MkvWriter {
        MkvWriter::default()
    }

    /// A whole file of known length (a clip): `events` written, the
    /// Segment's size filled in and `duration_ms` in its Info, so readers
    /// know its duration without reading it through.
    pub fn whole_file(events: impl IntoIterator<Item = Event>, duration_ms: f64) -> Vec<Bytes> {
        let mut w = MkvWriter { duration_ms: Some(duration_ms), ..MkvWriter::default() };
        let mut parts: Vec<Bytes> = events.into_iter().flat_map(|ev| w.event(ev)).collect();
        let total: usize = parts.iter().map(Bytes::len).sum();
        if let Some(first) = parts.first_mut() {
            let segment = [0x18, 0x53, 0x80, 0x67];
            if let Some(at) = first.windows(4).position(|x| x == segment) {
                let size_at = at + 4;
                let rest = (total - size_at - 8) as u64;
                let mut head = BytesMut::from(&first[..]);
                if size_at + 8 <= head.len() && rest < (1 << 56) - 1 {
                    let mut size = rest.to_be_bytes();
                    size[0] = 0x01;
                    head[size_at..size_at + 8].copy_from_slice(&size);
                    *first = head.freeze();
                }
            }
        }
        parts
    }

    /// Takes `ev`; returns what to append to the file, in order.
    pub fn event(&mut self, ev: Event) -> Vec<Bytes> {
        match ev {
            Event::Tracks(t) if self.tracks.is_empty() => {
                self.announced = Some(t);
                Vec::new()
            }
            // The file keeps the tracks it started with.
            Event::Tracks(_) | Event::Discontinuity => Vec::new(),
            Event::Frame(f) => {
                if self.tracks.is_empty() {
                    let Some(tracks) = self.announced.take() else { return Vec::new() };
                    let mut head = BytesMut::new();
                    self.head(&tracks, &mut head);
                    if self.tracks.is_empty() {
                        return Vec::new();
                    }
                    self.pending_head = Some(head);
                }
                // The head goes out with the first block.
                let mut out = self.pending_head.take().unwrap_or_default();
                match self.block(&f, &mut out) {
                    Some(block) => vec![out.freeze(), block],
                    None => {
                        if self.base.is_none() {
                            self.pending_head = Some(out);
                        }
                        Vec::new()
                    }
                }
            }
        }
    }

    /// The EBML header, the Segment's start, Info and Tracks: the first
    /// video and the first audio track Matroska carries.
    fn head(&mut self, tracks: &[Track], out: &mut BytesMut) {
        // Of what Matroska carries, the source's own before what was made from it.
        let carried: Vec<Track> = tracks.iter().filter(|t| codec_id(t.codec).is_some()).cloned().collect();
        let first = |kind| crate::push::select::first_of(kind, &carried).cloned();
        let chosen: Vec<Track> = [first(MediaKind::Video), first(MediaKind::Audio)].into_iter().flatten().collect();
        if chosen.is_empty() {
            return;
        }
        self.tracks = chosen.into_iter().zip(1u8..).map(|(track, number)| Written { track, number }).collect();
        master(out, id::EBML, |b| {
            uint(b, id::EBML_VERSION, 1);
            uint(b, id::EBML_READ_VERSION, 1);
            uint(b, id::EBML_MAX_ID_LENGTH, 4);
            uint(b, id::EBML_MAX_SIZE_LENGTH, 8);
            element(b, id::DOC_TYPE, b"matroska");
            uint(b, id::DOC_TYPE_VERSION, 4);
            uint(b, id::DOC_TYPE_READ_VERSION, 2);
        });
        put_id(out, id::SEGMENT);
        out.put_slice(&UNKNOWN_SIZE);
        let duration = self.duration_ms;
        master(out, id::INFO, |b| {
            uint(b, id::TIMESTAMP_SCALE, 1_000_000);
            if let Some(ms) = duration {
                float(b, id::DURATION, ms);
            }
            element(b, id::MUXING_APP, b"Tidecast");
            element(b, id::WRITING_APP, b"Tidecast");
        });
        let tracks = &self.tracks;
        master(out, id::TRACKS, |b| {
            for w in tracks {
                master(b, id::TRACK_ENTRY, |e| {
                    let t = &w.track;
                    uint(e, id::TRACK_NUMBER, u64::from(w.number));
                    uint(e, id::TRACK_UID, u64::from(w.number));
                    uint(e, id::TRACK_TYPE, if t.kind() == MediaKind::Video { 1 } else { 2 });
                    uint(e, id::FLAG_LACING, 0);
                    element(e, id::CODEC_ID, codec_id(t.codec).unwrap_or_default().as_bytes());
                    if !t.config.is_empty() {
                        element(e, id::CODEC_PRIVATE, &t.config);
                    }
                    match t.kind() {
                        MediaKind::Video => master(e, id::VIDEO, |v| {
                            uint(v, id::PIXEL_WIDTH, u64::from(t.info.width));
                            uint(v, id::PIXEL_HEIGHT, u64::from(t.info.height));
                        }),
                        MediaKind::Audio => master(e, id::AUDIO, |a| {
                            float(a, id::SAMPLING_FREQUENCY, f64::from(t.info.sample_rate));
                            uint(a, id::CHANNELS, u64::from(t.info.channels.max(1)));
                        }),
                    }
                });
            }
        });
    }

    fn has_video(&self) -> bool {
        self.tracks.iter().any(|w| w.track.kind() == MediaKind::Video)
    }

    /// The SimpleBlock of `f` (its header in `out`, after a new Cluster's
    /// start when one is due); its payload is returned to follow it.
    fn block(&mut self, f: &Frame, out: &mut BytesMut) -> Option<Bytes> {
        let w = self.tracks.iter().find(|w| w.track.id == f.track)?;
        let video = w.track.kind() == MediaKind::Video;
        let number = w.number;
        // The file starts at a video keyframe (at once without video).
        let base = match self.base {
            Some(b) => b,
            None if !video && self.has_video() => return None,
            None if video && !f.keyframe => return None,
            None => *self.base.insert(f.dts),
        };
        let ms = (f.pts() - base).max(0) / 1000;
        let new_cluster = match self.cluster {
            None => true,
            Some(c) => (video && f.keyframe) || ms - c >= CLUSTER_MS || ms < c,
        };
        if new_cluster {
            put_id(out, id::CLUSTER);
            out.put_slice(&UNKNOWN_SIZE);
            uint(out, id::TIMESTAMP, ms as u64);
            self.cluster = Some(ms);
        }
        let relative = (ms - self.cluster.unwrap_or(ms)).clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16;
        put_id(out, id::SIMPLE_BLOCK);
        put_size(out, 4 + f.payload.len() as u64);
        out.put_u8(0x80 | number);
        out.put_i16(relative);
        // Every audio frame is a keyframe.
        out.put_u8(if f.keyframe || !video { 0x80 } else { 0x00 });
        Some(f.payload.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_shortest_vints() {
        let enc = |n: u64| {
            let mut b = BytesMut::new();
            put_size(&mut b, n);
            b.to_vec()
        };
        assert_eq!(enc(0), [0x80]);
        assert_eq!(enc(126), [0xfe]);
        assert_eq!(enc(127), [0x40, 0x7f], "all ones is reserved in one byte");
        assert_eq!(enc(300), [0x41, 0x2c]);
        let mut id = BytesMut::new();
        put_id(&mut id, 0x1A45_DFA3);
        put_id(&mut id, 0xA3);
        assert_eq!(id.to_vec(), [0x1a, 0x45, 0xdf, 0xa3, 0xa3]);
    }

    fn track(id: u32, codec: Codec) -> Track {
        let info = tidecast_media::TrackInfo {
            width: 320,
            height: 240,
            sample_rate: 48_000,
            channels: 2,
            ..Default::default()
        };
        Track { id, codec, config: Bytes::from_static(b"cfg"), info }
    }

    fn frame(track: u32, dts: i64, keyframe: bool) -> Event {
        Event::Frame(Frame { track, dts, cts: 0, keyframe, payload: Bytes::from_static(b"data") })
    }

    #[test]
    fn a_cluster_per_gop_from_the_first_keyframe() {
        let mut w = MkvWriter::new();
        assert!(w.event(Event::Tracks(vec![track(0, Codec::H264), track(1, Codec::Opus)].into())).is_empty());
        assert!(w.event(frame(1, 0, true)).is_empty(), "no audio before the first video keyframe");
        assert!(w.event(frame(0, 10_000, false)).is_empty(), "nor video before it");
        let first: Vec<u8> = w.event(frame(0, 40_000, true)).concat();
        assert!(first.starts_with(&[0x1a, 0x45, 0xdf, 0xa3]), "the EBML header");
        let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
        assert!(find(&first, b"V_MPEG4/ISO/AVC").is_some() && find(&first, b"A_OPUS").is_some());
        let cluster = find(&first, &[0x1f, 0x43, 0xb6, 0x75]).expect("a cluster");
        // Cluster, unknown size, Timestamp 0, then the block: track 1, +0 ms, keyframe.
        assert_eq!(&first[cluster + 12..cluster + 15], [0xe7, 0x81, 0x00]);
        assert_eq!(&first[cluster + 15..cluster + 21], [0xa3, 0x88, 0x81, 0x00, 0x00, 0x80]);
        assert!(first.ends_with(b"data"));
        let audio: Vec<u8> = w.event(frame(1, 60_000, true)).concat();
        assert_eq!(&audio[..6], [0xa3, 0x88, 0x82, 0x00, 0x14, 0x80], "track 2 at +20 ms");
        let next: Vec<u8> = w.event(frame(0, 1_040_000, true)).concat();
        assert_eq!(&next[..4], [0x1f, 0x43, 0xb6, 0x75], "a keyframe opens the next cluster");
    }
}

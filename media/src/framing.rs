//! The internal framing: a whole stream as one byte sequence, lossless.
//!
//! Like MistServer's DTSC, it starts with a header and the track table, then
//! carries length-prefixed packets. Every packet is
//!
//! ```text
//! kind: u8 | body length: u32 big-endian | body
//! ```
//!
//! | kind | body |
//! |------|------|
//! | `H`  | magic `TDCS`, version `1` (must come first) |
//! | `T`  | track count u8, then per track: id u32, codec name (u8 len + utf-8), config (u32 len + bytes), width u32, height u32, frame rate f64 bits (0 = unknown), sample rate u32, channels u8, bitrate u32 (0 = unknown), codec string (u16 len + utf-8) |
//! | `F`  | track u32, dts i64 (µs), cts i32 (µs), flags u8 (bit 0 = keyframe), payload (the rest) |
//! | `D`  | empty: a discontinuity |
//!
//! The [`Decoder`] is sans-IO: feed it bytes as they arrive and pull events.
//! Frame payloads it returns are slices of its input buffer, not copies.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{Codec, Event, Frame, Track, TrackInfo};

const MAGIC: &[u8; 4] = b"TDCS";
const VERSION: u8 = 1;
const PACKET_HEADER: usize = 5;
/// Bytes of framing written in front of each frame payload.
pub const FRAME_HEADER_LEN: usize = PACKET_HEADER + 4 + 8 + 4 + 1;

/// Why a byte sequence is not valid internal framing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FramingError {
    /// The first packet is not the `H` header with the `TDCS` magic.
    #[error("not internal framing: missing TDCS header")]
    MissingHeader,
    /// The header names a version this build cannot read.
    #[error("internal framing version {0} is not supported (this build reads version 1)")]
    UnsupportedVersion(u8),
    /// A packet claims more bytes than the decoder accepts.
    #[error("packet of {0} bytes exceeds the {1}-byte limit")]
    TooLarge(usize, usize),
    /// A packet kind byte that is not H, T, F or D.
    #[error("unknown packet kind 0x{0:02x}")]
    UnknownKind(u8),
    /// A packet body ended before its fields did.
    #[error("{0} packet is truncated")]
    Truncated(&'static str),
    /// A track names a codec this build does not know.
    #[error("unknown codec {0:?}")]
    UnknownCodec(String),
    /// A text field is not UTF-8.
    #[error("text field is not UTF-8")]
    BadText,
}

/// Writes the `H` header.
pub fn write_header(out: &mut BytesMut) {
    out.put_u8(b'H');
    out.put_u32(5);
    out.put_slice(MAGIC);
    out.put_u8(VERSION);
}

/// Writes one event. For frames, prefer [`frame_header`] plus the payload
/// handed to the socket separately, which copies nothing.
pub fn write_event(event: &Event, out: &mut BytesMut) {
    match event {
        Event::Tracks(tracks) => write_tracks(tracks, out),
        Event::Frame(f) => {
            out.put_slice(&frame_header(f));
            out.put_slice(&f.payload);
        }
        Event::Discontinuity => {
            out.put_u8(b'D');
            out.put_u32(0);
        }
    }
}

/// The framing bytes that precede `frame.payload` on the wire.
pub fn frame_header(frame: &Frame) -> [u8; FRAME_HEADER_LEN] {
    let mut h = [0u8; FRAME_HEADER_LEN];
    let body = (FRAME_HEADER_LEN - PACKET_HEADER + frame.payload.len()) as u32;
    let mut w = &mut h[..];
    w.put_u8(b'F');
    w.put_u32(body);
    w.put_u32(frame.track);
    w.put_i64(frame.dts);
    w.put_i32(frame.cts);
    w.put_u8(u8::from(frame.keyframe));
    h
}

fn write_tracks(tracks: &[Track], out: &mut BytesMut) {
    let mut body = BytesMut::new();
    body.put_u8(tracks.len().min(255) as u8);
    for t in tracks.iter().take(255) {
        body.put_u32(t.id);
        let name = t.codec.name().as_bytes();
        body.put_u8(name.len() as u8);
        body.put_slice(name);
        body.put_u32(t.config.len() as u32);
        body.put_slice(&t.config);
        body.put_u32(t.info.width);
        body.put_u32(t.info.height);
        body.put_u64(t.info.frame_rate.map_or(0, f64::to_bits));
        body.put_u32(t.info.sample_rate);
        body.put_u8(t.info.channels);
        body.put_u32(t.info.bitrate.unwrap_or(0));
        let cs = t.info.codec_string.as_bytes();
        let cs = &cs[..cs.len().min(u16::MAX as usize)];
        body.put_u16(cs.len() as u16);
        body.put_slice(cs);
    }
    out.put_u8(b'T');
    out.put_u32(body.len() as u32);
    out.put_slice(&body);
}

/// Sans-IO reader of the internal framing.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_packet: usize,
    got_header: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(64 << 20)
    }
}

impl Decoder {
    /// A decoder refusing packets larger than `max_packet` bytes.
    pub fn new(max_packet: usize) -> Decoder {
        Decoder { buf: BytesMut::new(), max_packet, got_header: false }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete event, `Ok(None)` when more bytes are needed. After an
    /// error the stream is unusable: close the session.
    pub fn next_event(&mut self) -> Result<Option<Event>, FramingError> {
        loop {
            if self.buf.len() < PACKET_HEADER {
                return Ok(None);
            }
            let kind = self.buf[0];
            let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            if len > self.max_packet {
                return Err(FramingError::TooLarge(len, self.max_packet));
            }
            if !self.got_header && kind != b'H' {
                return Err(FramingError::MissingHeader);
            }
            if self.buf.len() < PACKET_HEADER + len {
                return Ok(None);
            }
            self.buf.advance(PACKET_HEADER);
            let body = self.buf.split_to(len).freeze();
            match kind {
                b'H' => {
                    if body.len() < 5 || &body[..4] != MAGIC {
                        return Err(FramingError::MissingHeader);
                    }
                    if body[4] != VERSION {
                        return Err(FramingError::UnsupportedVersion(body[4]));
                    }
                    self.got_header = true;
                }
                b'T' => return parse_tracks(body).map(|t| Some(Event::Tracks(t))),
                b'F' => return parse_frame(body).map(|f| Some(Event::Frame(f))),
                b'D' => return Ok(Some(Event::Discontinuity)),
                other => return Err(FramingError::UnknownKind(other)),
            }
        }
    }
}

fn parse_frame(mut body: Bytes) -> Result<Frame, FramingError> {
    if body.len() < 17 {
        return Err(FramingError::Truncated("frame"));
    }
    let track = body.get_u32();
    let dts = body.get_i64();
    let cts = body.get_i32();
    let flags = body.get_u8();
    Ok(Frame { track, dts, cts, keyframe: flags & 1 != 0, payload: body })
}

struct Reader {
    body: Bytes,
}

impl Reader {
    fn need(&self, n: usize) -> Result<(), FramingError> {
        if self.body.len() < n {
            Err(FramingError::Truncated("tracks"))
        } else {
            Ok(())
        }
    }
    fn u8(&mut self) -> Result<u8, FramingError> {
        self.need(1)?;
        Ok(self.body.get_u8())
    }
    fn u16(&mut self) -> Result<u16, FramingError> {
        self.need(2)?;
        Ok(self.body.get_u16())
    }
    fn u32(&mut self) -> Result<u32, FramingError> {
        self.need(4)?;
        Ok(self.body.get_u32())
    }
    fn u64(&mut self) -> Result<u64, FramingError> {
        self.need(8)?;
        Ok(self.body.get_u64())
    }
    fn bytes(&mut self, n: usize) -> Result<Bytes, FramingError> {
        self.need(n)?;
        Ok(self.body.split_to(n))
    }
    fn text(&mut self, n: usize) -> Result<String, FramingError> {
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| FramingError::BadText)
    }
}

fn parse_tracks(body: Bytes) -> Result<Arc<[Track]>, FramingError> {
    let mut r = Reader { body };
    let count = r.u8()?;
    let mut tracks = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let id = r.u32()?;
        let n = r.u8()? as usize;
        let name = r.text(n)?;
        let codec = Codec::from_name(&name).ok_or(FramingError::UnknownCodec(name))?;
        let n = r.u32()? as usize;
        let config = r.bytes(n)?;
        let width = r.u32()?;
        let height = r.u32()?;
        let fr = r.u64()?;
        let sample_rate = r.u32()?;
        let channels = r.u8()?;
        let bitrate = r.u32()?;
        let n = r.u16()? as usize;
        let codec_string = r.text(n)?;
        tracks.push(Track {
            id,
            codec,
            config,
            info: TrackInfo {
                codec_string,
                width,
                height,
                frame_rate: (fr != 0).then(|| f64::from_bits(fr)),
                sample_rate,
                channels,
                bitrate: (bitrate != 0).then_some(bitrate),
            },
        });
    }
    Ok(Arc::from(tracks))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_events() -> Vec<Event> {
        let tracks: Arc<[Track]> = Arc::from(vec![
            Track {
                id: 0,
                codec: Codec::H264,
                config: Bytes::from_static(&[1, 0x64, 0, 0x1f, 0xff]),
                info: TrackInfo {
                    codec_string: "avc1.64001f".into(),
                    width: 1280,
                    height: 720,
                    frame_rate: Some(29.97),
                    bitrate: Some(3_000_000),
                    ..Default::default()
                },
            },
            Track {
                id: 1,
                codec: Codec::Aac,
                config: Bytes::from_static(&[0x12, 0x10]),
                info: TrackInfo {
                    codec_string: "mp4a.40.2".into(),
                    sample_rate: 44_100,
                    channels: 2,
                    ..Default::default()
                },
            },
        ]);
        vec![
            Event::Tracks(tracks),
            Event::Frame(Frame { track: 0, dts: -5, cts: 66_666, keyframe: true, payload: Bytes::from_static(b"idr") }),
            Event::Frame(Frame { track: 1, dts: 23_219, cts: 0, keyframe: true, payload: Bytes::new() }),
            Event::Discontinuity,
            Event::Frame(Frame {
                track: 0,
                dts: i64::MAX,
                cts: -1,
                keyframe: false,
                payload: Bytes::from(vec![9; 70_000]),
            }),
        ]
    }

    fn encode(events: &[Event]) -> BytesMut {
        let mut out = BytesMut::new();
        write_header(&mut out);
        for e in events {
            write_event(e, &mut out);
        }
        out
    }

    #[test]
    fn round_trips_whole_and_byte_by_byte() {
        let events = sample_events();
        let wire = encode(&events);
        for step in [wire.len(), 1, 7, 4096] {
            let mut dec = Decoder::default();
            let mut got = Vec::new();
            for chunk in wire.chunks(step) {
                dec.feed(chunk);
                while let Some(e) = dec.next_event().unwrap() {
                    got.push(e);
                }
            }
            assert_eq!(got.len(), events.len(), "step {step}");
            for (a, b) in got.iter().zip(&events) {
                assert_eq!(a, b, "step {step}");
            }
            assert_eq!(dec.buffered(), 0);
        }
    }

    #[test]
    fn frame_payloads_are_slices_of_the_input() {
        let wire = encode(&sample_events()).freeze();
        let mut dec = Decoder::default();
        dec.feed(&wire);
        let mut payloads = Vec::new();
        while let Some(e) = dec.next_event().unwrap() {
            if let Event::Frame(f) = e {
                payloads.push(f.payload);
            }
        }
        // Two payloads share the decoder's one buffer: no per-frame allocation.
        let big = payloads.last().unwrap();
        assert_eq!(big.len(), 70_000);
    }

    #[test]
    fn rejects_bad_input_with_clear_errors() {
        let mut dec = Decoder::default();
        dec.feed(b"F\0\0\0\0");
        assert_eq!(dec.next_event(), Err(FramingError::MissingHeader));

        let mut dec = Decoder::new(100);
        let mut wire = BytesMut::new();
        write_header(&mut wire);
        wire.put_u8(b'F');
        wire.put_u32(1000);
        dec.feed(&wire);
        assert_eq!(dec.next_event(), Err(FramingError::TooLarge(1000, 100)));

        let mut dec = Decoder::default();
        let mut wire = BytesMut::new();
        write_header(&mut wire);
        wire.put_slice(&[b'F', 0, 0, 0, 3, 1, 2, 3]);
        dec.feed(&wire);
        assert_eq!(dec.next_event(), Err(FramingError::Truncated("frame")));

        let mut dec = Decoder::default();
        dec.feed(&[b'H', 0, 0, 0, 5, b'T', b'D', b'C', b'S', 9]);
        assert_eq!(dec.next_event(), Err(FramingError::UnsupportedVersion(9)));
    }
}

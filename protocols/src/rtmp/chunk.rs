//! The RTMP chunk stream: messages cut into chunks on the wire and put back
//! together here.
//!
//! A message that fits in one chunk is handed on as a slice of the caller's
//! read buffer (no copy), unless it is tiny (see [`COPY_BELOW`]). A longer
//! one has chunk headers between its pieces, so it is assembled once into
//! its own buffer.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::RtmpError;

/// Single-chunk messages shorter than this are copied out of the read
/// buffer instead of sliced. A slice keeps its whole read block alive for as
/// long as the frame lives (seconds, in the stream ring and the CMAF
/// window): for a 300-byte AAC frame pinning a 32 KiB block that is a
/// hundredfold waste, and it was most of a live stream's memory. Above this
/// size a frame pins at most 64 times itself and is usually one of many
/// live slices of the same block.
pub const COPY_BELOW: usize = 512;

/// One complete RTMP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Chunk stream the message arrived on.
    pub csid: u32,
    /// Message type id (8 audio, 9 video, 20 AMF0 command, ...).
    pub type_id: u8,
    /// Message stream id.
    pub stream_id: u32,
    /// Timestamp in milliseconds (32-bit, may wrap).
    pub timestamp: u32,
    /// The message body.
    pub payload: Bytes,
}

#[derive(Default)]
struct ChunkStream {
    timestamp: u32,
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    extended: bool,
    partial: Option<BytesMut>,
    started: bool,
}

/// Limits for the decoder.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest message accepted, in bytes.
    pub max_message: u32,
    /// Most chunk streams a peer may open.
    pub max_chunk_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_message: 8 << 20, max_chunk_streams: 64 }
    }
}

/// Sans-IO chunk decoder.
pub struct Decoder {
    chunk_size: u32,
    streams: HashMap<u32, ChunkStream>,
    limits: Limits,
}

impl Decoder {
    /// A decoder with the protocol's initial chunk size (128).
    pub fn new(limits: Limits) -> Decoder {
        Decoder { chunk_size: 128, streams: HashMap::new(), limits }
    }

    /// Applies a Set Chunk Size from the peer.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), RtmpError> {
        let size = size & 0x7fff_ffff;
        if size == 0 {
            return Err(RtmpError::Protocol("chunk size 0"));
        }
        self.chunk_size = size.min(self.limits.max_message.max(128));
        Ok(())
    }

    /// Drops the partial message on `csid` (Abort Message).
    pub fn abort(&mut self, csid: u32) {
        if let Some(s) = self.streams.get_mut(&csid) {
            s.partial = None;
        }
    }

    /// Bytes of partial messages held.
    pub fn buffered(&self) -> usize {
        self.streams.values().filter_map(|s| s.partial.as_ref()).map(BytesMut::len).sum()
    }

    /// Consumes one chunk from the front of `buf` if it is complete. Returns
    /// the message it completed, if any; `Ok(None)` with `buf` untouched means
    /// more bytes are needed, so the caller should stop when `buf` did not
    /// shrink.
    pub fn decode_chunk(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, RtmpError> {
        let data = &buf[..];
        let Some(&b0) = data.first() else { return Ok(None) };
        let fmt = b0 >> 6;
        let (csid, mut pos) = match b0 & 0x3f {
            0 => match data.get(1) {
                Some(&b) => (64 + u32::from(b), 2),
                None => return Ok(None),
            },
            1 => match data.get(1..3) {
                Some(b) => (64 + u32::from(b[0]) + 256 * u32::from(b[1]), 3),
                None => return Ok(None),
            },
            n => (u32::from(n), 1),
        };
        let header_len = [11, 7, 3, 0][usize::from(fmt)];
        let Some(h) = data.get(pos..pos + header_len) else { return Ok(None) };
        pos += header_len;
        let u24 = |b: &[u8]| (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);

        if !self.streams.contains_key(&csid) {
            if fmt != 0 {
                return Err(RtmpError::Protocol("first chunk on a chunk stream must have a full header"));
            }
            if self.streams.len() >= self.limits.max_chunk_streams {
                return Err(RtmpError::Protocol("too many chunk streams"));
            }
        }
        let cs_prev = self.streams.get(&csid);
        let prev_extended = cs_prev.is_some_and(|c| c.extended);
        let in_progress = cs_prev.is_some_and(|c| c.partial.is_some());

        let ts_field = if fmt < 3 { Some(u24(&h[0..3])) } else { None };
        let extended = match ts_field {
            Some(t) => t == 0xff_ffff,
            None => prev_extended,
        };
        let ext_ts = if extended {
            let Some(e) = data.get(pos..pos + 4) else { return Ok(None) };
            pos += 4;
            Some(u32::from_be_bytes([e[0], e[1], e[2], e[3]]))
        } else {
            None
        };

        // Work out the message this chunk belongs to without mutating state,
        // so that an incomplete chunk leaves the decoder untouched.
        let cs = self.streams.get(&csid);
        let mut next = ChunkStream {
            timestamp: cs.map_or(0, |c| c.timestamp),
            delta: cs.map_or(0, |c| c.delta),
            length: cs.map_or(0, |c| c.length),
            type_id: cs.map_or(0, |c| c.type_id),
            stream_id: cs.map_or(0, |c| c.stream_id),
            extended,
            partial: None,
            started: cs.is_some_and(|c| c.started),
        };
        if fmt <= 1 {
            next.length = u24(&h[3..6]);
            next.type_id = h[6];
        }
        if fmt == 0 {
            next.stream_id = u32::from_le_bytes([h[7], h[8], h[9], h[10]]);
        }
        let field = ext_ts.or(ts_field);
        let new_message = fmt < 3 || !in_progress;
        if new_message && in_progress && fmt < 3 {
            return Err(RtmpError::Protocol("new message header before the previous message ended"));
        }
        if new_message {
            match (fmt, field) {
                (0, Some(t)) => {
                    next.timestamp = t;
                    next.delta = 0;
                }
                (1 | 2, Some(d)) => {
                    next.delta = d;
                    next.timestamp = next.timestamp.wrapping_add(d);
                }
                _ => {
                    if !next.started {
                        return Err(RtmpError::Protocol("type 3 chunk with no previous message"));
                    }
                    next.timestamp = next.timestamp.wrapping_add(next.delta);
                }
            }
        }
        if next.length > self.limits.max_message {
            return Err(RtmpError::MessageTooLarge(next.length, self.limits.max_message));
        }
        let have = cs.and_then(|c| c.partial.as_ref()).map_or(0, BytesMut::len) as u32;
        let have = if new_message { 0 } else { have };
        let take = (next.length - have).min(self.chunk_size) as usize;
        if data.len() < pos + take {
            return Ok(None);
        }

        // The chunk is complete: commit.
        buf.advance(pos);
        let piece = buf.split_to(take);
        let mut state = self.streams.remove(&csid).unwrap_or_default();
        let partial = if new_message { None } else { state.partial.take() };
        state.timestamp = next.timestamp;
        state.delta = next.delta;
        state.length = next.length;
        state.type_id = next.type_id;
        state.stream_id = next.stream_id;
        state.extended = next.extended;
        state.started = true;
        let done = have as usize + take == next.length as usize;
        let result = match (partial, done) {
            (None, true) if piece.len() < COPY_BELOW => Some(Bytes::copy_from_slice(&piece)),
            (None, true) => Some(piece.freeze()),
            (None, false) => {
                let mut p = BytesMut::with_capacity(next.length as usize);
                p.extend_from_slice(&piece);
                state.partial = Some(p);
                None
            }
            (Some(mut p), done) => {
                p.extend_from_slice(&piece);
                if done {
                    Some(p.freeze())
                } else {
                    state.partial = Some(p);
                    None
                }
            }
        };
        let msg = result.map(|payload| Message {
            csid,
            type_id: state.type_id,
            stream_id: state.stream_id,
            timestamp: state.timestamp,
            payload,
        });
        self.streams.insert(csid, state);
        Ok(msg)
    }
}

/// Writes messages as chunks (type 0 header, then type 3 continuations).
pub struct Encoder {
    chunk_size: u32,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder { chunk_size: 128 }
    }
}

impl Encoder {
    /// The chunk size in force for what this encoder writes.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Changes the chunk size; send Set Chunk Size to the peer first.
    pub fn set_chunk_size(&mut self, size: u32) {
        self.chunk_size = size.clamp(1, 0x7fff_ffff);
    }

    fn basic_header(fmt: u8, csid: u32, out: &mut BytesMut) {
        match csid {
            2..=63 => out.put_u8((fmt << 6) | csid as u8),
            64..=319 => {
                out.put_u8(fmt << 6);
                out.put_u8((csid - 64) as u8);
            }
            _ => {
                out.put_u8((fmt << 6) | 1);
                out.put_u16_le((csid - 64) as u16);
            }
        }
    }

    /// Writes one message whose body is `prefix` followed by `body` (pieces,
    /// in order) as chunks, without copying the body: chunk headers and the
    /// few bytes of `prefix` go into `headers`, which is pushed to `out` as
    /// needed, between slices of the body pieces.
    pub fn encode_parts(
        &self,
        header: (u32, u8, u32, u32),
        prefix: &[u8],
        body: &[Bytes],
        headers: &mut BytesMut,
        out: &mut std::collections::VecDeque<Bytes>,
    ) {
        let (csid, type_id, stream_id, timestamp) = header;
        let len: usize = prefix.len() + body.iter().map(Bytes::len).sum::<usize>();
        let extended = timestamp >= 0xff_ffff;
        Self::basic_header(0, csid, headers);
        headers.put_uint(u64::from(if extended { 0xff_ffff } else { timestamp }), 3);
        headers.put_uint(len as u64, 3);
        headers.put_u8(type_id);
        headers.put_u32_le(stream_id);
        if extended {
            headers.put_u32(timestamp);
        }
        let size = (self.chunk_size as usize).max(1);
        let mut room = size;
        // A continuation chunk's header when the current chunk is full.
        let next_chunk = |room: &mut usize, headers: &mut BytesMut| {
            if *room == 0 {
                Self::basic_header(3, csid, headers);
                if extended {
                    headers.put_u32(timestamp);
                }
                *room = size;
            }
        };
        let mut rest = prefix;
        while !rest.is_empty() {
            next_chunk(&mut room, headers);
            let n = room.min(rest.len());
            headers.put_slice(&rest[..n]);
            rest = &rest[n..];
            room -= n;
        }
        for piece in body {
            let mut rest = piece.clone();
            while !rest.is_empty() {
                next_chunk(&mut room, headers);
                let n = room.min(rest.len());
                if !headers.is_empty() {
                    out.push_back(headers.split().freeze());
                }
                out.push_back(rest.split_to(n));
                room -= n;
            }
        }
        if !headers.is_empty() {
            out.push_back(headers.split().freeze());
        }
    }

    /// Appends `msg` as chunks to `out`.
    pub fn encode(&self, msg: &Message, out: &mut BytesMut) {
        let extended = msg.timestamp >= 0xff_ffff;
        let ts_field = if extended { 0xff_ffff } else { msg.timestamp };
        Self::basic_header(0, msg.csid, out);
        out.put_uint(u64::from(ts_field), 3);
        out.put_uint(msg.payload.len() as u64, 3);
        out.put_u8(msg.type_id);
        out.put_u32_le(msg.stream_id);
        if extended {
            out.put_u32(msg.timestamp);
        }
        let mut chunks = msg.payload.chunks(self.chunk_size as usize);
        if let Some(first) = chunks.next() {
            out.put_slice(first);
        }
        for c in chunks {
            Self::basic_header(3, msg.csid, out);
            if extended {
                out.put_u32(msg.timestamp);
            }
            out.put_slice(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_parts_matches_encode_and_does_not_copy() {
        let payload = Bytes::from((0..10_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        for ts in [1000, 0x0100_0000] {
            let mut enc = Encoder::default();
            enc.set_chunk_size(4096);
            let msg = Message { csid: 6, type_id: 9, stream_id: 1, timestamp: ts, payload: payload.clone() };
            let mut whole = BytesMut::new();
            enc.encode(&msg, &mut whole);
            let (head, tail) = (payload.slice(..5), payload.slice(5..));
            let mut pieces = std::collections::VecDeque::new();
            enc.encode_parts((6, 9, 1, ts), &[], &[head, tail], &mut BytesMut::new(), &mut pieces);
            let joined: Vec<u8> = pieces.iter().flat_map(|b| b.iter().copied()).collect();
            assert_eq!(joined, &whole[..]);
            let start = payload.as_ptr() as usize..payload.as_ptr() as usize + payload.len();
            let borrowed: usize =
                pieces.iter().filter(|b| start.contains(&(b.as_ptr() as usize))).map(Bytes::len).sum();
            assert_eq!(borrowed, payload.len(), "every payload byte is a slice of the frame");
        }
    }

    #[test]
    fn a_prefix_is_copied_next_to_the_chunk_header_even_across_chunks() {
        let payload = Bytes::from((0..100u32).map(|i| i as u8).collect::<Vec<u8>>());
        let prefix = [0x17, 1, 0, 0, 40];
        for (size, ts) in [(4096, 1000), (3, 1000), (3, 0x0100_0000)] {
            let mut enc = Encoder::default();
            enc.set_chunk_size(size);
            let whole_body = Bytes::from([&prefix[..], &payload[..]].concat());
            let msg = Message { csid: 6, type_id: 9, stream_id: 1, timestamp: ts, payload: whole_body };
            let mut whole = BytesMut::new();
            enc.encode(&msg, &mut whole);
            let mut pieces = std::collections::VecDeque::new();
            enc.encode_parts((6, 9, 1, ts), &prefix, std::slice::from_ref(&payload), &mut BytesMut::new(), &mut pieces);
            let joined: Vec<u8> = pieces.iter().flat_map(|b| b.iter().copied()).collect();
            assert_eq!(joined, &whole[..], "chunk size {size}, timestamp {ts}");
            if size == 4096 {
                assert_eq!(pieces.len(), 2, "chunk header and prefix in one piece, then the payload");
                assert_eq!(pieces[1].as_ptr(), payload.as_ptr(), "the payload is not copied");
            }
        }
    }

    fn msg(csid: u32, ts: u32, len: usize) -> Message {
        Message {
            csid,
            type_id: 9,
            stream_id: 1,
            timestamp: ts,
            payload: Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>()),
        }
    }

    fn decode_all(dec: &mut Decoder, wire: &[u8], step: usize) -> Vec<Message> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                let before = buf.len();
                if let Some(m) = dec.decode_chunk(&mut buf).unwrap() {
                    out.push(m);
                }
                if buf.len() == before {
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn round_trip_across_chunk_sizes_and_split_reads() {
        let msgs = vec![msg(4, 0, 10), msg(4, 40, 5000), msg(70, 0x1_000_000, 300), msg(400, 7, 0), msg(6, 80, 128)];
        for chunk_size in [128u32, 4096, 1] {
            let mut enc = Encoder::default();
            enc.set_chunk_size(chunk_size);
            let mut wire = BytesMut::new();
            for m in &msgs {
                enc.encode(m, &mut wire);
            }
            for step in [1, 3, 1000, wire.len()] {
                let mut dec = Decoder::new(Limits::default());
                dec.set_chunk_size(chunk_size).unwrap();
                assert_eq!(decode_all(&mut dec, &wire, step), msgs, "chunk size {chunk_size}, step {step}");
            }
        }
    }

    #[test]
    fn single_chunk_messages_are_not_copied() {
        let mut enc = Encoder::default();
        enc.set_chunk_size(4096);
        let mut wire = BytesMut::new();
        enc.encode(&msg(4, 0, 1000), &mut wire);
        let start = wire.as_ptr() as usize;
        let mut dec = Decoder::new(Limits::default());
        dec.set_chunk_size(4096).unwrap();
        let m = dec.decode_chunk(&mut wire).unwrap().unwrap();
        assert_eq!(m.payload.as_ptr() as usize, start + 12, "payload is a slice of the read buffer");
    }

    #[test]
    fn delta_headers_accumulate_timestamps() {
        // fmt 0 at ts 100, then fmt 2 delta 40, then fmt 3 (new message, same delta)
        let wire = [
            0x04, 0, 0, 100, 0, 0, 1, 9, 1, 0, 0, 0, 0xaa, // fmt 0
            0x84, 0, 0, 40, 0xbb, // fmt 2
            0xc4, 0xcc, // fmt 3
        ];
        let mut dec = Decoder::new(Limits::default());
        let got = decode_all(&mut dec, &wire, wire.len());
        let ts: Vec<u32> = got.iter().map(|m| m.timestamp).collect();
        assert_eq!(ts, [100, 140, 180]);
    }

    #[test]
    fn hostile_headers_are_errors() {
        let mut dec = Decoder::new(Limits { max_message: 1000, max_chunk_streams: 2 });
        let mut b = BytesMut::from(&[0x44u8, 0, 0, 0, 0, 0, 1, 9][..]);
        assert!(dec.decode_chunk(&mut b).is_err(), "fmt 1 on an unknown chunk stream");
        let mut b = BytesMut::from(&[0x04u8, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0][..]);
        assert!(matches!(dec.decode_chunk(&mut b), Err(RtmpError::MessageTooLarge(..))));
        let mut dec = Decoder::new(Limits { max_message: 1000, max_chunk_streams: 1 });
        let mut b =
            BytesMut::from(&[0x04u8, 0, 0, 0, 0, 0, 0, 9, 1, 0, 0, 0, 0x05, 0, 0, 0, 0, 0, 0, 9, 1, 0, 0, 0][..]);
        assert!(dec.decode_chunk(&mut b).unwrap().is_some());
        assert!(dec.decode_chunk(&mut b).is_err(), "chunk stream limit");
    }
}

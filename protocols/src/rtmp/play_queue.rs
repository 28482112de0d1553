//! What a player has queued to be written: the session's own messages
//! (control, status, sequence headers) and shared media messages from the
//! stream's [`Feed`](super::feed::Feed), in order, written with vectored
//! writes without copying.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::chunk::Encoder;
use super::feed::{WireMsg, HEAD_LEN};
use super::session::MEDIA_STREAM;
use super::ServerSession;
use crate::flv::egress::TagSink;
use crate::flv::TagKind;

/// One queued piece.
enum Piece {
    /// Bytes of this player's own.
    Own(Bytes),
    /// A shared message behind this player's first chunk header.
    Shared { head: [u8; HEAD_LEN], msg: Arc<WireMsg> },
}

impl Piece {
    fn len(&self) -> usize {
        match self {
            Piece::Own(b) => b.len(),
            Piece::Shared { msg, .. } => HEAD_LEN + msg.tail_len,
        }
    }

    /// The piece's slices, in order.
    fn parts(&self) -> impl Iterator<Item = &[u8]> {
        let (first, rest): (&[u8], &[Bytes]) = match self {
            Piece::Own(b) => (b, &[]),
            Piece::Shared { head, msg } => (head, &msg.tail),
        };
        std::iter::once(first).chain(rest.iter().map(|b| &b[..]))
    }
}

/// A player's write queue.
pub struct PlayQueue {
    pieces: VecDeque<Piece>,
    /// Bytes of the front piece already written.
    written: usize,
    queued: usize,
    encoder: Encoder,
    scratch: BytesMut,
    encoded: VecDeque<Bytes>,
}

/// At most this many slices go to one `writev` (Linux's `IOV_MAX`).
const MAX_SLICES: usize = 1024;

impl PlayQueue {
    /// An empty queue for a session that chunks media at `chunk_size`.
    pub fn new(chunk_size: u32) -> PlayQueue {
        let mut encoder = Encoder::default();
        encoder.set_chunk_size(chunk_size);
        PlayQueue {
            pieces: VecDeque::new(),
            written: 0,
            queued: 0,
            encoder,
            scratch: BytesMut::new(),
            encoded: VecDeque::new(),
        }
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    fn push(&mut self, p: Piece) {
        self.queued += p.len();
        self.pieces.push_back(p);
    }

    /// Moves what the session has to send (its replies and status
    /// messages) behind what is queued.
    pub fn take_session(&mut self, session: &mut ServerSession) {
        while let Some(b) = session.poll_transmit() {
            self.push(Piece::Own(b));
        }
    }

    /// Queues the shared message `msg` at this player's `timestamp` (ms).
    /// Taken by value: the reference read from the feed is the one queued
    /// (every player touches the same count, so each touch costs).
    pub fn shared(&mut self, timestamp: u32, msg: Arc<WireMsg>) {
        match msg.head(timestamp) {
            Some(head) if msg.chunk_size == self.encoder.chunk_size() => self.push(Piece::Shared { head, msg }),
            // An extended timestamp (after 4.6 hours of play) is repeated in
            // every continuation header: this player's own chunks.
            _ => self.tag(msg.kind, timestamp, &msg.prefix, &msg.payload),
        }
    }

    /// The next slices to write, from where the last write stopped.
    pub fn slices(&self) -> Vec<IoSlice<'_>> {
        let mut out = Vec::with_capacity(self.pieces.len().min(MAX_SLICES / 2) * 2);
        let mut skip = self.written;
        for part in self.pieces.iter().flat_map(Piece::parts) {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            out.push(IoSlice::new(&part[skip..]));
            skip = 0;
            if out.len() == MAX_SLICES {
                break;
            }
        }
        out
    }

    /// Drops `n` written bytes from the front.
    pub fn advance(&mut self, mut n: usize) {
        self.queued = self.queued.saturating_sub(n);
        while let Some(front) = self.pieces.front() {
            let left = front.len() - self.written;
            if n < left {
                self.written += n;
                return;
            }
            n -= left;
            self.written = 0;
            self.pieces.pop_front();
        }
    }
}

impl TagSink for PlayQueue {
    fn tag(&mut self, kind: TagKind, timestamp: u32, prefix: &[u8], body: &Bytes) {
        let (csid, type_id) = WireMsg::ids(kind);
        self.encoder.encode_parts(
            (csid, type_id, MEDIA_STREAM, timestamp),
            prefix,
            std::slice::from_ref(body),
            &mut self.scratch,
            &mut self.encoded,
        );
        while let Some(b) = self.encoded.pop_front() {
            self.push(Piece::Own(b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flv::frame_tag_header;
    use tidecast_media::{Codec, Frame};

    fn written(q: &mut PlayQueue, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while !q.is_empty() {
            let n = {
                let slices = q.slices();
                let mut n = 0;
                for s in slices {
                    let take = s.len().min(step - n);
                    out.extend_from_slice(&s[..take]);
                    n += take;
                    if n == step {
                        break;
                    }
                }
                n
            };
            q.advance(n);
        }
        out
    }

    #[test]
    fn shared_and_own_messages_come_out_in_order_however_the_writes_split() {
        let frame = Frame { track: 0, dts: 0, cts: 0, keyframe: true, payload: Bytes::from(vec![7u8; 5000]) };
        let (kind, prefix) = frame_tag_header(Codec::H264, &frame).expect("h264");
        let msg = Arc::new(WireMsg::new(kind, prefix, frame.payload.clone(), 4096));
        let mut reference = PlayQueue::new(4096);
        reference.tag(TagKind::Audio, 5, &[0xaf, 0], &Bytes::from_static(b"config"));
        reference.tag(kind, 40, &prefix, &frame.payload);
        reference.tag(kind, 0x0100_0000, &prefix, &frame.payload);
        let want = written(&mut reference, usize::MAX);
        for step in [1, 7, 4096, 100_000] {
            let mut q = PlayQueue::new(4096);
            q.tag(TagKind::Audio, 5, &[0xaf, 0], &Bytes::from_static(b"config"));
            q.shared(40, msg.clone());
            q.shared(0x0100_0000, msg.clone());
            assert_eq!(q.queued(), want.len());
            assert_eq!(written(&mut q, step), want, "writes of {step} bytes");
            assert_eq!(q.queued(), 0);
        }
    }
}

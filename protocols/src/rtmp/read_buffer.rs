//! A publisher's socket read buffer, and the memory its frames pin.
//!
//! The chunk decoder hands out frames as slices of the block the socket was
//! read into, so a block lives as long as its newest frame does: in the
//! stream's ring, its CMAF window, a slow viewer's queue. The block is the
//! unit of memory, not the frame, and only the buffer knows where blocks
//! begin and end. [`ReadBuffer`] fills one block before taking the next and
//! wraps each frame it slices out of a block with a share of that block's
//! token; the last share to go gives the block's bytes back to the ledger
//! gauge, so `ingest` in the ledger is the read memory this publisher keeps
//! alive, exactly.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tidecast_media::Gauge;

/// Size of a publisher's read blocks.
pub const READ_BLOCK: usize = 32 * 1024;
/// A new block is taken when less than this is left in the current one.
pub const MIN_READ: usize = 4 * 1024;

/// One block's bytes in a gauge, given back when the last holder drops it.
#[derive(Debug)]
struct Token {
    gauge: Gauge,
    bytes: usize,
}

impl Drop for Token {
    fn drop(&mut self) {
        self.gauge.sub(self.bytes);
    }
}

/// A frame slice that keeps its block's token alive.
struct Pinned {
    bytes: Bytes,
    _token: Arc<Token>,
}

impl AsRef<[u8]> for Pinned {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// The block being read into: its address range and token.
#[derive(Debug)]
struct Block {
    start: usize,
    end: usize,
    token: Arc<Token>,
}

/// A publisher's read buffer. Read into [`ReadBuffer::buf`] after
/// [`ReadBuffer::make_room`]; pass every frame the decoder returns through
/// [`ReadBuffer::pin`].
#[derive(Debug)]
pub struct ReadBuffer {
    buf: BytesMut,
    block: Option<Block>,
    gauge: Gauge,
}

impl Default for ReadBuffer {
    fn default() -> Self {
        ReadBuffer::new()
    }
}

impl ReadBuffer {
    /// An empty buffer, accounted nowhere until [`ReadBuffer::attach`].
    pub fn new() -> ReadBuffer {
        ReadBuffer { buf: BytesMut::new(), block: None, gauge: Gauge::detached("", "ingest") }
    }

    /// Accounts the current block and every later one in `gauge` (taken
    /// once the stream is known, at publish).
    pub fn attach(&mut self, gauge: Gauge) {
        self.gauge = gauge;
        if let Some(size) = self.block.as_ref().map(|b| b.end - b.start) {
            // Frames sliced before this keep the old token; the block's
            // bytes count here from now on, for as long as newer frames or
            // the buffer hold it.
            let token = self.token(size);
            if let Some(b) = &mut self.block {
                b.token = token;
            }
        }
    }

    fn token(&self, bytes: usize) -> Arc<Token> {
        self.gauge.add(bytes);
        Arc::new(Token { gauge: self.gauge.clone(), bytes })
    }

    /// Makes room for a read. Each block is filled before the next is taken:
    /// reserving a fresh block before every read (as the driver once did)
    /// made each read an allocation that a few small slices kept alive for
    /// the length of the stream's windows.
    pub fn make_room(&mut self) {
        if self.buf.capacity() - self.buf.len() >= MIN_READ && self.block.is_some() {
            return;
        }
        self.buf.reserve(READ_BLOCK);
        let start = self.buf.as_ptr() as usize;
        let end = start + self.buf.capacity();
        // `reserve` may have reclaimed the same block (nothing else held
        // it): then the block and its token stay.
        if self.block.as_ref().is_some_and(|b| start >= b.start && end <= b.end) {
            return;
        }
        let token = self.token(end - start);
        self.block = Some(Block { start, end, token });
    }

    /// The bytes read and not yet decoded; read into its spare capacity.
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// `payload` again, holding a share of its block's token when it is a
    /// slice of the current block (a copy or a reassembled message is
    /// returned as it is).
    pub fn pin(&self, payload: Bytes) -> Bytes {
        let Some(block) = &self.block else { return payload };
        let p = payload.as_ptr() as usize;
        if payload.is_empty() || p < block.start || p + payload.len() > block.end {
            return payload;
        }
        Bytes::from_owner(Pinned { bytes: payload, _token: block.token.clone() })
    }

    /// The undecoded bytes, for a connection that turns into a player.
    pub fn into_inner(self) -> BytesMut {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidecast_media::Ledger;

    #[test]
    fn a_block_counts_until_its_last_frame_and_the_buffer_let_go() {
        let ledger = Ledger::new();
        let mut rb = ReadBuffer::new();
        rb.make_room();
        rb.attach(ledger.gauge("cam", "ingest"));
        let first = ledger.total();
        assert!(first >= READ_BLOCK as u64, "the block is accounted: {first}");

        rb.buf().extend_from_slice(&[7u8; 2000]);
        let sliced = rb.buf().split_to(1500).freeze();
        let frame = rb.pin(sliced);
        assert_eq!(&frame[..3], &[7, 7, 7]);
        let copied = rb.pin(Bytes::copy_from_slice(&[1u8; 600]));

        // Fill the block so the next read takes a new one.
        let spare = rb.buf().capacity() - rb.buf().len();
        rb.buf().extend_from_slice(&vec![0u8; spare - 100]);
        let all = rb.buf().len();
        let _ = rb.buf().split_to(all);
        rb.make_room();
        let two_blocks = ledger.total();
        assert!(two_blocks >= first + READ_BLOCK as u64, "the frame pins the old block: {two_blocks}");

        drop(copied);
        assert_eq!(ledger.total(), two_blocks, "a copy pins nothing");
        drop(frame);
        assert!(ledger.total() < two_blocks, "the old block is released with its last frame");
        drop(rb);
        assert_eq!(ledger.total(), 0);
    }
}

//! The chunk decoder: the first byte picks a chunk size; the rest is the wire.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tidecast_protocols::rtmp::chunk::{Decoder, Limits};

fuzz_target!(|data: &[u8]| {
    let Some((&size, wire)) = data.split_first() else { return };
    let limits = Limits { max_message: 1 << 16, max_chunk_streams: 8 };
    let mut dec = Decoder::new(limits);
    let _ = dec.set_chunk_size(u32::from(size).max(1) * 16);
    let mut buf = BytesMut::from(wire);
    loop {
        let before = buf.len();
        match dec.decode_chunk(&mut buf) {
            Ok(Some(m)) => assert!(m.payload.len() <= limits.max_message as usize),
            Ok(None) => {}
            Err(_) => break,
        }
        if buf.len() == before {
            break;
        }
        // Invariant: partial messages stay within the limits.
        assert!(dec.buffered() <= limits.max_chunk_streams * limits.max_message as usize);
    }
});

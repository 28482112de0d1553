//! The server handshake on arbitrary bytes, split into arbitrary reads.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tidecast_protocols::rtmp::handshake::ServerHandshake;

fuzz_target!(|data: &[u8]| {
    let mut hs = ServerHandshake::AwaitC0C1;
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    for piece in data.chunks(997) {
        buf.extend_from_slice(piece);
        match hs.advance(&mut buf, &mut out, 0) {
            Ok(true) | Err(_) => break,
            Ok(false) => {}
        }
    }
    // Invariant: S0+S1+S2 is written whole or not at all.
    assert!(out.is_empty() || out.len() == 1 + 2 * 1536);
});

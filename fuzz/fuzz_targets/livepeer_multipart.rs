//! A Livepeer gateway's answer: the content type's boundary and the
//! `multipart/mixed` body, as `parse` reads them.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tidecast_protocols::livepeer::multipart::{self, MAX_PARTS};

fuzz_target!(|data: &[u8]| {
    // First line: the content type; the rest: the body.
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let Ok(content_type) = std::str::from_utf8(&data[..split]) else { return };
    let body = Bytes::copy_from_slice(data.get(split + 1..).unwrap_or(&[]));
    let Ok(boundary) = multipart::boundary(content_type) else { return };
    if let Ok(parts) = multipart::parse(&body, boundary) {
        assert!(parts.len() <= MAX_PARTS);
        let total: usize = parts.iter().map(|p| p.body.len()).sum();
        assert!(total <= body.len());
    }
});

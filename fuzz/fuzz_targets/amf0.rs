//! AMF0 decoding; what decodes must re-encode and decode to the same values.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tidecast_protocols::rtmp::amf::{decode_all, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(values) = decode_all(data) else { return };
    let mut out = BytesMut::new();
    for v in &values {
        encode(v, &mut out);
    }
    let again = decode_all(&out).expect("our own encoding decodes");
    // NaN != NaN: compare the encodings instead of the values.
    let mut out2 = BytesMut::new();
    for v in &again {
        encode(v, &mut out2);
    }
    assert_eq!(out, out2);
});

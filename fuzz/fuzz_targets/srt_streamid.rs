//! The SRT streamid parser: no panic; what parses names a stream.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tidecast_protocols::srt::streamid;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(req) = streamid::parse(s) {
        assert!(!req.name.is_empty());
        assert!(req.gate_key().starts_with(&req.name));
    }
});

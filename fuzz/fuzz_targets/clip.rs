//! Clips: MistServer's time parameters from a query string, and the
//! samples read back out of a packaged segment. No panic; a span never
//! ends before it starts; every sample read lies inside the segment.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tidecast_protocols::progressive::clip;

fuzz_target!(|data: &[u8]| {
    let split = data.len().min(data.first().map_or(0, |&b| usize::from(b)));
    let (query, segment) = data.split_at(split);
    if let Ok(q) = std::str::from_utf8(query) {
        if let Ok(s) = clip::span(Some(q), Some(1_700_000_000_000), 1_700_000_060_000) {
            assert!(s.stop_us.is_none_or(|stop| stop > s.start_us));
        }
    }
    for s in clip::read_samples(segment, 3) {
        let offset = (s.offset & 0xffff_ffff) as usize;
        assert_eq!(s.offset >> 32, 3);
        assert!(offset + s.size as usize <= segment.len());
    }
});

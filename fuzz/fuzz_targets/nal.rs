//! Annex B <-> length-prefixed conversion round trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tidecast_codecs::nal;

fuzz_target!(|data: &[u8]| {
    let lp = nal::to_length_prefixed(data);
    let annexb = nal::to_annexb(&lp, 4).expect("our own length prefixes are valid");
    assert_eq!(nal::to_length_prefixed(&annexb), lp);
    for size in 1..=4 {
        let _ = nal::to_annexb(data, size);
    }
});

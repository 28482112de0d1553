//! AudioSpecificConfig and OpusHead.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tidecast_codecs::{aac, opus};

fuzz_target!(|data: &[u8]| {
    if let Ok(asc) = aac::parse(data) {
        if let Ok(rebuilt) = aac::build(asc.object_type, asc.sample_rate, asc.channels) {
            if asc.object_type < 31 {
                let again = aac::parse(&rebuilt).expect("our ASC parses");
                assert_eq!(again.sample_rate, asc.sample_rate);
            }
        }
    }
    let _ = opus::parse(data);
});

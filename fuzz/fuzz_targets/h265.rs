//! H.265 hvcC and SPS parsing; a parsed SPS builds a record that parses back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tidecast_codecs::h265;

fuzz_target!(|data: &[u8]| {
    let _ = h265::parse_config(data);
    let _ = h265::describe(data);
    if let Ok(sps) = h265::parse_sps(data) {
        let _ = h265::codec_string(&sps);
        let record = h265::build_config(&[0x40, 0x01], data, &[0x44, 0x01]).expect("SPS parsed once");
        let cfg = h265::parse_config(&record).expect("our record parses");
        assert_eq!(cfg.sps[0], data);
    }
    let _ = h265::is_irap(data, 4);
});

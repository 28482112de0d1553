//! AV1 av1C records, OBU walking and temporal unit splitting.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tidecast_codecs::av1;

fuzz_target!(|data: &[u8]| {
    let _ = av1::parse_config(data);
    let _ = av1::describe(data);
    for obu in av1::obus(data) {
        if obu.is_err() {
            break;
        }
    }
    if let Ok(units) = av1::temporal_units(data) {
        let total: usize = units.iter().map(Vec::len).sum();
        assert!(total <= data.len());
    }
    let _ = av1::is_keyframe(data);
    let _ = av1::build_config(data);
});

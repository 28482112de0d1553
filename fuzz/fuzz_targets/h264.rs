//! H.264 avcC and SPS parsing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tidecast_codecs::h264;

fuzz_target!(|data: &[u8]| {
    let _ = h264::parse_config(data);
    let _ = h264::describe(data);
    if let Ok(sps) = h264::parse_sps(data) {
        let _ = h264::codec_string(&sps);
    }
    let _ = h264::is_idr(data, 4);
});

//! VP8/VP9 keyframe headers and vpcC records.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tidecast_codecs::vpx;
use tidecast_media::Codec;

fuzz_target!(|data: &[u8]| {
    let _ = vpx::parse_config(data);
    for codec in [Codec::Vp8, Codec::Vp9] {
        let _ = vpx::describe(codec, data);
        if let Ok(Some(c)) = vpx::keyframe_config(codec, data) {
            // What a keyframe gives must make a record that reads back.
            let back = vpx::parse_config(&vpx::build_config(&c)).expect("a built record parses");
            assert_eq!((back.profile, back.bit_depth, back.level), (c.profile, c.bit_depth, c.level));
        }
    }
});

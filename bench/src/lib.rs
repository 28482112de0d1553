//! Shared inputs for Tidecast's criterion suites and load generator.
//!
//! `cargo bench -p tidecast-bench` runs the suites; `make bench-check` runs
//! each once as a test. Results and how they were taken: `docs/benchmarks.md`.

pub mod load;

use bytes::Bytes;
use tidecast_media::{Codec, Frame, Track};

/// An H.264 track (320x240 High 4:4:4 SPS) and an AAC-LC track.
pub fn tracks() -> Vec<Track> {
    let sps = [
        0x67, 0xf4, 0x00, 0x0d, 0x91, 0x9b, 0x28, 0x28, 0x3f, 0x60, 0x22, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00,
        0x03, 0x00, 0x64, 0x1e, 0x28, 0x53, 0x2c,
    ];
    let pps = [0x68, 0xeb, 0xe3, 0xc4, 0x48, 0x44];
    let avcc = tidecast_codecs::h264::build_config(&sps, &pps).unwrap_or_default();
    let asc = Bytes::from_static(&[0x12, 0x10]);
    vec![
        Track {
            id: 0,
            codec: Codec::H264,
            info: tidecast_codecs::describe(Codec::H264, &avcc).unwrap_or_default(),
            config: Bytes::from(avcc),
        },
        Track {
            id: 1,
            codec: Codec::Aac,
            info: tidecast_codecs::describe(Codec::Aac, &asc).unwrap_or_default(),
            config: asc,
        },
    ]
}

/// `seconds` of 30 fps video (about 3 Mbit/s, keyframe every second) and
/// 44.1 kHz AAC, in decode order.
pub fn frames(seconds: i64) -> Vec<Frame> {
    let mut out = Vec::new();
    for i in 0..seconds * 30 {
        let key = i % 30 == 0;
        let len: usize = if key { 60_000 } else { 11_000 };
        // One length-prefixed NAL unit: an IDR or a non-IDR slice.
        let mut au = ((len - 4) as u32).to_be_bytes().to_vec();
        au.push(if key { 0x65 } else { 0x41 });
        au.resize(len, 0x5a);
        out.push(Frame { track: 0, dts: i * 33_333, cts: 0, keyframe: key, payload: Bytes::from(au) });
    }
    for i in 0..seconds * 44_100 / 1024 {
        out.push(Frame {
            track: 1,
            dts: i * 1024 * 1_000_000 / 44_100,
            cts: 0,
            keyframe: true,
            payload: Bytes::from(vec![0x21; 370]),
        });
    }
    out.sort_by_key(|f| (f.dts, f.track));
    out
}

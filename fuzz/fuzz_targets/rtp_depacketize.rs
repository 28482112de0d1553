//! WHIP media: RTP payloads through str0m's H.264 and VP8 depacketizers,
//! and every depacketized sample (H.264, AV1, VP8, VP9, Opus) through the
//! assembler that turns them into media frames. Input: records of
//! [kind][len u16][payload], kind picking the codec and flags.
#![no_main]
use libfuzzer_sys::fuzz_target;
use str0m::format::CodecExtra;
use str0m::unversioned::{Depacketizer, H264Depacketizer, Vp8Depacketizer};
use tidecast_media::Codec;
use tidecast_protocols::webrtc::assemble::{Assembler, Sample};

fuzz_target!(|data: &[u8]| {
    let mut assembler = Assembler::new(true, true);
    let mut h264 = H264Depacketizer::default();
    let mut vp8 = Vp8Depacketizer::default();
    let mut rest = data;
    let mut rtp_time = 0u64;
    let mut last_dts = std::collections::HashMap::new();
    while rest.len() >= 3 {
        let kind = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let payload = &rest[3..3 + len];
        rest = &rest[3 + len..];
        rtp_time = rtp_time.wrapping_add(u64::from(kind >> 4) * 1500);
        let mut sample_data = Vec::new();
        let mut extra = CodecExtra::None;
        let codec = match kind & 0x07 {
            0 => {
                let _ = h264.depacketize(payload, &mut sample_data, &mut extra);
                Codec::H264
            }
            1 => {
                let _ = vp8.depacketize(payload, &mut sample_data, &mut extra);
                Codec::Vp8
            }
            2 => Codec::Av1,
            3 => Codec::Vp9,
            4 => Codec::H265,
            _ => Codec::Opus,
        };
        let data = if sample_data.is_empty() { payload } else { &sample_data[..] };
        let sample = Sample {
            codec,
            rtp_time,
            clock_rate: if codec == Codec::Opus { 48_000 } else { 90_000 },
            arrival_us: i64::from(kind),
            data,
            keyframe: kind & 0x08 != 0,
            contiguous: kind & 0x10 == 0,
        };
        let out = assembler.push(&sample);
        if let Some(f) = out.frame {
            // Timestamps never go backwards within a track.
            let prev = last_dts.insert(f.track, f.dts);
            assert!(prev.is_none_or(|p| f.dts > p), "dts went backwards");
        }
    }
});

//! Which H.264 encoders work here: each candidate is opened and made to
//! encode one small frame, once, at start-up. A hardware encoder can be in
//! FFmpeg's build and still not work (no GPU, no driver, no device node), so
//! being listed proves nothing; encoding a frame does.
//!
//! NVENC takes system-memory frames; QSV wants NV12; VAAPI wants hardware
//! frames uploaded to a device, which only the ladder sets up: its probe
//! here only tells whether the encoder opens with NV12 system frames, and a
//! failure names FFmpeg's reason.

use std::time::Instant;

use ffmpeg_next as ff;
use serde::Serialize;

/// The H.264 encoders a ladder may use, in the order `hw = "auto"` tries them.
pub const H264_CANDIDATES: [&str; 4] = ["h264_nvenc", "h264_qsv", "h264_vaapi", "libx264"];

/// What probing one encoder found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EncoderProbe {
    /// FFmpeg's encoder name.
    pub name: String,
    /// Whether it encoded the test frame.
    pub works: bool,
    /// Hardware (`h264_nvenc`, `h264_qsv`, `h264_vaapi`) or software.
    pub hardware: bool,
    /// Why not, in FFmpeg's words where it gave any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long the probe took, microseconds.
    pub micros: u64,
}

/// Probes every candidate. Blocking (opening an encoder may load a driver):
/// call it from a thread of its own.
pub fn probe_h264() -> Vec<EncoderProbe> {
    crate::init();
    H264_CANDIDATES.iter().map(|name| probe(name)).collect()
}

/// Probes one encoder by name.
pub fn probe(name: &str) -> EncoderProbe {
    crate::init();
    let started = Instant::now();
    let (result, logged) = crate::log::capture(|| encode_one_frame(name));
    let reason = result.err().map(|e| {
        // FFmpeg's log usually says more than the error code.
        let detail: Vec<String> = logged.into_iter().filter(|l| !e.contains(l.as_str())).collect();
        if detail.is_empty() {
            e
        } else {
            format!("{e} ({})", detail.join("; "))
        }
    });
    EncoderProbe {
        name: name.to_owned(),
        works: reason.is_none(),
        hardware: name != "libx264",
        reason,
        micros: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
    }
}

fn encode_one_frame(name: &str) -> Result<(), String> {
    let codec = ff::encoder::find_by_name(name).ok_or_else(|| "not in this FFmpeg build".to_owned())?;
    let format = if name == "libx264" { ff::format::Pixel::YUV420P } else { ff::format::Pixel::NV12 };
    let (w, h) = (256, 144);
    let mut enc = ff::codec::context::Context::new_with_codec(codec).encoder().video().map_err(|e| e.to_string())?;
    enc.set_width(w);
    enc.set_height(h);
    enc.set_format(format);
    enc.set_time_base(ff::Rational(1, 30));
    enc.set_frame_rate(Some(ff::Rational(30, 1)));
    enc.set_max_b_frames(0);
    enc.set_gop(30);
    let mut enc = enc.open_as(codec).map_err(|e| format!("cannot open: {e}"))?;
    let mut frame = ff::frame::Video::new(format, w, h);
    for plane in 0..frame.planes() {
        frame.data_mut(plane).fill(128);
    }
    frame.set_pts(Some(0));
    enc.send_frame(&frame).map_err(|e| format!("cannot encode: {e}"))?;
    enc.send_eof().map_err(|e| format!("cannot flush: {e}"))?;
    let mut packet = ff::Packet::empty();
    let mut bytes = 0;
    while enc.receive_packet(&mut packet).is_ok() {
        bytes += packet.size();
    }
    if bytes == 0 {
        return Err("encoded nothing".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x264_encodes_and_a_missing_encoder_says_why() {
        let x264 = probe("libx264");
        assert!(x264.works, "{x264:?}");
        assert!(!x264.hardware);
        let missing = probe("h264_no_such_encoder");
        assert!(!missing.works);
        assert_eq!(missing.reason.as_deref(), Some("not in this FFmpeg build"));
    }

    #[test]
    fn every_candidate_gets_an_answer() {
        let all = probe_h264();
        assert_eq!(all.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), H264_CANDIDATES);
        for p in &all {
            assert!(p.works || p.reason.as_deref().is_some_and(|r| !r.is_empty()), "{p:?}");
        }
        assert!(all.iter().any(|p| p.works), "software encoding always works: {all:?}");
    }
}

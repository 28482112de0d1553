//! Which H.264 encoders work here: each candidate is opened and made to
//! encode one small frame, once, at start-up. A hardware encoder can be in
//! FFmpeg's build and still not work (no GPU, no driver, no device node), so
//! being listed proves nothing; encoding a frame does.
//!
//! The probe opens each encoder exactly as a ladder's rung would (same
//! settings; NVENC fed system-memory frames, QSV NV12, VAAPI NV12 uploaded
//! to a device surface) and encodes one 256x144 picture; a failure names
//! FFmpeg's reason.

use std::time::Instant;

use ffmpeg_next as ff;
use serde::Serialize;

use crate::encoder;
use crate::profile::{PlannedRung, Profile};

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
    if ff::encoder::find_by_name(name).is_none() {
        return Err("not in this FFmpeg build".into());
    }
    let &name = H264_CANDIDATES.iter().find(|n| **n == name).ok_or("not a candidate H.264 encoder")?;
    let rung = PlannedRung { width: 256, height: 144, bitrate_kbps: 300, max_fps: None };
    let mut enc = encoder::open(name, &rung, &Profile::standard(), 30.0)?;
    let mut frame = ff::frame::Video::new(enc.format, rung.width, rung.height);
    for plane in 0..frame.planes() {
        frame.data_mut(plane).fill(128);
    }
    frame.set_pts(Some(0));
    frame.set_kind(ff::picture::Type::I);
    enc.send(&frame).map_err(|e| format!("cannot encode: {e}"))?;
    enc.encoder.send_eof().map_err(|e| format!("cannot flush: {e}"))?;
    let mut packet = ff::Packet::empty();
    let mut bytes = 0;
    while enc.encoder.receive_packet(&mut packet).is_ok() {
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

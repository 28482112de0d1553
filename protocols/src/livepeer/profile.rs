//! What a go-livepeer gateway is told to make: one JSON profile per
//! rendition (the shape of livepeer/lpms `JsonProfile`), sent in the
//! `Livepeer-Transcode-Configuration` header of every segment upload.
//!
//! Sizes are rounded down to multiples of 16, as MistServer's Livepeer
//! process does, so every encoder the gateway's orchestrators may run
//! accepts them; the frame rate is sent as a fraction over 1000.

use serde::Serialize;

/// One rendition as Tidecast plans it (from a ladder profile's rung).
#[derive(Debug, Clone, PartialEq)]
pub struct Rendition {
    /// The name it comes back under (`Rendition-Name`), e.g. `480p`.
    pub name: String,
    /// Width in pixels, before rounding.
    pub width: u32,
    /// Height in pixels, before rounding.
    pub height: u32,
    /// Target bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// Frames per second (the source's, capped by the rung).
    pub fps: f64,
    /// H.264 profile: `baseline`, `main` or `high`.
    pub h264_profile: String,
}

/// lpms's JSON profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JsonProfile {
    /// Rendition name.
    pub name: String,
    /// Width in pixels (a multiple of 16).
    pub width: u32,
    /// Height in pixels (a multiple of 16).
    pub height: u32,
    /// Bits per second.
    pub bitrate: u64,
    /// Frame rate numerator (over `fpsDen`).
    pub fps: u32,
    /// Frame rate denominator.
    #[serde(rename = "fpsDen")]
    pub fps_den: u32,
    /// `H264Baseline`, `H264Main` or `H264High`.
    pub profile: String,
    /// Keyframe interval in seconds as a string; `"0.0"` follows the source.
    pub gop: String,
    /// Output codec: `H.264`.
    pub encoder: String,
}

impl JsonProfile {
    /// The profile for `r`.
    pub fn from_rendition(r: &Rendition) -> JsonProfile {
        let down16 = |v: u32| (v / 16 * 16).max(16);
        let profile = match r.h264_profile.as_str() {
            "baseline" => "H264Baseline",
            "high" => "H264High",
            _ => "H264Main",
        };
        let fps = if r.fps.is_finite() && r.fps > 0.0 { (r.fps * 1000.0).round() as u32 } else { 25_000 };
        JsonProfile {
            name: r.name.clone(),
            width: down16(r.width),
            height: down16(r.height),
            bitrate: u64::from(r.bitrate_kbps) * 1000,
            fps,
            fps_den: 1000,
            profile: profile.to_owned(),
            // Keyframes where the source has them: segments start on one,
            // and every rendition's segment must too.
            gop: "0.0".to_owned(),
            encoder: "H.264".to_owned(),
        }
    }
}

/// The `Livepeer-Transcode-Configuration` header value: go-livepeer's
/// auth-webhook response shape, of which a gateway reads `manifestID` and
/// `profiles` here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TranscodeConfiguration {
    /// The session's manifest id (also in the URL).
    #[serde(rename = "manifestID")]
    pub manifest_id: String,
    /// The renditions.
    pub profiles: Vec<JsonProfile>,
}

impl TranscodeConfiguration {
    /// The header value (compact JSON).
    pub fn header(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendition(name: &str, width: u32, height: u32, fps: f64, profile: &str) -> Rendition {
        Rendition { name: name.into(), width, height, bitrate_kbps: 800, fps, h264_profile: profile.into() }
    }

    #[test]
    fn sizes_round_down_to_sixteen_and_rates_go_over_a_thousand() {
        let p = JsonProfile::from_rendition(&rendition("360p", 640, 360, 29.97, "main"));
        assert_eq!((p.width, p.height), (640, 352));
        assert_eq!((p.fps, p.fps_den), (29_970, 1000));
        assert_eq!((p.bitrate, p.profile.as_str(), p.gop.as_str()), (800_000, "H264Main", "0.0"));
        let tiny = JsonProfile::from_rendition(&rendition("t", 8, 8, f64::NAN, "baseline"));
        assert_eq!((tiny.width, tiny.height, tiny.fps, tiny.profile.as_str()), (16, 16, 25_000, "H264Baseline"));
    }

    #[test]
    fn the_header_is_lpms_json() {
        let c = TranscodeConfiguration {
            manifest_id: "cam-1a2b3c4d".into(),
            profiles: vec![JsonProfile::from_rendition(&rendition("240p", 426, 240, 30.0, "high"))],
        };
        let v: serde_json::Value = serde_json::from_str(&c.header()).unwrap();
        assert_eq!(v["manifestID"], "cam-1a2b3c4d");
        let p = &v["profiles"][0];
        assert_eq!(p["name"], "240p");
        assert_eq!((p["width"].as_u64(), p["height"].as_u64()), (Some(416), Some(240)));
        assert_eq!((p["fps"].as_u64(), p["fpsDen"].as_u64()), (Some(30_000), Some(1000)));
        assert_eq!(p["profile"], "H264High");
        assert_eq!(p["encoder"], "H.264");
    }
}

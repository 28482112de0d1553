//! Ladder profiles: which renditions a source gets, and at what sizes.
//!
//! A profile names its rungs by height; each rung keeps the source's aspect
//! ratio, is never larger than the source, and has even dimensions (4:2:0
//! chroma needs them). Rungs that would not be smaller than the source are
//! left out: the source itself is always the top of the ladder.

use serde::{Deserialize, Serialize};

/// Whether a ladder may, must or must not use a hardware encoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HwPolicy {
    /// The first candidate that works; software when none does, with a
    /// warning and a counted fallback.
    #[default]
    Auto,
    /// A hardware encoder or nothing: the ladder refuses to start without
    /// one (the source keeps playing).
    Require,
    /// Software (x264) only.
    Off,
}

/// Where a profile's renditions are made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In this process (the ladder).
    #[default]
    Local,
    /// By a Livepeer gateway (`[transcode.livepeer]`).
    Livepeer,
}

/// One rung of a ladder, as configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rung {
    /// Output height in pixels; the width follows the source's aspect ratio.
    pub height: u32,
    /// Target bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// Frames per second at most (frames above it are left out; keyframes
    /// never are). Unset: the source's rate.
    #[serde(default)]
    pub max_fps: Option<f64>,
}

/// A named ladder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The rungs, any order (the ladder lists them from the largest down).
    pub rungs: Vec<Rung>,
    /// H.264 profile of every rung: `baseline`, `main` or `high`.
    #[serde(default = "default_h264_profile")]
    pub h264_profile: String,
    /// x264 preset (`ultrafast` … `medium`); hardware encoders use their
    /// own fastest low-latency preset.
    #[serde(default = "default_preset")]
    pub preset: String,
    /// Hardware encoder policy (local ladders, and a Livepeer profile's
    /// local fallback).
    #[serde(default)]
    pub hw: HwPolicy,
    /// Where the renditions are made.
    #[serde(default)]
    pub backend: Backend,
    /// When streams of this profile get the audio bridge (unset: the
    /// node's `[transcode] audio_bridge`).
    #[serde(default)]
    pub audio_bridge: Option<crate::audio::BridgeMode>,
}

fn default_h264_profile() -> String {
    "main".into()
}

fn default_preset() -> String {
    "veryfast".into()
}

impl Profile {
    /// The built-in `default` profile: 720p, 480p, 360p and 240p rungs.
    pub fn standard() -> Profile {
        let rung = |height, bitrate_kbps| Rung { height, bitrate_kbps, max_fps: Some(30.0) };
        Profile {
            rungs: vec![rung(720, 2800), rung(480, 1400), rung(360, 800), rung(240, 400)],
            h264_profile: default_h264_profile(),
            preset: default_preset(),
            hw: HwPolicy::Auto,
            backend: Backend::Local,
            audio_bridge: None,
        }
    }

    /// Checks the settings an encoder would otherwise reject later.
    pub fn validate(&self) -> Result<(), String> {
        if self.rungs.is_empty() {
            return Err("a profile needs at least one rung".into());
        }
        if self.rungs.len() > 8 {
            return Err("a profile has at most 8 rungs".into());
        }
        for r in &self.rungs {
            if !(16..=4320).contains(&r.height) {
                return Err(format!("rung height {} is outside 16..=4320", r.height));
            }
            if !(50..=100_000).contains(&r.bitrate_kbps) {
                return Err(format!("rung bitrate {} kbit/s is outside 50..=100000", r.bitrate_kbps));
            }
            if r.max_fps.is_some_and(|f| !(1.0..=240.0).contains(&f)) {
                return Err("max_fps is outside 1..=240".into());
            }
        }
        if !["baseline", "main", "high"].contains(&self.h264_profile.as_str()) {
            return Err(format!("h264_profile {:?} is not baseline, main or high", self.h264_profile));
        }
        const PRESETS: [&str; 6] = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"];
        if !PRESETS.contains(&self.preset.as_str()) {
            return Err(format!("preset {:?} is not one of {}", self.preset, PRESETS.join(", ")));
        }
        Ok(())
    }

    /// The rungs this profile makes from a `width` x `height` source, the
    /// largest first: smaller than the source, same aspect ratio, even.
    pub fn plan(&self, width: u32, height: u32) -> Vec<PlannedRung> {
        let mut out: Vec<PlannedRung> = Vec::new();
        if width < 2 || height < 2 {
            return out;
        }
        let mut rungs = self.rungs.clone();
        rungs.sort_by_key(|r| std::cmp::Reverse(r.height));
        for r in rungs {
            let h = even(r.height.min(height));
            if h >= height || h < 2 {
                continue; // never upscale, and the source is already its own rung
            }
            // The nearest even width (what FFmpeg's `scale=-2:h` gives).
            let den = 2 * u64::from(height);
            let w = (2 * ((u64::from(width) * u64::from(h) + den / 2) / den)) as u32;
            if w < 2 || out.iter().any(|p| p.height == h) {
                continue;
            }
            out.push(PlannedRung { width: w, height: h, bitrate_kbps: r.bitrate_kbps, max_fps: r.max_fps });
        }
        out
    }
}

fn even(v: u32) -> u32 {
    v & !1
}

/// A rung sized for one source.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlannedRung {
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Target bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// Frame rate cap.
    pub max_fps: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(p: &[PlannedRung]) -> Vec<(u32, u32)> {
        p.iter().map(|r| (r.width, r.height)).collect()
    }

    #[test]
    fn rungs_keep_the_aspect_ratio_round_to_even_and_never_upscale() {
        let p = Profile::standard();
        assert_eq!(sizes(&p.plan(1280, 720)), [(854, 480), (640, 360), (426, 240)]);
        assert_eq!(sizes(&p.plan(1920, 1080)), [(1280, 720), (854, 480), (640, 360), (426, 240)]);
        // Portrait: the height rules, the width follows.
        assert_eq!(sizes(&p.plan(720, 1280))[0], (406, 720));
        // A source smaller than every rung gets none.
        assert!(p.plan(320, 180).is_empty());
        // An odd source still gives even rungs.
        for r in p.plan(1279, 719) {
            assert_eq!((r.width % 2, r.height % 2), (0, 0), "{r:?}");
        }
    }

    #[test]
    fn validation_names_the_bad_setting() {
        let mut p = Profile::standard();
        assert!(p.validate().is_ok());
        p.preset = "placebo".into();
        assert!(p.validate().unwrap_err().contains("preset"));
        p = Profile::standard();
        p.rungs[0].bitrate_kbps = 1;
        assert!(p.validate().unwrap_err().contains("bitrate"));
        p.rungs.clear();
        assert!(p.validate().is_err());
    }

    #[test]
    fn profiles_read_from_toml_with_defaults() {
        let p: Profile = toml_like(r#"{"rungs":[{"height":360,"bitrate_kbps":800}],"hw":"off"}"#);
        assert_eq!((p.hw, p.preset.as_str(), p.h264_profile.as_str()), (HwPolicy::Off, "veryfast", "main"));
    }

    fn toml_like(json: &str) -> Profile {
        serde_json::from_str(json).unwrap()
    }
}

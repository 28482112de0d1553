//! The hardware policy: which encoders a ladder tries, in which order,
//! from what the start-up probe found.

use crate::probe::EncoderProbe;
use crate::profile::HwPolicy;

/// Hardware encoders, in the order `auto` tries them (VAAPI's pictures
/// are uploaded to device surfaces, see `hwframes`).
pub const LADDER_HARDWARE: [&str; 3] = ["h264_nvenc", "h264_qsv", "h264_vaapi"];
/// The software encoder.
pub const SOFTWARE: &str = "libx264";

/// What a policy resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// Encoders to try, best first; each rung falls back along this list
    /// when its encoder fails at run time.
    pub candidates: Vec<&'static str>,
    /// Set when `auto` wanted hardware and got software: why.
    pub fell_back: Option<String>,
}

/// Resolves `policy` against the probe results. `Err` when `require`
/// finds no working hardware encoder (the message says what each gave).
pub fn choose(policy: HwPolicy, probes: &[EncoderProbe]) -> Result<Choice, String> {
    let works = |name: &str| probes.iter().any(|p| p.name == name && p.works);
    let hw: Vec<&'static str> = LADDER_HARDWARE.iter().copied().filter(|n| works(n)).collect();
    let why_not = || {
        let reasons: Vec<String> = probes
            .iter()
            .filter(|p| p.hardware)
            .map(|p| format!("{}: {}", p.name, p.reason.as_deref().unwrap_or(if p.works { "works" } else { "failed" })))
            .collect();
        if reasons.is_empty() {
            "not probed".to_owned()
        } else {
            reasons.join("; ")
        }
    };
    match policy {
        HwPolicy::Off => Ok(Choice { candidates: vec![SOFTWARE], fell_back: None }),
        HwPolicy::Require if hw.is_empty() => {
            Err(format!("hw = \"require\": no hardware H.264 encoder works here ({})", why_not()))
        }
        HwPolicy::Require => Ok(Choice { candidates: hw, fell_back: None }),
        HwPolicy::Auto => {
            let fell_back = hw.is_empty().then(why_not);
            let mut candidates = hw;
            candidates.push(SOFTWARE);
            Ok(Choice { candidates, fell_back })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(name: &str, works: bool) -> EncoderProbe {
        EncoderProbe {
            name: name.into(),
            works,
            hardware: name != SOFTWARE,
            reason: (!works).then(|| "no device".into()),
            micros: 1,
        }
    }

    #[test]
    fn auto_prefers_hardware_and_says_when_it_falls_back() {
        let none = [probe("h264_nvenc", false), probe("h264_qsv", false), probe("libx264", true)];
        let c = choose(HwPolicy::Auto, &none).unwrap();
        assert_eq!(c.candidates, ["libx264"]);
        assert!(c.fell_back.unwrap().contains("h264_nvenc: no device"));
        let nvenc = [probe("h264_nvenc", true), probe("h264_qsv", false), probe("libx264", true)];
        let c = choose(HwPolicy::Auto, &nvenc).unwrap();
        assert_eq!((c.candidates, c.fell_back), (vec!["h264_nvenc", "libx264"], None));
        let vaapi = [probe("h264_nvenc", false), probe("h264_vaapi", true), probe("libx264", true)];
        assert_eq!(choose(HwPolicy::Auto, &vaapi).unwrap().candidates, ["h264_vaapi", "libx264"]);
    }

    #[test]
    fn require_refuses_without_hardware_and_off_is_software() {
        let none = [probe("h264_nvenc", false), probe("libx264", true)];
        let e = choose(HwPolicy::Require, &none).unwrap_err();
        assert!(e.contains("require") && e.contains("h264_nvenc"), "{e}");
        assert_eq!(choose(HwPolicy::Off, &none).unwrap().candidates, ["libx264"]);
        let qsv = [probe("h264_qsv", true)];
        assert_eq!(choose(HwPolicy::Require, &qsv).unwrap().candidates, ["h264_qsv"]);
    }
}

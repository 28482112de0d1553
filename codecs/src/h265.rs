//! H.265: the HEVCDecoderConfigurationRecord and the sequence parameter set.

use tidecast_media::TrackInfo;

use crate::bits::{rbsp, BitReader};
use crate::CodecError;

/// The general profile_tier_level fields and picture size of an SPS.
#[derive(Clone, Debug, PartialEq)]
pub struct Sps {
    /// general_profile_space.
    pub profile_space: u8,
    /// general_tier_flag.
    pub tier: bool,
    /// general_profile_idc.
    pub profile: u8,
    /// general_profile_compatibility_flags.
    pub compatibility: u32,
    /// The 48 general constraint indicator bits.
    pub constraints: [u8; 6],
    /// general_level_idc.
    pub level: u8,
    /// Displayed width (after the conformance window).
    pub width: u32,
    /// Displayed height.
    pub height: u32,
}

/// Parameter sets of an hvcC record, by NAL unit type.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct HevcConfig {
    /// Bytes in each NAL length prefix.
    pub length_size: usize,
    /// VPS NAL units.
    pub vps: Vec<Vec<u8>>,
    /// SPS NAL units.
    pub sps: Vec<Vec<u8>>,
    /// PPS NAL units.
    pub pps: Vec<Vec<u8>>,
}

/// Parses an HEVCDecoderConfigurationRecord.
pub fn parse_config(data: &[u8]) -> Result<HevcConfig, CodecError> {
    const W: &str = "hvcC";
    if data.len() < 23 {
        return Err(CodecError::Truncated(W));
    }
    if data[0] != 1 {
        return Err(CodecError::Invalid { what: "hvcC version", value: data[0].into() });
    }
    let mut cfg = HevcConfig { length_size: usize::from(data[21] & 3) + 1, ..Default::default() };
    let arrays = data[22];
    let mut pos = 23;
    for _ in 0..arrays {
        let head = data.get(pos..pos + 3).ok_or(CodecError::Truncated(W))?;
        let kind = head[0] & 0x3f;
        let count = u16::from_be_bytes([head[1], head[2]]);
        pos += 3;
        for _ in 0..count {
            let len = data.get(pos..pos + 2).ok_or(CodecError::Truncated(W))?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let nal = data.get(pos + 2..pos + 2 + len).ok_or(CodecError::Truncated(W))?.to_vec();
            pos += 2 + len;
            match kind {
                32 => cfg.vps.push(nal),
                33 => cfg.sps.push(nal),
                34 => cfg.pps.push(nal),
                _ => {}
            }
        }
    }
    Ok(cfg)
}

/// Builds an hvcC record (4-byte lengths) from VPS, SPS and PPS NAL units.
pub fn build_config(vps: &[u8], sps: &[u8], pps: &[u8]) -> Result<Vec<u8>, CodecError> {
    let s = parse_sps(sps)?;
    let mut out = Vec::with_capacity(64 + vps.len() + sps.len() + pps.len());
    out.push(1);
    out.push((s.profile_space << 6) | (u8::from(s.tier) << 5) | s.profile);
    out.extend_from_slice(&s.compatibility.to_be_bytes());
    out.extend_from_slice(&s.constraints);
    out.push(s.level);
    out.extend_from_slice(&[0xf0, 0x00, 0xfc, 0xfd, 0xf8, 0xf8, 0x00, 0x00, 0x0f]);
    out.push(3);
    for (kind, nal) in [(32u8, vps), (33, sps), (34, pps)] {
        out.push(0x80 | kind);
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&(nal.len() as u16).to_be_bytes());
        out.extend_from_slice(nal);
    }
    Ok(out)
}

/// Parses a sequence parameter set NAL unit (2-byte header included).
pub fn parse_sps(nal: &[u8]) -> Result<Sps, CodecError> {
    if nal.len() < 3 || (nal[0] >> 1) & 0x3f != 33 {
        return Err(CodecError::Missing("H.265 SPS"));
    }
    let data = rbsp(&nal[2..]);
    let mut r = BitReader::new(&data, "H.265 SPS");
    r.skip(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.bits(3)? as usize;
    r.skip(1)?;
    let profile_space = r.bits(2)? as u8;
    let tier = r.bit()?;
    let profile = r.bits(5)? as u8;
    let compatibility = r.bits(32)? as u32;
    let mut constraints = [0u8; 6];
    for c in &mut constraints {
        *c = r.bits(8)? as u8;
    }
    let level = r.bits(8)? as u8;
    let mut sub = Vec::with_capacity(max_sub_layers_minus1);
    for _ in 0..max_sub_layers_minus1 {
        sub.push((r.bit()?, r.bit()?));
    }
    if max_sub_layers_minus1 > 0 {
        for _ in max_sub_layers_minus1..8 {
            r.skip(2)?;
        }
    }
    for (profile_present, level_present) in sub {
        if profile_present {
            r.skip(88)?;
        }
        if level_present {
            r.skip(8)?;
        }
    }
    r.ue()?; // sps_seq_parameter_set_id
    let chroma = r.ue()?;
    if chroma == 3 {
        r.bit()?;
    }
    let mut width = r.ue()?;
    let mut height = r.ue()?;
    if r.bit()? {
        let (sx, sy) = match chroma {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        let (l, rr, t, b) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        width = width.saturating_sub(sx * (l + rr));
        height = height.saturating_sub(sy * (t + b));
    }
    Ok(Sps {
        profile_space,
        tier,
        profile,
        compatibility,
        constraints,
        level,
        width: u32::try_from(width).unwrap_or(0),
        height: u32::try_from(height).unwrap_or(0),
    })
}

/// `hvc1.P.C.TL.B...` as RFC 6381 / ISO 14496-15 Annex E spell it.
pub fn codec_string(sps: &Sps) -> String {
    let space = ["", "A", "B", "C"][usize::from(sps.profile_space & 3)];
    let mut s = format!(
        "hvc1.{space}{}.{:X}.{}{}",
        sps.profile,
        sps.compatibility.reverse_bits(),
        if sps.tier { 'H' } else { 'L' },
        sps.level
    );
    let used = sps.constraints.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    for b in &sps.constraints[..used] {
        s.push_str(&format!(".{b:X}"));
    }
    s
}

/// Describes an H.265 track from its hvcC record.
pub fn describe(config: &[u8]) -> Result<TrackInfo, CodecError> {
    let cfg = parse_config(config)?;
    let sps = parse_sps(cfg.sps.first().ok_or(CodecError::Missing("SPS in hvcC"))?)?;
    Ok(TrackInfo { codec_string: codec_string(&sps), width: sps.width, height: sps.height, ..Default::default() })
}

/// Whether a length-prefixed access unit contains an IRAP picture (BLA, IDR or CRA).
pub fn is_irap(au: &[u8], length_size: usize) -> bool {
    crate::nal::length_prefixed(au, length_size)
        .flatten()
        .any(|n| n.first().is_some_and(|h| (16..=23).contains(&((h >> 1) & 0x3f))))
}

#[cfg(test)]
mod tests {
    use super::*;

    // x265 for lavfi testsrc 352x288 (RGB input, so Main 4:4:4, RExt profile 4).
    const VPS: &[u8] = &[
        0x40, 0x01, 0x0c, 0x01, 0xff, 0xff, 0x04, 0x08, 0x00, 0x00, 0x03, 0x00, 0x9e, 0x08, 0x00, 0x00, 0x03, 0x00,
        0x00, 0x3c, 0x95, 0x98, 0x09,
    ];
    const SPS: &[u8] = &[
        0x42, 0x01, 0x01, 0x04, 0x08, 0x00, 0x00, 0x03, 0x00, 0x9e, 0x08, 0x00, 0x00, 0x03, 0x00, 0x00, 0x3c, 0x90,
        0x01, 0x61, 0x00, 0x90, 0xb2, 0xca, 0xcd, 0x24, 0x99, 0x5e, 0x02, 0xdc, 0x08, 0x08, 0x00, 0x10, 0x00, 0x00,
        0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x01, 0xe0, 0x80,
    ];
    const PPS: &[u8] = &[0x44, 0x01, 0xc1, 0x72, 0x86, 0x0c, 0x46, 0x24];

    #[test]
    fn parses_sps_and_round_trips_config() {
        let sps = parse_sps(SPS).unwrap();
        assert_eq!((sps.profile, sps.level, sps.width, sps.height), (4, 60, 352, 288));
        let cfg = build_config(VPS, SPS, PPS).unwrap();
        let parsed = parse_config(&cfg).unwrap();
        assert_eq!((parsed.vps[0].as_slice(), parsed.sps[0].as_slice(), parsed.pps[0].as_slice()), (VPS, SPS, PPS));
        let info = describe(&cfg).unwrap();
        assert_eq!((info.width, info.height), (352, 288));
        assert_eq!(info.codec_string, "hvc1.4.10.L60.9E.8");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_config(&[1; 22]).is_err());
        assert!(parse_sps(&[0x42, 0x01]).is_err());
        assert!(parse_sps(&[0x40, 0x01, 0, 0]).is_err());
    }
}

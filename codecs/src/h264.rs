//! H.264: the AVCDecoderConfigurationRecord and the sequence parameter set.

use tidecast_media::TrackInfo;

use crate::bits::{rbsp, BitReader};
use crate::CodecError;

/// The fields of an SPS a player needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Sps {
    /// profile_idc.
    pub profile: u8,
    /// The constraint_set flags byte.
    pub constraints: u8,
    /// level_idc.
    pub level: u8,
    /// Displayed width (after cropping).
    pub width: u32,
    /// Displayed height (after cropping).
    pub height: u32,
    /// Frame rate from the VUI timing info, when present.
    pub frame_rate: Option<f64>,
}

/// A parsed avcC record.
#[derive(Clone, Debug, PartialEq)]
pub struct AvcConfig {
    /// Bytes in each NAL length prefix (1, 2 or 4).
    pub length_size: usize,
    /// Sequence parameter sets (NAL units, header included).
    pub sps: Vec<Vec<u8>>,
    /// Picture parameter sets.
    pub pps: Vec<Vec<u8>>,
}

/// Parses an AVCDecoderConfigurationRecord.
pub fn parse_config(data: &[u8]) -> Result<AvcConfig, CodecError> {
    const W: &str = "avcC";
    if data.len() < 6 {
        return Err(CodecError::Truncated(W));
    }
    if data[0] != 1 {
        return Err(CodecError::Invalid { what: "avcC version", value: data[0].into() });
    }
    let length_size = usize::from(data[4] & 3) + 1;
    if length_size == 3 {
        return Err(CodecError::Invalid { what: "avcC length size", value: 3 });
    }
    let mut pos = 5;
    let read_sets = |count: usize, pos: &mut usize| -> Result<Vec<Vec<u8>>, CodecError> {
        let mut sets = Vec::with_capacity(count);
        for _ in 0..count {
            let len = data.get(*pos..*pos + 2).ok_or(CodecError::Truncated(W))?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let set = data.get(*pos + 2..*pos + 2 + len).ok_or(CodecError::Truncated(W))?;
            sets.push(set.to_vec());
            *pos += 2 + len;
        }
        Ok(sets)
    };
    let n_sps = usize::from(data[pos] & 0x1f);
    pos += 1;
    let sps = read_sets(n_sps, &mut pos)?;
    let n_pps = usize::from(*data.get(pos).ok_or(CodecError::Truncated(W))?);
    pos += 1;
    let pps = read_sets(n_pps, &mut pos)?;
    Ok(AvcConfig { length_size, sps, pps })
}

/// Builds an avcC record from one SPS and one PPS (NAL units with headers).
pub fn build_config(sps: &[u8], pps: &[u8]) -> Result<Vec<u8>, CodecError> {
    if sps.len() < 4 {
        return Err(CodecError::Truncated("SPS"));
    }
    let mut out = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    out.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    out.extend_from_slice(sps);
    out.push(1);
    out.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    out.extend_from_slice(pps);
    Ok(out)
}

fn is_high_profile(p: u8) -> bool {
    matches!(p, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135)
}

/// Parses a sequence parameter set NAL unit (header byte included).
pub fn parse_sps(nal: &[u8]) -> Result<Sps, CodecError> {
    if nal.len() < 4 || nal[0] & 0x1f != 7 {
        return Err(CodecError::Missing("H.264 SPS"));
    }
    let data = rbsp(&nal[1..]);
    let mut r = BitReader::new(&data, "H.264 SPS");
    let profile = r.bits(8)? as u8;
    let constraints = r.bits(8)? as u8;
    let level = r.bits(8)? as u8;
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if is_high_profile(profile) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.bit()?;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i64, 8i64);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256) % 256;
                        }
                        last = if next == 0 { last } else { next };
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            let n = r.ue()?;
            if n > 255 {
                return Err(CodecError::Invalid { what: "num_ref_frames_in_pic_order_cnt_cycle", value: n });
            }
            for _ in 0..n {
                r.se()?;
            }
        }
        2 => {}
        other => return Err(CodecError::Invalid { what: "pic_order_cnt_type", value: other }),
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()? + 1;
    let height_units = r.ue()? + 1;
    let frame_mbs_only = r.bit()?;
    if !frame_mbs_only {
        r.bit()?;
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut cl, mut cr, mut ct, mut cb) = (0, 0, 0, 0);
    if r.bit()? {
        cl = r.ue()?;
        cr = r.ue()?;
        ct = r.ue()?;
        cb = r.ue()?;
    }
    let fm = if frame_mbs_only { 1 } else { 2 };
    let (cx, cy) = match (chroma_format_idc, separate_colour_plane) {
        (0, _) | (3, true) => (1, fm),
        (1, _) => (2, 2 * fm),
        (2, _) => (2, fm),
        _ => (1, fm),
    };
    let width = (width_mbs * 16).saturating_sub(cx * (cl + cr));
    let height = (fm * height_units * 16).saturating_sub(cy * (ct + cb));
    let frame_rate = if r.bit()? { vui_frame_rate(&mut r).ok().flatten() } else { None };
    Ok(Sps {
        profile,
        constraints,
        level,
        width: u32::try_from(width).unwrap_or(0),
        height: u32::try_from(height).unwrap_or(0),
        frame_rate,
    })
}

fn vui_frame_rate(r: &mut BitReader<'_>) -> Result<Option<f64>, CodecError> {
    if r.bit()? && r.bits(8)? == 255 {
        r.skip(32)?;
    }
    if r.bit()? {
        r.bit()?;
    }
    if r.bit()? {
        r.skip(4)?;
        if r.bit()? {
            r.skip(24)?;
        }
    }
    if r.bit()? {
        r.ue()?;
        r.ue()?;
    }
    if r.bit()? {
        let units = r.bits(32)?;
        let scale = r.bits(32)?;
        if units > 0 && scale > 0 {
            return Ok(Some(scale as f64 / (2.0 * units as f64)));
        }
    }
    Ok(None)
}

/// `avc1.PPCCLL`.
pub fn codec_string(sps: &Sps) -> String {
    format!("avc1.{:02x}{:02x}{:02x}", sps.profile, sps.constraints, sps.level)
}

/// Describes an H.264 track from its avcC record.
pub fn describe(config: &[u8]) -> Result<TrackInfo, CodecError> {
    let cfg = parse_config(config)?;
    let sps = parse_sps(cfg.sps.first().ok_or(CodecError::Missing("SPS in avcC"))?)?;
    Ok(TrackInfo {
        codec_string: codec_string(&sps),
        width: sps.width,
        height: sps.height,
        frame_rate: sps.frame_rate,
        ..Default::default()
    })
}

/// Whether a length-prefixed access unit contains an IDR slice.
pub fn is_idr(au: &[u8], length_size: usize) -> bool {
    crate::nal::length_prefixed(au, length_size).flatten().any(|n| n.first().is_some_and(|h| h & 0x1f == 5))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// SPS of x264 for ffmpeg's lavfi testsrc (RGB, so High 4:4:4 Predictive), 320x240, level 1.3.
    pub(crate) const SPS_320X240: &[u8] = &[
        0x67, 0xf4, 0x00, 0x0d, 0x91, 0x9b, 0x28, 0x28, 0x3f, 0x60, 0x22, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00,
        0x03, 0x00, 0x64, 0x1e, 0x28, 0x53, 0x2c,
    ];

    #[test]
    fn parses_sps_and_builds_config() {
        let sps = parse_sps(SPS_320X240).unwrap();
        assert_eq!((sps.profile, sps.level, sps.width, sps.height), (244, 13, 320, 240));
        let cfg = build_config(SPS_320X240, &[0x68, 0xeb, 0xe3, 0xc4, 0x48, 0x44]).unwrap();
        let info = describe(&cfg).unwrap();
        assert_eq!(info.codec_string, "avc1.f4000d");
        assert_eq!((info.width, info.height), (320, 240));
        assert_eq!(info.frame_rate, Some(25.0));
        let parsed = parse_config(&cfg).unwrap();
        assert_eq!(parsed.length_size, 4);
        assert_eq!(parsed.sps[0], SPS_320X240);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_config(&[]).is_err());
        assert!(parse_config(&[1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 40, 0x67]).is_err());
        assert!(parse_sps(&[0x67, 0x64]).is_err());
        assert!(parse_sps(&[0x68, 0, 0, 0, 0]).is_err());
    }
}

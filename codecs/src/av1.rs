//! AV1: the AV1CodecConfigurationRecord and enough of the sequence header OBU
//! to know the picture size.

use tidecast_media::TrackInfo;

use crate::bits::BitReader;
use crate::CodecError;

/// A parsed av1C record.
#[derive(Clone, Debug, PartialEq)]
pub struct Av1Config {
    /// seq_profile.
    pub profile: u8,
    /// seq_level_idx_0.
    pub level: u8,
    /// seq_tier_0.
    pub tier: bool,
    /// 8, 10 or 12.
    pub bit_depth: u8,
    /// Max frame size from the sequence header in configOBUs, if present.
    pub size: Option<(u32, u32)>,
}

/// obu_type of a sequence header.
pub const OBU_SEQUENCE_HEADER: u8 = 1;
/// obu_type of a temporal delimiter.
pub const OBU_TEMPORAL_DELIMITER: u8 = 2;

/// Parses an AV1CodecConfigurationRecord.
pub fn parse_config(data: &[u8]) -> Result<Av1Config, CodecError> {
    if data.len() < 4 {
        return Err(CodecError::Truncated("av1C"));
    }
    if data[0] != 0x81 {
        return Err(CodecError::Invalid { what: "av1C marker/version", value: data[0].into() });
    }
    let profile = data[1] >> 5;
    let level = data[1] & 0x1f;
    let tier = data[2] & 0x80 != 0;
    let high = data[2] & 0x40 != 0;
    let twelve = data[2] & 0x20 != 0;
    let bit_depth = match (high, twelve) {
        (false, _) => 8,
        (true, false) => 10,
        (true, true) => 12,
    };
    let size = obus(&data[4..])
        .filter_map(Result::ok)
        .find(|(t, _)| *t == OBU_SEQUENCE_HEADER)
        .map(|(_, payload)| sequence_header(payload).map(|h| (h.width, h.height)))
        .transpose()?;
    Ok(Av1Config { profile, level, tier, bit_depth, size })
}

/// Builds an av1C record from a sequence header OBU (header included).
pub fn build_config(seq_header_obu: &[u8]) -> Result<Vec<u8>, CodecError> {
    let (kind, payload) = obus(seq_header_obu).next().ok_or(CodecError::Missing("AV1 sequence header"))??;
    if kind != OBU_SEQUENCE_HEADER {
        return Err(CodecError::Missing("AV1 sequence header"));
    }
    let h = sequence_header(payload)?;
    let mut out = vec![0x81, (h.profile << 5) | (h.level & 0x1f), (u8::from(h.tier) << 7) | 0x0c, 0];
    out.extend_from_slice(seq_header_obu);
    Ok(out)
}

/// Iterates (obu_type, payload) over low-overhead OBUs (obu_has_size_field set;
/// the last OBU may omit its size).
pub fn obus(data: &[u8]) -> impl Iterator<Item = Result<(u8, &[u8]), CodecError>> {
    whole_obus(data).map(|r| r.map(|(kind, whole, start)| (kind, &whole[start..])))
}

/// Iterates (obu_type, the whole OBU with its header, where its payload
/// starts) over low-overhead OBUs.
pub fn whole_obus(mut data: &[u8]) -> impl Iterator<Item = Result<(u8, &[u8], usize), CodecError>> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let header = data[0];
        let kind = (header >> 3) & 0x0f;
        let ext = header & 0x04 != 0;
        let has_size = header & 0x02 != 0;
        let mut pos = 1 + usize::from(ext);
        if data.len() < pos {
            data = &[];
            return Some(Err(CodecError::Truncated("OBU header")));
        }
        let size = if has_size {
            match leb128(&data[pos..]) {
                Some((v, n)) => {
                    pos += n;
                    v
                }
                None => {
                    data = &[];
                    return Some(Err(CodecError::Truncated("OBU size")));
                }
            }
        } else {
            (data.len() - pos) as u64
        };
        let Some(end) = usize::try_from(size).ok().and_then(|s| pos.checked_add(s)).filter(|&e| e <= data.len()) else {
            data = &[];
            return Some(Err(CodecError::Truncated("OBU payload")));
        };
        let whole = &data[..end];
        data = &data[end..];
        Some(Ok((kind, whole, pos)))
    })
}

/// Splits a low-overhead OBU stream (as ffmpeg's `obu` muxer writes it) into
/// temporal units at each temporal delimiter. Each unit is returned without
/// its temporal delimiter, which is how MP4 and FLV carry AV1 samples.
pub fn temporal_units(data: &[u8]) -> Result<Vec<Vec<u8>>, CodecError> {
    let mut units: Vec<Vec<u8>> = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let header = data[pos];
        let kind = (header >> 3) & 0x0f;
        let ext = usize::from(header & 0x04 != 0);
        if header & 0x02 == 0 {
            return Err(CodecError::Missing("OBU size field"));
        }
        let (size, n) =
            leb128(data.get(pos + 1 + ext..).unwrap_or_default()).ok_or(CodecError::Truncated("OBU size"))?;
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| (pos + 1 + ext + n).checked_add(s))
            .filter(|&e| e <= data.len())
            .ok_or(CodecError::Truncated("OBU payload"))?;
        if kind == 2 {
            units.push(Vec::new());
        } else if let Some(u) = units.last_mut() {
            u.extend_from_slice(&data[pos..end]);
        }
        pos = end;
    }
    Ok(units)
}

fn leb128(data: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &b) in data.iter().take(8).enumerate() {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

struct SequenceHeader {
    profile: u8,
    level: u8,
    tier: bool,
    width: u32,
    height: u32,
}

fn sequence_header(payload: &[u8]) -> Result<SequenceHeader, CodecError> {
    let mut r = BitReader::new(payload, "AV1 sequence header");
    let profile = r.bits(3)? as u8;
    r.skip(1)?; // still_picture
    let reduced = r.bit()?;
    let (mut level, mut tier) = (0u8, false);
    if reduced {
        level = r.bits(5)? as u8;
    } else {
        let timing = r.bit()?;
        let mut decoder_model = false;
        let mut delay_len = 0;
        if timing {
            r.skip(64)?;
            if r.bit()? {
                r.uvlc()?;
            }
            decoder_model = r.bit()?;
            if decoder_model {
                delay_len = r.bits(5)? as usize + 1;
                r.skip(32 + 5 + 5)?;
            }
        }
        let initial_display_delay = r.bit()?;
        let ops = r.bits(5)? + 1;
        for i in 0..ops {
            r.skip(12)?;
            let op_level = r.bits(5)? as u8;
            let op_tier = op_level > 7 && r.bit()?;
            if i == 0 {
                (level, tier) = (op_level, op_tier);
            }
            if decoder_model && r.bit()? {
                r.skip(2 * delay_len + 1)?;
            }
            if initial_display_delay && r.bit()? {
                r.skip(4)?;
            }
        }
    }
    let wbits = r.bits(4)? as u32 + 1;
    let hbits = r.bits(4)? as u32 + 1;
    let width = r.bits(wbits)? as u32 + 1;
    let height = r.bits(hbits)? as u32 + 1;
    Ok(SequenceHeader { profile, level, tier, width, height })
}

/// `av01.P.LLT.DD`.
pub fn codec_string(c: &Av1Config) -> String {
    format!("av01.{}.{:02}{}.{:02}", c.profile, c.level, if c.tier { 'H' } else { 'M' }, c.bit_depth)
}

/// Describes an AV1 track from its av1C record.
pub fn describe(config: &[u8]) -> Result<TrackInfo, CodecError> {
    let c = parse_config(config)?;
    let (width, height) = c.size.unwrap_or((0, 0));
    Ok(TrackInfo { codec_string: codec_string(&c), width, height, ..Default::default() })
}

/// Whether a temporal unit starts a coded video sequence: it carries a
/// sequence header and a key frame (frame_type 0 with show_frame or
/// show_existing_frame of a key frame is treated alike).
pub fn is_keyframe(tu: &[u8]) -> bool {
    let mut seq = false;
    for obu in obus(tu).flatten() {
        match obu {
            (OBU_SEQUENCE_HEADER, _) => seq = true,
            (3 | 6, payload) if seq => {
                // frame header / frame: show_existing_frame(1), frame_type(2)
                let Some(&b) = payload.first() else { return false };
                return b & 0x80 == 0 && (b >> 5) & 3 == 0;
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_record_with_sequence_header() {
        // The sequence header OBU libaom writes for 320x240 8-bit 4:2:0.
        let seq = [0x0a, 0x0b, 0x00, 0x00, 0x00, 0x04, 0x3c, 0xff, 0xbc, 0xda, 0xf9, 0x00, 0x40];
        let cfg = build_config(&seq).unwrap();
        let c = parse_config(&cfg).unwrap();
        assert_eq!(c.profile, 0);
        assert_eq!(c.size, Some((320, 240)));
        assert_eq!(describe(&cfg).unwrap().codec_string, "av01.0.00M.08");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_config(&[0x81]).is_err());
        assert!(parse_config(&[0x80, 0, 0, 0]).is_err());
        assert!(obus(&[0x0a, 0x80]).next().unwrap().is_err());
    }
}

//! VP8 and VP9: the VP codec configuration record (`vpcC`, the body of the
//! ISO BMFF box of that name, as Enhanced RTMP carries it too) and enough of
//! a keyframe's header to build one.
//!
//! Neither codec has out-of-band parameter sets: everything a packager needs
//! (profile, bit depth, chroma subsampling, colour, picture size) is in the
//! uncompressed header of each keyframe. WebRTC ingest reads it there and
//! builds the record; RTMP ingest receives the record from the publisher.
//! References: the VP9 bitstream specification (section 6.2,
//! uncompressed_header), RFC 6386 (section 9.1, the VP8 frame tag) and the
//! WebM project's "VP Codec ISO Media File Format Binding".

use tidecast_media::{Codec, TrackInfo};

use crate::bits::BitReader;
use crate::CodecError;

/// A parsed `vpcC` record, plus the picture size where a keyframe gave it
/// (the record itself does not carry one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VpConfig {
    /// VP8: the frame tag's version (0-3); VP9: the bitstream profile (0-3).
    pub profile: u8,
    /// Level times ten (`10` is level 1), 0 when undefined.
    pub level: u8,
    /// 8, 10 or 12.
    pub bit_depth: u8,
    /// 0: 4:2:0 vertical, 1: 4:2:0 co-sited with luma, 2: 4:2:2, 3: 4:4:4.
    pub chroma_subsampling: u8,
    /// Full-range (pc) rather than studio-range samples.
    pub full_range: bool,
    /// ISO/IEC 23091-2 colour primaries.
    pub color_primaries: u8,
    /// ISO/IEC 23091-2 transfer characteristics.
    pub transfer_characteristics: u8,
    /// ISO/IEC 23091-2 matrix coefficients.
    pub matrix_coefficients: u8,
    /// Width and height in pixels, from a keyframe; `(0, 0)` from a record.
    pub size: (u32, u32),
}

/// Parses a `vpcC` body. The box's version and flags word (`01 00 00 00`)
/// may be there or not: writers of Enhanced RTMP differ. The two cannot be
/// confused, since without that word the third byte holds the bit depth,
/// which is never 0.
pub fn parse_config(data: &[u8]) -> Result<VpConfig, CodecError> {
    let fields = match data {
        [1, 0, 0, 0, rest @ ..] => rest,
        [v, _, 0, ..] => return Err(CodecError::Invalid { what: "vpcC version", value: u64::from(*v) }),
        _ => data,
    };
    let d = fields.get(..8).ok_or(CodecError::Truncated("vpcC"))?;
    Ok(VpConfig {
        profile: d[0],
        level: d[1],
        bit_depth: d[2] >> 4,
        chroma_subsampling: (d[2] >> 1) & 7,
        full_range: d[2] & 1 == 1,
        color_primaries: d[3],
        transfer_characteristics: d[4],
        matrix_coefficients: d[5],
        size: (0, 0),
    })
}

/// Writes a `vpcC` body (version 1, no codec initialisation data, as both
/// codecs require).
pub fn build_config(c: &VpConfig) -> Vec<u8> {
    vec![
        1,
        0,
        0,
        0,
        c.profile,
        c.level,
        (c.bit_depth << 4) | ((c.chroma_subsampling & 7) << 1) | u8::from(c.full_range),
        c.color_primaries,
        c.transfer_characteristics,
        c.matrix_coefficients,
        0,
        0,
    ]
}

/// `vp08.PP.LL.DD` / `vp09.PP.LL.DD`, the short form of the WebM binding's
/// codec string (the colour fields take their defaults).
pub fn codec_string(codec: Codec, c: &VpConfig) -> String {
    let fourcc = if codec == Codec::Vp8 { "vp08" } else { "vp09" };
    format!("{fourcc}.{:02}.{:02}.{:02}", c.profile, c.level, c.bit_depth)
}

/// Describes a VP8 or VP9 track from its `vpcC` body. The size is unknown
/// (0x0) until a keyframe is seen; see [`keyframe_config`].
pub fn describe(codec: Codec, config: &[u8]) -> Result<TrackInfo, CodecError> {
    let c = parse_config(config)?;
    Ok(TrackInfo { codec_string: codec_string(codec, &c), width: c.size.0, height: c.size.1, ..Default::default() })
}

/// Reads the configuration out of a keyframe's header; `Ok(None)` when the
/// frame is not a keyframe.
pub fn keyframe_config(codec: Codec, frame: &[u8]) -> Result<Option<VpConfig>, CodecError> {
    match codec {
        Codec::Vp8 => vp8_keyframe(frame),
        Codec::Vp9 => vp9_keyframe(frame),
        _ => Err(CodecError::Missing("a VP8 or VP9 frame")),
    }
}

/// RFC 6386 section 9.1: a 3-byte frame tag, then for keyframes the start
/// code 9d 01 2a and two 14-bit sizes (each with a 2-bit scale above).
fn vp8_keyframe(frame: &[u8]) -> Result<Option<VpConfig>, CodecError> {
    let tag = frame.get(..3).ok_or(CodecError::Truncated("VP8 frame tag"))?;
    if tag[0] & 1 != 0 {
        return Ok(None);
    }
    let head = frame.get(3..10).ok_or(CodecError::Truncated("VP8 keyframe header"))?;
    if head[..3] != [0x9d, 0x01, 0x2a] {
        return Err(CodecError::Invalid { what: "VP8 start code", value: u64::from(head[0]) });
    }
    let width = u32::from(u16::from_le_bytes([head[3], head[4]]) & 0x3fff);
    let height = u32::from(u16::from_le_bytes([head[5], head[6]]) & 0x3fff);
    Ok(Some(VpConfig {
        profile: (tag[0] >> 1) & 3,
        level: level_for(width, height),
        bit_depth: 8,
        chroma_subsampling: 1,
        full_range: false,
        // VP8 is BT.601 studio range by definition.
        color_primaries: 6,
        transfer_characteristics: 6,
        matrix_coefficients: 6,
        size: (width, height),
    }))
}

/// VP9 bitstream specification 6.2: frame marker, profile, then for a
/// keyframe the sync code, color_config() and frame_size().
fn vp9_keyframe(frame: &[u8]) -> Result<Option<VpConfig>, CodecError> {
    let mut r = BitReader::new(frame, "VP9 uncompressed header");
    if r.bits(2)? != 2 {
        return Err(CodecError::Invalid { what: "VP9 frame marker", value: 0 });
    }
    let low = r.bits(1)? as u8;
    let high = r.bits(1)? as u8;
    let profile = (high << 1) | low;
    if profile == 3 {
        r.skip(1)?;
    }
    if r.bit()? {
        return Ok(None); // show_existing_frame
    }
    if r.bit()? {
        return Ok(None); // frame_type 1: not a keyframe
    }
    r.skip(2)?; // show_frame, error_resilient_mode
    let sync = r.bits(24)?;
    if sync != 0x49_83_42 {
        return Err(CodecError::Invalid { what: "VP9 sync code", value: sync });
    }
    let bit_depth = if profile >= 2 {
        if r.bit()? {
            12
        } else {
            10
        }
    } else {
        8
    };
    let color_space = r.bits(3)? as u8;
    const CS_RGB: u8 = 7;
    let (full_range, subsampling) = if color_space != CS_RGB {
        let full = r.bit()?;
        let (x, y) = if profile == 1 || profile == 3 {
            let xy = (r.bit()?, r.bit()?);
            r.skip(1)?;
            xy
        } else {
            (true, true)
        };
        (full, (x, y))
    } else {
        if profile == 1 || profile == 3 {
            r.skip(1)?;
        }
        (true, (false, false))
    };
    let chroma_subsampling = match subsampling {
        (true, true) => 1,
        (true, false) => 2,
        (false, false) => 3,
        // 4:4:0 has no vpcC code; call it 4:4:4 rather than refuse the stream.
        (false, true) => 3,
    };
    let width = r.bits(16)? as u32 + 1;
    let height = r.bits(16)? as u32 + 1;
    let (color_primaries, transfer_characteristics, matrix_coefficients) = match color_space {
        1 | 3 => (6, 6, 6), // BT.601, SMPTE 170M
        2 => (1, 1, 1),     // BT.709
        4 => (7, 7, 7),     // SMPTE 240M
        5 => (9, if bit_depth == 12 { 15 } else { 14 }, 9),
        CS_RGB => (1, 13, 0),
        _ => (2, 2, 2), // unknown: unspecified
    };
    Ok(Some(VpConfig {
        profile,
        level: level_for(width, height),
        bit_depth,
        chroma_subsampling,
        full_range,
        color_primaries,
        transfer_characteristics,
        matrix_coefficients,
        size: (width, height),
    }))
}

/// The lowest VP9 level whose maximum picture size holds the picture (the
/// sample-rate limits are not checked: the frame rate is not known here).
/// VP8 has no levels; the same table gives players a plausible value.
fn level_for(width: u32, height: u32) -> u8 {
    const LEVELS: [(u64, u8); 9] = [
        (36_864, 10),
        (73_728, 11),
        (122_880, 20),
        (245_760, 21),
        (552_960, 30),
        (983_040, 31),
        (2_228_224, 40),
        (8_912_896, 50),
        (35_651_584, 60),
    ];
    let samples = u64::from(width) * u64::from(height);
    LEVELS.iter().find(|(max, _)| samples <= *max).map_or(62, |(_, level)| *level)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first bytes of a 320x240 VP9 profile 0 keyframe (libvpx).
    const VP9_KEY: &[u8] = &[0x82, 0x49, 0x83, 0x42, 0x00, 0x13, 0xf0, 0x0e, 0xf6, 0x00];

    #[test]
    fn vp9_keyframe_header_gives_the_record_and_size() {
        let c = keyframe_config(Codec::Vp9, VP9_KEY).unwrap().unwrap();
        assert_eq!((c.profile, c.bit_depth, c.chroma_subsampling), (0, 8, 1));
        assert_eq!(c.size, (320, 240));
        assert_eq!(c.level, 20);
        let record = build_config(&c);
        let back = parse_config(&record).unwrap();
        assert_eq!(VpConfig { size: c.size, ..back }, c);
        assert_eq!(describe(Codec::Vp9, &record).unwrap().codec_string, "vp09.00.20.08");
    }

    #[test]
    fn vp9_inter_frames_and_garbage() {
        // frame_type 1.
        assert_eq!(keyframe_config(Codec::Vp9, &[0x86, 0x00]).unwrap(), None);
        // show_existing_frame.
        assert_eq!(keyframe_config(Codec::Vp9, &[0x88]).unwrap(), None);
        assert!(keyframe_config(Codec::Vp9, &[0x82, 0x49, 0x83, 0x43, 0, 0, 0, 0, 0]).is_err());
        assert!(keyframe_config(Codec::Vp9, &[0x82, 0x49]).is_err());
        assert!(keyframe_config(Codec::Vp9, &[0x02]).is_err());
        assert!(keyframe_config(Codec::Vp9, &[]).is_err());
    }

    #[test]
    fn vp8_keyframe_header_gives_the_size() {
        // Tag (keyframe, version 0, shown), start code, 640 | scale 0, 480.
        let key = [0x50, 0x2a, 0x01, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01, 0xff];
        let c = keyframe_config(Codec::Vp8, &key).unwrap().unwrap();
        assert_eq!((c.profile, c.size), (0, (640, 480)));
        assert_eq!(codec_string(Codec::Vp8, &c), "vp08.00.30.08");
        assert_eq!(keyframe_config(Codec::Vp8, &[0x51, 0, 0]).unwrap(), None);
        assert!(keyframe_config(Codec::Vp8, &[0x50, 0, 0, 1, 2, 3, 0, 0, 0, 0]).is_err());
        assert!(keyframe_config(Codec::Vp8, &[0x50]).is_err());
    }

    #[test]
    fn record_with_or_without_the_version_word() {
        let c = VpConfig {
            profile: 2,
            level: 31,
            bit_depth: 10,
            chroma_subsampling: 1,
            full_range: true,
            color_primaries: 9,
            transfer_characteristics: 16,
            matrix_coefficients: 9,
            size: (0, 0),
        };
        let record = build_config(&c);
        assert_eq!(parse_config(&record).unwrap(), c);
        assert_eq!(parse_config(&record[4..]).unwrap(), c);
        assert!(parse_config(&[1, 0, 0, 0, 0]).is_err());
        assert!(parse_config(&[2, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0, 0]).is_err());
        assert!(parse_config(&[0, 10, 0x80]).is_err());
        assert!(parse_config(&[]).is_err());
    }
}

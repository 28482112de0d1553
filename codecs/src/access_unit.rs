//! Annex B access units (as MPEG-TS and RTP depacketizers deliver H.264 and
//! H.265) turned into what the media core carries: 4-byte length-prefixed
//! NAL units, with parameter sets and access unit delimiters taken out, and
//! the configuration record built from those parameter sets.
//!
//! Shared by every ingest that receives Annex B (MPEG-TS over SRT, WebRTC),
//! so each keeps only its own transport logic.

use bytes::{BufMut, Bytes, BytesMut};
use tidecast_media::Codec;

use crate::{h264, h265, nal};

/// One access unit split into parameter sets and picture data.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// SPS/PPS (and VPS for H.265) NAL units found in the unit, in order.
    pub params: Vec<Vec<u8>>,
    /// The other NAL units (AUDs dropped), each with a 4-byte length prefix.
    pub data: Bytes,
    /// Whether the unit holds an IDR/IRAP picture.
    pub keyframe: bool,
}

fn nal_type(codec: Codec, header: u8) -> u8 {
    if codec == Codec::H265 {
        (header >> 1) & 0x3f
    } else {
        header & 0x1f
    }
}

/// Splits an Annex B access unit of `codec` (H.264 or H.265).
pub fn split_annexb(codec: Codec, annexb: &[u8]) -> AccessUnit {
    let h265 = codec == Codec::H265;
    let mut au = AccessUnit::default();
    let mut out = BytesMut::with_capacity(annexb.len());
    for unit in nal::annexb(annexb) {
        let Some(&h) = unit.first() else { continue };
        let kind = nal_type(codec, h);
        let (is_param, is_aud, is_key) = if h265 {
            ((32..=34).contains(&kind), kind == 35, (16..=23).contains(&kind))
        } else {
            (kind == 7 || kind == 8, kind == 9, kind == 5)
        };
        au.keyframe |= is_key;
        if is_param {
            au.params.push(unit.to_vec());
        } else if !is_aud {
            out.put_u32(unit.len() as u32);
            out.put_slice(unit);
        }
    }
    au.data = out.freeze();
    au
}

/// Builds the configuration record (avcC or hvcC) from parameter sets, if
/// all the ones needed are there and parse. The first of each kind is used.
pub fn config_from_params(codec: Codec, params: &[Vec<u8>]) -> Option<Vec<u8>> {
    let find = |k: u8| params.iter().find(|n| n.first().is_some_and(|&h| nal_type(codec, h) == k));
    let record = match codec {
        Codec::H265 => h265::build_config(find(32)?, find(33)?, find(34)?).ok()?,
        Codec::H264 => h264::build_config(find(7)?, find(8)?).ok()?,
        _ => return None,
    };
    crate::describe(codec, &record).ok()?;
    Some(record)
}

/// Follows the parameter sets of one video track across access units: the
/// configuration record changes only when the parameter sets do.
#[derive(Debug, Default)]
pub struct ParamSets {
    params: Vec<Vec<u8>>,
    config: Option<Bytes>,
}

impl ParamSets {
    /// Takes the parameter sets of one access unit; returns the new
    /// configuration record when it changed.
    pub fn update(&mut self, codec: Codec, params: &[Vec<u8>]) -> Option<Bytes> {
        if params.is_empty() || params == self.params.as_slice() {
            return None;
        }
        let record = Bytes::from(config_from_params(codec, params)?);
        self.params = params.to_vec();
        self.config = Some(record.clone());
        Some(record)
    }

    /// The configuration record in force, if any.
    pub fn config(&self) -> Option<&Bytes> {
        self.config.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::h264::tests::SPS_320X240 as SPS;
    const PPS: [u8; 6] = [0x68, 0xeb, 0xe3, 0xc4, 0x48, 0x44];

    fn annexb(units: &[&[u8]]) -> Vec<u8> {
        units.iter().flat_map(|u| [&[0u8, 0, 0, 1][..], u].concat()).collect()
    }

    #[test]
    fn splits_params_drops_aud_and_length_prefixes() {
        let idr = [0x65, 0x88, 0x84];
        let au = split_annexb(Codec::H264, &annexb(&[&[0x09, 0xf0], SPS, &PPS, &idr]));
        assert!(au.keyframe);
        assert_eq!(au.params.len(), 2);
        assert_eq!(&au.data[..], &[0, 0, 0, 3, 0x65, 0x88, 0x84]);
        let p = split_annexb(Codec::H264, &annexb(&[&[0x41, 0x9a]]));
        assert!(!p.keyframe && p.params.is_empty());
    }

    #[test]
    fn config_changes_only_with_the_parameter_sets() {
        let mut sets = ParamSets::default();
        let params = vec![SPS.to_vec(), PPS.to_vec()];
        let first = sets.update(Codec::H264, &params).expect("a record");
        assert_eq!(first[0], 1, "avcC version");
        assert!(sets.update(Codec::H264, &params).is_none());
        assert!(sets.update(Codec::H264, &[]).is_none());
        assert!(sets.update(Codec::H264, &[vec![0x67]]).is_none(), "a broken SPS changes nothing");
        assert_eq!(sets.config(), Some(&first));
    }
}

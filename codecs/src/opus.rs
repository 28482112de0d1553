//! Opus: the identification header (RFC 7845 section 5.1).

use tidecast_media::TrackInfo;

use crate::CodecError;

/// The fields of an OpusHead a player needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpusHead {
    /// Output channel count.
    pub channels: u8,
    /// Samples to drop at the start (48 kHz).
    pub pre_skip: u16,
    /// The sample rate of the original input (informational).
    pub input_sample_rate: u32,
}

/// Parses an OpusHead packet.
pub fn parse(data: &[u8]) -> Result<OpusHead, CodecError> {
    if data.len() < 19 {
        return Err(CodecError::Truncated("OpusHead"));
    }
    if &data[..8] != b"OpusHead" {
        return Err(CodecError::Missing("OpusHead magic"));
    }
    if data[8] >> 4 != 0 {
        return Err(CodecError::Invalid { what: "OpusHead version", value: data[8].into() });
    }
    Ok(OpusHead {
        channels: data[9],
        pre_skip: u16::from_le_bytes([data[10], data[11]]),
        input_sample_rate: u32::from_le_bytes([data[12], data[13], data[14], data[15]]),
    })
}

/// Builds the OpusHead of a stream that carries no header of its own (RTP,
/// RFC 7587): 48 kHz, channel mapping family 0.
pub fn build_head(channels: u8, pre_skip: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(19);
    h.extend_from_slice(b"OpusHead");
    h.push(1);
    h.push(channels);
    h.extend_from_slice(&pre_skip.to_le_bytes());
    h.extend_from_slice(&48_000u32.to_le_bytes());
    h.extend_from_slice(&[0, 0, 0]);
    h
}

/// Describes an Opus track; Opus always decodes at 48 kHz.
pub fn describe(config: &[u8]) -> Result<TrackInfo, CodecError> {
    let head = parse(config)?;
    Ok(TrackInfo { codec_string: "opus".into(), sample_rate: 48000, channels: head.channels, ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_head() {
        let mut h = b"OpusHead".to_vec();
        h.extend_from_slice(&[1, 2, 0x38, 0x01, 0x80, 0xbb, 0, 0, 0, 0, 0]);
        assert_eq!(parse(&h).unwrap(), OpusHead { channels: 2, pre_skip: 312, input_sample_rate: 48000 });
        assert!(parse(&h[..10]).is_err());
        assert!(parse(b"OpusTagsxxxxxxxxxxxxxxx").is_err());
        let built = parse(&build_head(2, 0)).unwrap();
        assert_eq!(built, OpusHead { channels: 2, pre_skip: 0, input_sample_rate: 48000 });
    }
}

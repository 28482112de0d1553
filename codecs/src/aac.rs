//! AAC: the AudioSpecificConfig (ISO 14496-3 1.6.2.1).

use tidecast_media::TrackInfo;

use crate::bits::BitReader;
use crate::CodecError;

const RATES: [u32; 13] = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];

/// The fields of an AudioSpecificConfig a player needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// audioObjectType (2 = AAC-LC, 5 = SBR / HE-AAC, 29 = PS).
    pub object_type: u8,
    /// Sampling rate in Hz.
    pub sample_rate: u32,
    /// channelConfiguration.
    pub channels: u8,
}

/// Parses an AudioSpecificConfig.
pub fn parse(data: &[u8]) -> Result<AudioSpecificConfig, CodecError> {
    let mut r = BitReader::new(data, "AudioSpecificConfig");
    let mut object_type = r.bits(5)? as u8;
    if object_type == 31 {
        object_type = 32 + r.bits(6)? as u8;
    }
    let index = r.bits(4)? as usize;
    let sample_rate = if index == 15 {
        r.bits(24)? as u32
    } else {
        *RATES.get(index).ok_or(CodecError::Invalid { what: "samplingFrequencyIndex", value: index as u64 })?
    };
    let channels = r.bits(4)? as u8;
    Ok(AudioSpecificConfig { object_type, sample_rate, channels })
}

/// Builds a two-byte AudioSpecificConfig (for ADTS input).
pub fn build(object_type: u8, sample_rate: u32, channels: u8) -> Result<[u8; 2], CodecError> {
    let index = RATES
        .iter()
        .position(|&r| r == sample_rate)
        .ok_or(CodecError::Invalid { what: "AAC sample rate", value: sample_rate.into() })?;
    let v: u16 = (u16::from(object_type & 0x1f) << 11) | ((index as u16) << 7) | (u16::from(channels & 0xf) << 3);
    Ok(v.to_be_bytes())
}

/// Describes an AAC track from its AudioSpecificConfig.
pub fn describe(config: &[u8]) -> Result<TrackInfo, CodecError> {
    let asc = parse(config)?;
    Ok(TrackInfo {
        codec_string: format!("mp4a.40.{}", asc.object_type),
        sample_rate: asc.sample_rate,
        channels: asc.channels,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lc_stereo_44100() {
        let asc = parse(&[0x12, 0x10]).unwrap();
        assert_eq!(asc, AudioSpecificConfig { object_type: 2, sample_rate: 44100, channels: 2 });
        assert_eq!(build(2, 44100, 2).unwrap(), [0x12, 0x10]);
        assert_eq!(describe(&[0x11, 0x90]).unwrap().codec_string, "mp4a.40.2");
        assert_eq!(describe(&[0x11, 0x90]).unwrap().sample_rate, 48000);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(&[]).is_err());
        assert!(parse(&[0x17, 0x80]).is_err()); // index 15 needs 24 more bits
        assert!(parse(&[0x16, 0x80]).is_err()); // index 13 is reserved
    }
}

//! Bitstream parsing for the codecs Tidecast carries.
//!
//! Enough of each codec's configuration to describe a track to a player
//! (resolution, profile, level, sample rate, RFC 6381 codec string) and the
//! conversions between the two ways of framing NAL units (Annex B start codes
//! and length prefixes). Every parser takes untrusted bytes and returns an
//! error instead of panicking; each has a fuzz target in `fuzz/`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aac;
pub mod access_unit;
pub mod av1;
mod bits;
pub mod h264;
pub mod h265;
pub mod nal;
pub mod opus;
pub mod vpx;

use tidecast_media::{Codec, TrackInfo};

/// Why a configuration or bitstream could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// The data ended before the syntax element named.
    #[error("{0}: data ends too early")]
    Truncated(&'static str),
    /// A field holds a value the specification forbids or we do not support.
    #[error("{what}: unsupported or invalid value {value}")]
    Invalid {
        /// The syntax element.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// A required parameter set or header is missing.
    #[error("missing {0}")]
    Missing(&'static str),
}

/// Describes a track from its codec and configuration record.
pub fn describe(codec: Codec, config: &[u8]) -> Result<TrackInfo, CodecError> {
    match codec {
        Codec::H264 => h264::describe(config),
        Codec::H265 => h265::describe(config),
        Codec::Av1 => av1::describe(config),
        Codec::Aac => aac::describe(config),
        Codec::Opus => opus::describe(config),
        Codec::Vp8 | Codec::Vp9 => vpx::describe(codec, config),
        Codec::Mp3 => Ok(TrackInfo { codec_string: "mp4a.40.34".into(), ..Default::default() }),
    }
}

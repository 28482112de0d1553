use bytes::Bytes;

use crate::TrackId;

/// Whether a track carries pictures or sound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Pictures.
    Video,
    /// Sound.
    Audio,
}

/// The codecs the media core knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// H.264 / AVC; config is an AVCDecoderConfigurationRecord (avcC).
    H264,
    /// H.265 / HEVC; config is an HEVCDecoderConfigurationRecord (hvcC).
    H265,
    /// AV1; config is an AV1CodecConfigurationRecord (av1C).
    Av1,
    /// VP8; no config record.
    Vp8,
    /// VP9; no config record.
    Vp9,
    /// AAC; config is an AudioSpecificConfig.
    Aac,
    /// Opus; config is an OpusHead (RFC 7845 identification header).
    Opus,
    /// MPEG-1/2 audio (Layer II or III); no config record.
    Mp3,
}

impl Codec {
    /// Whether the codec is a video or an audio codec.
    pub fn kind(self) -> MediaKind {
        match self {
            Codec::H264 | Codec::H265 | Codec::Av1 | Codec::Vp8 | Codec::Vp9 => MediaKind::Video,
            Codec::Aac | Codec::Opus | Codec::Mp3 => MediaKind::Audio,
        }
    }

    /// A stable short name (used in logs, the API and the internal framing).
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "h265",
            Codec::Av1 => "av1",
            Codec::Vp8 => "vp8",
            Codec::Vp9 => "vp9",
            Codec::Aac => "aac",
            Codec::Opus => "opus",
            Codec::Mp3 => "mp3",
        }
    }

    /// The inverse of [`Codec::name`].
    pub fn from_name(name: &str) -> Option<Codec> {
        [Codec::H264, Codec::H265, Codec::Av1, Codec::Vp8, Codec::Vp9, Codec::Aac, Codec::Opus, Codec::Mp3]
            .into_iter()
            .find(|c| c.name() == name)
    }
}

/// What a player needs to know about a track, parsed from its configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrackInfo {
    /// RFC 6381 codec string, e.g. `avc1.64001f` or `mp4a.40.2`.
    pub codec_string: String,
    /// Coded picture width in pixels (video).
    pub width: u32,
    /// Coded picture height in pixels (video).
    pub height: u32,
    /// Frames per second when the ingest knows it (video).
    pub frame_rate: Option<f64>,
    /// Samples per second (audio).
    pub sample_rate: u32,
    /// Channel count (audio).
    pub channels: u8,
    /// Nominal bitrate in bits per second when known.
    pub bitrate: Option<u32>,
}

/// One elementary stream of a [`crate::Stream`].
#[derive(Clone, Debug, PartialEq)]
pub struct Track {
    /// The id frames of this track carry.
    pub id: TrackId,
    /// The codec.
    pub codec: Codec,
    /// The codec configuration record, empty for codecs that have none.
    pub config: Bytes,
    /// Parsed description.
    pub info: TrackInfo,
}

impl Track {
    /// Whether the track is video or audio.
    pub fn kind(&self) -> MediaKind {
        self.codec.kind()
    }
}

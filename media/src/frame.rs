use bytes::Bytes;

/// Ticks per second of every timestamp in the media core (microseconds).
pub const TIMESCALE: u32 = 1_000_000;

/// Identifies a track within one stream. Ingests number their tracks from 0.
pub type TrackId = u32;

/// One access unit of one track.
///
/// Cloning a frame clones a reference to its payload, not the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The track this frame belongs to.
    pub track: TrackId,
    /// Decode timestamp in microseconds.
    pub dts: i64,
    /// Presentation minus decode timestamp, in microseconds (B-frames make it positive).
    pub cts: i32,
    /// True for a frame a decoder can start from (an IDR / IRAP / key frame).
    /// Audio frames are all keyframes.
    pub keyframe: bool,
    /// The coded data: length-prefixed NAL units (4-byte lengths) for H.264 and
    /// H.265, low-overhead OBUs for AV1, raw access units for AAC and Opus.
    pub payload: Bytes,
}

impl Frame {
    /// Presentation timestamp in microseconds.
    pub fn pts(&self) -> i64 {
        self.dts + i64::from(self.cts)
    }
}

/// Converts `value` from timescale `from` to timescale `to`, rounding to the
/// nearest tick. Saturates instead of overflowing.
pub fn rescale(value: i64, from: u32, to: u32) -> i64 {
    if from == to || from == 0 {
        return value;
    }
    let num = i128::from(value) * i128::from(to);
    let den = i128::from(from);
    let half = den / 2;
    let q = if num >= 0 { (num + half) / den } else { (num - half) / den };
    q.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescale_round_trips_common_timescales_through_microseconds() {
        for ts in [1000u32, 44_100, 48_000, 90_000] {
            for t in [0i64, 1, 2, 1023, 1024, 3003, 8_589_934_591, -5] {
                let us = rescale(t, ts, TIMESCALE);
                assert_eq!(rescale(us, TIMESCALE, ts), t, "timescale {ts} value {t}");
            }
        }
    }

    #[test]
    fn rescale_saturates() {
        assert_eq!(rescale(i64::MAX, 1, 1_000_000), i64::MAX);
        assert_eq!(rescale(i64::MIN, 1, 1_000_000), i64::MIN);
    }
}

//! The load generator's parts (`tidecast-load`): viewers that behave like
//! players of each protocol, publishers that push a prepared clip without
//! re-encoding, a request hammer for cached files, and a sampler of the
//! server's CPU and memory from /proc. Each viewer keeps its own counters;
//! the binary adds them up into one report.

pub mod get;
pub mod hls;
pub mod procstat;
pub mod publish;
pub mod rtmp;
pub mod srt;
pub mod whep;

use std::time::Duration;

/// What one viewer saw.
#[derive(Debug, Default, Clone)]
pub struct ViewerStats {
    /// Media bytes received (payloads for RTMP/SRT, response bodies for HLS).
    pub bytes: u64,
    /// Times playback would have stalled: the media received fell behind the
    /// wall clock by more than the player's buffer.
    pub stalls: u32,
    /// Seconds of media received.
    pub media_seconds: f64,
    /// Whether it ever started (got its first media).
    pub started: bool,
    /// The error that ended it early, if any.
    pub error: Option<String>,
    /// LL-HLS: per new part, milliseconds from its media's end (the
    /// playlist's date-time clock) to the playlist announcing it.
    pub announce_ms: Vec<f64>,
    /// HLS: milliseconds from request to the last byte of each part or segment.
    pub fetch_ms: Vec<f64>,
}

/// A player's buffer: media arrives in chunks, the playhead moves with the
/// wall clock once playback started, and a stall is counted each time the
/// playhead catches up with the media (playback then resumes when
/// `resume` seconds are buffered again).
#[derive(Debug)]
pub struct PlayoutBuffer {
    start: Option<tokio::time::Instant>,
    /// Media seconds received.
    received: f64,
    /// Wall seconds spent stalled so far.
    stalled_for: f64,
    stalled_since: Option<tokio::time::Instant>,
    resume: f64,
    /// Stalls counted.
    pub stalls: u32,
}

impl PlayoutBuffer {
    /// A buffer that plays once it has `resume` seconds and resumes alike.
    pub fn new(resume: f64) -> PlayoutBuffer {
        PlayoutBuffer { start: None, received: 0.0, stalled_for: 0.0, stalled_since: None, resume, stalls: 0 }
    }

    fn playhead(&self, now: tokio::time::Instant) -> f64 {
        let Some(start) = self.start else { return 0.0 };
        let stalled = self.stalled_for + self.stalled_since.map_or(0.0, |s| (now - s).as_secs_f64());
        (now - start).as_secs_f64() - stalled
    }

    /// Media seconds arrived.
    pub fn add(&mut self, seconds: f64) {
        let now = tokio::time::Instant::now();
        self.check(now);
        self.received += seconds;
        if self.start.is_none() && self.received >= self.resume {
            self.start = Some(now);
        }
        if let Some(since) = self.stalled_since {
            if self.received - self.playhead(now) >= self.resume {
                self.stalled_for += (now - since).as_secs_f64();
                self.stalled_since = None;
            }
        }
    }

    /// Advances the clock: counts a stall if the playhead reached the media.
    pub fn check(&mut self, now: tokio::time::Instant) {
        if self.start.is_some() && self.stalled_since.is_none() && self.playhead(now) > self.received {
            self.stalls += 1;
            self.stalled_since = Some(now);
        }
    }

    /// Media seconds received.
    pub fn received(&self) -> f64 {
        self.received
    }
}

/// `p`-th percentile of `values` (nearest rank), `None` when empty.
pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values.get(rank.saturating_sub(1).min(values.len() - 1)).copied()
}

/// How long a viewer of any kind runs, and when it gives up connecting.
#[derive(Debug, Clone, Copy)]
pub struct RunTime {
    /// Until this instant.
    pub until: tokio::time::Instant,
    /// Connection attempts time out after this.
    pub connect_timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_buffer_counts_a_stall_when_media_stops_coming() {
        let mut b = PlayoutBuffer::new(1.0);
        b.add(1.0);
        b.add(1.0);
        tokio::time::advance(Duration::from_millis(1500)).await;
        b.check(tokio::time::Instant::now());
        assert_eq!(b.stalls, 0, "1.5 s played of 2 s received");
        tokio::time::advance(Duration::from_millis(1000)).await;
        b.check(tokio::time::Instant::now());
        assert_eq!(b.stalls, 1, "the playhead passed the media");
        b.check(tokio::time::Instant::now());
        assert_eq!(b.stalls, 1, "one stall until playback resumes");
        b.add(1.5);
        tokio::time::advance(Duration::from_millis(600)).await;
        b.check(tokio::time::Instant::now());
        assert_eq!(b.stalls, 1, "resumed with 1.5 s buffered");
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&mut v, 50.0), Some(3.0));
        assert_eq!(percentile(&mut v, 100.0), Some(5.0));
        assert_eq!(percentile(&mut [], 50.0), None);
    }
}

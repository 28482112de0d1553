//! How fast a player's payloads are handed to `srt-tokio`.
//!
//! srt-tokio 0.4.4 stops sending for good when its send queue is fed faster
//! than it drains: in the first ~100 ms of a connection it paces at one
//! packet per millisecond (until its first input-rate estimate), and later
//! it loses the flow somewhere above ~30 packets per millisecond. A player
//! that gets a GOP's fast-start burst, or a large keyframe, in one go then
//! receives nothing at all, whatever its latency (found with
//! `tidecast-load`; reproduced with srt-tokio alone on loopback: 100
//! packets at once after the handshake, 0 bytes delivered in 4 s; paced
//! at these limits, 98% of a 1200-packet burst plus a 25 Mbit/s stream).
//!
//! So payloads go out in one-millisecond windows: at most
//! [`EARLY_PER_MS`] per window for the first [`EARLY_FOR`], then
//! [`PER_MS`] (about 170 Mbit/s of 1316-byte payloads, far above any
//! stream we carry). Sans-IO: the driver asks, then sleeps as told.

use std::time::{Duration, Instant};

/// Payloads per window while srt-tokio still paces at its start-up rate.
pub const EARLY_PER_MS: u32 = 2;
/// How long the start-up limit holds.
pub const EARLY_FOR: Duration = Duration::from_millis(250);
/// Payloads per window afterwards.
pub const PER_MS: u32 = 16;
const WINDOW: Duration = Duration::from_millis(1);

/// Counts payloads per window since the connection started.
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    window: Instant,
    in_window: u32,
}

impl Pacer {
    /// A pacer for a connection that starts at `now`.
    pub fn new(now: Instant) -> Pacer {
        Pacer { start: now, window: now, in_window: 0 }
    }

    /// `Ok` when one more payload may go at `now` (and counts it), or how
    /// long to wait before asking again.
    pub fn poll(&mut self, now: Instant) -> Result<(), Duration> {
        let since = now.saturating_duration_since(self.window);
        if since >= WINDOW {
            self.window = now;
            self.in_window = 0;
        }
        let limit = if now.saturating_duration_since(self.start) < EARLY_FOR { EARLY_PER_MS } else { PER_MS };
        if self.in_window < limit {
            self.in_window += 1;
            Ok(())
        } else {
            Err(WINDOW.saturating_sub(now.saturating_duration_since(self.window)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Payloads let through in one window starting at `at`.
    fn burst(p: &mut Pacer, at: Instant) -> u32 {
        let mut n = 0;
        while p.poll(at).is_ok() {
            n += 1;
            assert!(n < 1000, "the pacer limits a window");
        }
        n
    }

    #[test]
    fn starts_slow_then_opens_up() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        assert_eq!(burst(&mut p, t0), EARLY_PER_MS);
        let wait = p.poll(t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= WINDOW, "waits for the next window: {wait:?}");
        assert_eq!(burst(&mut p, t0 + WINDOW), EARLY_PER_MS, "a new window, the same start-up limit");
        assert_eq!(burst(&mut p, t0 + EARLY_FOR), PER_MS);
        assert_eq!(burst(&mut p, t0 + EARLY_FOR + WINDOW), PER_MS);
    }

    #[test]
    fn a_window_part_way_through_waits_only_for_the_rest() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        let later = t0 + EARLY_FOR;
        burst(&mut p, later);
        let wait = p.poll(later + Duration::from_micros(400)).unwrap_err();
        assert_eq!(wait, Duration::from_micros(600));
    }

    #[test]
    fn a_gop_burst_drains_within_a_third_of_a_second() {
        // 2 s of 3 Mbit/s video: about 570 payloads of 1316 bytes.
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        let (mut now, mut left) = (t0, 570u32);
        while left > 0 {
            match p.poll(now) {
                Ok(()) => left -= 1,
                Err(wait) => now += wait,
            }
        }
        let took = now - t0;
        assert!(took < Duration::from_millis(330), "took {took:?}");
    }
}

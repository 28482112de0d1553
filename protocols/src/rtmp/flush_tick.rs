//! One clock for every RTMP player's batched writes.
//!
//! Players write their queued media once per `play_flush`. With a timer of
//! its own, each player woke twice per batch (for the first frame, then for
//! its timer) and kept an entry in the timer wheel; at thousands of players
//! the wake-ups and the wheel were a visible share of the CPU. Instead one
//! task ticks for the whole listener and every player wakes once per tick,
//! takes what its stream queued since the last one and writes it.
//!
//! Players are spread over [`PHASES`] ticks, staggered through the period,
//! so that they do not all write at the same instant: the bursts are an
//! eighth of the size. (Measured at 1,600 and 3,200 players, one phase and
//! eight cost the same CPU; the spread is for the sockets and the peers.)
//!
//! The task sleeps while no player listens, so an idle server does not
//! wake ten times a second for nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// The listener's tick. Cheap to share; [`FlushTick::subscribe`] gives each
/// player its receiver.
pub(crate) struct FlushTick {
    /// One clock per phase.
    phases: Vec<watch::Sender<u64>>,
    /// The phase the next player gets.
    next: AtomicUsize,
    /// Wakes the ticking task when the first player arrives.
    first: Notify,
}

/// How many staggered ticks the players are spread over.
const PHASES: usize = 8;

impl FlushTick {
    /// Starts the ticking task, which runs every `period` while anyone
    /// listens, until `shutdown`.
    pub(crate) fn start(period: Duration, shutdown: CancellationToken) -> Arc<FlushTick> {
        let phases = (0..PHASES).map(|_| watch::channel(0u64).0).collect();
        let tick = Arc::new(FlushTick { phases, next: AtomicUsize::new(0), first: Notify::new() });
        let task = tick.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = task.run(period) => {}
            }
        });
        tick
    }

    /// A receiver that sees every tick of one phase from now on
    /// (`changed()` resolves once per period; ticks missed while busy
    /// collapse into one). Players are dealt to the phases in turn.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        let phase = self.next.fetch_add(1, Ordering::Relaxed) % self.phases.len();
        let rx = self.phases[phase].subscribe();
        // A stored permit if the task is not waiting yet: never lost.
        self.first.notify_one();
        rx
    }

    fn listeners(&self) -> usize {
        self.phases.iter().map(watch::Sender::receiver_count).sum()
    }

    async fn run(&self, period: Duration) {
        let mut every = tokio::time::interval(period / self.phases.len() as u32);
        every.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut phase = 0;
        loop {
            if self.listeners() == 0 {
                self.first.notified().await;
                every.reset();
                continue;
            }
            every.tick().await;
            self.phases[phase].send_modify(|n| *n = n.wrapping_add(1));
            phase = (phase + 1) % self.phases.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn every_player_wakes_once_per_period_in_its_phase_and_the_clock_rests_without_players() {
        let shutdown = CancellationToken::new();
        let period = Duration::from_millis(100);
        let tick = FlushTick::start(period, shutdown.clone());
        let mut a = tick.subscribe();
        let mut b = tick.subscribe();
        let t0 = tokio::time::Instant::now();
        for _ in 0..10 {
            a.changed().await.expect("ticking");
        }
        // Ten wake-ups take ten periods (the first tick is at once).
        assert!(t0.elapsed() >= period * 9 && t0.elapsed() < period * 10);
        // The two players were dealt different phases.
        let at_a = tokio::time::Instant::now();
        b.borrow_and_update();
        b.changed().await.expect("ticking");
        assert!(at_a.elapsed() > Duration::ZERO && at_a.elapsed() < period, "b ticks between a's ticks");
        let total = || tick.phases.iter().map(|p| *p.borrow()).sum::<u64>();
        let seen = total();
        drop((a, b));
        // Nobody listens: the task parks instead of ticking.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(total() <= seen + 1, "no ticks while nobody listens");
        let mut c = tick.subscribe();
        c.changed().await.expect("ticking again for a new player");
        shutdown.cancel();
    }
}

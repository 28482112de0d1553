//! One clock for every RTMP player's batched writes.
//!
//! Players write their queued media once per `play_flush`. With a timer of
//! its own, each player woke twice per batch (for the first frame, then for
//! its timer) and kept an entry in the timer wheel; at thousands of players
//! the wake-ups and the wheel were a visible share of the CPU. Instead one
//! task ticks for the whole listener and every player wakes once per tick,
//! takes what its stream queued since the last one and writes it.
//!
//! The task sleeps while no player listens, so an idle server does not
//! wake ten times a second for nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// The listener's tick. Cheap to share; [`FlushTick::subscribe`] gives each
/// player its receiver.
pub(crate) struct FlushTick {
    tx: watch::Sender<u64>,
    /// Wakes the ticking task when the first player arrives.
    first: Notify,
}

impl FlushTick {
    /// Starts the ticking task, which runs every `period` while anyone
    /// listens, until `shutdown`.
    pub(crate) fn start(period: Duration, shutdown: CancellationToken) -> Arc<FlushTick> {
        let (tx, _) = watch::channel(0u64);
        let tick = Arc::new(FlushTick { tx, first: Notify::new() });
        let task = tick.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = task.run(period) => {}
            }
        });
        tick
    }

    /// A receiver that sees every tick from now on (`changed()` resolves
    /// once per tick; ticks missed while busy collapse into one).
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        let rx = self.tx.subscribe();
        // A stored permit if the task is not waiting yet: never lost.
        self.first.notify_one();
        rx
    }

    async fn run(&self, period: Duration) {
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            if self.tx.receiver_count() == 0 {
                self.first.notified().await;
                every.reset();
                continue;
            }
            every.tick().await;
            self.tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn every_player_wakes_once_per_tick_and_the_clock_rests_without_players() {
        let shutdown = CancellationToken::new();
        let tick = FlushTick::start(Duration::from_millis(100), shutdown.clone());
        let mut a = tick.subscribe();
        let mut b = tick.subscribe();
        for _ in 0..3 {
            a.changed().await.expect("ticking");
            b.changed().await.expect("ticking");
        }
        assert_eq!(*a.borrow(), *b.borrow(), "both saw the same ticks");
        let seen = *a.borrow();
        drop((a, b));
        // Nobody listens: the task parks instead of ticking.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(*tick.tx.borrow() <= seen + 1, "no ticks while nobody listens");
        let mut c = tick.subscribe();
        c.changed().await.expect("ticking again for a new player");
        shutdown.cancel();
    }
}

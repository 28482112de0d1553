//! What every transcoding job shares: reading a stream from an OS thread,
//! running until the stream ends or the job is stopped, and starting again
//! after a growing pause when a run fails or panics.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tidecast_media::{Event, Stream, Subscriber};
use tracing::warn;

/// The longest pause between two attempts after failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How one run ended.
pub(crate) enum RunEnd {
    /// The stream ended or the job was stopped.
    Done,
    /// Something failed; try again later.
    Failed(String),
}

/// Stops a job from another thread.
#[derive(Clone, Default)]
pub(crate) struct Stop {
    flag: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
}

impl Stop {
    pub(crate) fn stop(&self) {
        self.flag.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    pub(crate) fn stopped(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// The next event of `sub`, or `None` once the stream ended or the job
    /// was stopped. Blocks this (non-runtime) thread.
    pub(crate) fn next(&self, rt: &tokio::runtime::Handle, sub: &mut Subscriber) -> Option<Event> {
        if self.stopped() {
            return None;
        }
        let wake = self.wake.clone();
        rt.block_on(async {
            tokio::select! {
                ev = sub.recv() => ev,
                _ = wake.notified() => None,
            }
        })
    }
}

/// Counters every job keeps about its runs.
#[derive(Debug, Default)]
pub struct RunStats {
    /// Whether a run is going (false while it waits to retry, or after the end).
    pub running: AtomicBool,
    /// Runs that ended in an error or a panic.
    pub failures: AtomicU64,
    /// Why the last run failed.
    pub last_error: Mutex<Option<String>>,
}

/// Runs `run` with a fresh subscriber (the first one given) until it ends
/// the job; failures are logged as `what`, counted in `stats` and retried
/// after 1, 2, 4 … 30 s, unless the stream ends or the job is stopped
/// meanwhile.
pub(crate) fn supervise(
    stream: &Arc<Stream>,
    rt: &tokio::runtime::Handle,
    stop: &Stop,
    stats: &RunStats,
    what: &str,
    first: Subscriber,
    mut run: impl FnMut(Subscriber) -> RunEnd,
) {
    let mut backoff = Duration::from_secs(1);
    let mut first = Some(first);
    loop {
        let sub = first.take().unwrap_or_else(|| stream.subscribe());
        stats.running.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let end = std::panic::catch_unwind(AssertUnwindSafe(|| run(sub))).unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            RunEnd::Failed(format!("panic: {why}"))
        });
        stats.running.store(false, Ordering::Relaxed);
        let why = match end {
            RunEnd::Done => return,
            RunEnd::Failed(why) => why,
        };
        stats.failures.fetch_add(1, Ordering::Relaxed);
        warn!(stream = stream.name(), job = what, error = %why, retry_in_ms = backoff.as_millis() as u64,
            "transcode: failed; the source keeps playing");
        *stats.last_error.lock() = Some(why);
        if started.elapsed() > MAX_BACKOFF * 2 {
            backoff = Duration::from_secs(1);
        }
        // Wait out the pause, unless the stream ends or the job stops first.
        let mut watch = stream.subscribe();
        let wake = stop.wake.clone();
        let ended = rt.block_on(async {
            let until = tokio::time::sleep(backoff);
            tokio::pin!(until);
            loop {
                tokio::select! {
                    _ = &mut until => return false,
                    _ = wake.notified() => return true,
                    ev = watch.recv() => if ev.is_none() { return true },
                }
            }
        });
        if ended || stop.stopped() {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

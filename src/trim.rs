//! Gives memory back to the operating system once ended streams have let
//! go of it.
//!
//! glibc's allocator keeps freed memory inside its arenas: a stream's
//! windows are many small blocks spread over the heap, so when they are
//! freed the heap cannot shrink from its top and the process keeps its RSS
//! (measured: 10 ended streams left 116 MiB resident with nothing live;
//! `docs/benchmarks.md`, "Memory"). `malloc_trim(0)` returns every free page
//! in every arena to the kernel. It runs once after a stream ends and its
//! outputs' linger has passed, at most once per that delay however many
//! streams end, never on a hot path. Elsewhere than glibc it does nothing.
//!
//! It also runs once a minute while streams are live. A heap profile of a
//! 9-minute soak (10 streams, 200 viewers) showed the live heap flat
//! (138-139 MB at every low point of the clip's cycle) while RSS crept up by
//! a few MiB per 10 minutes: free pages left inside the arenas as windows
//! slide. Returning them each minute keeps RSS on the live heap.

use std::time::Duration;

use tidecast_media::{Registry, RegistryEvent};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How often the heap is trimmed while any stream is live.
pub const WHILE_LIVE: Duration = Duration::from_secs(60);

/// Trims the heap `after` the last of a burst of stream ends, and every
/// [`WHILE_LIVE`] while streams are live, until `shutdown`.
pub async fn run(registry: Registry, after: Duration, shutdown: CancellationToken) {
    let mut events = registry.events();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + WHILE_LIVE, WHILE_LIVE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut due: Option<tokio::time::Instant> = None;
    // A stream ended while a trim was already due: its memory goes after
    // that trim, so another one follows.
    let mut again = false;
    loop {
        let wait = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = events.recv() => match ev {
                Ok(RegistryEvent::Ended(_)) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    match due {
                        None => due = Some(tokio::time::Instant::now() + after),
                        Some(_) => again = true,
                    }
                }
                Ok(RegistryEvent::Started(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                if !registry.streams().is_empty() {
                    let started = std::time::Instant::now();
                    let released = tokio::task::spawn_blocking(release).await.unwrap_or(false);
                    debug!(released, micros = started.elapsed().as_micros() as u64, "heap trimmed while streams are live");
                }
            }
            _ = wait => {
                due = std::mem::take(&mut again).then(|| tokio::time::Instant::now() + after);
                let released = tokio::task::spawn_blocking(release).await.unwrap_or(false);
                debug!(released, "heap trimmed after streams ended");
            }
        }
    }
}

/// Returns free heap pages to the kernel; whether any were.
#[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "jemalloc"), not(feature = "mimalloc")))]
fn release() -> bool {
    // SAFETY: malloc_trim only walks the allocator's own free lists under
    // its locks; it takes no pointers from us and is safe to call from any
    // thread at any time.
    unsafe { libc::malloc_trim(0) != 0 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu", not(feature = "jemalloc"), not(feature = "mimalloc"))))]
fn release() -> bool {
    false
}

//! One lifecycle for every per-stream output.
//!
//! An output kind (the LL-HLS packager, the MPEG-TS muxer, the WHEP
//! packetizer, and later DASH, the transcoder, the recorder and relays)
//! works on one stream at a time and is shared by everyone who reads that
//! stream in its form. [`Outputs`] is the one place that decides when such
//! an output runs:
//!
//! - **start**: eagerly for every stream the registry starts
//!   ([`Outputs::run`]), or on first need ([`Outputs::get_or_start`]);
//! - **run**: the kind's task, until the stream ends or, for a kind that
//!   holds its output only weakly, until its last reader lets go;
//! - **linger**: the output its task hands back stays reachable for a while
//!   after the task finished (LL-HLS playlists with `#EXT-X-ENDLIST`);
//! - **stop**: it leaves the set. A newer stream of the same name never
//!   gets an output of an older one.
//!
//! The set keeps weak references only: what keeps an output alive is its
//! task (and the linger), or its readers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::{Registry, Stream};

/// The task that runs one stream's output, as its kind starts it. It
/// returns the output when it should linger.
pub type OutputTask<T> = Pin<Box<dyn Future<Output = Option<Arc<T>>> + Send + 'static>>;

/// Starts one stream's output: the output, and the task that runs it.
pub type StartOutput<T> = Box<dyn Fn(Arc<Stream>) -> (Arc<T>, OutputTask<T>) + Send + Sync>;

/// When an output kind runs for a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// For every stream, from its start ([`Outputs::run`]).
    Eager,
    /// When a reader first asks ([`Outputs::get_or_start`]).
    OnDemand,
}

struct Slot<T> {
    stream: Weak<Stream>,
    output: Weak<T>,
}

/// Every stream's output of one kind.
pub struct Outputs<T> {
    kind: &'static str,
    start: Start,
    linger: Duration,
    make: StartOutput<T>,
    live: Mutex<HashMap<String, Slot<T>>>,
    closing: watch::Sender<bool>,
}

impl<T> std::fmt::Debug for Outputs<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outputs").field("kind", &self.kind).field("start", &self.start).finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Outputs<T> {
    /// A kind called `kind` (for logs), started as `start` says, lingering
    /// `linger` after its task ends; `make` starts one stream's output.
    pub fn new(kind: &'static str, start: Start, linger: Duration, make: StartOutput<T>) -> Arc<Outputs<T>> {
        Arc::new(Outputs { kind, start, linger, make, live: Mutex::default(), closing: watch::channel(false).0 })
    }

    /// The kind's name.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The output of the stream called `name`, running or lingering.
    pub fn get(&self, name: &str) -> Option<Arc<T>> {
        self.live.lock().get(name).and_then(|s| s.output.upgrade())
    }

    /// The output of `stream`, started now if it has none yet. An output
    /// left over from an earlier stream of the same name is never reused.
    pub fn get_or_start(self: &Arc<Self>, stream: &Arc<Stream>) -> Arc<T> {
        let mut live = self.live.lock();
        if let Some(slot) = live.get(stream.name()) {
            let same = slot.stream.upgrade().is_some_and(|s| Arc::ptr_eq(&s, stream));
            if let Some(out) = slot.output.upgrade().filter(|_| same) {
                return out;
            }
        }
        let (out, task) = (self.make)(stream.clone());
        live.insert(stream.name().to_owned(), Slot { stream: Arc::downgrade(stream), output: Arc::downgrade(&out) });
        drop(live);
        self.supervise(stream.name().to_owned(), Arc::downgrade(&out), task);
        out
    }

    /// Runs `task`, lets the output linger, then takes it out of the set
    /// (unless a newer one took its place). A task that panics ends like
    /// one that hands nothing back: its output leaves the set at once, so
    /// for an on-demand kind the next reader starts a fresh one instead of
    /// getting a dead one (an eager kind is started again with the stream's
    /// next start).
    fn supervise(self: &Arc<Self>, name: String, output: Weak<T>, task: OutputTask<T>) {
        let set = self.clone();
        tokio::spawn(async move {
            let held = match tokio::spawn(task).await {
                Ok(held) => held,
                Err(e) => {
                    // (Cancelled only when the runtime shuts down: nothing to say.)
                    if e.is_panic() {
                        tracing::error!(kind = set.kind, stream = %name, "output task panicked; its readers end, the next starts a new one");
                    }
                    None
                }
            };
            if held.is_some() && !set.linger.is_zero() {
                let mut closing = set.closing.subscribe();
                tokio::select! {
                    _ = tokio::time::sleep(set.linger) => {}
                    _ = closing.wait_for(|c| *c) => {}
                }
            }
            drop(held);
            let mut live = set.live.lock();
            if live.get(&name).is_some_and(|s| Weak::ptr_eq(&s.output, &output)) {
                live.remove(&name);
            }
        });
    }

    /// Starts an output for every stream the registry has and starts
    /// (eager kinds; on-demand kinds only wait), until [`Outputs::close`].
    pub async fn run(self: Arc<Self>, registry: Registry) {
        let mut closing = self.closing.subscribe();
        let stop = async move {
            let _ = closing.wait_for(|c| *c).await;
        };
        match self.start {
            Start::Eager => {
                registry
                    .for_each_stream(stop, |s| {
                        self.get_or_start(&s);
                    })
                    .await
            }
            Start::OnDemand => stop.await,
        }
    }

    /// Stops starting outputs and cuts lingers short (shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// How many streams have this output now.
    pub fn len(&self) -> usize {
        let mut live = self.live.lock();
        live.retain(|_, s| s.output.strong_count() > 0);
        live.len()
    }

    /// Whether no stream has this output now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RegistryConfig, StreamConfig};

    fn counter() -> (Arc<std::sync::atomic::AtomicUsize>, StartOutput<String>) {
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = started.clone();
        let make: StartOutput<String> = Box::new(move |s: Arc<Stream>| {
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let out = Arc::new(s.name().to_owned());
            let held = out.clone();
            let task: OutputTask<String> = Box::pin(async move {
                let mut sub = s.subscribe();
                while sub.recv().await.is_some() {}
                Some(held)
            });
            (out, task)
        });
        (started, make)
    }

    fn registry() -> Registry {
        Registry::new(RegistryConfig {
            grace: Duration::ZERO,
            stream: StreamConfig { buffer: Duration::from_secs(1), max_bytes: 1 << 20 },
            ..Default::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn on_demand_outputs_start_once_per_stream_and_leave_after_its_end() {
        let reg = registry();
        let (started, make) = counter();
        let set = Outputs::new("test", Start::OnDemand, Duration::ZERO, make);
        let p = reg.publish("cam").unwrap();
        let stream = p.stream().clone();
        assert!(set.get("cam").is_none(), "nothing runs before it is asked for");
        let a = set.get_or_start(&stream);
        let b = set.get_or_start(&stream);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 1);
        drop((a, b));
        drop(p);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(set.get("cam").is_none(), "gone with its stream");
        // A new stream of the same name gets a new output.
        let p2 = reg.publish("cam").unwrap();
        let _c = set.get_or_start(p2.stream());
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_output_whose_task_panics_leaves_the_set_and_the_next_reader_starts_another() {
        let reg = registry();
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = started.clone();
        let make: StartOutput<String> = Box::new(move |s: Arc<Stream>| {
            let first = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            let task: OutputTask<String> = Box::pin(async move {
                let mut sub = s.subscribe();
                assert!(!first, "the first output's task fails");
                while sub.recv().await.is_some() {}
                None
            });
            (Arc::new(String::from("out")), task)
        });
        let set = Outputs::new("test", Start::OnDemand, Duration::ZERO, make);
        let p = reg.publish("cam").unwrap();
        let dead = set.get_or_start(p.stream());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(set.get("cam").is_none(), "a reader still holds it, but it left the set");
        let fresh = set.get_or_start(p.stream());
        assert!(!Arc::ptr_eq(&dead, &fresh));
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(set.get("cam").is_some_and(|o| Arc::ptr_eq(&o, &fresh)));
    }

    #[tokio::test(start_paused = true)]
    async fn eager_outputs_start_with_the_stream_and_linger_after_it() {
        let reg = registry();
        let (started, make) = counter();
        let set = Outputs::new("test", Start::Eager, Duration::from_secs(30), make);
        tokio::spawn(set.clone().run(reg.clone()));
        tokio::task::yield_now().await;
        let p = reg.publish("cam").unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(set.get("cam").as_deref().map(String::as_str), Some("cam"));
        drop(p);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(set.get("cam").is_some(), "lingers");
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert!(set.get("cam").is_none(), "gone after the linger");
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 1);
        set.close();
    }
}

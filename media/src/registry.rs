//! Live streams by name, with the publish rules: one publisher per stream,
//! a grace period for reconnects, optional takeover.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::memory::Ledger;
use crate::stream::{Publisher, Stream, StreamConfig};

/// What happens when a second publisher arrives for a live stream name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PublishMode {
    /// The newcomer is refused.
    #[default]
    Refuse,
    /// The newcomer takes over; the old publisher's pushes fail from then on.
    Takeover,
}

/// Registry-wide rules.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// How long a stream outlives its publisher, waiting for a reconnect.
    pub grace: Duration,
    /// Rule for a second publisher.
    pub mode: PublishMode,
    /// Ring limits of each stream.
    pub stream: StreamConfig,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig { grace: Duration::from_secs(5), mode: PublishMode::Refuse, stream: StreamConfig::default() }
    }
}

/// Why a publish was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    /// Another publisher is live on that name and takeover is off.
    #[error("stream {0:?} already has a live publisher")]
    AlreadyLive(String),
}

/// Announced to [`Registry::events`] listeners.
#[derive(Clone, Debug)]
pub enum RegistryEvent {
    /// A stream came into existence (first publish).
    Started(Arc<Stream>),
    /// A stream ended (its grace period ran out).
    Ended(String),
}

struct Inner {
    cfg: RegistryConfig,
    streams: Mutex<HashMap<String, Arc<Stream>>>,
    events: broadcast::Sender<RegistryEvent>,
    ledger: Ledger,
}

/// Live streams by name. Cheap to clone; all clones share one table.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("streams", &self.inner.streams.lock().len()).finish()
    }
}

/// What a publisher's admission says about its stream, given when it is
/// published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// How far back viewers may rewind (the stream's `buffer_secs`).
    pub dvr: Option<std::time::Duration>,
}

impl Registry {
    /// An empty registry.
    pub fn new(cfg: RegistryConfig) -> Registry {
        Registry {
            inner: Arc::new(Inner {
                cfg,
                streams: Mutex::new(HashMap::new()),
                events: broadcast::channel(1024).0,
                ledger: Ledger::new(),
            }),
        }
    }

    /// Starts publishing `name`: creates the stream, resumes it when it is in
    /// its grace period, or applies the [`PublishMode`] when it is live.
    pub fn publish(&self, name: &str) -> Result<Publisher, PublishError> {
        self.publish_with(name, PublishOptions::default())
    }

    /// [`Registry::publish`] with the publisher's settings, on the stream
    /// before anyone hears it started (a stream resumed in its grace period
    /// keeps the ones it started with).
    pub fn publish_with(&self, name: &str, opts: PublishOptions) -> Result<Publisher, PublishError> {
        let mut streams = self.inner.streams.lock();
        if let Some(stream) = streams.get(name).cloned() {
            let mut slot = stream.slot.lock();
            if slot.live && self.inner.cfg.mode == PublishMode::Refuse {
                return Err(PublishError::AlreadyLive(name.to_owned()));
            }
            slot.generation += 1;
            slot.live = true;
            let generation = slot.generation;
            drop(slot);
            stream.revoked.send_replace(generation);
            stream.mark_resume();
            drop(streams);
            return Ok(self.publisher(stream, generation));
        }
        let gauge = self.inner.ledger.gauge(name, "ring");
        let stream = Stream::new(name.to_owned(), self.inner.cfg.stream.clone(), gauge);
        if let Some(d) = opts.dvr {
            let _ = stream.dvr.set(d);
        }
        streams.insert(name.to_owned(), stream.clone());
        drop(streams);
        let _ = self.inner.events.send(RegistryEvent::Started(stream.clone()));
        Ok(self.publisher(stream, 0))
    }

    fn publisher(&self, stream: Arc<Stream>, generation: u64) -> Publisher {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        Publisher {
            stream,
            generation,
            on_drop: Some(Box::new(move |stream, generation| {
                if let Some(inner) = weak.upgrade() {
                    Registry { inner }.release(stream, generation);
                }
            })),
        }
    }

    fn release(&self, stream: &Arc<Stream>, generation: u64) {
        {
            let mut slot = stream.slot.lock();
            if slot.generation != generation {
                return; // taken over: the newcomer owns the slot
            }
            slot.live = false;
        }
        self.schedule_reap(stream, generation);
    }

    fn reap(&self, stream: &Arc<Stream>, generation: u64) {
        let mut streams = self.inner.streams.lock();
        {
            let slot = stream.slot.lock();
            if slot.live || slot.generation != generation {
                return;
            }
        }
        if streams.get(stream.name()).is_some_and(|s| Arc::ptr_eq(s, stream)) {
            streams.remove(stream.name());
        }
        drop(streams);
        stream.end();
        let _ = self.inner.events.send(RegistryEvent::Ended(stream.name().to_owned()));
    }

    /// Disconnects a stream's publisher (the operator's kick): its session
    /// sees itself revoked and closes, and the stream ends like any other
    /// publisher loss (after the grace period, unless someone publishes).
    /// Returns false when the stream has no live publisher.
    pub fn kick(&self, name: &str) -> bool {
        let Some(stream) = self.get(name) else { return false };
        let generation = {
            let mut slot = stream.slot.lock();
            if !slot.live {
                return false;
            }
            slot.generation += 1;
            slot.live = false;
            slot.generation
        };
        stream.revoked.send_replace(generation);
        self.schedule_reap(&stream, generation);
        true
    }

    /// Ends the stream after the grace period unless a publisher came back.
    fn schedule_reap(&self, stream: &Arc<Stream>, generation: u64) {
        let grace = self.inner.cfg.grace;
        let reg = self.clone();
        let stream = stream.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if !grace.is_zero() => {
                rt.spawn(async move {
                    tokio::time::sleep(grace).await;
                    reg.reap(&stream, generation);
                });
            }
            _ => reg.reap(&stream, generation),
        }
    }

    /// Ends every stream now, as on shutdown: subscribers drain and finish.
    pub fn close_all(&self) {
        let streams: Vec<_> = self.inner.streams.lock().drain().map(|(_, s)| s).collect();
        for s in streams {
            s.end();
            let _ = self.inner.events.send(RegistryEvent::Ended(s.name().to_owned()));
        }
    }

    /// The node's memory ledger: every holder of stream media reports here.
    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    /// The stream called `name`, live or in its grace period.
    pub fn get(&self, name: &str) -> Option<Arc<Stream>> {
        self.inner.streams.lock().get(name).cloned()
    }

    /// All streams, live or in their grace period.
    pub fn streams(&self) -> Vec<Arc<Stream>> {
        self.inner.streams.lock().values().cloned().collect()
    }

    /// Stream start and end announcements, from now on.
    pub fn events(&self) -> broadcast::Receiver<RegistryEvent> {
        self.inner.events.subscribe()
    }

    /// Calls `on_start` once for every stream in the registry now and every
    /// stream that starts later, until `stop` resolves. Outputs that package
    /// each stream (LL-HLS, MPEG-TS) hang on this. If announcements were
    /// missed (a lagging receiver), the registry is rescanned, so no stream
    /// is skipped and none is started twice.
    pub async fn for_each_stream(
        &self,
        stop: impl std::future::Future<Output = ()>,
        mut on_start: impl FnMut(Arc<Stream>),
    ) {
        let mut events = self.events();
        let mut seen: HashMap<String, Weak<Stream>> = HashMap::new();
        let mut start = |s: Arc<Stream>, seen: &mut HashMap<String, Weak<Stream>>| {
            let known = seen.get(s.name()).and_then(Weak::upgrade).is_some_and(|k| Arc::ptr_eq(&k, &s));
            if !known {
                seen.insert(s.name().to_owned(), Arc::downgrade(&s));
                on_start(s);
            }
        };
        for s in self.streams() {
            start(s, &mut seen);
        }
        tokio::pin!(stop);
        loop {
            let ev = tokio::select! {
                _ = &mut stop => return,
                ev = events.recv() => ev,
            };
            match ev {
                Ok(RegistryEvent::Started(s)) => start(s, &mut seen),
                Ok(RegistryEvent::Ended(name)) => {
                    // The ended stream's entry goes (a weak reference keeps
                    // its allocation); a newer stream of that name, which
                    // can only start after this, is never ended yet.
                    seen.retain(|n, w| n != &name || w.upgrade().is_some_and(|s| !s.is_ended()));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    for s in self.streams() {
                        start(s, &mut seen);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, Frame};
    use bytes::Bytes;

    fn cfg(grace_ms: u64, mode: PublishMode) -> RegistryConfig {
        RegistryConfig { grace: Duration::from_millis(grace_ms), mode, stream: StreamConfig::default() }
    }

    fn key(dts_ms: i64) -> Frame {
        Frame { track: 0, dts: dts_ms * 1000, cts: 0, keyframe: true, payload: Bytes::from_static(b"x") }
    }

    #[tokio::test]
    async fn second_publisher_is_refused() {
        let reg = Registry::new(cfg(1000, PublishMode::Refuse));
        let _p = reg.publish("a").unwrap();
        assert_eq!(reg.publish("a").unwrap_err(), PublishError::AlreadyLive("a".into()));
        assert!(reg.publish("b").is_ok());
    }

    #[tokio::test]
    async fn kick_revokes_the_publisher_and_ends_the_stream() {
        let reg = Registry::new(cfg(0, PublishMode::Refuse));
        let mut events = reg.events();
        let p = reg.publish("a").unwrap();
        assert!(!reg.kick("nope"));
        assert!(reg.kick("a"));
        assert!(p.is_revoked());
        p.revoked().await;
        assert!(!reg.kick("a"), "nobody left to kick");
        assert!(p.push(key(0)).is_err());
        drop(p);
        assert!(matches!(events.recv().await, Ok(RegistryEvent::Started(_))));
        assert!(matches!(events.recv().await, Ok(RegistryEvent::Ended(n)) if n == "a"));
        assert!(reg.get("a").is_none());
        reg.publish("a").unwrap();
    }

    #[tokio::test]
    async fn takeover_revokes_the_old_publisher() {
        let reg = Registry::new(cfg(1000, PublishMode::Takeover));
        let old = reg.publish("a").unwrap();
        let new = reg.publish("a").unwrap();
        old.revoked().await;
        assert!(old.push(key(0)).is_err());
        assert!(new.push(key(0)).is_ok());
        drop(old); // must not end the stream the newcomer owns
        assert!(reg.get("a").unwrap().has_publisher());
    }

    #[tokio::test(start_paused = true)]
    async fn reconnect_within_grace_resumes_with_a_discontinuity() {
        let reg = Registry::new(cfg(5000, PublishMode::Refuse));
        let p = reg.publish("a").unwrap();
        p.push(key(0)).unwrap();
        p.push(key(1000)).unwrap();
        let stream = p.stream().clone();
        let mut sub = stream.subscribe();
        drop(p);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let p2 = reg.publish("a").unwrap();
        assert!(Arc::ptr_eq(p2.stream(), &stream));
        p2.push(key(0)).unwrap(); // the new session restarts its clock at 0
        let mut seen = Vec::new();
        while let Some(ev) = sub.try_recv() {
            seen.push(ev);
        }
        assert!(matches!(seen[1], Event::Frame(ref f) if f.dts == 1_000_000));
        assert!(matches!(seen[2], Event::Discontinuity));
        assert!(matches!(seen[3], Event::Frame(ref f) if f.dts > 1_000_000), "{seen:?}");
    }

    #[tokio::test]
    async fn for_each_stream_sees_existing_and_new_streams_once() {
        let reg = Registry::new(cfg(1000, PublishMode::Refuse));
        let _a = reg.publish("a").unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let stop = tokio_stop();
        let r2 = reg.clone();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                r2.for_each_stream(async move { stop.notified().await }, |s| tx.send(s.name().to_owned()).unwrap())
                    .await
            }
        });
        assert_eq!(rx.recv().await.unwrap(), "a");
        let _b = reg.publish("b").unwrap();
        assert_eq!(rx.recv().await.unwrap(), "b");
        stop.notify_one();
        task.await.unwrap();
        assert!(rx.try_recv().is_err(), "each stream once");
    }

    fn tokio_stop() -> std::sync::Arc<tokio::sync::Notify> {
        std::sync::Arc::new(tokio::sync::Notify::new())
    }

    #[tokio::test(start_paused = true)]
    async fn stream_ends_after_grace() {
        let reg = Registry::new(cfg(5000, PublishMode::Refuse));
        let mut events = reg.events();
        let p = reg.publish("a").unwrap();
        assert!(matches!(events.recv().await, Ok(RegistryEvent::Started(_))));
        let stream = p.stream().clone();
        drop(p);
        assert!(!stream.is_ended());
        assert!(matches!(events.recv().await, Ok(RegistryEvent::Ended(n)) if n == "a"));
        assert!(stream.is_ended());
        assert!(reg.get("a").is_none());
    }
}

//! Where a node's media memory is: one gauge per (stream, holder).
//!
//! Each part of the server that holds media for a stream (the stream's ring,
//! the CMAF window, the TS ring, the WHEP fast-start GOP, an ingest's read
//! buffers) takes a [`Gauge`] from the node's [`Ledger`] and keeps it up to
//! date with plain atomic stores. The ledger only holds weak references: a
//! gauge disappears from it when its holder drops it, which is when the
//! memory it describes has been released. Reading the ledger (the load
//! report, `/metrics`) never blocks a holder.
//!
//! The figures are payload bytes referenced, so the same bytes can appear
//! under two holders (a frame in the ring is also in the CMAF part that
//! carries it): each figure says how much one holder keeps alive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

#[derive(Debug)]
struct Entry {
    stream: String,
    holder: &'static str,
    bytes: AtomicU64,
}

/// One holder's bytes for one stream. Dropping it removes it from the ledger.
#[derive(Debug, Clone)]
pub struct Gauge(Arc<Entry>);

impl Gauge {
    /// A gauge that belongs to no ledger (tests, derived streams nobody accounts).
    pub fn detached(stream: &str, holder: &'static str) -> Gauge {
        Gauge(Arc::new(Entry { stream: stream.to_owned(), holder, bytes: AtomicU64::new(0) }))
    }

    /// Sets the bytes held now.
    pub fn set(&self, bytes: usize) {
        self.0.bytes.store(bytes as u64, Ordering::Relaxed);
    }

    /// Adds `bytes` to what is held (for holders that count allocations
    /// as they come and go rather than measure a total).
    pub fn add(&self, bytes: usize) {
        self.0.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Takes `bytes` back off what is held; never below zero.
    pub fn sub(&self, bytes: usize) {
        let _ =
            self.0.bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(bytes as u64)));
    }

    /// The bytes held now.
    pub fn get(&self) -> u64 {
        self.0.bytes.load(Ordering::Relaxed)
    }
}

/// One line of a [`Ledger`] snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// The stream.
    pub stream: String,
    /// What holds the bytes: `ring`, `cmaf`, `ts`, `whep`, `ingest`...
    pub holder: &'static str,
    /// Payload bytes held.
    pub bytes: u64,
}

/// Every gauge of a node. Cheap to clone; clones share the gauges.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    entries: Arc<Mutex<Vec<Weak<Entry>>>>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// A new gauge for `holder` of `stream`, starting at zero.
    pub fn gauge(&self, stream: &str, holder: &'static str) -> Gauge {
        let g = Gauge::detached(stream, holder);
        let mut entries = self.entries.lock();
        // Forget gauges that were dropped, so the list stays as long as the live ones.
        entries.retain(|w| w.strong_count() > 0);
        entries.push(Arc::downgrade(&g.0));
        g
    }

    /// The live gauges, summed per (stream, holder), sorted.
    pub fn snapshot(&self) -> Vec<Holding> {
        let mut out: Vec<Holding> = Vec::new();
        {
            let mut entries = self.entries.lock();
            entries.retain(|w| w.strong_count() > 0);
            for e in entries.iter().filter_map(Weak::upgrade) {
                let bytes = e.bytes.load(Ordering::Relaxed);
                match out.iter_mut().find(|h| h.stream == e.stream && h.holder == e.holder) {
                    Some(h) => h.bytes += bytes,
                    None => out.push(Holding { stream: e.stream.clone(), holder: e.holder, bytes }),
                }
            }
        }
        out.sort_by(|a, b| (&a.stream, a.holder).cmp(&(&b.stream, b.holder)));
        out
    }

    /// All bytes held, node-wide.
    pub fn total(&self) -> u64 {
        self.snapshot().iter().map(|h| h.bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_sum_per_holder_and_leave_when_dropped() {
        let ledger = Ledger::new();
        let a = ledger.gauge("cam", "ring");
        let b = ledger.gauge("cam", "ingest");
        let c = ledger.gauge("cam", "ingest");
        a.set(100);
        b.set(10);
        c.set(5);
        let snap = ledger.snapshot();
        assert_eq!(
            snap,
            vec![
                Holding { stream: "cam".into(), holder: "ingest", bytes: 15 },
                Holding { stream: "cam".into(), holder: "ring", bytes: 100 },
            ]
        );
        drop((a, b));
        assert_eq!(ledger.total(), 5);
        drop(c);
        assert!(ledger.snapshot().is_empty());
    }
}

//! The counters every ingest listener keeps, and (re-exported from
//! [`crate::access`]) the gate it admits clients through.

use std::sync::atomic::AtomicU64;

pub use crate::access::{AccessGate, PlayRequest, PublishRequest, Refusal};

/// Counters shared by an ingest listener's sessions.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections closed at once because the listener was full.
    pub refused_connections: AtomicU64,
    /// Publishes refused by the gate or the registry.
    pub publish_refused: AtomicU64,
    /// Players refused (protocols that also play out).
    pub play_refused: AtomicU64,
    /// Sessions closed because of a protocol error.
    pub protocol_errors: AtomicU64,
    /// Sessions ended by a panic (a bug; the server stays up).
    pub panics: AtomicU64,
    /// Bytes received.
    pub bytes_in: AtomicU64,
    /// Bytes sent to players (protocols that also play out).
    pub bytes_out: AtomicU64,
}

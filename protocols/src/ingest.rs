//! What every ingest protocol shares: the publish gate the control plane
//! implements, and the counters every ingest keeps.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;

/// A client asking to publish.
#[derive(Debug, Clone)]
pub struct PublishRequest<'a> {
    /// `rtmp`, `srt`, `whip`...
    pub protocol: &'static str,
    /// The application or path prefix (`live` in `rtmp://host/live/key`).
    pub app: &'a str,
    /// What the client sent as the stream name or key, query string included.
    pub key: &'a str,
    /// The client's address.
    pub peer: SocketAddr,
}

/// Why a publish was refused; `reason` is shown to the client and logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Human-readable reason.
    pub reason: String,
}

/// Decides who may publish which stream. Implemented by the control plane.
pub trait PublishGate: Send + Sync + 'static {
    /// Returns the internal stream name to publish to, or a refusal.
    fn authorize(&self, req: &PublishRequest<'_>) -> Result<String, Refusal>;
}

/// Counters shared by an ingest listener's sessions.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections closed at once because the listener was full.
    pub refused_connections: AtomicU64,
    /// Publishes refused by the gate or the registry.
    pub publish_refused: AtomicU64,
    /// Sessions closed because of a protocol error.
    pub protocol_errors: AtomicU64,
    /// Sessions ended by a panic (a bug; the server stays up).
    pub panics: AtomicU64,
    /// Bytes received.
    pub bytes_in: AtomicU64,
}

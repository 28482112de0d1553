//! What every protocol shares with the control plane: the access gate it
//! implements (who may publish or play what), and the counters every
//! ingest keeps.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
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

/// A client asking to play.
#[derive(Debug, Clone)]
pub struct PlayRequest<'a> {
    /// `srt`, `hls`, `ts`...
    pub protocol: &'static str,
    /// The stream name asked for.
    pub stream: &'a str,
    /// The playback token, if the client sent one.
    pub token: Option<&'a str>,
    /// The client's address.
    pub peer: SocketAddr,
}

/// The gate's answer: the internal stream name, or a refusal. Asynchronous
/// because the control plane may ask a webhook.
pub type Decision<'a> = Pin<Box<dyn Future<Output = Result<String, Refusal>> + Send + 'a>>;

/// Decides who may publish or play which stream. Implemented by the control plane.
pub trait AccessGate: Send + Sync + 'static {
    /// Returns the internal stream name to publish to, or a refusal.
    fn authorize_publish<'a>(&'a self, req: PublishRequest<'a>) -> Decision<'a>;

    /// Returns the stream name to play, or a refusal. By default anyone
    /// plays anything.
    fn authorize_play<'a>(&'a self, req: PlayRequest<'a>) -> Decision<'a> {
        let stream = req.stream.to_owned();
        Box::pin(async move { Ok(stream) })
    }
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
    /// Bytes sent to players (protocols that also play out).
    pub bytes_out: AtomicU64,
    /// Players connected now.
    pub players: AtomicU64,
}

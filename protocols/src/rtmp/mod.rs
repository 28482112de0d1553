//! RTMP ingest: our own sans-IO implementation.
//!
//! We first meant to wrap `rml_rtmp`, but it is unmaintained and a 17-byte
//! AMF0 command after the handshake panics it. Isolating every call with
//! `catch_unwind` would keep the server up but leave a parser we cannot fix;
//! the protocol surface a server needs (plain handshake, chunk stream, AMF0,
//! a dozen commands) is small, so we own it. See `docs/protocols.md`.
//!
//! Layers, each usable alone:
//! * [`handshake`]: C0-C2 / S0-S2.
//! * [`chunk`]: the chunk stream decoder and encoder.
//! * [`amf`]: AMF0 values.
//! * [`ServerSession`]: the server state machine (connect, createStream,
//!   publish, media). Bytes in, events and bytes out; time is an argument.
//! * [`ClientSession`]: the publishing side, for push targets and tests.
//! * [`driver`]: the only tokio code: the listener and per-connection loop that
//!   hands media to the shared FLV ingest ([`crate::flv::FlvIngest`]).

pub mod amf;
pub mod chunk;
mod client;
pub mod driver;
pub mod feed;
mod flush_tick;
pub mod handshake;
pub mod play_queue;
pub mod read_buffer;
mod session;

pub use client::ClientSession;
pub use session::{ServerSession, SessionConfig, SessionEvent};

/// Why an RTMP session ended.
#[derive(Debug, thiserror::Error)]
pub enum RtmpError {
    /// The handshake was not plain RTMP version 3.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The peer broke the chunk or command protocol.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// A message larger than the configured limit.
    #[error("message of {0} bytes exceeds the {1}-byte limit")]
    MessageTooLarge(u32, u32),
    /// An AMF0 value could not be decoded.
    #[error("bad AMF0 data: {0}")]
    Amf(&'static str),
    /// An AMF0 type marker we do not know.
    #[error("unknown AMF0 type marker 0x{0:02x}")]
    AmfMarker(u8),
    /// The server refused our publish (client side).
    #[error("server refused: {0}")]
    Rejected(String),
    /// Input after the session was closed.
    #[error("session already closed")]
    Closed,
}

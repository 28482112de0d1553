//! Tidecast's media core.
//!
//! Every input writes, and every output reads, one internal framing:
//!
//! * a [`Frame`] is one access unit of one track: decode timestamp, composition
//!   offset, keyframe flag and the payload as [`bytes::Bytes`]. Payloads are
//!   slices of the buffer the ingest read them into; handing a frame to any
//!   number of readers clones a reference count, never the bytes.
//! * a [`Track`] describes one elementary stream: its codec, its configuration
//!   record (avcC, hvcC, av1C, AudioSpecificConfig, OpusHead) and what a player
//!   needs to know (resolution, sample rate, RFC 6381 codec string).
//! * a [`Stream`] keeps a bounded ring of recent frames with a keyframe index.
//!   One [`Publisher`] writes it; any number of [`Subscriber`]s read it at their
//!   own pace. A subscriber that falls out of the ring jumps to the newest
//!   keyframe (and the jump is counted); the publisher never waits for anyone.
//! * the [`Registry`] maps live stream names to streams, refuses a second
//!   publisher (or lets it take over) and keeps a stream alive for a grace
//!   period after its publisher drops so a reconnect resumes it.
//! * the [`Ledger`] knows how many bytes each holder of a stream's media
//!   (its ring, and each output's window) keeps alive.
//! * [`framing`] serializes a stream (tracks, then frames) losslessly, for
//!   relays and on-disk buffers.
//!
//! Timestamps are in microseconds ([`TIMESCALE`]) for every track, so that
//! outputs never look up a timescale to compare two frames. Any timescale up to
//! 1 MHz round-trips exactly through microseconds with rounding
//! ([`rescale`]).
//!
//! This crate opens no sockets and spawns no tasks except the grace timer of a
//! stream whose publisher went away.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod frame;
pub mod framing;
mod memory;
pub mod outputs;
mod registry;
mod stream;
mod track;

pub use frame::{rescale, Frame, TrackId, TIMESCALE};
pub use memory::{Gauge, Holding, Ledger};
pub use registry::{PublishError, PublishMode, PublishOptions, Registry, RegistryConfig, RegistryEvent};
pub use stream::{
    Demand, Entry, Event, Publisher, Revoked, Stream, StreamConfig, StreamStats, Subscriber, TrackWriter,
    DERIVED_LEAD_LIMIT_US, DERIVED_TRACK_BASE,
};
pub use track::{Codec, MediaKind, Track, TrackInfo};

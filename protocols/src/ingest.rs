//! What every ingest shares: the delivery path from a media parser to its
//! stream ([`Deliverer`]), the counters every ingest listener keeps, and
//! (re-exported from [`crate::access`]) the gate it admits clients through.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;

use tidecast_media::{Frame, Publisher, Track};
use tracing::{info, warn};

use crate::access::Session;
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

/// What an ingest's media parser hands to its stream: the one vocabulary of
/// the FLV ingest (RTMP), the MPEG-TS demuxer (SRT) and RTP assembly (WHIP).
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The tracks changed (first configuration, new parameter sets).
    Tracks(Vec<Track>),
    /// One frame.
    Frame(Frame),
    /// The timeline restarts (timestamps jumped, the program changed).
    Discontinuity,
    /// Media the server cannot carry, left out (reported once per kind).
    Unsupported(String),
}

/// A sans-IO media parser seen from its output side: what it found, one
/// [`Delivery`] at a time. Each takes its input its own way (`push` of
/// socket bytes or tags); all of them are drained the same way
/// ([`Deliverer::drain`]).
pub trait MediaSource {
    /// The next thing found, if any.
    fn poll(&mut self) -> Option<Delivery>;
}

/// Why an ingest must close: its stream refused what it was handed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the stream refused the media (its publisher was replaced or the stream ended)")]
pub struct StreamClosed;

/// Hands one publisher's parsed media to its stream: the delivery path every
/// ingest shares. Logs each track list, warns once per kind of unsupported
/// media, and counts frames in the publisher's session.
#[derive(Debug)]
pub struct Deliverer {
    publisher: Publisher,
    session: Option<Session>,
    protocol: &'static str,
    peer: SocketAddr,
    warned: Vec<String>,
}

impl Deliverer {
    /// Delivers to `publisher`, counting in `session`.
    pub fn new(protocol: &'static str, peer: SocketAddr, publisher: Publisher, session: Option<Session>) -> Deliverer {
        Deliverer { publisher, session, protocol, peer, warned: Vec::new() }
    }

    /// The publisher delivered to.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The publisher's session, if it was admitted through a gate.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        self.publisher.stream().name()
    }

    /// Hands everything `source` found so far to the stream.
    pub fn drain(&mut self, source: &mut impl MediaSource) -> Result<(), StreamClosed> {
        while let Some(d) = source.poll() {
            self.deliver(d)?;
        }
        Ok(())
    }

    /// Hands `d` to the stream.
    pub fn deliver(&mut self, d: Delivery) -> Result<(), StreamClosed> {
        let (protocol, peer) = (self.protocol, self.peer);
        match d {
            Delivery::Tracks(tracks) => {
                for t in &tracks {
                    info!(protocol, %peer, stream = self.stream(), track = t.id, codec = t.codec.name(),
                          codec_string = %t.info.codec_string, width = t.info.width, height = t.info.height,
                          sample_rate = t.info.sample_rate, "track");
                }
                self.publisher.set_tracks(tracks).map_err(|_| StreamClosed)
            }
            Delivery::Frame(f) => {
                if let Some(s) = &self.session {
                    s.frame();
                }
                self.publisher.push(f).map_err(|_| StreamClosed)
            }
            Delivery::Discontinuity => {
                self.publisher.discontinuity();
                Ok(())
            }
            Delivery::Unsupported(what) => {
                if !self.warned.contains(&what) {
                    warn!(protocol, %peer, stream = self.stream(), "leaving out media we cannot carry: {what}");
                    if self.warned.len() < 16 {
                        self.warned.push(what);
                    }
                }
                Ok(())
            }
        }
    }
}

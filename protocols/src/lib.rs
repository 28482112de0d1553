//! Tidecast's protocols. Each is a sans-IO core (parse, serialize, state
//! machine; no tokio) plus a thin async driver.
//!
//! * [`rtmp`]: RTMP ingest, Enhanced RTMP included.
//! * [`flv`]: FLV tag bodies and the FLV-to-media ingest shared by RTMP and
//!   later FLV inputs.
//! * [`cmaf`]: fMP4 init segments and fragments.
//! * [`hls`]: the LL-HLS packager and playlist writer.
//! * [`mpegts`]: MPEG-TS demuxer and muxer, and the per-stream TS output.
//! * [`srt`]: SRT publish and play on one UDP port.
//! * [`webrtc`]: WHIP ingest and WHEP playback on one UDP port.
//! * [`livepeer`]: transcoding offloaded to a Livepeer gateway (its wire
//!   contract and sans-IO pieces).
//! * [`access`]: the one admission path and session type of every protocol.
//! * [`ingest`]: the delivery path and counters every ingest shares.
//! * [`http`]: what the HTTP protocols share (credentials, refusals, CORS).
//!
//! Every protocol folder has the same shape: wire types and a sans-IO core,
//! its ingest or egress adapter, one tokio driver (`driver.rs`), and its own
//! HTTP routes where it has any (`http.rs`). The sans-IO cores speak one
//! vocabulary: input goes in with `push` (tags, TS packets, RTP samples, the
//! last answered at once with what it completed) or
//! `handle_input` (a session's socket bytes); what comes out is taken with
//! `poll` (media, as [`ingest::Delivery`]), `poll_event` (what a session
//! asks of its driver) and `poll_transmit` (bytes to send). Media parsers
//! implement [`ingest::MediaSource`], and [`ingest::Deliverer::drain`] hands
//! their output to a stream, the same way for every ingest.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod cmaf;
pub mod dash;
pub mod flv;
pub mod hls;
pub mod http;
pub mod ingest;
pub mod livepeer;
pub mod mkv;
pub mod mpegts;
pub mod progressive;
pub mod push;
pub mod rtmp;
pub mod srt;
pub mod web;
pub mod webrtc;

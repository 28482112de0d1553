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
//! * [`ingest`]: the publish gate and counters every ingest shares.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod cmaf;
pub mod flv;
pub mod hls;
pub mod http;
pub mod ingest;
pub mod mpegts;
pub mod rtmp;
pub mod srt;
pub mod webrtc;

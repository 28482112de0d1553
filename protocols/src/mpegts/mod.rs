//! MPEG-TS: a demuxer (for SRT and other TS inputs) and a muxer (for SRT and
//! HTTP-TS outputs), both sans-IO, plus the per-stream TS output hub.

mod demux;
pub mod http;
mod mux;
pub mod output;
mod psi;

pub use demux::{DemuxOutput, DemuxStats, TsDemuxer};
pub use mux::{adts_header, TsMuxer, PACKET};
pub use psi::{crc32, stream_type};

#[cfg(test)]
mod tests;

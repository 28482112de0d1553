//! SRT: one UDP port for publishers and players, on `srt-tokio`.
//!
//! * [`streamid`]: the sans-IO part: who wants what.
//! * [`driver`]: the listener. A publisher's MPEG-TS goes through
//!   [`crate::mpegts::TsDemuxer`] into the media core; a player reads the
//!   stream's shared TS form ([`crate::mpegts::output::TsHub`]), paced by
//!   [`pace`] (srt-tokio loses bursts).
//!
//! `srt-tokio` stays behind this module: nothing else names its types, so the
//! libsrt FFI could replace it here alone.

pub mod driver;
pub mod pace;
pub mod streamid;

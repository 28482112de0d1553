//! Transcoding offloaded to a Livepeer gateway (go-livepeer's broadcaster
//! HTTP ingest), the way MistServer's Livepeer process does it.
//!
//! The source's video is cut into MPEG-TS segments at its keyframes
//! ([`cutter`]); each is posted to `/live/{manifestID}/{seq}.ts` with the
//! renditions wanted in the `Livepeer-Transcode-Configuration` header
//! ([`profile`]: lpms's JSON profiles); the gateway answers
//! `multipart/mixed`, one MPEG-TS part per rendition ([`multipart`]), which
//! the TS demuxer turns back into frames of the rendition's track. Several
//! uploads are in flight; [`order`] puts their answers back in segment
//! order and gives up on one that misses its deadline.
//!
//! [`driver`] runs them against gateways and publishes the renditions as
//! tracks of the stream, like the local ladder's.

pub mod answer;
pub mod cutter;
pub mod driver;
pub mod multipart;
pub mod order;
pub mod profile;

pub use cutter::{Cutter, Segment};
pub use driver::{LivepeerEvent, LivepeerJob, LivepeerSpec, LivepeerStats, SegmentReport};
pub use multipart::{MultipartError, Part};
pub use order::{InOrder, Turn};
pub use profile::{JsonProfile, Rendition, TranscodeConfiguration};

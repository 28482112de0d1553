//! Transcoding through FFmpeg's libraries (`ffmpeg-next`). Every FFI call
//! Tidecast makes is in this crate, and the work runs on OS threads, never
//! on the async runtime.
//!
//! * [`probe`]: which H.264 encoders work on this machine (NVENC, QSV,
//!   VAAPI, x264), found once at start-up by opening each and encoding one
//!   frame, with FFmpeg's own reason when one does not.
//! * [`profile`]: named ladders and how a rung is sized for a source.
//! * [`policy`]: which encoders a ladder tries, from its `hw` setting and
//!   the probe.
//! * [`ladder`]: one decode of a stream's video, each rung encoded on its
//!   own thread and published as a track of the same stream, keyframes on
//!   the source's.
//!
//! * [`audio`]: the audio bridge, AAC to Opus for WebRTC and Opus to AAC
//!   for everything else, as a track of the same stream.
//! * `hwframes`: device surfaces and their upload, for VAAPI.
//! * [`thumbnail`]: a keyframe as a JPEG (`/{stream}.jpg`).

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod audio;
mod encoder;
mod hwframes;
pub mod ladder;
pub mod log;
pub mod policy;
pub mod probe;
pub mod profile;
mod supervise;
pub mod thumbnail;

pub use audio::{AudioBridge, BridgeMode};
pub use ladder::{Ladder, LadderReport, LadderSpec, LadderStats};
pub use profile::{Backend, HwPolicy, Profile};
pub use supervise::{RunStats, MAX_BACKOFF};

use std::sync::Once;

static INIT: Once = Once::new();

/// Initialises FFmpeg once per process and routes its log into `tracing`.
pub fn init() {
    INIT.call_once(|| {
        if let Err(e) = ffmpeg_next::init() {
            tracing::warn!(error = %e, "ffmpeg: initialisation failed");
        }
        log::install();
    });
}

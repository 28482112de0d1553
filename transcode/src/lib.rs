//! Transcoding through FFmpeg's libraries (`ffmpeg-next`). Every FFI call
//! Tidecast makes is in this crate, and the work runs on OS threads, never
//! on the async runtime.
//!
//! Built so far:
//! * [`probe`]: which H.264 encoders work on this machine (NVENC, QSV,
//!   VAAPI, x264), found once at start-up by opening each and encoding one
//!   frame, with FFmpeg's own reason when one does not.
//!
//! Next (issue 12): the ladder (one decode per source track, rungs
//! published as tracks of the same stream, keyframes aligned to the
//! source's) and the AAC <-> Opus audio bridge.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod log;
pub mod probe;

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

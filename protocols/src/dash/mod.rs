//! LL-DASH: `GET /dash/{stream}/index.mpd` (MistServer's path) and the init
//! segments and segments it names, rendered from the same CMAF segments and
//! chunks LL-HLS serves (one packaging, no second copy).
//!
//! * [`mpd`]: the MPD renderer.
//! * [`http`]: the routes, the live-edge segment streamed as its chunks are
//!   written, and the server's clock (`/dash/utc`) that the MPD's
//!   `UTCTiming` names.
//! * [`thumbs`]: the thumbnail AdaptationSet and its images, for dash.js's
//!   `provideThumbnail()`.

pub mod http;
pub mod mpd;
pub mod thumbs;

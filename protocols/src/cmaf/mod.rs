//! CMAF packaging, format-neutral: LL-HLS playlists and the LL-DASH MPD are
//! two renderers over what this module builds once per stream.
//!
//! * [`boxes`]: init segments and fragment headers (`moof` + `mdat` header)
//!   whose sample payloads are the frames' own bytes.
//! * [`rendition`]: one track's segments and parts, each part a list of
//!   CMAF chunks, built as frames arrive.
//! * [`segmenter`]: a stream's renditions, any number of video and audio
//!   tracks, cut at the lead track's keyframes so that every rendition
//!   carries the same segment numbers at the same media times.
//!
//! Nothing here reads a clock or does I/O: the wall-clock anchor of media
//! time is handed in by the output that owns the segmenter.

pub mod boxes;
pub mod progressive;
pub mod rendition;
pub mod segmenter;

pub use boxes::{fragment_header, init_segment, timescale, CmafError, Sample, TRACK_ID};
pub use rendition::{Part, Rendition, Segment};
pub use segmenter::{Segmenter, SegmenterConfig};

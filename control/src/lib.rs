//! Tidecast's HTTP surface and policy: the playback routes today; the admin
//! API, tenants, triggers and metrics grow here (issue 5).
//!
//! `control` talks to the media side only through the registry and the
//! protocol hubs' public APIs.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod playback;

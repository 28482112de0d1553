//! Tidecast's HTTP surface and policy: the playback routes, and the
//! embedded control plane: the admin API, tenants, keys, playback tokens,
//! triggers, load reporting, metrics and the durable store.
//!
//! `control` talks to the media side only through the registry and the
//! protocol hubs' public APIs.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod load;
pub mod metrics;
pub mod model;
pub mod plane;
pub mod policy;
pub mod secrets;
pub mod store;
pub mod tokens;
pub mod triggers;

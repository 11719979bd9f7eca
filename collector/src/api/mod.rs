//! The engineer's desk over HTTP (issue 5): `server` the router, authentication, audit
//! trail and errors; `hosts`, `findings` and `admin` the resources; `page` cursors and
//! limits and `series` the metrics tiers and steps (both pure); `token` the bearer tokens
//! and their roles; `openapi` the document describing it all (`collector/openapi.json`).

pub mod admin;
pub mod diagnostics;
pub mod findings;
pub mod hosts;
pub mod openapi;
pub mod page;
pub mod reports;
pub mod series;
pub mod server;
pub mod token;

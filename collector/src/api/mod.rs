//! The engineer's desk over HTTP (issue 5, in progress): `token` the bearer tokens and
//! their roles, `server` the `/api/v1` routes.

pub mod diagnostics;
pub mod server;
pub mod token;

//! What the aftercare agent and collector agree on: the wire protocol and its codec, the
//! data model of what travels, and the customer's consent record.
//!
//! Invariant: this crate does no I/O and depends on no async runtime or transport, so every
//! piece of it is tested with plain byte buffers and values.

pub mod codec;
pub mod config;
pub mod consent;
pub mod diag;
pub mod logblock;
pub mod model;
pub mod pem;
pub mod protocol;
pub mod time_fmt;

/// The version of this build of aftercare, as carried in Hello and Welcome.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

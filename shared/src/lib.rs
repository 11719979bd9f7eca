//! What the aftercare agent and collector agree on: the wire protocol and its codec, the
//! data model of what travels, and the customer's consent record.
//!
//! Invariant: this crate depends on no async runtime, socket or transport; the protocol,
//! codec, model and consent logic are pure and tested with plain byte buffers and values.
//! The only I/O is reading the small files both programs load the same way (`pem`).

pub mod codec;
pub mod config;
pub mod consent;
pub mod model;
pub mod pem;
pub mod protocol;
pub mod time_fmt;

/// The version of this build of aftercare, as carried in Hello and Welcome.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

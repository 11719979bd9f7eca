//! aftercare-agent as a library: the binary is a thin CLI over these modules, and the
//! end-to-end tests drive the same code.
//!
//! - `config`: agent.toml
//! - `consent`: the consent file and the watch on it (the gate before anything leaves)
//! - `metrics`: what is collected each interval
//! - `logs`: log files followed through rotation, lines made into records, redaction
//! - `spool`: the bounded on-disk queue of batches awaiting acknowledgement
//! - `outbox`: the spool record's envelope and the batches in flight (pure)
//! - `transport`: the QUIC link, framed I/O, reconnect backoff
//! - `tls`: the client side of mutual TLS
//! - `state`: the sequence epoch on disk
//! - `run`: the loop that ties them together
//! - `audit`: the customer-readable, hash-chained record of what left the host

pub mod audit;
pub mod config;
pub mod consent;
pub mod diagnostics;
pub mod logs;
pub mod metrics;
pub mod outbox;
pub mod run;
pub mod spool;
pub mod state;
pub mod tls;
pub mod transport;

//! aftercare-collector as a library: the binary is a thin CLI over these modules, and the
//! end-to-end tests drive the same code.
//!
//! Only `ingest` (QUIC), `store` (the database) and `server`/`quickstart` (files, processes)
//! touch the outside world; `view` and the store's chunk codec are pure.

pub mod api;
pub mod ca;
pub mod client;
pub mod cluster;
pub mod config;
pub mod diagnose;
pub mod findings;
pub mod ingest;
pub mod logging;
pub mod net;
pub mod notify;
pub mod quickstart;
pub mod report;
pub mod rules;
pub mod server;
pub mod sla;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod view;
pub mod web;
pub mod writer;

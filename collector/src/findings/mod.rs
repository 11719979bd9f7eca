//! Preventive-maintenance findings: what the rules raise, deduplicated per (host, rule,
//! subject), with a lifecycle and a timeline. `lifecycle.rs` holds the decisions (pure); `record.rs`
//! what the store keeps and the changes it is asked to make; `view.rs` the tables for a
//! person at a terminal; `engine.rs` the loop that runs the rules over the store and keeps
//! findings, SLA escalations and notifications in step.

pub mod engine;
pub mod lifecycle;
pub mod record;
pub mod view;

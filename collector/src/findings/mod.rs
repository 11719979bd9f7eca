//! Preventive-maintenance findings: what the rules raise, deduplicated per (host, rule,
//! subject), with a lifecycle and a timeline. `lifecycle.rs` holds the decisions (pure); `record.rs`
//! what the store keeps and the changes it is asked to make; `view.rs` the tables for a
//! person at a terminal.

pub mod lifecycle;
pub mod record;
pub mod view;

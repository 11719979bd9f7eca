//! Preventive-maintenance findings: what the rules raise, deduplicated per (host, rule,
//! subject), with a lifecycle and a timeline. `lifecycle.rs` holds the decisions (pure).

pub mod lifecycle;

//! Inspection reports: per customer and period, the five sections the support contracts
//! name, gathered from what the store already holds (rollups, not raw points), kept as data
//! (`model`) and rendered to HTML, Markdown or JSON.

pub mod model;
pub mod render;

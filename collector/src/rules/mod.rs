//! Rules: from what hosts sent to preventive-maintenance findings, each classified by the
//! contracts' fault level (L1–L4) and a category, with a recommendation for the engineer.
//!
//! - `config`: the rule file (`config/rules.toml`, which is also the built-in set), its
//!   kinds (threshold, forecast, log pattern, heartbeat, spool drops, consent expiry, clock
//!   skew) and its validation: a bad rule is refused with its name and the field.
//! - `input`: what evaluation reads: [`HostInfo`] and the [`Observations`] trait over the
//!   store ([`MemoryObservations`] for tests and benchmarks).
//! - `eval`: [`evaluate`], the pure core: `now`, observations and the previous [`State`] in,
//!   [`Transition`]s (raised, updated, cleared) and the next state out.
//! - `checks` (each kind's verdict per subject), `series` (windows, counter rates, ratios,
//!   aggregates), `forecast` (least squares), `labels` (label selection, subjects) and
//!   `evidence` (what a finding shows) are pure helpers of `eval`.
//!
//! Invariants: evaluation never reads a clock, sleeps or touches a file; it never raises or
//! clears on data it could not read; a counter reset is never a negative rate; the example
//! file and the built-in set are one text ([`BUILTIN_RULES`]).

mod checks;
mod config;
mod eval;
mod evidence;
mod forecast;
mod input;
pub(crate) mod labels;
mod series;

pub use config::{
    Aggregate, BUILTIN_RULES, Category, Check, ClockSkew, ConsentExpiry, Direction, Forecast,
    Heartbeat, LabelMatch, Level, Line, LogPattern, LogSubject, Rule, RuleError, RuleSet,
    RulesError, Selector, SpoolDrops, Threshold,
};
pub use eval::{Change, Evaluation, FindingKey, Raised, State, Track, Transition, evaluate};
pub use evidence::{Evidence, EvidenceLine};
pub use forecast::{Fit, fit};
pub use input::{HostInfo, LossEvent, MemoryObservations, Observations, Series};

#[cfg(test)]
mod tests;

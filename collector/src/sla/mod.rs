//! SLA clocks: the respond-by and restore-by a contract promises for a finding, counted on
//! the contract's coverage calendar (24x7, or working hours with holidays and extra working
//! days), and whether the finding is on time, at risk or breached.
//!
//! Pure: the policy comes from a TOML string (`config/sla.toml`), instants come in and go out
//! as Unix milliseconds, and nothing here reads the clock. Time zones come from the tz
//! database bundled in `jiff`, so a deadline does not change with the machine's tzdata.
//!
//! A clock starts when the finding is raised; the respond clock stops at acknowledgement (or
//! resolution, whichever comes first), the restore clock at resolution. Callers pass the stop
//! instants; a clock without one runs until `now`.

mod calendar;
mod config;

pub use calendar::{Calendar, Pause, merge_pauses};
pub use config::{ALWAYS, SlaError};

use aftercare_shared::model::UnixMillis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Fault level, from the service contracts (see DESIGN.md "Fault levels"): L1 is the most
/// severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Level {
    /// System down or service interrupted.
    L1,
    /// Latent risk of an outage.
    L2,
    /// Service directly affected: performance or part of the service degraded.
    L3,
    /// Intermittent or indirect effect.
    L4,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::L1, Level::L2, Level::L3, Level::L4];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::L1 => "L1",
            Level::L2 => "L2",
            Level::L3 => "L3",
            Level::L4 => "L4",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// `"L2"` (any case) -> `L2`.
    pub fn parse(s: &str) -> Option<Level> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// 1 for L1 .. 4 for L4, as the store keeps it.
    pub fn number(self) -> u8 {
        self as u8 + 1
    }

    /// The level stored as `n`; out-of-range numbers read as the nearest level.
    pub fn from_number(n: u8) -> Level {
        Level::ALL[usize::from(n.clamp(1, 4)) - 1]
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a clock stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaState {
    OnTime,
    /// The at-risk share of the allowed covered time is used (80 % by default); only a
    /// running clock can be at risk.
    AtRisk,
    /// Running past the deadline, or stopped after it.
    Breached,
}

/// One clock (respond or restore) evaluated at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockStatus {
    pub state: SlaState,
    /// When the allowed covered time is used up.
    pub due: UnixMillis,
    /// When the clock becomes at risk.
    pub at_risk_from: UnixMillis,
    /// Covered time used up to `now`, or up to the stop.
    pub used_ms: i64,
    /// Covered time left; negative once overdue in covered time. Real time to the deadline
    /// is `due - now`.
    pub left_ms: i64,
    /// The clock was stopped (at or before `now`); its state is final.
    pub stopped: bool,
}

/// The clock's target: this much covered time, at risk from this share of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub within_ms: i64,
    pub at_risk_percent: u8,
}

impl Calendar {
    /// A clock started at `start` with `target`, evaluated at `now`; it stopped at `stop` if
    /// that is given and not after `now` (a stop in the future has not happened yet).
    pub fn clock(
        &self,
        start: UnixMillis,
        target: Target,
        now: UnixMillis,
        stop: Option<UnixMillis>,
    ) -> ClockStatus {
        self.clock_outside(start, target, now, stop, &[])
    }

    /// As [`Calendar::clock`], stopped during `pauses` (sorted, merged).
    pub fn clock_outside(
        &self,
        start: UnixMillis,
        target: Target,
        now: UnixMillis,
        stop: Option<UnixMillis>,
        pauses: &[Pause],
    ) -> ClockStatus {
        let allowed = target.within_ms.max(0);
        let due = self.deadline_outside(start, allowed, pauses);
        // Rounded up so that "at risk" never comes before the share is really used.
        let share = (i128::from(allowed) * i128::from(target.at_risk_percent) + 99) / 100;
        let at_risk_from =
            self.deadline_outside(start, share.min(i128::from(allowed)) as i64, pauses);
        let stop = stop.filter(|&s| s <= now);
        let at = stop.unwrap_or(now);
        let used = self.covered_outside(start, at, pauses);
        let state = if at > due {
            SlaState::Breached
        } else if stop.is_none() && at >= at_risk_from {
            SlaState::AtRisk
        } else {
            SlaState::OnTime
        };
        ClockStatus {
            state,
            due,
            at_risk_from,
            used_ms: used,
            left_ms: allowed - used,
            stopped: stop.is_some(),
        }
    }
}

/// What a contract promises for one level.
#[derive(Debug, Clone)]
pub struct Terms {
    pub respond_within_ms: i64,
    pub restore_within_ms: i64,
    /// The name of the calendar, as written in `sla.toml` (`24x7` is built in).
    pub calendar_name: String,
    calendar: Arc<Calendar>,
}

impl Terms {
    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }
}

/// A named contract: terms per level.
#[derive(Debug, Clone)]
pub struct Contract {
    pub name: String,
    levels: [Terms; 4],
}

impl Contract {
    pub fn terms(&self, level: Level) -> &Terms {
        &self.levels[level.index()]
    }
}

/// The instants in a finding's life that drive its clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FindingTimes {
    pub raised_at: UnixMillis,
    pub acknowledged_at: Option<UnixMillis>,
    pub resolved_at: Option<UnixMillis>,
}

/// Both clocks of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingSla {
    pub respond: ClockStatus,
    pub restore: ClockStatus,
}

/// The SLA policy: contracts, which customer has which, and the at-risk share.
#[derive(Debug, Clone)]
pub struct SlaPolicy {
    contracts: BTreeMap<String, Contract>,
    customers: BTreeMap<String, String>,
    /// Contracts assigned over the API (the store's `customer_contracts`): they take
    /// precedence over `customers`.
    assigned: BTreeMap<String, String>,
    default_contract: String,
    at_risk_percent: u8,
}

impl SlaPolicy {
    /// The contract of `customer`: its assigned one, or the default contract.
    pub fn contract_for(&self, customer: &str) -> &Contract {
        let name = self
            .assigned
            .get(customer)
            .or_else(|| self.customers.get(customer))
            .unwrap_or(&self.default_contract);
        &self.contracts[name]
    }

    /// Where `customer`'s contract comes from: `api` (assigned over the API), `sla.toml`
    /// (its `[customers]`) or `default`.
    pub fn contract_source(&self, customer: &str) -> &'static str {
        if self.assigned.contains_key(customer) {
            "api"
        } else if self.customers.contains_key(customer) {
            "sla.toml"
        } else {
            "default"
        }
    }

    /// Apply the contracts assigned over the API (customer, contract name), replacing the
    /// ones applied before. Names this policy does not know are skipped and returned, so a
    /// contract removed from `sla.toml` falls back to the file's choice rather than failing.
    pub fn set_assigned(
        &mut self,
        assigned: impl IntoIterator<Item = (String, String)>,
    ) -> Vec<(String, String)> {
        let mut unknown = Vec::new();
        self.assigned.clear();
        for (customer, contract) in assigned {
            if self.contracts.contains_key(&contract) {
                self.assigned.insert(customer, contract);
            } else {
                unknown.push((customer, contract));
            }
        }
        unknown
    }

    pub fn contract(&self, name: &str) -> Option<&Contract> {
        self.contracts.get(name)
    }

    pub fn contracts(&self) -> impl Iterator<Item = &Contract> {
        self.contracts.values()
    }

    pub fn at_risk_percent(&self) -> u8 {
        self.at_risk_percent
    }

    /// Respond and restore clocks of a finding of `level` for `customer`, evaluated at `now`.
    /// Resolving also answers the respond clock when nobody acknowledged first.
    pub fn finding_sla(
        &self,
        customer: &str,
        level: Level,
        times: FindingTimes,
        now: UnixMillis,
    ) -> FindingSla {
        self.finding_sla_paused(customer, level, times, now, &[])
    }

    /// As [`SlaPolicy::finding_sla`], both clocks stopped during `pauses` (maintenance
    /// windows; sorted and merged, see [`merge_pauses`]).
    pub fn finding_sla_paused(
        &self,
        customer: &str,
        level: Level,
        times: FindingTimes,
        now: UnixMillis,
        pauses: &[Pause],
    ) -> FindingSla {
        let terms = self.contract_for(customer).terms(level);
        let target = |within_ms| Target {
            within_ms,
            at_risk_percent: self.at_risk_percent,
        };
        let responded = match (times.acknowledged_at, times.resolved_at) {
            (Some(a), Some(r)) => Some(a.min(r)),
            (a, r) => a.or(r),
        };
        FindingSla {
            respond: terms.calendar.clock_outside(
                times.raised_at,
                target(terms.respond_within_ms),
                now,
                responded,
                pauses,
            ),
            restore: terms.calendar.clock_outside(
                times.raised_at,
                target(terms.restore_within_ms),
                now,
                times.resolved_at,
                pauses,
            ),
        }
    }
}

#[cfg(test)]
mod tests;

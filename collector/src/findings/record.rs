//! Findings as the store keeps them, and the changes the lifecycle makes to them.

use super::lifecycle::{Event, State};
use crate::store::HostId;
use aftercare_shared::model::UnixMillis;

/// A finding is one per (host, rule, subject) at a time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FindingKey {
    pub host: HostId,
    pub rule: String,
    /// The mount, interface, device or log source; empty for the host as a whole.
    pub subject: String,
}

/// What the rules say about a finding when it fires: stored on open, refreshed on update.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub level: u8,
    pub category: String,
    pub title: String,
    pub recommendation: String,
    /// JSON: values, time range, matching log lines (as the agent sent them, redacted).
    pub evidence: String,
    pub at: UnixMillis,
}

/// SLA notifications already sent for a finding, so each goes out once.
pub mod sla_flag {
    pub const RESPOND_AT_RISK: u8 = 1;
    pub const RESPOND_BREACHED: u8 = 2;
    pub const RESTORE_AT_RISK: u8 = 4;
    pub const RESTORE_BREACHED: u8 = 8;
}

#[derive(Debug, Clone, PartialEq)]
pub struct FindingRow {
    pub id: i64,
    pub host_id: HostId,
    pub customer: String,
    pub host: String,
    pub rule: String,
    pub subject: String,
    pub level: u8,
    pub category: String,
    pub title: String,
    pub recommendation: String,
    pub state: State,
    pub opened_at: UnixMillis,
    pub last_seen: UnixMillis,
    /// When and by whom.
    pub acknowledged: Option<(UnixMillis, String)>,
    /// When, by whom (`None`: auto-resolved, the condition cleared), and the note.
    pub resolved: Option<(UnixMillis, Option<String>, Option<String>)>,
    /// SLA deadlines on the customer's contract calendar; `None`: no clock runs.
    pub respond_by: Option<UnixMillis>,
    pub restore_by: Option<UnixMillis>,
    /// When the SLA clocks started: `opened_at`, or the end of the maintenance window the
    /// finding opened in.
    pub sla_from: UnixMillis,
    /// [`sla_flag`] bits.
    pub sla_sent: u8,
    pub evidence: String,
}

impl FindingRow {
    pub fn key(&self) -> FindingKey {
        FindingKey {
            host: self.host_id,
            rule: self.rule.clone(),
            subject: self.subject.clone(),
        }
    }

    pub fn current(&self) -> super::lifecycle::Current {
        super::lifecycle::Current {
            id: self.id,
            state: self.state,
            level: self.level,
            resolved_at: self.resolved.as_ref().map(|r| r.0),
        }
    }
}

/// One change, applied in one transaction with its timeline entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Open {
        key: FindingKey,
        observed: Observed,
        clocks: Clocks,
    },
    Reopen {
        id: i64,
        observed: Observed,
        clocks: Clocks,
    },
    /// Still firing: last seen, level and evidence refreshed.
    Update {
        id: i64,
        observed: Observed,
        level_changed: bool,
    },
    AutoResolve {
        id: i64,
        at: UnixMillis,
    },
    /// An engineer's acknowledgement or resolution (from `lifecycle`).
    Act {
        id: i64,
        event: Event,
    },
    /// An SLA notification sent: its flag set and the timeline told.
    Escalate {
        id: i64,
        flag: u8,
        event: Event,
    },
}

/// When a finding's SLA clocks start and when they are due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clocks {
    pub from: UnixMillis,
    pub respond_by: Option<UnixMillis>,
    pub restore_by: Option<UnixMillis>,
}

/// A maintenance window: findings of the customer's hosts (or of one host) still record,
/// but notify nobody, and their SLA clocks start only when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    pub id: i64,
    pub customer: String,
    /// `None`: every host of the customer.
    pub host: Option<String>,
    pub starts: UnixMillis,
    pub ends: UnixMillis,
    pub reason: String,
    pub created_by: String,
    pub created_at: UnixMillis,
}

impl Silence {
    /// Does it cover `customer/host` at `at`?
    pub fn covers(&self, customer: &str, host: &str, at: UnixMillis) -> bool {
        self.customer == customer
            && self.host.as_deref().is_none_or(|h| h == host)
            && self.starts <= at
            && at < self.ends
    }
}

/// The maintenance windows of `customer/host`, as spans during which its clocks stop.
pub fn pauses_for(silences: &[Silence], customer: &str, host: &str) -> Vec<crate::sla::Pause> {
    crate::sla::merge_pauses(
        silences
            .iter()
            .filter(|s| s.customer == customer && s.host.as_deref().is_none_or(|h| h == host))
            .map(|s| (s.starts, s.ends))
            .collect(),
    )
}

/// When the SLA clocks of a finding of `customer/host` raised at `at` start: at `at`, or
/// when the windows covering it (one after another) end.
pub fn clock_start(silences: &[Silence], customer: &str, host: &str, at: UnixMillis) -> UnixMillis {
    let mut t = at;
    // Windows may overlap or follow each other: keep moving while one covers `t`.
    while let Some(s) = silences.iter().find(|s| s.covers(customer, host, t)) {
        t = s.ends;
    }
    t
}

/// Which findings to list.
#[derive(Debug, Clone, Default)]
pub struct FindingFilter {
    /// Open and acknowledged only.
    pub open_only: bool,
    pub customer: Option<String>,
    /// `customer/host` or a unique host name.
    pub host: Option<String>,
    /// Opened or last seen at or after this.
    pub since: UnixMillis,
}

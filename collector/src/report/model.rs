//! What an inspection report says: the data every format is rendered from. JSON is this,
//! serialized; HTML and Markdown only lay it out (and format units), they compute nothing.
//!
//! Times are RFC 3339 strings (UTC), durations milliseconds, sizes bytes, shares percent
//! (0..100). Lists are in the order they are shown.

use serde::{Deserialize, Serialize};

/// Bumped when a field changes meaning; readers of stored reports check it.
pub const REPORT_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub format: u32,
    pub meta: Meta,
    /// 1. Purpose and focus.
    pub purpose: Purpose,
    /// 2. Impact of the inspection on the running systems.
    pub impact: Impact,
    /// 3. Inspection content.
    pub inspection: Inspection,
    /// 4. Security hazards.
    pub security: Security,
    /// 5. Conclusion.
    pub conclusion: Conclusion,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub customer: String,
    /// Start of the period, inclusive.
    pub from: String,
    /// End of the period, exclusive.
    pub to: String,
    /// `2026-Q3` for a calendar quarter in the customer's zone, else `from..to` dates.
    pub period_label: String,
    /// IANA zone the period's days and the report's times are read in.
    pub time_zone: String,
    /// `en` or `zh-CN`.
    pub lang: String,
    pub contract: String,
    pub generated_at: String,
    /// `aftercare-collector <version>`.
    pub generator: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Purpose {
    pub hosts: Vec<HostInfo>,
    /// What was inspected, as stable keys the templates translate:
    /// `availability`, `cpu`, `memory`, `filesystems`, `network`, `logs`, `findings`, `sla`,
    /// `security`.
    pub inspected: Vec<String>,
    /// Per host, the consent in force at the end of the period and its changes within it.
    pub consent: Vec<HostConsent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// `host` (the customer is the report's).
    pub host: String,
    pub os: String,
    pub kernel: String,
    pub agent_version: String,
    pub first_seen: String,
    pub last_seen: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostConsent {
    pub host: String,
    /// `metrics`, `logs`, `diagnostics`.
    pub scopes_in_force: Vec<String>,
    /// The earliest `until` among the scopes in force, if any.
    pub expires_at: Option<String>,
    pub changes: Vec<ConsentChange>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentChange {
    pub at: String,
    pub scope: String,
    /// `granted`, `expired` or `revoked`.
    pub change: String,
    pub by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Impact {
    pub hosts: Vec<AgentFootprint>,
}

/// The agent's own measured cost on one host over the period (its `agent.*` metrics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentFootprint {
    pub host: String,
    /// Share of one CPU core, mean and 95th percentile of 5-minute means.
    pub cpu_percent_mean: Option<f64>,
    pub cpu_percent_p95: Option<f64>,
    /// Resident memory, mean and maximum.
    pub memory_bytes_mean: Option<f64>,
    pub memory_bytes_max: Option<f64>,
    /// Bytes the agent sent, per day online, on average.
    pub bytes_sent_per_day: Option<f64>,
    /// Remote diagnostics run on the host in the period.
    pub diagnostics_run: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inspection {
    pub hosts: Vec<HostInspection>,
    pub findings: FindingsSummary,
    pub sla: SlaOutcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInspection {
    pub host: String,
    pub availability: Availability,
    /// CPU, memory, each filesystem, network: in that order.
    pub trends: Vec<Trend>,
    pub forecasts: Vec<Forecast>,
    pub log_errors: Vec<LogErrorCount>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Availability {
    /// The part of the period the host was expected to report (from its first sighting).
    pub expected_ms: i64,
    /// The part in which it did (5-minute buckets with data).
    pub online_ms: i64,
    /// `online_ms / expected_ms`, percent; `None` when nothing was expected.
    pub percent: Option<f64>,
    /// Gaps of at least 15 minutes, oldest first.
    pub outages: Vec<Outage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outage {
    pub from: String,
    pub to: String,
    pub duration_ms: i64,
}

/// One resource over the period: percentiles of its 5-minute means (or hourly ones where
/// only those are kept), and points to draw, at most a few hundred.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    /// `cpu`, `memory`, `filesystem`, `network_rx`, `network_tx`.
    pub resource: String,
    /// The mount for a filesystem, the interface for the network; else empty.
    pub subject: String,
    /// `percent` or `bytes/s`.
    pub unit: String,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub max: Option<f64>,
    /// `[unix_ms, value]`, oldest first; a gap is a missing point.
    pub points: Vec<(i64, f64)>,
}

/// When a filesystem fills at its trend over the period (least squares on daily means).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    pub host: String,
    pub mount: String,
    pub used_percent: f64,
    /// Percent a day; negative: shrinking.
    pub growth_percent_per_day: f64,
    /// `None` when not growing.
    pub full_at: Option<String>,
    pub days_left: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogErrorCount {
    pub source: String,
    /// `emerg`, `alert`, `crit`, `error` or `warning` (`Severity::as_str`).
    pub severity: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingsSummary {
    /// Findings open at any time in the period, by level `L1`..`L4` (all four present).
    pub by_level: Vec<(String, u64)>,
    /// By category, most first.
    pub by_category: Vec<(String, u64)>,
    /// Each of them, by level then opening time.
    pub items: Vec<FindingItem>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingItem {
    pub id: i64,
    pub host: String,
    pub level: String,
    pub category: String,
    pub rule: String,
    pub title: String,
    pub recommendation: String,
    pub opened_at: String,
    pub resolved_at: Option<String>,
    /// `open`, `acknowledged`, `resolved` at the end of the period.
    pub state: String,
    /// The respond and restore outcome: `met`, `breached`, `running`.
    pub respond: String,
    pub restore: String,
    pub timeline: Vec<TimelineEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEvent {
    pub at: String,
    /// As the store keeps it (`findings::lifecycle::EventKind::as_str`): `opened`,
    /// `reopened`, `level changed`, `acknowledged`, `resolved`, `auto-resolved`,
    /// `SLA at risk`, `SLA breached`.
    pub kind: String,
    pub by: Option<String>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlaOutcome {
    /// Clocks (respond and restore counted apart) that stopped in time, that ran past
    /// their deadline, and that still run at the period's end within it.
    pub met: u64,
    pub breached: u64,
    pub running: u64,
    /// `met / (met + breached)`, percent; `None` with nothing decided.
    pub met_percent: Option<f64>,
    /// The breaches, each with its deadline and how late.
    pub breaches: Vec<Breach>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breach {
    pub finding: i64,
    pub host: String,
    pub level: String,
    /// `respond` or `restore`.
    pub clock: String,
    pub due: String,
    /// When it stopped, or `None` if it still runs.
    pub stopped_at: Option<String>,
    pub late_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Security {
    /// Findings of category `security` in the period.
    pub findings: Vec<FindingItem>,
    /// Authentication failures per host and day where they burst (the auth rule's input).
    pub auth_failures: Vec<AuthFailures>,
    /// Consent grants ending within 30 days of the period's end.
    pub consent_expiring: Vec<Expiring>,
    /// Hosts whose agent is older than the collector's, or whose kernel is past its
    /// support.
    pub outdated: Vec<Outdated>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthFailures {
    pub host: String,
    pub count: u64,
    /// The busiest day.
    pub peak_day: String,
    pub peak_count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expiring {
    pub host: String,
    /// `consent:<scope>` or `certificate`.
    pub what: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outdated {
    pub host: String,
    /// `agent` or `kernel`.
    pub what: String,
    pub running: String,
    pub current: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conclusion {
    /// `A` (good) .. `D` (act now), by the rules in `rules` below.
    pub grade: String,
    pub hosts: Vec<HostGrade>,
    /// The grading rules as stated in the report, as keys the templates translate.
    pub rules: Vec<String>,
    pub recommendations: Vec<Recommendation>,
    /// Against the previous period's report for the same customer, where one is stored.
    pub previous: Option<Comparison>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostGrade {
    pub host: String,
    pub grade: String,
    /// Why, as `key=value` with the keys of `compute::GRADE_RULES`: `open_l1=1`,
    /// `sla_breach=2`, `availability_below_99.9=99.52`, `fs_full_within_30d=/var /data`, ...
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// 1 first.
    pub priority: u32,
    pub host: String,
    /// What it is about, a key the templates translate: `finding` (the text is the
    /// finding's recommendation), `sla_breach`, `fs_full`, `availability`, `outdated_agent`,
    /// `outdated_kernel`, `consent_expiring`, `certificate_expiring` (the text is English).
    pub kind: String,
    pub text: String,
    /// What shows it: a finding id, a forecast, a breach.
    pub evidence: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub period_label: String,
    pub grade: String,
    pub findings: u64,
    pub availability_percent: Option<f64>,
    pub sla_met_percent: Option<f64>,
}

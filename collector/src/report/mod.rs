//! Inspection reports: per customer and period, the five sections the support contracts
//! name, gathered from what the store already holds (rollups, not raw points), kept as data
//! (`model`) and rendered to HTML, Markdown or JSON.
//!
//! [`generate`] is the thin gather layer: it reads the store (per host: rollups of the
//! series the report shows, log counts, authentication failures, diagnostics; the
//! customer's findings with their timelines) into `compute::Inputs`, and `compute` turns
//! those into the numbers, without a database.

pub mod compute;
pub mod job;
pub mod model;
pub mod period;
pub mod record;
pub mod render;
pub mod schedule;

use crate::findings::record::FindingFilter;
use crate::rules::{Check, RuleSet};
use crate::sla::SlaPolicy;
use crate::store::{
    COMPACT_GRACE_MS, LogFilter, Resolution, SeriesRollups, Store, StoreError, compaction_cutoff,
};
use aftercare_shared::model::{Severity, UnixMillis};
use aftercare_shared::time_fmt::rfc3339;
use compute::{HostInput, Inputs};
use model::{Meta, REPORT_FORMAT, Report};
use std::collections::BTreeMap;

/// What to report on.
#[derive(Debug, Clone)]
pub struct Request {
    pub customer: String,
    /// Start of the period, inclusive.
    pub from: UnixMillis,
    /// End of the period, exclusive.
    pub to: UnixMillis,
    pub period_label: String,
    /// IANA name; the period's days are this zone's.
    pub time_zone: String,
    /// `en` or `zh-CN`.
    pub lang: String,
    /// The previous period's report, to compare with.
    pub previous: Option<Report>,
}

pub const LANGS: [&str; 2] = ["en", "zh-CN"];

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "time_zone '{zone}' is not a known IANA time zone ({reason}): use a name such as Asia/Shanghai or UTC"
    )]
    TimeZone { zone: String, reason: String },
    #[error("lang '{lang}' is not supported: use en or zh-CN")]
    Lang { lang: String },
    #[error("customer '{0}' has no hosts: `aftercare-collector hosts` lists the customers")]
    UnknownCustomer(String),
    #[error("the period is empty: from ({from}) must be before to ({to})")]
    EmptyPeriod { from: String, to: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The series the report reads; everything else in a host's rollups is dropped on reading.
fn wanted(name: &str, labels: &str) -> bool {
    matches!(
        name,
        "mem.used"
            | "mem.total"
            | "fs.bytes.used"
            | "fs.bytes.total"
            | "net.rx.bytes"
            | "net.tx.bytes"
            | "agent.cpu"
            | "agent.memory.rss"
            | "agent.sent.bytes"
    ) || (name == "cpu.usage" && labels.is_empty())
}

/// Starts of the local days of `tz` from the one holding `from` to the first at or after
/// `to`, with their dates.
fn local_days(
    tz: &jiff::tz::TimeZone,
    from: UnixMillis,
    to: UnixMillis,
) -> (Vec<UnixMillis>, Vec<String>) {
    let at = |ms: UnixMillis| {
        jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    };
    let mut day = tz.to_datetime(at(from)).date();
    let (mut starts, mut names) = (Vec::new(), Vec::new());
    loop {
        let Ok(z) = day.to_zoned_datetime(tz.clone()) else {
            break;
        };
        let t = z.timestamp().as_millisecond();
        starts.push(t);
        names.push(day.to_string());
        if t >= to {
            break;
        }
        let Ok(next) = day.tomorrow() else { break };
        day = next;
    }
    (starts, names)
}

/// The report of `req.customer` over `[req.from, req.to)` at `now`. `progress` hears
/// 0..=100 as hosts are done.
pub fn generate<S: Store + ?Sized>(
    st: &mut S,
    policy: &SlaPolicy,
    req: &Request,
    now: UnixMillis,
    progress: &mut dyn FnMut(u8),
) -> Result<Report, ReportError> {
    if !LANGS.contains(&req.lang.as_str()) {
        return Err(ReportError::Lang {
            lang: req.lang.clone(),
        });
    }
    let tz = jiff::tz::TimeZone::get(&req.time_zone).map_err(|e| ReportError::TimeZone {
        zone: req.time_zone.clone(),
        reason: e.to_string(),
    })?;
    if req.from >= req.to {
        return Err(ReportError::EmptyPeriod {
            from: rfc3339(req.from),
            to: rfc3339(req.to),
        });
    }
    let mut statuses: Vec<_> = st
        .hosts(now)?
        .into_iter()
        .filter(|h| h.customer == req.customer)
        .collect();
    if statuses.is_empty() {
        return Err(ReportError::UnknownCustomer(req.customer.clone()));
    }
    statuses.sort_by(|a, b| a.host.cmp(&b.host));
    progress(0);
    let (from, to) = (req.from, req.to);
    let metrics_to = to.min(compaction_cutoff(now, COMPACT_GRACE_MS)).max(from);
    let judged_at = to.min(now);

    // Open at any time in the period: touched since its start (or still open, however
    // quiet), and opened before its end.
    let mut found = BTreeMap::new();
    for open_only in [false, true] {
        let filter = FindingFilter {
            open_only,
            customer: Some(req.customer.clone()),
            host: None,
            since: if open_only { i64::MIN } else { from },
        };
        for f in st.findings(&filter)? {
            if f.opened_at < to && f.resolved.as_ref().is_none_or(|r| r.0 >= from) {
                found.insert(f.id, ());
            }
        }
    }
    let mut findings = Vec::with_capacity(found.len());
    for id in found.into_keys() {
        if let Some(f) = st.finding(id)? {
            findings.push(f);
        }
    }
    let silences = st.silences(i64::MIN)?;

    // Authentication failures are the lines the built-in auth rule's pattern matches
    // (every such line, not only the bursts that raise a finding).
    let rules = RuleSet::builtin();
    let auth_pattern = rules
        .rules()
        .iter()
        .filter(|r| r.category.as_str() == "security")
        .find_map(|r| match &r.check {
            Check::LogPattern(p) if r.name == "auth-failures" => p.pattern.clone(),
            _ => None,
        });

    let n = statuses.len();
    let mut hosts = Vec::with_capacity(n);
    for (i, status) in statuses.into_iter().enumerate() {
        let name = status.full_name();
        let mut series: Vec<SeriesRollups> =
            st.rollups_where(&name, &wanted, Resolution::FiveMinutes, from, metrics_to)?;
        // Retention folds old 5-minute rollups into hourly ones, oldest first: hours before
        // the first 5-minute bucket are read from the hourly tier.
        let fine_from = series
            .iter()
            .filter_map(|s| s.buckets.first().map(|b| b.start))
            .min()
            .map_or(metrics_to, crate::store::hour_start);
        if fine_from > from {
            let coarse = st.rollups_where(&name, &wanted, Resolution::Hour, from, fine_from)?;
            for c in coarse {
                match series
                    .iter_mut()
                    .find(|s| s.name == c.name && s.labels == c.labels)
                {
                    Some(s) => {
                        let mut b = c.buckets;
                        b.append(&mut s.buckets);
                        s.buckets = b;
                    }
                    None => series.push(c),
                }
            }
        }
        let window = |min_severity, grep| LogFilter {
            since: from,
            until: to,
            min_severity,
            grep,
            limit: 0,
        };
        let log_counts = st.count_logs_by_source(&name, &window(Some(Severity::Warning), None))?;
        let auth_failures = match &auth_pattern {
            Some(re) => st.log_times(&name, &window(None, Some(re.clone())))?,
            None => Vec::new(),
        };
        let diagnostics_run = st.count_diagnostics_run(status.id, from, to)?;
        hosts.push(HostInput {
            status,
            series,
            fine_from,
            log_counts,
            auth_failures,
            diagnostics_run,
        });
        progress(((i + 1) * 100 / n) as u8);
    }

    let (days, day_labels) = local_days(&tz, from, to);
    let inputs = Inputs {
        customer: req.customer.clone(),
        from,
        to,
        metrics_to,
        judged_at,
        days,
        day_labels,
        hosts,
        findings,
        silences,
        collector_version: aftercare_shared::VERSION.to_string(),
    };
    let (purpose, impact, inspection, security, conclusion) =
        compute::sections(&inputs, policy, req.previous.as_ref());
    Ok(Report {
        format: REPORT_FORMAT,
        meta: Meta {
            customer: req.customer.clone(),
            from: rfc3339(from),
            to: rfc3339(to),
            period_label: req.period_label.clone(),
            time_zone: req.time_zone.clone(),
            lang: req.lang.clone(),
            contract: policy.contract_for(&req.customer).name.clone(),
            generated_at: rfc3339(now),
            generator: format!("aftercare-collector {}", env!("CARGO_PKG_VERSION")),
        },
        purpose,
        impact,
        inspection,
        security,
        conclusion,
    })
}

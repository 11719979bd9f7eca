//! The report's numbers from plain inputs (what `gather` read from the store): no database,
//! no clock. Every section is a function of [`Inputs`], so tests can state the inputs and
//! check the figures.
//!
//! Series arrive as rollup buckets: 5-minute ones from a host's `fine_from` on, hourly ones
//! before it (where retention has folded the 5-minute tier). A value carries its bucket's
//! width, so percentiles and means weigh an hourly mean twelve times a 5-minute one.

use super::model::*;
use crate::findings::lifecycle::Event;
use crate::findings::record::{FindingRow, Silence};
use crate::findings::view::sla_of;
use crate::rules::fit;
use crate::rules::labels;
use crate::sla::{ClockStatus, SlaPolicy, SlaState};
use crate::store::{Bucket, HOUR_MS, HostStatus, LogCount, ROLLUP_STEP_MS, SeriesRollups};
use aftercare_shared::consent::Scope;
use aftercare_shared::model::UnixMillis;
use aftercare_shared::time_fmt::rfc3339;
use std::collections::BTreeMap;

pub const DAY_MS: i64 = 24 * HOUR_MS;
/// A gap in a host's data at least this long is an outage.
pub const OUTAGE_MIN_MS: i64 = 15 * 60_000;
/// A trend is drawn with at most about this many points.
pub const MAX_POINTS: usize = 200;
/// Consent and forecasts this close to the period's end are called out.
pub const SOON_MS: i64 = 30 * DAY_MS;

/// Supported kernel lines (major.minor) and the end of their maintenance, as of 2026-11-30:
/// the kernel.org longterm lines (kernel.org/category/releases.html) and the kernels of the
/// enterprise distributions our customers run (Red Hat's end of maintenance support, not
/// the paid extended phases). A line missing here is not judged unless it is older than
/// every line listed. Review this table each quarter.
pub const KERNEL_LINES: &[(u32, u32, &str)] = &[
    (3, 10, "2024-06-30"), // RHEL 7 (maintenance support 2 ended)
    (4, 18, "2029-05-31"), // RHEL 8
    (4, 19, "2024-12-31"), // kernel.org longterm (also openEuler 20.03, Kylin V10)
    (5, 4, "2025-12-31"),  // kernel.org longterm
    (5, 10, "2026-12-31"), // kernel.org longterm
    (5, 14, "2032-05-31"), // RHEL 9
    (5, 15, "2026-12-31"), // kernel.org longterm (Ubuntu 22.04)
    (6, 1, "2027-12-31"),  // kernel.org longterm
    (6, 6, "2026-12-31"),  // kernel.org longterm
    (6, 12, "2026-12-31"), // kernel.org longterm
];

/// The grading rules, as the report states them (`grade:key`); a host's reasons use the
/// same keys with the value that triggered them. The customer gets its worst host's grade.
pub const GRADE_RULES: &[&str] = &[
    "D:open_l1",
    "D:availability_below_95",
    "C:sla_breach",
    "C:open_l2",
    "C:fs_full_within_30d",
    "B:finding_in_period",
    "B:availability_below_99.9",
    "A:none_of_the_above",
    "customer:worst_host",
];

/// One host's data for the period.
#[derive(Debug, Clone)]
pub struct HostInput {
    pub status: HostStatus,
    /// Rollups of the series the report reads: 5-minute buckets from `fine_from` on,
    /// hourly ones before it.
    pub series: Vec<SeriesRollups>,
    pub fine_from: UnixMillis,
    /// Warnings and worse in the period, by source and severity.
    pub log_counts: Vec<LogCount>,
    /// Times of log lines the auth-failure rule's pattern matches, in the period.
    pub auth_failures: Vec<UnixMillis>,
    pub diagnostics_run: u64,
}

/// Everything the report is computed from.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub customer: String,
    pub from: UnixMillis,
    pub to: UnixMillis,
    /// Where metrics end: `to`, or the last compacted hour if that is earlier (the open
    /// hour has no rollups yet and must not count as an outage).
    pub metrics_to: UnixMillis,
    /// Where findings and SLA clocks are judged: `to`, or now if the period has not ended.
    pub judged_at: UnixMillis,
    /// Starts of the customer's local days from the one holding `from` to past `to`.
    pub days: Vec<UnixMillis>,
    /// The same days as `YYYY-MM-DD`.
    pub day_labels: Vec<String>,
    pub hosts: Vec<HostInput>,
    /// Findings open at any time in the period, with their timelines.
    pub findings: Vec<(FindingRow, Vec<Event>)>,
    pub silences: Vec<Silence>,
    pub collector_version: String,
}

/// A value of a bucket: its start, width and mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Value {
    pub start: UnixMillis,
    pub width: i64,
    pub v: f64,
}

fn width_of(start: UnixMillis, fine_from: UnixMillis) -> i64 {
    if start < fine_from {
        HOUR_MS
    } else {
        ROLLUP_STEP_MS
    }
}

/// The bucket means of a series with their widths, applying `f` to each bucket.
pub fn values(
    s: &SeriesRollups,
    fine_from: UnixMillis,
    mut f: impl FnMut(&Bucket) -> f64,
) -> Vec<Value> {
    s.buckets
        .iter()
        .filter(|b| b.count > 0)
        .map(|b| Value {
            start: b.start,
            width: width_of(b.start, fine_from),
            v: f(b),
        })
        .filter(|v| v.v.is_finite())
        .collect()
}

/// `100 × num / den` bucket by bucket (both series are sampled together, so their buckets
/// line up); buckets where `den` is missing or zero are left out.
pub fn ratio_percent(
    num: &SeriesRollups,
    den: &SeriesRollups,
    fine_from: UnixMillis,
) -> Vec<Value> {
    // Both are sorted by start: walk them together.
    let mut d = den.buckets.iter().filter(|b| b.count > 0).peekable();
    values(num, fine_from, |b| {
        while d.next_if(|x| x.start < b.start).is_some() {}
        match d.peek() {
            Some(x) if x.start == b.start && x.mean() > 0.0 => 100.0 * b.mean() / x.mean(),
            _ => f64::NAN,
        }
    })
}

/// The value below which `p` (0..1) of the time lies (nearest rank, weighted by width).
pub fn percentile(vals: &[Value], p: f64) -> Option<f64> {
    let mut sorted: Vec<(f64, i64)> = vals.iter().map(|v| (v.v, v.width)).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: i64 = sorted.iter().map(|v| v.1).sum();
    if total == 0 {
        return None;
    }
    let want = p * total as f64;
    let mut cum = 0i64;
    for (v, w) in &sorted {
        cum += w;
        if cum as f64 >= want {
            return Some(*v);
        }
    }
    sorted.last().map(|v| v.0)
}

/// Mean over time (weighted by width).
pub fn mean(vals: &[Value]) -> Option<f64> {
    let total: i64 = vals.iter().map(|v| v.width).sum();
    (total > 0).then(|| vals.iter().map(|v| v.v * v.width as f64).sum::<f64>() / total as f64)
}

fn max_of(vals: &[Value]) -> Option<f64> {
    vals.iter().map(|v| v.v).reduce(f64::max)
}

/// Per span between consecutive `edges` (sorted) holding values: its index, the
/// time-weighted mean, and the weighted mean time of its values (their buckets' middles).
fn spans(vals: &[Value], edges: &[UnixMillis]) -> Vec<(usize, f64, UnixMillis)> {
    let mut acc = vec![(0.0f64, 0.0f64, 0i64); edges.len()];
    for v in vals {
        let i = edges.partition_point(|&e| e <= v.start);
        if i == 0 || i >= edges.len() {
            continue;
        }
        let a = &mut acc[i - 1];
        a.0 += v.v * v.width as f64;
        a.1 += (v.start + v.width / 2) as f64 * v.width as f64;
        a.2 += v.width;
    }
    acc.into_iter()
        .enumerate()
        .filter(|(_, a)| a.2 > 0)
        .map(|(i, (sum, t, w))| (i, sum / w as f64, (t / w as f64).round() as UnixMillis))
        .collect()
}

/// Time-weighted means of `vals` in the spans between consecutive `edges`, each stamped
/// with its span's start; spans without values are left out (a gap in the chart).
pub fn span_means(vals: &[Value], edges: &[UnixMillis]) -> Vec<(UnixMillis, f64)> {
    spans(vals, edges)
        .into_iter()
        .map(|(i, m, _)| (edges[i], m))
        .collect()
}

/// As [`span_means`], each mean stamped with the mean time of its values: what a line is
/// fitted through, so that a day with an outage or a partial first day does not bend it.
pub fn span_means_at_mean_time(vals: &[Value], edges: &[UnixMillis]) -> Vec<(UnixMillis, f64)> {
    spans(vals, edges)
        .into_iter()
        .map(|(_, m, t)| (t, m))
        .collect()
}

/// Chart edges for `[from, to)`: hours if that gives at most [`MAX_POINTS`], else the
/// customer's days.
pub fn chart_edges(from: UnixMillis, to: UnixMillis, days: &[UnixMillis]) -> Vec<UnixMillis> {
    let first = from.div_euclid(HOUR_MS) * HOUR_MS;
    if (to - first) / HOUR_MS <= MAX_POINTS as i64 {
        (0..)
            .map(|i| first + i * HOUR_MS)
            .take_while(|&t| t <= to + HOUR_MS)
            .collect()
    } else {
        days.to_vec()
    }
}

fn trend(resource: &str, subject: &str, unit: &str, vals: &[Value], edges: &[i64]) -> Trend {
    Trend {
        resource: resource.into(),
        subject: subject.into(),
        unit: unit.into(),
        p50: percentile(vals, 0.5),
        p95: percentile(vals, 0.95),
        max: max_of(vals),
        points: span_means(vals, edges),
    }
}

fn find<'a>(series: &'a [SeriesRollups], name: &str, labels: &str) -> Option<&'a SeriesRollups> {
    series.iter().find(|s| s.name == name && s.labels == labels)
}

fn label(all: &str, key: &str) -> String {
    labels::value(&labels::pairs(all), key).to_string()
}

/// Used percent per filesystem, by mount.
pub fn filesystems(h: &HostInput) -> BTreeMap<String, Vec<Value>> {
    h.series
        .iter()
        .filter(|s| s.name == "fs.bytes.used")
        .filter_map(|used| {
            let total = find(&h.series, "fs.bytes.total", &used.labels)?;
            Some((
                label(&used.labels, "mount"),
                ratio_percent(used, total, h.fine_from),
            ))
        })
        .collect()
}

/// CPU, memory, each filesystem, then each interface's receive and send rates.
pub fn trends(h: &HostInput, edges: &[UnixMillis]) -> Vec<Trend> {
    let mut out = Vec::new();
    if let Some(cpu) = find(&h.series, "cpu.usage", "") {
        let v = values(cpu, h.fine_from, Bucket::mean);
        out.push(trend("cpu", "", "percent", &v, edges));
    }
    if let (Some(used), Some(total)) = (
        find(&h.series, "mem.used", ""),
        find(&h.series, "mem.total", ""),
    ) {
        let v = ratio_percent(used, total, h.fine_from);
        out.push(trend("memory", "", "percent", &v, edges));
    }
    for (mount, v) in filesystems(h) {
        out.push(trend("filesystem", &mount, "percent", &v, edges));
    }
    let mut ifaces: BTreeMap<String, [Option<&SeriesRollups>; 2]> = BTreeMap::new();
    for s in &h.series {
        let dir = match s.name.as_str() {
            "net.rx.bytes" => 0,
            "net.tx.bytes" => 1,
            _ => continue,
        };
        let iface = label(&s.labels, "interface");
        // The loopback's traffic never leaves the host.
        if iface != "lo" {
            ifaces.entry(iface).or_default()[dir] = Some(s);
        }
    }
    for (iface, dirs) in ifaces {
        for (s, resource) in dirs.iter().zip(["network_rx", "network_tx"]) {
            if let Some(s) = s {
                // Counter rollups hold per-second rates already.
                let v = values(s, h.fine_from, Bucket::mean);
                out.push(trend(resource, &iface, "bytes/s", &v, edges));
            }
        }
    }
    out
}

/// When each filesystem fills, by least squares over its daily means.
pub fn forecasts(h: &HostInput, days: &[UnixMillis], end: UnixMillis) -> Vec<Forecast> {
    let mut out = Vec::new();
    for (mount, v) in filesystems(h) {
        let daily = span_means_at_mean_time(&v, days);
        let Some(&(_, last)) = daily.last() else {
            continue;
        };
        let Some(f) = fit(&daily) else { continue };
        let growth = f.slope * (DAY_MS / 1000) as f64;
        let full_at = (f.slope > 0.0).then(|| f.reaches(100.0)).flatten();
        out.push(Forecast {
            host: h.status.host.clone(),
            mount,
            used_percent: last,
            growth_percent_per_day: growth,
            full_at: full_at.map(rfc3339),
            days_left: full_at.map(|t| ((t - end) as f64 / DAY_MS as f64).max(0.0)),
        });
    }
    out
}

/// Online vs. expected from `max(from, first_seen)` to `end`: a 5-minute bucket with data
/// in any series the report reads is online (CPU, memory and the agent's own series come
/// with every tick; a bucket stands for the agent's interval where that is longer).
/// Where only hourly rollups are kept, an hour's share online is estimated from its sample
/// count and the interval, and only whole silent hours can be outages.
pub fn availability(h: &HostInput, from: UnixMillis, end: UnixMillis) -> Availability {
    let start = from.max(h.status.first_seen);
    let start = start - start.rem_euclid(ROLLUP_STEP_MS);
    if end <= start {
        return Availability {
            expected_ms: 0,
            online_ms: 0,
            percent: None,
            outages: Vec::new(),
        };
    }
    let interval = (h.status.interval_ms as i64).max(1);
    let fine_width =
        ROLLUP_STEP_MS.max((interval + ROLLUP_STEP_MS - 1) / ROLLUP_STEP_MS * ROLLUP_STEP_MS);
    // A flag per 5-minute bucket of the period: a quarter is 26,496 of them.
    let mut fine = vec![false; ((end - start + ROLLUP_STEP_MS - 1) / ROLLUP_STEP_MS) as usize];
    let mut hours: BTreeMap<UnixMillis, u64> = BTreeMap::new();
    for s in &h.series {
        for b in s.buckets.iter().filter(|b| b.count > 0) {
            if b.start < h.fine_from {
                let c = hours.entry(b.start).or_default();
                *c = (*c).max(b.count);
            } else if b.start >= start && b.start < end {
                fine[((b.start - start) / ROLLUP_STEP_MS) as usize] = true;
            }
        }
    }
    let mut online = 0i64;
    let mut hour_spans = Vec::new();
    for (&hour, &count) in &hours {
        let (a, b) = (hour.max(start), (hour + HOUR_MS).min(end));
        if a < b {
            online += (count as i64 * interval).min(b - a);
            hour_spans.push((a, b));
        }
    }
    let fine_spans = merge(
        (0..fine.len())
            .filter(|&i| fine[i])
            .map(|i| start + i as i64 * ROLLUP_STEP_MS)
            .map(|t| (t, (t + fine_width).min(end)))
            .collect(),
    );
    online += fine_spans.iter().map(|s| s.1 - s.0).sum::<i64>();
    hour_spans.extend(fine_spans);
    let merged = merge(hour_spans);
    let mut outages = Vec::new();
    let mut at = start;
    for &(a, b) in merged.iter().chain(std::iter::once(&(end, end))) {
        if a - at >= OUTAGE_MIN_MS {
            outages.push(Outage {
                from: rfc3339(at),
                to: rfc3339(a),
                duration_ms: a - at,
            });
        }
        at = at.max(b);
    }
    let expected = end - start;
    let online = online.min(expected);
    Availability {
        expected_ms: expected,
        online_ms: online,
        percent: Some(100.0 * online as f64 / expected as f64),
        outages,
    }
}

/// Overlapping or touching spans joined, sorted.
fn merge(mut spans: Vec<(UnixMillis, UnixMillis)>) -> Vec<(UnixMillis, UnixMillis)> {
    spans.sort_unstable();
    let mut merged: Vec<(UnixMillis, UnixMillis)> = Vec::new();
    for (a, b) in spans {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
}

/// The agent's own cost from its `agent.*` series.
pub fn footprint(h: &HostInput) -> AgentFootprint {
    let get = |name: &str| find(&h.series, name, "");
    // `agent.cpu` is a counter of seconds: its rate is the share of one core.
    let cpu = get("agent.cpu")
        .map(|s| values(s, h.fine_from, |b| 100.0 * b.mean()))
        .unwrap_or_default();
    let rss = get("agent.memory.rss");
    let rss_mean = rss.map(|s| values(s, h.fine_from, Bucket::mean));
    let sent = get("agent.sent.bytes").map(|s| values(s, h.fine_from, Bucket::mean));
    AgentFootprint {
        host: h.status.host.clone(),
        cpu_percent_mean: mean(&cpu),
        cpu_percent_p95: percentile(&cpu, 0.95),
        memory_bytes_mean: rss_mean.as_deref().and_then(mean),
        memory_bytes_max: rss.and_then(|s| {
            s.buckets
                .iter()
                .filter(|b| b.count > 0)
                .map(|b| b.max)
                .reduce(f64::max)
        }),
        bytes_sent_per_day: sent
            .as_deref()
            .and_then(mean)
            .map(|rate| rate * (DAY_MS / 1000) as f64),
        diagnostics_run: h.diagnostics_run,
    }
}

fn level_name(level: u8) -> String {
    format!("L{level}")
}

/// A finding's state at `at`, from when it was acknowledged and resolved.
fn state_at(f: &FindingRow, at: UnixMillis) -> &'static str {
    if f.resolved.as_ref().is_some_and(|r| r.0 <= at) {
        "resolved"
    } else if f.acknowledged.as_ref().is_some_and(|a| a.0 <= at) {
        "acknowledged"
    } else {
        "open"
    }
}

fn outcome(c: &ClockStatus) -> &'static str {
    match (c.state, c.stopped) {
        (SlaState::Breached, _) => "breached",
        (_, true) => "met",
        (_, false) => "running",
    }
}

/// Findings by level and category with their timelines (up to `at`), and the SLA outcome
/// of each clock at `at`.
pub fn findings(
    items: &[(FindingRow, Vec<Event>)],
    policy: &SlaPolicy,
    silences: &[Silence],
    at: UnixMillis,
) -> (FindingsSummary, SlaOutcome) {
    let mut sorted: Vec<&(FindingRow, Vec<Event>)> = items.iter().collect();
    sorted.sort_by_key(|(f, _)| (f.level, f.opened_at, f.id));
    let mut by_level: BTreeMap<u8, u64> = (1..=4).map(|l| (l, 0)).collect();
    let mut by_category: BTreeMap<String, u64> = BTreeMap::new();
    let (mut met, mut breached, mut running) = (0u64, 0u64, 0u64);
    let mut breaches = Vec::new();
    let mut out = Vec::new();
    for (f, timeline) in sorted {
        *by_level.entry(f.level).or_default() += 1;
        *by_category.entry(f.category.clone()).or_default() += 1;
        let sla = sla_of(f, policy, silences, at);
        for (name, c) in [("respond", &sla.respond), ("restore", &sla.restore)] {
            match outcome(c) {
                "met" => met += 1,
                "running" => running += 1,
                _ => {
                    breached += 1;
                    let stop_at = if c.stopped {
                        if name == "respond" {
                            respond_stop(f)
                        } else {
                            f.resolved.as_ref().map(|r| r.0)
                        }
                    } else {
                        None
                    };
                    breaches.push(Breach {
                        finding: f.id,
                        host: f.host.clone(),
                        level: level_name(f.level),
                        clock: name.into(),
                        due: rfc3339(c.due),
                        stopped_at: stop_at.map(rfc3339),
                        late_ms: stop_at.unwrap_or(at) - c.due,
                    });
                }
            }
        }
        out.push(FindingItem {
            id: f.id,
            host: f.host.clone(),
            level: level_name(f.level),
            category: f.category.clone(),
            rule: f.rule.clone(),
            title: f.title.clone(),
            recommendation: f.recommendation.clone(),
            opened_at: rfc3339(f.opened_at),
            resolved_at: f
                .resolved
                .as_ref()
                .filter(|r| r.0 <= at)
                .map(|r| rfc3339(r.0)),
            state: state_at(f, at).into(),
            respond: outcome(&sla.respond).into(),
            restore: outcome(&sla.restore).into(),
            timeline: timeline
                .iter()
                .filter(|e| e.at <= at)
                .map(|e| TimelineEvent {
                    at: rfc3339(e.at),
                    kind: e.kind.as_str().into(),
                    by: e.by.clone(),
                    note: e.note.clone(),
                })
                .collect(),
        });
    }
    let mut by_category: Vec<(String, u64)> = by_category.into_iter().collect();
    by_category.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let decided = met + breached;
    (
        FindingsSummary {
            by_level: by_level
                .into_iter()
                .map(|(l, n)| (level_name(l), n))
                .collect(),
            by_category,
            items: out,
        },
        SlaOutcome {
            met,
            breached,
            running,
            met_percent: (decided > 0).then(|| 100.0 * met as f64 / decided as f64),
            breaches,
        },
    )
}

/// The respond clock stops at acknowledgement or resolution, whichever came first.
fn respond_stop(f: &FindingRow) -> Option<UnixMillis> {
    match (f.acknowledged.as_ref(), f.resolved.as_ref()) {
        (Some(a), Some(r)) => Some(a.0.min(r.0)),
        (a, r) => a.map(|a| a.0).or(r.map(|r| r.0)),
    }
}

/// `1.2.3` → `[1, 2, 3]`, ignoring anything after a `-` or `+`.
fn version_parts(v: &str) -> Vec<u64> {
    v.split(['-', '+'])
        .next()
        .unwrap_or("")
        .split('.')
        .map_while(|p| p.trim().parse().ok())
        .collect()
}

/// `5.15.0-91-generic` → `(5, 15)`.
pub fn kernel_line(kernel: &str) -> Option<(u32, u32)> {
    let p = version_parts(kernel);
    Some((
        u32::try_from(*p.first()?).ok()?,
        u32::try_from(*p.get(1)?).ok()?,
    ))
}

/// Whether `kernel` is past its support at `date` (`YYYY-MM-DD`), and the oldest line
/// still supported then that is newer than it.
pub fn kernel_outdated(kernel: &str, date: &str) -> Option<String> {
    let line = kernel_line(kernel)?;
    let supported = |eol: &str| eol >= date;
    let newer_supported = || {
        KERNEL_LINES
            .iter()
            .filter(|(ma, mi, eol)| (*ma, *mi) > line && supported(eol))
            .map(|(ma, mi, _)| format!("{ma}.{mi}"))
            .next()
            .unwrap_or_else(|| "a supported line".into())
    };
    match KERNEL_LINES.iter().find(|(ma, mi, _)| (*ma, *mi) == line) {
        Some((_, _, eol)) if !supported(eol) => Some(newer_supported()),
        Some(_) => None,
        None if KERNEL_LINES.iter().all(|(ma, mi, _)| (*ma, *mi) > line) => Some(newer_supported()),
        None => None,
    }
}

fn day_label(days: &[UnixMillis], labels: &[String], t: UnixMillis) -> String {
    let i = days.partition_point(|&d| d <= t);
    labels.get(i.saturating_sub(1)).cloned().unwrap_or_default()
}

/// Security findings, authentication failures per host, consent near expiry, outdated
/// agents and kernels. Authentication failures are the lines the built-in `auth-failures`
/// rule's pattern matches (all of them, not only the bursts that raised a finding).
/// Certificates are listed by the expiry of the one the agent last connected with.
pub fn security(inp: &Inputs, findings: &FindingsSummary) -> Security {
    let mut auth = Vec::new();
    let mut expiring = Vec::new();
    let mut outdated = Vec::new();
    let end_date = day_label(&inp.days, &inp.day_labels, inp.to - 1);
    for h in &inp.hosts {
        if !h.auth_failures.is_empty() {
            let mut per_day: BTreeMap<usize, u64> = BTreeMap::new();
            for &t in &h.auth_failures {
                *per_day
                    .entry(inp.days.partition_point(|&d| d <= t))
                    .or_default() += 1;
            }
            // The busiest day; the earliest of equals.
            let (day, peak) = per_day.iter().fold(
                (0, 0),
                |best, (&d, &n)| if n > best.1 { (d, n) } else { best },
            );
            auth.push(AuthFailures {
                host: h.status.host.clone(),
                count: h.auth_failures.len() as u64,
                peak_day: inp
                    .day_labels
                    .get(day.saturating_sub(1))
                    .cloned()
                    .unwrap_or_default(),
                peak_count: peak,
            });
        }
        for g in &h.status.consent.grants {
            if let Some(until) = g.until
                && g.at <= inp.to
                && until >= inp.to
                && until < inp.to + SOON_MS
            {
                expiring.push(Expiring {
                    host: h.status.host.clone(),
                    what: format!("consent:{}", g.scope.as_str()),
                    at: rfc3339(until),
                });
            }
        }
        if let Some(until) = h.status.cert_expires
            && until < inp.to + SOON_MS
        {
            // Expired already, or within the window after the period: both need a new one.
            expiring.push(Expiring {
                host: h.status.host.clone(),
                what: "certificate".into(),
                at: rfc3339(until),
            });
        }
        let running = version_parts(&h.status.agent_version);
        if !running.is_empty() && running < version_parts(&inp.collector_version) {
            outdated.push(Outdated {
                host: h.status.host.clone(),
                what: "agent".into(),
                running: h.status.agent_version.clone(),
                current: inp.collector_version.clone(),
            });
        }
        if let Some(current) = kernel_outdated(&h.status.facts.kernel, &end_date) {
            outdated.push(Outdated {
                host: h.status.host.clone(),
                what: "kernel".into(),
                running: h.status.facts.kernel.clone(),
                current,
            });
        }
    }
    Security {
        findings: findings
            .items
            .iter()
            .filter(|f| f.category == "security")
            .cloned()
            .collect(),
        auth_failures: auth,
        consent_expiring: expiring,
        outdated,
    }
}

/// The first section: hosts, what was inspected, consent in force and its changes.
pub fn purpose(inp: &Inputs) -> Purpose {
    let mut hosts = Vec::new();
    let mut consent = Vec::new();
    let mut logs_consented = false;
    for h in &inp.hosts {
        let s = &h.status;
        hosts.push(HostInfo {
            host: s.host.clone(),
            os: format!("{} {}", s.facts.os_name, s.facts.os_version)
                .trim()
                .to_string(),
            kernel: s.facts.kernel.clone(),
            agent_version: s.agent_version.clone(),
            first_seen: rfc3339(s.first_seen),
            last_seen: s.last_seen.map(rfc3339),
        });
        let at = inp.judged_at;
        let in_force: Vec<_> = s
            .consent
            .grants
            .iter()
            .filter(|g| g.active_at(at))
            .collect();
        logs_consented |= s.consent.grants.iter().any(|g| {
            g.scope == Scope::Logs && g.at < inp.to && g.until.is_none_or(|u| u > inp.from)
        });
        // The store keeps the record as last shown: grants and expiries are known, a grant
        // revoked since is gone from it and cannot be listed.
        let mut changes = Vec::new();
        for g in &s.consent.grants {
            if g.at >= inp.from && g.at < inp.to {
                changes.push((g.at, g.scope, "granted", g.by.clone()));
            }
            if let Some(u) = g.until
                && u >= inp.from
                && u < inp.to
            {
                changes.push((u, g.scope, "expired", g.by.clone()));
            }
        }
        changes.sort_by_key(|c| (c.0, c.1));
        consent.push(HostConsent {
            host: s.host.clone(),
            scopes_in_force: in_force.iter().map(|g| g.scope.as_str().into()).collect(),
            expires_at: in_force.iter().filter_map(|g| g.until).min().map(rfc3339),
            changes: changes
                .into_iter()
                .map(|(at, scope, change, by)| ConsentChange {
                    at: rfc3339(at),
                    scope: scope.as_str().into(),
                    change: change.into(),
                    by,
                })
                .collect(),
        });
    }
    let metrics = inp.hosts.iter().any(|h| !h.series.is_empty());
    let mut inspected: Vec<&str> = Vec::new();
    if metrics {
        inspected.extend(["availability", "cpu", "memory", "filesystems", "network"]);
    }
    if logs_consented {
        inspected.push("logs");
    }
    inspected.extend(["findings", "sla", "security"]);
    Purpose {
        hosts,
        inspected: inspected.into_iter().map(String::from).collect(),
        consent,
    }
}

/// One host's facts for grading.
#[derive(Debug, Clone, Default)]
pub struct GradeFacts {
    pub open_l1: u64,
    pub open_l2: u64,
    pub findings: u64,
    pub breaches: u64,
    pub availability: Option<f64>,
    /// Mounts forecast full within 30 days of the period's end.
    pub filling: Vec<String>,
}

/// The grade by [`GRADE_RULES`], with the reasons that decided it (every rule that holds,
/// worst first).
pub fn grade(f: &GradeFacts) -> (String, Vec<String>) {
    let mut reasons: Vec<(char, String)> = Vec::new();
    if f.open_l1 > 0 {
        reasons.push(('D', format!("open_l1={}", f.open_l1)));
    }
    if let Some(a) = f.availability {
        if a < 95.0 {
            reasons.push(('D', format!("availability_below_95={a:.2}")));
        } else if a < 99.9 {
            reasons.push(('B', format!("availability_below_99.9={a:.2}")));
        }
    }
    if f.breaches > 0 {
        reasons.push(('C', format!("sla_breach={}", f.breaches)));
    }
    if f.open_l2 > 0 {
        reasons.push(('C', format!("open_l2={}", f.open_l2)));
    }
    if !f.filling.is_empty() {
        reasons.push(('C', format!("fs_full_within_30d={}", f.filling.join(" "))));
    }
    if f.findings > 0 {
        reasons.push(('B', format!("finding_in_period={}", f.findings)));
    }
    // 'D' > 'C' > 'B' in the ordering that matters here: the worst letter.
    reasons.sort_by_key(|r| std::cmp::Reverse(r.0));
    let grade = reasons.first().map_or('A', |r| r.0);
    (
        grade.to_string(),
        reasons.into_iter().map(|r| r.1).collect(),
    )
}

struct Rec {
    rank: u8,
    host: String,
    kind: &'static str,
    text: String,
    evidence: String,
}

/// The conclusion: grades, recommendations in order of urgency, and the comparison.
pub fn conclusion(
    inp: &Inputs,
    inspection: &Inspection,
    security: &Security,
    previous: Option<&Report>,
) -> Conclusion {
    let rows: BTreeMap<i64, &FindingRow> = inp.findings.iter().map(|(f, _)| (f.id, f)).collect();
    let mut hosts = Vec::new();
    let mut recs: Vec<Rec> = Vec::new();
    for hi in &inspection.hosts {
        let host = &hi.host;
        let mine = || inspection.findings.items.iter().filter(|f| &f.host == host);
        let open = |level: &str| {
            mine()
                .filter(|f| f.level == level && f.state != "resolved")
                .count() as u64
        };
        let filling: Vec<&Forecast> = hi
            .forecasts
            .iter()
            .filter(|f| f.days_left.is_some_and(|d| d <= 30.0))
            .collect();
        let facts = GradeFacts {
            open_l1: open("L1"),
            open_l2: open("L2"),
            findings: mine().count() as u64,
            breaches: inspection
                .sla
                .breaches
                .iter()
                .filter(|b| &b.host == host)
                .count() as u64,
            availability: hi.availability.percent,
            filling: filling.iter().map(|f| f.mount.clone()).collect(),
        };
        let (g, reasons) = grade(&facts);
        hosts.push(HostGrade {
            host: host.clone(),
            grade: g,
            reasons,
        });
        for f in mine().filter(|f| f.state != "resolved") {
            let rank = match f.level.as_str() {
                "L1" => 1,
                "L2" => 4,
                _ => 6,
            };
            recs.push(Rec {
                rank,
                host: host.clone(),
                kind: "finding",
                text: f.recommendation.clone(),
                evidence: format!("finding:{}", f.id),
            });
        }
        for fc in filling {
            recs.push(Rec {
                rank: 3,
                host: host.clone(),
                kind: "fs_full",
                text: format!(
                    "Extend or clean up {}: at {:.2} % a day it is full by {}.",
                    fc.mount,
                    fc.growth_percent_per_day,
                    fc.full_at.as_deref().unwrap_or("-")
                ),
                evidence: format!(
                    "forecast:{}:{}",
                    fc.mount,
                    fc.full_at.as_deref().unwrap_or("-")
                ),
            });
        }
        if let Some(p) = hi.availability.percent
            && p < 99.9
        {
            recs.push(Rec {
                rank: 5,
                host: host.clone(),
                kind: "availability",
                text: format!(
                    "Find the cause of the {} outage(s): the host reported {p:.2} % of the expected time.",
                    hi.availability.outages.len()
                ),
                evidence: format!("availability:{p:.2}"),
            });
        }
    }
    for b in &inspection.sla.breaches {
        let title = rows.get(&b.finding).map_or("", |f| f.title.as_str());
        recs.push(Rec {
            rank: 2,
            host: b.host.clone(),
            kind: "sla_breach",
            text: format!(
                "Review why the {} clock of finding {} ({title}) ran past its deadline.",
                b.clock, b.finding
            ),
            evidence: format!("breach:{}:{}", b.finding, b.clock),
        });
    }
    for o in &security.outdated {
        recs.push(Rec {
            rank: 7,
            host: o.host.clone(),
            kind: if o.what == "agent" {
                "outdated_agent"
            } else {
                "outdated_kernel"
            },
            text: format!(
                "Upgrade the {} from {} to {}.",
                o.what, o.running, o.current
            ),
            evidence: format!("{}:{}", o.what, o.running),
        });
    }
    for e in &security.consent_expiring {
        if e.what == "certificate" {
            recs.push(Rec {
                rank: 8,
                host: e.host.clone(),
                kind: "certificate_expiring",
                text: format!("Issue a new agent certificate before {}.", e.at),
                evidence: format!("certificate:agent:{}", e.at),
            });
            continue;
        }
        recs.push(Rec {
            rank: 8,
            host: e.host.clone(),
            kind: "consent_expiring",
            text: format!(
                "Ask the customer whether to renew {} before {}.",
                e.what, e.at
            ),
            evidence: format!("{}:{}", e.what, e.at),
        });
    }
    recs.sort_by(|a, b| (a.rank, &a.host).cmp(&(b.rank, &b.host)));
    let grade = hosts
        .iter()
        .map(|h| h.grade.clone())
        .max()
        .unwrap_or_else(|| "A".into());
    Conclusion {
        grade,
        hosts,
        rules: GRADE_RULES.iter().map(|r| r.to_string()).collect(),
        recommendations: recs
            .into_iter()
            .enumerate()
            .map(|(i, r)| Recommendation {
                priority: i as u32 + 1,
                host: r.host,
                kind: r.kind.into(),
                text: r.text,
                evidence: r.evidence,
            })
            .collect(),
        previous: previous.map(compare),
    }
}

/// All hosts' online time over all hosts' expected time.
pub fn customer_availability(hosts: &[HostInspection]) -> Option<f64> {
    let expected: i64 = hosts.iter().map(|h| h.availability.expected_ms).sum();
    let online: i64 = hosts.iter().map(|h| h.availability.online_ms).sum();
    (expected > 0).then(|| 100.0 * online as f64 / expected as f64)
}

fn compare(p: &Report) -> Comparison {
    Comparison {
        period_label: p.meta.period_label.clone(),
        grade: p.conclusion.grade.clone(),
        findings: p.inspection.findings.items.len() as u64,
        availability_percent: customer_availability(&p.inspection.hosts),
        sla_met_percent: p.inspection.sla.met_percent,
    }
}

/// Sections 1 to 5 from the inputs.
pub fn sections(
    inp: &Inputs,
    policy: &SlaPolicy,
    previous: Option<&Report>,
) -> (Purpose, Impact, Inspection, Security, Conclusion) {
    let edges = chart_edges(inp.from, inp.metrics_to, &inp.days);
    let (summary, sla) = findings(&inp.findings, policy, &inp.silences, inp.judged_at);
    let inspection = Inspection {
        hosts: inp
            .hosts
            .iter()
            .map(|h| HostInspection {
                host: h.status.host.clone(),
                availability: availability(h, inp.from, inp.metrics_to),
                trends: trends(h, &edges),
                forecasts: forecasts(h, &inp.days, inp.to),
                log_errors: h
                    .log_counts
                    .iter()
                    .map(|c| LogErrorCount {
                        source: c.source.clone(),
                        severity: c.severity.as_str().into(),
                        count: c.count,
                    })
                    .collect(),
            })
            .collect(),
        findings: summary,
        sla,
    };
    let security = security(inp, &inspection.findings);
    let conclusion = conclusion(inp, &inspection, &security, previous);
    (
        purpose(inp),
        Impact {
            hosts: inp.hosts.iter().map(footprint).collect(),
        },
        inspection,
        security,
        conclusion,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> GradeFacts {
        GradeFacts {
            availability: Some(100.0),
            ..GradeFacts::default()
        }
    }

    #[test]
    fn each_grading_rule_decides_its_grade() {
        let cases: Vec<(GradeFacts, &str, &str)> = vec![
            (facts(), "A", ""),
            (
                GradeFacts {
                    availability: None,
                    ..facts()
                },
                "A",
                "",
            ),
            (
                GradeFacts {
                    findings: 1,
                    ..facts()
                },
                "B",
                "finding_in_period=1",
            ),
            (
                GradeFacts {
                    availability: Some(99.89),
                    ..facts()
                },
                "B",
                "availability_below_99.9=99.89",
            ),
            (
                GradeFacts {
                    breaches: 2,
                    ..facts()
                },
                "C",
                "sla_breach=2",
            ),
            (
                GradeFacts {
                    open_l2: 1,
                    ..facts()
                },
                "C",
                "open_l2=1",
            ),
            (
                GradeFacts {
                    filling: vec!["/var".into()],
                    ..facts()
                },
                "C",
                "fs_full_within_30d=/var",
            ),
            (
                GradeFacts {
                    open_l1: 1,
                    findings: 1,
                    ..facts()
                },
                "D",
                "open_l1=1",
            ),
            (
                GradeFacts {
                    availability: Some(94.99),
                    breaches: 1,
                    ..facts()
                },
                "D",
                "availability_below_95=94.99",
            ),
        ];
        for (f, want, first) in cases {
            let (g, reasons) = grade(&f);
            assert_eq!(g, want, "{f:?}");
            assert_eq!(reasons.first().map_or("", |r| r.as_str()), first, "{f:?}");
            // Every reason is one of the stated rules.
            for r in &reasons {
                let key = r.split('=').next().unwrap();
                assert!(GRADE_RULES.iter().any(|rule| rule.ends_with(key)), "{r}");
            }
        }
    }

    #[test]
    fn kernels_past_their_line_or_older_than_every_line_are_outdated() {
        assert_eq!(kernel_line("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(kernel_line("6"), None);
        assert_eq!(
            kernel_outdated("5.4.0-150-generic", "2026-01-01"),
            Some("5.10".into())
        );
        assert_eq!(kernel_outdated("5.4.0-150-generic", "2025-12-31"), None);
        assert_eq!(
            kernel_outdated("3.10.0-1160.el7", "2026-09-30"),
            Some("4.18".into())
        );
        assert_eq!(
            kernel_outdated("2.6.32-754.el6", "2020-01-01"),
            Some("3.10".into())
        );
        assert_eq!(kernel_outdated("5.14.0-427.el9", "2026-09-30"), None);
        // A line the table does not list and newer than its oldest is not judged.
        assert_eq!(kernel_outdated("6.8.0-45-generic", "2026-09-30"), None);
        assert_eq!(kernel_outdated("unknown", "2026-09-30"), None);
        let lines: Vec<_> = KERNEL_LINES.iter().map(|l| (l.0, l.1)).collect();
        assert!(lines.windows(2).all(|w| w[0] < w[1]), "sorted, once each");
    }

    fn v(start: i64, width: i64, v: f64) -> Value {
        Value { start, width, v }
    }

    #[test]
    fn percentiles_and_means_weigh_buckets_by_width() {
        // An hourly 10 weighs as much as twelve 5-minute values.
        let mut vals = vec![v(0, HOUR_MS, 10.0)];
        vals.extend((0..4).map(|i| v(HOUR_MS + i * ROLLUP_STEP_MS, ROLLUP_STEP_MS, 50.0)));
        assert_eq!(percentile(&vals, 0.5), Some(10.0));
        assert_eq!(percentile(&vals, 0.95), Some(50.0));
        assert!((mean(&vals).unwrap() - 20.0).abs() < 1e-9);
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(mean(&[]), None);
        // Spans: stamped with their start, or the mean time of their values.
        let edges = [0, HOUR_MS, 2 * HOUR_MS];
        assert_eq!(span_means(&vals, &edges), vec![(0, 10.0), (HOUR_MS, 50.0)]);
        assert_eq!(
            span_means_at_mean_time(&vals, &edges),
            vec![(HOUR_MS / 2, 10.0), (HOUR_MS + 2 * ROLLUP_STEP_MS, 50.0)]
        );
    }

    fn host(series: Vec<SeriesRollups>, fine_from: UnixMillis) -> HostInput {
        HostInput {
            status: HostStatus {
                cert_expires: None,
                id: 1,
                customer: "acme".into(),
                host: "db1".into(),
                first_seen: -DAY_MS,
                last_seen: None,
                agent_version: "0.1.0".into(),
                consent: Default::default(),
                facts: Default::default(),
                connected: false,
                interval_ms: ROLLUP_STEP_MS as u64,
                online: false,
                dropped_batches: 0,
                dropped_samples: 0,
                discarded_by_revocation: 0,
                loss: BTreeMap::new(),
            },
            series,
            fine_from,
            log_counts: Vec::new(),
            auth_failures: Vec::new(),
            diagnostics_run: 0,
        }
    }

    fn bucket(start: UnixMillis, count: u64) -> Bucket {
        Bucket {
            start,
            count,
            min: 1.0,
            max: 1.0,
            sum: count as f64,
        }
    }

    #[test]
    fn availability_reads_hourly_and_5_minute_tiers() {
        // Hourly before 3 h: hour 0 full, hour 1 silent, hour 2 half; then 5-minute
        // buckets to 4 h, without 3:20..3:40.
        let mut buckets = vec![bucket(0, 12), bucket(2 * HOUR_MS, 6)];
        buckets.extend(
            (0..12)
                .map(|k| 3 * HOUR_MS + k * ROLLUP_STEP_MS)
                .filter(|t| !(3 * HOUR_MS + 20 * 60_000..3 * HOUR_MS + 40 * 60_000).contains(t))
                .map(|t| bucket(t, 1)),
        );
        let s = SeriesRollups {
            name: "cpu.usage".into(),
            labels: String::new(),
            kind: aftercare_shared::model::MetricKind::Gauge,
            buckets,
        };
        let a = availability(&host(vec![s], 3 * HOUR_MS), 0, 4 * HOUR_MS);
        assert_eq!(a.expected_ms, 4 * HOUR_MS);
        assert_eq!(a.online_ms, HOUR_MS + HOUR_MS / 2 + 40 * 60_000);
        let gaps: Vec<(String, i64)> = a
            .outages
            .iter()
            .map(|o| (o.from.clone(), o.duration_ms))
            .collect();
        assert_eq!(
            gaps,
            [
                ("1970-01-01T01:00:00Z".to_string(), HOUR_MS),
                ("1970-01-01T03:20:00Z".to_string(), 20 * 60_000)
            ]
        );
        // Nothing at all: one outage over the whole period.
        let none = availability(&host(Vec::new(), 4 * HOUR_MS), 0, 4 * HOUR_MS);
        assert_eq!((none.online_ms, none.percent), (0, Some(0.0)));
        assert_eq!(none.outages.len(), 1);
    }

    #[test]
    fn chart_edges_are_hours_for_short_periods_and_days_beyond() {
        let days: Vec<i64> = (0..=30).map(|d| d * DAY_MS).collect();
        assert_eq!(chart_edges(0, 2 * DAY_MS, &days).len(), 50);
        assert_eq!(chart_edges(0, 30 * DAY_MS, &days), days);
    }
}

//! Hosts: the list, one host with its facts and open findings, its metrics (from raw points
//! or rollups by range) and its logs.

use super::page;
use super::series::{self, Source};
use super::server::{
    ApiError, ApiState, page_json, policy, query, require, time_param, with_store,
};
use super::token::Role;
use crate::findings::record::{FindingFilter, FindingRow};
use crate::findings::view::finding_json;
use crate::store::{HostStatus, LogFilter, Resolution, log_time, query::rates};
use aftercare_shared::model::{LogRecord, MetricKind, Severity, Unit, unit_of};
use aftercare_shared::time_fmt::{now_millis, rfc3339};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::Deserialize;
use std::collections::HashMap;

pub const HOSTS_DEFAULT_LIMIT: usize = 100;
pub const HOSTS_MAX_LIMIT: usize = 1000;
pub const LOGS_DEFAULT_LIMIT: usize = 100;
pub const LOGS_MAX_LIMIT: usize = 1000;
/// A longer pattern is refused before compiling.
pub const REGEX_MAX_LEN: usize = 1024;
/// Compiled size limit of a pattern (the regex crate's default is 10 MiB).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// (count, worst level) of each host's open findings, by `customer/host`.
pub fn open_by_host(open: &[FindingRow]) -> HashMap<String, (usize, u8)> {
    let mut m: HashMap<String, (usize, u8)> = HashMap::new();
    for f in open {
        let e = m
            .entry(format!("{}/{}", f.customer, f.host))
            .or_insert((0, u8::MAX));
        e.0 += 1;
        e.1 = e.1.min(f.level);
    }
    m
}

pub(super) fn worst_level(worst: u8) -> serde_json::Value {
    if worst == u8::MAX {
        serde_json::Value::Null
    } else {
        format!("L{worst}").into()
    }
}

/// A host as the API (and the CLI's `hosts --json`) shows it.
pub fn host_json(h: &HostStatus, open: Option<&(usize, u8)>, now: i64) -> serde_json::Value {
    let active: Vec<_> = h
        .consent
        .grants
        .iter()
        .filter(|g| g.active_at(now))
        .collect();
    let expires_at = active.iter().filter_map(|g| g.until).min();
    serde_json::json!({
        "customer": h.customer,
        "host": h.host,
        "name": h.full_name(),
        "online": h.online,
        "connected": h.connected,
        "first_seen": rfc3339(h.first_seen),
        "last_seen": h.last_seen.map(rfc3339),
        "agent_version": h.agent_version,
        "cert_expires": h.cert_expires.map(rfc3339),
        "os": format!("{} {}", h.facts.os_name, h.facts.os_version).trim().to_string(),
        "kernel": h.facts.kernel,
        "consent": {
            "version": h.consent.version,
            "scopes_in_force": active.iter().map(|g| g.scope.as_str()).collect::<Vec<_>>(),
            "expires_at": expires_at.map(rfc3339),
            "grants": h.consent.grants.iter().map(|g| serde_json::json!({
                "scope": g.scope.as_str(),
                "by": g.by,
                "at": rfc3339(g.at),
                "until": g.until.map(rfc3339),
            })).collect::<Vec<_>>(),
        },
        "open_findings": open.map_or(0, |o| o.0),
        "worst_open_level": worst_level(open.map_or(u8::MAX, |o| o.1)),
        "loss": h.loss,
        "dropped_batches": h.dropped_batches,
        "dropped_samples": h.dropped_samples,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostsQuery {
    customer: Option<String>,
    online: Option<bool>,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<crate::store::TokenRow>,
    q: Result<Query<HostsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require(&caller, Role::Viewer)?;
    let q = query(q)?;
    let limit = page::limit(q.limit, HOSTS_DEFAULT_LIMIT, HOSTS_MAX_LIMIT)?;
    let out = with_store(&state, false, move |st| {
        let now = now_millis();
        let mut hosts = st.hosts(now)?;
        hosts.retain(|h| {
            q.customer.as_ref().is_none_or(|c| *c == h.customer)
                && q.online.is_none_or(|o| o == h.online)
        });
        hosts.sort_by(|a, b| (&a.customer, &a.host).cmp(&(&b.customer, &b.host)));
        let (hosts, next) = page::take("hosts", hosts, q.cursor.as_deref(), limit, |h| {
            (h.customer.clone(), h.host.clone())
        })?;
        let open = open_by_host(&st.findings(&FindingFilter {
            open_only: true,
            since: i64::MIN,
            ..Default::default()
        })?);
        let items = hosts
            .iter()
            .map(|h| host_json(h, open.get(&h.full_name()), now))
            .collect();
        Ok(page_json(items, next))
    })
    .await?;
    Ok(Json(out))
}

/// The host named by the path, or 404 `unknown_host` naming it.
fn find_host(
    st: &mut dyn crate::store::Store,
    customer: &str,
    host: &str,
    now: i64,
) -> Result<HostStatus, ApiError> {
    st.hosts(now)?
        .into_iter()
        .find(|h| h.customer == customer && h.host == host)
        .ok_or_else(|| ApiError {
            status: axum::http::StatusCode::NOT_FOUND,
            code: "unknown_host",
            message: format!("host: no host {customer}/{host}; GET /api/v1/hosts lists them"),
            field: Some("host"),
        })
}

pub async fn show(
    State(state): State<ApiState>,
    Extension(caller): Extension<crate::store::TokenRow>,
    Path((customer, host)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require(&caller, Role::Viewer)?;
    let sla = state.sla.clone();
    let out = with_store(&state, false, move |st| {
        let now = now_millis();
        let h = find_host(st, &customer, &host, now)?;
        let open = st.findings(&FindingFilter {
            open_only: true,
            customer: None,
            host: Some(h.full_name()),
            since: i64::MIN,
        })?;
        let counts = open_by_host(&open);
        let mut v = host_json(&h, counts.get(&h.full_name()), now);
        let policy = policy(&sla, st)?;
        let silences = st.silences(i64::MIN)?;
        v["facts"] = serde_json::to_value(&h.facts).unwrap_or_default();
        v["facts"]["boot_time"] = rfc3339(h.facts.boot_time).into();
        v["findings"] = open
            .iter()
            .map(|f| finding_json(f, &policy, &silences, now, None))
            .collect();
        Ok(v)
    })
    .await?;
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {
    metric: Option<String>,
    from: Option<String>,
    to: Option<String>,
    step: Option<String>,
}

/// Points of each (name, labels), with the series' kind.
type SeriesByKey = std::collections::BTreeMap<(String, String), (MetricKind, Vec<(i64, f64)>)>;

fn unit_str(name: &str, kind: MetricKind) -> String {
    let u = match unit_of(name) {
        Unit::Bytes => "bytes",
        Unit::Percent => "percent",
        Unit::Seconds => "seconds",
        Unit::Celsius => "celsius",
        Unit::Number => "number",
    };
    match kind {
        MetricKind::Counter => format!("{u}/s"),
        MetricKind::Gauge => u.to_string(),
    }
}

pub async fn metrics(
    State(state): State<ApiState>,
    Extension(caller): Extension<crate::store::TokenRow>,
    Path((customer, host)): Path<(String, String)>,
    q: Result<Query<MetricsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require(&caller, Role::Viewer)?;
    let q = query(q)?;
    let now = now_millis();
    let from = time_param("from", q.from.as_deref().unwrap_or("1h"), now)?;
    let to = time_param("to", q.to.as_deref().unwrap_or("now"), now)?;
    if from >= to {
        return Err(ApiError::bad(
            "bad_time",
            "from",
            format!("{} is not before to ({})", rfc3339(from), rfc3339(to)),
        ));
    }
    let source = series::source_for(from, to, now, &state.retention);
    let step = match &q.step {
        None => series::auto_step(to - from, source),
        Some(s) => {
            let d = humantime::parse_duration(s.trim()).map_err(|_| {
                ApiError::bad(
                    "bad_step",
                    "step",
                    format!("'{s}' is not a duration such as 60s, 5m, 1h"),
                )
            })?;
            i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
        }
    };
    series::check_step(to - from, step).map_err(|m| ApiError::bad("bad_step", "step", m))?;
    let out = with_store(&state, false, move |st| {
        let h = find_host(st, &customer, &host, now)?;
        let name = h.full_name();
        let metric = q.metric.as_deref().filter(|m| !m.is_empty());
        let mut out = Vec::new();
        match source {
            Source::Raw => {
                for s in st.query(&name, metric, from, to)? {
                    let pts = match s.kind {
                        MetricKind::Counter => rates(&s.points),
                        MetricKind::Gauge => s.points,
                    };
                    out.push((
                        s.name,
                        s.labels,
                        s.kind,
                        series::bucket_means(&pts, from, step),
                    ));
                }
            }
            Source::FiveMinutes | Source::Hour => {
                let res = if source == Source::Hour {
                    Resolution::Hour
                } else {
                    Resolution::FiveMinutes
                };
                // Rollups cover compacted (closed) hours; the newest part of the range,
                // not compacted yet, comes from raw points: at most the raw range, so a
                // long range never reads raw.
                let rolled = st.rollups(&name, metric, res, from, to)?;
                let mut by_key: SeriesByKey = Default::default();
                let mut covered_until = from;
                for s in rolled {
                    let pts: Vec<(i64, f64)> = s
                        .buckets
                        .iter()
                        .filter(|b| b.count > 0)
                        .map(|b| (b.start, b.mean()))
                        .collect();
                    if let Some(b) = s.buckets.last() {
                        covered_until = covered_until.max(b.start + res.step_ms());
                    }
                    by_key.insert((s.name, s.labels), (s.kind, pts));
                }
                let raw_from = covered_until.max(to - series::RAW_RANGE_MS);
                if raw_from < to {
                    for s in st.query(&name, metric, raw_from, to)? {
                        let pts = match s.kind {
                            MetricKind::Counter => rates(&s.points),
                            MetricKind::Gauge => s.points,
                        };
                        by_key
                            .entry((s.name, s.labels))
                            .or_insert((s.kind, Vec::new()))
                            .1
                            .extend(pts);
                    }
                }
                for ((n, l), (kind, mut pts)) in by_key {
                    pts.sort_by_key(|p| p.0);
                    out.push((n, l, kind, series::bucket_means(&pts, from, step)));
                }
            }
        }
        Ok(out)
    })
    .await?;
    let series: Vec<_> = out
        .into_iter()
        .filter(|s| !s.3.is_empty())
        .map(|(name, labels, kind, points)| {
            serde_json::json!({
                "unit": unit_str(&name, kind),
                "name": name,
                "labels": labels,
                "kind": kind.as_str(),
                "points": points.iter().map(|(t, v)| serde_json::json!([t, v])).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "from": rfc3339(from),
        "to": rfc3339(to),
        "step_ms": step,
        "source": source.as_str(),
        "series": series,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    source: Option<String>,
    severity: Option<String>,
    regex: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// A pattern from a caller: bounded in length and compiled size.
pub fn compile_regex(p: &str) -> Result<regex::Regex, ApiError> {
    if p.len() > REGEX_MAX_LEN {
        return Err(ApiError::bad(
            "bad_regex",
            "regex",
            format!("{} bytes, at most {REGEX_MAX_LEN}", p.len()),
        ));
    }
    regex::RegexBuilder::new(p)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| ApiError::bad("bad_regex", "regex", e))
}

fn log_json(r: &LogRecord) -> serde_json::Value {
    serde_json::json!({
        "ts": rfc3339(log_time(r)),
        "severity": r.severity.as_str(),
        "source": r.source,
        "file": r.file,
        "message": r.line,
    })
}

pub async fn logs(
    State(state): State<ApiState>,
    Extension(caller): Extension<crate::store::TokenRow>,
    Path((customer, host)): Path<(String, String)>,
    q: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require(&caller, Role::Viewer)?;
    let q = query(q)?;
    let now = now_millis();
    let limit = page::limit(q.limit, LOGS_DEFAULT_LIMIT, LOGS_MAX_LIMIT)?;
    let since = time_param("since", q.since.as_deref().unwrap_or("24h"), now)?;
    let until = match q.until.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => time_param("until", u, now)?,
        None => i64::MAX,
    };
    let min_severity = q
        .severity
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            Severity::parse(s).ok_or_else(|| {
                ApiError::bad(
                    "bad_severity",
                    "severity",
                    format!("'{s}' is not one of emerg, alert, crit, error, warning, notice, info, debug"),
                )
            })
        })
        .transpose()?;
    let grep = q
        .regex
        .as_deref()
        .filter(|r| !r.is_empty())
        .map(compile_regex)
        .transpose()?;
    // The cursor: the time of the last line sent and how many lines at that time were
    // sent, so the next page starts exactly after it.
    let (until, cursor_ts, skip) = match &q.cursor {
        Some(c) => {
            let (ts, skip): (i64, usize) = serde_json::from_str(&page::decode("logs", c)?)
                .map_err(|_| ApiError::from(page::PageError::Cursor))?;
            (until.min(ts.saturating_add(1)), Some(ts), skip)
        }
        None => (until, None, 0),
    };
    let source = q.source.filter(|s| !s.is_empty());
    let out = with_store(&state, false, move |st| {
        let h = find_host(st, &customer, &host, now)?;
        // One more than a page tells whether another follows; a source filter is applied
        // after the store's, so read in growing windows until the page is full.
        let want = skip + limit + 1;
        let mut fetch = want;
        loop {
            let filter = LogFilter {
                since,
                until,
                min_severity,
                grep: grep.clone(),
                limit: fetch,
            };
            let mut recs = st.logs(&h.full_name(), &filter)?;
            let got = recs.len();
            recs.reverse();
            let kept: Vec<LogRecord> = recs
                .into_iter()
                .filter(|r| source.as_ref().is_none_or(|s| *s == r.source))
                .collect();
            if kept.len() >= want || got < fetch {
                return Ok(kept);
            }
            fetch = fetch.saturating_mul(4);
        }
    })
    .await?;
    let mut records = out.into_iter().skip(skip).collect::<Vec<_>>();
    let more = records.len() > limit;
    records.truncate(limit);
    let next = match records.last() {
        Some(last) if more => {
            let ts = log_time(last);
            let at_ts = records.iter().filter(|r| log_time(r) == ts).count();
            // Lines at the cursor's time already sent on earlier pages count too.
            let carried = if cursor_ts == Some(ts) && records.iter().all(|r| log_time(r) == ts) {
                skip
            } else {
                0
            };
            Some(page::encode(
                "logs",
                &serde_json::to_string(&(ts, at_ts + carried)).unwrap_or_default(),
            ))
        }
        _ => None,
    };
    Ok(Json(page_json(
        records.iter().map(log_json).collect(),
        next,
    )))
}

//! Tables for a person at a terminal. Pure: rows in, text out.

use crate::store::{HostStatus, SeriesPoints, UNATTRIBUTED};
use aftercare_shared::model::{LossReport, MetricKind, Unit, UnixMillis, unit_of};
use aftercare_shared::time_fmt;
use std::collections::BTreeMap;

/// Left-aligned columns sized to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, c) in cells.enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(c);
            if i + 1 < w.len() {
                s.push_str(&" ".repeat(w[i].saturating_sub(c.chars().count())));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&mut headers.iter().copied());
    for r in rows {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
    }
    out
}

/// How long ago, compactly: `4s`, `3m`, `2h`, `5d`.
pub fn ago(then: UnixMillis, now: UnixMillis) -> String {
    let s = ((now - then) / 1000).max(0);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

pub fn hosts_table(hosts: &[HostStatus], now: UnixMillis) -> String {
    if hosts.is_empty() {
        return "no hosts yet: an agent appears here once it has connected with consent\n".into();
    }
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            let scopes = h.consent.active_scopes(now);
            vec![
                h.customer.clone(),
                h.host.clone(),
                if h.online { "online" } else { "offline" }.into(),
                h.last_seen
                    .map(|t| ago(t, now))
                    .unwrap_or_else(|| "never".into()),
                h.agent_version.clone(),
                if scopes.is_empty() {
                    "none".into()
                } else {
                    scopes
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                },
                format!("{} {}", h.facts.os_name, h.facts.os_version)
                    .trim()
                    .to_string(),
                loss_text(&h.loss),
            ]
        })
        .collect();
    table(
        &[
            "CUSTOMER",
            "HOST",
            "STATUS",
            "LAST SEEN",
            "AGENT",
            "CONSENT",
            "OS",
            "LOSS",
        ],
        &rows,
    )
}

/// What a host's agent reported it gave up, by scope: `none`, or e.g.
/// `metrics: 3 batches (120 samples) dropped; logs: 5 batches discarded when consent was
/// revoked`.
pub fn loss_text(loss: &BTreeMap<String, LossReport>) -> String {
    // Scopes in the order a person expects them, whatever the map's order.
    let rank = |scope: &str| match scope {
        "metrics" => 0,
        "logs" => 1,
        UNATTRIBUTED => 3,
        _ => 2,
    };
    let mut parts: Vec<(&String, &LossReport)> =
        loss.iter().filter(|(_, l)| !l.is_empty()).collect();
    if parts.is_empty() {
        return "none".into();
    }
    parts.sort_by_key(|(scope, _)| rank(scope));
    parts
        .iter()
        .map(|(scope, l)| {
            let (label, unit) = match scope.as_str() {
                "logs" => ("logs", ("line", "lines")),
                UNATTRIBUTED => ("scope not recorded", ("sample or line", "samples or lines")),
                s => (s, ("sample", "samples")),
            };
            format!("{label}: {}", loss_words(l, unit))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `2 batches (900 lines) dropped, 5 discarded when consent was revoked`.
fn loss_words(l: &LossReport, unit: (&str, &str)) -> String {
    let n = |v: u64, (one, many): (&str, &str)| format!("{v} {}", if v == 1 { one } else { many });
    let batches = ("batch", "batches");
    let mut out = Vec::new();
    match (l.dropped_batches, l.dropped_samples) {
        (0, 0) => {}
        (0, s) => out.push(format!("{} dropped", n(s, unit))),
        (b, 0) => out.push(format!("{} dropped", n(b, batches))),
        (b, s) => out.push(format!("{} ({}) dropped", n(b, batches), n(s, unit))),
    }
    if l.discarded_by_revocation > 0 {
        let what = if out.is_empty() {
            n(l.discarded_by_revocation, batches)
        } else {
            l.discarded_by_revocation.to_string()
        };
        out.push(format!("{what} discarded when consent was revoked"));
    }
    out.join(", ")
}

/// A value in the unit its name implies.
pub fn fmt_value(name: &str, v: f64) -> String {
    match unit_of(name) {
        Unit::Bytes => fmt_bytes(v),
        Unit::Percent => format!("{v:.1}%"),
        Unit::Celsius => format!("{v:.1}°C"),
        Unit::Seconds if v >= 86400.0 => format!("{:.1}d", v / 86400.0),
        Unit::Seconds if v >= 3600.0 => format!("{:.1}h", v / 3600.0),
        Unit::Seconds if v >= 60.0 => format!("{:.1}min", v / 60.0),
        Unit::Seconds => format!("{v:.3}s"),
        Unit::Number if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
        Unit::Number if v.abs() >= 100.0 => format!("{v:.1}"),
        Unit::Number => format!("{v:.3}"),
    }
}

pub fn fmt_bytes(v: f64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut x = v;
    let mut i = 0;
    while x.abs() >= 1024.0 && i + 1 < U.len() {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{x:.0} {}", U[0])
    } else {
        format!("{x:.1} {}", U[i])
    }
}

/// Per series over the window: latest value (or rate for counters), min / avg / max.
pub fn metrics_table(series: &[SeriesPoints]) -> String {
    if series.is_empty() {
        return "no samples in that window\n".into();
    }
    let mut rows = Vec::new();
    for s in series {
        let (vals, unit_name, suffix): (Vec<(UnixMillis, f64)>, String, &str) = match s.kind {
            MetricKind::Gauge => (s.points.clone(), s.name.clone(), ""),
            MetricKind::Counter => (crate::store::query::rates(&s.points), s.name.clone(), "/s"),
        };
        let Some(&(last_ts, last)) = vals.last() else {
            // A counter with a single point has no rate yet.
            if let Some(&(ts, v)) = s.points.last() {
                rows.push(vec![
                    s.name.clone(),
                    s.labels.clone(),
                    format!("{} (total)", fmt_value(&unit_name, v)),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    time_fmt::rfc3339(ts),
                ]);
            }
            continue;
        };
        let n = vals.len() as f64;
        let (mut lo, mut hi, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
        for &(_, v) in &vals {
            lo = lo.min(v);
            hi = hi.max(v);
            sum += v;
        }
        let f = |v: f64| format!("{}{suffix}", fmt_value(&unit_name, v));
        rows.push(vec![
            s.name.clone(),
            s.labels.clone(),
            f(last),
            f(lo),
            f(sum / n),
            f(hi),
            time_fmt::rfc3339(last_ts),
        ]);
    }
    table(
        &["METRIC", "SUBJECT", "LATEST", "MIN", "AVG", "MAX", "AT"],
        &rows,
    )
}

/// Log lines for a terminal: time, severity, source, the line as it was sent.
pub fn logs_table(records: &[aftercare_shared::model::LogRecord]) -> String {
    if records.is_empty() {
        return "no log lines match\n".into();
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                time_fmt::rfc3339(crate::store::log_time(r)),
                r.severity.as_str().to_string(),
                r.source.clone(),
                if r.part > 0 {
                    format!("{} [part {}]", r.line, r.part)
                } else {
                    r.line.clone()
                },
            ]
        })
        .collect();
    table(&["TIME", "SEVERITY", "SOURCE", "LINE"], &rows)
}

/// The headline of one host, a line per subject: what a person checks first.
pub fn host_summary(series: &[SeriesPoints]) -> String {
    let last = |name: &str, labels: &str| -> Option<f64> {
        series
            .iter()
            .find(|s| s.name == name && s.labels == labels)
            .and_then(|s| s.points.last().map(|p| p.1))
    };
    let rate = |name: &str, labels: &str| -> Option<f64> {
        series
            .iter()
            .find(|s| s.name == name && s.labels == labels)
            .and_then(|s| crate::store::query::rates(&s.points).last().map(|p| p.1))
    };
    let label = |labels: &str, key: &str| -> String {
        labels
            .split(',')
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .unwrap_or("")
            .to_string()
    };
    let pct = |used: f64, total: f64| {
        if total > 0.0 {
            format!(" ({:.0}%)", used / total * 100.0)
        } else {
            String::new()
        }
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = |what: &str, subject: &str, value: String| {
        rows.push(vec![what.to_string(), subject.to_string(), value]);
    };
    if let Some(v) = last("cpu.usage", "") {
        let cores = series
            .iter()
            .filter(|s| s.name == "cpu.usage" && !s.labels.is_empty())
            .count();
        row("cpu", &format!("{cores} cores"), format!("{v:.1}% busy"));
    }
    if let (Some(a), Some(b), Some(c)) =
        (last("load.1", ""), last("load.5", ""), last("load.15", ""))
    {
        row(
            "load",
            "1 / 5 / 15 min",
            format!("{a:.2} / {b:.2} / {c:.2}"),
        );
    }
    if let (Some(u), Some(t)) = (last("mem.used", ""), last("mem.total", "")) {
        row(
            "memory",
            "used of total",
            format!("{} of {}{}", fmt_bytes(u), fmt_bytes(t), pct(u, t)),
        );
    }
    if let (Some(u), Some(t)) = (last("swap.used", ""), last("swap.total", ""))
        && t > 0.0
    {
        row(
            "swap",
            "used of total",
            format!("{} of {}{}", fmt_bytes(u), fmt_bytes(t), pct(u, t)),
        );
    }
    for s in series.iter().filter(|s| s.name == "fs.bytes.used") {
        let (Some(u), Some(t)) = (
            s.points.last().map(|p| p.1),
            last("fs.bytes.total", &s.labels),
        ) else {
            continue;
        };
        row(
            "filesystem",
            &label(&s.labels, "mount"),
            format!("{} of {}{}", fmt_bytes(u), fmt_bytes(t), pct(u, t)),
        );
    }
    for s in series.iter().filter(|s| s.name == "net.rx.bytes") {
        let iface = label(&s.labels, "interface");
        // Loopback and interfaces that never carried a byte are noise on a status page.
        let carried = s.points.last().map(|p| p.1).unwrap_or(0.0)
            + last("net.tx.bytes", &s.labels).unwrap_or(0.0);
        if iface == "lo" || carried == 0.0 {
            continue;
        }
        let (Some(rx), Some(tx)) = (
            rate("net.rx.bytes", &s.labels),
            rate("net.tx.bytes", &s.labels),
        ) else {
            continue;
        };
        let errs: f64 = [
            "net.rx.errors",
            "net.tx.errors",
            "net.rx.drops",
            "net.tx.drops",
        ]
        .iter()
        .filter_map(|n| last(n, &s.labels))
        .sum();
        row(
            "network",
            &iface,
            format!(
                "in {}/s, out {}/s, {errs:.0} errors+drops since boot",
                fmt_bytes(rx),
                fmt_bytes(tx)
            ),
        );
    }
    for s in series.iter().filter(|s| s.name == "disk.read.bytes") {
        let (Some(r), Some(w)) = (
            rate("disk.read.bytes", &s.labels),
            rate("disk.write.bytes", &s.labels),
        ) else {
            continue;
        };
        row(
            "disk",
            &label(&s.labels, "device"),
            format!("read {}/s, write {}/s", fmt_bytes(r), fmt_bytes(w)),
        );
    }
    if let Some(up) = last("system.uptime", "") {
        row("uptime", "", fmt_value("system.uptime", up));
    }
    if let Some(rss) = last("agent.memory.rss", "") {
        // Over the whole window: one interval's CPU is below the kernel's 10 ms tick.
        let cpu = series
            .iter()
            .find(|s| s.name == "agent.cpu" && s.labels.is_empty())
            .and_then(|s| Some((s.points.first()?, s.points.last()?)))
            .filter(|(a, b)| b.0 > a.0 && b.1 >= a.1)
            .map(|(a, b)| {
                format!(
                    ", {:.3}% of a core",
                    (b.1 - a.1) / ((b.0 - a.0) as f64 / 1000.0) * 100.0
                )
            })
            .unwrap_or_default();
        row(
            "aftercare-agent",
            "own footprint",
            format!("{} resident{cpu}", fmt_bytes(rss)),
        );
    }
    if rows.is_empty() {
        return String::new();
    }
    table(&["", "", ""], &rows)
        .split_once('\n')
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

// The same tables from the HTTP API's JSON, for the command line with `--url`.

/// An RFC 3339 time from the API, as Unix ms.
fn api_time(v: &serde_json::Value) -> Option<UnixMillis> {
    v.as_str()
        .and_then(|s| time_fmt::parse_until(s).ok())
        .map(time_fmt::from_offset)
}

fn api_str(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

/// `GET /api/v1/hosts` items, as [`hosts_table`] shows hosts.
pub fn api_hosts_table(items: &[serde_json::Value], now: UnixMillis) -> String {
    if items.is_empty() {
        return "no hosts yet: an agent appears here once it has connected with consent\n".into();
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|h| {
            let scopes: Vec<String> = h["consent"]["scopes_in_force"]
                .as_array()
                .map(|a| a.iter().map(api_str).collect())
                .unwrap_or_default();
            let loss: BTreeMap<String, LossReport> =
                serde_json::from_value(h["loss"].clone()).unwrap_or_default();
            vec![
                api_str(&h["customer"]),
                api_str(&h["host"]),
                if h["online"].as_bool() == Some(true) {
                    "online"
                } else {
                    "offline"
                }
                .into(),
                api_time(&h["last_seen"]).map_or_else(|| "never".into(), |t| ago(t, now)),
                api_str(&h["agent_version"]),
                if scopes.is_empty() {
                    "none".into()
                } else {
                    scopes.join(",")
                },
                api_str(&h["os"]),
                loss_text(&loss),
            ]
        })
        .collect();
    table(
        &[
            "CUSTOMER",
            "HOST",
            "STATUS",
            "LAST SEEN",
            "AGENT",
            "CONSENT",
            "OS",
            "LOSS",
        ],
        &rows,
    )
}

/// `GET .../metrics` as [`metrics_table`] shows series: the points are step means (rates
/// for counters) already.
pub fn api_metrics_table(v: &serde_json::Value) -> String {
    let series = v["series"].as_array().cloned().unwrap_or_default();
    if series.is_empty() {
        return "no samples in that window\n".into();
    }
    let mut rows = Vec::new();
    for s in &series {
        let name = api_str(&s["name"]);
        let suffix = if s["kind"] == "counter" { "/s" } else { "" };
        let pts: Vec<(UnixMillis, f64)> = s["points"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| Some((p[0].as_i64()?, p[1].as_f64()?)))
                    .collect()
            })
            .unwrap_or_default();
        let Some(&(last_ts, last)) = pts.last() else {
            continue;
        };
        let (mut lo, mut hi, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
        for &(_, x) in &pts {
            lo = lo.min(x);
            hi = hi.max(x);
            sum += x;
        }
        let f = |x: f64| format!("{}{suffix}", fmt_value(&name, x));
        rows.push(vec![
            name.clone(),
            api_str(&s["labels"]),
            f(last),
            f(lo),
            f(sum / pts.len() as f64),
            f(hi),
            time_fmt::rfc3339(last_ts),
        ]);
    }
    table(
        &["METRIC", "SUBJECT", "LATEST", "MIN", "AVG", "MAX", "AT"],
        &rows,
    )
}

/// `GET .../logs` items as records for [`logs_table`].
pub fn api_log_records(items: &[serde_json::Value]) -> Vec<aftercare_shared::model::LogRecord> {
    items
        .iter()
        .map(|r| {
            let ts = api_time(&r["ts"]).unwrap_or(0);
            aftercare_shared::model::LogRecord {
                source: api_str(&r["source"]),
                file: api_str(&r["file"]),
                offset: 0,
                read_at: ts,
                ts: Some(ts),
                severity: aftercare_shared::model::Severity::parse(&api_str(&r["severity"]))
                    .unwrap_or(aftercare_shared::model::Severity::Info),
                line: api_str(&r["message"]),
                part: 0,
            }
        })
        .collect()
}

fn api_clock(v: &serde_json::Value, now: UnixMillis) -> String {
    serde_json::from_value::<crate::sla::ClockStatus>(v.clone()).map_or_else(
        |_| "-".into(),
        |c| crate::findings::view::clock_cell(&c, now),
    )
}

/// `GET /api/v1/findings` items as `findings_table` shows findings.
pub fn api_findings_table(items: &[serde_json::Value], now: UnixMillis) -> String {
    if items.is_empty() {
        return "no findings: nothing the rules flag on any host\n".into();
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|f| {
            let subject = api_str(&f["subject"]);
            vec![
                f["id"].to_string(),
                api_str(&f["level"]),
                format!("{}/{}", api_str(&f["customer"]), api_str(&f["host"])),
                if subject.is_empty() {
                    api_str(&f["rule"])
                } else {
                    format!("{} {subject}", api_str(&f["rule"]))
                },
                api_str(&f["state"]),
                api_time(&f["opened_at"]).map_or_else(String::new, |t| ago(t, now)),
                api_clock(&f["sla"]["respond"], now),
                api_clock(&f["sla"]["restore"], now),
                api_str(&f["title"]),
            ]
        })
        .collect();
    table(
        &[
            "ID", "LEVEL", "HOST", "RULE", "STATE", "OPENED", "RESPOND", "RESTORE", "TITLE",
        ],
        &rows,
    )
}

/// `GET /api/v1/findings/{id}` for a person.
pub fn api_finding_detail(f: &serde_json::Value, now: UnixMillis) -> String {
    let mut s = format!(
        "finding {}: {} {} — {}\nhost      {}/{}\nrule      {} {}\ncategory  {}\nopened    {}\nlast seen {}\n",
        f["id"],
        api_str(&f["level"]),
        api_str(&f["state"]),
        api_str(&f["title"]),
        api_str(&f["customer"]),
        api_str(&f["host"]),
        api_str(&f["rule"]),
        api_str(&f["subject"]),
        api_str(&f["category"]),
        api_str(&f["opened_at"]),
        api_str(&f["last_seen"]),
    );
    for name in ["respond", "restore"] {
        s.push_str(&format!(
            "{name:<9} by {} ({}; contract {})\n",
            api_str(&f["sla"][name]["due"]),
            api_clock(&f["sla"][name], now),
            api_str(&f["contract"])
        ));
    }
    let rec = api_str(&f["recommendation"]);
    if !rec.is_empty() {
        s.push_str(&format!("recommendation: {rec}\n"));
    }
    s.push_str(&format!("evidence: {}\n\ntimeline:\n", f["evidence"]));
    for e in f["timeline"].as_array().into_iter().flatten() {
        let by = e["by"]
            .as_str()
            .map(|b| format!(" by {b}"))
            .unwrap_or_default();
        let note = e["note"]
            .as_str()
            .map(|n| format!(": {n}"))
            .unwrap_or_default();
        s.push_str(&format!(
            "  {}  {}{by}{note}\n",
            api_str(&e["at"]),
            api_str(&e["kind"])
        ));
    }
    s
}

/// `GET /api/v1/diagnostics/{id}` for a person: what ran, how it ended, and its output.
pub fn api_diagnostic(d: &serde_json::Value) -> String {
    let mut s = format!(
        "diagnostic {} {} on {}: {}",
        d["id"],
        api_str(&d["probe"]),
        api_str(&d["host"]),
        api_str(&d["status"]),
    );
    if let Some(code) = d["exit_code"].as_i64() {
        s.push_str(&format!(" (exit {code})"));
    }
    let msg = api_str(&d["message"]);
    if !msg.is_empty() {
        s.push_str(&format!(" — {msg}"));
    }
    s.push_str(&format!(
        "\nasked by {} at {}",
        api_str(&d["requested_by"]),
        api_str(&d["requested_at"])
    ));
    if let Some(f) = d["finding"].as_i64() {
        s.push_str(&format!(" for finding {f}"));
    }
    s.push('\n');
    let out = api_str(&d["output"]);
    if !out.is_empty() {
        s.push('\n');
        s.push_str(&out);
        if !out.ends_with('\n') {
            s.push('\n');
        }
    }
    s
}

/// `GET /api/v1/hosts/{c}/{h}/probes` for a person.
pub fn api_probes(host: &str, v: &serde_json::Value) -> String {
    let mut s = format!(
        "{host}: {}, diagnostics consent {}\n",
        if v["online"] == true {
            "online"
        } else {
            "offline"
        },
        if v["diagnostics_consent"] == true {
            "given"
        } else {
            "NOT given (probes are refused)"
        }
    );
    let rows: Vec<Vec<String>> = v["probes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let args: Vec<String> = p["args"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| api_str(&a["name"]))
                .collect();
            vec![
                api_str(&p["name"]),
                args.join(","),
                p["timeout_ms"]
                    .as_i64()
                    .map_or_else(String::new, |t| format!("{}s", t / 1000)),
                api_str(&p["description"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        s.push_str("no probes offered (the agent is offline, or too old for diagnostics)\n");
    } else {
        s.push_str(&table(&["PROBE", "ARGS", "LIMIT", "WHAT IT SHOWS"], &rows));
    }
    s
}

/// Reports (their API form), newest first.
pub fn api_reports_table(items: &[serde_json::Value]) -> String {
    if items.is_empty() {
        return "no reports yet: each customer's quarter is reported on the first day of the next (`report generate` makes one now)\n".into();
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|r| {
            let status = match r["status"].as_str() {
                Some("running") => format!("running {} %", r["progress"]),
                Some("failed") => format!("failed: {}", api_str(&r["message"])),
                s => s.unwrap_or("").to_string(),
            };
            vec![
                r["id"].to_string(),
                api_str(&r["customer"]),
                api_str(&r["period"]["label"]),
                api_str(&r["lang"]),
                status,
                if r["scheduled"] == true {
                    "quarterly".into()
                } else {
                    api_str(&r["requested_by"])
                },
                api_str(&r["created_at"]),
            ]
        })
        .collect();
    table(
        &[
            "ID", "CUSTOMER", "PERIOD", "LANG", "STATUS", "ASKED BY", "CREATED",
        ],
        &rows,
    )
}

/// The audit trail, newest first.
pub fn audit_table(rows: &[crate::store::AuditRow]) -> String {
    if rows.is_empty() {
        return "no changes recorded in that window\n".into();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|a| {
            vec![
                time_fmt::rfc3339(a.at),
                a.actor.clone(),
                a.role.clone(),
                a.action.clone(),
                a.target.clone(),
                a.outcome.clone(),
                a.detail.clone(),
            ]
        })
        .collect();
    table(
        &[
            "AT", "ACTOR", "ROLE", "ACTION", "TARGET", "OUTCOME", "DETAIL",
        ],
        &cells,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns() {
        let t = table(
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz\n");
    }

    #[test]
    fn summary_reads_like_a_status_page() {
        let g = |name: &str, labels: &str, v: f64| SeriesPoints {
            name: name.into(),
            labels: labels.into(),
            kind: MetricKind::Gauge,
            points: vec![(1000, v)],
        };
        let c = |name: &str, labels: &str, a: f64, b: f64| SeriesPoints {
            name: name.into(),
            labels: labels.into(),
            kind: MetricKind::Counter,
            points: vec![(0, a), (10_000, b)],
        };
        const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
        let s = host_summary(&[
            g("cpu.usage", "", 12.5),
            g("cpu.usage", "core=0", 10.0),
            g("mem.used", "", 2.0 * GIB),
            g("mem.total", "", 8.0 * GIB),
            g(
                "fs.bytes.used",
                "device=/dev/sda1,fstype=ext4,mount=/",
                50.0 * GIB,
            ),
            g(
                "fs.bytes.total",
                "device=/dev/sda1,fstype=ext4,mount=/",
                100.0 * GIB,
            ),
            c("net.rx.bytes", "interface=eth0", 0.0, 20480.0),
            c("net.tx.bytes", "interface=eth0", 0.0, 10240.0),
            c("net.rx.bytes", "interface=lo", 0.0, 1.0),
            c("net.tx.bytes", "interface=lo", 0.0, 1.0),
            c("net.rx.bytes", "interface=ifb0", 0.0, 0.0),
            c("net.tx.bytes", "interface=ifb0", 0.0, 0.0),
            g("system.uptime", "", 3489.6),
        ]);
        assert!(!s.contains("ifb0"), "{s}");
        assert!(s.contains("58.2min"), "{s}");
        assert!(s.contains("12.5% busy"), "{s}");
        assert!(s.contains("2.0 GiB of 8.0 GiB (25%)"), "{s}");
        assert!(s.contains("50.0 GiB of 100.0 GiB (50%)"), "{s}");
        assert!(s.contains("in 2.0 KiB/s, out 1.0 KiB/s"), "{s}");
        assert!(!s.contains("lo"), "{s}");
    }

    #[test]
    fn loss_reads_like_a_sentence() {
        let l = |b, s, r| LossReport {
            dropped_batches: b,
            dropped_samples: s,
            discarded_by_revocation: r,
        };
        let map = |v: &[(&str, LossReport)]| -> BTreeMap<String, LossReport> {
            v.iter().map(|(k, l)| (k.to_string(), *l)).collect()
        };
        assert_eq!(loss_text(&map(&[])), "none");
        assert_eq!(loss_text(&map(&[("metrics", l(0, 0, 0))])), "none");
        assert_eq!(
            loss_text(&map(&[("logs", l(2, 900, 5)), ("metrics", l(3, 120, 0))])),
            "metrics: 3 batches (120 samples) dropped; \
             logs: 2 batches (900 lines) dropped, 5 discarded when consent was revoked"
        );
        assert_eq!(
            loss_text(&map(&[("logs", l(1, 1, 0))])),
            "logs: 1 batch (1 line) dropped"
        );
        assert_eq!(
            loss_text(&map(&[("metrics", l(0, 0, 1))])),
            "metrics: 1 batch discarded when consent was revoked"
        );
        assert_eq!(
            loss_text(&map(&[
                (UNATTRIBUTED, l(4, 40, 0)),
                ("metrics", l(1, 10, 0))
            ])),
            "metrics: 1 batch (10 samples) dropped; \
             scope not recorded: 4 batches (40 samples or lines) dropped"
        );
    }

    #[test]
    fn values_read_well() {
        assert_eq!(
            fmt_value("mem.total", 16.0 * 1024.0 * 1024.0 * 1024.0),
            "16.0 GiB"
        );
        assert_eq!(fmt_value("cpu.usage", 12.345), "12.3%");
        assert_eq!(fmt_value("proc.count", 231.0), "231");
        assert_eq!(fmt_value("load.1", 0.25), "0.250");
        assert_eq!(ago(0, 125_000), "2m ago");
    }
}

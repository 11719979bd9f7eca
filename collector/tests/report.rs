//! The inspection report's numbers against a quarter of history written through the
//! store's own path (commit, compact, retention), with outages, a filling filesystem, an
//! error burst, authentication failures, diagnostics and findings whose SLA clocks were
//! met, breached and still running.

use aftercare_collector::diagnose::record::{DiagnosticResult, NewDiagnostic, Sender, Status};
use aftercare_collector::findings::lifecycle::{self, Event, EventKind};
use aftercare_collector::findings::record::{Change, Clocks, FindingKey, Observed, sla_flag};
use aftercare_collector::report::model::Report;
use aftercare_collector::report::{ReportError, Request, generate};
use aftercare_collector::sla::{FindingTimes, Level, SlaPolicy};
use aftercare_collector::store::{
    BatchData, HOUR_MS, HostHello, HostId, MINUTE_MS, PendingBatch, Retention, Store, open_sqlite,
};
use aftercare_shared::consent::{ConsentRecord, Grant, Scope};
use aftercare_shared::model::{
    HostFacts, LogRecord, LossReport, MetricKind, MetricSnapshot, Sample, Severity, labels,
};
use aftercare_shared::protocol::{Identity, StreamId};

const DAY: i64 = 24 * HOUR_MS;
const STEP: i64 = 5 * MINUTE_MS;
/// 2026-07-01T00:00:00Z: the third quarter.
const FROM: i64 = 1_782_864_000_000;
const TO: i64 = FROM + 92 * DAY;
/// Two days after the quarter: retention has folded its first four days into hourly rollups.
const NOW: i64 = TO + 2 * DAY;

const SLA: &str = r#"
default_contract = "gold"
[contracts.gold]
calendar = "24x7"
L1 = { respond_within = "15m", restore_within = "2h" }
L2 = { respond_within = "30m", restore_within = "8h" }
L3 = { respond_within = "2h", restore_within = "24h" }
L4 = { respond_within = "4h", restore_within = "72h" }
"#;

fn grant(scope: Scope, at: i64, until: Option<i64>) -> Grant {
    Grant {
        scope,
        by: "Ann".into(),
        at,
        until,
    }
}

fn register(
    st: &mut dyn Store,
    host: &str,
    first_seen: i64,
    agent: &str,
    kernel: &str,
    grants: Vec<Grant>,
) -> HostId {
    let identity = Identity {
        customer: "acme".into(),
        host: host.into(),
    };
    let facts = HostFacts {
        hostname: host.into(),
        os_name: "Linux".into(),
        os_version: "9.4".into(),
        kernel: kernel.into(),
        ..HostFacts::default()
    };
    let consent = ConsentRecord { version: 1, grants };
    let hello = HostHello {
        identity: &identity,
        facts: &facts,
        agent_version: agent,
        consent: &consent,
        interval_ms: STEP as u64,
        cert_expires: None,
    };
    st.register_host(&hello, first_seen).unwrap()
}

fn gauge(name: &str, labels: &str, value: f64) -> Sample {
    Sample {
        name: name.into(),
        labels: labels.into(),
        kind: MetricKind::Gauge,
        value,
    }
}

fn counter(name: &str, labels: &str, value: f64) -> Sample {
    Sample {
        kind: MetricKind::Counter,
        ..gauge(name, labels, value)
    }
}

/// One agent tick at `ts`: CPU by the hour of the period (20..29 %), memory at half,
/// `/data` filling at `fill` percent a day from 40 %, `/` flat, 1000 B/s on eth0, the
/// agent at 0.1 % of a core, 20 MB (25 MB once) and 10 kB/s sent.
fn tick(ts: i64, rss: f64, fill: f64) -> Vec<Sample> {
    let secs = (ts - FROM) as f64 / 1000.0;
    let hour = (ts - FROM) / HOUR_MS;
    let data = labels(&[
        ("device", "/dev/sdb1"),
        ("fstype", "xfs"),
        ("mount", "/data"),
    ]);
    let root = labels(&[("device", "/dev/sda1"), ("fstype", "ext4"), ("mount", "/")]);
    let eth0 = labels(&[("interface", "eth0")]);
    let lo = labels(&[("interface", "lo")]);
    let tb = 1e12;
    vec![
        // Shifted so the outages fall on busy hours and leave the median at 24.
        gauge("cpu.usage", "", 20.0 + ((hour + 5) % 10) as f64),
        gauge("cpu.usage", "cpu=0", 99.0),
        gauge("mem.used", "", 4e9),
        gauge("mem.total", "", 8e9),
        gauge("fs.bytes.total", &data, tb),
        gauge(
            "fs.bytes.used",
            &data,
            tb * (40.0 + fill * secs / 86_400.0) / 100.0,
        ),
        gauge("fs.bytes.total", &root, tb),
        gauge("fs.bytes.used", &root, tb * 0.3),
        counter("net.rx.bytes", &eth0, 1e9 + 1000.0 * secs),
        counter("net.tx.bytes", &eth0, 2000.0 * secs),
        counter("net.rx.bytes", &lo, 1e6 * secs),
        counter("agent.cpu", "", 0.001 * secs),
        gauge("agent.memory.rss", "", rss),
        counter("agent.sent.bytes", "", 10_000.0 * secs),
    ]
}

/// Metrics every 5 minutes over `[from, to)` except in `gaps`, committed in groups.
fn history(st: &mut dyn Store, host: HostId, span: (i64, i64), gaps: &[(i64, i64)], fill: f64) {
    let (from, to) = span;
    let mut group = Vec::new();
    let mut seq = 0;
    let mut t = from;
    while t < to {
        if !gaps.iter().any(|&(a, b)| t >= a && t < b) {
            seq += 1;
            let ts = t + 30_000;
            let rss = if t == FROM + 70 * DAY { 25e6 } else { 20e6 };
            group.push(PendingBatch {
                host,
                stream: StreamId::Metrics,
                seq,
                received_at: ts + 50,
                data: BatchData::Metrics(MetricSnapshot {
                    ts,
                    samples: tick(ts, rss, fill),
                }),
                loss: LossReport::default(),
            });
        }
        if group.len() == 2000 {
            st.commit(&group).unwrap();
            group.clear();
        }
        t += STEP;
    }
    st.commit(&group).unwrap();
}

fn log(source: &str, ts: i64, severity: Severity, line: &str) -> LogRecord {
    LogRecord {
        source: source.into(),
        file: format!("/var/log/{source}.log"),
        offset: 0,
        read_at: ts + 100,
        ts: Some(ts),
        severity,
        line: line.into(),
        part: 0,
    }
}

fn logs(st: &mut dyn Store, host: HostId, seq: u64, records: Vec<LogRecord>) {
    st.commit(&[PendingBatch {
        host,
        stream: StreamId::Logs,
        seq,
        received_at: records.last().unwrap().read_at,
        data: BatchData::Logs(records),
        loss: LossReport::default(),
    }])
    .unwrap();
}

struct Spec {
    host: HostId,
    rule: &'static str,
    level: u8,
    category: &'static str,
    opened: i64,
    acked: Option<i64>,
    resolved: Option<(i64, bool)>,
}

/// A finding as the engine and the engineers would leave it: opened with its clocks from
/// the policy, breaches escalated, acknowledged, resolved (by hand or automatically).
fn finding(st: &mut dyn Store, policy: &SlaPolicy, s: &Spec) -> i64 {
    let sla = policy.finding_sla(
        "acme",
        Level::from_number(s.level),
        FindingTimes {
            raised_at: s.opened,
            ..FindingTimes::default()
        },
        s.opened,
    );
    let id = st
        .apply_finding(&Change::Open {
            key: FindingKey {
                host: s.host,
                rule: s.rule.into(),
                subject: String::new(),
            },
            observed: Observed {
                level: s.level,
                category: s.category.into(),
                title: format!("{} title", s.rule),
                recommendation: format!("do something about {}", s.rule),
                evidence: "{}".into(),
                at: s.opened,
            },
            clocks: Clocks {
                from: s.opened,
                respond_by: Some(sla.respond.due),
                restore_by: Some(sla.restore.due),
            },
        })
        .unwrap();
    let current = |st: &mut dyn Store| st.finding(id).unwrap().unwrap().0.current();
    if let Some(at) = s.acked {
        let e = lifecycle::acknowledge(&current(st), None, "bob", at).unwrap();
        st.apply_finding(&Change::Act { id, event: e }).unwrap();
    }
    if let Some((at, by_hand)) = s.resolved {
        if at > sla.restore.due {
            st.apply_finding(&Change::Escalate {
                id,
                flag: sla_flag::RESTORE_BREACHED,
                event: Event {
                    at: sla.restore.due,
                    kind: EventKind::Breached,
                    by: None,
                    note: Some("restore".into()),
                },
            })
            .unwrap();
        }
        if by_hand {
            let e = lifecycle::resolve(&current(st), "bob", Some("fixed"), at).unwrap();
            st.apply_finding(&Change::Act { id, event: e }).unwrap();
        } else {
            st.apply_finding(&Change::AutoResolve { id, at }).unwrap();
        }
    }
    id
}

fn diagnostic(st: &mut dyn Store, host: HostId, at: i64, status: Status) {
    let id = st
        .add_diagnostic(
            &NewDiagnostic {
                host,
                probe: "processes".into(),
                args: Vec::new(),
                finding: None,
                requested_by: "bob".into(),
                requested_at: at,
            },
            Sender::ThisCollector,
            i64::MAX,
        )
        .unwrap();
    st.finish_diagnostic(
        id,
        &DiagnosticResult {
            status,
            finished_at: at + 1000,
            exit_code: Some(0),
            truncated: false,
            output: b"ok".to_vec(),
            message: String::new(),
        },
    )
    .unwrap();
}

struct Ids {
    l1: i64,
    l2: i64,
    l3: i64,
    l4: i64,
}

/// The quarter: db1 with two outages, `/data` filling, an error burst, an L1 whose restore
/// was late and an L2 open at the end; web1 always up, with an old agent and kernel, an
/// auth-failure burst and its L4; app1 first seen mid-quarter and silent for its last
/// four days, with an L3 opened just before the end.
fn build(st: &mut dyn Store, policy: &SlaPolicy) -> Ids {
    let version = aftercare_shared::VERSION;
    let db1 = register(
        st,
        "db1",
        FROM - DAY,
        version,
        "5.14.0-427.el9.x86_64",
        vec![
            grant(Scope::Metrics, FROM - 10 * DAY, None),
            grant(Scope::Logs, FROM + 20 * DAY, None),
            grant(Scope::Diagnostics, FROM - 10 * DAY, Some(TO + 10 * DAY)),
        ],
    );
    let web1 = register(
        st,
        "web1",
        FROM - DAY,
        "0.0.9",
        "4.19.90-2107.6.0.0100.oe1.x86_64",
        vec![
            grant(Scope::Metrics, FROM - 10 * DAY, None),
            grant(Scope::Logs, FROM - 10 * DAY, Some(FROM + 80 * DAY)),
        ],
    );
    let app1 = register(
        st,
        "app1",
        FROM + 46 * DAY,
        version,
        "6.1.0-18-amd64",
        vec![grant(Scope::Metrics, FROM + 45 * DAY, None)],
    );
    let outage1 = (FROM + 10 * DAY + 2 * HOUR_MS, FROM + 10 * DAY + 5 * HOUR_MS);
    let outage2 = (
        FROM + 50 * DAY + 12 * HOUR_MS,
        FROM + 50 * DAY + 12 * HOUR_MS + 30 * MINUTE_MS,
    );
    history(st, db1, (FROM - DAY, TO + DAY), &[outage1, outage2], 0.5);
    history(st, web1, (FROM - DAY, TO + DAY), &[], 0.0);
    history(st, app1, (FROM + 46 * DAY, FROM + 88 * DAY), &[], 0.0);
    st.compact(NOW).unwrap();
    while st
        .retain_some(NOW, &Retention::default(), 10_000)
        .unwrap()
        .more
    {}

    // db1's burst on day 30: 150 errors and 20 warnings of the app, 3 critical kernel
    // lines, 50 lines of info that are not counted; one error before the quarter.
    let burst = FROM + 30 * DAY + 10 * HOUR_MS;
    let mut records = Vec::new();
    for i in 0..150 {
        records.push(log("app", burst + i * 1000, Severity::Error, "db timeout"));
    }
    for i in 0..20 {
        records.push(log("app", burst + i * 500, Severity::Warning, "slow query"));
    }
    for i in 0..3 {
        records.push(log(
            "kernel",
            burst + i,
            Severity::Critical,
            "EXT4-fs error",
        ));
    }
    for i in 0..50 {
        records.push(log("app", burst + i, Severity::Info, "request served"));
    }
    logs(st, db1, 1, records);
    logs(
        st,
        db1,
        2,
        vec![log(
            "app",
            FROM - HOUR_MS,
            Severity::Error,
            "before the quarter",
        )],
    );
    // web1: 30 failed logins on day 40, 5 on day 41, and some on the day after the quarter.
    let fail = "sshd[812]: Failed password for root from 203.0.113.9 port 52211 ssh2";
    let mut records = Vec::new();
    for i in 0..30 {
        records.push(log(
            "auth",
            FROM + 40 * DAY + i * 1000,
            Severity::Info,
            fail,
        ));
    }
    for i in 0..5 {
        records.push(log(
            "auth",
            FROM + 41 * DAY + i * 1000,
            Severity::Info,
            fail,
        ));
    }
    records.push(log(
        "auth",
        FROM + 41 * DAY,
        Severity::Info,
        "Accepted publickey for ops",
    ));
    logs(st, web1, 1, records);
    logs(
        st,
        web1,
        2,
        (0..7)
            .map(|i| log("auth", TO + HOUR_MS + i, Severity::Info, fail))
            .collect(),
    );

    diagnostic(st, db1, FROM + 10 * DAY + 3 * HOUR_MS, Status::Done);
    diagnostic(st, db1, FROM + 60 * DAY, Status::Done);
    diagnostic(st, db1, FROM + 61 * DAY, Status::Refused);
    diagnostic(st, db1, FROM - DAY, Status::Done);

    // Resolved before the quarter, and opened after it: neither is in the report.
    finding(
        st,
        policy,
        &Spec {
            host: db1,
            rule: "old",
            level: 3,
            category: "performance",
            opened: FROM - 10 * DAY,
            acked: None,
            resolved: Some((FROM - 9 * DAY, true)),
        },
    );
    finding(
        st,
        policy,
        &Spec {
            host: web1,
            rule: "later",
            level: 4,
            category: "software",
            opened: TO + HOUR_MS,
            acked: None,
            resolved: None,
        },
    );
    // db1 silent: acknowledged in 10 minutes (met), resolved after 2 h 50 (restore 2 h:
    // breached by 50 minutes).
    let silent = outage1.0 + 15 * MINUTE_MS;
    let l1 = finding(
        st,
        policy,
        &Spec {
            host: db1,
            rule: "host-silent",
            level: 1,
            category: "availability",
            opened: silent,
            acked: Some(silent + 10 * MINUTE_MS),
            resolved: Some((outage1.1 + 5 * MINUTE_MS, true)),
        },
    );
    // db1 filling: opened an hour before the end, acknowledged in 10 minutes, still open.
    let l2 = finding(
        st,
        policy,
        &Spec {
            host: db1,
            rule: "fs-filling",
            level: 2,
            category: "capacity",
            opened: TO - HOUR_MS,
            acked: Some(TO - 50 * MINUTE_MS),
            resolved: None,
        },
    );
    // web1's failed logins: cleared by itself after 30 minutes, both clocks met.
    let l4 = finding(
        st,
        policy,
        &Spec {
            host: web1,
            rule: "auth-failures",
            level: 4,
            category: "security",
            opened: FROM + 40 * DAY,
            acked: None,
            resolved: Some((FROM + 40 * DAY + 30 * MINUTE_MS, false)),
        },
    );
    // app1 saturated half an hour before the end: both clocks still running.
    let l3 = finding(
        st,
        policy,
        &Spec {
            host: app1,
            rule: "cpu-saturated",
            level: 3,
            category: "performance",
            opened: TO - 30 * MINUTE_MS,
            acked: None,
            resolved: None,
        },
    );
    Ids { l1, l2, l3, l4 }
}

fn request() -> Request {
    Request {
        customer: "acme".into(),
        from: FROM,
        to: TO,
        period_label: "2026-Q3".into(),
        time_zone: "UTC".into(),
        lang: "en".into(),
        previous: None,
    }
}

fn near(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn a_quarter_of_history_gives_the_numbers_that_were_written_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = open_sqlite(&dir.path().join("c.db")).unwrap();
    let policy = SlaPolicy::parse(SLA).unwrap();
    let ids = build(&mut st, &policy);

    let mut seen = Vec::new();
    let r: Report = generate(&mut st, &policy, &request(), NOW, &mut |p| seen.push(p)).unwrap();
    assert_eq!(seen.first(), Some(&0));
    assert_eq!(seen.last(), Some(&100));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");

    // 1. Purpose.
    assert_eq!(r.meta.contract, "gold");
    assert_eq!(r.meta.from, "2026-07-01T00:00:00Z");
    assert_eq!(r.meta.to, "2026-10-01T00:00:00Z");
    let names: Vec<&str> = r.purpose.hosts.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(names, ["app1", "db1", "web1"]);
    assert_eq!(
        r.purpose.hosts[2].kernel,
        "4.19.90-2107.6.0.0100.oe1.x86_64"
    );
    assert!(r.purpose.inspected.contains(&"logs".to_string()));
    let db1c = &r.purpose.consent[1];
    assert_eq!(db1c.scopes_in_force, ["metrics", "logs", "diagnostics"]);
    assert_eq!(db1c.expires_at.as_deref(), Some("2026-10-11T00:00:00Z"));
    assert_eq!(db1c.changes.len(), 1);
    assert_eq!(
        (
            db1c.changes[0].scope.as_str(),
            db1c.changes[0].change.as_str()
        ),
        ("logs", "granted")
    );
    assert_eq!(db1c.changes[0].at, "2026-07-21T00:00:00Z");
    let web1c = &r.purpose.consent[2];
    assert_eq!(web1c.scopes_in_force, ["metrics"]);
    assert_eq!(
        (
            web1c.changes[0].change.as_str(),
            web1c.changes[0].at.as_str()
        ),
        ("expired", "2026-09-19T00:00:00Z")
    );

    // 2. Impact: the agent's own cost as written (0.1 % of a core, 20 MB with one 25 MB
    // tick, 10 kB/s), and the diagnostics that ran in the quarter.
    let fp = &r.impact.hosts[1];
    assert_eq!(fp.host, "db1");
    assert!(near(fp.cpu_percent_mean.unwrap(), 0.1, 1e-6), "{fp:?}");
    assert!(near(fp.cpu_percent_p95.unwrap(), 0.1, 1e-6));
    assert!(near(fp.memory_bytes_mean.unwrap(), 20e6, 1e3));
    assert_eq!(fp.memory_bytes_max, Some(25e6));
    assert!(near(fp.bytes_sent_per_day.unwrap(), 864e6, 1.0), "{fp:?}");
    assert_eq!(fp.diagnostics_run, 2);
    assert_eq!(r.impact.hosts[2].diagnostics_run, 0);

    // 3. Availability: db1 lost 3 h and 30 min of 92 days; web1 none; app1 was expected
    // from day 46 and silent from day 88 to the end.
    let [app1, db1, web1] = &r.inspection.hosts[..] else {
        panic!("three hosts")
    };
    assert_eq!(db1.availability.expected_ms, 92 * DAY);
    assert_eq!(
        db1.availability.online_ms,
        92 * DAY - 3 * HOUR_MS - 30 * MINUTE_MS
    );
    let pct = 100.0 * (26_496.0 - 42.0) / 26_496.0;
    assert!(near(db1.availability.percent.unwrap(), pct, 1e-9));
    let outages: Vec<(&str, &str, i64)> = db1
        .availability
        .outages
        .iter()
        .map(|o| (o.from.as_str(), o.to.as_str(), o.duration_ms))
        .collect();
    assert_eq!(
        outages,
        [
            ("2026-07-11T02:00:00Z", "2026-07-11T05:00:00Z", 3 * HOUR_MS),
            (
                "2026-08-20T12:00:00Z",
                "2026-08-20T12:30:00Z",
                30 * MINUTE_MS
            ),
        ]
    );
    assert_eq!(web1.availability.percent, Some(100.0));
    assert!(web1.availability.outages.is_empty());
    assert_eq!(app1.availability.expected_ms, 46 * DAY);
    assert_eq!(app1.availability.online_ms, 42 * DAY);
    assert_eq!(app1.availability.outages.len(), 1);
    assert_eq!(app1.availability.outages[0].from, "2026-09-27T00:00:00Z");
    assert_eq!(app1.availability.outages[0].to, "2026-10-01T00:00:00Z");

    // Trends: CPU 20..29 % by the hour, memory at half, two filesystems, eth0 both ways
    // (lo left out); daily points.
    let kinds: Vec<(&str, &str)> = db1
        .trends
        .iter()
        .map(|t| (t.resource.as_str(), t.subject.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("cpu", ""),
            ("memory", ""),
            ("filesystem", "/"),
            ("filesystem", "/data"),
            ("network_rx", "eth0"),
            ("network_tx", "eth0"),
        ]
    );
    let cpu = &db1.trends[0];
    assert_eq!(
        (cpu.p50, cpu.p95, cpu.max),
        (Some(24.0), Some(29.0), Some(29.0))
    );
    assert_eq!(cpu.points.len(), 92);
    assert_eq!(cpu.points[0].0, FROM);
    assert!(near(db1.trends[1].p95.unwrap(), 50.0, 1e-9));
    assert!(
        near(db1.trends[4].p50.unwrap(), 1000.0, 1e-6),
        "{:?}",
        db1.trends[4].p50
    );
    assert!(near(db1.trends[5].max.unwrap(), 2000.0, 1e-6));
    let data = &db1.trends[3];
    assert!(
        near(data.points[20].1, 40.0 + 0.5 * 20.5, 0.01),
        "{:?}",
        data.points[20]
    );

    // Forecast: /data at half a percent a day from 40 % on July 1 is full 120 days later.
    let f = db1.forecasts.iter().find(|f| f.mount == "/data").unwrap();
    assert!(near(f.growth_percent_per_day, 0.5, 1e-3), "{f:?}");
    assert!(near(f.used_percent, 40.0 + 0.5 * 91.5, 0.01), "{f:?}");
    let full = f.full_at.as_deref().unwrap();
    assert!(
        full.starts_with("2026-10-29") || full.starts_with("2026-10-28T2"),
        "{full}"
    );
    assert!(near(f.days_left.unwrap(), 28.0, 1.0));
    let root = db1.forecasts.iter().find(|f| f.mount == "/").unwrap();
    assert_eq!(root.full_at, None);

    // Logs: the burst by source and severity; the line before the quarter is not counted.
    let counts: Vec<(&str, &str, u64)> = db1
        .log_errors
        .iter()
        .map(|c| (c.source.as_str(), c.severity.as_str(), c.count))
        .collect();
    assert_eq!(
        counts,
        [
            ("app", "error", 150),
            ("app", "warning", 20),
            ("kernel", "crit", 3)
        ]
    );

    // Findings: one per level, the old and the later ones left out.
    let s = &r.inspection.findings;
    let by_level: Vec<(&str, u64)> = s.by_level.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    assert_eq!(by_level, [("L1", 1), ("L2", 1), ("L3", 1), ("L4", 1)]);
    let ids_listed: Vec<i64> = s.items.iter().map(|f| f.id).collect();
    assert_eq!(ids_listed, [ids.l1, ids.l2, ids.l3, ids.l4]);
    let l1 = &s.items[0];
    assert_eq!(
        (l1.respond.as_str(), l1.restore.as_str()),
        ("met", "breached")
    );
    assert_eq!(l1.state, "resolved");
    let kinds: Vec<&str> = l1.timeline.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["opened", "acknowledged", "SLA breached", "resolved"]
    );
    assert_eq!(
        (s.items[1].respond.as_str(), s.items[1].restore.as_str()),
        ("met", "running")
    );
    assert_eq!(s.items[1].state, "acknowledged");
    assert_eq!(
        (s.items[2].respond.as_str(), s.items[2].restore.as_str()),
        ("running", "running")
    );
    assert_eq!(
        (s.items[3].respond.as_str(), s.items[3].restore.as_str()),
        ("met", "met")
    );

    // SLA: 4 clocks met, 1 breached (the L1's restore, 50 minutes late), 3 running.
    let sla = &r.inspection.sla;
    assert_eq!((sla.met, sla.breached, sla.running), (4, 1, 3));
    assert_eq!(sla.met_percent, Some(80.0));
    assert_eq!(sla.breaches.len(), 1);
    let b = &sla.breaches[0];
    assert_eq!((b.finding, b.clock.as_str()), (ids.l1, "restore"));
    assert_eq!(b.due, "2026-07-11T04:15:00Z");
    assert_eq!(b.stopped_at.as_deref(), Some("2026-07-11T05:05:00Z"));
    assert_eq!(b.late_ms, 50 * MINUTE_MS);

    // 4. Security.
    let sec = &r.security;
    assert_eq!(sec.findings.len(), 1);
    assert_eq!(sec.findings[0].id, ids.l4);
    assert_eq!(sec.auth_failures.len(), 1);
    let a = &sec.auth_failures[0];
    assert_eq!((a.host.as_str(), a.count), ("web1", 35));
    assert_eq!((a.peak_day.as_str(), a.peak_count), ("2026-08-10", 30));
    let exp: Vec<(&str, &str, &str)> = sec
        .consent_expiring
        .iter()
        .map(|e| (e.host.as_str(), e.what.as_str(), e.at.as_str()))
        .collect();
    assert_eq!(
        exp,
        [("db1", "consent:diagnostics", "2026-10-11T00:00:00Z")]
    );
    let old: Vec<(&str, &str, &str)> = sec
        .outdated
        .iter()
        .map(|o| (o.host.as_str(), o.what.as_str(), o.current.as_str()))
        .collect();
    assert_eq!(
        old,
        [
            ("web1", "agent", aftercare_shared::VERSION),
            ("web1", "kernel", "5.10")
        ]
    );

    // 5. Grades by the stated rules: app1 D (availability), db1 C (a breach, an L2 open at
    // the end, /data full within 30 days), web1 B (a finding); the customer D.
    let grades: Vec<(&str, &str)> = r
        .conclusion
        .hosts
        .iter()
        .map(|h| (h.host.as_str(), h.grade.as_str()))
        .collect();
    assert_eq!(grades, [("app1", "D"), ("db1", "C"), ("web1", "B")]);
    assert_eq!(r.conclusion.grade, "D");
    let db1g = &r.conclusion.hosts[1].reasons;
    for key in [
        "sla_breach=1",
        "open_l2=1",
        "fs_full_within_30d=/data",
        "finding_in_period=2",
    ] {
        assert!(db1g.contains(&key.to_string()), "{key} in {db1g:?}");
    }
    assert!(r.conclusion.hosts[0].reasons[0].starts_with("availability_below_95=91.30"));
    let recs = &r.conclusion.recommendations;
    assert_eq!(recs[0].priority, 1);
    assert_eq!(
        (recs[0].kind.as_str(), recs[0].evidence.clone()),
        ("sla_breach", format!("breach:{}:restore", ids.l1))
    );
    assert_eq!(recs[1].kind, "fs_full");
    assert!(
        recs.iter()
            .any(|r| r.evidence == format!("finding:{}", ids.l2))
    );
    assert!(
        recs.iter()
            .any(|r| r.kind == "outdated_kernel" && r.host == "web1")
    );
    assert!(r.conclusion.previous.is_none());

    // The next quarter compares with this one.
    let mut next = request();
    next.from = TO;
    next.to = NOW;
    next.period_label = "2026-Q4".into();
    next.previous = Some(r.clone());
    let r2 = generate(&mut st, &policy, &next, NOW, &mut |_| {}).unwrap();
    let p = r2.conclusion.previous.unwrap();
    assert_eq!(
        (p.period_label.as_str(), p.grade.as_str(), p.findings),
        ("2026-Q3", "D", 4)
    );
    assert_eq!(p.sla_met_percent, Some(80.0));
    let expected = 92 * DAY * 2 + 46 * DAY;
    let online = 92 * DAY - 3 * HOUR_MS - 30 * MINUTE_MS + 92 * DAY + 42 * DAY;
    assert!(near(
        p.availability_percent.unwrap(),
        100.0 * online as f64 / expected as f64,
        1e-9
    ));
}

#[test]
fn bad_requests_are_refused_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = open_sqlite(&dir.path().join("c.db")).unwrap();
    let policy = SlaPolicy::parse(SLA).unwrap();
    register(&mut st, "db1", FROM, "0.1.0", "6.1.0", Vec::new());
    let run = |st: &mut dyn Store, req: Request| {
        generate(st, &policy, &req, NOW, &mut |_| {}).unwrap_err()
    };
    let e = run(
        &mut st,
        Request {
            customer: "initech".into(),
            ..request()
        },
    );
    assert!(matches!(e, ReportError::UnknownCustomer(_)));
    assert!(e.to_string().contains("initech"), "{e}");
    let e = run(
        &mut st,
        Request {
            time_zone: "Mars/Olympus".into(),
            ..request()
        },
    );
    assert!(e.to_string().contains("time_zone 'Mars/Olympus'"), "{e}");
    let e = run(
        &mut st,
        Request {
            lang: "fr".into(),
            ..request()
        },
    );
    assert!(e.to_string().contains("lang 'fr'"), "{e}");
    let e = run(
        &mut st,
        Request {
            from: TO,
            ..request()
        },
    );
    assert!(matches!(e, ReportError::EmptyPeriod { .. }), "{e}");
    // A zone other than UTC is accepted, and the customer with a host is reported on.
    let ok = generate(
        &mut st,
        &policy,
        &Request {
            time_zone: "Asia/Shanghai".into(),
            lang: "zh-CN".into(),
            ..request()
        },
        NOW,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(ok.purpose.hosts.len(), 1);
    assert_eq!(ok.inspection.hosts[0].availability.online_ms, 0);
}

//! How long the quarterly inspection report takes: one customer with
//! `AFTERCARE_BENCH_HOSTS` hosts (default 100) and `AFTERCARE_BENCH_DAYS` days of history
//! (default 90), then `report::generate` for the customer over those days, timed.
//!
//! History goes through the store's own write path (commit, compact, retention), as the
//! collector would have left it two days after the period: raw points past 14 days
//! dropped, the oldest days' 5-minute rollups folded into hourly ones. Each host has about
//! 70 series (CPU per core, memory, swap, three filesystems, two disks, two interfaces, the
//! agent's own), written once per 5 minutes: the rollups a report reads are the same as at
//! a 10-second interval (one bucket per series and 5 minutes), and writing is 30 times
//! quicker. Each host also has a day's log batch with errors and failed logins, a few
//! findings and diagnostics. `AFTERCARE_BENCH_DIR` keeps the database somewhere.

mod common;

use aftercare_collector::diagnose::record::{DiagnosticResult, NewDiagnostic, Sender, Status};
use aftercare_collector::findings::record::{Change, Clocks, FindingKey, Observed};
use aftercare_collector::report::{Request, generate};
use aftercare_collector::sla::SlaPolicy;
use aftercare_collector::store::{
    BatchData, HOUR_MS, HostHello, HostId, MINUTE_MS, PendingBatch, Resolution, Retention,
    SqliteStore, Store, open_sqlite,
};
use aftercare_shared::consent::{ConsentRecord, Grant, Scope};
use aftercare_shared::model::{
    HostFacts, LogRecord, LossReport, MetricKind, MetricSnapshot, Sample, Severity, labels,
};
use aftercare_shared::protocol::{Identity, StreamId};
use common::{Rng, T0, env_or, thousands};
use std::time::Instant;

const DAY: i64 = 24 * HOUR_MS;
const STEP: i64 = 5 * MINUTE_MS;

struct Series {
    name: &'static str,
    labels: String,
    kind: MetricKind,
}

fn series() -> Vec<Series> {
    let mut out = Vec::new();
    let mut add = |name: &'static str, labels: String, kind: MetricKind| {
        out.push(Series { name, labels, kind })
    };
    use MetricKind::{Counter, Gauge};
    add("cpu.usage", String::new(), Gauge);
    for c in 0..4 {
        add("cpu.usage", labels(&[("cpu", &c.to_string())]), Gauge);
    }
    for n in ["cpu.user", "cpu.system", "cpu.iowait", "cpu.steal"] {
        add(n, String::new(), Gauge);
    }
    for n in ["load.1", "load.5", "load.15", "proc.count", "proc.threads"] {
        add(n, String::new(), Gauge);
    }
    for n in [
        "mem.total",
        "mem.used",
        "mem.available",
        "mem.free",
        "mem.cached",
        "swap.total",
        "swap.used",
    ] {
        add(n, String::new(), Gauge);
    }
    for (dev, mount) in [
        ("/dev/sda1", "/"),
        ("/dev/sda2", "/var"),
        ("/dev/sdb1", "/data"),
    ] {
        let l = labels(&[("device", dev), ("fstype", "xfs"), ("mount", mount)]);
        for n in [
            "fs.bytes.total",
            "fs.bytes.used",
            "fs.bytes.available",
            "fs.inodes.total",
            "fs.inodes.used",
            "fs.inodes.free",
        ] {
            add(n, l.clone(), Gauge);
        }
    }
    for d in ["sda", "sdb"] {
        let l = labels(&[("device", d)]);
        for n in [
            "disk.read.bytes",
            "disk.write.bytes",
            "disk.read.ops",
            "disk.write.ops",
            "disk.io.time",
        ] {
            add(n, l.clone(), Counter);
        }
    }
    for i in ["eth0", "lo"] {
        let l = labels(&[("interface", i)]);
        for n in [
            "net.rx.bytes",
            "net.rx.packets",
            "net.rx.errors",
            "net.rx.drops",
            "net.tx.bytes",
            "net.tx.packets",
            "net.tx.errors",
            "net.tx.drops",
        ] {
            add(n, l.clone(), Counter);
        }
    }
    add("system.uptime", String::new(), Gauge);
    add("agent.cpu", String::new(), Counter);
    add("agent.memory.rss", String::new(), Gauge);
    add("agent.threads", String::new(), Gauge);
    add("agent.sent.bytes", String::new(), Counter);
    add("agent.collect.time", String::new(), Gauge);
    out
}

/// A plausible value of series `i` at `secs` into the history.
fn value(s: &Series, i: usize, secs: f64, rng: &mut Rng, fill: f64) -> f64 {
    match (s.name, s.kind) {
        ("fs.bytes.total", _) | ("mem.total", _) | ("swap.total", _) => 1e12,
        ("fs.bytes.used", _) if s.labels.contains("/data") => 1e12 * (0.3 + fill * secs / 8.64e6),
        ("fs.bytes.used", _) => 1e12 * 0.4,
        (_, MetricKind::Counter) => secs * (1000.0 + i as f64 * 10.0),
        _ => (30.0 + 10.0 * rng.normal()).clamp(0.0, 100.0),
    }
}

fn main() {
    let hosts = env_or("AFTERCARE_BENCH_HOSTS", 100) as i64;
    let days = env_or("AFTERCARE_BENCH_DAYS", 90) as i64;
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = std::env::var_os("AFTERCARE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let path = dir.join("report-bench.db");
    // `AFTERCARE_BENCH_REUSE=1` times the report again over a database a run left in
    // `AFTERCARE_BENCH_DIR` (with the same hosts and days).
    let reuse = env_or("AFTERCARE_BENCH_REUSE", 0) == 1 && path.exists();
    if !reuse {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    let mut st = open_sqlite(&path).expect("open the database");
    let policy = SlaPolicy::parse(
        r#"
default_contract = "gold"
[contracts.gold]
calendar = "24x7"
L1 = { respond_within = "15m", restore_within = "2h" }
L2 = { respond_within = "30m", restore_within = "8h" }
L3 = { respond_within = "2h", restore_within = "24h" }
L4 = { respond_within = "4h", restore_within = "72h" }
"#,
    )
    .expect("policy");
    let (from, to) = (T0, T0 + days * DAY);
    let now = to + 2 * DAY;
    let all = series();
    println!("aftercare report benchmark: SQLite");
    println!(
        "history: {hosts} hosts x {} series every 5 min for {days} days, written through commit, compact and retention",
        all.len()
    );

    if !reuse {
        write_history(&mut st, hosts, days, &all);
    }
    let req = Request {
        customer: "bigcorp".into(),
        from,
        to,
        period_label: format!("{days} days"),
        time_zone: "Asia/Shanghai".into(),
        lang: "en".into(),
        previous: None,
    };
    // The largest part of the work on its own: every host's 5-minute rollups.
    let t = Instant::now();
    let mut buckets = 0usize;
    for h in 0..hosts {
        for s in st
            .rollups(
                &format!("bigcorp/host{h:03}"),
                None,
                Resolution::FiveMinutes,
                from,
                to,
            )
            .expect("rollups")
        {
            buckets += s.buckets.len();
        }
    }
    println!(
        "reading every host's 5-minute rollups alone: {:.2} s ({} buckets)",
        t.elapsed().as_secs_f64(),
        thousands(buckets as u64)
    );
    let t = Instant::now();
    let report = generate(&mut st, &policy, &req, now, &mut |_| {}).expect("report");
    let secs = t.elapsed().as_secs_f64();
    let json = serde_json::to_vec(&report).expect("json");
    println!(
        "report: hosts {hosts}, days {days}, seconds {secs:.2} ({} findings, grade {}, {} kB of JSON)",
        report.inspection.findings.items.len(),
        report.conclusion.grade,
        json.len() / 1000
    );
}

/// The history, through commit, compaction and retention as the days go by.
fn write_history(st: &mut SqliteStore, hosts: i64, days: i64, all: &[Series]) {
    let (from, to) = (T0, T0 + days * DAY);
    let now = to + 2 * DAY;
    let consent = ConsentRecord {
        version: 1,
        grants: [Scope::Metrics, Scope::Logs, Scope::Diagnostics]
            .into_iter()
            .map(|scope| Grant {
                scope,
                by: "admin".into(),
                at: from - DAY,
                until: None,
            })
            .collect(),
    };
    let ids: Vec<HostId> = (0..hosts)
        .map(|h| {
            let identity = Identity {
                customer: "bigcorp".into(),
                host: format!("host{h:03}"),
            };
            let facts = HostFacts {
                hostname: identity.host.clone(),
                os_name: "Linux".into(),
                kernel: "5.14.0-427.el9.x86_64".into(),
                ..HostFacts::default()
            };
            st.register_host(
                &HostHello {
                    identity: &identity,
                    facts: &facts,
                    agent_version: aftercare_shared::VERSION,
                    consent: &consent,
                    interval_ms: STEP as u64,
                    cert_expires: None,
                },
                from - DAY,
            )
            .expect("register")
        })
        .collect();

    let write = Instant::now();
    let mut rng = Rng(7);
    let mut group: Vec<PendingBatch> = Vec::with_capacity(4096);
    let mut seq = vec![0u64; ids.len()];
    let mut samples = 0u64;
    for day in 0..days {
        for k in 0..DAY / STEP {
            let ts = from + day * DAY + k * STEP + 10_000;
            let secs = (ts - from) as f64 / 1000.0;
            for (h, &id) in ids.iter().enumerate() {
                // A host in ten is down for an hour on its day.
                if h as i64 % 10 == 0 && day == h as i64 % days && k < 12 {
                    continue;
                }
                let fill = (h % 7) as f64 * 0.1;
                seq[h] += 1;
                let s: Vec<Sample> = all
                    .iter()
                    .enumerate()
                    .map(|(i, s)| Sample {
                        name: s.name.into(),
                        labels: s.labels.clone(),
                        kind: s.kind,
                        value: value(s, i, secs, &mut rng, fill),
                    })
                    .collect();
                samples += s.len() as u64;
                group.push(PendingBatch {
                    host: id,
                    stream: StreamId::Metrics,
                    seq: seq[h],
                    received_at: ts + 50,
                    data: BatchData::Metrics(MetricSnapshot { ts, samples: s }),
                    loss: LossReport::default(),
                });
            }
            if group.len() >= 4000 {
                st.commit(&group).expect("commit");
                group.clear();
            }
        }
        st.commit(&group).expect("commit");
        group.clear();
        // Logs: a day's batch per host with errors, warnings and failed logins.
        let logs: Vec<PendingBatch> = ids
            .iter()
            .map(|&id| {
                let records: Vec<LogRecord> = (0..60)
                    .map(|i| {
                        let ts = from + day * DAY + i * 60_000;
                        let (source, severity, line) = match i % 4 {
                            0 => ("app", Severity::Error, "request failed: upstream timeout"),
                            1 => ("app", Severity::Warning, "slow query"),
                            2 => (
                                "auth",
                                Severity::Info,
                                "sshd[1]: Failed password for root from 192.0.2.1 port 22 ssh2",
                            ),
                            _ => ("app", Severity::Info, "request served"),
                        };
                        LogRecord {
                            source: source.into(),
                            file: format!("/var/log/{source}.log"),
                            offset: i as u64 * 100,
                            read_at: ts + 100,
                            ts: Some(ts),
                            severity,
                            line: line.into(),
                            part: 0,
                        }
                    })
                    .collect();
                PendingBatch {
                    host: id,
                    stream: StreamId::Logs,
                    seq: day as u64 + 1,
                    received_at: from + day * DAY + HOUR_MS,
                    data: BatchData::Logs(records),
                    loss: LossReport::default(),
                }
            })
            .collect();
        st.commit(&logs).expect("commit logs");
        // As the writer thread does: compaction, then retention, as time goes by (raw
        // points past 14 days are dropped, which also keeps the file small).
        let day_end = from + (day + 1) * DAY + 15 * MINUTE_MS;
        st.compact(day_end).expect("compact");
        while st
            .retain_some(day_end, &Retention::default(), 10_000)
            .expect("retention")
            .more
        {}
        st.checkpoint().expect("checkpoint");
    }
    st.compact(now).expect("compact");
    while st
        .retain_some(now, &Retention::default(), 10_000)
        .expect("retention")
        .more
    {}
    // Findings and diagnostics: a few per host.
    for (h, &id) in ids.iter().enumerate() {
        for (n, level) in [(0i64, 4u8), (1, 3), (2, 2)] {
            let at = from + ((h as i64 * 7 + n * 13) % days) * DAY + HOUR_MS;
            st.apply_finding(&Change::Open {
                key: FindingKey {
                    host: id,
                    rule: format!("rule{n}"),
                    subject: String::new(),
                },
                observed: Observed {
                    level,
                    category: "performance".into(),
                    title: "bench".into(),
                    recommendation: "look".into(),
                    evidence: "{}".into(),
                    at,
                },
                clocks: Clocks {
                    from: at,
                    respond_by: Some(at + HOUR_MS),
                    restore_by: Some(at + DAY),
                },
            })
            .expect("finding");
        }
        let d = st
            .add_diagnostic(
                &NewDiagnostic {
                    host: id,
                    probe: "processes".into(),
                    args: Vec::new(),
                    finding: None,
                    requested_by: "bench".into(),
                    requested_at: from + DAY,
                },
                Sender::ThisCollector,
                i64::MAX,
            )
            .expect("diagnostic");
        st.finish_diagnostic(
            d,
            &DiagnosticResult {
                status: Status::Done,
                finished_at: from + DAY + 1000,
                exit_code: Some(0),
                truncated: false,
                output: Vec::new(),
                message: String::new(),
            },
        )
        .expect("diagnostic result");
    }
    let stats = st.stats().expect("stats");
    println!(
        "written in {:.1} s: {} samples; database {:.0} MB ({} rollup MB)",
        write.elapsed().as_secs_f64(),
        thousands(samples),
        stats.file_bytes as f64 / 1e6,
        stats.rollup_bytes / 1_000_000
    );
}

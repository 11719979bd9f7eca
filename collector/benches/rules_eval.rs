//! Rule evaluation benchmark: many hosts × the built-in rules on synthetic data held in
//! memory, so that the figure is the engine's own (reading the store is not in it).
//!
//! `cargo bench -p aftercare-collector --bench rules_eval`
//!
//! Environment (all optional): `AFTERCARE_BENCH_HOSTS` (default 1000),
//! `AFTERCARE_BENCH_ROUNDS` (evaluations timed after the first, default 5),
//! `AFTERCARE_BENCH_LOG_LINES` (log lines per host per minute, default 10).
//!
//! Each host has what the built-in rules read, shaped as the store would hand it over: the
//! last 15 minutes at the agent's 10 s for short windows; for the forecasts' long windows
//! (filesystems 24 h, memory 6 h) 5-minute points (rollup means) and the last hour at 10 s.
//! 8 CPU cores plus the total, 5 filesystems (bytes and inodes), 4 network interfaces
//! (packets, errors, drops both ways), 4 temperature sensors, memory, swap, the OOM counter,
//! and an hour of logs from three sources. One host in 50 has trouble (a filesystem filling,
//! a full one, a segfault, failed logins, a hot sensor), so raises are part of the work.

use aftercare_collector::rules::{HostInfo, MemoryObservations, RuleSet, State, evaluate};
use aftercare_shared::consent::{ConsentRecord, Grant, Scope};
use aftercare_shared::model::{LogRecord, MetricKind, Severity, labels};
use std::time::{Duration, Instant};

mod common;
use common::*;

const S: i64 = 1000;
const M: i64 = 60 * S;
const H: i64 = 60 * M;
const TICK: i64 = 10 * S;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
/// When the evaluations run.
const NOW: i64 = T0 + 30 * 24 * H;

/// Timestamps of a series read over `window`: 5-minute points beyond the last hour, then 10 s.
fn times(window: i64) -> impl Iterator<Item = i64> {
    let coarse_from = NOW - window;
    let fine_from = (NOW - window).max(NOW - H);
    let coarse = (0..)
        .map(move |k| coarse_from + k * 5 * M)
        .take_while(move |t| *t < fine_from);
    let fine = (0..)
        .map(move |k| fine_from + k * TICK)
        .take_while(|t| *t <= NOW);
    coarse.chain(fine)
}

struct HostGen<'a> {
    obs: &'a mut MemoryObservations,
    name: String,
    rng: Rng,
    trouble: Option<u64>,
}

impl HostGen<'_> {
    fn gauge(&mut self, metric: &str, labels: &str, window: i64, f: impl Fn(i64, f64) -> f64) {
        let rng = &mut self.rng;
        let points: Vec<_> = times(window).map(|t| (t, f(t, rng.normal()))).collect();
        self.obs
            .extend(&self.name, metric, labels, MetricKind::Gauge, points);
    }

    fn counter(&mut self, metric: &str, labels: &str, per_tick: f64) {
        let mut v = self.rng.unit() * 1e9;
        let mut points = Vec::new();
        for t in times(15 * M) {
            v += (per_tick * (1.0 + 0.2 * self.rng.normal()))
                .max(0.0)
                .round();
            points.push((t, v));
        }
        self.obs
            .extend(&self.name, metric, labels, MetricKind::Counter, points);
    }

    fn log(&mut self, t: i64, source: &str, severity: Severity, line: String) {
        self.obs.push_log(
            &self.name,
            LogRecord {
                source: source.into(),
                file: format!("/var/log/{source}.log"),
                offset: (t - T0) as u64,
                read_at: t + 200,
                ts: Some(t),
                severity,
                line,
                part: 0,
            },
        );
    }

    fn fill(&mut self, lines_per_min: u64) {
        let trouble = self.trouble;
        self.gauge("cpu.usage", "", 15 * M, |_, n| {
            (35.0 + 8.0 * n).clamp(0.0, 100.0)
        });
        for core in 0..8 {
            let l = format!("core={core}");
            self.gauge("cpu.usage", &l, 15 * M, |_, n| {
                (35.0 + 15.0 * n).clamp(0.0, 100.0)
            });
        }
        self.gauge("load.15", "", 15 * M, |_, n| 2.0 + 0.05 * n);
        let total = 64.0 * GIB;
        self.gauge("mem.total", "", 6 * H, |_, _| total);
        self.gauge("mem.available", "", 6 * H, |_, n| total * (0.5 + 0.01 * n));
        self.counter("mem.oom_kills", "", 0.0);
        self.counter("swap.in", "", 0.0);
        for (i, mount) in ["/", "/boot", "/var", "/home", "/data"]
            .into_iter()
            .enumerate()
        {
            let l = labels(&[
                ("device", &format!("sda{i}")),
                ("fstype", "xfs"),
                ("mount", mount),
            ]);
            let size = 500.0 * GIB;
            let (filling, full) = (trouble == Some(0) && i == 2, trouble == Some(1) && i == 4);
            self.gauge("fs.bytes.total", &l, 24 * H, |_, _| size);
            self.gauge("fs.bytes.available", &l, 24 * H, |t, n| {
                let pct = if full {
                    1.0
                } else if filling {
                    40.0 - 8.0 * (t - (NOW - 24 * H)) as f64 / (24 * H) as f64
                } else {
                    60.0
                };
                size * (pct + 0.001 * n) / 100.0
            });
            self.gauge("fs.inodes.total", &l, 24 * H, |_, _| 3.2e7);
            self.gauge("fs.inodes.free", &l, 24 * H, |_, n| {
                3.0e7 + (10.0 * n).round()
            });
        }
        for i in 0..4 {
            let l = format!("interface=eth{i}");
            for dir in ["rx", "tx"] {
                self.counter(&format!("net.{dir}.packets"), &l, 5000.0);
                self.counter(&format!("net.{dir}.errors"), &l, 0.0);
                self.counter(&format!("net.{dir}.drops"), &l, 1.0);
            }
        }
        for s in 0..4 {
            let l = labels(&[("chip", "coretemp"), ("sensor", &format!("Core {s}"))]);
            let hot = trouble == Some(4) && s == 0;
            self.gauge("sensor.temperature", &l, 15 * M, |_, n| {
                (if hot { 91.0 } else { 52.0 } + 2.0 * n).round()
            });
        }
        // An hour of logs: services, auth, kernel.
        let n = lines_per_min * 60;
        for k in 0..n {
            let t = NOW - H + (k as i64 * H) / n.max(1) as i64;
            match self.rng.next() % 20 {
                0 => self.log(t, "auth", Severity::Info, format!("sshd[{k}]: Accepted publickey for deploy from 10.0.0.{} port 52{k:03} ssh2", k % 250)),
                1 => self.log(t, "app", Severity::Error, format!("request {k} failed: upstream timed out after 30000 ms")),
                2 => self.log(t, "kernel", Severity::Info, format!("IPv4: martian source 10.0.0.{} from 10.0.1.1, on dev eth0", k % 250)),
                _ => self.log(t, "app", Severity::Info, format!("GET /api/v1/orders/{k} 200 12ms user=svc-{}", k % 17)),
            }
        }
        match trouble {
            Some(2) => self.log(
                NOW - 5 * M,
                "kernel",
                Severity::Info,
                "nginx[4242]: segfault at 0 ip 00007f3a2b1c sp 00007ffd9a8b error 4 in libc.so.6"
                    .into(),
            ),
            Some(3) => {
                for k in 0..40 {
                    self.log(NOW - 8 * M + k * 10 * S, "auth", Severity::Warning, format!("sshd[9{k}]: Failed password for root from 203.0.113.5 port 4{k:04} ssh2"));
                }
            }
            _ => {}
        }
    }
}

fn main() {
    let hosts_n = env_or("AFTERCARE_BENCH_HOSTS", 1000).max(1);
    let rounds = env_or("AFTERCARE_BENCH_ROUNDS", 5).max(1);
    let lines_per_min = env_or("AFTERCARE_BENCH_LOG_LINES", 10);
    let rules = RuleSet::builtin();

    let started = Instant::now();
    let mut obs = MemoryObservations::new();
    let mut rng = Rng(42);
    let grants = Scope::ALL
        .into_iter()
        .map(|scope| Grant {
            scope,
            by: "bench".into(),
            at: T0,
            until: None,
        })
        .collect();
    let consent = ConsentRecord { version: 1, grants };
    let hosts: Vec<HostInfo> = (0..hosts_n)
        .map(|h| {
            let name = format!("customer{:02}/host{h:04}", h % 40);
            HostGen {
                obs: &mut obs,
                name: name.clone(),
                rng: Rng(rng.next()),
                trouble: (h % 50 == 7).then_some((h / 50) % 5),
            }
            .fill(lines_per_min);
            HostInfo {
                name,
                first_seen: T0,
                last_seen: Some(NOW),
                interval_ms: TICK as u64,
                cores: Some(8),
                consent: consent.clone(),
                clock_skew_ms: Some((rng.normal() * 200.0) as i64),
            }
        })
        .collect();
    let setup = started.elapsed();

    println!(
        "aftercare rules evaluation benchmark: the built-in rules, data in memory, one thread"
    );
    println!(
        "{} hosts × {} rules; per host {} series-reads, {} log lines in the last hour; data built in {:.1} s",
        thousands(hosts_n),
        rules.rules().len(),
        rules.metrics().len(),
        thousands(lines_per_min * 60),
        setup.as_secs_f64()
    );

    let t = Instant::now();
    let first = evaluate(NOW, &rules, &hosts, &obs, State::default());
    let cold = t.elapsed();
    let raised = first.transitions.len();
    let mut state = first.state;
    let mut times: Vec<Duration> = Vec::new();
    let mut steady_transitions = 0;
    let mut hosts = hosts;
    for r in 1..=rounds {
        // A minute later, each host has sent again (the data stays as it was).
        let now = NOW + r as i64 * M;
        hosts.iter_mut().for_each(|h| h.last_seen = Some(now));
        let t = Instant::now();
        let ev = evaluate(now, &rules, &hosts, &obs, state);
        times.push(t.elapsed());
        steady_transitions += ev.transitions.len();
        state = ev.state;
    }
    times.sort();
    let median = times[times.len() / 2];
    let per_host = median.as_secs_f64() * 1e6 / hosts_n as f64;
    let per_rule = median.as_secs_f64() * 1e9 / (hosts_n as f64 * rules.rules().len() as f64);
    println!(
        "first evaluation (empty state, {raised} findings raised): {:.0} ms",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "later evaluations (median of {rounds}, {steady_transitions} transitions in all): {:.0} ms, {:.0} µs per host, {:.1} µs per host and rule",
        median.as_secs_f64() * 1e3,
        per_host,
        per_rule / 1e3
    );
    println!(
        "raised findings held in state: {}",
        thousands(state.raised().len() as u64)
    );
}

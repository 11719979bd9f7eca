//! Table tests of the rules with synthetic hosts: a simulated healthy host, fed tick by tick
//! and evaluated every minute as the collector would, and for each built-in rule the crafted
//! trouble that must raise it. No sockets, no sleeping: time is a number.

use super::*;
use aftercare_shared::consent::{ConsentRecord, Grant, Scope};
use aftercare_shared::model::{
    LogRecord, LossReport,
    MetricKind::{self, Counter, Gauge},
    Severity, labels,
};
use std::collections::BTreeSet;
use std::rc::Rc;

/// 2026-03-02T00:00:00Z
const T0: i64 = 1_772_409_600_000;
const S: i64 = 1000;
const M: i64 = 60 * S;
const H: i64 = 60 * M;
const D: i64 = 24 * H;
const TICK: i64 = 10 * S;
const HOST: &str = "acme/db1";
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

type Gen = Rc<dyn Fn(i64) -> Option<f64>>;
type HostEdit = Rc<dyn Fn(&mut HostInfo, i64)>;

struct SeriesGen {
    metric: &'static str,
    labels: String,
    kind: MetricKind,
    f: Gen,
}

/// A small deterministic wobble in [-0.5, 0.5).
fn wobble(t: i64) -> f64 {
    let x = (t / TICK) as u64;
    let h = x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    (h % 1000) as f64 / 1000.0 - 0.5
}

fn fs_labels(mount: &str, device: &str) -> String {
    labels(&[("device", device), ("fstype", "ext4"), ("mount", mount)])
}

/// How a host's data looks over time: healthy, plus what a case changes.
#[derive(Clone)]
struct Scenario {
    series: Vec<Rc<SeriesGen>>,
    /// (time, source, severity, line)
    logs: Vec<(i64, String, Severity, String)>,
    losses: Vec<LossEvent>,
    /// No data in [from, to).
    silent: Option<(i64, i64)>,
    /// Applied to the host before each evaluation.
    host: HostEdit,
}

impl Scenario {
    fn healthy() -> Scenario {
        let mut s = Scenario {
            series: Vec::new(),
            logs: Vec::new(),
            losses: Vec::new(),
            silent: None,
            host: Rc::new(|_, _| {}),
        };
        let g = |v: f64| -> Gen { Rc::new(move |t| Some(v + wobble(t))) };
        let counter = |per_tick: f64| -> Gen {
            Rc::new(move |t| Some(1e6 + ((t - T0 + 30 * D) / TICK) as f64 * per_tick))
        };
        s = s
            .set(
                "cpu.usage",
                "",
                Gauge,
                Rc::new(|t| Some(30.0 + 10.0 * wobble(t))),
            )
            .set("cpu.usage", "core=0", Gauge, g(35.0))
            .set("load.15", "", Gauge, g(1.5))
            .set("mem.total", "", Gauge, Rc::new(|_| Some(16.0 * GIB)))
            .set(
                "mem.available",
                "",
                Gauge,
                Rc::new(|t| Some(8.0 * GIB + wobble(t) * 1e8)),
            )
            .set("mem.oom_kills", "", Counter, Rc::new(|_| Some(3.0)))
            .set("swap.in", "", Counter, counter(10_240.0))
            .set(
                "sensor.temperature",
                "chip=coretemp,sensor=Package id 0",
                Gauge,
                g(55.0),
            );
        for (mount, dev) in [("/", "sda1"), ("/var", "sdb1")] {
            let l = fs_labels(mount, dev);
            s = s
                .set("fs.bytes.total", &l, Gauge, Rc::new(|_| Some(100.0 * GIB)))
                .set(
                    "fs.bytes.available",
                    &l,
                    Gauge,
                    Rc::new(|t| Some(40.0 * GIB + wobble(t) * 1e6)),
                )
                .set("fs.inodes.total", &l, Gauge, Rc::new(|_| Some(6_553_600.0)))
                .set(
                    "fs.inodes.free",
                    &l,
                    Gauge,
                    Rc::new(|t| Some(5_000_000.0 + (wobble(t) * 100.0).round())),
                );
        }
        for dir in ["rx", "tx"] {
            let i = "interface=eth0";
            s = s
                .set(metric(dir, "packets"), i, Counter, counter(1000.0))
                .set(metric(dir, "drops"), i, Counter, counter(1.0))
                .set(metric(dir, "errors"), i, Counter, Rc::new(|_| Some(7.0)));
        }
        // Ordinary logs: a few errors, a couple of failed logins, harmless kernel lines.
        for k in 0..30 {
            let t = T0 - 5 * M + k * 90 * S;
            s = s.log(t, "app", Severity::Info, "request served in 12 ms");
            if k % 3 == 0 {
                s = s.log(t + S, "app", Severity::Error, "upstream timeout, retrying");
            }
            if k % 10 == 0 {
                s = s.log(
                    t + 2 * S,
                    "auth",
                    Severity::Warning,
                    "sshd[811]: Failed password for admin from 198.51.100.7 port 2222 ssh2",
                );
                s = s.log(
                    t + 3 * S,
                    "kernel",
                    Severity::Info,
                    "EXT4-fs (sda1): mounted filesystem with ordered data mode",
                );
            }
        }
        s
    }

    /// Replace (or add) the generator of one series.
    fn set(mut self, metric: &'static str, labels: &str, kind: MetricKind, f: Gen) -> Scenario {
        self.series
            .retain(|g| !(g.metric == metric && g.labels == labels));
        self.series.push(Rc::new(SeriesGen {
            metric,
            labels: labels.to_string(),
            kind,
            f,
        }));
        self
    }

    fn log(mut self, t: i64, source: &str, severity: Severity, line: &str) -> Scenario {
        self.logs
            .push((t, source.to_string(), severity, line.to_string()));
        self
    }

    fn logs(
        mut self,
        from: i64,
        every: i64,
        n: i64,
        source: &str,
        sev: Severity,
        line: &str,
    ) -> Scenario {
        for k in 0..n {
            self = self.log(from + k * every, source, sev, line);
        }
        self
    }

    fn host(mut self, f: impl Fn(&mut HostInfo, i64) + 'static) -> Scenario {
        self.host = Rc::new(f);
        self
    }
}

fn metric(dir: &str, what: &str) -> &'static str {
    match (dir, what) {
        ("rx", "packets") => "net.rx.packets",
        ("rx", "drops") => "net.rx.drops",
        ("rx", "errors") => "net.rx.errors",
        ("tx", "packets") => "net.tx.packets",
        ("tx", "drops") => "net.tx.drops",
        _ => "net.tx.errors",
    }
}

fn host_info() -> HostInfo {
    let grant = |scope| Grant {
        scope,
        by: "Li Wei".into(),
        at: T0 - 30 * D,
        until: None,
    };
    HostInfo {
        name: HOST.into(),
        first_seen: T0 - 30 * D,
        last_seen: None,
        interval_ms: TICK as u64,
        cores: Some(4),
        consent: ConsentRecord {
            version: 1,
            grants: vec![grant(Scope::Logs), grant(Scope::Metrics)],
        },
        clock_skew_ms: Some(0),
    }
}

/// A host fed tick by tick and evaluated when asked.
struct Sim {
    sc: Scenario,
    obs: MemoryObservations,
    host: HostInfo,
    rules: RuleSet,
    state: State,
    /// The next tick to feed.
    next: i64,
    log: Vec<Transition>,
    logs_fed: usize,
}

impl Sim {
    /// History before T0: a day at 5-minute steps (what a store would give from rollups),
    /// then the last hour at the agent's 10 s.
    fn new(sc: Scenario, rules: RuleSet) -> Sim {
        let mut sim = Sim {
            sc,
            obs: MemoryObservations::new(),
            host: host_info(),
            rules,
            state: State::default(),
            next: T0 - 26 * H,
            log: Vec::new(),
            logs_fed: 0,
        };
        while sim.next < T0 - H {
            sim.feed_tick(sim.next);
            sim.next += 5 * M;
        }
        sim.feed(T0);
        sim
    }

    fn feed_tick(&mut self, t: i64) {
        if self.sc.silent.is_some_and(|(a, b)| (a..b).contains(&t)) {
            return;
        }
        for g in &self.sc.series {
            if let Some(v) = (g.f)(t) {
                self.obs.push(HOST, g.metric, &g.labels, g.kind, t, v);
            }
        }
        self.host.last_seen = Some(t);
    }

    /// Feed ticks, logs and loss reports up to and including `to`.
    fn feed(&mut self, to: i64) {
        while self.next <= to {
            self.feed_tick(self.next);
            self.next += TICK;
        }
        let mut logs: Vec<_> = self.sc.logs.iter().filter(|l| l.0 <= to).cloned().collect();
        logs.sort_by_key(|l| l.0);
        for (i, (t, source, severity, line)) in logs.into_iter().enumerate().skip(self.logs_fed) {
            self.obs.push_log(
                HOST,
                LogRecord {
                    source,
                    file: "/var/log/messages".into(),
                    offset: i as u64 * 100,
                    read_at: t + S,
                    ts: Some(t),
                    severity,
                    line,
                    part: 0,
                },
            );
            self.logs_fed = i + 1;
        }
        let losses: Vec<_> = self
            .sc
            .losses
            .iter()
            .filter(|l| l.at <= to)
            .cloned()
            .collect();
        for l in losses {
            self.obs.push_loss(HOST, l);
        }
        self.sc.losses.retain(|l| l.at > to);
    }

    fn eval(&mut self, now: i64) -> Vec<Transition> {
        self.feed(now);
        (self.sc.host)(&mut self.host, now);
        let state = std::mem::take(&mut self.state);
        let ev = evaluate(
            now,
            &self.rules,
            std::slice::from_ref(&self.host),
            &self.obs,
            state,
        );
        assert!(ev.errors.is_empty(), "{:?}", ev.errors);
        self.state = ev.state;
        self.log.extend(ev.transitions.iter().cloned());
        ev.transitions
    }

    /// Evaluate every `every` from `from` through `to`.
    fn run(&mut self, from: i64, to: i64, every: i64) -> &[Transition] {
        let start = self.log.len();
        let mut t = from;
        while t <= to {
            self.eval(t);
            t += every;
        }
        &self.log[start..]
    }
}

fn raised(log: &[Transition]) -> BTreeSet<(String, String)> {
    log.iter()
        .filter(|t| t.change == Change::Raised)
        .map(|t| (t.key.rule.clone(), t.key.subject.clone()))
        .collect()
}

fn count(log: &[Transition], change: Change) -> usize {
    log.iter().filter(|t| t.change == change).count()
}

fn rules(text: &str) -> RuleSet {
    RuleSet::parse(text).unwrap_or_else(|e| panic!("{e}"))
}

/// Trouble for each built-in rule: the rule, the subject it must raise for, the case, and
/// other rules the same trouble legitimately raises too.
fn cases() -> Vec<(
    &'static str,
    &'static str,
    Scenario,
    &'static [&'static str],
)> {
    let h = Scenario::healthy;
    let var = fs_labels("/var", "sdb1");
    let after = |from: i64, v: f64, normal: f64| -> Gen {
        Rc::new(move |t| Some(if t >= from { v } else { normal }))
    };
    // A gauge falling linearly by `per_day` from `start` at T0 - 1 day.
    let falling = |start: f64, per_day: f64, scale: f64| -> Gen {
        Rc::new(move |t| Some(scale * (start - per_day * (t - (T0 - D)) as f64 / D as f64) / 100.0))
    };
    let burst = |per_tick: f64, from: i64| -> Gen {
        Rc::new(move |t| {
            let ticks = ((t - from).max(0) / TICK) as f64;
            Some(1e6 + ((t - T0 + 30 * D) / TICK) as f64 + ticks * per_tick)
        })
    };
    vec![
        ("host-silent", "", Scenario { silent: Some((T0 + 5 * M, T0 + D)), ..h() }, &[]),
        (
            "fs-readonly",
            "device=sdb1",
            h().log(T0 + 2 * M, "kernel", Severity::Critical, "EXT4-fs (sdb1): Remounting filesystem read-only"),
            &[],
        ),
        (
            "kernel-panic",
            "",
            h().log(T0 + 2 * M, "kernel", Severity::Emergency, "Kernel panic - not syncing: Fatal exception in interrupt"),
            &[],
        ),
        (
            "fs-full",
            "mount=/var",
            h().set("fs.bytes.available", &var, Gauge, after(T0 + M, 0.01 * 100.0 * GIB, 40.0 * GIB)),
            &[],
        ),
        (
            "fs-filling",
            "mount=/var",
            h().set("fs.bytes.available", &var, Gauge, falling(40.0, 8.0, 100.0 * GIB)),
            &[],
        ),
        (
            "inodes-full",
            "mount=/var",
            h().set("fs.inodes.free", &var, Gauge, after(T0 + M, 30_000.0, 5_000_000.0)),
            &[],
        ),
        (
            "inodes-filling",
            "mount=/var",
            h().set("fs.inodes.free", &var, Gauge, falling(60.0, 10.0, 6_553_600.0)),
            &[],
        ),
        (
            "fs-hung",
            "mount=/mnt/nfs",
            h().set("fs.hung", "device=nas:/export,fstype=nfs4,mount=/mnt/nfs", Gauge, Rc::new(|t| (t >= T0 + M).then_some(1.0))),
            &[],
        ),
        (
            "mem-oom-kills",
            "",
            h().set("mem.oom_kills", "", Counter, Rc::new(|t| Some(if t >= T0 + 5 * M { 5.0 } else { 3.0 }))),
            &[],
        ),
        (
            "mem-low",
            "",
            h().set("mem.available", "", Gauge, after(T0, 0.03 * 16.0 * GIB, 8.0 * GIB)),
            &[],
        ),
        (
            "mem-leak",
            "",
            // 3 % of 16 GiB per hour, from 70 % six hours ago: empty about 17 h after T0.
            h().set("mem.available", "", Gauge, Rc::new(|t| {
                Some(16.0 * GIB * (0.70 - 0.03 * (t - (T0 - 6 * H)) as f64 / H as f64) + wobble(t) * 1e6)
            })),
            &[],
        ),
        ("cpu-saturated", "", h().set("cpu.usage", "", Gauge, after(T0, 99.0, 30.0)), &[]),
        ("load-high", "", h().set("load.15", "", Gauge, after(T0, 6.0, 1.5)), &[]),
        (
            "swap-thrashing",
            "",
            h().set("swap.in", "", Counter, burst(50.0 * 1024.0 * 1024.0, T0)),
            &[],
        ),
        (
            "net-rx-drops",
            "interface=eth0",
            h().set("net.rx.drops", "interface=eth0", Counter, burst(50.0, T0)),
            &[],
        ),
        (
            "net-tx-drops",
            "interface=eth0",
            h().set("net.tx.drops", "interface=eth0", Counter, burst(50.0, T0)),
            &[],
        ),
        (
            "disk-io-errors",
            "device=sdc",
            h().log(T0 + 3 * M, "kernel", Severity::Error, "blk_update_request: I/O error, dev sdc, sector 1953525 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0"),
            &[],
        ),
        (
            "temperature-high",
            "chip=coretemp,sensor=Package id 0",
            h().set("sensor.temperature", "chip=coretemp,sensor=Package id 0", Gauge, after(T0, 92.0, 55.0)),
            &[],
        ),
        (
            "net-rx-errors",
            "interface=eth0",
            h().set("net.rx.errors", "interface=eth0", Counter, burst(5.0, T0)),
            &[],
        ),
        (
            "net-tx-errors",
            "interface=eth0",
            h().set("net.tx.errors", "interface=eth0", Counter, burst(5.0, T0)),
            &[],
        ),
        (
            "oom-killer",
            "process=java",
            h().log(T0 + 4 * M, "kernel", Severity::Error, "Out of memory: Killed process 4242 (java) total-vm:9876543kB, anon-rss:8765432kB"),
            &[],
        ),
        (
            "segfault",
            "process=nginx",
            h().log(T0 + 4 * M, "kernel", Severity::Info, "nginx[1234]: segfault at 0 ip 00007f3a2b1c sp 00007ffd9a8b error 4 in libc.so.6"),
            &[],
        ),
        (
            "kernel-bug",
            "",
            h().log(T0 + 4 * M, "kernel", Severity::Emergency, "watchdog: BUG: soft lockup - CPU#2 stuck for 23s! [kworker/2:1:123]"),
            &[],
        ),
        (
            "log-errors-noisy",
            "source=app",
            h().logs(T0 + M, 2 * S, 150, "app", Severity::Error, "database connection refused"),
            &[],
        ),
        ("clock-skew", "", h().host(|h, _| h.clock_skew_ms = Some(45 * S)), &[]),
        (
            "spool-drops",
            "scope=metrics",
            Scenario {
                losses: vec![LossEvent {
                    at: T0 + 3 * M,
                    scope: "metrics".into(),
                    report: LossReport {
                        dropped_batches: 2,
                        dropped_samples: 240,
                        discarded_by_revocation: 0,
                    },
                }],
                ..h()
            },
            &[],
        ),
        (
            "consent-expiring",
            "scope=logs",
            h().host(|h, _| h.consent.grants[0].until = Some(T0 + 5 * D)),
            &[],
        ),
        (
            "auth-failures",
            "",
            h().logs(T0 + M, 10 * S, 30, "auth", Severity::Warning, "sshd[900]: Failed password for root from 203.0.113.5 port 40022 ssh2"),
            &[],
        ),
    ]
}

/// Evaluated every minute for 40 minutes.
fn run_case(sc: Scenario) -> Vec<Transition> {
    let mut sim = Sim::new(sc, RuleSet::builtin());
    sim.run(T0, T0 + 40 * M, M).to_vec()
}

#[test]
fn a_healthy_host_raises_nothing() {
    let log = run_case(Scenario::healthy());
    assert!(log.is_empty(), "{log:#?}");
}

#[test]
fn every_builtin_rule_has_a_case() {
    let cased: BTreeSet<&str> = cases().iter().map(|c| c.0).collect();
    let set = RuleSet::builtin();
    let builtin: BTreeSet<&str> = set.rules().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(cased, builtin);
}

#[test]
fn each_builtin_rule_raises_on_its_trouble() {
    for (rule, subject, sc, also) in cases() {
        let log = run_case(sc);
        let got = raised(&log);
        let want = (rule.to_string(), subject.to_string());
        assert!(got.contains(&want), "{rule}: want {want:?}, raised {got:?}");
        for (r, s) in &got {
            assert!(
                r == rule || also.contains(&r.as_str()),
                "{rule}'s trouble also raised {r} for {s:?}"
            );
        }
        let first = log.iter().find(|t| t.key.rule == rule).unwrap();
        let builtin = RuleSet::builtin();
        let def = builtin.get(rule).unwrap();
        assert_eq!(
            (first.level, first.category),
            (def.level, def.category),
            "{rule}"
        );
        assert!(!first.evidence.summary.is_empty(), "{rule}");
    }
}

/// A rule set of one rule named `r` with the given kind-specific lines.
fn one_rule(body: &str) -> RuleSet {
    rules(&format!(
        "[[rule]]\nname = \"r\"\nlevel = \"L3\"\ncategory = \"performance\"\nrecommendation = \"look\"\n{body}\n"
    ))
}

fn minutes(log: &[Transition], change: Change) -> Vec<i64> {
    log.iter()
        .filter(|t| t.change == change)
        .map(|t| (t.at - T0) / M)
        .collect()
}

#[test]
fn threshold_with_for_raises_only_after_the_duration() {
    let r = one_rule(
        "kind = \"threshold\"\nmetric = \"cpu.usage\"\nmatch = { core = \"\" }\naggregate = \"last\"\nwindow = \"1m\"\nabove = 90\nfor = \"5m\"",
    );
    // (case, cpu.usage at t, minute of the one Raised)
    let steady: Gen = Rc::new(|t| Some(if t >= T0 { 95.0 } else { 20.0 }));
    let dip: Gen = Rc::new(|t| {
        Some(
            if t >= T0 && !(T0 + 3 * M - 5 * S..T0 + 3 * M + 5 * S).contains(&t) {
                95.0
            } else {
                20.0
            },
        )
    });
    for (case, f, want) in [("steady", steady, 5), ("a dip at 3m starts over", dip, 9)] {
        let mut sim = Sim::new(
            Scenario::healthy().set("cpu.usage", "", Gauge, f),
            r.clone(),
        );
        let log = sim.run(T0, T0 + 20 * M, M);
        assert_eq!(minutes(log, Change::Raised), vec![want], "{case}");
        assert_eq!(count(log, Change::Cleared), 0, "{case}");
    }
}

#[test]
fn hysteresis_keeps_a_value_hovering_at_the_line_from_flapping() {
    // 88 and 92 in turns, minute by minute, for two hours; then 80.
    let hover: Gen = Rc::new(|t| {
        Some(if t >= T0 + 120 * M {
            80.0
        } else if ((t - T0).div_euclid(M)) % 2 == 0 {
            92.0
        } else {
            88.0
        })
    });
    let base = "kind = \"threshold\"\nmetric = \"cpu.usage\"\nmatch = { core = \"\" }\naggregate = \"last\"\nwindow = \"1m\"\nabove = 90";
    let mut flappy = Sim::new(
        Scenario::healthy().set("cpu.usage", "", Gauge, hover.clone()),
        one_rule(base),
    );
    let log = flappy.run(T0, T0 + 130 * M, M);
    assert!(
        count(log, Change::Raised) >= 50,
        "without a clear line it flaps: {}",
        count(log, Change::Raised)
    );
    let mut steady = Sim::new(
        Scenario::healthy().set("cpu.usage", "", Gauge, hover),
        one_rule(&format!("{base}\nclear_below = 85")),
    );
    let log = steady.run(T0, T0 + 130 * M, M);
    assert_eq!(minutes(log, Change::Raised), vec![0]);
    assert_eq!(minutes(log, Change::Cleared), vec![120]);
    assert!(count(log, Change::Updated) <= 2, "{log:#?}");
}

#[test]
fn counter_resets_never_look_like_negative_or_huge_rates() {
    // A counter near 10^12 that restarts from 0 every 7 minutes (reboots), 100/s otherwise.
    let resetting: Gen = Rc::new(|t| {
        let since_boot = (t - T0 + 100 * H).rem_euclid(7 * M);
        Some(if t < T0 {
            1e12 + (t - T0) as f64 / 10.0
        } else {
            since_boot as f64 / 10.0
        })
    });
    for (case, body) in [
        (
            "rate below 0",
            "aggregate = \"rate\"\nwindow = \"5m\"\nbelow = 0",
        ),
        (
            "min rate below 0",
            "aggregate = \"min\"\nwindow = \"5m\"\nbelow = 0",
        ),
        (
            "rate above 1000/s",
            "aggregate = \"rate\"\nwindow = \"5m\"\nabove = 1000",
        ),
        (
            "max rate above 1000/s",
            "aggregate = \"max\"\nwindow = \"5m\"\nabove = 1000",
        ),
        (
            "increase above 100000",
            "aggregate = \"increase\"\nwindow = \"5m\"\nabove = 100000",
        ),
    ] {
        let r = one_rule(&format!(
            "kind = \"threshold\"\nmetric = \"swap.in\"\n{body}"
        ));
        let mut sim = Sim::new(
            Scenario::healthy().set("swap.in", "", Counter, resetting.clone()),
            r,
        );
        let log = sim.run(T0, T0 + 60 * M, M);
        assert!(log.is_empty(), "{case}: {log:#?}");
    }
}

fn fs_forecast(extra: &str) -> RuleSet {
    one_rule(&format!(
        "kind = \"forecast\"\nmetric = \"fs.bytes.used\"\npercent_of = \"fs.bytes.total\"\nsubject = \"mount\"\nwindow = \"24h\"\nrising_to = 100\nhorizon = \"30d\"\n{extra}"
    ))
}

#[test]
fn forecast_dates_a_linear_fill() {
    // 10 % per day, at 40 % at T0: full six days later.
    let used: Gen =
        Rc::new(|t| Some(GIB * (40.0 + 10.0 * (t - T0) as f64 / D as f64) + wobble(t) * 1e7));
    let sc = Scenario::healthy().set("fs.bytes.used", &fs_labels("/var", "sdb1"), Gauge, used);
    let mut sim = Sim::new(sc, fs_forecast(""));
    let log = sim.run(T0, T0 + 10 * M, M).to_vec();
    let raised: Vec<_> = log.iter().filter(|t| t.change == Change::Raised).collect();
    assert_eq!(raised.len(), 1, "{log:#?}");
    let e = &raised[0].evidence;
    assert_eq!(raised[0].key.subject, "mount=/var");
    let predicted = e.predicted.unwrap();
    assert!(
        (predicted - (T0 + 6 * D)).abs() < H,
        "{}",
        evidence::fmt_time(predicted)
    );
    assert!(
        e.summary.contains("2026-03-08 00:00 UTC") && e.summary.contains("in 6 days"),
        "{}",
        e.summary
    );
    assert!((e.value.unwrap() - 10.0).abs() < 0.1, "{e:?}");
    assert_eq!(count(&log, Change::Updated), 0, "{log:#?}");
}

#[test]
fn forecast_says_nothing_of_noise_flat_falling_or_thin_series() {
    let l = fs_labels("/var", "sdb1");
    let g = |f: fn(i64) -> f64| -> Gen { Rc::new(move |t| Some(GIB * f(t))) };
    let cases: Vec<(&str, Gen)> = vec![
        ("flat", g(|t| 40.0 + wobble(t) * 0.01)),
        ("noise", g(|t| 40.0 + 20.0 * wobble(t))),
        ("falling", g(|t| 40.0 - 10.0 * (t - T0) as f64 / D as f64)),
        // Rising fast, but only for the last two hours of the 24 h window.
        (
            "too short",
            Rc::new(|t| {
                (t >= T0 - 2 * H).then(|| GIB * (40.0 + 50.0 * (t - T0) as f64 / D as f64))
            }),
        ),
    ];
    for (case, f) in cases {
        let mut sim = Sim::new(
            Scenario::healthy().set("fs.bytes.used", &l, Gauge, f),
            fs_forecast(""),
        );
        let log = sim.run(T0, T0 + 10 * M, M);
        assert!(log.is_empty(), "{case}: {log:#?}");
    }
    // Too few points: rising, but one point every six hours.
    let mut sim = Sim::new(
        Scenario::healthy().set(
            "fs.bytes.used",
            &l,
            Gauge,
            Rc::new(|t| {
                (t % (6 * H) == 0).then(|| GIB * (40.0 + 10.0 * (t - T0) as f64 / D as f64))
            }),
        ),
        fs_forecast(""),
    );
    assert!(sim.run(T0, T0 + 10 * M, M).is_empty());
}

#[test]
fn forecast_clears_when_the_fill_stops() {
    // Filling until T0 + 5 min, then cleaned up back to 20 %.
    let used: Gen = Rc::new(|t| {
        Some(
            GIB * if t < T0 + 5 * M {
                40.0 + 10.0 * (t - T0) as f64 / D as f64
            } else {
                20.0
            },
        )
    });
    let sc = Scenario::healthy().set("fs.bytes.used", &fs_labels("/", "sda1"), Gauge, used);
    let mut sim = Sim::new(sc, fs_forecast(""));
    let log = sim.run(T0, T0 + 30 * M, M);
    assert_eq!(minutes(log, Change::Raised), vec![0]);
    assert_eq!(minutes(log, Change::Cleared).len(), 1, "{log:#?}");
}

fn log_rule() -> RuleSet {
    one_rule(
        "kind = \"log_pattern\"\npattern = 'disk (?P<dev>sd[a-z]) error'\nsources = [\"kernel\"]\nmin_severity = \"warning\"\nwindow = \"10m\"\nmore_than = 2\nsubject = \"dev\"\nlines = 2",
    )
}

#[test]
fn log_pattern_counts_within_the_window_only() {
    let line = "disk sda error";
    let sc = Scenario::healthy()
        // Old: outside the window at T0.
        .logs(T0 - 20 * M, S, 3, "kernel", Severity::Error, line)
        // Inside, but not counted: another source, too mild, another line.
        .log(T0 - 4 * M, "app", Severity::Error, line)
        .log(T0 - 4 * M, "kernel", Severity::Info, line)
        .log(T0 - 4 * M, "kernel", Severity::Error, "disk sda is fine")
        // Counted: two now, a third at T0 + 1 min.
        .logs(T0 - 5 * M, M, 2, "kernel", Severity::Error, line)
        .log(T0 + M, "kernel", Severity::Critical, line);
    let mut sim = Sim::new(sc, log_rule());
    assert!(sim.eval(T0).is_empty());
    let t = sim.eval(T0 + M);
    assert_eq!(t.len(), 1, "{t:#?}");
    assert_eq!(
        (t[0].change, t[0].key.subject.as_str()),
        (Change::Raised, "dev=sda")
    );
    let e = &t[0].evidence;
    assert_eq!(e.value, Some(3.0));
    // The first two matching lines in the window, with their times.
    let times: Vec<i64> = e.lines.iter().map(|l| l.at).collect();
    assert_eq!(times, vec![T0 - 5 * M, T0 - 4 * M]);
    assert!(
        e.lines
            .iter()
            .all(|l| l.source == "kernel" && l.line == line)
    );
    // Ten minutes after the first counted line it is out of the window: 2 left, cleared.
    let log = sim.run(T0 + 2 * M, T0 + 10 * M, M);
    assert_eq!(minutes(log, Change::Cleared), vec![6], "{log:#?}");
}

fn heartbeat_rule() -> RuleSet {
    one_rule("kind = \"heartbeat\"\nintervals = 6")
}

#[test]
fn heartbeat_raises_past_the_multiple_and_clears_when_data_returns() {
    // The last tick before the gap is at T0 + 10 min; data again from T0 + 20 min.
    let sc = Scenario {
        silent: Some((T0 + 10 * M + S, T0 + 20 * M)),
        ..Scenario::healthy()
    };
    let mut sim = Sim::new(sc, heartbeat_rule());
    assert!(sim.run(T0, T0 + 11 * M, M).is_empty());
    // 6 × 10 s = 60 s of silence is allowed; a second more is not.
    assert!(sim.eval(T0 + 11 * M).is_empty());
    let t = sim.eval(T0 + 11 * M + S);
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].change, t[0].level), (Change::Raised, Level::L3));
    assert!(
        t[0].evidence.summary.contains("since 2026-03-02 00:10 UTC"),
        "{}",
        t[0].evidence.summary
    );
    assert!(
        sim.run(T0 + 12 * M, T0 + 19 * M, M).is_empty(),
        "no updates while silent"
    );
    let t = sim.eval(T0 + 20 * M);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].change, Change::Cleared);
}

#[test]
fn heartbeat_expects_silence_without_consent_for_metrics() {
    let sc = Scenario {
        silent: Some((T0 + M, T0 + D)),
        ..Scenario::healthy()
    }
    .host(|h, now| {
        if now >= T0 + 10 * M {
            h.consent.grants.retain(|g| g.scope != Scope::Metrics);
        }
    });
    let mut sim = Sim::new(sc, heartbeat_rule());
    let log = sim.run(T0, T0 + 15 * M, M).to_vec();
    // The last data came at T0 + 50 s; 60 s of silence later is T0 + 2 min.
    assert_eq!(minutes(&log, Change::Raised), vec![2]);
    assert_eq!(minutes(&log, Change::Cleared), vec![10]);
    assert!(
        log[1].evidence.summary.contains("consent"),
        "{}",
        log[1].evidence.summary
    );
}

#[test]
fn a_subject_that_vanishes_clears_while_the_host_sends_and_holds_while_it_is_silent() {
    let hung = "device=nas:/x,fstype=nfs4,mount=/mnt/nfs";
    let r = one_rule(
        "kind = \"threshold\"\nmetric = \"fs.hung\"\naggregate = \"last\"\nwindow = \"2m\"\nabove = 0\nsubject = \"mount\"",
    );
    let during: Gen = Rc::new(|t| (T0..T0 + 5 * M).contains(&t).then_some(1.0));
    // The mount recovers at T0 + 5 min: its series stops.
    let mut sim = Sim::new(
        Scenario::healthy().set("fs.hung", hung, Gauge, during.clone()),
        r.clone(),
    );
    let log = sim.run(T0, T0 + 15 * M, M).to_vec();
    assert_eq!(minutes(&log, Change::Raised), vec![0]);
    assert_eq!(minutes(&log, Change::Cleared), vec![7]);
    assert!(
        log[1].evidence.summary.contains("no longer reported"),
        "{}",
        log[1].evidence.summary
    );
    // The whole host goes silent at T0 + 5 min instead: nothing is known, nothing clears.
    let sc = Scenario {
        silent: Some((T0 + 5 * M, T0 + D)),
        ..Scenario::healthy().set("fs.hung", hung, Gauge, during)
    };
    let mut sim = Sim::new(sc, r);
    let log = sim.run(T0, T0 + 15 * M, M);
    assert_eq!(minutes(log, Change::Raised), vec![0]);
    assert_eq!(count(log, Change::Cleared), 0, "{log:#?}");
}

/// Observations that cannot be read.
struct Broken;

impl Observations for Broken {
    type Error = &'static str;
    fn series(&self, _: &str, _: &str, _: i64) -> Result<Vec<Series<'_>>, &'static str> {
        Err("database is locked")
    }
    fn logs(&self, _: &str, _: i64) -> Result<std::borrow::Cow<'_, [LogRecord]>, &'static str> {
        Err("database is locked")
    }
    fn losses(&self, _: &str, _: i64) -> Result<Vec<LossEvent>, &'static str> {
        Err("database is locked")
    }
}

#[test]
fn unreadable_data_holds_every_finding_that_needs_it() {
    let sc = Scenario::healthy().set(
        "fs.bytes.available",
        &fs_labels("/var", "sdb1"),
        Gauge,
        Rc::new(|_| Some(GIB)),
    );
    let mut sim = Sim::new(sc, RuleSet::builtin());
    let raised = raised(sim.run(T0, T0 + 3 * M, M));
    assert!(
        raised.contains(&("fs-full".into(), "mount=/var".into())),
        "{raised:?}"
    );
    let before = sim.state.clone();
    let ev = evaluate(
        T0 + 4 * M,
        &RuleSet::builtin(),
        std::slice::from_ref(&sim.host),
        &Broken,
        before.clone(),
    );
    assert!(ev.transitions.is_empty(), "{:#?}", ev.transitions);
    assert!(
        ev.errors.iter().any(|e| e.contains("acme/db1")
            && e.contains("fs.bytes.available")
            && e.contains("locked")),
        "{:?}",
        ev.errors
    );
    assert_eq!(ev.state, before);
}

#[test]
fn findings_of_a_rule_no_longer_configured_clear() {
    let sc = Scenario::healthy().host(|h, _| h.clock_skew_ms = Some(H));
    let mut sim = Sim::new(sc, RuleSet::builtin());
    assert_eq!(
        raised(sim.run(T0, T0, M)),
        BTreeSet::from([("clock-skew".into(), String::new())])
    );
    sim.rules = rules(&RuleSet::builtin_text_without("clock-skew"));
    let t = sim.eval(T0 + M);
    assert_eq!(t.len(), 1, "{t:#?}");
    assert_eq!(
        (t[0].change, t[0].level, t[0].key.rule.as_str()),
        (Change::Cleared, Level::L4, "clock-skew")
    );
    assert!(sim.state.is_empty());
}

impl RuleSet {
    /// The built-in file without one rule.
    fn builtin_text_without(name: &str) -> String {
        BUILTIN_RULES
            .split("[[rule]]")
            .filter(|part| !part.contains(&format!("name = \"{name}\"")))
            .collect::<Vec<_>>()
            .join("[[rule]]")
    }
}

#[test]
fn state_survives_serialization() {
    let sc = Scenario::healthy()
        .set(
            "cpu.usage",
            "",
            Gauge,
            Rc::new(|t| Some(if t >= T0 { 99.0 } else { 30.0 })),
        )
        .host(|h, _| h.consent.grants[0].until = Some(T0 + 5 * D));
    let mut sim = Sim::new(sc, RuleSet::builtin());
    sim.run(T0, T0 + 5 * M, M);
    let raised_now = sim.state.raised().len();
    assert!(
        raised_now == 1 && sim.state.len() == 2,
        "one raised (consent), one pending (cpu): {:#?}",
        sim.state
    );
    let json = serde_json::to_string(&sim.state).unwrap();
    let back: State = serde_json::from_str(&json).unwrap();
    assert_eq!(back, sim.state);
    // Carrying on from the restored state is the same as never stopping.
    sim.state = back;
    let log = sim.run(T0 + 6 * M, T0 + 20 * M, M);
    assert_eq!(
        minutes(log, Change::Raised),
        vec![15],
        "cpu-saturated, pending since T0 + 5 min"
    );
}

#[test]
fn windows_follow_the_agent_clock() {
    // The agent's clock is an hour behind: its points are stamped an hour early.
    let var = fs_labels("/var", "sdb1");
    let full: Gen = Rc::new(|t| {
        Some(if t >= T0 - H {
            0.01 * 100.0 * GIB
        } else {
            40.0 * GIB
        })
    });
    for (skew, want) in [(Some(-H), true), (None, false)] {
        let sc = Scenario::healthy()
            .set("fs.bytes.available", &var, Gauge, full.clone())
            .host(move |h, _| h.clock_skew_ms = skew);
        let mut r = Sim::new(
            sc,
            one_rule(
                "kind = \"threshold\"\nmetric = \"fs.bytes.available\"\npercent_of = \"fs.bytes.total\"\naggregate = \"last\"\nwindow = \"5m\"\nbelow = 2\nsubject = \"mount\"",
            ),
        );
        // Feed up to T0 (agent time T0 - 1 h would be "now" for a skewed agent).
        r.feed(T0);
        (r.sc.host)(&mut r.host, T0 + H);
        let ev = evaluate(
            T0 + H,
            &r.rules,
            std::slice::from_ref(&r.host),
            &r.obs,
            State::default(),
        );
        assert_eq!(
            !ev.transitions.is_empty(),
            want,
            "{skew:?}: {:#?}",
            ev.transitions
        );
    }
}

#[test]
fn config_errors_name_the_rule_and_the_field() {
    let rule = |body: &str| {
        format!(
            "[[rule]]\nname = \"fs-full\"\nkind = \"threshold\"\nlevel = \"L1\"\ncategory = \"capacity\"\nrecommendation = \"free space\"\nmetric = \"fs.bytes.used\"\naggregate = \"last\"\nabove = 90\n{body}\n"
        )
    };
    let ok = rule("window = \"5m\"");
    RuleSet::parse(&ok).unwrap();
    // (file, rule, field, words of the message)
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (rule("window = \"5x\""), "fs-full", "window", "window \"5x\" is not a duration"),
        (rule("window = \"5m\"\nwindw = \"5m\""), "fs-full", "windw", "unknown field \"windw\"; a threshold rule takes"),
        (rule("window = \"5m\"\npattern = \"x\""), "fs-full", "pattern", "unknown field \"pattern\""),
        (rule(""), "fs-full", "window", "window is missing"),
        (rule("window = \"0s\""), "fs-full", "window", "longer than 0"),
        (rule("window = \"5m\"\nmatch = { mount = \"[\" }"), "fs-full", "match.mount", "not a valid regex"),
        (rule("window = \"5m\"\nfor = \"soon\""), "fs-full", "for", "for \"soon\" is not a duration"),
        (rule("window = \"5m\"\nbelow = 3"), "fs-full", "below", "either above or below"),
        (rule("window = \"5m\"\nclear_below = 95"), "fs-full", "clear_below", "must not be above"),
        (rule("window = \"5m\"\nclear_above = 80"), "fs-full", "clear_above", "goes with below"),
        (rule("window = \"5m\"\npercent_of = \"fs.bytes.total\"\nper_core = true"), "fs-full", "per_core", "do not go together"),
        (rule("window = 5"), "fs-full", "window", "window must be a string, not integer"),
        (ok.replace("above = 90", "above = \"90\""), "fs-full", "above", "above must be a number"),
        (ok.replace("aggregate = \"last\"", "aggregate = \"median\""), "fs-full", "aggregate", "aggregate \"median\" is unknown"),
        (ok.replace("aggregate = \"last\"", "aggregate = \"rate\"\npercent_of = \"fs.bytes.total\""), "fs-full", "aggregate", "does not apply to a percentage"),
        (ok.replace("L1", "L5"), "fs-full", "level", "level \"L5\" is not a fault level"),
        (ok.replace("capacity", "weather"), "fs-full", "category", "category \"weather\" is unknown"),
        (ok.replace("recommendation = \"free space\"\n", ""), "fs-full", "recommendation", "recommendation is missing"),
        (ok.replace("threshold", "thresold"), "fs-full", "kind", "kind \"thresold\" is unknown"),
        (ok.replace("name = \"fs-full\"\n", ""), "#1", "name", "name is missing"),
        (ok.replace("fs-full", "fs full"), "#1", "name", "name \"fs full\" is not usable"),
        (
            "[[rule]]\nname = \"x\"\nkind = \"log_pattern\"\nlevel = \"L2\"\ncategory = \"hardware\"\nrecommendation = \"r\"\nwindow = \"1h\"\npattern = \"(unclosed\"".into(),
            "x", "pattern", "pattern \"(unclosed\" is not a valid regex",
        ),
        (
            "[[rule]]\nname = \"x\"\nkind = \"log_pattern\"\nlevel = \"L2\"\ncategory = \"hardware\"\nrecommendation = \"r\"\nwindow = \"1h\"\npattern = \"I/O error\"\nsubject = \"device\"".into(),
            "x", "subject", "named group of the pattern",
        ),
        (
            "[[rule]]\nname = \"x\"\nkind = \"log_pattern\"\nlevel = \"L2\"\ncategory = \"hardware\"\nrecommendation = \"r\"\nwindow = \"1h\"\nmin_severity = \"loud\"".into(),
            "x", "min_severity", "min_severity \"loud\" is unknown",
        ),
        (
            "[[rule]]\nname = \"f\"\nkind = \"forecast\"\nlevel = \"L2\"\ncategory = \"capacity\"\nrecommendation = \"r\"\nmetric = \"m\"\nwindow = \"1d\"\nhorizon = \"7d\"".into(),
            "f", "rising_to", "rising_to (or falling_to) is missing",
        ),
        (
            "[[rule]]\nname = \"f\"\nkind = \"forecast\"\nlevel = \"L2\"\ncategory = \"capacity\"\nrecommendation = \"r\"\nmetric = \"m\"\nwindow = \"1d\"\nrising_to = 1\nhorizon = \"7d\"\nclear_horizon = \"1d\"".into(),
            "f", "clear_horizon", "must not be shorter than horizon",
        ),
        (
            "[[rule]]\nname = \"f\"\nkind = \"forecast\"\nlevel = \"L2\"\ncategory = \"capacity\"\nrecommendation = \"r\"\nmetric = \"m\"\nwindow = \"1d\"\nrising_to = 1\nhorizon = \"7d\"\nmin_fit = 2".into(),
            "f", "min_fit", "out of range",
        ),
        (
            "[[rule]]\nname = \"h\"\nkind = \"heartbeat\"\nlevel = \"L1\"\ncategory = \"availability\"\nrecommendation = \"r\"\nintervals = 0".into(),
            "h", "intervals", "out of range",
        ),
        (
            "[[rule]]\nname = \"s\"\nkind = \"clock_skew\"\nlevel = \"L4\"\ncategory = \"software\"\nrecommendation = \"r\"\nlimit = \"10s\"\nclear = \"1m\"".into(),
            "s", "clear", "must not be longer than limit",
        ),
    ];
    for (text, name, field, words) in cases {
        let e = RuleSet::parse(&text).expect_err(&text);
        let msg = e.to_string();
        let re = e.rule_error().unwrap_or_else(|| panic!("{msg}"));
        assert_eq!(
            (re.rule.as_str(), re.field.as_str()),
            (name, field),
            "{msg}"
        );
        assert!(msg.starts_with(&format!("rule '{name}': ")), "{msg}");
        assert!(msg.contains(words), "{msg}\n  wants: {words}");
    }
    let e = RuleSet::parse(&format!("{ok}{ok}"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("rule 'fs-full' is defined twice (rules 1 and 2)"),
        "{e}"
    );
    let e = RuleSet::parse("[[rules]]\nname = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `rules`"), "{e}");
    let path = std::path::Path::new("/nonexistent/rules.toml");
    let e = RuleSet::load(path).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/rules.toml"), "{e}");
}

#[test]
fn the_shipped_rules_file_is_the_builtin_set() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rules.toml");
    let shipped = RuleSet::load(&path).unwrap();
    assert_eq!(format!("{shipped:?}"), format!("{:?}", RuleSet::builtin()));
    assert_eq!(
        format!("{:?}", RuleSet::load_or_builtin(None).unwrap()),
        format!("{shipped:?}")
    );
    // What the issue asks the defaults to cover, at the levels it names.
    use Category::*;
    use Level::*;
    let want = [
        ("host-silent", L1, Availability, "heartbeat"),
        ("fs-full", L1, Capacity, "threshold"),
        ("fs-readonly", L1, Availability, "log_pattern"),
        ("kernel-panic", L1, Availability, "log_pattern"),
        ("fs-filling", L2, Capacity, "forecast"),
        ("inodes-full", L1, Capacity, "threshold"),
        ("inodes-filling", L2, Capacity, "forecast"),
        ("mem-oom-kills", L2, Capacity, "threshold"),
        ("oom-killer", L2, Software, "log_pattern"),
        ("disk-io-errors", L2, Hardware, "log_pattern"),
        ("temperature-high", L2, Hardware, "threshold"),
        ("swap-thrashing", L3, Performance, "threshold"),
        ("cpu-saturated", L3, Performance, "threshold"),
        ("load-high", L3, Performance, "threshold"),
        ("net-rx-errors", L3, Hardware, "threshold"),
        ("net-tx-errors", L3, Hardware, "threshold"),
        ("net-rx-drops", L4, Performance, "threshold"),
        ("net-tx-drops", L4, Performance, "threshold"),
        ("spool-drops", L3, Software, "spool_drops"),
        ("segfault", L3, Software, "log_pattern"),
        ("clock-skew", L4, Software, "clock_skew"),
        ("auth-failures", L4, Security, "log_pattern"),
        ("consent-expiring", L4, Software, "consent_expiry"),
    ];
    for (name, level, category, kind) in want {
        let r = shipped
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(
            (r.level, r.category, r.check.kind()),
            (level, category, kind),
            "{name}"
        );
        assert!(r.recommendation.len() > 40, "{name}");
    }
    // What evaluation must fetch: the metrics and the longest windows.
    let windows: Vec<(&str, i64)> = shipped
        .metrics()
        .iter()
        .map(|(m, w)| (m.as_str(), *w))
        .collect();
    assert!(windows.contains(&("fs.bytes.available", D)), "{windows:?}");
    assert_eq!(
        shipped.logs_window(),
        Some(H),
        "no log rule should need a day of logs"
    );
    assert_eq!(shipped.losses_window(), Some(H));
}

#[test]
fn disabled_rules_are_left_out() {
    let text = BUILTIN_RULES.replacen(
        "kind = \"heartbeat\"",
        "kind = \"heartbeat\"\nenabled = false",
        1,
    );
    let set = rules(&text);
    assert!(set.get("host-silent").is_none());
    assert_eq!(set.rules().len(), RuleSet::builtin().rules().len() - 1);
}

#[test]
fn keep_for_holds_an_event_finding_after_its_line_leaves_the_window() {
    let r = one_rule(
        "kind = \"log_pattern\"\npattern = \"Kernel panic\"\nwindow = \"10m\"\nkeep_for = \"30m\"",
    );
    let sc = Scenario::healthy().log(
        T0 + M,
        "kernel",
        Severity::Emergency,
        "Kernel panic - not syncing",
    );
    let mut sim = Sim::new(sc, r);
    let log = sim.run(T0, T0 + 60 * M, M);
    // Counted through T0 + 11 min; kept 30 minutes more.
    assert_eq!(minutes(log, Change::Raised), vec![1]);
    assert_eq!(minutes(log, Change::Cleared), vec![41]);
    assert_eq!(count(log, Change::Updated), 0, "{log:#?}");
}

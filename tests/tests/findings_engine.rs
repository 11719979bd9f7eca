//! The findings engine over a real SQLite store and a real webhook receiver on 127.0.0.1:
//! data stored as ingest stores it, passes at chosen instants, findings with SLA deadlines,
//! no duplicates, heartbeat loss and recovery, escalation, and the webhook told each time.

use aftercare_collector::findings::engine::Engine;
use aftercare_collector::findings::lifecycle::{EventKind, State};
use aftercare_collector::findings::record::FindingFilter;
use aftercare_collector::notify::Notifier;
use aftercare_collector::notify::config::WebhookConfig;
use aftercare_collector::rules::RuleSet;
use aftercare_collector::sla::SlaPolicy;
use aftercare_collector::store::{BatchData, HostHello, HostId, PendingBatch, Store, open_sqlite};
use aftercare_shared::consent::{ConsentRecord, Scope};
use aftercare_shared::model::{
    HostFacts, LogRecord, LossReport, MetricKind, MetricSnapshot, Sample, Severity,
};
use aftercare_shared::protocol::{Identity, StreamId};
use aftercare_tests::Receiver;
use std::time::{Duration, Instant};

const MIN: i64 = 60_000;

fn register(st: &mut dyn Store, now: i64) -> HostId {
    let mut consent = ConsentRecord::default();
    consent
        .grant_scopes(
            &[Scope::Metrics, Scope::Logs],
            "test",
            time::OffsetDateTime::now_utc() - time::Duration::days(1),
            None,
        )
        .unwrap();
    let hello = HostHello {
        identity: &Identity {
            customer: "acme".into(),
            host: "db1".into(),
        },
        facts: &HostFacts {
            hostname: "db1".into(),
            cpu_count: 4,
            ..Default::default()
        },
        agent_version: "0.1.0",
        consent: &consent,
        interval_ms: 10_000,
        cert_expires: None,
    };
    st.register_host(&hello, now).unwrap()
}

/// One tick of metrics: `/var` with `avail_pct` % available, `/` comfortable.
fn tick(host: HostId, seq: u64, ts: i64, avail_pct: f64) -> PendingBatch {
    let g = |name: &str, labels: &str, value: f64| Sample {
        name: name.into(),
        labels: labels.into(),
        kind: MetricKind::Gauge,
        value,
    };
    let total = 100e9;
    PendingBatch {
        host,
        stream: StreamId::Metrics,
        seq,
        received_at: ts,
        data: BatchData::Metrics(MetricSnapshot {
            ts,
            samples: vec![
                g(
                    "fs.bytes.total",
                    "device=sda2,fstype=ext4,mount=/var",
                    total,
                ),
                g(
                    "fs.bytes.available",
                    "device=sda2,fstype=ext4,mount=/var",
                    total * avail_pct / 100.0,
                ),
                g("fs.bytes.total", "device=sda1,fstype=ext4,mount=/", total),
                g(
                    "fs.bytes.available",
                    "device=sda1,fstype=ext4,mount=/",
                    total * 0.6,
                ),
                g("system.uptime", "", 1e5),
                g("cpu.usage", "", 12.0),
            ],
        }),
        loss: LossReport::default(),
    }
}

fn io_errors(host: HostId, seq: u64, ts: i64) -> PendingBatch {
    let rec = |i: i64| LogRecord {
        source: "syslog".into(),
        file: "/var/log/syslog".into(),
        offset: i as u64 * 100,
        read_at: ts + i,
        ts: Some(ts + i),
        severity: Severity::Error,
        line: format!("kernel: [123.4] blk_update_request: I/O error, dev sdb, sector {i}"),
        part: 0,
    };
    PendingBatch {
        host,
        stream: StreamId::Logs,
        seq,
        received_at: ts,
        data: BatchData::Logs((0..3).map(rec).collect()),
        loss: LossReport::default(),
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The built-in rules, with acme on the 24x7 `premium` contract (L1 respond in 15 min,
/// whatever the day), resuming from what `st` saved.
fn new_engine(st: &mut dyn Store) -> Engine {
    let policy = SlaPolicy::parse("[customers]\nacme = \"premium\"\n").unwrap();
    Engine::new(
        RuleSet::builtin(),
        policy,
        Duration::from_secs(24 * 3600),
        st,
    )
}

/// A webhook to `hooks`, retrying quickly.
fn notifier_to(hooks: &Receiver) -> Notifier {
    let hook: WebhookConfig = toml::from_str(&format!(
        "name = \"ops\"\nurl = \"{}\"\nretry_base = \"20ms\"",
        hooks.url
    ))
    .unwrap();
    Notifier::start(&[hook]).unwrap()
}

#[test]
fn rules_raise_findings_once_escalate_and_resolve_with_the_webhook_told() {
    let d = tempfile::tempdir().unwrap();
    let mut st = open_sqlite(&d.path().join("a.db")).unwrap();
    // Now-ish, so that the consent granted "yesterday" is in force.
    let t0 = aftercare_shared::time_fmt::now_millis() - 60 * MIN;
    let h = register(&mut st, t0);
    let hooks = Receiver::start();
    let notifier = notifier_to(&hooks);
    let mut engine = new_engine(&mut st);

    // Nine minutes of ticks with /var at 1 % available, and disk I/O errors in the log.
    let mut seq = 0;
    for i in 0..54 {
        seq += 1;
        st.commit(&[tick(h, seq, t0 + i * 10_000, 1.0)]).unwrap();
    }
    st.commit(&[io_errors(h, 1, t0 + 5 * MIN)]).unwrap();
    let first = t0 + 9 * MIN;
    let s = engine.pass(&mut st, first, Some(&notifier)).unwrap();
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    // fs-full must hold for a minute (`for = "1m"`): only the log pattern is raised yet.
    let open_rules = |st: &mut dyn Store| -> Vec<(String, String, u8)> {
        st.findings(&FindingFilter {
            open_only: true,
            ..Default::default()
        })
        .unwrap()
        .iter()
        .map(|f| (f.rule.clone(), f.subject.clone(), f.level))
        .collect()
    };
    assert_eq!(
        open_rules(&mut st),
        [("disk-io-errors".to_string(), "device=sdb".to_string(), 2)]
    );
    // What the pass leaves open, by level, for the collector's /metrics.
    assert_eq!(s.open_by_level, [0, 1, 0, 0]);
    for i in 54..60 {
        seq += 1;
        st.commit(&[tick(h, seq, first + (i - 54) * 10_000, 1.0)])
            .unwrap();
    }
    let now = t0 + 10 * MIN;
    let s = engine.pass(&mut st, now, Some(&notifier)).unwrap();
    let open = st
        .findings(&FindingFilter {
            open_only: true,
            ..Default::default()
        })
        .unwrap();
    let mut by_level = [0u64; 4];
    for f in &open {
        by_level[usize::from(f.level) - 1] += 1;
    }
    assert_eq!(s.open_by_level, by_level);
    assert_eq!(s.open_by_level[0], 1, "fs-full is L1");
    let rules = open_rules(&mut st);
    assert!(
        rules.contains(&("fs-full".into(), "mount=/var".into(), 1)),
        "{rules:?}"
    );
    assert!(
        !rules.iter().any(|r| r.1 == "mount=/"),
        "/ is fine: {rules:?}"
    );
    let fs = open.iter().find(|f| f.rule == "fs-full").unwrap();
    assert_eq!(
        fs.respond_by,
        Some(now + 15 * MIN),
        "premium L1 respond in 15 min"
    );
    assert_eq!(fs.restore_by, Some(now + 120 * MIN));
    assert!(fs.evidence.contains("summary"), "{}", fs.evidence);
    wait_for("the opened webhooks", || {
        hooks.events_for("fs-full") == ["opened"]
            && hooks.events_for("disk-io-errors") == ["opened"]
    });

    // The same again a minute later: updated at most, never a second finding.
    for i in 60..66 {
        seq += 1;
        st.commit(&[tick(h, seq, t0 + i * 10_000, 1.0)]).unwrap();
    }
    engine.pass(&mut st, now + MIN, Some(&notifier)).unwrap();
    let again = st
        .findings(&FindingFilter {
            open_only: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(again.len(), open.len());

    // Nobody acknowledged: at 12 of 15 minutes the respond clock is at risk, then breached.
    engine
        .pass(&mut st, now + 13 * MIN, Some(&notifier))
        .unwrap();
    engine
        .pass(&mut st, now + 16 * MIN, Some(&notifier))
        .unwrap();
    engine
        .pass(&mut st, now + 17 * MIN, Some(&notifier))
        .unwrap();
    let (_, timeline) = st.finding(fs.id).unwrap().unwrap();
    let kinds: Vec<EventKind> = timeline.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == EventKind::Breached).count(),
        1,
        "a breach is announced once: {kinds:?}"
    );
    assert!(kinds.contains(&EventKind::AtRisk), "{kinds:?}");

    // The agent has been silent since its last tick (t0 + 11 min): host-silent (L1) opened
    // at the first pass past two minutes of silence, and by now its 15 minutes to respond
    // are over (past the at-risk point too, so only the breach is announced). Then the agent
    // sends again, with space freed.
    let silent_at = now + 30 * MIN;
    engine.pass(&mut st, silent_at, Some(&notifier)).unwrap();
    let silent = st
        .findings(&FindingFilter {
            open_only: true,
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .find(|f| f.rule == "host-silent")
        .expect("host-silent opened");
    assert_eq!((silent.level, silent.opened_at), (1, now + 13 * MIN));
    for i in 0..30 {
        seq += 1;
        st.commit(&[tick(h, seq, silent_at + i * 10_000, 40.0)])
            .unwrap();
    }
    let back = silent_at + 5 * MIN;
    engine.pass(&mut st, back, Some(&notifier)).unwrap();
    let (f, _) = st.finding(silent.id).unwrap().unwrap();
    assert_eq!(
        f.state,
        State::Resolved,
        "host-silent auto-resolves when data returns"
    );
    let (fs_now, _) = st.finding(fs.id).unwrap().unwrap();
    assert_eq!(fs_now.state, State::Resolved, "/var at 40 % clears fs-full");
    assert_eq!(fs_now.resolved.as_ref().unwrap().1, None, "auto-resolved");
    wait_for("the webhook's whole story", || {
        hooks.events_for("fs-full") == ["opened", "at_risk", "breached", "resolved"]
            && hooks.events_for("host-silent") == ["opened", "breached", "resolved"]
    });

    // The engine's memory survives a restart: a new engine resumes, nothing is re-raised.
    drop(engine);
    let mut engine = new_engine(&mut st);
    let s = engine.pass(&mut st, back + MIN, None).unwrap();
    assert_eq!((s.opened, s.reopened), (0, 0), "{s:?}");
    let counts = notifier.stop(Duration::from_secs(2));
    assert_eq!(counts[0].1.dead_letters, 0);
}

#[test]
fn in_a_maintenance_window_findings_record_but_nobody_is_told_and_clocks_wait() {
    use aftercare_collector::findings::record::Silence;
    let d = tempfile::tempdir().unwrap();
    let mut st = open_sqlite(&d.path().join("a.db")).unwrap();
    let t0 = aftercare_shared::time_fmt::now_millis() - 60 * MIN;
    let h = register(&mut st, t0);
    let hooks = Receiver::start();
    let notifier = notifier_to(&hooks);
    let mut engine = new_engine(&mut st);
    // The disk is being swapped from t0 + 5 min to t0 + 65 min: its errors are expected.
    let window_end = t0 + 65 * MIN;
    st.add_silence(&Silence {
        id: 0,
        customer: "acme".into(),
        host: Some("db1".into()),
        starts: t0 + 5 * MIN,
        ends: window_end,
        reason: "disk swap".into(),
        created_by: "ann".into(),
        created_at: t0,
    })
    .unwrap();
    for i in 0..60 {
        st.commit(&[tick(h, i + 1, t0 + i as i64 * 10_000, 40.0)])
            .unwrap();
    }
    st.commit(&[io_errors(h, 1, t0 + 9 * MIN)]).unwrap();
    let now = t0 + 10 * MIN;
    engine.pass(&mut st, now, Some(&notifier)).unwrap();
    let open = st
        .findings(&FindingFilter {
            open_only: true,
            ..Default::default()
        })
        .unwrap();
    let f = open
        .iter()
        .find(|f| f.rule == "disk-io-errors")
        .expect("recorded in the window");
    assert_eq!(f.opened_at, now);
    assert_eq!(
        f.sla_from, window_end,
        "the clocks start when the window ends"
    );
    // premium L2: respond in 30 min, on 24x7.
    assert_eq!(f.respond_by, Some(window_end + 30 * MIN));
    // Well past 80 % of 30 minutes after it opened, but still in the window: no escalation.
    engine
        .pass(&mut st, now + 40 * MIN, Some(&notifier))
        .unwrap();
    let (_, timeline) = st.finding(f.id).unwrap().unwrap();
    assert_eq!(
        timeline.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EventKind::Opened]
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        hooks.events_for("disk-io-errors").is_empty(),
        "nobody is told in the window: {:?}",
        hooks.got.lock().unwrap()
    );
    // Ended early: the window's end moves to now; later findings notify again.
    st.end_silence(1, now + 41 * MIN).unwrap();
    assert!(st.silences(now + 41 * MIN).unwrap().is_empty());
    notifier.stop(Duration::from_secs(1));
}

#[test]
fn a_contract_assigned_over_the_api_sets_new_findings_deadlines() {
    use aftercare_collector::sla::{FindingTimes, Level};
    use aftercare_collector::store::ContractAssignment;
    let d = tempfile::tempdir().unwrap();
    let mut st = open_sqlite(&d.path().join("a.db")).unwrap();
    let t0 = aftercare_shared::time_fmt::now_millis() - 60 * MIN;
    let h = register(&mut st, t0);
    // sla.toml says premium; an admin moved acme to standard.
    let mut engine = new_engine(&mut st);
    st.set_contract(&ContractAssignment {
        customer: "acme".into(),
        contract: "standard".into(),
        set_at: t0,
        set_by: "boss".into(),
    })
    .unwrap();
    st.commit(&[io_errors(h, 1, t0 + 5 * MIN)]).unwrap();
    let s = engine.pass(&mut st, t0 + 6 * MIN, None).unwrap();
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let f = st
        .findings(&FindingFilter {
            open_only: true,
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .find(|f| f.rule == "disk-io-errors")
        .expect("the log pattern raised a finding");
    let due = |contract: &str| {
        let mut p = SlaPolicy::parse("[customers]\nacme = \"premium\"\n").unwrap();
        p.set_assigned([("acme".to_string(), contract.to_string())]);
        let times = FindingTimes {
            raised_at: f.sla_from,
            ..Default::default()
        };
        p.finding_sla("acme", Level::from_number(f.level), times, f.sla_from)
            .respond
            .due
    };
    assert_ne!(due("standard"), due("premium"));
    assert_eq!(f.respond_by, Some(due("standard")));
}

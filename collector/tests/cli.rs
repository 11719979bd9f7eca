//! The collector's command line, as a support engineer uses it.

use aftercare_collector::store::{BatchData, HostHello, PendingBatch, Store, open_sqlite};
use aftercare_shared::consent::{ConsentRecord, Scope};
use aftercare_shared::model::{HostFacts, LossReport, MetricKind, MetricSnapshot, Sample};
use aftercare_shared::protocol::{Identity, StreamId, seq};
use aftercare_shared::time_fmt::now_millis;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Run the collector to its end, killed if it takes longer than a minute.
fn collector(config: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aftercare-collector"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run aftercare-collector");
    // Read both pipes on threads so a chatty child cannot block on a full pipe.
    let drain = |mut p: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = p.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for aftercare-collector") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("aftercare-collector {args:?} still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Register acme/db1 in `st` as its Hello would.
fn register_db1(
    st: &mut impl Store,
    facts: &HostFacts,
    consent: &ConsentRecord,
    now: i64,
) -> aftercare_collector::store::HostId {
    let id = Identity {
        customer: "acme".into(),
        host: "db1".into(),
    };
    st.register_host(
        &HostHello {
            identity: &id,
            facts,
            agent_version: "0.1.0",
            consent,
            interval_ms: 10_000,
            cert_expires: None,
        },
        now,
    )
    .unwrap()
}

#[test]
fn ca_and_certificates() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("collector.toml");
    std::fs::write(&cfg, "data_dir = \"data\"\n").unwrap();

    let o = collector(&cfg, &["ca", "init"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("CA created"), "{}", text(&o));
    assert!(d.path().join("data/ca/ca.key").exists());

    let o = collector(&cfg, &["ca", "init"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--force"), "{}", text(&o));

    let out = d.path().join("db1");
    let o = collector(
        &cfg,
        &[
            "cert",
            "issue",
            "--customer",
            "acme",
            "--host",
            "db1",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("acme/db1"), "{}", text(&o));
    for f in ["agent.crt", "agent.key", "ca.crt"] {
        assert!(out.join(f).exists(), "{f}");
    }

    let o = collector(
        &cfg,
        &[
            "cert",
            "issue",
            "--customer",
            "acme",
            "--host",
            "db/1",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("db/1"), "{}", text(&o));
}

#[test]
fn hosts_and_metrics_tables() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("collector.toml");
    std::fs::write(&cfg, "data_dir = \"data\"\n").unwrap();

    // Before anything ran, the error says what to do.
    let o = collector(&cfg, &["hosts"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("serve"), "{}", text(&o));

    std::fs::create_dir_all(d.path().join("data")).unwrap();
    let now = now_millis();
    {
        let mut st = open_sqlite(&d.path().join("data/aftercare.db")).unwrap();
        let mut consent = ConsentRecord::default();
        consent
            .grant_scopes(
                &[Scope::Metrics],
                "Ann",
                time::OffsetDateTime::now_utc(),
                None,
            )
            .unwrap();
        let facts = HostFacts {
            os_name: "Debian GNU/Linux".into(),
            os_version: "12".into(),
            ..Default::default()
        };
        let host = register_db1(&mut st, &facts, &consent, now);
        let batches: Vec<PendingBatch> = (0..3)
            .map(|i| PendingBatch {
                host,
                stream: StreamId::Metrics,
                seq: seq(1, i),
                received_at: now,
                data: BatchData::Metrics(MetricSnapshot {
                    ts: now - 20_000 + i64::from(i) * 10_000,
                    samples: vec![
                        Sample {
                            name: "mem.total".into(),
                            labels: String::new(),
                            kind: MetricKind::Gauge,
                            value: 8.0 * 1024.0 * 1024.0 * 1024.0,
                        },
                        Sample {
                            name: "net.rx.bytes".into(),
                            labels: "interface=eth0".into(),
                            kind: MetricKind::Counter,
                            value: 1_000_000.0 + f64::from(i) * 10_240.0,
                        },
                    ],
                }),
                // The agent's backlog overflowed once before the second batch.
                loss: LossReport {
                    dropped_batches: u64::from(i == 1) * 3,
                    dropped_samples: u64::from(i == 1) * 120,
                    discarded_by_revocation: 0,
                },
            })
            .collect();
        st.commit(&batches).unwrap();
    }

    let o = collector(&cfg, &["hosts"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for w in [
        "CUSTOMER",
        "acme",
        "db1",
        "online",
        "metrics",
        "Debian GNU/Linux 12",
        "LOSS",
        "metrics: 3 batches (120 samples) dropped",
    ] {
        assert!(out.contains(w), "{w} missing in\n{out}");
    }

    let o = collector(&cfg, &["metrics", "--host", "db1"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("8.0 GiB"), "{out}");
    // 10 KiB every 10 s is a rate of 1 KiB/s.
    assert!(out.contains("1.0 KiB/s"), "{out}");

    let o = collector(
        &cfg,
        &[
            "metrics", "--host", "acme/db1", "--metric", "net.", "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    assert_eq!(v[0]["name"], "net.rx.bytes");
    assert_eq!(v[0]["points"].as_array().unwrap().len(), 3);

    let o = collector(&cfg, &["hosts", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    assert_eq!(v[0]["customer"], "acme");
    assert_eq!(v[0]["loss"]["metrics"]["dropped_samples"], 120);
    assert_eq!(v[0]["dropped_batches"], 3);
    // The API's form of a host, as `hosts --url ... --json` prints it.
    assert_eq!(v[0]["name"], "acme/db1");
    assert_eq!(v[0]["open_findings"], 0);

    let o = collector(&cfg, &["metrics", "--host", "nosuch"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("nosuch"), "{}", text(&o));

    let o = collector(&cfg, &["metrics", "--host", "db1", "--since", "last week"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("'last week'"), "{}", text(&o));
}

#[test]
fn logs_command_filters_and_names_bad_input() {
    use aftercare_shared::model::{LogRecord, Severity};
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("collector.toml");
    std::fs::write(&cfg, "data_dir = \"data\"\n").unwrap();
    std::fs::create_dir_all(d.path().join("data")).unwrap();
    let now = now_millis();
    {
        let mut st = open_sqlite(&d.path().join("data/aftercare.db")).unwrap();
        let host = register_db1(
            &mut st,
            &HostFacts::default(),
            &ConsentRecord::default(),
            now,
        );
        let rec = |i: u64, severity: Severity, line: &str| LogRecord {
            source: "syslog".into(),
            file: "/var/log/syslog".into(),
            offset: i * 80,
            read_at: now - 60_000 + i as i64,
            ts: None,
            severity,
            line: line.into(),
            part: 0,
        };
        st.commit(&[PendingBatch {
            host,
            stream: StreamId::Logs,
            seq: seq(1, 0),
            received_at: now,
            data: BatchData::Logs(vec![
                rec(0, Severity::Info, "systemd[1]: Started Daily apt upgrade."),
                rec(
                    1,
                    Severity::Error,
                    "kernel: EXT4-fs error (device sda1): bad block",
                ),
                rec(2, Severity::Warning, "sshd[812]: Failed password for root"),
            ]),
            loss: LossReport::default(),
        }])
        .unwrap();
    }
    let o = collector(&cfg, &["logs", "--host", "db1", "--severity", "warning"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("EXT4-fs error") && out.contains("Failed password"),
        "{out}"
    );
    assert!(!out.contains("apt upgrade"), "{out}");

    let o = collector(
        &cfg,
        &["logs", "--host", "db1", "--grep", "(?i)ext4", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["severity"], "Error");

    let o = collector(&cfg, &["logs", "--host", "db1", "--grep", "(unclosed"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("'(unclosed' is not a valid regular expression"),
        "{}",
        text(&o)
    );
    let o = collector(&cfg, &["logs", "--host", "db1", "--severity", "loud"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("unknown severity 'loud'"), "{}", text(&o));
}

#[test]
fn logs_count_counts_what_logs_would_show() {
    use aftercare_shared::model::{LogRecord, Severity};
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("collector.toml");
    std::fs::write(&cfg, "data_dir = \"data\"\n").unwrap();
    std::fs::create_dir_all(d.path().join("data")).unwrap();
    let now = now_millis();
    {
        let mut st = open_sqlite(&d.path().join("data/aftercare.db")).unwrap();
        let host = register_db1(
            &mut st,
            &HostFacts::default(),
            &ConsentRecord::default(),
            now,
        );
        // 20 batches of 300 lines, one line a second going back from now: 100 minutes,
        // so the default window (1h) and `--since 30m` both cut through a batch.
        let batches: Vec<PendingBatch> = (0..20u32)
            .map(|b| PendingBatch {
                host,
                stream: StreamId::Logs,
                seq: seq(1, b),
                received_at: now,
                data: BatchData::Logs(
                    (0..300u32)
                        .map(|i| {
                            let k = b * 300 + i;
                            LogRecord {
                                source: "syslog".into(),
                                file: "/var/log/syslog".into(),
                                offset: u64::from(k) * 100,
                                read_at: now,
                                ts: Some(now - 6_000_000 + i64::from(k) * 1000),
                                severity: if k % 10 == 0 {
                                    Severity::Error
                                } else {
                                    Severity::Info
                                },
                                line: format!("app[{k}]: request {k} done"),
                                part: 0,
                            }
                        })
                        .collect(),
                ),
                loss: LossReport::default(),
            })
            .collect();
        st.commit(&batches).unwrap();
    }
    let count = |args: &[&str]| -> String {
        let mut a = vec!["logs", "--host", "acme/db1", "--count"];
        a.extend_from_slice(args);
        let o = collector(&cfg, &a);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    // Lines from (now - 100 min) to now - 1 s: the last hour holds 3600 of them (the line
    // exactly an hour old is in or out by milliseconds, so allow for it).
    let hour: u64 = count(&[]).trim().parse().unwrap();
    assert!((3599..=3601).contains(&hour), "{hour}");
    assert_eq!(count(&["--since", "7d"]), "6000\n");
    assert_eq!(count(&["--since", "7d", "--severity", "error"]), "600\n");
    assert_eq!(count(&["--since", "7d", "--grep", "request 59.9 "]), "10\n");
    assert_eq!(
        count(&["--since", "7d", "--grep", "9 done", "--severity", "err"]),
        "0\n"
    );
    let v: serde_json::Value =
        serde_json::from_str(&count(&["--since", "7d", "--json"])).expect("valid JSON");
    assert_eq!(v, serde_json::json!({ "count": 6000 }));

    // The same as the lines `logs` shows, when its limit does not cut them.
    let o = collector(
        &cfg,
        &[
            "logs", "--host", "db1", "--since", "30m", "--limit", "100000", "--json",
        ],
    );
    let shown = serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("valid JSON");
    let shown = shown.as_array().unwrap().len() as u64;
    let counted: u64 = count(&["--since", "30m"]).trim().parse().unwrap();
    assert!(
        counted.abs_diff(shown) <= 1 && (1799..=1801).contains(&counted),
        "counted {counted}, shown {shown}"
    );

    // A count has no limit: asking for both is a mistake to name.
    let o = collector(&cfg, &["logs", "--host", "db1", "--count", "--limit", "5"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--limit"), "{}", text(&o));
    let o = collector(&cfg, &["logs", "--host", "nosuch", "--count"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("nosuch"), "{}", text(&o));
}

#[test]
fn findings_are_listed_shown_acknowledged_and_resolved() {
    use aftercare_collector::findings::record::{Change, Clocks, FindingKey, Observed};
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("collector.toml");
    std::fs::write(&cfg, "data_dir = \"data\"\n").unwrap();
    std::fs::create_dir_all(d.path().join("data")).unwrap();
    // A 24x7 contract for acme, so the deadlines do not depend on when the test runs.
    std::fs::write(
        d.path().join("sla.toml"),
        "[customers]\nacme = \"premium\"\n",
    )
    .unwrap();
    let now = now_millis();
    let id = {
        let mut st = open_sqlite(&d.path().join("data/aftercare.db")).unwrap();
        let host = register_db1(
            &mut st,
            &HostFacts::default(),
            &ConsentRecord::default(),
            now,
        );
        st.apply_finding(&Change::Open {
            key: FindingKey {
                host,
                rule: "fs-full".into(),
                subject: "/var".into(),
            },
            observed: Observed {
                level: 1,
                category: "capacity".into(),
                title: "filesystem /var 99% full".into(),
                recommendation: "free space or grow the volume".into(),
                evidence: r#"{"used_pct":99.2}"#.into(),
                at: now - 5 * 60_000,
            },
            clocks: Clocks {
                from: now - 5 * 60_000,
                respond_by: None,
                restore_by: None,
            },
        })
        .unwrap()
    };
    let id_s = id.to_string();

    let o = collector(&cfg, &["findings"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("ID") && t.contains("L1") && t.contains("fs-full /var"),
        "{t}"
    );
    // premium L1: respond in 15 min, 5 used.
    assert!(t.contains("10m left") || t.contains("9m left"), "{t}");

    let o = collector(&cfg, &["findings", "show", &id_s]);
    let t = text(&o);
    assert!(
        t.contains("contract premium") && t.contains("opened"),
        "{t}"
    );
    assert!(t.contains("used_pct"), "{t}");

    let o = collector(&cfg, &["findings", "ack", &id_s, "--by", "ann"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = collector(&cfg, &["findings", "ack", &id_s, "--by", "bob"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("already acknowledged by ann"),
        "{}",
        text(&o)
    );

    let o = collector(
        &cfg,
        &[
            "findings",
            "resolve",
            &id_s,
            "--by",
            "bob",
            "--note",
            "rotated the logs",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = collector(&cfg, &["findings"]);
    assert!(text(&o).contains("no findings"), "{}", text(&o));
    let o = collector(&cfg, &["findings", "--all", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["state"], "resolved");
    assert_eq!(v[0]["resolved"]["note"], "rotated the logs");
    assert_eq!(v[0]["sla"]["respond"]["state"], "on_time");
    let o = collector(&cfg, &["findings", "show", &id_s, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let kinds: Vec<&str> = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["opened", "acknowledged", "resolved"]);

    let o = collector(&cfg, &["findings", "show", "999"]);
    assert!(
        !o.status.success() && text(&o).contains("no finding 999"),
        "{}",
        text(&o)
    );
    let o = collector(&cfg, &["findings", "resolve", &id_s, "--by", " "]);
    assert!(
        !o.status.success() && text(&o).contains("--by NAME"),
        "{}",
        text(&o)
    );
}

#[test]
fn maintenance_windows_are_added_listed_and_ended() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("collector.toml");
    std::fs::write(&cfg, "data_dir = \"data\"\n").unwrap();
    std::fs::create_dir_all(d.path().join("data")).unwrap();
    // No database yet: an action says how to make one.
    let o = collector(
        &cfg,
        &[
            "silence",
            "add",
            "--customer",
            "acme",
            "--for",
            "2h",
            "--reason",
            "r",
            "--by",
            "ann",
        ],
    );
    assert!(
        !o.status.success() && text(&o).contains("serve"),
        "{}",
        text(&o)
    );
    drop(open_sqlite(&d.path().join("data/aftercare.db")).unwrap());
    let o = collector(
        &cfg,
        &[
            "silence",
            "add",
            "--customer",
            "acme",
            "--host",
            "db1",
            "--for",
            "2h",
            "--reason",
            "disk swap",
            "--by",
            "ann",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("maintenance window 1"), "{}", text(&o));
    let o = collector(&cfg, &["silence", "list"]);
    let t = text(&o);
    assert!(
        t.contains("acme") && t.contains("db1") && t.contains("active") && t.contains("disk swap"),
        "{t}"
    );
    for (args, want) in [
        (
            vec!["--for", "2h", "--reason", " ", "--by", "ann"],
            "--reason",
        ),
        (
            vec!["--until", "1999-01-01", "--reason", "x", "--by", "ann"],
            "ends before it starts",
        ),
        (vec!["--reason", "x", "--by", "ann"], "--for"),
    ] {
        let mut a = vec!["silence", "add", "--customer", "acme"];
        a.extend(args);
        let o = collector(&cfg, &a);
        assert!(
            !o.status.success() && text(&o).contains(want),
            "{a:?}: {}",
            text(&o)
        );
    }
    let o = collector(&cfg, &["silence", "end", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = collector(&cfg, &["silence", "list"]);
    assert!(text(&o).contains("no maintenance windows"), "{}", text(&o));
    let o = collector(&cfg, &["silence", "end", "7"]);
    assert!(
        !o.status.success() && text(&o).contains("no maintenance window 7"),
        "{}",
        text(&o)
    );
}

#[test]
fn tokens_are_shown_once_kept_as_hashes_and_revoked() {
    use aftercare_collector::api::token;
    use aftercare_collector::store::open_sqlite_readonly;
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("collector.toml");
    std::fs::write(&cfg, "data_dir = \"data\"\n").unwrap();
    std::fs::create_dir_all(d.path().join("data")).unwrap();
    let db = d.path().join("data/aftercare.db");
    drop(open_sqlite(&db).unwrap());
    let create = |name: &str, role: &str| {
        collector(
            &cfg,
            &[
                "token", "create", "--name", name, "--role", role, "--by", "admin",
            ],
        )
    };
    let o = create("ann", "engineer");
    assert!(o.status.success(), "{}", text(&o));
    let secret = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(secret.starts_with(token::PREFIX), "{secret}");
    assert!(text(&o).contains("shown this once"), "{}", text(&o));
    // Only the hash is in the database.
    let raw = std::fs::read(&db).unwrap();
    let wal = std::fs::read(d.path().join("data/aftercare.db-wal")).unwrap_or_default();
    for bytes in [&raw, &wal] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the token itself is stored"
        );
    }
    let mut st = open_sqlite_readonly(&db).unwrap();
    let t = st.token_by_hash(&token::hash(&secret)).unwrap().unwrap();
    assert_eq!((t.name.as_str(), t.role), ("ann", token::Role::Engineer));
    drop(st);

    let o = create("ann", "viewer");
    assert!(
        !o.status.success() && text(&o).contains("exists"),
        "{}",
        text(&o)
    );
    let o = create("bob", "root");
    assert!(
        !o.status.success() && text(&o).contains("viewer, engineer or admin"),
        "{}",
        text(&o)
    );
    let o = create("bad name", "viewer");
    assert!(
        !o.status.success() && text(&o).contains("not usable"),
        "{}",
        text(&o)
    );

    let o = collector(&cfg, &["token", "list"]);
    assert!(
        text(&o).contains("ann") && text(&o).contains("engineer") && text(&o).contains("active")
    );
    let o = collector(&cfg, &["token", "revoke", "ann"]);
    assert!(o.status.success(), "{}", text(&o));
    let mut st = open_sqlite_readonly(&db).unwrap();
    assert_eq!(
        st.token_by_hash(&token::hash(&secret)).unwrap(),
        None,
        "revoked"
    );
    let o = collector(&cfg, &["token", "revoke", "ann"]);
    assert!(
        !o.status.success() && text(&o).contains("no active token"),
        "{}",
        text(&o)
    );
}

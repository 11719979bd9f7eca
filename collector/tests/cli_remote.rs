//! The command line on an engineer's laptop: `--url` and a token ask a running collector's
//! API (here one in this process on 127.0.0.1), with the same tables and `--json`.

use aftercare_collector::api::token::{self, Role};
use aftercare_collector::config::CollectorConfig;
use aftercare_collector::findings::record::{Change, Clocks, FindingKey, Observed};
use aftercare_collector::store::{BatchData, HostHello, PendingBatch, Store};
use aftercare_shared::consent::ConsentRecord;
use aftercare_shared::model::{
    HostFacts, LogRecord, LossReport, MetricKind, MetricSnapshot, Sample, Severity,
};
use aftercare_shared::protocol::{Identity, StreamId};
use aftercare_shared::time_fmt::now_millis;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Run the CLI to its end with `env`, killed after a minute.
fn cli(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aftercare-collector"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("AFTERCARE_TOKEN")
        .env_remove("AFTERCARE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run aftercare-collector");
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
        if let Some(s) = child.try_wait().expect("wait") {
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

fn add_token(st: &mut dyn Store, name: &str, role: Role) -> String {
    token::issue(st, name, role, "test", now_millis()).unwrap()
}

/// acme/db1 with a few minutes of metrics, three log lines and an L1 finding; a viewer's
/// and an engineer's token.
fn seed(st: &mut dyn Store, now: i64) -> (i64, String, String) {
    let host = st
        .register_host(
            &HostHello {
                identity: &Identity {
                    customer: "acme".into(),
                    host: "db1".into(),
                },
                facts: &HostFacts {
                    os_name: "Debian".into(),
                    ..HostFacts::default()
                },
                agent_version: "0.1.0",
                consent: &ConsentRecord::default(),
                interval_ms: 10_000,
                cert_expires: None,
            },
            now - 600_000,
        )
        .unwrap();
    let batches: Vec<PendingBatch> = (0..10u64)
        .map(|i| PendingBatch {
            host,
            stream: StreamId::Metrics,
            seq: i + 1,
            received_at: now - 300_000 + i as i64 * 10_000,
            data: BatchData::Metrics(MetricSnapshot {
                ts: now - 300_000 + i as i64 * 10_000,
                samples: vec![Sample {
                    name: "cpu.usage".into(),
                    labels: String::new(),
                    kind: MetricKind::Gauge,
                    value: 25.0,
                }],
            }),
            loss: LossReport::default(),
        })
        .collect();
    st.commit(&batches).unwrap();
    let lines: Vec<LogRecord> = ["first", "second", "third"]
        .iter()
        .enumerate()
        .map(|(i, l)| LogRecord {
            source: "app".into(),
            file: "/var/log/app.log".into(),
            offset: i as u64 * 10,
            read_at: now - 60_000,
            ts: Some(now - 60_000 + i as i64 * 1000),
            severity: Severity::Warning,
            line: format!("{l} line"),
            part: 0,
        })
        .collect();
    st.commit(&[PendingBatch {
        host,
        stream: StreamId::Logs,
        seq: 1,
        received_at: now - 30_000,
        data: BatchData::Logs(lines),
        loss: LossReport::default(),
    }])
    .unwrap();
    let id = st
        .apply_finding(&Change::Open {
            key: FindingKey {
                host,
                rule: "fs-full".into(),
                subject: "/var".into(),
            },
            observed: Observed {
                level: 1,
                category: "capacity".into(),
                title: "filesystem /var 99% full".into(),
                recommendation: "free space".into(),
                evidence: r#"{"used_pct":99}"#.into(),
                at: now - 60_000,
            },
            clocks: Clocks {
                from: now - 60_000,
                respond_by: None,
                restore_by: None,
            },
        })
        .unwrap();
    (
        id,
        add_token(st, "vera", Role::Viewer),
        add_token(st, "eng", Role::Engineer),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_asks_a_running_collector_over_its_api() {
    let d = tempfile::tempdir().unwrap();
    let cfg_path = d.path().join("collector.toml");
    std::fs::write(
        &cfg_path,
        "data_dir = \"data\"\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let cfg = CollectorConfig::load(&cfg_path).unwrap();
    aftercare_collector::ca::init_ca(
        &cfg.ca_dir(),
        &cfg.server_names,
        &aftercare_collector::ca::InitOptions::default(),
    )
    .unwrap();
    let now = now_millis();
    let (id, viewer, engineer) = seed(&mut *cfg.database.open().unwrap(), now);
    let collector = aftercare_collector::server::Collector::bind(&cfg).unwrap();
    let url = format!("http://{}", collector.api_addr());
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(collector.run(stop.clone()));

    // The laptop has no collector.toml of its own: a path that does not exist.
    let nowhere = d.path().join("laptop.toml");
    let eng_file = d.path().join("eng.token");
    std::fs::write(&eng_file, format!("{engineer}\n")).unwrap();
    let nowhere_for_checks = nowhere.clone();
    let checks = tokio::task::spawn_blocking(move || {
        let nowhere = nowhere_for_checks;
        let as_viewer = [
            ("AFTERCARE_URL", url.as_str()),
            ("AFTERCARE_TOKEN", viewer.as_str()),
        ];
        let run = |args: &[&str]| cli(&nowhere, args, &as_viewer);

        let o = run(&["hosts"]);
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        assert!(
            t.contains("CUSTOMER") && t.contains("acme") && t.contains("db1"),
            "{t}"
        );
        assert!(t.contains("Debian"), "{t}");
        let o = run(&["hosts", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
        assert_eq!(v[0]["name"], "acme/db1", "{v}");

        let o = run(&["metrics", "--host", "acme/db1", "--since", "1h"]);
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        assert!(t.contains("cpu.usage") && t.contains("25"), "{t}");
        let o = run(&["metrics", "--host", "db1"]);
        assert!(!o.status.success());
        assert!(text(&o).contains("customer/host"), "{}", text(&o));

        let o = run(&[
            "logs", "--host", "acme/db1", "--since", "1h", "--limit", "2",
        ]);
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        // The newest two, oldest first, as without --url.
        let second = t.find("second line").expect("second");
        let third = t.find("third line").expect("third");
        assert!(second < third && !t.contains("first line"), "{t}");
        let o = run(&["logs", "--host", "acme/db1", "--severity", "loud"]);
        assert!(!o.status.success());
        assert!(text(&o).contains("bad_severity: severity"), "{}", text(&o));

        let o = run(&["findings"]);
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        assert!(t.contains("fs-full /var") && t.contains("L1"), "{t}");
        let o = run(&["findings", "show", &id.to_string()]);
        assert!(
            text(&o).contains("timeline:") && text(&o).contains("opened"),
            "{}",
            text(&o)
        );

        // A viewer cannot acknowledge: the API's code and message, and a failure.
        let o = run(&["findings", "ack", &id.to_string()]);
        assert!(!o.status.success());
        assert!(
            text(&o).contains("forbidden") && text(&o).contains("needs engineer"),
            "{}",
            text(&o)
        );
        // An engineer's token from a file can.
        let o = cli(
            &nowhere,
            &[
                "findings",
                "ack",
                &id.to_string(),
                "--url",
                &url,
                "--token-file",
                eng_file.to_str().unwrap(),
            ],
            &[],
        );
        assert!(o.status.success(), "{}", text(&o));
        let o = run(&["findings", "show", &id.to_string(), "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
        assert_eq!(v["acknowledged"]["by"], "eng", "{v}");

        // Without a token: how to get one.
        let o = cli(&nowhere, &["hosts", "--url", &url], &[]);
        assert!(!o.status.success());
        let t = text(&o);
        assert!(
            t.contains("AFTERCARE_TOKEN") && t.contains("token create"),
            "{t}"
        );
        url
    });
    let _url = tokio::time::timeout(Duration::from_secs(120), checks)
        .await
        .expect("in time")
        .unwrap();

    // On the collector itself, the audit trail shows the API's change and the CLI's own.
    let o = cli(
        &cfg_path,
        &[
            "silence",
            "add",
            "--customer",
            "acme",
            "--for",
            "1h",
            "--reason",
            "swap",
            "--by",
            "ann",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = cli(&cfg_path, &["audit", "--json"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let rows: Vec<(String, String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["actor"].as_str().unwrap().into(),
                a["role"].as_str().unwrap().into(),
                a["action"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                "cli:ann".to_string(),
                "local".to_string(),
                "silence.add".to_string()
            ),
            ("eng".into(), "engineer".into(), "finding.ack".into()),
            ("vera".into(), "viewer".into(), "finding.ack".into()),
        ]
    );
    let o = cli(&cfg_path, &["audit"], &[]);
    assert!(
        text(&o).contains("cli:ann") && text(&o).contains("ACTION"),
        "{}",
        text(&o)
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("stops in time")
        .unwrap()
        .unwrap();
}

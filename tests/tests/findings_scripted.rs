//! Findings from a scripted agent speaking the real protocol (QUIC, mutual TLS, batches and
//! acknowledgements), for what this machine cannot be made to do: a filesystem hovering at
//! its limit (one finding, no flapping, cleared past the clear line) and one filling up
//! (a forecast with a plausible date).

use aftercare_agent::transport::{self, Link};
use aftercare_collector::config::CollectorConfig;
use aftercare_collector::findings::record::FindingFilter;
use aftercare_shared::codec;
use aftercare_shared::consent::{ConsentRecord, Scope};
use aftercare_shared::model::{HostFacts, LossReport, MetricKind, MetricSnapshot, Sample};
use aftercare_shared::protocol::*;
use aftercare_shared::time_fmt::now_millis;
use aftercare_tests::*;
use std::time::Duration;

const RULES: &str = r#"
[[rule]]
name = "fs-full"
kind = "threshold"
level = "L1"
category = "capacity"
metric = "fs.bytes.available"
percent_of = "fs.bytes.total"
aggregate = "last"
window = "5m"
below = 2
clear_above = 5
subject = "mount"
match = { mount = "/data" }
recommendation = "Free space."

[[rule]]
name = "fs-filling"
kind = "forecast"
level = "L2"
category = "capacity"
metric = "fs.bytes.available"
percent_of = "fs.bytes.total"
window = "24h"
falling_to = 0
horizon = "7d"
subject = "mount"
match = { mount = "/var" }
recommendation = "Plan more space."
"#;

const DAY: i64 = 86_400_000;
const TOTAL: f64 = 1e12;

fn sample(name: &str, mount: &str, value: f64) -> Sample {
    Sample {
        name: name.into(),
        labels: if mount.is_empty() {
            String::new()
        } else {
            format!("device=sdx,fstype=xfs,mount={mount}")
        },
        kind: MetricKind::Gauge,
        value,
    }
}

/// A snapshot at `ts`: `/var` at `var_pct` % available, `/data` at `data_pct` %.
fn snapshot(ts: i64, var_pct: f64, data_pct: f64) -> MetricSnapshot {
    MetricSnapshot {
        ts,
        samples: vec![
            sample("fs.bytes.total", "/var", TOTAL),
            sample("fs.bytes.available", "/var", TOTAL * var_pct / 100.0),
            sample("fs.bytes.total", "/data", TOTAL),
            sample("fs.bytes.available", "/data", TOTAL * data_pct / 100.0),
            sample("system.uptime", "", 1e6),
        ],
    }
}

struct Agent {
    link: Link,
    seq: u32,
}

impl Agent {
    async fn send(&mut self, s: MetricSnapshot) {
        self.seq += 1;
        let msg = AgentMsg::Batch(Batch {
            seq: seq(1, self.seq),
            claimed_host: None,
            payload: Payload::Metrics {
                snapshot: s,
                loss: LossReport::default(),
            },
        });
        let f = codec::to_frame(&msg, codec::DEFAULT_MAX_FRAME).unwrap();
        self.link.send.write_all(&f).await.unwrap();
        // Every batch is acknowledged before the next: what follows is stored.
        let ack = tokio::time::timeout(
            PATIENCE,
            transport::read_msg(&mut self.link.recv, codec::DEFAULT_MAX_FRAME),
        )
        .await
        .expect("ack in time")
        .unwrap();
        assert!(matches!(ack, Some(CollectorMsg::Ack { .. })), "{ack:?}");
    }
}

async fn connect(f: &Fixture, addr: std::net::SocketAddr) -> Agent {
    let certs = f.issue("scripted", "acme", "fs1");
    let ep = agent_endpoint(&certs);
    let cfg = f.agent_config("scripted", &certs, addr).collector;
    let mut consent = ConsentRecord::default();
    consent
        .grant_scopes(
            &[Scope::Metrics],
            "T",
            time::OffsetDateTime::now_utc(),
            None,
        )
        .unwrap();
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: "scripted".into(),
        facts: HostFacts {
            hostname: "fs1".into(),
            cpu_count: 2,
            ..Default::default()
        },
        consent,
        claimed: None,
        interval_ms: 1000,
    };
    let link = tokio::time::timeout(PATIENCE, transport::connect(&ep, &cfg, addr, &hello))
        .await
        .expect("connect in time")
        .expect("connect");
    Agent { link, seq: 0 }
}

fn findings_of(f: &Fixture, rule: &str) -> Vec<aftercare_collector::findings::record::FindingRow> {
    let mut st = f.store();
    st.findings(&FindingFilter::default())
        .unwrap()
        .into_iter()
        .filter(|r| r.rule == rule)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filesystem_at_its_limit_does_not_flap_and_one_filling_up_gets_a_date() {
    let mut f = Fixture::new();
    std::fs::write(f.dir.path().join("rules.toml"), RULES).unwrap();
    let path = f.config_path();
    let base = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("rules_file = \"rules.toml\"\n{base}\n[findings]\nevaluate_every = \"1s\"\n"),
    )
    .unwrap();
    f.collector = CollectorConfig::load(&path).unwrap();
    let c = f.start().await;
    let mut agent = connect(&f, c.addr).await;

    // A day of history every 10 minutes: /var falls from 50 % to 40 % available (10 points
    // a day: empty in four days); /data comfortable.
    let now = now_millis();
    for k in 0..=144 {
        let ts = now - DAY + k * 600_000;
        let var = 50.0 - 10.0 * (ts - (now - DAY)) as f64 / DAY as f64;
        agent.send(snapshot(ts, var, 30.0)).await;
    }
    // Then live for about 7 s: /data hovers across its 2 % line, never reaching the 5 %
    // that clears it. (Runs of different lengths: a strict alternation could meet the
    // once-a-second evaluation always on the same side.)
    for data in [
        1.9, 1.8, 2.4, 1.6, 1.6, 2.2, 2.2, 2.2, 1.8, 3.0, 1.7, 2.6, 2.6, 1.9, 4.9, 1.5, 2.1,
    ] {
        agent.send(snapshot(now_millis(), 40.0, data)).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let full = findings_of(&f, "fs-full");
    assert_eq!(
        full.len(),
        1,
        "one finding, however often the value crossed: {full:?}"
    );
    assert_eq!(full[0].state.as_str(), "open");
    assert_eq!(full[0].subject, "mount=/data");
    let (_, timeline) = f.store().finding(full[0].id).unwrap().unwrap();
    assert_eq!(timeline.len(), 1, "opened, and nothing else: {timeline:?}");

    // The forecast: /var reaches 0 % in about four days.
    let filling = findings_of(&f, "fs-filling");
    assert_eq!(filling.len(), 1, "{filling:?}");
    let ev: serde_json::Value = serde_json::from_str(&filling[0].evidence).unwrap();
    let predicted = ev["predicted"].as_i64().expect("a predicted date");
    let days = (predicted - now) as f64 / DAY as f64;
    assert!((3.5..4.5).contains(&days), "empty in {days:.2} days: {ev}");
    assert!(ev["summary"].as_str().unwrap().contains("/var"), "{ev}");

    // Above the clear line: resolved by itself.
    agent.send(snapshot(now_millis(), 40.0, 10.0)).await;
    let end = std::time::Instant::now() + PATIENCE;
    while findings_of(&f, "fs-full")[0].state.as_str() != "resolved" {
        assert!(std::time::Instant::now() < end, "fs-full did not clear");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(findings_of(&f, "fs-full").len(), 1);
    drop(agent);
    c.shutdown().await;
}

//! Who may talk to the collector, and what it does with a peer that lies or babbles.

use aftercare_agent::transport::{self, Link, LinkError};
use aftercare_collector::ca;
use aftercare_shared::codec;
use aftercare_shared::consent::{ConsentRecord, Scope};
use aftercare_shared::logblock;
use aftercare_shared::model::{HostFacts, LossReport, MetricKind, MetricSnapshot, Sample};
use aftercare_shared::protocol::*;
use aftercare_tests::*;
use std::path::Path;
use std::time::Duration;

fn consent(scopes: &[Scope]) -> ConsentRecord {
    let mut r = ConsentRecord::default();
    if !scopes.is_empty() {
        r.grant_scopes(scopes, "T", time::OffsetDateTime::now_utc(), None)
            .unwrap();
    }
    r
}

fn hello(claimed: Option<Identity>, consent: ConsentRecord) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: "test".into(),
        facts: HostFacts {
            hostname: "t".into(),
            ..Default::default()
        },
        consent,
        claimed,
        interval_ms: 1000,
    }
}

fn batch(seq: u64, ts: i64, claimed_host: Option<String>) -> AgentMsg {
    AgentMsg::Batch(Batch {
        seq,
        claimed_host,
        payload: Payload::Metrics {
            snapshot: MetricSnapshot {
                ts,
                samples: vec![Sample {
                    name: "test.value".into(),
                    labels: String::new(),
                    kind: MetricKind::Gauge,
                    value: ts as f64,
                }],
            },
            loss: LossReport::default(),
        },
    })
}

async fn connect_with(
    f: &Fixture,
    certs: &Path,
    addr: std::net::SocketAddr,
    server_name: &str,
    h: &Hello,
) -> Result<Link, LinkError> {
    let ep = agent_endpoint(certs);
    let mut cfg = f.agent_config("probe", certs, addr).collector;
    cfg.server_name = server_name.into();
    tokio::time::timeout(PATIENCE, transport::connect(&ep, &cfg, addr, h))
        .await
        .expect("connect finishes in time")
}

async fn send(link: &mut Link, msg: &AgentMsg) {
    let f = codec::to_frame(msg, codec::DEFAULT_MAX_FRAME).unwrap();
    link.send.write_all(&f).await.unwrap();
}

async fn recv(link: &mut Link) -> Option<CollectorMsg> {
    tokio::time::timeout(
        PATIENCE,
        transport::read_msg(&mut link.recv, codec::DEFAULT_MAX_FRAME),
    )
    .await
    .expect("answer in time")
    .ok()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_another_ca_expired_or_for_another_server_are_refused() {
    let f = Fixture::new();
    let c = f.start().await;
    let good = f.issue("good", "acme", "db1");
    let h = hello(None, consent(&[Scope::Metrics]));

    // The good one works, and the collector names it from its certificate.
    let link = connect_with(&f, &good, c.addr, "localhost", &h)
        .await
        .unwrap();
    assert_eq!(
        link.welcome.identity,
        Identity {
            customer: "acme".into(),
            host: "db1".into()
        }
    );
    drop(link);

    // Another CA: its certificate is refused in the handshake.
    let other = tempfile::tempdir().unwrap();
    ca::init_ca(
        &other.path().join("ca"),
        &["localhost".into()],
        &ca::InitOptions::default(),
    )
    .unwrap();
    let rogue = other.path().join("rogue");
    ca::issue_agent_cert(
        &other.path().join("ca"),
        "acme",
        "db1",
        &rogue,
        ca::Validity::days_from_now(1),
    )
    .unwrap();
    // The rogue agent trusts the real collector's CA so that only its own certificate is at fault.
    std::fs::copy(good.join("ca.crt"), rogue.join("ca.crt")).unwrap();
    let e = connect_with(&f, &rogue, c.addr, "localhost", &h)
        .await
        .err()
        .expect("rogue CA refused");
    assert!(
        matches!(e, LinkError::Connection { .. } | LinkError::Stream(_)),
        "{e}"
    );

    // Expired.
    let expired = f.dir.path().join("expired");
    let now = time::OffsetDateTime::now_utc();
    ca::issue_agent_cert(
        &f.collector.ca_dir(),
        "acme",
        "db1",
        &expired,
        ca::Validity {
            not_before: now - time::Duration::days(10),
            not_after: now - time::Duration::days(1),
        },
    )
    .unwrap();
    let e = connect_with(&f, &expired, c.addr, "localhost", &h)
        .await
        .err()
        .expect("expired refused");
    assert!(
        matches!(e, LinkError::Connection { .. } | LinkError::Stream(_)),
        "{e}"
    );

    // The collector is not who the agent asked for.
    let e = connect_with(&f, &good, c.addr, "collector.evil.example", &h)
        .await
        .err()
        .expect("wrong server name refused");
    assert!(e.to_string().contains("certificate"), "{e}");

    assert!(
        f.store().hosts(0).unwrap().len() <= 1,
        "no rogue host stored"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_comes_from_the_certificate_never_the_payload() {
    let f = Fixture::new();
    let c = f.start().await;
    let certs = f.issue("a", "acme", "db1");

    // A Hello claiming to be another customer's host is refused.
    let lie = hello(
        Some(Identity {
            customer: "globex".into(),
            host: "db1".into(),
        }),
        consent(&[Scope::Metrics]),
    );
    let e = connect_with(&f, &certs, c.addr, "localhost", &lie)
        .await
        .err()
        .expect("impersonating Hello refused");
    assert!(
        e.to_string().contains("globex/db1") && e.to_string().contains("acme/db1"),
        "{e}"
    );

    // A truthful claim is fine; a batch claiming another host ends the session.
    let truth = hello(
        Some(Identity {
            customer: "acme".into(),
            host: "db1".into(),
        }),
        consent(&[Scope::Metrics]),
    );
    let mut link = connect_with(&f, &certs, c.addr, "localhost", &truth)
        .await
        .unwrap();
    let now = aftercare_shared::time_fmt::now_millis();
    send(&mut link, &batch(seq(1, 0), now, Some("db1".into()))).await;
    assert!(matches!(
        recv(&mut link).await,
        Some(CollectorMsg::Ack { .. })
    ));
    send(&mut link, &batch(seq(1, 1), now + 1, Some("web9".into()))).await;
    match recv(&mut link).await {
        Some(CollectorMsg::Refused { reason }) => assert!(reason.contains("web9"), "{reason}"),
        other => panic!("expected Refused, got {other:?}"),
    }
    let mut st = f.store();
    let pts = st
        .query("acme/db1", Some("test.value"), 0, i64::MAX)
        .unwrap();
    assert_eq!(pts[0].points.len(), 1, "the lying batch was not stored");
    assert!(st.query("web9", None, 0, i64::MAX).is_err(), "no host web9");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_outside_the_recorded_consent_are_rejected() {
    let f = Fixture::new();
    let c = f.start().await;
    let certs = f.issue("a", "acme", "db1");
    let mut link = connect_with(
        &f,
        &certs,
        c.addr,
        "localhost",
        &hello(None, consent(&[Scope::Logs])),
    )
    .await
    .unwrap();
    let now = aftercare_shared::time_fmt::now_millis();
    send(&mut link, &batch(seq(1, 0), now, None)).await;
    match recv(&mut link).await {
        Some(CollectorMsg::Rejected { reason, .. }) => {
            assert!(reason.contains("metrics"), "{reason}")
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    // After the customer grants metrics (ConsentUpdate), the same kind of batch is accepted.
    send(
        &mut link,
        &AgentMsg::ConsentUpdate(consent(&[Scope::Metrics])),
    )
    .await;
    send(&mut link, &batch(seq(1, 1), now + 1, None)).await;
    assert!(matches!(
        recv(&mut link).await,
        Some(CollectorMsg::Ack {
            duplicate: false,
            ..
        })
    ));
    let pts = f
        .store()
        .query("db1", Some("test.value"), 0, i64::MAX)
        .unwrap();
    assert_eq!(pts[0].points.len(), 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_batches_are_acknowledged_and_stored_once() {
    let f = Fixture::new();
    let c = f.start().await;
    let certs = f.issue("a", "acme", "db1");
    let h = hello(None, consent(&[Scope::Metrics]));
    let now = aftercare_shared::time_fmt::now_millis();
    let mut link = connect_with(&f, &certs, c.addr, "localhost", &h)
        .await
        .unwrap();
    assert_eq!(link.welcome.high_water, vec![]);
    for i in 0..3 {
        send(&mut link, &batch(seq(7, i), now + i as i64, None)).await;
        assert!(matches!(
            recv(&mut link).await,
            Some(CollectorMsg::Ack {
                duplicate: false,
                ..
            })
        ));
    }
    drop(link);
    // As after a lost acknowledgement: reconnect and send the last two again, then a new one.
    let mut link = connect_with(&f, &certs, c.addr, "localhost", &h)
        .await
        .unwrap();
    assert_eq!(
        link.welcome.high_water,
        vec![(StreamId::Metrics, seq(7, 2))]
    );
    for i in 1..4 {
        send(&mut link, &batch(seq(7, i), now + i as i64, None)).await;
        match recv(&mut link).await {
            Some(CollectorMsg::Ack {
                seq: s, duplicate, ..
            }) => {
                assert_eq!(s, seq(7, i));
                assert_eq!(duplicate, i < 3, "seq {i}");
            }
            other => panic!("expected Ack, got {other:?}"),
        }
    }
    let pts = f
        .store()
        .query("db1", Some("test.value"), 0, i64::MAX)
        .unwrap();
    assert_eq!(pts[0].points.len(), 4, "each batch stored once");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_mismatch_is_refused_naming_both_versions() {
    let f = Fixture::new();
    let c = f.start().await;
    let certs = f.issue("a", "acme", "db1");
    let mut h = hello(None, consent(&[Scope::Metrics]));
    h.protocol_version = PROTOCOL_VERSION + 1;
    let e = connect_with(&f, &certs, c.addr, "localhost", &h)
        .await
        .err()
        .expect("refused");
    let msg = e.to_string();
    let (agent, ours) = (
        format!("version {}", PROTOCOL_VERSION + 1),
        format!("versions 1 to {PROTOCOL_VERSION}"),
    );
    assert!(msg.contains(&agent) && msg.contains(&ours), "{msg}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_only_that_connection() {
    let f = Fixture::new();
    let c = f.start().await;
    let certs = f.issue("a", "acme", "db1");
    let h = hello(None, consent(&[Scope::Metrics]));
    let mut good = connect_with(&f, &certs, c.addr, "localhost", &h)
        .await
        .unwrap();
    let mut bad = connect_with(&f, &certs, c.addr, "localhost", &h)
        .await
        .unwrap();

    // A frame with a body that is not a message, then an oversized length.
    bad.send
        .write_all(&[0, 0, 0, 4, 0, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let closed = tokio::time::timeout(PATIENCE, bad.conn.closed())
        .await
        .expect("bad peer closed");
    assert!(closed.to_string().contains("malformed"), "{closed}");

    let mut bad2 = connect_with(&f, &certs, c.addr, "localhost", &h)
        .await
        .unwrap();
    bad2.send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let closed = tokio::time::timeout(PATIENCE, bad2.conn.closed())
        .await
        .expect("bad peer closed");
    assert!(closed.to_string().contains("cap"), "{closed}");

    // The good connection carries on.
    let now = aftercare_shared::time_fmt::now_millis();
    send(&mut good, &batch(seq(1, 0), now, None)).await;
    assert!(matches!(
        recv(&mut good).await,
        Some(CollectorMsg::Ack { .. })
    ));
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_finishes_its_stream_gets_every_acknowledgement() {
    let f = Fixture::new();
    let c = f.start().await;
    let certs = f.issue("a", "acme", "db1");
    let h = hello(None, consent(&[Scope::Metrics]));
    let mut link = connect_with(&f, &certs, c.addr, "localhost", &h)
        .await
        .unwrap();
    let now = aftercare_shared::time_fmt::now_millis();
    for i in 0..200 {
        send(&mut link, &batch(seq(1, i), now + i64::from(i), None)).await;
    }
    link.send.finish().unwrap();
    let mut acked = 0;
    while let Some(m) = recv(&mut link).await {
        assert!(matches!(m, CollectorMsg::Ack { .. }), "{m:?}");
        acked += 1;
    }
    assert_eq!(
        acked, 200,
        "acknowledgements lost when the agent ended its stream"
    );
    c.shutdown().await;
}

fn log_record(ts: i64, line: &str) -> aftercare_shared::model::LogRecord {
    aftercare_shared::model::LogRecord {
        source: "syslog".into(),
        file: "/var/log/syslog".into(),
        offset: 0,
        read_at: ts,
        ts: Some(ts),
        severity: aftercare_shared::model::Severity::Error,
        line: line.into(),
        part: 0,
    }
}

/// A log batch as this build's agents send it: one compressed block.
fn log_batch(seq: u64, ts: i64, line: &str) -> AgentMsg {
    let plain = logblock::from_records(&[log_record(ts, line)]);
    AgentMsg::Batch(Batch {
        seq,
        claimed_host: None,
        payload: Payload::log_block(logblock::compress(&plain).unwrap(), LossReport::default()),
    })
}

/// A log batch as protocol version 1 agents send it: records one by one.
fn log_batch_v1(seq: u64, ts: i64, line: &str) -> AgentMsg {
    AgentMsg::Batch(Batch {
        seq,
        claimed_host: None,
        payload: Payload::Logs {
            records: vec![log_record(ts, line)],
            loss: LossReport::default(),
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_agent_is_served_and_a_bad_block_is_rejected_not_fatal() {
    let f = Fixture::new();
    let c = f.start().await;
    let certs = f.issue("a", "acme", "db1");
    let now = aftercare_shared::time_fmt::now_millis();
    let mut h = hello(None, consent(&[Scope::Metrics, Scope::Logs]));
    h.protocol_version = 1;
    let mut link = connect_with(&f, &certs, c.addr, "localhost", &h)
        .await
        .unwrap();
    send(
        &mut link,
        &log_batch_v1(seq(1, 0), now, "from a version 1 agent"),
    )
    .await;
    assert!(matches!(
        recv(&mut link).await,
        Some(CollectorMsg::Ack {
            duplicate: false,
            ..
        })
    ));
    // Not a zstd frame; then a well-compressed block whose last record is cut short.
    let mut cut = logblock::from_records(&[log_record(now, "x")]);
    cut.truncate(cut.len() - 1);
    for (i, block) in [b"not zstd".to_vec(), logblock::compress(&cut).unwrap()]
        .into_iter()
        .enumerate()
    {
        let msg = AgentMsg::Batch(Batch {
            seq: seq(1, 1 + i as u32),
            claimed_host: None,
            payload: Payload::log_block(block, LossReport::default()),
        });
        send(&mut link, &msg).await;
        match recv(&mut link).await {
            Some(CollectorMsg::Rejected { stream, reason, .. }) => {
                assert_eq!(stream, StreamId::Logs);
                assert!(reason.contains("log block"), "{reason}");
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
    }
    // The connection goes on.
    send(
        &mut link,
        &log_batch(seq(1, 3), now + 1, "after the bad ones"),
    )
    .await;
    assert!(matches!(
        recv(&mut link).await,
        Some(CollectorMsg::Ack {
            duplicate: false,
            ..
        })
    ));
    let all = aftercare_collector::store::LogFilter {
        since: 0,
        until: i64::MAX,
        ..Default::default()
    };
    let lines: Vec<String> = f
        .store()
        .logs("db1", &all)
        .unwrap()
        .into_iter()
        .map(|r| r.line)
        .collect();
    assert_eq!(lines, ["from a version 1 agent", "after the bad ones"]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_batches_need_logs_consent_and_are_stored_once() {
    let f = Fixture::new();
    let c = f.start().await;
    let certs = f.issue("a", "acme", "db1");
    let now = aftercare_shared::time_fmt::now_millis();

    // Consent for metrics only: log batches are rejected, never stored.
    let mut link = connect_with(
        &f,
        &certs,
        c.addr,
        "localhost",
        &hello(None, consent(&[Scope::Metrics])),
    )
    .await
    .unwrap();
    send(&mut link, &log_batch(seq(1, 0), now, "secret stuff")).await;
    match recv(&mut link).await {
        Some(CollectorMsg::Rejected { stream, reason, .. }) => {
            assert_eq!(stream, StreamId::Logs);
            assert!(reason.contains("logs"), "{reason}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    send(
        &mut link,
        &AgentMsg::ConsentUpdate(consent(&[Scope::Metrics, Scope::Logs])),
    )
    .await;
    send(
        &mut link,
        &log_batch(seq(1, 1), now, "kernel: EXT4-fs error"),
    )
    .await;
    send(
        &mut link,
        &log_batch(seq(1, 1), now, "kernel: EXT4-fs error"),
    )
    .await;
    assert!(matches!(
        recv(&mut link).await,
        Some(CollectorMsg::Ack {
            duplicate: false,
            ..
        })
    ));
    assert!(matches!(
        recv(&mut link).await,
        Some(CollectorMsg::Ack {
            duplicate: true,
            ..
        })
    ));

    let all = aftercare_collector::store::LogFilter {
        since: 0,
        until: i64::MAX,
        ..Default::default()
    };
    let logs = f.store().logs("db1", &all).unwrap();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0].line, "kernel: EXT4-fs error");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_collector_refuses_new_attempts_at_once() {
    let f = Fixture::new();
    let c = f.start().await;
    // An agent whose network goes away: the stopping collector gives it a while (bounded)
    // to take its last acknowledgements, so the stop takes that long.
    let relay = Relay::start(c.addr).await;
    let certs = f.issue("a", "acme", "db1");
    let h = hello(None, consent(&[Scope::Metrics]));
    let gone = connect_with(&f, &certs, relay.addr, "localhost", &h)
        .await
        .unwrap();
    relay.cut();
    c.stop.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Another agent tries meanwhile. Refused at once, it backs off and finds the restarted
    // collector; left unanswered, it would wait out its connect timeout first.
    let certs = f.issue("b", "acme", "db2");
    let err = connect_with(&f, &certs, c.addr, "localhost", &h)
        .await
        .err()
        .expect("a stopping collector welcomes nobody");
    assert_refused_attempt(&err);
    drop(gone);
    c.shutdown().await;
}

/// A stopping collector closes every connection saying when to come back: within a window
/// of (agents connected) / `ingest.return_rate` seconds, the same for all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_collector_tells_its_agents_to_spread_their_return() {
    let mut f = Fixture::new();
    f.collector.ingest.return_rate = 2;
    let c = f.start().await;
    let h = hello(None, consent(&[Scope::Metrics]));
    let mut links = Vec::new();
    for host in ["db1", "db2", "db3"] {
        let certs = f.issue(host, "acme", host);
        links.push(
            connect_with(&f, &certs, c.addr, "localhost", &h)
                .await
                .unwrap(),
        );
    }
    // Welcomed means counted as connected; the shutdown then closes all three.
    let stopping = tokio::spawn(c.shutdown());
    for link in &links {
        let e = tokio::time::timeout(PATIENCE, link.conn.closed())
            .await
            .expect("closed in time");
        let quinn::ConnectionError::ApplicationClosed(close) = &e else {
            panic!("closed otherwise: {e}");
        };
        assert_eq!(close.error_code, quinn::VarInt::from_u32(CLOSE_SHUTDOWN));
        // Three agents at two a second.
        assert_eq!(
            transport::return_window(&e),
            Some(Duration::from_millis(1500)),
            "{close:?}"
        );
    }
    stopping.await.unwrap();
}

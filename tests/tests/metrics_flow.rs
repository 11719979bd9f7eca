//! A real agent streams this machine's metrics to a real collector over mutual-TLS QUIC on
//! 127.0.0.1, only with consent.

use aftercare_shared::consent::Scope;
use aftercare_tests::*;
use std::time::Duration;

fn series_len(f: &Fixture, host: &str, metric: &str) -> usize {
    let mut st = f.store();
    st.query(host, Some(metric), 0, i64::MAX)
        .map(|s| s.iter().map(|s| s.points.len()).max().unwrap_or(0))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consented_metrics_arrive_and_are_plausible() {
    let f = Fixture::new();
    let c = f.start().await;
    let certs = f.issue("a1", "acme", "db1");
    let cfg = f.agent_config("a1", &certs, c.addr);
    grant(&cfg, &[Scope::Metrics]);
    let agent = start_agent(cfg);

    eventually("two snapshots stored", PATIENCE, || {
        (series_len(&f, "acme/db1", "mem.total") >= 2).then_some(())
    })
    .await;

    let mut st = f.store();
    let mem = st.query("db1", Some("mem.total"), 0, i64::MAX).unwrap();
    let total = mem[0].points.last().unwrap().1;
    assert_eq!(total, meminfo_total(), "memory total matches /proc/meminfo");

    let all = st.query("acme/db1", None, 0, i64::MAX).unwrap();
    let names: std::collections::BTreeSet<&str> = all.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "cpu.usage",
        "load.1",
        "mem.available",
        "fs.bytes.used",
        "net.rx.bytes",
        "agent.memory.rss",
    ] {
        assert!(names.contains(want), "{want} missing from {names:?}");
    }
    for s in &all {
        for (_, v) in &s.points {
            assert!(v.is_finite(), "{} {} has {v}", s.name, s.labels);
        }
    }
    let root = all
        .iter()
        .find(|s| s.name == "fs.bytes.total" && s.labels.contains("mount=/"))
        .expect("root filesystem reported");
    assert!(root.points[0].1 > 0.0);

    let hosts = st.hosts(aftercare_shared::time_fmt::now_millis()).unwrap();
    assert_eq!(hosts.len(), 1);
    let h = &hosts[0];
    assert_eq!((h.customer.as_str(), h.host.as_str()), ("acme", "db1"));
    assert!(h.online, "host shows online");
    assert_eq!(h.agent_version, aftercare_shared::VERSION);
    assert!(
        h.consent
            .allows(Scope::Metrics, aftercare_shared::time_fmt::now_millis())
    );
    assert!(h.facts.cpu_count > 0 && h.facts.memory_bytes > 0);
    // The agent's certificate (issued for 30 days) is known by its expiry, for the report.
    let left = h.cert_expires.expect("certificate expiry recorded")
        - aftercare_shared::time_fmt::now_millis();
    assert!(
        (29 * 86_400_000..=31 * 86_400_000).contains(&left),
        "expires in {left} ms"
    );

    agent.shutdown().await;
    c.shutdown().await;
    let hosts = f
        .store()
        .hosts(aftercare_shared::time_fmt::now_millis())
        .unwrap();
    assert!(!hosts[0].online, "a cleanly stopped agent shows offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_consent_nothing_is_collected_and_no_packet_leaves() {
    // A bare UDP socket stands where the collector would be: any Initial packet shows up.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let f = Fixture::new();
    let certs = f.issue("a1", "acme", "db1");
    let cfg = f.agent_config("a1", &certs, addr);
    let agent = start_agent(cfg.clone());
    let mut buf = [0u8; 2048];
    let got = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf)).await;
    assert!(got.is_err(), "the agent sent a packet without consent");

    // Consent for logs only, with no log files configured, is nothing to send.
    grant(&cfg, &[Scope::Logs]);
    let got = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await;
    assert!(
        got.is_err(),
        "the agent sent a packet with consent for logs only"
    );

    // And granting metrics makes it try within about a second.
    grant(&cfg, &[Scope::Metrics]);
    let got = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf)).await;
    assert!(
        got.is_ok(),
        "the agent did not try to connect after consent was granted"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_consent_means_zero_rows() {
    let f = Fixture::new();
    let c = f.start().await;
    let certs = f.issue("a1", "acme", "db1");
    let cfg = f.agent_config("a1", &certs, c.addr);
    let agent = start_agent(cfg);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        f.store().hosts(0).unwrap().is_empty(),
        "no host without consent"
    );
    assert_eq!(series_len(&f, "db1", "mem.total"), 0);
    agent.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_starts_and_revoke_stops_the_flow_within_a_second() {
    let f = Fixture::new();
    let c = f.start().await;
    let certs = f.issue("a1", "acme", "db1");
    let cfg = f.agent_config("a1", &certs, c.addr);
    let agent = start_agent(cfg.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let granted = tokio::time::Instant::now();
    grant(&cfg, &[Scope::Metrics]);
    eventually("first snapshot after grant", PATIENCE, || {
        (series_len(&f, "db1", "mem.total") >= 1).then_some(())
    })
    .await;
    // A grant is noticed within a second; connecting and the first tick add a little.
    assert!(
        granted.elapsed() < Duration::from_secs(4),
        "first data {:?} after the grant",
        granted.elapsed()
    );
    eventually("a few snapshots", PATIENCE, || {
        (series_len(&f, "db1", "mem.total") >= 3).then_some(())
    })
    .await;

    revoke(&cfg, &[Scope::Metrics]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after_revoke = series_len(&f, "db1", "mem.total");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        series_len(&f, "db1", "mem.total"),
        after_revoke,
        "data kept flowing after the revocation"
    );
    // The collector learned of the revocation and shows the host offline.
    let now = aftercare_shared::time_fmt::now_millis();
    let h = &f.store().hosts(now).unwrap()[0];
    assert!(
        !h.consent.allows(Scope::Metrics, now),
        "collector still records metrics consent"
    );
    assert!(!h.online);
    agent.shutdown().await;
    c.shutdown().await;
}

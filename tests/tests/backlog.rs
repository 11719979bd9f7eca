//! While the collector is unreachable the agent keeps batches in its bounded disk spool: a
//! revocation deletes them unsent, and what overflows is counted and reported, never lost
//! silently.

use aftercare_shared::consent::Scope;
use aftercare_shared::time_fmt::now_millis;
use aftercare_tests::*;
use std::time::Duration;

/// A spool of a few small segments: a metrics batch (several KiB) fills one.
fn set_spool(f: &Fixture, name: &str, max_bytes: u64) {
    let p = f.agent_config_path(name);
    let mut text = std::fs::read_to_string(&p).unwrap();
    text = text.replace(
        "[collector]",
        &format!("[spool]\nmax_bytes = {max_bytes}\nsegment_bytes = 4096\n[collector]"),
    );
    std::fs::write(&p, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_while_offline_deletes_the_backlog_unsent() {
    let port = free_udp_port();
    let f = Fixture::with_listen(&format!("127.0.0.1:{port}"));
    let certs = f.issue("a1", "acme", "db1");
    f.agent_config("a1", &certs, format!("127.0.0.1:{port}").parse().unwrap());
    let cfg = aftercare_agent::config::AgentConfig::load(&f.agent_config_path("a1")).unwrap();
    grant(&cfg, &[Scope::Metrics]);
    let agent = start_agent(cfg.clone());

    // No collector yet: batches pile up in the agent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    revoke(&cfg, &[Scope::Metrics]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let c = f.start().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        f.store().hosts(now_millis()).unwrap().is_empty(),
        "data of a revoked scope reached the collector"
    );

    // Granting again sends only what is collected from then on.
    let regranted = now_millis();
    grant(&cfg, &[Scope::Metrics]);
    eventually("data after the new grant", PATIENCE, || {
        let s = f
            .store()
            .query("db1", Some("mem.total"), 0, i64::MAX)
            .ok()?;
        (!s.is_empty()).then_some(())
    })
    .await;
    let pts = f
        .store()
        .query("db1", Some("mem.total"), 0, i64::MAX)
        .unwrap();
    assert!(
        pts[0].points.iter().all(|p| p.0 >= regranted - 100),
        "a snapshot from before the revocation was sent: {:?}",
        pts[0].points
    );
    let h = &f.store().hosts(now_millis()).unwrap()[0];
    assert!(h.discarded_by_revocation >= 2, "discards reported: {h:?}");
    agent.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_while_offline_is_counted_and_reported() {
    let port = free_udp_port();
    let f = Fixture::with_listen(&format!("127.0.0.1:{port}"));
    let certs = f.issue("a1", "acme", "db1");
    f.agent_config("a1", &certs, format!("127.0.0.1:{port}").parse().unwrap());
    set_spool(&f, "a1", 3 * 4096);
    let cfg = aftercare_agent::config::AgentConfig::load(&f.agent_config_path("a1")).unwrap();
    grant(&cfg, &[Scope::Metrics]);
    let agent = start_agent(cfg);

    tokio::time::sleep(Duration::from_millis(5500)).await; // ~6 ticks into room for ~2
    let c = f.start().await;
    let h = eventually("the loss report", PATIENCE, || {
        let hosts = f.store().hosts(now_millis()).ok()?;
        hosts.into_iter().find(|h| h.dropped_batches > 0)
    })
    .await;
    assert!(
        (2..=5).contains(&h.dropped_batches),
        "a few of ~6 batches could not be kept: {h:?}"
    );
    assert!(h.dropped_samples > h.dropped_batches * 10, "{h:?}");
    // The two newest survived and were delivered.
    let pts = f
        .store()
        .query("db1", Some("mem.total"), 0, i64::MAX)
        .unwrap();
    assert!(pts[0].points.len() >= 2);
    agent.shutdown().await;
    c.shutdown().await;
}

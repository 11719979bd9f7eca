//! The collector dies (SIGKILL) mid-stream and comes back: nothing the agent produced is
//! lost, and nothing is stored twice.

use aftercare_shared::consent::Scope;
use aftercare_tests::*;
use std::time::Duration;

fn points(f: &Fixture, metric: &str) -> Vec<i64> {
    f.store()
        .query("acme/db1", Some(metric), 0, i64::MAX)
        .ok()
        .and_then(|s| s.into_iter().next())
        .map(|s| s.points.into_iter().map(|p| p.0).collect())
        .unwrap_or_default()
}

#[test]
fn collector_crash_and_restart_loses_and_duplicates_nothing() {
    let port = free_udp_port();
    let f = Fixture::with_listen(&format!("127.0.0.1:{port}"));
    let cfg_path = f.config_path();
    let cfg_arg = cfg_path.to_str().unwrap();
    let log = |n: &str| f.dir.path().join(n);
    let mut collector = Proc::spawn(
        "aftercare-collector",
        &["--config", cfg_arg, "serve"],
        &log("collector-1.log"),
    );

    let certs = f.issue("a1", "acme", "db1");
    let agent_cfg = f.agent_config("a1", &certs, format!("127.0.0.1:{port}").parse().unwrap());
    grant(&agent_cfg, &[Scope::Metrics]);
    let agent_cfg_path = f.agent_config_path("a1");
    let mut agent = Proc::spawn(
        "aftercare-agent",
        &["--config", agent_cfg_path.to_str().unwrap(), "run"],
        &log("agent.log"),
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(eventually("3 snapshots before the crash", PATIENCE, || {
        (points(&f, "mem.total").len() >= 3).then_some(())
    }));

    collector.kill9();
    std::thread::sleep(Duration::from_millis(2500));
    let before_restart = points(&f, "mem.total").len();
    let mut collector = Proc::spawn(
        "aftercare-collector",
        &["--config", cfg_arg, "serve"],
        &log("collector-2.log"),
    );
    rt.block_on(eventually("flow resumes after the restart", PATIENCE, || {
        (points(&f, "mem.total").len() >= before_restart + 4).then_some(())
    }));

    assert!(agent.terminate(), "agent exits cleanly on SIGTERM");
    assert!(collector.terminate(), "collector exits cleanly on SIGTERM");

    let ts = points(&f, "mem.total");
    let mut dedup = ts.clone();
    dedup.dedup();
    assert_eq!(ts.len(), dedup.len(), "a snapshot is stored twice");
    // Every tick of the 1 s interval is there, the ones during the outage included.
    for w in ts.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap < 1900,
            "a gap of {gap} ms in the stored snapshots: a batch was lost (agent log: {})",
            std::fs::read_to_string(log("agent.log")).unwrap_or_default()
        );
    }
    // And no sequence number was stored twice, as the collector counts them.
    let stored = f.store().stats().expect("stats");
    assert_eq!(stored.batches_total(), ts.len() as u64, "{stored:?}");
}

//! The collector dies (SIGKILL) mid-stream and comes back: nothing the agent produced is
//! lost, and nothing is stored twice.

use aftercare_collector::store::Store;
use aftercare_shared::consent::Scope;
use aftercare_tests::*;
use std::time::Duration;

fn points(f: &Fixture, metric: &str) -> Vec<i64> {
    // The collector process may not have created its database yet.
    let Ok(mut st) = aftercare_collector::store::open_sqlite_readonly(&f.collector.database) else {
        return Vec::new();
    };
    st.query("acme/db1", Some(metric), 0, i64::MAX)
        .ok()
        .and_then(|s| s.into_iter().next())
        .map(|s| s.points.into_iter().map(|p| p.0).collect())
        .unwrap_or_default()
}

/// Wait for `cond`, or fail showing the processes' logs.
fn wait_for(f: &Fixture, what: &str, cond: impl Fn() -> bool) {
    let end = std::time::Instant::now() + PATIENCE;
    while !cond() {
        if std::time::Instant::now() > end {
            let mut logs = String::new();
            for n in ["agent.log", "collector-1.log", "collector-2.log"] {
                let text = std::fs::read_to_string(f.dir.path().join(n)).unwrap_or_default();
                logs.push_str(&format!("\n--- {n}\n{text}"));
            }
            panic!("timed out after {PATIENCE:?} waiting for {what}{logs}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
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

    wait_for(&f, "3 snapshots before the crash", || {
        points(&f, "mem.total").len() >= 3
    });

    collector.kill9();
    std::thread::sleep(Duration::from_millis(2500));
    let before_restart = points(&f, "mem.total").len();
    let mut collector = Proc::spawn(
        "aftercare-collector",
        &["--config", cfg_arg, "serve"],
        &log("collector-2.log"),
    );
    wait_for(&f, "flow resumes after the restart", || {
        points(&f, "mem.total").len() >= before_restart + 4
    });

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
    // And nothing is stored twice underneath either: the samples the store holds are exactly
    // the points it returns (queries would hide a duplicate by timestamp).
    let mut st = f.store();
    let returned: usize = st
        .query("acme/db1", None, 0, i64::MAX)
        .unwrap()
        .iter()
        .map(|s| s.points.len())
        .sum();
    let stats = st.stats().expect("stats");
    assert_eq!(
        stats.staged_samples + stats.block_samples,
        returned as u64,
        "{stats:?}"
    );
}

//! The collector dies (SIGKILL) mid-stream and comes back: nothing the agent produced is
//! lost, and nothing is stored twice.

use aftercare_shared::consent::Scope;
use aftercare_tests::*;
use std::time::Duration;

fn points(f: &Fixture, metric: &str) -> Vec<i64> {
    // The collector process may not have created its database yet.
    let Ok(mut st) = f.collector.database.open_readonly() else {
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
    // No help from the acknowledgement timeout: the agent must learn of the restart from
    // the new collector's stateless reset (its reset key survives restarts).
    let text = std::fs::read_to_string(&agent_cfg_path).unwrap();
    std::fs::write(
        &agent_cfg_path,
        text.replace("ack_timeout = \"3s\"", "ack_timeout = \"300s\""),
    )
    .unwrap();
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

#[test]
fn a_frozen_collector_is_left_by_the_ack_timeout_and_nothing_is_lost() {
    let port = free_udp_port();
    let f = Fixture::with_listen(&format!("127.0.0.1:{port}"));
    let cfg_path = f.config_path();
    let log = |n: &str| f.dir.path().join(n);
    let mut collector = Proc::spawn(
        "aftercare-collector",
        &["--config", cfg_path.to_str().unwrap(), "serve"],
        &log("collector-1.log"),
    );
    let certs = f.issue("a1", "acme", "db1");
    let agent_cfg = f.agent_config("a1", &certs, format!("127.0.0.1:{port}").parse().unwrap());
    grant(&agent_cfg, &[Scope::Metrics]);
    let mut agent = Proc::spawn(
        "aftercare-agent",
        &[
            "--config",
            f.agent_config_path("a1").to_str().unwrap(),
            "run",
        ],
        &log("agent.log"),
    );
    wait_for(&f, "2 snapshots", || points(&f, "mem.total").len() >= 2);

    // A collector that hangs (here: stopped by a signal) sends no acknowledgements and no
    // close; the agent's 3 s acknowledgement timeout must notice.
    let pid = collector.0.as_ref().unwrap().id() as libc::pid_t;
    // SAFETY: signals to our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    wait_for(&f, "the agent to give up on the frozen link", || {
        std::fs::read_to_string(log("agent.log"))
            .unwrap_or_default()
            .contains("no acknowledgement for")
    });
    let frozen_at = points(&f, "mem.total").len();
    unsafe { libc::kill(pid, libc::SIGCONT) };
    wait_for(&f, "flow resumes after the collector thaws", || {
        points(&f, "mem.total").len() >= frozen_at + 4
    });
    assert!(agent.terminate(), "agent exits cleanly");
    assert!(collector.terminate(), "collector exits cleanly");

    let ts = points(&f, "mem.total");
    for w in ts.windows(2) {
        assert!(w[1] > w[0], "duplicate or unordered snapshot");
        assert!(
            w[1] - w[0] < 1900,
            "a gap of {} ms: a batch was lost",
            w[1] - w[0]
        );
    }
}

/// The collector's address answers nothing (a machine gone, a collector killed before it
/// could say so): each connection attempt is given up after `connect_timeout` rather than
/// waiting out QUIC's retransmissions, and once a collector listens there the agent comes
/// to it and its metrics flow.
#[test]
fn an_attempt_to_a_silent_collector_is_given_up_after_connect_timeout() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let f = Fixture::with_listen(&format!("127.0.0.1:{port}"));
    let log = |n: &str| f.dir.path().join(n);
    let certs = f.issue("a1", "acme", "db1");
    let agent_cfg = f.agent_config("a1", &certs, format!("127.0.0.1:{port}").parse().unwrap());
    grant(&agent_cfg, &[Scope::Metrics]);
    let agent_cfg_path = f.agent_config_path("a1");
    let mut text = std::fs::read_to_string(&agent_cfg_path).unwrap();
    text.push_str("connect_timeout = \"300ms\"\n");
    std::fs::write(&agent_cfg_path, text).unwrap();
    let mut agent = Proc::spawn(
        "aftercare-agent",
        &["--config", agent_cfg_path.to_str().unwrap(), "run"],
        &log("agent.log"),
    );

    // The agent's Initials arrive and are left unanswered.
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = silent
        .recv_from(&mut buf)
        .expect("the agent tries to connect");
    assert!(n >= 1200, "a QUIC Initial is padded to 1200 bytes, got {n}");
    let given_up = "no handshake with the collector within 300ms";
    wait_for(&f, "two attempts given up", || {
        std::fs::read_to_string(log("agent.log"))
            .unwrap_or_default()
            .matches(given_up)
            .count()
            >= 2
    });

    // A collector comes to that address: the next attempt reaches it.
    drop(silent);
    let cfg_path = f.config_path();
    let mut collector = Proc::spawn(
        "aftercare-collector",
        &["--config", cfg_path.to_str().unwrap(), "serve"],
        &log("collector-1.log"),
    );
    wait_for(&f, "metrics through the collector", || {
        points(&f, "mem.total").len() >= 2
    });
    assert!(agent.terminate(), "the agent stops cleanly");
    assert!(collector.terminate(), "the collector stops cleanly");
}

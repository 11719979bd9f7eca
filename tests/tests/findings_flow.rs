//! Findings end to end with the real binaries on 127.0.0.1: an agent tailing a log file,
//! a collector evaluating rules every second, a webhook receiver. A disk I/O error line
//! becomes an L2 finding within an evaluation; the agent killed makes the host silent (L1);
//! the agent back resolves it; the receiver hears each change.

use aftercare_shared::consent::Scope;
use aftercare_tests::*;
use std::io::Write;
use std::time::{Duration, Instant};

/// The state of the newest finding of `rule` (None: there is none).
fn finding_state(f: &Fixture, rule: &str) -> Option<String> {
    use aftercare_collector::findings::record::FindingFilter;
    let mut st = f.collector.database.open_readonly().ok()?;
    st.findings(&FindingFilter::default())
        .ok()?
        .into_iter()
        .filter(|r| r.rule == rule)
        .max_by_key(|r| r.id)
        .map(|r| r.state.as_str().to_string())
}

fn wait(what: &str, f: &Fixture, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < PATIENCE,
            "timed out waiting for {what}\ncollector log:\n{}",
            std::fs::read_to_string(f.dir.path().join("collector.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

#[test]
fn a_log_line_and_a_silent_agent_become_findings_and_the_webhook_hears_each_change() {
    let port = free_udp_port();
    let f = Fixture::with_listen(&format!("127.0.0.1:{port}"));
    let hooks = Receiver::start();
    let url = &hooks.url;
    // Rules made for a test's patience: a host is silent after 3 s (its interval is 1 s).
    std::fs::write(
        f.dir.path().join("rules.toml"),
        r#"
[[rule]]
name = "host-silent"
kind = "heartbeat"
level = "L1"
category = "availability"
intervals = 3
at_least = "3s"
recommendation = "Check the host and the agent."

[[rule]]
name = "disk-io-errors"
kind = "log_pattern"
level = "L2"
category = "hardware"
pattern = '(?i)I/O error, dev (?P<device>\w+)'
window = "1h"
subject = "device"
recommendation = "Check the disk."
"#,
    )
    .unwrap();
    let cfg_path = f.config_path();
    let base = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(
        &cfg_path,
        format!(
            "rules_file = \"rules.toml\"\n{base}\n[findings]\nevaluate_every = \"1s\"\n\
             [[webhooks]]\nname = \"test\"\nurl = \"{url}\"\nretry_base = \"50ms\"\n"
        ),
    )
    .unwrap();
    let certs = f.issue("a1", "acme", "db1");
    f.agent_config("a1", &certs, format!("127.0.0.1:{port}").parse().unwrap());
    let log = f.dir.path().join("app.log");
    std::fs::write(&log, "service started\n").unwrap();
    let cfg = add_log_source(&f, "a1", &format!("paths = [\"{}\"]", log.display()));
    grant(&cfg, &[Scope::Metrics, Scope::Logs]);
    let agent_cfg = f.agent_config_path("a1").to_str().unwrap().to_string();
    let cfg_arg = cfg_path.to_str().unwrap().to_string();

    let mut collector = Proc::spawn(
        "aftercare-collector",
        &["--config", &cfg_arg, "serve"],
        &f.dir.path().join("collector.log"),
    );
    let agent_args = ["--config", agent_cfg.as_str(), "run"];
    let mut agent = Proc::spawn(
        "aftercare-agent",
        &agent_args,
        &f.dir.path().join("agent-1.log"),
    );
    wait("the first log line stored", &f, || {
        !stored_logs(&f, "acme/db1").is_empty()
    });

    // A disk error in the log: an L2 finding within about an evaluation (1 s).
    let mut w = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(
        w,
        "kernel: blk_update_request: I/O error, dev sdb, sector 2048"
    )
    .unwrap();
    drop(w);
    let took = wait("the disk finding", &f, || {
        finding_state(&f, "disk-io-errors").as_deref() == Some("open")
    });
    eprintln!("log line to finding: {took:?}");
    wait("the webhook to hear it", &f, || {
        hooks.events_for("disk-io-errors") == ["opened"]
    });
    let v = hooks
        .got
        .lock()
        .unwrap()
        .iter()
        .find(|v| v["finding"]["rule"] == "disk-io-errors")
        .cloned()
        .unwrap();
    assert_eq!(v["finding"]["subject"], "device=sdb");
    assert_eq!(v["finding"]["level"], 2);
    assert!(v["finding"]["respond_by"].is_i64(), "{v}");

    // The agent dies: the host goes silent (L1) a few seconds later.
    agent.kill9();
    wait("host-silent", &f, || {
        finding_state(&f, "host-silent").as_deref() == Some("open")
    });
    // It comes back: the finding resolves by itself.
    let mut agent = Proc::spawn(
        "aftercare-agent",
        &agent_args,
        &f.dir.path().join("agent-2.log"),
    );
    wait("host-silent resolved", &f, || {
        finding_state(&f, "host-silent").as_deref() == Some("resolved")
    });
    wait("the webhook to hear the host story", &f, || {
        hooks.events_for("host-silent") == ["opened", "resolved"]
    });
    // The disk finding stays: the error line is still within its window.
    assert_eq!(finding_state(&f, "disk-io-errors").as_deref(), Some("open"));

    assert!(agent.terminate(), "the agent stops cleanly");
    assert!(collector.terminate(), "the collector stops cleanly");
}

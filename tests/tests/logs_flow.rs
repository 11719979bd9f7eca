//! Log lines from a followed file reach the collector's store once each, redacted, only
//! while the customer's consent for `logs` is in force; a restart resumes where it stopped.

use aftercare_shared::consent::Scope;
use aftercare_shared::model::Severity;
use aftercare_tests::*;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

fn append(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

fn numbered(prefix: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range
        .map(|i| format!("2026-11-22T10:00:00Z INFO {prefix} line {i}"))
        .collect()
}

/// How many stored lines contain `needle`.
fn count(f: &Fixture, needle: &str) -> usize {
    stored_logs(f, "acme/db1")
        .iter()
        .filter(|r| r.line.contains(needle))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_arrive_once_redacted_and_only_with_consent() {
    let f = Fixture::new();
    let c = f.start().await;
    let certs = f.issue("a1", "acme", "db1");
    f.agent_config("a1", &certs, c.addr);
    let log = f.dir.path().join("app.log");
    append(&log, numbered("early", 0..100));
    append(
        &log,
        [
            "2026-11-22T10:00:01Z ERROR db login failed for postgres://app:s3cret@db:5432/x"
                .to_string(),
        ],
    );
    let cfg = add_log_source(
        &f,
        "a1",
        &format!("name = \"app\"\npaths = [\"{}\"]", log.display()),
    );
    grant(&cfg, &[Scope::Metrics, Scope::Logs]);
    let agent = start_agent(cfg.clone());

    eventually("the first 101 lines", PATIENCE, || {
        (stored_logs(&f, "acme/db1").len() >= 101).then_some(())
    })
    .await;
    let recs = stored_logs(&f, "acme/db1");
    assert_eq!(recs.len(), 101, "each line once");
    let err = recs.iter().find(|r| r.line.contains("ERROR")).unwrap();
    assert_eq!(err.severity, Severity::Error);
    assert!(
        err.line.contains("[REDACTED:url-password]") && !err.line.contains("s3cret"),
        "{}",
        err.line
    );
    assert_eq!((err.source.as_str(), err.part), ("app", 0));
    assert_eq!(err.file, log.display().to_string());

    // Withdrawn: lines written now are never read, not even after a new grant.
    revoke(&cfg, &[Scope::Logs]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    append(&log, numbered("private", 0..50));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    grant(&cfg, &[Scope::Logs]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    append(&log, numbered("after", 0..20));
    eventually("lines after the new grant", PATIENCE, || {
        (count(&f, "after line") == 20).then_some(())
    })
    .await;
    assert_eq!(
        count(&f, "private line"),
        0,
        "lines written without consent were sent"
    );

    // A restart resumes exactly: nothing again, nothing missed.
    agent.shutdown().await;
    append(&log, numbered("offline", 0..30));
    let agent = start_agent(cfg.clone());
    append(&log, numbered("restarted", 0..30));
    eventually("lines written across the restart", PATIENCE, || {
        (count(&f, "restarted line") == 30).then_some(())
    })
    .await;
    assert_eq!(count(&f, "offline line"), 30);
    assert_eq!(count(&f, "early line"), 100);
    assert_eq!(count(&f, "after line"), 20);
    agent.shutdown().await;

    // The customer can read what left: logs sent, to this collector, and the rule that fired.
    let audit = aftercare_agent::audit::AuditLog::new(&cfg.state_dir)
        .read(None)
        .unwrap();
    let text: Vec<String> = audit
        .iter()
        .map(|e| format!("{} {}", e.kind, e.details()))
        .collect();
    let joined = text.join("\n");
    assert!(
        joined.contains("scope=logs") && joined.contains("url-password"),
        "audit log:\n{joined}"
    );
    c.shutdown().await;
}

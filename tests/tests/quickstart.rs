//! The README's first command, with the debug binaries and a bounded duration.

use aftercare_collector::api::token::{self, Role};
use aftercare_collector::store::{Store, open_sqlite_readonly};
use aftercare_tests::bin;
use std::path::Path;
use std::process::{Command, Output};

/// `aftercare-collector quickstart` in `dir` for `duration`, bounded by `timeout`, following
/// `log` in place of the system log (whose content this machine decides).
fn quickstart(dir: &Path, duration: &str, log: &Path) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(bin("aftercare-collector"))
        .args(["quickstart", "--dir"])
        .arg(dir)
        .arg("--agent")
        .arg(bin("aftercare-agent"))
        .args(["--duration", duration, "--interval", "1s", "--log"])
        .arg(log)
        .output()
        .expect("run quickstart")
}

#[test]
fn quickstart_shows_this_host_live_and_stops_cleanly() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("demo");
    let syslog = d.path().join("syslog");
    std::fs::write(
        &syslog,
        "<30>Nov 22 10:00:00 db1 systemd[1]: Started Daily apt upgrade.\n\
         <27>Nov 22 10:00:01 db1 app[42]: connection to db failed password=hunter2\n\
         2026-11-22T10:00:02Z db1 kernel: EXT4-fs error (device sda1): bad block\n\
         kernel: blk_update_request: I/O error, dev sdb, sector 2048\n",
    )
    .unwrap();
    // Long enough for the rules (every 5 s in the quickstart) to see the log.
    let out = quickstart(&dir, "12s", &syslog);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "quickstart failed:\n{text}");
    for want in [
        "CA created",
        "granted metrics,logs,diagnostics",
        "web desk: http://127.0.0.1:",
        "inspection report of the demo period: ",
        "system log: 4 lines stored",
        // The I/O error line (without a time of its own, so it is news now) is a finding.
        "findings: ",
        "disk-io-errors device=sdb",
        "connection to db failed password=[REDACTED:kv-secret]",
        "EXT4-fs error",
        "online",
        "mem.total",
        "cpu.usage",
        "stopped",
    ] {
        assert!(
            text.contains(want),
            "'{want}' missing from quickstart output:\n{text}"
        );
    }
    let report = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(report.contains("<svg"), "the report has its charts");
    assert!(report.contains("demo"), "the report names its customer");
    for f in [
        "report.md",
        "report.json",
        "collector.toml",
        "agent.toml",
        "collector/aftercare.db",
        "agent-state/consent.toml",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let agent_log = std::fs::read_to_string(dir.join("agent.log")).unwrap();
    assert!(
        agent_log.contains("aftercare-agent stopped"),
        "agent did not stop cleanly:\n{agent_log}"
    );

    // The printed token is a live admin token of this collector.
    let first = admin_token(&text);
    assert_eq!(active_token_role(&dir, &first), Some(Role::Admin));

    // Run again in the same folder: it reuses the CA and certificates.
    let out = quickstart(&dir, "5s", &syslog);
    let text = String::from_utf8_lossy(&out.stdout);
    // A new admin token; the first one no longer works.
    let second = admin_token(&text);
    assert_ne!(first, second);
    assert_eq!(active_token_role(&dir, &second), Some(Role::Admin));
    assert_eq!(active_token_role(&dir, &first), None);
    assert!(out.status.success(), "second run failed:\n{text}");
    assert!(!text.contains("CA created"), "{text}");
    assert!(!text.contains("hunter2"), "a secret left the host:\n{text}");
    // The agent resumes its log where it stopped: nothing stored twice.
    assert!(text.contains("system log: 4 lines stored"), "{text}");
    assert!(
        text.contains("disk-io-errors"),
        "the finding is still open:\n{text}"
    );
}

/// The token printed under "web desk:".
fn admin_token(text: &str) -> String {
    let after = text
        .split("web desk: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no web desk line in:\n{text}"));
    after
        .split_whitespace()
        .find(|w| w.starts_with("act_"))
        .unwrap_or_else(|| panic!("no token after the web desk line:\n{text}"))
        .to_owned()
}

/// The role of the live (not revoked) token whose secret is `secret`, from the demo's
/// database.
fn active_token_role(dir: &Path, secret: &str) -> Option<Role> {
    let mut st = open_sqlite_readonly(&dir.join("collector/aftercare.db")).unwrap();
    st.token_by_hash(&token::hash(secret))
        .unwrap()
        .map(|t| t.role)
}

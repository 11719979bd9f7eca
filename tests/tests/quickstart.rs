//! The README's first command, with the debug binaries and a bounded duration.

use aftercare_tests::bin;
use std::path::Path;
use std::process::{Command, Output};

/// `aftercare-collector quickstart` in `dir` for `duration`, bounded by `timeout`.
fn quickstart(dir: &Path, duration: &str) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(bin("aftercare-collector"))
        .args(["quickstart", "--dir"])
        .arg(dir)
        .arg("--agent")
        .arg(bin("aftercare-agent"))
        .args(["--duration", duration, "--interval", "1s"])
        .output()
        .expect("run quickstart")
}

#[test]
fn quickstart_shows_this_host_live_and_stops_cleanly() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("demo");
    let out = quickstart(&dir, "9s");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "quickstart failed:\n{text}");
    for want in [
        "CA created",
        "granted metrics",
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
    for f in [
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

    // Run again in the same folder: it reuses the CA and certificates.
    let out = quickstart(&dir, "5s");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "second run failed:\n{text}");
    assert!(!text.contains("CA created"), "{text}");
}

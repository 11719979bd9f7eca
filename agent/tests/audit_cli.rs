//! `aftercare-agent audit` and `audit verify` as the customer's administrator runs them.

use aftercare_agent::audit::{AuditLog, Event};
use aftercare_shared::consent::Scope;
use aftercare_shared::time_fmt::now_millis;
use common::{agent, config, text};
use std::path::Path;

mod common;

const HOUR: i64 = 3_600_000;

/// A config with state in `<dir>/state` and an audit log of three entries: 30 h, 2 h and
/// 10 min old.
fn setup(dir: &Path) -> (std::path::PathBuf, AuditLog) {
    let cfg = config(dir);
    let log = AuditLog::new(&dir.join("state"));
    let now = now_millis();
    log.append(
        now - 30 * HOUR,
        &[Event::ConsentGranted {
            scope: Scope::Metrics,
            by: "Ann Li".into(),
            until: None,
        }],
    )
    .unwrap();
    log.append(
        now - 2 * HOUR,
        &[Event::Sent {
            hour: now - 3 * HOUR,
            scope: Scope::Metrics,
            collector: "collector.example.com:7443".into(),
            records: 360,
            bytes: 1_843_200,
        }],
    )
    .unwrap();
    log.append(
        now - HOUR / 6,
        &[Event::Redacted {
            hour: now - 2 * HOUR,
            rule: "kv-secret".into(),
            count: 4,
        }],
    )
    .unwrap();
    (cfg, log)
}

#[test]
fn audit_lists_entries_with_since_and_json() {
    let d = tempfile::tempdir().unwrap();
    let (cfg, _) = setup(d.path());

    let o = agent(&cfg, &["audit"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("consent-granted") && t.contains("by=\"Ann Li\""),
        "{t}"
    );
    assert!(
        t.contains("sent") && t.contains("records=360 bytes=1843200"),
        "{t}"
    );
    assert!(
        !t.contains("hash="),
        "hashes are for verify, not for reading: {t}"
    );

    let o = agent(&cfg, &["audit", "--since", "24h"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(!t.contains("consent-granted"), "{t}");
    assert!(t.contains("sent") && t.contains("redacted"), "{t}");

    let o = agent(&cfg, &["audit", "--since", "1h", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(t.starts_with("{\"file\":"), "{t}");
    assert!(
        t.contains("\"event\":\"redacted\"")
            && t.contains("\"fields\":{\"rule\":\"kv-secret\"")
            && t.contains("\"count\":4"),
        "{t}"
    );
    assert!(!t.contains("\"sent\""), "{t}");

    let o = agent(&cfg, &["audit", "--since", "yesterday-ish"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("yesterday-ish"), "{}", text(&o));
}

#[test]
fn audit_verify_finds_edits_gaps_and_torn_tails() {
    let d = tempfile::tempdir().unwrap();
    let (cfg, log) = setup(d.path());

    let o = agent(&cfg, &["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("3 entries verified"), "{}", text(&o));

    let good = std::fs::read_to_string(log.path()).unwrap();

    // Someone lowers the byte count of what was sent.
    std::fs::write(log.path(), good.replace("bytes=1843200", "bytes=1843")).unwrap();
    let o = agent(&cfg, &["audit", "verify"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("line 2: edited"), "{}", text(&o));

    // Someone removes the grant.
    let without_first: String = good.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(log.path(), without_first).unwrap();
    let o = agent(&cfg, &["audit", "verify"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("line 1: does not follow the entry before it"),
        "{}",
        text(&o)
    );

    // The agent died mid-write: torn, and then mended by the next append.
    std::fs::write(log.path(), &good[..good.len() - 20]).unwrap();
    let o = agent(&cfg, &["audit", "verify"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("line 3: torn"), "{}", text(&o));
    assert!(!text(&o).contains("edited"), "{}", text(&o));
    log.append(
        now_millis(),
        &[Event::ConsentExpired {
            scope: Scope::Metrics,
        }],
    )
    .unwrap();
    let o = agent(&cfg, &["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("line 3: fragment") && text(&o).contains("3 entries verified"),
        "{}",
        text(&o)
    );
}

#[test]
fn audit_of_a_new_host_is_empty_and_verifies() {
    let d = tempfile::tempdir().unwrap();
    let (cfg, log) = setup(d.path());
    std::fs::remove_file(log.path()).unwrap();
    let o = agent(&cfg, &["audit"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("no entries"), "{}", text(&o));
    let o = agent(&cfg, &["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("0 entries verified"), "{}", text(&o));
}

//! The agent's command line, as the customer's administrator uses it.

use common::{agent, config, text};
use std::process::Command;

mod common;

#[test]
fn consent_grant_show_revoke() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path());

    let o = agent(&cfg, &["consent", "show"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("nothing granted"), "{}", text(&o));

    let o = agent(
        &cfg,
        &[
            "consent",
            "grant",
            "--scope",
            "metrics,logs",
            "--by",
            "Ann Li",
            "--until",
            "2099-12-31",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("granted metrics,logs by Ann Li until 2100-01-01T00:00:00Z"),
        "{}",
        text(&o)
    );
    let file = std::fs::read_to_string(d.path().join("state/consent.toml")).unwrap();
    assert!(file.contains("Ann Li"), "{file}");

    let o = agent(&cfg, &["consent", "show", "--json"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("\"scope\":\"metrics\"") && out.contains("\"active\":true"),
        "{out}"
    );

    let o = agent(&cfg, &["consent", "revoke", "--scope", "logs"]);
    assert!(text(&o).contains("revoked logs"), "{}", text(&o));
    let o = agent(&cfg, &["consent", "show"]);
    let out = text(&o);
    assert!(out.contains("metrics") && !out.contains("logs "), "{out}");
}

#[test]
fn bad_input_is_named() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path());
    let o = agent(
        &cfg,
        &[
            "consent",
            "grant",
            "--scope",
            "metrics,everything",
            "--by",
            "Ann",
        ],
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("unknown consent scope 'everything'"),
        "{}",
        text(&o)
    );

    let o = agent(
        &cfg,
        &[
            "consent", "grant", "--scope", "metrics", "--by", "Ann", "--until", "soon",
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("'soon' is not a date"), "{}", text(&o));

    let o = agent(
        &cfg,
        &[
            "consent",
            "grant",
            "--scope",
            "metrics",
            "--by",
            "Ann",
            "--until",
            "2001-01-01",
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("not in the future"), "{}", text(&o));

    let o = agent(&d.path().join("missing.toml"), &["run"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("missing.toml"), "{}", text(&o));

    // A hand edit that breaks the file is reported with the path, and nothing is granted.
    std::fs::create_dir_all(d.path().join("state")).unwrap();
    std::fs::write(
        d.path().join("state/consent.toml"),
        "[[grant]]\nscope = 1\n",
    )
    .unwrap();
    let o = agent(&cfg, &["consent", "show"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("consent.toml"), "{}", text(&o));
}

#[test]
fn help_teaches_the_commands() {
    let o = Command::new(env!("CARGO_BIN_EXE_aftercare-agent"))
        .arg("--help")
        .output()
        .unwrap();
    let out = text(&o);
    for w in ["run", "consent", "--config"] {
        assert!(out.contains(w), "{out}");
    }
}

#[test]
fn spool_verify_reports_damage_and_exits_non_zero() {
    use aftercare_agent::spool::{Spool, SpoolConfig};
    use aftercare_shared::protocol::StreamId;

    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path());

    let o = agent(&cfg, &["spool", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("0 segments"), "{}", text(&o));

    let dir = d.path().join("state/spool");
    let mut sp = Spool::open_dir(&dir, SpoolConfig::default()).unwrap();
    for seq in 1..=4 {
        sp.append(StreamId::Metrics, seq, 4, &[seq as u8; 100])
            .unwrap();
    }
    sp.ack(StreamId::Metrics, 1);
    sp.flush().unwrap();
    drop(sp);

    let o = agent(&cfg, &["spool", "verify"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("metrics") && out.contains(" ok"), "{out}");
    assert!(
        out.contains("records 4, unacked 3") && out.contains("acked up to seq 1"),
        "{out}"
    );

    // A bit flip in the second record, and a torn fourth one (records are 132 bytes).
    let seg = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut b = std::fs::read(&seg).unwrap();
    b[8 + 132 + 50] ^= 1;
    b.truncate(b.len() - 10);
    std::fs::write(&seg, &b).unwrap();

    let o = agent(&cfg, &["spool", "verify"]);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("DAMAGED"), "{out}");
    assert!(
        out.contains("corrupt record at offset 140: 132 bytes"),
        "{out}"
    );
    assert!(out.contains("torn tail at offset 404: 122 bytes"), "{out}");
    assert!(
        out.contains("damaged; their intact records are still sent"),
        "{out}"
    );
}

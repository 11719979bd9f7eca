//! Diagnostics in the store, SQLite and PostgreSQL: a request is stored pending, finished
//! once, listed per host newest first and per finding, its output capped, and pending ones
//! of a gone run ended at start.

mod common {
    pub mod backends;
    pub mod hosts;
}
use common::backends::Backend;

use aftercare_collector::diagnose::record::{
    DiagnosticResult, MAX_STORED_OUTPUT, NewDiagnostic, Status,
};
use aftercare_collector::findings::record::{Change, Clocks, FindingKey, Observed};
use aftercare_collector::store::{HostId, Store};

const T0: i64 = 1_790_000_000_000;

fn register(st: &mut dyn Store, customer: &str, host: &str) -> HostId {
    common::hosts::register(st, customer, host, T0)
}

fn new(host: HostId, probe: &str, finding: Option<i64>, at: i64) -> NewDiagnostic {
    NewDiagnostic {
        host,
        probe: probe.into(),
        args: vec![
            ("source".into(), "nginx".into()),
            ("lines".into(), "20".into()),
        ],
        finding,
        requested_by: "eng.wang".into(),
        requested_at: at,
    }
}

fn done(output: Vec<u8>) -> DiagnosticResult {
    DiagnosticResult {
        status: Status::Done,
        finished_at: T0 + 5_000,
        exit_code: Some(0),
        truncated: false,
        output,
        message: "exit code 0".into(),
    }
}

crate::both_backends!(requests_are_stored_pending_finished_once_and_listed);

fn requests_are_stored_pending_finished_once_and_listed(backend: Backend) {
    let mut st = backend.open();
    let db1 = register(&mut *st, "acme", "db1");
    let web = register(&mut *st, "acme", "web");
    assert_eq!(st.host_id("acme/db1").unwrap(), db1);
    assert!(st.host_id("acme/nope").is_err());
    let finding = st
        .apply_finding(&Change::Open {
            key: FindingKey {
                host: db1,
                rule: "r".into(),
                subject: String::new(),
            },
            observed: Observed {
                level: 2,
                category: "c".into(),
                title: "t".into(),
                recommendation: "r".into(),
                evidence: "{}".into(),
                at: T0,
            },
            clocks: Clocks {
                from: T0,
                respond_by: None,
                restore_by: None,
            },
        })
        .unwrap();

    let a = st
        .add_diagnostic(&new(db1, "log-tail", Some(finding), T0))
        .unwrap();
    let b = st
        .add_diagnostic(&new(db1, "filesystems", None, T0 + 1))
        .unwrap();
    let c = st
        .add_diagnostic(&new(web, "sockets", None, T0 + 2))
        .unwrap();
    let row = st.diagnostic(a).unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.finished_at, row.output.as_deref()),
        ("pending", None, Some(&b""[..]))
    );
    assert_eq!((row.customer.as_str(), row.host.as_str()), ("acme", "db1"));
    assert_eq!(row.finding, Some(finding));
    let mut args = row.args.clone();
    args.sort();
    assert_eq!(
        args,
        [
            ("lines".to_string(), "20".to_string()),
            ("source".to_string(), "nginx".to_string())
        ]
    );

    assert!(st.finish_diagnostic(a, &done(b"hello".to_vec())).unwrap());
    // A result never overwrites another.
    let mut late = done(b"late".to_vec());
    late.status = Status::Timeout;
    assert!(!st.finish_diagnostic(a, &late).unwrap());
    let row = st.diagnostic(a).unwrap().unwrap();
    assert_eq!(row.status, "done");
    assert_eq!(row.output.as_deref(), Some(&b"hello"[..]));
    assert_eq!(
        (row.exit_code, row.finished_at),
        (Some(0), Some(T0 + 5_000))
    );

    // Output past the store's cap is cut and marked so.
    let big = vec![b'x'; MAX_STORED_OUTPUT + 10];
    assert!(st.finish_diagnostic(b, &done(big)).unwrap());
    let row = st.diagnostic(b).unwrap().unwrap();
    assert_eq!(row.output.unwrap().len(), MAX_STORED_OUTPUT);
    assert!(row.truncated);

    // Per host, newest first, without output, in pages.
    let mut ro = backend.open_readonly();
    let list = ro.diagnostics(db1, 10, None).unwrap();
    assert_eq!(list.iter().map(|r| r.id).collect::<Vec<_>>(), [b, a]);
    assert!(list.iter().all(|r| r.output.is_none()));
    assert_eq!(ro.diagnostics(db1, 1, None).unwrap()[0].id, b);
    assert_eq!(ro.diagnostics(db1, 10, Some(b)).unwrap()[0].id, a);
    assert_eq!(ro.diagnostics(web, 10, None).unwrap()[0].id, c);
    let linked = ro.diagnostics_for_finding(finding).unwrap();
    assert_eq!(linked.iter().map(|r| r.id).collect::<Vec<_>>(), [a]);
    assert!(ro.diagnostic(9999).unwrap().is_none());
    assert!(
        ro.add_diagnostic(&new(db1, "x", None, T0)).is_err(),
        "read-only"
    );

    // At start, what a gone run left pending can no longer be answered.
    assert_eq!(st.abandon_diagnostics(T0 + 9_000, "restarted").unwrap(), 1);
    let row = st.diagnostic(c).unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.message.as_str(), row.finished_at),
        ("failed", "restarted", Some(T0 + 9_000))
    );
    assert_eq!(st.diagnostic(a).unwrap().unwrap().status, "done");
}

/// Collectors sharing PostgreSQL: one that starts ends the pending diagnostics of its own
/// hosts (their answers went with its previous run), not those of hosts connected through
/// another collector, which may still answer.
#[test]
fn postgres_a_starting_collector_leaves_other_collectors_diagnostics_pending() {
    let b = Backend::postgres();
    let mut a = b.open();
    a.set_node("collector-a:4433");
    let mut other = b.open();
    other.set_node("collector-b:4433");
    let mine = register(&mut *a, "acme", "db1");
    let theirs = register(&mut *other, "acme", "web");
    let mine_pending = a.add_diagnostic(&new(mine, "ps", None, T0)).unwrap();
    let theirs_pending = a.add_diagnostic(&new(theirs, "ps", None, T0)).unwrap();
    // Collector A restarts.
    a.disconnect_all(T0 + 1_000).unwrap();
    assert_eq!(a.abandon_diagnostics(T0 + 1_000, "restarted").unwrap(), 1);
    assert_eq!(
        a.diagnostic(mine_pending).unwrap().unwrap().status,
        "failed"
    );
    assert_eq!(
        a.diagnostic(theirs_pending).unwrap().unwrap().status,
        "pending"
    );
}

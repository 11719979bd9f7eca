//! Diagnostics in the store, SQLite and PostgreSQL: a request is stored pending, finished
//! once, listed per host newest first and per finding, its output capped, and pending ones
//! of a gone run ended at start. A request handed over to the collector holding the host's
//! connection is taken once, and ended when nobody takes or answers it in time.

mod common {
    pub mod backends;
    pub mod hosts;
}
use common::backends::Backend;

use aftercare_collector::diagnose::record::{
    DiagnosticResult, Elsewhere, MAX_STORED_OUTPUT, NewDiagnostic, Sender, Status,
};
use aftercare_collector::findings::record::{Change, Clocks, FindingKey, Observed};
use aftercare_collector::store::{HostId, Store};
use aftercare_shared::diag::ProbeInfo;

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

crate::both_backends!(
    requests_are_stored_pending_finished_once_and_listed,
    handed_over_requests_are_taken_once_and_ended_when_nobody_answers,
);

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
        .add_diagnostic(
            &new(db1, "log-tail", Some(finding), T0),
            Sender::ThisCollector,
            T0 + 60_000,
        )
        .unwrap();
    let b = st
        .add_diagnostic(
            &new(db1, "filesystems", None, T0 + 1),
            Sender::ThisCollector,
            T0 + 60_000,
        )
        .unwrap();
    let c = st
        .add_diagnostic(
            &new(web, "sockets", None, T0 + 2),
            Sender::ThisCollector,
            T0 + 60_000,
        )
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
        ro.add_diagnostic(&new(db1, "x", None, T0), Sender::ThisCollector, T0 + 60_000)
            .is_err(),
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

fn handed_over_requests_are_taken_once_and_ended_when_nobody_answers(backend: Backend) {
    let mut st = backend.open();
    let mut other = backend.open();
    let db1 = register(&mut *st, "acme", "db1");
    let sent_here = st
        .add_diagnostic(
            &new(db1, "ps", None, T0),
            Sender::ThisCollector,
            T0 + 60_000,
        )
        .unwrap();
    let r1 = st
        .add_diagnostic(&new(db1, "log-tail", None, T0), Sender::Holder, T0 + 30_000)
        .unwrap();
    let r2 = st
        .add_diagnostic(
            &new(db1, "sockets", None, T0 + 1),
            Sender::Holder,
            T0 + 30_001,
        )
        .unwrap();
    // Only the handed-over ones wait, oldest first, as they were asked.
    let waiting = other.unclaimed_diagnostics().unwrap();
    assert_eq!(
        waiting.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [r1, r2]
    );
    let mut asked = new(db1, "log-tail", None, T0);
    asked.args.sort();
    assert_eq!(waiting[0].1, asked, "the arguments come back by name");

    // Taken once: a second collector looking at the same time gets false.
    assert!(other.claim_diagnostic(r1, T0 + 100_000).unwrap());
    assert!(!st.claim_diagnostic(r1, T0 + 100_000).unwrap());
    assert!(!st.claim_diagnostic(sent_here, T0 + 100_000).unwrap());
    let waiting = st.unclaimed_diagnostics().unwrap();
    assert_eq!(waiting.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [r2]);

    // Nobody takes r2 in time: offline. r1, taken, is still within its new deadline.
    assert_eq!(st.expire_diagnostics(T0 + 30_000).unwrap(), 0);
    assert_eq!(st.expire_diagnostics(T0 + 30_002).unwrap(), 1);
    let row = st.diagnostic(r2).unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.finished_at),
        ("offline", Some(T0 + 30_002))
    );
    assert!(row.message.contains("no collector"), "{}", row.message);
    assert!(st.unclaimed_diagnostics().unwrap().is_empty());
    assert!(!st.claim_diagnostic(r2, T0 + 100_000).unwrap(), "ended");
    assert_eq!(st.diagnostic(r1).unwrap().unwrap().status, "pending");

    // The one that took r1 died without an answer: ended as failed, and a late answer
    // does not overwrite that.
    assert_eq!(st.expire_diagnostics(T0 + 100_001).unwrap(), 2);
    let row = st.diagnostic(r1).unwrap().unwrap();
    assert_eq!(row.status, "failed");
    assert!(row.message.contains("stopped"), "{}", row.message);
    assert!(
        !other
            .finish_diagnostic(r1, &done(b"late".to_vec()))
            .unwrap()
    );
    assert_eq!(st.diagnostic(sent_here).unwrap().unwrap().status, "failed");
}

/// Collectors sharing PostgreSQL: one that starts ends the pending diagnostics it sent
/// (their answers went with its previous run), not those another collector sent or took,
/// nor those waiting to be taken.
#[test]
fn postgres_a_starting_collector_leaves_other_collectors_diagnostics_pending() {
    let b = Backend::postgres();
    let mut a = b.open();
    a.set_node("collector-a:4433");
    let mut other = b.open();
    other.set_node("collector-b:4433");
    let mine = register(&mut *a, "acme", "db1");
    let theirs = register(&mut *other, "acme", "web");
    let deadline = T0 + 60_000;
    let mine_pending = a
        .add_diagnostic(&new(mine, "ps", None, T0), Sender::ThisCollector, deadline)
        .unwrap();
    let theirs_pending = other
        .add_diagnostic(
            &new(theirs, "ps", None, T0),
            Sender::ThisCollector,
            deadline,
        )
        .unwrap();
    let handed = a
        .add_diagnostic(&new(theirs, "df", None, T0), Sender::Holder, deadline)
        .unwrap();
    let taken = a
        .add_diagnostic(&new(theirs, "ls", None, T0), Sender::Holder, deadline)
        .unwrap();
    assert!(other.claim_diagnostic(taken, deadline).unwrap());
    // Collector A restarts.
    a.disconnect_all(T0 + 1_000).unwrap();
    assert_eq!(a.abandon_diagnostics(T0 + 1_000, "restarted").unwrap(), 1);
    assert_eq!(
        a.diagnostic(mine_pending).unwrap().unwrap().status,
        "failed"
    );
    for id in [theirs_pending, handed, taken] {
        assert_eq!(a.diagnostic(id).unwrap().unwrap().status, "pending");
    }
}

/// Collectors sharing PostgreSQL: the one holding a host's connection keeps the probes its
/// agent advertised, and the others see where the host is connected and what it offers.
#[test]
fn postgres_other_collectors_see_where_a_host_is_connected_and_its_probes() {
    let b = Backend::postgres();
    let mut a = b.open();
    a.set_node("collector-a:4433");
    let mut other = b.open();
    other.set_node("collector-b:4433");
    let db1 = register(&mut *a, "acme", "db1");
    let probes = vec![ProbeInfo {
        name: "log-tail".into(),
        description: "the last lines of a log".into(),
        args: Vec::new(),
        timeout_ms: 10_000,
        max_output: 65_536,
    }];
    assert_eq!(
        other.connected_elsewhere(db1).unwrap(),
        Some(Elsewhere {
            via: "collector-a:4433".into(),
            probes: Vec::new(),
        })
    );
    a.set_probes(db1, &probes).unwrap();
    // Only the holder of the connection writes them.
    other.set_probes(db1, &[]).unwrap();
    assert_eq!(
        other.connected_elsewhere(db1).unwrap(),
        Some(Elsewhere {
            via: "collector-a:4433".into(),
            probes: probes.clone(),
        })
    );
    assert_eq!(a.connected_elsewhere(db1).unwrap(), None, "connected here");
    a.set_disconnected(db1, T0 + 1_000).unwrap();
    assert_eq!(other.connected_elsewhere(db1).unwrap(), None);
}

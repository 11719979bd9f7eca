//! Findings in a real store, SQLite and PostgreSQL: one per key, updates in place, the
//! lifecycle's changes with their timeline, listing order and filters, and refusals that
//! name the finding; tokens; on PostgreSQL, two rules engines racing still make one
//! finding.

mod common {
    pub mod backends;
    pub mod hosts;
}
use common::backends::Backend;

use aftercare_collector::findings::lifecycle::{self, EventKind, State};
use aftercare_collector::findings::record::{
    Change, Clocks, FindingFilter, FindingKey, Observed, sla_flag,
};
use aftercare_collector::store::{HostId, Store, StoreError};

const T0: i64 = 1_772_409_600_000;
const MIN: i64 = 60_000;

fn register(st: &mut dyn Store, customer: &str, host: &str) -> HostId {
    common::hosts::register(st, customer, host, T0)
}

fn observed(level: u8, at: i64, evidence: &str) -> Observed {
    Observed {
        level,
        category: "capacity".into(),
        title: "filesystem full".into(),
        recommendation: "free space or grow the volume".into(),
        evidence: evidence.into(),
        at,
    }
}

fn key(host: HostId, subject: &str) -> FindingKey {
    FindingKey {
        host,
        rule: "fs-full".into(),
        subject: subject.into(),
    }
}

crate::both_backends!(
    a_finding_lives_opens_updates_is_acknowledged_resolved_and_reopens,
    findings_list_by_level_and_deadline_and_filter,
    the_audit_trail_reads_newest_first_by_filter_and_page_and_contracts_are_replaced,
    tokens_are_listed_by_name_found_by_hash_and_revoked_once,
);

fn a_finding_lives_opens_updates_is_acknowledged_resolved_and_reopens(b: Backend) {
    let mut st = b.open();
    let h = register(&mut *st, "acme", "db1");
    let k = key(h, "/var");
    assert_eq!(st.finding_for(&k).unwrap(), None);

    let id = st
        .apply_finding(&Change::Open {
            key: k.clone(),
            observed: observed(1, T0, r#"{"used_pct":99.1}"#),
            clocks: Clocks {
                from: T0,
                respond_by: Some(T0 + 15 * MIN),
                restore_by: Some(T0 + 120 * MIN),
            },
        })
        .unwrap();
    let f = st.finding_for(&k).unwrap().unwrap();
    assert_eq!((f.id, f.state, f.level), (id, State::Open, 1));
    assert_eq!((f.customer.as_str(), f.host.as_str()), ("acme", "db1"));
    assert_eq!(f.respond_by, Some(T0 + 15 * MIN));

    // Firing again: the same finding, refreshed.
    st.apply_finding(&Change::Update {
        id,
        observed: observed(2, T0 + 5 * MIN, r#"{"used_pct":99.4}"#),
        level_changed: true,
    })
    .unwrap();
    let f = st.finding_for(&k).unwrap().unwrap();
    assert_eq!((f.id, f.level, f.last_seen), (id, 2, T0 + 5 * MIN));
    assert!(f.evidence.contains("99.4"));

    let ack = lifecycle::acknowledge(&f.current(), None, "ann", T0 + 6 * MIN).unwrap();
    st.apply_finding(&Change::Act { id, event: ack }).unwrap();
    st.apply_finding(&Change::Escalate {
        id,
        flag: sla_flag::RESTORE_AT_RISK,
        event: lifecycle::Event {
            at: T0 + 20 * MIN,
            kind: EventKind::AtRisk,
            by: None,
            note: Some("restore due".into()),
        },
    })
    .unwrap();
    let f = st.finding_for(&k).unwrap().unwrap();
    assert_eq!(f.state, State::Acknowledged);
    assert_eq!(f.acknowledged, Some((T0 + 6 * MIN, "ann".to_string())));
    assert_eq!(f.sla_sent, sla_flag::RESTORE_AT_RISK);

    let res = lifecycle::resolve(&f.current(), "bob", Some("rotated logs"), T0 + 30 * MIN).unwrap();
    st.apply_finding(&Change::Act {
        id,
        event: res.clone(),
    })
    .unwrap();
    // Someone else resolving the same finding meanwhile is refused, naming its state.
    let e = st
        .apply_finding(&Change::Act { id, event: res })
        .unwrap_err();
    assert!(e.to_string().contains("is resolved now"), "{e}");

    // Back within the window: the lifecycle reopens the same finding.
    let f = st.finding_for(&k).unwrap().unwrap();
    assert_eq!(
        f.resolved,
        Some((
            T0 + 30 * MIN,
            Some("bob".to_string()),
            Some("rotated logs".to_string())
        ))
    );
    let d = lifecycle::on_signal(
        Some(&f.current()),
        &lifecycle::Signal::Firing {
            at: T0 + 40 * MIN,
            level: 1,
        },
        24 * 60 * MIN,
    );
    assert_eq!(d, lifecycle::Decision::Reopen { id });
    st.apply_finding(&Change::Reopen {
        id,
        observed: observed(1, T0 + 40 * MIN, "{}"),
        clocks: Clocks {
            from: T0 + 40 * MIN,
            respond_by: Some(T0 + 55 * MIN),
            restore_by: None,
        },
    })
    .unwrap();
    st.apply_finding(&Change::AutoResolve {
        id,
        at: T0 + 50 * MIN,
    })
    .unwrap();

    let (f, timeline) = st.finding(id).unwrap().unwrap();
    assert_eq!(f.state, State::Resolved);
    assert_eq!(
        f.resolved,
        Some((T0 + 50 * MIN, None, None)),
        "auto-resolved"
    );
    assert_eq!(
        f.acknowledged, None,
        "a reopened finding starts its clocks again"
    );
    let kinds: Vec<EventKind> = timeline.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Opened,
            EventKind::LevelChanged,
            EventKind::Acknowledged,
            EventKind::AtRisk,
            EventKind::Resolved,
            EventKind::Reopened,
            EventKind::AutoResolved
        ]
    );
    assert_eq!(timeline[2].by.as_deref(), Some("ann"));
    assert_eq!(timeline[4].note.as_deref(), Some("rotated logs"));
    assert!(timeline.windows(2).all(|w| w[0].at <= w[1].at));
}

fn findings_list_by_level_and_deadline_and_filter(backend: Backend) {
    let mut st = backend.open();
    let a = register(&mut *st, "acme", "db1");
    let b = register(&mut *st, "globex", "web1");
    let open = |st: &mut dyn Store, k: FindingKey, level: u8, respond: i64| {
        st.apply_finding(&Change::Open {
            key: k,
            observed: observed(level, T0, "{}"),
            clocks: Clocks {
                from: T0,
                respond_by: Some(T0 + respond),
                restore_by: None,
            },
        })
        .unwrap()
    };
    let late_l2 = open(&mut *st, key(a, "/var"), 2, 60 * MIN);
    let soon_l2 = open(&mut *st, key(b, "/"), 2, 10 * MIN);
    let l1 = open(&mut *st, key(a, "/data"), 1, 90 * MIN);
    st.apply_finding(&Change::AutoResolve {
        id: late_l2,
        at: T0 + MIN,
    })
    .unwrap();

    let all = st.findings(&FindingFilter::default()).unwrap();
    let ids: Vec<i64> = all.iter().map(|f| f.id).collect();
    assert_eq!(
        ids,
        [l1, soon_l2, late_l2],
        "L1 first, then the nearest deadline"
    );
    let open_only = st
        .findings(&FindingFilter {
            open_only: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(open_only.len(), 2);
    let acme = st
        .findings(&FindingFilter {
            customer: Some("acme".into()),
            ..Default::default()
        })
        .unwrap();
    assert!(acme.iter().all(|f| f.customer == "acme") && acme.len() == 2);
    let web = st
        .findings(&FindingFilter {
            host: Some("globex/web1".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(web.iter().map(|f| f.id).collect::<Vec<_>>(), [soon_l2]);
    assert!(matches!(
        st.findings(&FindingFilter {
            host: Some("nosuch".into()),
            ..Default::default()
        }),
        Err(StoreError::UnknownHost(_))
    ));
    assert!(st.finding(999).unwrap().is_none());
    let e = st
        .apply_finding(&Change::AutoResolve { id: 999, at: T0 })
        .map(|_| ());
    assert!(
        e.is_ok(),
        "auto-resolving what is not there changes nothing"
    );
    let e = st
        .apply_finding(&Change::Update {
            id: 999,
            observed: observed(1, T0, "{}"),
            level_changed: false,
        })
        .unwrap_err();
    assert!(e.to_string().contains("no finding 999"), "{e}");
}

fn the_audit_trail_reads_newest_first_by_filter_and_page_and_contracts_are_replaced(b: Backend) {
    use aftercare_collector::store::{AuditFilter, AuditRow, ContractAssignment};
    let mut st = b.open();
    for i in 0..5i64 {
        st.add_audit(&AuditRow {
            id: 0,
            at: T0 + i * MIN,
            actor: if i % 2 == 0 { "ann" } else { "cli:bo" }.into(),
            role: "engineer".into(),
            action: if i < 3 { "finding.ack" } else { "token.create" }.into(),
            target: format!("finding/{i}"),
            outcome: "ok".into(),
            detail: "{}".into(),
        })
        .unwrap();
    }
    let targets = |f: &AuditFilter, st: &mut dyn Store| {
        st.audit(f)
            .unwrap()
            .into_iter()
            .map(|a| a.target)
            .collect::<Vec<_>>()
    };
    let all = AuditFilter {
        since: i64::MIN,
        ..Default::default()
    };
    assert_eq!(
        targets(&all, &mut *st),
        [
            "finding/4",
            "finding/3",
            "finding/2",
            "finding/1",
            "finding/0"
        ]
    );
    let page = AuditFilter {
        limit: 2,
        ..all.clone()
    };
    let first = st.audit(&page).unwrap();
    let next = AuditFilter {
        before_id: Some(first[1].id),
        ..page.clone()
    };
    assert_eq!(targets(&next, &mut *st), ["finding/2", "finding/1"]);
    let ann_acks = AuditFilter {
        actor: Some("ann".into()),
        action: Some("finding.ack".into()),
        since: T0 + MIN,
        ..Default::default()
    };
    assert_eq!(targets(&ann_acks, &mut *st), ["finding/2"]);

    assert!(st.contract_assignments().unwrap().is_empty());
    for (contract, at) in [("premium", T0), ("standard", T0 + MIN)] {
        st.set_contract(&ContractAssignment {
            customer: "acme".into(),
            contract: contract.into(),
            set_at: at,
            set_by: "boss".into(),
        })
        .unwrap();
    }
    let got = st.contract_assignments().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].contract.as_str(), got[0].set_at),
        ("standard", T0 + MIN)
    );
}

fn tokens_are_listed_by_name_found_by_hash_and_revoked_once(b: Backend) {
    use aftercare_collector::api::token::Role;
    use aftercare_collector::store::TokenRow;
    let mut st = b.open();
    let token = |name: &str, role: Role| TokenRow {
        name: name.into(),
        role,
        created_at: T0,
        created_by: "boss".into(),
        revoked_at: None,
    };
    // Byte order: upper case before lower case, whatever the database's collation.
    for (name, hash) in [("ops", "h1"), ("Zed", "h2"), ("ann", "h3")] {
        st.add_token(&token(name, Role::Engineer), hash).unwrap();
    }
    let e = st.add_token(&token("ops", Role::Admin), "h4").unwrap_err();
    assert!(
        matches!(&e, StoreError::Invalid(m) if m.contains("a token named 'ops' exists")),
        "{e}"
    );
    let names: Vec<String> = st.tokens().unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["Zed", "ann", "ops"]);
    assert_eq!(
        st.token_by_hash("h1").unwrap(),
        Some(token("ops", Role::Engineer))
    );
    assert_eq!(st.token_by_hash("nope").unwrap(), None);

    st.revoke_token("ops", T0 + MIN).unwrap();
    assert_eq!(st.token_by_hash("h1").unwrap(), None, "revoked");
    let e = st.revoke_token("ops", T0 + 2 * MIN).unwrap_err();
    assert!(e.to_string().contains("no active token named 'ops'"), "{e}");
    let ops = st.tokens().unwrap().into_iter().find(|t| t.name == "ops");
    assert_eq!(ops.unwrap().revoked_at, Some(T0 + MIN));

    let mut ro = b.open_readonly();
    assert_eq!(ro.tokens().unwrap().len(), 3);
    assert!(matches!(
        ro.add_token(&token("x", Role::Viewer), "h9"),
        Err(StoreError::ReadOnly { .. })
    ));
}

/// The engine's view of one key while two engines race: both decided Open.
fn open_change(k: &FindingKey, level: u8, at: i64, evidence: &str) -> Change {
    Change::Open {
        key: k.clone(),
        observed: observed(level, at, evidence),
        clocks: Clocks {
            from: at,
            respond_by: Some(at + 15 * MIN),
            restore_by: None,
        },
    }
}

/// The key's unresolved findings, counted in the database itself.
fn unresolved(b: &Backend, k: &FindingKey) -> i64 {
    let mut c = ::postgres::Client::connect(&b.config_value(), ::postgres::NoTls).unwrap();
    c.query_one(
        "SELECT count(*) FROM findings
         WHERE host_id = $1 AND rule = $2 AND subject = $3 AND state <> 'resolved'",
        &[&k.host, &k.rule, &k.subject],
    )
    .unwrap()
    .get(0)
}

/// PostgreSQL only: two rules engines (two stores on one database) that both decided to
/// open a key's finding make one. The one that comes second is told the id of the
/// finding the first made, which its observation has updated: its pass goes on.
#[test]
fn postgres_two_engines_racing_one_open_make_one_finding() {
    let b = Backend::postgres();
    let mut one = b.open();
    let mut two = b.open();
    let h = register(&mut *one, "acme", "db1");
    for round in 0..20 {
        let k = key(h, &format!("/m{round}"));
        let barrier = std::sync::Barrier::new(2);
        let run = |st: &mut Box<dyn Store>, level: u8| {
            barrier.wait();
            st.apply_finding(&open_change(&k, level, T0 + round, "{}"))
        };
        let (a, c) = std::thread::scope(|s| {
            let ta = s.spawn(|| run(&mut one, 2));
            let tc = s.spawn(|| run(&mut two, 3));
            (ta.join().unwrap(), tc.join().unwrap())
        });
        let (a, c) = (a.unwrap(), c.unwrap());
        assert_eq!(a, c, "round {round}: both engines are told the one finding");
        assert_eq!(unresolved(&b, &k), 1, "round {round}");
        let (f, timeline) = one.finding(a).unwrap().unwrap();
        let kinds: Vec<EventKind> = timeline.iter().map(|e| e.kind).collect();
        // The second one's level differs: its update is on the timeline.
        assert_eq!(
            kinds,
            [EventKind::Opened, EventKind::LevelChanged],
            "round {round}"
        );
        assert_eq!(f.state, State::Open);
    }
}

/// PostgreSQL only, step by step: an Open that meets the key's finding another engine has
/// not committed yet waits for it, then updates it.
#[test]
fn postgres_an_open_waits_for_another_engines_open_and_updates_it() {
    let b = Backend::postgres();
    let mut st = b.open();
    let h = register(&mut *st, "acme", "db1");
    let k = key(h, "/var");
    let mut other = ::postgres::Client::connect(&b.config_value(), ::postgres::NoTls).unwrap();
    let mut tx = other.transaction().unwrap();
    let theirs: i64 = tx
        .query_one(
            "INSERT INTO findings (host_id, rule, subject, level, category, title,
                recommendation, state, opened_at, last_seen, sla_from, evidence)
             VALUES ($1, $2, $3, 2, 'capacity', 't', 'r', 'open', $4, $4, $4, '{}')
             RETURNING id",
            &[&k.host, &k.rule, &k.subject, &T0],
        )
        .unwrap()
        .get(0);
    let ours = std::thread::scope(|s| {
        let t = s.spawn(|| st.apply_finding(&open_change(&k, 2, T0 + MIN, r#"{"v":2}"#)));
        // Long enough for the insert to be waiting on the uncommitted row.
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!t.is_finished(), "the open waits for the other transaction");
        tx.commit().unwrap();
        t.join().unwrap()
    })
    .unwrap();
    assert_eq!(ours, theirs);
    assert_eq!(unresolved(&b, &k), 1);
    let f = st.finding_for(&k).unwrap().unwrap();
    assert_eq!(
        (f.id, f.last_seen, f.evidence.as_str()),
        (theirs, T0 + MIN, r#"{"v":2}"#)
    );
}

/// PostgreSQL only: an engine reopening a resolved finding after another engine opened a
/// new one for the key, or reopened it first, updates the finding that is unresolved.
#[test]
fn postgres_a_racing_reopen_updates_the_unresolved_finding() {
    let b = Backend::postgres();
    let mut st = b.open();
    let h = register(&mut *st, "acme", "db1");
    let k = key(h, "/var");
    let old = st.apply_finding(&open_change(&k, 2, T0, "{}")).unwrap();
    st.apply_finding(&Change::AutoResolve {
        id: old,
        at: T0 + MIN,
    })
    .unwrap();
    let reopen = |id: i64, level: u8, at: i64| Change::Reopen {
        id,
        observed: observed(level, at, "{}"),
        clocks: Clocks {
            from: at,
            respond_by: None,
            restore_by: None,
        },
    };

    // Another engine opened a new finding; this one still decides to reopen the old.
    let new = st
        .apply_finding(&open_change(&k, 2, T0 + 2 * MIN, "{}"))
        .unwrap();
    assert_ne!(new, old);
    let got = st.apply_finding(&reopen(old, 1, T0 + 3 * MIN)).unwrap();
    assert_eq!(got, new, "the unresolved finding is the one updated");
    assert_eq!(unresolved(&b, &k), 1);
    let (f, timeline) = st.finding(new).unwrap().unwrap();
    assert_eq!((f.level, f.last_seen), (1, T0 + 3 * MIN));
    assert_eq!(timeline.last().unwrap().kind, EventKind::LevelChanged);
    let (f, timeline) = st.finding(old).unwrap().unwrap();
    assert_eq!(f.state, State::Resolved, "the old one stays resolved");
    assert_eq!(timeline.last().unwrap().kind, EventKind::AutoResolved);

    // Both engines reopen the same finding: the second one's reopen is an update.
    st.apply_finding(&Change::AutoResolve {
        id: new,
        at: T0 + 4 * MIN,
    })
    .unwrap();
    assert_eq!(
        st.apply_finding(&reopen(new, 1, T0 + 5 * MIN)).unwrap(),
        new
    );
    let ack = lifecycle::acknowledge(
        &st.finding(new).unwrap().unwrap().0.current(),
        None,
        "ann",
        T0 + 6 * MIN,
    )
    .unwrap();
    st.apply_finding(&Change::Act {
        id: new,
        event: ack,
    })
    .unwrap();
    assert_eq!(
        st.apply_finding(&reopen(new, 1, T0 + 7 * MIN)).unwrap(),
        new
    );
    let (f, timeline) = st.finding(new).unwrap().unwrap();
    assert_eq!(f.state, State::Acknowledged, "not reopened twice");
    assert_eq!(f.last_seen, T0 + 7 * MIN);
    let reopened = timeline
        .iter()
        .filter(|e| e.kind == EventKind::Reopened)
        .count();
    assert_eq!(reopened, 1);
    assert!(matches!(
        st.apply_finding(&reopen(999, 1, T0)),
        Err(StoreError::NoSuchFinding(999))
    ));
}

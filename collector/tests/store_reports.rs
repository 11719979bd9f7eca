//! Reports in the SQLite store: the quarter's own report is made once per customer and
//! period (a failed one may be made again), progress and data round-trip, lists come newest
//! first, and reports left running by a gone collector end as failed.

use aftercare_collector::report::record::{NewReport, Status};
use aftercare_collector::store::{Store, open_sqlite};

const T0: i64 = 1_790_000_000_000;
const DAY: i64 = 86_400_000;

fn new(customer: &str, scheduled: bool, by: &str) -> NewReport {
    NewReport {
        customer: customer.into(),
        from: T0,
        to: T0 + 91 * DAY,
        label: "2026-Q3".into(),
        lang: "en".into(),
        time_zone: "UTC".into(),
        scheduled,
        requested_by: by.into(),
        created_at: T0 + 92 * DAY,
    }
}

#[test]
fn a_quarters_report_is_made_once_and_again_only_after_failing() {
    let d = tempfile::tempdir().unwrap();
    let mut st = open_sqlite(&d.path().join("a.db")).unwrap();
    let first = st.add_report(&new("acme", true, "scheduler")).unwrap();
    let id = first.expect("the first claim makes it");
    // A second collector (or this one after a restart) asks again: no second report.
    assert_eq!(
        st.add_report(&new("acme", true, "scheduler-2")).unwrap(),
        None
    );
    // Another customer's, and on-demand ones for the same period, are separate.
    assert!(
        st.add_report(&new("globex", true, "scheduler"))
            .unwrap()
            .is_some()
    );
    let a = st.add_report(&new("acme", false, "ann")).unwrap().unwrap();
    let b = st.add_report(&new("acme", false, "ann")).unwrap().unwrap();
    assert_ne!(a, b);

    st.report_progress(id, 40).unwrap();
    let r = st.report(id).unwrap().unwrap();
    assert_eq!((r.status, r.progress, r.data), (Status::Running, 40, None));
    st.finish_report(id, Err("no hosts in the period"), T0 + 93 * DAY)
        .unwrap();
    let r = st.report(id).unwrap().unwrap();
    assert_eq!(r.status, Status::Failed);
    assert_eq!(r.message, "no hosts in the period");
    // Failed: the next claim takes the same row again, from scratch.
    assert_eq!(
        st.add_report(&new("acme", true, "scheduler-2")).unwrap(),
        Some(id)
    );
    let r = st.report(id).unwrap().unwrap();
    assert_eq!(
        (r.status, r.progress, r.message.as_str()),
        (Status::Running, 0, "")
    );
    assert_eq!(r.requested_by, "scheduler-2");
    let json = br#"{"format":1,"hosts":["db1","db2"]}"#.repeat(100);
    st.finish_report(id, Ok(&json), T0 + 94 * DAY).unwrap();
    let r = st.report(id).unwrap().unwrap();
    assert_eq!((r.status, r.progress), (Status::Done, 100));
    assert_eq!(r.data.as_deref(), Some(&json[..]));
    assert_eq!(r.finished_at, Some(T0 + 94 * DAY));
    // Finished is final: a late second finish changes nothing.
    st.finish_report(id, Err("late"), T0 + 95 * DAY).unwrap();
    assert_eq!(st.report(id).unwrap().unwrap().status, Status::Done);

    // Lists: newest first, without data, by customer, in pages.
    let all = st.reports(None, 0, None).unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));
    assert!(all.iter().all(|r| r.data.is_none()));
    let acme = st.reports(Some("acme"), 2, None).unwrap();
    assert_eq!(acme.iter().map(|r| r.id).collect::<Vec<_>>(), [b, a]);
    let rest = st.reports(Some("acme"), 2, Some(a)).unwrap();
    assert_eq!(rest.iter().map(|r| r.id).collect::<Vec<_>>(), [id]);

    // What a gone collector left running ends as failed, with why.
    assert_eq!(
        st.abandon_reports(T0 + 96 * DAY, "collector restarted")
            .unwrap(),
        3
    );
    let r = st.report(a).unwrap().unwrap();
    assert_eq!(
        (r.status, r.message.as_str()),
        (Status::Failed, "collector restarted")
    );
    assert_eq!(st.report(9999).unwrap(), None);
}

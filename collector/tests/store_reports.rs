//! Reports in the store, SQLite and PostgreSQL: the quarter's own report is made once per
//! customer and period (a failed one may be made again), progress and data round-trip,
//! lists come newest first, and reports left running by a gone collector end as failed.

mod common {
    pub mod backends;
    pub mod hosts;
}
use common::backends::Backend;

use aftercare_collector::report::record::{NewReport, Status};

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

crate::both_backends!(
    a_quarters_report_is_made_once_and_again_only_after_failing,
    collectors_claiming_one_quarter_at_once_make_one_report,
    a_takeover_leaves_a_report_in_the_making_running,
);

fn a_quarters_report_is_made_once_and_again_only_after_failing(b: Backend) {
    let mut st = b.open();
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

/// Several collectors (stores) on one database claim the same quarter at the same moment:
/// one of them makes it; once it failed, again exactly one takes it.
fn collectors_claiming_one_quarter_at_once_make_one_report(b: Backend) {
    let mut stores: Vec<_> = (0..4).map(|_| b.open()).collect();
    let claim = |stores: &mut Vec<Box<dyn aftercare_collector::store::Store>>| {
        let barrier = std::sync::Barrier::new(stores.len());
        let got: Vec<Option<i64>> = std::thread::scope(|s| {
            let handles: Vec<_> = stores
                .iter_mut()
                .enumerate()
                .map(|(i, st)| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        st.add_report(&new("acme", true, &format!("collector-{i}")))
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        got.into_iter().flatten().collect::<Vec<i64>>()
    };
    let made = claim(&mut stores);
    assert_eq!(made.len(), 1, "one claim makes it: {made:?}");
    stores[0]
        .finish_report(made[0], Err("no hosts"), T0 + 93 * DAY)
        .unwrap();
    let again = claim(&mut stores);
    assert_eq!(again, made, "one claim takes the failed one again");
    assert_eq!(stores[0].reports(Some("acme"), 0, None).unwrap().len(), 1);
}

/// The collector taking the scheduler's lease ends the scheduled reports a dead
/// predecessor left running, but not a report the CLI or another collector's API is making
/// right now; that one ends only when it has run far longer than any report takes.
fn a_takeover_leaves_a_report_in_the_making_running(b: Backend) {
    let mut st = b.open();
    let scheduled = st
        .add_report(&new("acme", true, "scheduler"))
        .unwrap()
        .unwrap();
    let now = T0 + 92 * DAY + 60_000;
    let mut api = new("acme", false, "ann");
    api.created_at = now - 30_000;
    let api = st.add_report(&api).unwrap().unwrap();
    assert_eq!(st.abandon_reports(now, "taken over").unwrap(), 1);
    assert_eq!(
        st.report(scheduled).unwrap().unwrap().status,
        Status::Failed
    );
    assert_eq!(st.report(api).unwrap().unwrap().status, Status::Running);
    // Hours later it has no maker left.
    assert_eq!(st.abandon_reports(now + 2 * 3_600_000, "gone").unwrap(), 1);
    assert_eq!(st.report(api).unwrap().unwrap().status, Status::Failed);
}

//! The store against real databases: the tests in `both_backends!` run on a SQLite file in
//! a temporary directory and on a PostgreSQL database of their own; the rest are about
//! SQLite files (crashes, damage, upgrades of older schemas).

mod common;
use common::backends::Backend;

use aftercare_collector::store::{
    BatchData, CommitOutcome, HOUR_MS, HostHello, HostId, HostUpdate, HostUpdated, LogFilter,
    MINUTE_MS, PendingBatch, Resolution, SeriesPoints, Store, StoreError, UNATTRIBUTED,
    open_sqlite, open_sqlite_readonly,
};
use aftercare_shared::consent::{ConsentRecord, Grant, Scope};
use aftercare_shared::logblock;
use aftercare_shared::model::{
    HostFacts, LogRecord, LossReport, MetricKind, MetricSnapshot, Sample, Severity,
};
use aftercare_shared::protocol::{Identity, StreamId};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// 2026-03-02T00:00:00Z, a Monday.
const T0: i64 = 1_772_409_600_000;

fn consent() -> ConsentRecord {
    ConsentRecord {
        version: 1,
        grants: vec![Grant {
            scope: Scope::Metrics,
            by: "Ann".into(),
            at: T0 - HOUR_MS,
            until: None,
        }],
    }
}

fn register(store: &mut dyn Store, customer: &str, host: &str, now: i64) -> HostId {
    let identity = Identity {
        customer: customer.into(),
        host: host.into(),
    };
    let facts = HostFacts {
        hostname: host.into(),
        cpu_count: 4,
        ..HostFacts::default()
    };
    let c = consent();
    let hello = HostHello {
        identity: &identity,
        facts: &facts,
        agent_version: "0.1.0",
        consent: &c,
        interval_ms: 10_000,
        cert_expires: None,
    };
    store.register_host(&hello, now).unwrap()
}

fn sample(name: &str, labels: &str, kind: MetricKind, value: f64) -> Sample {
    Sample {
        name: name.into(),
        labels: labels.into(),
        kind,
        value,
    }
}

fn batch(host: HostId, seq: u64, ts: i64, samples: Vec<Sample>) -> PendingBatch {
    PendingBatch {
        host,
        stream: StreamId::Metrics,
        seq,
        received_at: ts + 20,
        data: BatchData::Metrics(MetricSnapshot { ts, samples }),
        loss: LossReport::default(),
    }
}

/// A tick of a small host: a gauge, a per-core gauge, a counter, and a filesystem that
/// only shows up on even ticks.
fn tick(host: HostId, i: u64, ts: i64) -> PendingBatch {
    let mut s = vec![
        sample("cpu.total", "", MetricKind::Gauge, (i % 7) as f64 * 1.5),
        sample("cpu.core", "core=0", MetricKind::Gauge, 0.25 * i as f64),
        sample(
            "net.rx_bytes",
            "if=eth0",
            MetricKind::Counter,
            1000.0 * i as f64,
        ),
    ];
    if i.is_multiple_of(2) {
        s.push(sample("fs.used", "mount=/", MetricKind::Gauge, 5e9));
    }
    batch(host, i + 1, ts, s)
}

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("collector.db")
}

fn all_points(store: &mut dyn Store, host: &str) -> Vec<SeriesPoints> {
    store.query(host, None, 0, i64::MAX).unwrap()
}

fn hosts_are_upserted_by_customer_and_host(b: Backend) {
    let mut store = b.open();
    let a = register(&mut *store, "acme", "web", T0);
    let b = register(&mut *store, "globex", "web", T0 + 5);
    assert_ne!(a, b);
    store.set_disconnected(a, T0 + 10).unwrap();
    let mut newer = consent();
    newer.grants[0].by = "Bo".into();
    store.set_consent(b, &newer, T0 + 11).unwrap();
    // The same identity again: same id, connected again, first_seen kept.
    assert_eq!(register(&mut *store, "acme", "web", T0 + 1000), a);

    let hosts = store.hosts(T0 + 2000).unwrap();
    assert_eq!(hosts.len(), 2);
    let acme = &hosts[0];
    assert_eq!((acme.id, acme.full_name().as_str()), (a, "acme/web"));
    assert_eq!(acme.first_seen, T0);
    assert!(acme.connected);
    assert_eq!(acme.last_seen, None);
    assert!(!acme.online, "no batch yet");
    assert_eq!(acme.facts.cpu_count, 4);
    assert_eq!(acme.interval_ms, 10_000);
    assert_eq!(hosts[1].consent.grants[0].by, "Bo");

    // Online: connected and heard from within three intervals.
    store.commit(&[tick(a, 0, T0 + 3000)]).unwrap();
    let h = &store.hosts(T0 + 3020 + 30_000).unwrap()[0];
    assert_eq!(h.last_seen, Some(T0 + 3020));
    assert!(h.online);
    assert!(!store.hosts(T0 + 3020 + 30_001).unwrap()[0].online);
    store.set_disconnected(a, T0 + 4000).unwrap();
    assert!(!store.hosts(T0 + 4000).unwrap()[0].online);
    register(&mut *store, "acme", "web", T0 + 5000);
    store.disconnect_all(T0 + 6000).unwrap();
    assert!(store.hosts(T0 + 6000).unwrap().iter().all(|h| !h.connected));

    assert!(matches!(
        store.set_disconnected(999, T0),
        Err(StoreError::UnknownHostId(999))
    ));
    let e = store.commit(&[tick(999, 0, T0)]).unwrap_err();
    assert!(e.to_string().contains("999"), "{e}");
}

/// What a reconnect storm sends the writer: registrations (with their certificates' expiry),
/// disconnections and consent, applied as one group in order, each with its own outcome;
/// one that fails (an unknown host) fails alone.
fn host_updates_apply_in_order_each_with_its_own_outcome(b: Backend) {
    let mut store = b.open();
    let a = register(&mut *store, "acme", "web", T0);
    store.commit(&[tick(a, 0, T0 + 100)]).unwrap();
    store.set_disconnected(a, T0 + 200).unwrap();
    let (ida, idb) = (
        Identity {
            customer: "acme".into(),
            host: "web".into(),
        },
        Identity {
            customer: "acme".into(),
            host: "db".into(),
        },
    );
    let facts = HostFacts::default();
    let c = consent();
    let mut newer = consent();
    newer.grants[0].by = "Bo".into();
    let hello = |identity| hello_020(identity, &facts, &c);
    let expires = T0 + 90 * 86_400_000;
    let out = store.host_updates(
        &[
            HostUpdate::Register(HostHello {
                cert_expires: Some(expires),
                ..hello(&ida)
            }),
            HostUpdate::Consent {
                host: 999,
                record: &newer,
            },
            HostUpdate::Register(hello(&idb)),
            // Again, without a known expiry: the stored one stays.
            HostUpdate::Register(hello(&ida)),
            HostUpdate::Consent {
                host: a,
                record: &newer,
            },
        ],
        T0 + 1000,
    );
    assert_eq!(out.len(), 5);
    assert_eq!(
        out[0].as_ref().unwrap(),
        &HostUpdated::Registered {
            host: a,
            high_water: vec![(StreamId::Metrics, 1)],
        }
    );
    assert!(
        matches!(out[1], Err(StoreError::UnknownHostId(999))),
        "{:?}",
        out[1]
    );
    let Ok(HostUpdated::Registered {
        host: db,
        high_water,
    }) = &out[2]
    else {
        panic!("{:?}", out[2]);
    };
    assert!(high_water.is_empty(), "a new host has no batches");
    assert_eq!(
        out[3].as_ref().unwrap(),
        out[0].as_ref().unwrap(),
        "registered again, with its marks"
    );
    assert!(matches!(out[4], Ok(HostUpdated::Done)));
    // All of it durable: another handle sees it.
    drop(store);
    let hosts = b.open_readonly().hosts(T0 + 2000).unwrap();
    let web = hosts.iter().find(|h| h.id == a).unwrap();
    assert!(web.connected);
    assert_eq!(web.agent_version, "0.2.0");
    assert_eq!(web.cert_expires, Some(expires));
    assert_eq!(web.consent.grants[0].by, "Bo");
    assert!(hosts.iter().any(|h| h.id == *db && h.connected));

    // A host twice in a row (PostgreSQL cannot register it twice in one statement), then
    // hosts known and new together.
    let idc = Identity {
        customer: "acme".into(),
        host: "cache".into(),
    };
    let mut store = b.open();
    let out = store.host_updates(
        &[
            HostUpdate::Register(hello(&idb)),
            HostUpdate::Register(HostHello {
                cert_expires: Some(T0 + 7),
                ..hello(&idb)
            }),
            HostUpdate::Register(hello(&ida)),
            HostUpdate::Register(hello(&idc)),
        ],
        T0 + 2500,
    );
    let ids: Vec<HostId> = out
        .iter()
        .map(|o| match o {
            Ok(HostUpdated::Registered { host, .. }) => *host,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids[..3], [*db, *db, a]);
    assert!(![a, *db].contains(&ids[3]), "a new host, a new id");
    assert_eq!(
        out[2].as_ref().unwrap(),
        &HostUpdated::Registered {
            host: a,
            high_water: vec![(StreamId::Metrics, 1)]
        }
    );
    let hosts = store.hosts(T0 + 2600).unwrap();
    assert_eq!(hosts.len(), 3);
    assert_eq!(
        hosts.iter().find(|h| h.id == *db).unwrap().cert_expires,
        Some(T0 + 7)
    );
    assert_eq!(
        hosts.iter().find(|h| h.id == a).unwrap().cert_expires,
        Some(expires)
    );
    drop(store);

    // Disconnections of a stopping collector, as a group (one statement on PostgreSQL);
    // an unknown host fails alone.
    let mut store = b.open();
    let out = store.host_updates(
        &[
            HostUpdate::Disconnected(a),
            HostUpdate::Disconnected(999),
            HostUpdate::Disconnected(*db),
            HostUpdate::Disconnected(ids[3]),
        ],
        T0 + 3000,
    );
    assert!(
        matches!(out[1], Err(StoreError::UnknownHostId(999))),
        "{:?}",
        out[1]
    );
    for o in [&out[0], &out[2], &out[3]] {
        assert!(matches!(o, Ok(HostUpdated::Done)), "{o:?}");
    }
    assert!(store.hosts(T0 + 3000).unwrap().iter().all(|h| !h.connected));
}

/// PostgreSQL applies a group in one transaction without a savepoint per update; an
/// update the database refuses (here a host name with a NUL, which TEXT cannot hold)
/// aborts that transaction, and the group is then applied update by update: the refused
/// one fails alone, the others are all applied.
#[test]
fn postgres_an_update_the_database_refuses_fails_alone_in_its_group() {
    let b = Backend::postgres();
    let mut store = b.open();
    let a = register(&mut *store, "acme", "web", T0);
    store.commit(&[tick(a, 0, T0 + 100)]).unwrap();
    let facts = HostFacts::default();
    let c = consent();
    let ids = ["db", "bad\0name", "cache", "web"].map(|h| Identity {
        customer: "acme".into(),
        host: h.into(),
    });
    let hello = |identity| hello_020(identity, &facts, &c);
    let out = store.host_updates(
        &[
            HostUpdate::Register(hello(&ids[0])),
            HostUpdate::Register(HostHello {
                cert_expires: Some(T0 + 5),
                ..hello(&ids[3])
            }),
            HostUpdate::Register(hello(&ids[1])),
            HostUpdate::Register(hello(&ids[2])),
        ],
        T0 + 1000,
    );
    assert!(
        matches!(out[0], Ok(HostUpdated::Registered { .. })),
        "{:?}",
        out[0]
    );
    assert!(
        matches!(out[1], Ok(HostUpdated::Registered { host, .. }) if host == a),
        "{:?}",
        out[1]
    );
    assert!(
        matches!(out[2], Err(StoreError::Backend { .. })),
        "{:?}",
        out[2]
    );
    assert!(
        matches!(out[3], Ok(HostUpdated::Registered { .. })),
        "{:?}",
        out[3]
    );
    let hosts = b.open_readonly().hosts(T0 + 2000).unwrap();
    let mut names: Vec<&str> = hosts.iter().map(|h| h.host.as_str()).collect();
    names.sort();
    assert_eq!(names, ["cache", "db", "web"]);
    assert_eq!(
        hosts.iter().find(|h| h.id == a).unwrap().cert_expires,
        Some(T0 + 5)
    );
}

/// A Hello of agent 0.2.0 for `identity`.
fn hello_020<'a>(
    identity: &'a Identity,
    facts: &'a HostFacts,
    consent: &'a ConsentRecord,
) -> HostHello<'a> {
    HostHello {
        identity,
        facts,
        agent_version: "0.2.0",
        consent,
        interval_ms: 10_000,
        cert_expires: None,
    }
}

fn redelivered_batches_are_stored_once(b: Backend) {
    let mut store = b.open();
    let h = register(&mut *store, "acme", "db1", T0);
    assert!(store.high_water(h).unwrap().is_empty());

    let mut b5 = tick(h, 4, T0 + 40_000);
    b5.loss = LossReport {
        dropped_batches: 2,
        dropped_samples: 200,
        discarded_by_revocation: 1,
    };
    let b6 = tick(h, 5, T0 + 50_000);
    assert_eq!(
        store.commit(std::slice::from_ref(&b5)).unwrap(),
        vec![CommitOutcome::Stored]
    );
    // The same batch again, then an older one after a newer one, then a repeat within one
    // commit.
    assert_eq!(
        store.commit(std::slice::from_ref(&b5)).unwrap(),
        vec![CommitOutcome::Duplicate]
    );
    assert_eq!(
        store
            .commit(&[b6.clone(), tick(h, 2, T0 + 20_000)])
            .unwrap(),
        vec![CommitOutcome::Stored, CommitOutcome::Duplicate]
    );
    let b7 = tick(h, 6, T0 + 60_000);
    assert_eq!(
        store.commit(&[b7.clone(), b7, b6]).unwrap(),
        vec![
            CommitOutcome::Stored,
            CommitOutcome::Duplicate,
            CommitOutcome::Duplicate
        ]
    );
    assert_eq!(store.high_water(h).unwrap(), vec![(StreamId::Metrics, 7)]);

    let pts = store.query("db1", Some("cpu.total"), 0, i64::MAX).unwrap();
    let ts: Vec<i64> = pts[0].points.iter().map(|p| p.0).collect();
    assert_eq!(ts, vec![T0 + 40_000, T0 + 50_000, T0 + 60_000]);
    let status = &store.hosts(T0).unwrap()[0];
    assert_eq!(
        (
            status.dropped_batches,
            status.dropped_samples,
            status.discarded_by_revocation
        ),
        (2, 200, 1),
        "a redelivered batch's loss report counts once"
    );

    // Absurd loss reports saturate rather than fail commits.
    let mut huge = tick(h, 7, T0 + 65_000);
    huge.loss.dropped_samples = u64::MAX;
    store.commit(&[huge.clone()]).unwrap();
    huge.seq = 9;
    store.commit(&[huge]).unwrap();
    assert_eq!(store.hosts(T0).unwrap()[0].dropped_samples, i64::MAX as u64);

    // Sequence numbers beyond i64::MAX (epochs past 2^31) survive the round trip.
    let big = u64::MAX - 5;
    assert_eq!(
        store.commit(&[tick(h, big - 1, T0 + 70_000)]).unwrap(),
        vec![CommitOutcome::Stored]
    );
    assert_eq!(
        store.commit(&[tick(h, 10, T0 + 80_000)]).unwrap(),
        vec![CommitOutcome::Duplicate]
    );
    assert_eq!(store.high_water(h).unwrap(), vec![(StreamId::Metrics, big)]);
}

/// Commit, then vanish without closing anything; the data must be there on reopening.
fn commits_survive_a_handle_that_is_never_closed(b: Backend) {
    let mut store = b.open();
    let h = register(&mut *store, "acme", "db1", T0);
    store
        .commit(&[tick(h, 0, T0), tick(h, 1, T0 + 10_000)])
        .unwrap();
    // No destructor runs: the connection is never closed, the WAL never checkpointed.
    std::mem::forget(store);
    let mut again = b.open();
    assert_eq!(again.high_water(h).unwrap(), vec![(StreamId::Metrics, 2)]);
    assert_eq!(all_points(&mut *again, "db1")[0].points.len(), 2);
}

const CRASH_ENV: &str = "AFTERCARE_STORE_CRASH_DB";

/// Run by `commits_survive_a_process_crash` in a child process: commit, then abort.
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os(CRASH_ENV) else {
        return;
    };
    let mut store = open_sqlite(Path::new(&path)).unwrap();
    let h = register(&mut store, "acme", "db1", T0);
    let batches: Vec<_> = (0..50)
        .map(|i| tick(h, i, T0 + i as i64 * 10_000))
        .collect();
    assert!(
        store
            .commit(&batches)
            .unwrap()
            .iter()
            .all(|o| *o == CommitOutcome::Stored)
    );
    std::process::abort();
}

#[test]
fn commits_survive_a_process_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--test-threads=1"])
        .env(CRASH_ENV, &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("the crashing child did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "the child must have aborted");
    assert!(
        Path::new(&format!("{}-wal", path.display())).exists(),
        "data is still only in the WAL, as after a real crash"
    );
    let mut store = open_sqlite(&path).unwrap();
    let h = store.hosts(T0).unwrap()[0].id;
    assert_eq!(store.high_water(h).unwrap(), vec![(StreamId::Metrics, 50)]);
    assert_eq!(all_points(&mut store, "db1")[0].points.len(), 50);
    let mode: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

/// Two and a half hours of ticks for two hosts.
fn fill(store: &mut dyn Store) -> (HostId, HostId) {
    let a = register(store, "acme", "db1", T0);
    let b = register(store, "acme", "web", T0);
    let mut batches = Vec::new();
    for i in 0..900u64 {
        let ts = T0 + i as i64 * 10_000 + (i % 5) as i64; // jittered by a few ms
        batches.push(tick(a, i, ts));
        batches.push(tick(b, i, ts + 3));
        if batches.len() >= 200 {
            store.commit(&batches).unwrap();
            batches.clear();
        }
    }
    store.commit(&batches).unwrap();
    (a, b)
}

fn compaction_keeps_every_point_and_is_idempotent(b: Backend) {
    let mut store = b.open();
    fill(&mut *store);
    let before_a = all_points(&mut *store, "db1");
    let before_b = all_points(&mut *store, "web");
    assert_eq!(before_a.len(), 4);
    assert_eq!(before_a[0].points.len(), 900);

    // At T0 + 2h05 only the first hour is closed (the second is in its grace period).
    let s = store.compact(T0 + 2 * HOUR_MS + 5 * MINUTE_MS).unwrap();
    assert_eq!((s.blocks_written, s.batches), (2, 720));
    assert_eq!(all_points(&mut *store, "db1"), before_a);
    let s = store.compact(T0 + 2 * HOUR_MS + 11 * MINUTE_MS).unwrap();
    assert_eq!((s.blocks_written, s.blocks_merged, s.batches), (2, 0, 720));
    assert_eq!(s.samples, 720 * 3 + 360);
    assert_eq!(s.duplicates, 0);
    // Again: nothing left to do.
    let s = store.compact(T0 + 2 * HOUR_MS + 11 * MINUTE_MS).unwrap();
    assert_eq!((s.blocks_written, s.batches), (0, 0));

    // Both hosts read back exactly, across blocks and the staged third hour.
    assert_eq!(all_points(&mut *store, "db1"), before_a);
    assert_eq!(all_points(&mut *store, "web"), before_b);
    let st = store.stats().unwrap();
    assert_eq!(st.blocks, 4);
    assert_eq!(st.staged_batches, 2 * 180);
    assert_eq!(st.block_samples + st.staged_samples, 2 * (900 * 3 + 450));

    // A window across a block boundary and into staging, with exclusive end.
    let w = store
        .query(
            "acme/db1",
            Some("cpu.total"),
            T0 + HOUR_MS - 20_000,
            T0 + 2 * HOUR_MS + 20_000,
        )
        .unwrap();
    let ts: Vec<i64> = w[0].points.iter().map(|p| p.0).collect();
    assert_eq!(ts.len(), 364);
    assert!(ts[0] >= T0 + HOUR_MS - 20_000 && *ts.last().unwrap() < T0 + 2 * HOUR_MS + 20_000);
    assert!(ts.windows(2).all(|w| w[0] < w[1]));

    // Closing everything and compacting in small steps gives the same answer.
    let mut steps = 0;
    loop {
        let s = store.compact_some(T0 + 4 * HOUR_MS, 1).unwrap();
        steps += 1;
        if !s.more {
            break;
        }
    }
    assert!(steps >= 2);
    assert_eq!(store.stats().unwrap().staged_batches, 0);
    assert_eq!(all_points(&mut *store, "db1"), before_a);
}

/// Where the bytes are, per table: the compacted blocks and rollups are there with the
/// hosts and series, indexes counted with their table, largest first.
fn table_sizes_name_our_tables_with_their_indexes(b: Backend) {
    let mut store = b.open();
    fill(&mut *store);
    store.compact(T0 + 4 * HOUR_MS).unwrap();
    let tables = store.table_sizes().unwrap();
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    for t in [
        "chunks",
        "rollups",
        "hosts",
        "series",
        "staging",
        "diagnostics",
    ] {
        assert!(names.contains(&t), "{t} in {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.contains("_by_") || n.contains("_p")),
        "indexes and partitions are counted with their table: {names:?}"
    );
    let size = |n: &str| tables.iter().find(|t| t.name == n).unwrap();
    assert!(size("chunks").total() > 0 && size("rollups").total() > 0);
    // The series table has its unique index.
    assert!(size("series").indexes > 0, "{:?}", size("series"));
    assert!(tables.windows(2).all(|w| w[0].total() >= w[1].total()));
    let blocks = store.stats().unwrap().block_bytes;
    assert!(
        size("chunks").total() >= blocks,
        "blocks {blocks} in {:?}",
        size("chunks")
    );
}

fn late_data_merges_into_existing_blocks(b: Backend) {
    let mut store = b.open();
    let (a, _) = fill(&mut *store);
    store.compact(T0 + 4 * HOUR_MS).unwrap();
    let before = all_points(&mut *store, "db1");

    // A late batch between two ticks of the first hour, one replacing a tick's values, and
    // a new series.
    let late = batch(
        a,
        5000,
        T0 + 15_000,
        vec![
            sample("cpu.total", "", MetricKind::Gauge, 99.0),
            sample("disk.io", "dev=sda", MetricKind::Counter, 1.0),
        ],
    );
    let replace = batch(
        a,
        5001,
        T0 + 20_002,
        vec![sample("cpu.total", "", MetricKind::Gauge, -1.0)],
    );
    store.commit(&[late, replace]).unwrap();
    let s = store.compact(T0 + 4 * HOUR_MS).unwrap();
    assert_eq!((s.blocks_written, s.blocks_merged, s.duplicates), (1, 1, 1));

    let after = all_points(&mut *store, "db1");
    let cpu = |v: &[SeriesPoints]| {
        v.iter()
            .find(|s| s.name == "cpu.total")
            .unwrap()
            .points
            .clone()
    };
    let mut want = cpu(&before);
    want.push((T0 + 15_000, 99.0));
    want.sort_by_key(|p| p.0);
    let i = want.iter().position(|p| p.0 == T0 + 20_002).unwrap();
    want[i].1 = -1.0;
    assert_eq!(cpu(&after), want);
    assert_eq!(after.len(), 5);
    let disk = after.iter().find(|s| s.name == "disk.io").unwrap();
    assert_eq!(disk.points, vec![(T0 + 15_000, 1.0)]);
    // Every other series is untouched.
    for s in before.iter().filter(|s| s.name != "cpu.total") {
        assert!(after.contains(s), "{} changed", s.name);
    }
}

#[test]
fn damaged_blocks_are_reported_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_sqlite(&db(&dir)).unwrap();
    fill(&mut store);
    store.compact(T0 + 4 * HOUR_MS).unwrap();
    rusqlite::Connection::open(db(&dir))
        .unwrap()
        .execute(
            "UPDATE chunks SET data = x'01ffffff' WHERE hour = ?1",
            [T0 + HOUR_MS],
        )
        .unwrap();
    let e = store.query("db1", None, 0, i64::MAX).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("damaged block of host") && msg.contains("backup"),
        "{msg}"
    );
    // Other hours still read.
    assert!(store.query("db1", None, T0, T0 + HOUR_MS).is_ok());
}

fn queries_select_hosts_and_metrics(b: Backend) {
    let mut store = b.open();
    let a = register(&mut *store, "acme", "web", T0);
    let b = register(&mut *store, "globex", "web", T0);
    store.commit(&[tick(a, 0, T0), tick(b, 0, T0)]).unwrap();
    store
        .commit(&[batch(
            b,
            2,
            T0 + 10_000,
            vec![sample("cpu.total", "", MetricKind::Gauge, 42.0)],
        )])
        .unwrap();

    let e = store.query("web", None, 0, i64::MAX).unwrap_err();
    assert!(matches!(e, StoreError::AmbiguousHost(_)));
    let msg = e.to_string();
    assert!(
        msg.contains("acme/web") && msg.contains("globex/web"),
        "{msg}"
    );
    let e = store.query("nope", None, 0, i64::MAX).unwrap_err();
    assert!(matches!(e, StoreError::UnknownHost(_)));
    assert!(e.to_string().contains("globex/web"), "{e}");

    let names = |v: Vec<SeriesPoints>| {
        v.into_iter()
            .map(|s| format!("{}{{{}}}", s.name, s.labels))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(store.query("acme/web", Some("cpu."), 0, i64::MAX).unwrap()),
        vec!["cpu.core{core=0}", "cpu.total{}"]
    );
    assert_eq!(
        names(store.query("acme/web", Some("fs.*"), 0, i64::MAX).unwrap()),
        vec!["fs.used{mount=/}"]
    );
    assert_eq!(
        names(store.query("acme/web", Some("cpu"), 0, i64::MAX).unwrap()),
        Vec::<String>::new(),
        "an exact name matches no prefix"
    );
    let g = store
        .query("globex/web", Some("cpu.total"), 0, i64::MAX)
        .unwrap();
    assert_eq!(g[0].points, vec![(T0, 0.0), (T0 + 10_000, 42.0)]);
    assert_eq!(g[0].kind, MetricKind::Gauge);
}

fn latest_values_and_rollups(b: Backend) {
    let mut store = b.open();
    let (a, _) = fill(&mut *store);
    let check_latest = |store: &mut dyn Store| {
        let l = store.latest("db1").unwrap();
        let got: Vec<(&str, i64, f64)> =
            l.iter().map(|x| (x.name.as_str(), x.ts, x.value)).collect();
        // Tick 899 is the newest; fs.used only comes on even ticks (898).
        let t = |i: i64| T0 + i * 10_000 + i % 5;
        assert_eq!(
            got,
            vec![
                ("cpu.core", t(899), 0.25 * 899.0),
                ("cpu.total", t(899), (899 % 7) as f64 * 1.5),
                ("fs.used", t(898), 5e9),
                ("net.rx_bytes", t(899), 899_000.0),
            ]
        );
    };
    check_latest(&mut *store);
    store.compact(T0 + 2 * HOUR_MS + 11 * MINUTE_MS).unwrap();
    check_latest(&mut *store);
    store.compact(T0 + 5 * HOUR_MS).unwrap();
    check_latest(&mut *store);
    // A late batch does not move the newest value back.
    store
        .commit(&[batch(
            a,
            10_000,
            T0 + 5,
            vec![sample("cpu.total", "", MetricKind::Gauge, 7.0)],
        )])
        .unwrap();
    store.compact(T0 + 5 * HOUR_MS).unwrap();
    check_latest(&mut *store);

    let r = store
        .rollups(
            "db1",
            Some("cpu.total"),
            Resolution::FiveMinutes,
            T0,
            T0 + HOUR_MS,
        )
        .unwrap();
    assert_eq!(r[0].buckets.len(), 12);
    let raw = store
        .query("db1", Some("cpu.total"), T0, T0 + 5 * MINUTE_MS)
        .unwrap();
    let vals: Vec<f64> = raw[0].points.iter().map(|p| p.1).collect();
    let b = r[0].buckets[0];
    assert_eq!(b.start, T0);
    assert_eq!(b.count, vals.len() as u64);
    assert_eq!(b.sum, vals.iter().sum::<f64>());
    assert_eq!(b.max, 9.0);
    assert_eq!(b.min, 0.0);

    // Counter rollups are of rates: 1000 per 10 s tick = 100/s, give or take the jitter.
    let r = store
        .rollups("db1", Some("net."), Resolution::Hour, T0, T0 + 2 * HOUR_MS)
        .unwrap();
    assert_eq!(r[0].buckets.len(), 2);
    let hours = store
        .rollups("db1", Some("net."), Resolution::Hour, 0, i64::MAX)
        .unwrap();
    assert_eq!(hours[0].buckets.len(), 3);
    let h0 = hours[0].buckets[0];
    assert_eq!(
        h0.count, 359,
        "the first point of an hour has no rate in it"
    );
    assert!((h0.mean() - 100.0).abs() < 0.1, "{h0:?}");
    assert!(h0.min > 99.9 && h0.max < 100.1);
}

#[test]
fn migrations_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);

    // Missing directory: an error naming it, nothing created.
    let missing = dir.path().join("no/such/dir/c.db");
    let e = open_sqlite(&missing).unwrap_err().to_string();
    assert!(
        e.contains("no/such/dir") && e.contains("does not exist"),
        "{e}"
    );
    let e = open_sqlite_readonly(&path).unwrap_err();
    assert!(matches!(e, StoreError::NoDatabase { .. }), "{e}");

    drop(open_sqlite(&path).unwrap());
    let raw = rusqlite::Connection::open(&path).unwrap();
    let v: u32 = raw
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert!(v >= 1);
    // Opening again is a no-op.
    drop(open_sqlite(&path).unwrap());

    raw.execute_batch("PRAGMA user_version = 99").unwrap();
    let e = open_sqlite(&path).unwrap_err();
    assert!(
        matches!(e, StoreError::SchemaTooNew { found: 99, .. }),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("schema version 99") && msg.contains("upgrade the collector"),
        "{msg}"
    );
    assert!(matches!(
        open_sqlite_readonly(&path),
        Err(StoreError::SchemaTooNew { .. })
    ));

    // Someone else's database is left alone.
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let e = open_sqlite(&other).unwrap_err();
    assert!(matches!(e, StoreError::NotOurs { .. }), "{e}");
}

fn readers_do_not_block_the_writer(b: Backend) {
    let mut store = b.open();
    let h = register(&mut *store, "acme", "db1", T0);
    store.commit(&[tick(h, 0, T0)]).unwrap();

    let mut reader = b.open_readonly();
    assert_eq!(all_points(&mut *reader, "db1").len(), 4);
    let e = reader.commit(&[tick(h, 1, T0 + 10_000)]).unwrap_err();
    assert!(matches!(e, StoreError::ReadOnly { .. }), "{e}");
    assert!(reader.compact(T0 + 10 * HOUR_MS).is_err());

    // A reader in the middle of a long read transaction keeps its snapshot while the
    // writer commits and compacts; a new read sees the commit.
    let mut write = || {
        let started = Instant::now();
        store.commit(&[tick(h, 1, T0 + 10_000)]).unwrap();
        store.compact(T0 + 10 * HOUR_MS).unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
    };
    const STAGED: &str = "SELECT count(*) FROM staging";
    match &b {
        Backend::Sqlite(_) => {
            let raw = rusqlite::Connection::open_with_flags(
                b.config_value(),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .unwrap();
            raw.execute_batch("BEGIN").unwrap();
            let n = || raw.query_row(STAGED, [], |r| r.get::<_, i64>(0)).unwrap();
            assert_eq!(n(), 1);
            write();
            assert_eq!(n(), 1);
            raw.execute_batch("COMMIT").unwrap();
        }
        Backend::Postgres(db) => {
            let mut raw = ::postgres::Client::connect(db.url(), ::postgres::NoTls).unwrap();
            let mut tx = raw
                .build_transaction()
                .isolation_level(::postgres::IsolationLevel::RepeatableRead)
                .start()
                .unwrap();
            let mut n = || tx.query_one(STAGED, &[]).unwrap().get::<_, i64>(0);
            assert_eq!(n(), 1);
            write();
            assert_eq!(n(), 1);
            tx.commit().unwrap();
        }
    }
    assert_eq!(all_points(&mut *reader, "db1")[0].points.len(), 2);
}

fn a_failed_commit_stores_nothing_and_leaves_no_stale_series(b: Backend) {
    let mut store = b.open();
    let h = register(&mut *store, "acme", "db1", T0);
    let new_series = |seq, ts| {
        batch(
            h,
            seq,
            ts,
            vec![sample("disk.errors", "dev=sda", MetricKind::Counter, 1.0)],
        )
    };
    // The second batch names an unknown host: the whole commit fails.
    let e = store
        .commit(&[new_series(1, T0), tick(4242, 0, T0)])
        .unwrap_err();
    assert!(matches!(e, StoreError::UnknownHostId(4242)), "{e}");
    assert!(store.high_water(h).unwrap().is_empty());
    assert_eq!(store.stats().unwrap().series, 0);
    // The series created inside the failed transaction must not linger in the writer.
    store.commit(&[new_series(1, T0 + 10_000)]).unwrap();
    let q = store.query("db1", None, 0, i64::MAX).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].points, vec![(T0 + 10_000, 1.0)]);
}

fn a_series_that_changes_kind_keeps_its_points(b: Backend) {
    let mut store = b.open();
    let h = register(&mut *store, "acme", "db1", T0);
    let s = |kind| vec![sample("procs.forks", "", kind, 5.0)];
    store
        .commit(&[
            batch(h, 1, T0, s(MetricKind::Gauge)),
            batch(h, 2, T0 + 10_000, s(MetricKind::Counter)),
        ])
        .unwrap();
    let q = store.query("db1", None, 0, i64::MAX).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].kind, MetricKind::Counter);
    assert_eq!(q[0].points.len(), 2);
    // The writer's cache agrees after a reopen.
    drop(store);
    let mut store = b.open();
    store
        .commit(&[batch(h, 3, T0 + 20_000, s(MetricKind::Counter))])
        .unwrap();
    assert_eq!(store.stats().unwrap().series, 1);
}

fn log_batch(host: HostId, seq: u64, lines: &[(i64, Severity, &str)]) -> PendingBatch {
    PendingBatch {
        host,
        stream: StreamId::Logs,
        seq,
        received_at: T0,
        data: BatchData::Logs(
            lines
                .iter()
                .enumerate()
                .map(|(i, &(ts, severity, line))| LogRecord {
                    source: "syslog".into(),
                    file: "/var/log/syslog".into(),
                    offset: i as u64 * 100,
                    read_at: ts + 5,
                    ts: Some(ts),
                    severity,
                    line: line.into(),
                    part: 0,
                })
                .collect(),
        ),
        loss: LossReport::default(),
    }
}

fn logs_are_stored_once_and_filtered_by_time_severity_and_pattern(b: Backend) {
    let mut st = b.open();
    let h = register(&mut *st, "acme", "db1", T0);
    let b1 = log_batch(
        h,
        1,
        &[
            (T0, Severity::Info, "sshd[1]: Accepted publickey for ann"),
            (
                T0 + 1000,
                Severity::Error,
                "kernel: EXT4-fs error (device sda1)",
            ),
        ],
    );
    let b2 = log_batch(
        h,
        2,
        &[(T0 + 2000, Severity::Warning, "nginx: upstream timed out")],
    );
    assert_eq!(
        st.commit(&[b1.clone(), b2.clone()]).unwrap(),
        vec![CommitOutcome::Stored, CommitOutcome::Stored]
    );
    // Redelivery: acknowledged, not stored again. Metrics and logs number separately.
    assert_eq!(st.commit(&[b2]).unwrap(), vec![CommitOutcome::Duplicate]);
    assert_eq!(
        st.commit(&[tick(h, 1, T0)]).unwrap(),
        vec![CommitOutcome::Stored]
    );
    let hw = st.high_water(h).unwrap();
    let metrics_seq = tick(h, 1, T0).seq;
    assert!(
        hw.contains(&(StreamId::Logs, 2)) && hw.contains(&(StreamId::Metrics, metrics_seq)),
        "{hw:?}"
    );

    let all = LogFilter {
        since: T0 - HOUR_MS,
        until: T0 + HOUR_MS,
        ..Default::default()
    };
    let got = st.logs("db1", &all).unwrap();
    assert_eq!(got.len(), 3);
    assert!(got.windows(2).all(|w| w[0].ts <= w[1].ts), "oldest first");

    let warn = LogFilter {
        min_severity: Some(Severity::Warning),
        ..all.clone()
    };
    let got = st.logs("acme/db1", &warn).unwrap();
    assert_eq!(
        got.iter().map(|r| r.severity).collect::<Vec<_>>(),
        [Severity::Error, Severity::Warning]
    );

    let grep = LogFilter {
        grep: Some(regex::Regex::new("(?i)ext4").unwrap()),
        ..all.clone()
    };
    assert_eq!(st.logs("db1", &grep).unwrap().len(), 1);

    let window = LogFilter {
        since: T0 + 500,
        until: T0 + 1500,
        ..all.clone()
    };
    assert_eq!(
        st.logs("db1", &window).unwrap()[0].line,
        "kernel: EXT4-fs error (device sda1)"
    );

    let newest = LogFilter { limit: 1, ..all };
    assert_eq!(
        st.logs("db1", &newest).unwrap()[0].severity,
        Severity::Warning
    );

    // Readers see the same through their own handle, and a crash loses nothing committed.
    drop(st);
    let mut ro = b.open_readonly();
    assert_eq!(
        ro.logs(
            "db1",
            &LogFilter {
                since: 0,
                until: i64::MAX,
                ..Default::default()
            }
        )
        .unwrap()
        .len(),
        3
    );
}

/// What schemas 4 (findings) to 10 (leases) added, dropped to turn a database back into an
/// older schema.
const UNDO_V4_TO_V10: &str = "DROP TABLE leases;
    ALTER TABLE hosts DROP COLUMN cert_expires; DROP TABLE reports; DROP TABLE audit; DROP TABLE diagnostics; DROP TABLE customer_contracts;
    DROP TABLE tokens; DROP INDEX rollups_by_age; DROP INDEX logs_by_age;
    ALTER TABLE rollups DROP COLUMN minutes;
    DROP TABLE finding_events; DROP TABLE findings; DROP TABLE silences; DROP TABLE rules_state;";

#[test]
fn a_version_1_database_is_upgraded_in_place_keeping_its_data() {
    let d = tempfile::tempdir().unwrap();
    let path = db(&d);
    {
        let mut st = open_sqlite(&path).unwrap();
        let h = register(&mut st, "acme", "db1", T0);
        st.commit(&[tick(h, 1, T0)]).unwrap();
    }
    // Turn it back into what a collector of schema 1 left behind.
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(&format!(
            "{UNDO_V4_TO_V10} DROP TABLE logs; DROP TABLE stream_loss; PRAGMA user_version = 1;"
        ))
        .unwrap();
    }
    assert!(matches!(
        open_sqlite_readonly(&path),
        Err(StoreError::SchemaTooOld { found: 1, .. })
    ));
    let mut st = open_sqlite(&path).unwrap();
    assert_eq!(all_points(&mut st, "db1").len(), tick(1, 1, T0).data_len());
    let h = register(&mut st, "acme", "db1", T0);
    let b = log_batch(h, 1, &[(T0, Severity::Error, "disk on fire")]);
    assert_eq!(st.commit(&[b]).unwrap(), vec![CommitOutcome::Stored]);
}

#[test]
fn a_version_2_database_is_upgraded_in_place_keeping_its_data() {
    let d = tempfile::tempdir().unwrap();
    let path = db(&d);
    let lost = LossReport {
        dropped_batches: 3,
        dropped_samples: 120,
        discarded_by_revocation: 1,
    };
    {
        let mut st = open_sqlite(&path).unwrap();
        let h = register(&mut st, "acme", "db1", T0);
        let mut m = tick(h, 1, T0);
        m.loss = lost;
        let l = log_batch(h, 1, &[(T0, Severity::Error, "disk on fire")]);
        st.commit(&[m, l]).unwrap();
    }
    // Turn it back into what a collector of schema 2 left behind: totals per host only,
    // log batches as plain bincode.
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        let plain = bincode::serde::encode_to_vec(
            log_batch(1, 1, &[(T0, Severity::Error, "disk on fire")]).logs(),
            bincode::config::standard(),
        )
        .unwrap();
        c.execute("UPDATE logs SET data = ?1", [plain]).unwrap();
        c.execute_batch(&format!(
            "{UNDO_V4_TO_V10}
             DROP TABLE stream_loss;
             DROP INDEX logs_host_time;
             ALTER TABLE logs DROP COLUMN codec;
             CREATE INDEX logs_host_time ON logs (host_id, ts_max);
             PRAGMA user_version = 2;"
        ))
        .unwrap();
    }
    assert!(matches!(
        open_sqlite_readonly(&path),
        Err(StoreError::SchemaTooOld { found: 2, .. })
    ));
    let mut st = open_sqlite(&path).unwrap();
    assert_eq!(all_points(&mut st, "db1").len(), tick(1, 1, T0).data_len());
    let all = LogFilter {
        since: 0,
        until: i64::MAX,
        ..Default::default()
    };
    assert_eq!(st.logs("db1", &all).unwrap()[0].line, "disk on fire");
    assert_eq!(st.count_logs("db1", &all).unwrap(), 1);
    // The old totals stay, and since their scope was never recorded they say so.
    let status = &st.hosts(T0).unwrap()[0];
    assert_eq!(status.dropped_samples, 120);
    assert_eq!(
        status.loss.iter().collect::<Vec<_>>(),
        [(&UNATTRIBUTED.to_string(), &lost)]
    );
    // New reports are kept per scope beside them.
    let h = register(&mut st, "acme", "db1", T0);
    let mut l = log_batch(h, 2, &[(T0 + 1, Severity::Info, "cooled down")]);
    l.loss.dropped_batches = 1;
    l.loss.dropped_samples = 50;
    assert_eq!(st.commit(&[l]).unwrap(), vec![CommitOutcome::Stored]);
    drop(st);
    let status = &open_sqlite_readonly(&path).unwrap().hosts(T0).unwrap()[0];
    assert_eq!((status.dropped_batches, status.dropped_samples), (4, 170));
    assert_eq!(status.loss[UNATTRIBUTED], lost);
    assert_eq!(status.loss["logs"].dropped_samples, 50);
    assert_eq!(status.loss.len(), 2, "{:?}", status.loss);
}

fn loss_is_kept_per_scope_and_adds_up_to_the_host_totals(b: Backend) {
    let mut st = b.open();
    let h = register(&mut *st, "acme", "db1", T0);
    let other = register(&mut *st, "acme", "web1", T0);
    assert!(st.hosts(T0).unwrap().iter().all(|s| s.loss.is_empty()));

    let loss = |b, s, r| LossReport {
        dropped_batches: b,
        dropped_samples: s,
        discarded_by_revocation: r,
    };
    let mut m1 = tick(h, 1, T0);
    m1.loss = loss(2, 200, 0);
    let mut m2 = tick(h, 2, T0 + 10_000);
    m2.loss = loss(1, 100, 1);
    let mut l1 = log_batch(h, 1, &[(T0, Severity::Info, "a")]);
    l1.loss = loss(4, 900, 0);
    let mut l2 = log_batch(h, 2, &[(T0 + 1, Severity::Info, "b")]);
    l2.loss = loss(0, 0, 5);
    // Redelivered within the commit and in a later one: counted once.
    st.commit(&[m1.clone(), l1.clone(), m1.clone(), m2])
        .unwrap();
    st.commit(&[l1, l2, m1]).unwrap();

    let hosts = st.hosts(T0).unwrap();
    let s = hosts.iter().find(|s| s.id == h).unwrap();
    assert_eq!(s.loss["metrics"], loss(3, 300, 1));
    assert_eq!(s.loss["logs"], loss(4, 900, 5));
    assert_eq!(s.loss.len(), 2, "{:?}", s.loss);
    assert_eq!(
        (
            s.dropped_batches,
            s.dropped_samples,
            s.discarded_by_revocation
        ),
        (7, 1200, 6)
    );
    let o = hosts.iter().find(|s| s.id == other).unwrap();
    assert!(o.loss.is_empty(), "another host's loss: {:?}", o.loss);

    // Saturated totals stay consistent: nothing is invented as unattributed.
    let mut huge = log_batch(h, 3, &[(T0 + 2, Severity::Info, "c")]);
    huge.loss.dropped_samples = u64::MAX;
    st.commit(&[huge.clone()]).unwrap();
    huge.seq = 4;
    st.commit(&[huge]).unwrap();
    let s = st
        .hosts(T0)
        .unwrap()
        .into_iter()
        .find(|s| s.id == h)
        .unwrap();
    assert_eq!(s.loss["logs"].dropped_samples, i64::MAX as u64);
    assert!(!s.loss.contains_key(UNATTRIBUTED), "{:?}", s.loss);

    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["loss"]["metrics"]["dropped_batches"], 3);
}

fn counting_logs_matches_reading_them(b: Backend) {
    let mut st = b.open();
    let h = register(&mut *st, "acme", "db1", T0);
    // Ten batches of ten lines a second apart; batches overlap their neighbours in time, and
    // one batch's lines come out of order, so windows cut through batches every way.
    let sev = [Severity::Info, Severity::Warning, Severity::Error];
    let mut batches = Vec::new();
    for b in 0..10u64 {
        let lines: Vec<(i64, Severity, String)> = (0..10u64)
            .map(|i| {
                let k = b * 10 + i;
                let t = if b == 4 { 9 - i } else { i };
                (
                    T0 + (b * 8 + t) as i64 * 1000,
                    sev[(k % 3) as usize],
                    format!("line {k}"),
                )
            })
            .collect();
        let refs: Vec<(i64, Severity, &str)> =
            lines.iter().map(|(t, s, l)| (*t, *s, l.as_str())).collect();
        batches.push(log_batch(h, b + 1, &refs));
    }
    st.commit(&batches).unwrap();
    let filters = |since: i64, until: i64| {
        let base = LogFilter {
            since,
            until,
            ..Default::default()
        };
        [
            base.clone(),
            LogFilter {
                min_severity: Some(Severity::Warning),
                ..base.clone()
            },
            LogFilter {
                grep: Some(regex::Regex::new("line [0-9]*7$").unwrap()),
                ..base.clone()
            },
            // A limit does not limit a count.
            LogFilter { limit: 3, ..base },
        ]
    };
    let mut checked = 0;
    for since in (-2..100).step_by(3) {
        for until in [since, since + 1, since + 17, 200, i64::MAX / 1000] {
            for f in filters(T0 + since * 1000, T0.saturating_add(until * 1000)) {
                let unlimited = LogFilter {
                    limit: 0,
                    ..f.clone()
                };
                let every = st.logs("db1", &unlimited).unwrap();
                let want = every.len() as u64;
                // A limit keeps the newest, whichever batches hold them.
                for limit in [1, 3, 25] {
                    let newest = st
                        .logs(
                            "db1",
                            &LogFilter {
                                limit,
                                ..unlimited.clone()
                            },
                        )
                        .unwrap();
                    assert_eq!(
                        newest[..],
                        every[every.len().saturating_sub(limit)..],
                        "limit {limit}, since {since} s, until {until} s, {f:?}"
                    );
                }
                assert_eq!(
                    st.count_logs("acme/db1", &f).unwrap(),
                    want,
                    "since {since} s, until {until} s, {f:?}"
                );
                checked += want;
            }
        }
    }
    assert!(checked > 1000, "the windows matched something: {checked}");
    let all = LogFilter {
        since: i64::MIN,
        until: i64::MAX,
        ..Default::default()
    };
    assert_eq!(st.count_logs("db1", &all).unwrap(), 100);
    assert!(matches!(
        st.count_logs("nosuch", &all),
        Err(StoreError::UnknownHost(_))
    ));
}

#[test]
fn log_batches_are_kept_compressed_and_damage_is_named() {
    let d = tempfile::tempdir().unwrap();
    let path = db(&d);
    let mut st = open_sqlite(&path).unwrap();
    let h = register(&mut st, "acme", "db1", T0);
    let lines: Vec<String> = (0..500)
        .map(|i| {
            format!(
                "2026-03-02T00:00:{:02}.{i:03}+00:00 web-01 nginx[812]: 10.0.3.{} - - \
                 \"GET /api/v1/items/{i} HTTP/1.1\" 200 {} \"-\" \"curl/7.88.1\"",
                i % 60,
                i % 250,
                1000 + i * 7
            )
        })
        .collect();
    let refs: Vec<(i64, Severity, &str)> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| (T0 + i as i64, Severity::Info, l.as_str()))
        .collect();
    st.commit(&[log_batch(h, 1, &refs)]).unwrap();
    let stats = st.stats().unwrap();
    let raw: usize = lines.iter().map(String::len).sum();
    assert_eq!(stats.log_records, 500);
    assert!(
        stats.log_bytes * 3 < raw as u64,
        "{} bytes stored for {raw} bytes of lines",
        stats.log_bytes
    );
    let all = LogFilter {
        since: 0,
        until: i64::MAX,
        ..Default::default()
    };
    let got = st.logs("db1", &all).unwrap();
    assert_eq!(
        got.iter().map(|r| r.line.as_str()).collect::<Vec<_>>(),
        lines
    );
    drop(st);

    let raw = rusqlite::Connection::open(&path).unwrap();
    let mut ro = open_sqlite_readonly(&path).unwrap();
    for (damage, detail) in [
        ("UPDATE logs SET data = x'28b52ffd00'", "zstd"),
        ("UPDATE logs SET codec = 7", "unknown codec 7"),
    ] {
        raw.execute_batch(damage).unwrap();
        let e = ro.logs("db1", &all).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("log batch 1") && msg.contains(detail), "{msg}");
    }
    // Counting whole batches does not read them: the count stands.
    assert_eq!(ro.count_logs("db1", &all).unwrap(), 500);
}

#[test]
fn log_blocks_are_stored_as_they_came_and_older_rows_still_read() {
    let d = tempfile::tempdir().unwrap();
    let path = db(&d);
    let mut st = open_sqlite(&path).unwrap();
    let h = register(&mut st, "acme", "db1", T0);
    let records = log_batch(
        h,
        1,
        &[
            (T0 + 5, Severity::Warning, "second by time"),
            (T0, Severity::Error, "first by time"),
        ],
    )
    .logs();
    // What ingest hands the store for a protocol version 2 batch.
    let plain = logblock::from_records(&records);
    let block = logblock::compress(&plain).unwrap();
    let summary = logblock::summarize(&plain).unwrap().unwrap();
    let batch = PendingBatch {
        data: BatchData::LogBlock(aftercare_collector::store::LogBlock {
            block: block.clone(),
            summary,
        }),
        ..log_batch(h, 2, &[])
    };
    st.commit(&[batch]).unwrap();
    let all = LogFilter {
        since: T0 - HOUR_MS,
        until: T0 + HOUR_MS,
        ..Default::default()
    };
    let got = st.logs("db1", &all).unwrap();
    assert_eq!(
        got,
        vec![records[1].clone(), records[0].clone()],
        "oldest first"
    );
    drop(st);
    let raw = rusqlite::Connection::open(&path).unwrap();
    let (codec, data, worst): (i64, Vec<u8>, i64) = raw
        .query_row("SELECT codec, data, worst FROM logs", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(
        (codec, worst),
        (2, 3),
        "a block, filed under its worst line (error)"
    );
    assert_eq!(data, block, "stored as it came");

    // A row schema 3 wrote (bincode compressed with zstd, codec 1) reads as before.
    let v1 = zstd::bulk::compress(
        &bincode::serde::encode_to_vec(&records, bincode::config::standard()).unwrap(),
        1,
    )
    .unwrap();
    raw.execute("UPDATE logs SET codec = 1, data = ?1", [v1])
        .unwrap();
    let mut ro = open_sqlite_readonly(&path).unwrap();
    assert_eq!(ro.logs("db1", &all).unwrap(), got);
}

trait DataLen {
    fn data_len(&self) -> usize;
    fn logs(&self) -> Vec<LogRecord>;
}

impl DataLen for PendingBatch {
    fn data_len(&self) -> usize {
        match &self.data {
            BatchData::Metrics(s) => s.samples.len(),
            BatchData::Logs(r) => r.len(),
            BatchData::LogBlock(b) => b.summary.records as usize,
        }
    }
    fn logs(&self) -> Vec<LogRecord> {
        match &self.data {
            BatchData::Logs(r) => r.clone(),
            BatchData::LogBlock(b) => {
                let mut u = logblock::Unpacker::new().unwrap();
                logblock::decode_all(u.unpack(&b.block, 1 << 26).unwrap()).unwrap()
            }
            BatchData::Metrics(_) => Vec::new(),
        }
    }
}

fn retention_drops_raw_hours_folds_old_rollups_to_hourly_and_drops_what_is_past_every_tier(
    b: Backend,
) {
    use aftercare_collector::store::{Resolution, Retention};
    let mut st = b.open();
    let h = register(&mut *st, "acme", "db1", T0);
    const DAY: i64 = 24 * HOUR_MS;
    let now = T0 + 1000 * DAY;
    // An hour of ticks (every 30 s) at each age: recent, past raw, past 5-minute, past all.
    let ages = [DAY, 20 * DAY, 100 * DAY, 800 * DAY];
    let mut seq = 0;
    for age in ages {
        let hour = (now - age) / HOUR_MS * HOUR_MS;
        let batches: Vec<_> = (0..120)
            .map(|k| {
                seq += 1;
                tick(h, seq, hour + k * 30_000)
            })
            .collect();
        st.commit(&batches).unwrap();
    }
    st.commit(&[log_batch(
        h,
        1,
        &[(now - 200 * DAY, Severity::Error, "old")],
    )])
    .unwrap();
    st.commit(&[log_batch(h, 2, &[(now - DAY, Severity::Error, "new")])])
        .unwrap();
    st.compact(now).unwrap();
    let hour_of = |age: i64| (now - age) / HOUR_MS * HOUR_MS;
    let raw = |st: &mut dyn Store, age: i64| {
        st.query(
            "db1",
            Some("cpu.total"),
            hour_of(age),
            hour_of(age) + HOUR_MS,
        )
        .unwrap()
        .iter()
        .map(|s| s.points.len())
        .sum::<usize>()
    };
    let rollup = |st: &mut dyn Store, res: Resolution, age: i64| {
        st.rollups(
            "db1",
            Some("cpu.total"),
            res,
            hour_of(age),
            hour_of(age) + HOUR_MS,
        )
        .unwrap()
        .into_iter()
        .flat_map(|s| s.buckets)
        .collect::<Vec<_>>()
    };
    let hourly_before = rollup(&mut *st, Resolution::Hour, 100 * DAY);
    assert_eq!(hourly_before.len(), 1);
    assert_eq!(
        rollup(&mut *st, Resolution::FiveMinutes, 100 * DAY).len(),
        12
    );

    // Small steps, as the writer takes them.
    let mut total = aftercare_collector::store::RetentionStats::default();
    loop {
        let s = st.retain_some(now, &Retention::default(), 1).unwrap();
        total.raw_hours += s.raw_hours;
        total.folded_hours += s.folded_hours;
        total.rollup_hours += s.rollup_hours;
        total.log_batches += s.log_batches;
        if !s.more {
            break;
        }
    }
    assert_eq!(
        (
            total.raw_hours,
            total.folded_hours,
            total.rollup_hours,
            total.log_batches
        ),
        (3, 1, 1, 1),
        "{total:?}"
    );
    assert_eq!(raw(&mut *st, DAY), 120, "recent raw points stay");
    assert_eq!(raw(&mut *st, 20 * DAY), 0, "raw points past 14 days go");
    assert_eq!(
        rollup(&mut *st, Resolution::FiveMinutes, 20 * DAY).len(),
        12
    );
    assert!(
        rollup(&mut *st, Resolution::FiveMinutes, 100 * DAY).is_empty(),
        "past 90 days only hourly aggregates remain"
    );
    assert_eq!(
        rollup(&mut *st, Resolution::Hour, 100 * DAY),
        hourly_before,
        "folding keeps the hour's count, min, max and sum"
    );
    assert!(
        rollup(&mut *st, Resolution::Hour, 800 * DAY).is_empty(),
        "past 2 years: gone"
    );
    let all = LogFilter {
        since: 0,
        until: i64::MAX,
        ..Default::default()
    };
    let lines: Vec<String> = st
        .logs("db1", &all)
        .unwrap()
        .into_iter()
        .map(|r| r.line)
        .collect();
    assert_eq!(lines, ["new"]);
    // Nothing more to do the second time.
    assert_eq!(
        st.retain_some(now, &Retention::default(), 100).unwrap(),
        Default::default()
    );
}

both_backends!(
    hosts_are_upserted_by_customer_and_host,
    redelivered_batches_are_stored_once,
    commits_survive_a_handle_that_is_never_closed,
    compaction_keeps_every_point_and_is_idempotent,
    late_data_merges_into_existing_blocks,
    queries_select_hosts_and_metrics,
    latest_values_and_rollups,
    readers_do_not_block_the_writer,
    a_failed_commit_stores_nothing_and_leaves_no_stale_series,
    a_series_that_changes_kind_keeps_its_points,
    logs_are_stored_once_and_filtered_by_time_severity_and_pattern,
    loss_is_kept_per_scope_and_adds_up_to_the_host_totals,
    counting_logs_matches_reading_them,
    retention_drops_raw_hours_folds_old_rollups_to_hourly_and_drops_what_is_past_every_tier,
    a_lease_has_one_holder_and_is_taken_over_when_it_lapses,
    host_updates_apply_in_order_each_with_its_own_outcome,
    table_sizes_name_our_tables_with_their_indexes,
);

// PostgreSQL only: what sharing one database between collectors needs.

fn pg_client(db: &aftercare_pgtest::TestDb) -> ::postgres::Client {
    ::postgres::Client::connect(db.url(), ::postgres::NoTls).unwrap()
}

#[test]
fn postgres_migrations_and_refusals() {
    let db = aftercare_pgtest::database();
    let b = Backend::Postgres(db);
    let Backend::Postgres(db) = &b else {
        unreachable!()
    };
    // An empty database is not ours yet: readers say how to create it.
    let e = b.database().open_readonly().unwrap_err();
    assert!(matches!(e, StoreError::NoDatabase { .. }), "{e}");
    assert!(e.to_string().contains("aftercare-collector serve"), "{e}");
    drop(b.open());
    drop(b.open());
    let mut raw = pg_client(db);
    let v: i32 = raw
        .query_one("SELECT version FROM aftercare_schema", &[])
        .unwrap()
        .get(0);
    assert!(v >= 1);
    drop(b.open_readonly());

    raw.execute("UPDATE aftercare_schema SET version = 99", &[])
        .unwrap();
    for e in [
        b.database().open().unwrap_err(),
        b.database().open_readonly().unwrap_err(),
    ] {
        assert!(
            matches!(e, StoreError::SchemaTooNew { found: 99, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("upgrade the collector"), "{e}");
    }

    // Someone else's database is left alone.
    let other = aftercare_pgtest::database();
    pg_client(&other)
        .batch_execute("CREATE TABLE invoices (x int)")
        .unwrap();
    let e = aftercare_collector::store::Database::parse(other.url())
        .open()
        .unwrap_err();
    assert!(matches!(e, StoreError::NotOurs { .. }), "{e}");

    // A server that is not there: the error names the URL, never its password.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://ac:hunter2@127.0.0.1:{port}/x?connect_timeout=2");
    let e = aftercare_collector::store::Database::parse(&url)
        .open()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("127.0.0.1:{port}")) && !e.contains("hunter2"),
        "{e}"
    );
}

/// Collectors starting together on an empty database: two race to create the schema
/// while readers look again and again; nobody takes the fresh tables for another
/// program's, and everyone ends up open.
#[test]
fn postgres_collectors_starting_together_all_open_a_fresh_database() {
    use aftercare_collector::store::Database;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for _ in 0..4 {
        let db = aftercare_pgtest::database();
        let url = db.url();
        std::thread::scope(|s| {
            let readers: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        let mut looks = 0u32;
                        loop {
                            assert!(std::time::Instant::now() < deadline, "still not open");
                            looks += 1;
                            match Database::parse(url).open_readonly() {
                                Ok(_) => return looks,
                                Err(
                                    StoreError::NoDatabase { .. } | StoreError::SchemaTooOld { .. },
                                ) => {}
                                Err(e) => panic!("look {looks}: {e}"),
                            }
                        }
                    })
                })
                .collect();
            let writers: Vec<_> = (0..2)
                .map(|_| s.spawn(|| Database::parse(url).open().map(drop)))
                .collect();
            for w in writers {
                w.join().unwrap().unwrap();
            }
            for r in readers {
                assert!(r.join().unwrap() >= 1);
            }
        });
    }
}

/// Two collectors receive the same batches at once (an agent reconnected to the other
/// while its first commit was in flight): each batch is stored once, and exactly one of
/// the two commits reports it stored.
#[test]
fn postgres_a_batch_committed_by_two_collectors_at_once_is_stored_once() {
    let b = Backend::postgres();
    let mut st = b.open();
    let h = register(&mut *st, "acme", "db1", T0);
    let rounds = 40u64;
    let run = |b: &Backend| {
        let mut st = b.open();
        let mut stored = Vec::new();
        for i in 0..rounds {
            let out = st.commit(&[tick(h, i, T0 + i as i64 * 10_000)]).unwrap();
            stored.push(out[0] == CommitOutcome::Stored);
        }
        stored
    };
    let (a, c) = std::thread::scope(|s| {
        let a = s.spawn(|| run(&b));
        let c = s.spawn(|| run(&b));
        (a.join().unwrap(), c.join().unwrap())
    });
    for i in 0..rounds as usize {
        assert!(
            a[i] ^ c[i],
            "batch {i}: stored by {} commits",
            a[i] as u8 + c[i] as u8
        );
    }
    let points = all_points(&mut *st, "db1");
    let total = points.iter().find(|p| p.name == "cpu.total").unwrap();
    assert_eq!(total.points.len(), rounds as usize);
    assert_eq!(st.stats().unwrap().staged_batches, rounds);
    assert_eq!(st.high_water(h).unwrap(), vec![(StreamId::Metrics, rounds)]);
}

/// A commit that waits for another collector's commit of the same host reads the marks
/// that commit left: the batch it stored is a duplicate here, not stored twice. (The race
/// the test above meets by chance, made certain: the other collector holds the host's lock
/// until this commit is seen waiting for it.)
#[test]
fn postgres_a_commit_that_waited_for_another_sees_what_it_stored() {
    let b = Backend::postgres();
    let Backend::Postgres(db) = &b else {
        unreachable!()
    };
    let mut st = b.open();
    let h = register(&mut *st, "acme", "db1", T0);
    // The other collector, mid-commit of batch 1 (seq 1): host locked, mark written.
    let mut other = pg_client(db);
    let mut tx = other.transaction().unwrap();
    tx.execute(
        "SELECT id FROM hosts WHERE id = $1 FOR NO KEY UPDATE",
        &[&h],
    )
    .unwrap();
    tx.execute(
        "INSERT INTO streams (host_id, stream, high_seq) VALUES ($1, $2, 1)",
        &[&h, &i32::from(StreamId::Metrics.code())],
    )
    .unwrap();
    let holder: i32 = tx.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    std::thread::scope(|s| {
        let waiting = s.spawn(|| st.commit(&[tick(h, 0, T0)]).unwrap());
        // Until this collector's commit waits on the other's lock (bounded).
        let mut watcher = pg_client(db);
        let t = Instant::now();
        loop {
            let blocked: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE $1 = ANY(pg_blocking_pids(pid))",
                    &[&holder],
                )
                .unwrap()
                .get(0);
            if blocked > 0 {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the commit never waited for the other collector's lock"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        tx.commit().unwrap();
        assert_eq!(waiting.join().unwrap(), vec![CommitOutcome::Duplicate]);
    });
    assert_eq!(st.stats().unwrap().staged_batches, 0);
    assert_eq!(st.high_water(h).unwrap(), vec![(StreamId::Metrics, 1)]);
}

/// Compaction and retention run by one collector at a time: another finds the lock held
/// and does nothing; retention drops partitions that are wholly past their age.
#[test]
fn postgres_compaction_is_exclusive_and_retention_drops_partitions() {
    use aftercare_collector::store::Retention;
    const DAY: i64 = 24 * HOUR_MS;
    let b = Backend::postgres();
    let Backend::Postgres(db) = &b else {
        unreachable!()
    };
    let mut st = b.open();
    let h = register(&mut *st, "acme", "db1", T0);
    // Ticks every 30 minutes over four days.
    let batches: Vec<_> = (0..4 * 48)
        .map(|i| tick(h, i, T0 + i as i64 * 30 * MINUTE_MS))
        .collect();
    st.commit(&batches).unwrap();
    let now = T0 + 4 * DAY + HOUR_MS;

    // Another collector holding the compaction lock: this one steps aside.
    let mut other = pg_client(db);
    let mut tx = other.transaction().unwrap();
    tx.execute("SELECT pg_advisory_xact_lock(1097233476)", &[])
        .unwrap();
    let s = st.compact(now).unwrap();
    assert_eq!((s.samples, s.blocks_written), (0, 0));
    tx.rollback().unwrap();
    let s = st.compact(now).unwrap();
    assert_eq!(s.batches, 4 * 48);

    let partitions = |c: &mut ::postgres::Client, parent: &str| -> Vec<String> {
        let mut v: Vec<String> = c
            .query(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = to_regclass($1)",
                &[&parent],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        v.sort();
        v
    };
    let days = partitions(&mut other, "chunks");
    assert_eq!(days.len(), 4, "{days:?}");
    // Keep raw data for two days: the two oldest days' partitions go whole.
    let r = Retention {
        raw_ms: 2 * DAY,
        ..Retention::default()
    };
    let stats = st.retain_some(now, &r, 1000).unwrap();
    let left = partitions(&mut other, "chunks");
    assert_eq!(left, days[2..].to_vec());
    // Hours are dropped whole: the third day keeps its hours newer than the cutoff.
    let cut = now - 2 * DAY - HOUR_MS;
    let kept: i64 = other
        .query_one("SELECT count(*) FROM chunks", &[])
        .unwrap()
        .get(0);
    assert_eq!(stats.raw_hours as i64 + kept, 4 * 24);
    let oldest: i64 = other
        .query_one("SELECT min(hour) FROM chunks", &[])
        .unwrap()
        .get(0);
    assert!(oldest > cut, "{oldest} <= {cut}");
    // What is kept still reads.
    let q = st.query("db1", Some("cpu.total"), 0, i64::MAX).unwrap();
    assert_eq!(q[0].points.len() as i64, kept * 2);
    // Late data for a dropped day gets its partition back.
    st.commit(&[tick(h, 1000, T0 + 5 * MINUTE_MS)]).unwrap();
    st.compact(now).unwrap();
    assert_eq!(partitions(&mut other, "chunks").len(), 3);
}

/// A lease has one holder at a time; another takes it once it expires or is given up.
fn a_lease_has_one_holder_and_is_taken_over_when_it_lapses(b: Backend) {
    let mut a = b.open();
    let mut c = b.open();
    // PostgreSQL keeps time by its own clock: real time has to pass.
    let ttl = 400;
    let mut now = T0;
    assert!(a.lease("rules", "a", ttl, now).unwrap());
    assert!(!c.lease("rules", "c", ttl, now).unwrap());
    // Renewing keeps it; another lease is independent.
    assert!(a.lease("rules", "a", ttl, now + 100).unwrap());
    assert!(c.lease("reports", "c", ttl, now).unwrap());
    // Lapsed: taken over.
    std::thread::sleep(Duration::from_millis(ttl as u64 + 200));
    now += ttl + 200;
    assert!(c.lease("rules", "c", ttl, now).unwrap());
    assert!(!a.lease("rules", "a", ttl, now).unwrap());
    // Given up: taken at once; giving up one not held changes nothing.
    a.release_lease("rules", "a").unwrap();
    assert!(!a.lease("rules", "a", ttl, now).unwrap());
    c.release_lease("rules", "c").unwrap();
    assert!(a.lease("rules", "a", ttl, now).unwrap());
    // Readers cannot hold one.
    assert!(b.open_readonly().lease("rules", "r", ttl, now).is_err());
}

//! The writer: one thread owns the store and commits batches in groups.
//!
//! Ingest tasks hand it batches with a reply channel. It takes whatever is queued (up to a
//! bound) and commits it in one transaction — one fsync for the group — and only then
//! answers, so an agent's batch is acknowledged only once it is durable.

use crate::store::{
    CommitOutcome, HostHello, HostId, HostUpdate, HostUpdated, PendingBatch, Store,
};
use aftercare_shared::consent::ConsentRecord;
use aftercare_shared::diag::ProbeInfo;
use aftercare_shared::protocol::{Hello, Identity, StreamId};
use aftercare_shared::time_fmt::now_millis;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info};

pub type Reply<T> = oneshot::Sender<Result<T, String>>;

pub enum Request {
    Register {
        identity: Identity,
        hello: Box<Hello>,
        /// When the certificate it connected with expires.
        cert_expires: Option<i64>,
        reply: Reply<(HostId, Vec<(StreamId, u64)>)>,
    },
    Consent {
        host: HostId,
        record: ConsentRecord,
    },
    Disconnected {
        host: HostId,
    },
    /// The probes the host's agent advertised (kept only in a shared database).
    Probes {
        host: HostId,
        probes: Vec<ProbeInfo>,
    },
    Batch {
        batch: Box<PendingBatch>,
        reply: Reply<CommitOutcome>,
    },
    Compact,
}

/// Cheap to clone; the writer stops when the last handle is dropped.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Request>,
}

#[derive(Debug, thiserror::Error)]
#[error("the store writer has stopped")]
pub struct WriterGone;

impl WriterHandle {
    /// Queue a request; waits while the queue is full, which is how a slow disk slows the
    /// agents down instead of growing memory.
    pub async fn send(&self, req: Request) -> Result<(), WriterGone> {
        self.tx.send(req).await.map_err(|_| WriterGone)
    }

    pub async fn register(
        &self,
        identity: Identity,
        hello: Hello,
        cert_expires: Option<i64>,
    ) -> Result<(HostId, Vec<(StreamId, u64)>), String> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Register {
            identity,
            hello: Box::new(hello),
            cert_expires,
            reply,
        })
        .await
        .map_err(|e| e.to_string())?;
        rx.await.map_err(|_| WriterGone.to_string())?
    }

    /// Queue a batch; the receiver answers once it is committed.
    pub async fn commit(
        &self,
        batch: PendingBatch,
    ) -> Result<oneshot::Receiver<Result<CommitOutcome, String>>, WriterGone> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Batch {
            batch: Box::new(batch),
            reply,
        })
        .await?;
        Ok(rx)
    }

    /// Requests waiting for the writer thread, read without keeping the writer alive.
    pub fn queue_probe(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let weak = self.tx.downgrade();
        move || {
            weak.upgrade()
                .map_or(0, |tx| (tx.max_capacity() - tx.capacity()) as u64)
        }
    }
}

pub struct WriterOptions {
    pub max_batches_per_commit: usize,
    pub queue_depth: usize,
    pub compact_every: Duration,
    pub retention: crate::store::Retention,
    /// Commit durations and group sizes, for `/metrics`.
    pub telemetry: std::sync::Arc<crate::telemetry::Telemetry>,
}

/// How often retention runs (it has little to do between two runs).
const RETAIN_EVERY: Duration = Duration::from_secs(3600);
/// Host-hours folded per retention step: a few ms each, so commits never wait long.
const RETAIN_STEP: usize = 200;

/// Start the writer thread. It runs until every handle is dropped, then commits what is
/// queued and returns.
pub fn spawn(
    mut store: Box<dyn Store>,
    opts: WriterOptions,
) -> (WriterHandle, std::thread::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Request>(opts.queue_depth);
    let handle = WriterHandle { tx };
    let join = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            let mut last_compact = Instant::now();
            // Compaction (then retention) runs in steps, only while no request is waiting:
            // ingest first.
            let mut compacting = false;
            let mut retaining = false;
            let mut last_retain: Option<Instant> = None;
            let mut batches: Vec<PendingBatch> = Vec::new();
            let mut replies: Vec<Reply<CommitOutcome>> = Vec::new();
            let mut updates: Vec<Request> = Vec::new();
            loop {
                let first = if compacting || retaining {
                    match rx.try_recv() {
                        Ok(r) => r,
                        Err(mpsc::error::TryRecvError::Empty) => {
                            if compacting {
                                compacting = compact_step(store.as_mut());
                                // Retention after a finished compaction, at most hourly.
                                retaining = !compacting
                                    && last_retain.is_none_or(|t| t.elapsed() >= RETAIN_EVERY);
                                if retaining {
                                    last_retain = Some(Instant::now());
                                }
                            } else {
                                retaining = retain_step(store.as_mut(), &opts.retention);
                            }
                            continue;
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => break,
                    }
                } else {
                    match rx.blocking_recv() {
                        Some(r) => r,
                        None => break,
                    }
                };
                let mut next = Some(first);
                while let Some(req) = next.take() {
                    match req {
                        Request::Batch { batch, reply } => {
                            batches.push(*batch);
                            replies.push(reply);
                        }
                        Request::Compact => compacting = true,
                        other => updates.push(other),
                    }
                    if batches.len() < opts.max_batches_per_commit
                        && updates.len() < MAX_HOST_UPDATES
                    {
                        next = rx.try_recv().ok();
                    }
                }
                // Host rows first: a connection's batches come only after its Welcome, so
                // none in this group waits on a registration after it.
                if !updates.is_empty() {
                    apply_updates(store.as_mut(), &mut updates);
                }
                if !batches.is_empty() {
                    commit_group(store.as_mut(), &mut batches, &mut replies, &opts.telemetry);
                }
                if last_compact.elapsed() >= opts.compact_every {
                    compacting = true;
                    last_compact = Instant::now();
                }
            }
            info!("store writer stopped");
        })
        .expect("spawn the store writer thread");
    (handle, join)
}

fn commit_group(
    store: &mut dyn Store,
    batches: &mut Vec<PendingBatch>,
    replies: &mut Vec<Reply<CommitOutcome>>,
    telemetry: &crate::telemetry::Telemetry,
) {
    let t = Instant::now();
    let committed = store.commit(batches);
    telemetry.commit_done(t.elapsed(), batches.len(), committed.is_ok());
    match committed {
        Ok(outcomes) => {
            debug!(batches = batches.len(), took = ?t.elapsed(), "group committed");
            for (reply, outcome) in replies.drain(..).zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            // Nothing of the group is acknowledged; agents keep it and send it again.
            error!(batches = batches.len(), "commit failed: {e}");
            for reply in replies.drain(..) {
                let _ = reply.send(Err(e.to_string()));
            }
        }
    }
    batches.clear();
}

/// Samples per compaction step: about 50 ms of work, so acknowledgements never wait long.
const COMPACT_STEP: u64 = 200_000;

/// One step of retention; true if there is more to do.
fn retain_step(store: &mut dyn Store, r: &crate::store::Retention) -> bool {
    match store.retain_some(now_millis(), r, RETAIN_STEP) {
        Ok(stats) => {
            if stats != crate::store::RetentionStats::default() {
                info!(
                    raw_hours = stats.raw_hours,
                    folded_hours = stats.folded_hours,
                    rollup_hours = stats.rollup_hours,
                    log_batches = stats.log_batches,
                    "retention applied"
                );
            }
            stats.more
        }
        Err(e) => {
            error!("retention failed: {e}");
            false
        }
    }
}

/// One step of compaction; true if there is more to do.
fn compact_step(store: &mut dyn Store) -> bool {
    match store.compact_some(now_millis(), COMPACT_STEP) {
        Ok(stats) => {
            if stats.samples > 0 {
                debug!(?stats, "compacted");
            }
            stats.more
        }
        Err(e) => {
            error!("compaction failed: {e}");
            false
        }
    }
}

/// Host updates applied together: a reconnect storm's registrations share one sync.
const MAX_HOST_UPDATES: usize = 1024;

/// Apply the queued host updates (registrations, consent, disconnections, probes) as one
/// group, in order, and answer the registrations.
fn apply_updates(store: &mut dyn Store, reqs: &mut Vec<Request>) {
    let now = now_millis();
    let outcomes = {
        let group: Vec<HostUpdate<'_>> = reqs
            .iter()
            .map(|r| match r {
                Request::Register {
                    identity,
                    hello,
                    cert_expires,
                    ..
                } => HostUpdate::Register(HostHello {
                    identity,
                    facts: &hello.facts,
                    agent_version: &hello.agent_version,
                    consent: &hello.consent,
                    interval_ms: hello.interval_ms,
                    cert_expires: *cert_expires,
                }),
                Request::Consent { host, record } => HostUpdate::Consent {
                    host: *host,
                    record,
                },
                Request::Disconnected { host } => HostUpdate::Disconnected(*host),
                Request::Probes { host, probes } => HostUpdate::Probes {
                    host: *host,
                    probes,
                },
                Request::Batch { .. } | Request::Compact => {
                    unreachable!("batches and compaction are scheduled by the caller")
                }
            })
            .collect();
        store.host_updates(&group, now)
    };
    for (req, outcome) in reqs.drain(..).zip(outcomes) {
        match (req, outcome) {
            (Request::Register { reply, .. }, outcome) => {
                let _ = reply.send(match outcome {
                    Ok(HostUpdated::Registered { host, high_water }) => Ok((host, high_water)),
                    Ok(HostUpdated::Done) => Err("registration gave no host id".into()),
                    Err(e) => Err(e.to_string()),
                });
            }
            (req, Err(e)) => {
                let what = match req {
                    Request::Consent { .. } => "storing consent",
                    Request::Disconnected { .. } => "marking host disconnected",
                    Request::Probes { .. } => "keeping a host's probes",
                    _ => unreachable!("registrations are answered above; batches are not here"),
                };
                error!("{what}: {e}");
            }
            (_, Ok(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BatchData, Store, open_sqlite, open_sqlite_readonly};
    use aftercare_shared::consent::Scope;
    use aftercare_shared::model::{HostFacts, LossReport, MetricKind, MetricSnapshot, Sample};
    use aftercare_shared::protocol::{PROTOCOL_VERSION, seq};

    fn hello() -> Hello {
        let mut consent = ConsentRecord::default();
        consent
            .grant_scopes(
                &[Scope::Metrics],
                "T",
                time::OffsetDateTime::now_utc(),
                None,
            )
            .unwrap();
        Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: "t".into(),
            facts: HostFacts::default(),
            consent,
            claimed: None,
            interval_ms: 10_000,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_in_groups_acknowledges_each_and_compacts_in_the_background() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("a.db");
        let telemetry = std::sync::Arc::new(crate::telemetry::Telemetry::new());
        let (w, join) = spawn(
            Box::new(open_sqlite(&db).unwrap()),
            WriterOptions {
                max_batches_per_commit: 16,
                queue_depth: 64,
                compact_every: Duration::from_secs(3600),
                retention: crate::store::Retention::default(),
                telemetry: telemetry.clone(),
            },
        );
        let id = Identity {
            customer: "c".into(),
            host: "h".into(),
        };
        let (host, hw) = w.register(id, hello(), None).await.unwrap();
        assert!(hw.is_empty());
        // Three hours ago: an hour long closed, ready to compact.
        let t0 = now_millis() - 3 * 3_600_000;
        let mut pending = Vec::new();
        for i in 0..100u32 {
            let b = PendingBatch {
                host,
                stream: StreamId::Metrics,
                seq: seq(1, i % 90), // the last ten are redeliveries
                received_at: now_millis(),
                data: BatchData::Metrics(MetricSnapshot {
                    ts: t0 + i64::from(i % 90) * 10_000,
                    samples: vec![Sample {
                        name: "load.1".into(),
                        labels: String::new(),
                        kind: MetricKind::Gauge,
                        value: f64::from(i),
                    }],
                }),
                loss: LossReport::default(),
            };
            pending.push(w.commit(b).await.unwrap());
        }
        let mut outcomes = Vec::new();
        for rx in pending {
            outcomes.push(rx.await.unwrap().unwrap());
        }
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == CommitOutcome::Stored)
                .count(),
            90
        );
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == CommitOutcome::Duplicate)
                .count(),
            10
        );
        // Every batch went through a timed commit, in fewer commits than batches.
        let text = telemetry.encode().unwrap();
        let sample = |s| crate::telemetry::sample(&text, s).unwrap();
        assert_eq!(
            sample("aftercare_collector_store_commit_batches_sum"),
            100.0
        );
        let commits = sample("aftercare_collector_store_commit_duration_seconds_count");
        assert!((1.0..100.0).contains(&commits), "{commits} commits");
        assert_eq!(
            sample("aftercare_collector_store_commit_batches_count"),
            commits
        );
        w.send(Request::Compact).await.unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let stats = open_sqlite_readonly(&db).unwrap().stats().unwrap();
            if stats.staged_samples == 0 && stats.block_samples == 90 {
                break;
            }
            assert!(Instant::now() < end, "not compacted: {stats:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(w);
        tokio::task::spawn_blocking(move || join.join().unwrap())
            .await
            .unwrap();
    }

    /// The probe counts what waits in the queue, and keeps no writer alive.
    #[tokio::test]
    async fn the_queue_probe_counts_waiting_requests() {
        let (tx, mut rx) = mpsc::channel(8);
        let w = WriterHandle { tx };
        let probe = w.queue_probe();
        assert_eq!(probe(), 0);
        w.send(Request::Compact).await.unwrap();
        w.send(Request::Compact).await.unwrap();
        assert_eq!(probe(), 2);
        rx.recv().await.unwrap();
        assert_eq!(probe(), 1);
        drop(w);
        // Its last handle gone, the channel closes although the probe lives.
        rx.recv().await.unwrap();
        assert!(rx.recv().await.is_none());
        assert_eq!(probe(), 0);
    }
}

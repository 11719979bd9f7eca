//! The writer: one thread owns the store and commits batches in groups.
//!
//! Ingest tasks hand it batches with a reply channel. It takes whatever is queued (up to a
//! bound) and commits it in one transaction — one fsync for the group — and only then
//! answers, so an agent's batch is acknowledged only once it is durable.

use crate::store::{CommitOutcome, HostHello, HostId, PendingBatch, Store, StoreError};
use aftercare_shared::consent::ConsentRecord;
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
        reply: Reply<(HostId, Vec<(StreamId, u64)>)>,
    },
    Consent {
        host: HostId,
        record: ConsentRecord,
    },
    Disconnected {
        host: HostId,
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
    ) -> Result<(HostId, Vec<(StreamId, u64)>), String> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Register {
            identity,
            hello: Box::new(hello),
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
}

pub struct WriterOptions {
    pub max_batches_per_commit: usize,
    pub queue_depth: usize,
    pub compact_every: Duration,
}

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
            let mut batches: Vec<PendingBatch> = Vec::new();
            let mut replies: Vec<Reply<CommitOutcome>> = Vec::new();
            while let Some(first) = rx.blocking_recv() {
                let mut next = Some(first);
                while let Some(req) = next.take() {
                    match req {
                        Request::Batch { batch, reply } => {
                            batches.push(*batch);
                            replies.push(reply);
                        }
                        other => handle_other(store.as_mut(), other),
                    }
                    if batches.len() < opts.max_batches_per_commit {
                        next = rx.try_recv().ok();
                    }
                }
                if !batches.is_empty() {
                    commit_group(store.as_mut(), &mut batches, &mut replies);
                }
                if last_compact.elapsed() >= opts.compact_every {
                    compact(store.as_mut());
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
) {
    let t = Instant::now();
    match store.commit(batches) {
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

fn compact(store: &mut dyn Store) {
    match store.compact(now_millis()) {
        Ok(stats) => debug!(?stats, "compacted"),
        Err(e) => error!("compaction failed: {e}"),
    }
}

fn handle_other(store: &mut dyn Store, req: Request) {
    let now = now_millis();
    let log = |what: &str, r: Result<(), StoreError>| {
        if let Err(e) = r {
            error!("{what}: {e}");
        }
    };
    match req {
        Request::Register {
            identity,
            hello,
            reply,
        } => {
            let h = HostHello {
                identity: &identity,
                facts: &hello.facts,
                agent_version: &hello.agent_version,
                consent: &hello.consent,
                interval_ms: hello.interval_ms,
            };
            let res = store
                .register_host(&h, now)
                .and_then(|id| Ok((id, store.high_water(id)?)))
                .map_err(|e| e.to_string());
            let _ = reply.send(res);
        }
        Request::Consent { host, record } => {
            log("storing consent", store.set_consent(host, &record, now))
        }
        Request::Disconnected { host } => log(
            "marking host disconnected",
            store.set_disconnected(host, now),
        ),
        Request::Compact => compact(store),
        Request::Batch { .. } => unreachable!("batches are grouped by the caller"),
    }
}

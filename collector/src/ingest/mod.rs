//! Ingest: the QUIC listener and one task per agent connection.
//!
//! Per connection: verify who the agent is (from its certificate only), read Hello, answer
//! Welcome or Refused, then read batches, check each against the identity and the recorded
//! consent, hand it to the writer, and acknowledge it — in order — once it is committed.

mod admission;
mod going_away;

pub use admission::{Admission, Admitted, QUEUE_WAIT};
pub use going_away::GoingAway;

use crate::store::{BatchData, CommitOutcome, HostId, LogBlock, PendingBatch};
use crate::telemetry::{BatchTally, Refusal, Telemetry};
use crate::writer::{Request, WriterHandle};
use aftercare_shared::codec::{self, CodecError};
use aftercare_shared::consent::ConsentRecord;
use aftercare_shared::logblock::{self, BlockError, Summary, Unpacker};
use aftercare_shared::protocol::{
    AgentMsg, Batch, CollectorMsg, Hello, Identity, MIN_AGENT_PROTOCOL, PROTOCOL_VERSION, Payload,
    Welcome,
};
use aftercare_shared::time_fmt::now_millis;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

/// QUIC application close codes.
pub mod close {
    pub const DONE: u32 = 0;
    pub const PROTOCOL: u32 = 1;
    pub const REFUSED: u32 = 2;
    pub const STORE: u32 = 3;
    pub const SHUTDOWN: u32 = aftercare_shared::protocol::CLOSE_SHUTDOWN;
}

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// An admitted handshake not done by then is abandoned: the agent's default connect timeout.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A handshake still unfinished this long after it got its place gives the place up and goes
/// on without it. Its peer is slow or gone (an attempt its agent abandoned while the first
/// packet was on its way, seen after restarts), and holding the place would stall the attempts
/// behind it. Measured in 10,000-agent reconnect storms on 2 shared cores: 96 to 99.7 % of
/// handshakes finish within 1 s of getting their place, and none took over 2.5 s.
const HANDSHAKE_PLACE: Duration = Duration::from_secs(1);
/// Batches in flight per connection between read and acknowledgement.
const PIPELINE: usize = 256;

#[derive(Clone)]
pub struct IngestOptions {
    pub max_frame: usize,
    /// Handshakes in progress at once (see [`Admission`]).
    pub admission: Admission,
    /// Where welcomed connections are registered, so diagnostics can reach them.
    pub links: crate::diagnose::Links,
    /// The collector's own health, for `/metrics`.
    pub telemetry: Arc<Telemetry>,
    /// Keep what agents advertise in the database: it is shared with other collectors.
    pub share_probes: bool,
    /// What connections closed for a shutdown are told (when to come back).
    pub going_away: GoingAway,
}

impl IngestOptions {
    /// The close reason of a connection closed because the collector is stopping.
    fn going_away(&self) -> String {
        self.going_away
            .reason(self.telemetry.agents_connected_now())
    }
}

/// Accept connections until `shutdown`; then let each connection finish what it has in
/// flight (bounded), and close the endpoint.
pub async fn serve(
    endpoint: quinn::Endpoint,
    writer: WriterHandle,
    opts: IngestOptions,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let (a, b) = (opts.admission.clone(), opts.admission.clone());
    opts.telemetry
        .watch_connecting(move || a.in_progress() as u64, move || b.waiting() as u64);
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => {
                // Before connections start ending: every agent here counts.
                opts.going_away.fix(opts.telemetry.agents_connected_now());
                break;
            }
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        if opts.admission.refused_before(&incoming.orig_dst_cid()) {
            // A late copy of an attempt refused (and counted) already.
            incoming.refuse();
            continue;
        }
        let writer = writer.clone();
        let opts = opts.clone();
        let stop = shutdown.clone();
        let remote = incoming.remote_address();
        tracker.spawn(
            async move {
                let turn = tokio::select! {
                    t = opts.admission.admit(incoming.orig_dst_cid(), QUEUE_WAIT) => t,
                    _ = stop.cancelled() => None,
                };
                let Some(turn) = turn else {
                    let why = if stop.is_cancelled() {
                        Refusal::Stopping
                    } else {
                        Refusal::Busy
                    };
                    opts.telemetry.connection_refused(why);
                    incoming.refuse();
                    return;
                };
                let admitted = Instant::now();
                let mut turn = Some(turn);
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming);
                tokio::pin!(handshake);
                let done = tokio::select! {
                    r = &mut handshake => r,
                    () = tokio::time::sleep(HANDSHAKE_PLACE) => {
                        turn = None;
                        handshake.await
                    }
                };
                let conn = match done {
                    Ok(Ok(c)) => {
                        opts.telemetry.handshake_done(admitted.elapsed());
                        c
                    }
                    Ok(Err(e)) => {
                        // Wrong CA, expired, no certificate, wrong server name, wrong ALPN:
                        // the handshake fails and this is where the reason shows.
                        warn!("handshake refused: {e}");
                        opts.telemetry.connection_refused(Refusal::Tls);
                        return;
                    }
                    Err(_) => {
                        // Its agent has given up (its close may have been lost): the place
                        // goes to the next attempt rather than waiting out the idle timeout.
                        debug!("no handshake within {HANDSHAKE_TIMEOUT:?}; abandoned");
                        opts.telemetry.connection_refused(Refusal::Tls);
                        return;
                    }
                };
                handle_connection(conn, writer, opts, stop, turn).await;
            }
            .instrument(info_span!("conn", %remote)),
        );
    }
    // While the connections finish, new attempts are refused at once. Left queued, quinn
    // would drop them unanswered with the endpoint, and their agents would wait out their
    // connect timeout instead of backing off and finding the next collector (a restart).
    let refusing = {
        let endpoint = endpoint.clone();
        let telemetry = opts.telemetry.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                telemetry.connection_refused(Refusal::Stopping);
                incoming.refuse();
            }
        })
    };
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .is_err()
    {
        warn!("connections still busy after 5 s; closing them");
    }
    // From here quinn refuses new attempts itself, and `accept` ends the task above.
    let reason = opts.going_away();
    endpoint.close(close::SHUTDOWN.into(), reason.as_bytes());
    let _ = refusing.await;
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("{0}")]
    Codec(#[from] CodecError),
    #[error("stream: {0}")]
    Stream(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("store: {0}")]
    Store(String),
    #[error("the collector is shutting down")]
    Stopping,
}

/// `turn` is the attempt's place, unless its handshake gave it up; dropped at the Welcome.
async fn handle_connection(
    conn: quinn::Connection,
    writer: WriterHandle,
    opts: IngestOptions,
    shutdown: CancellationToken,
    turn: Option<Admitted>,
) {
    let identity = match crate::tls::peer_identity(&conn) {
        Ok(id) => id,
        Err(e) => {
            warn!("no usable identity in the client certificate: {e}");
            opts.telemetry.connection_refused(Refusal::Certificate);
            conn.close(
                close::REFUSED.into(),
                b"certificate names no aftercare identity",
            );
            return;
        }
    };
    // A session resumed from a ticket carries the certificate of its first handshake
    // without checking it again: one that has expired since is refused here.
    let cert_expires = crate::tls::peer_cert_not_after(&conn);
    if let Some(at) = cert_expires
        && at < aftercare_shared::time_fmt::now_millis()
    {
        warn!(%identity, "the client certificate has expired (a resumed session): refused");
        opts.telemetry.connection_refused(Refusal::Certificate);
        conn.close(close::REFUSED.into(), b"certificate expired: renew it");
        return;
    }
    let span = info_span!("agent", customer = %identity.customer, host = %identity.host);
    async move {
        // A stopping collector does not wait for a Hello: the agent retries elsewhere.
        let opened = tokio::select! {
            _ = shutdown.cancelled() => {
                opts.telemetry.connection_refused(Refusal::Stopping);
                conn.close(close::SHUTDOWN.into(), opts.going_away().as_bytes());
                return;
            }
            o = tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi()) => o,
        };
        let (mut send, mut recv) = match opened {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                debug!("closed before opening a stream: {e}");
                return;
            }
            Err(_) => {
                warn!("no stream within {HELLO_TIMEOUT:?}; closing");
                opts.telemetry.connection_refused(Refusal::Hello);
                conn.close(close::PROTOCOL.into(), b"no Hello");
                return;
            }
        };
        let mut host: Option<HostId> = None;
        let res = session(
            &identity,
            cert_expires,
            &conn,
            &mut send,
            &mut recv,
            &writer,
            &opts,
            &shutdown,
            &mut host,
            turn,
        )
        .await;
        if let Some(h) = host {
            opts.links.unregister(h, &conn);
            let _ = writer.send(Request::Disconnected { host: h }).await;
        }
        match res {
            Ok(()) => {
                info!("agent disconnected");
                // Closing discards stream data not yet delivered: finish first, so the last
                // acknowledgements reach the agent.
                let _ = send.finish();
                let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
                if shutdown.is_cancelled() {
                    conn.close(close::SHUTDOWN.into(), opts.going_away().as_bytes());
                } else {
                    conn.close(close::DONE.into(), b"bye");
                }
            }
            Err(ConnError::Refused(reason)) => {
                warn!("refused: {reason}");
                let _ = write_msg(
                    &mut send,
                    &CollectorMsg::Refused {
                        reason: reason.clone(),
                    },
                    opts.max_frame,
                )
                .await;
                let _ = send.finish();
                let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
                conn.close(close::REFUSED.into(), reason.as_bytes());
            }
            Err(ConnError::Stopping) => {
                debug!("closed before its Hello: shutting down");
                conn.close(close::SHUTDOWN.into(), opts.going_away().as_bytes());
            }
            Err(ConnError::Store(e)) => {
                warn!("closing: store failed: {e}");
                conn.close(close::STORE.into(), b"store unavailable; try again later");
            }
            Err(e) => {
                warn!("closing: {e}");
                conn.close(close::PROTOCOL.into(), e.to_string().as_bytes());
            }
        }
    }
    .instrument(span)
    .await
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn session(
    identity: &Identity,
    cert_expires: Option<i64>,
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    writer: &WriterHandle,
    opts: &IngestOptions,
    shutdown: &CancellationToken,
    host_out: &mut Option<HostId>,
    turn: Option<Admitted>,
) -> Result<(), ConnError> {
    let max = opts.max_frame;
    // Until the Welcome, an error is a refused connection, counted by why.
    let refused = |why: Refusal| {
        move |e: ConnError| {
            opts.telemetry.connection_refused(why);
            e
        }
    };
    let first = tokio::select! {
        _ = shutdown.cancelled() => return Err(refused(Refusal::Stopping)(ConnError::Stopping)),
        r = tokio::time::timeout(HELLO_TIMEOUT, read_frame(recv, max)) => r,
    };
    let first = first
        .map_err(|_| ConnError::Refused(format!("no Hello within {HELLO_TIMEOUT:?}")))
        .and_then(|r| r?.ok_or_else(|| ConnError::Stream("closed before Hello".into())))
        .map_err(refused(Refusal::Hello))?;
    let hello = parse_hello(&first).map_err(|(why, e)| refused(why)(e))?;
    check_claims(identity, &hello).map_err(refused(Refusal::Claim))?;
    // With it, when its certificate expires (for the report's certificates near expiry; the
    // handshake verified this certificate).
    let (host, high_water) = writer
        .register(identity.clone(), hello.clone(), cert_expires)
        .await
        .map_err(ConnError::Store)
        .map_err(refused(Refusal::Store))?;
    *host_out = Some(host);
    let mut consent = hello.consent;
    info!(
        agent_version = %hello.agent_version,
        scopes = %scopes(&consent),
        "agent connected"
    );
    // Counted before the Welcome goes out: an agent that has its Welcome is connected, also
    // to a shutdown that begins at once and sizes the return window by the count.
    let _connected = opts.telemetry.agent_connected();
    write_msg(
        send,
        &CollectorMsg::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            collector_version: aftercare_shared::VERSION.to_string(),
            identity: identity.clone(),
            high_water,
        }),
        max,
    )
    .await?;
    drop(turn);
    opts.links.register(
        host,
        format!("{}/{}", identity.customer, identity.host),
        conn.clone(),
        hello.protocol_version,
    );

    // Acknowledgements go out in the order batches came in, each once its commit is done.
    let (ack_tx, mut ack_rx) = mpsc::channel::<AckItem>(PIPELINE);
    let acker = async {
        while let Some(item) = ack_rx.recv().await {
            let (msg, read_at) = match item {
                AckItem::Now(m) => (m, None),
                AckItem::Commit {
                    stream,
                    seq,
                    rx,
                    read_at,
                    tally,
                } => match rx.await {
                    Ok(Ok(outcome)) => {
                        opts.telemetry.batch_committed(stream, outcome, &tally);
                        let ack = CollectorMsg::Ack {
                            stream,
                            seq,
                            duplicate: outcome == CommitOutcome::Duplicate,
                        };
                        (ack, Some(read_at))
                    }
                    Ok(Err(e)) => return Err(ConnError::Store(e)),
                    Err(_) => return Err(ConnError::Store("writer stopped".into())),
                },
            };
            write_msg(send, &msg, max).await?;
            if let Some(t) = read_at {
                opts.telemetry.ack_written(t.elapsed());
            }
        }
        Ok(())
    };
    let reader = async {
        let mut blocks = BlockCheck {
            unpacker: None,
            max,
        };
        loop {
            let frame = tokio::select! {
                _ = shutdown.cancelled() => {
                    // While this connection still counts: the first to see the shutdown
                    // (this task or `serve`) fixes the return window for all.
                    opts.going_away.fix(opts.telemetry.agents_connected_now());
                    break;
                }
                f = read_frame(recv, max) => f?,
            };
            let Some(frame) = frame else { break };
            match codec::decode_body::<AgentMsg>(&frame)? {
                AgentMsg::Batch(b) => {
                    opts.telemetry.batch_received(b.stream());
                    let item =
                        accept_batch(identity, host, &consent, b, writer, &mut blocks).await?;
                    if let AckItem::Now(CollectorMsg::Rejected { stream, .. }) = &item {
                        opts.telemetry.batch_rejected(*stream);
                    }
                    if ack_tx.send(item).await.is_err() {
                        break;
                    }
                }
                AgentMsg::ConsentUpdate(rec) => {
                    info!(scopes = %scopes(&rec), "consent updated by the customer");
                    consent = rec.clone();
                    writer
                        .send(Request::Consent { host, record: rec })
                        .await
                        .map_err(|e| ConnError::Store(e.to_string()))?;
                }
                AgentMsg::Hello(_) => {
                    return Err(ConnError::Stream("a second Hello on one connection".into()));
                }
                AgentMsg::Probes(probes) => {
                    debug!(probes = probes.len(), "agent offers diagnostic probes");
                    if opts.share_probes {
                        // Other collectors' APIs show them and hand requests over.
                        writer
                            .send(Request::Probes {
                                host,
                                probes: probes.clone(),
                            })
                            .await
                            .map_err(|e| ConnError::Store(e.to_string()))?;
                    }
                    opts.links.set_probes(host, conn, probes);
                }
            }
        }
        drop(ack_tx);
        Ok::<(), ConnError>(())
    };
    let (r, a) = tokio::join!(reader, acker);
    r.and(a)
}

/// Reads log blocks through before they are committed (a connection's decompression
/// context, made at its first block): a block that is not well formed is refused, and the
/// store files it under the summary found here.
struct BlockCheck {
    unpacker: Option<Unpacker>,
    /// The largest plain block taken: the frame cap, as the agent's batch came in one frame.
    max: usize,
}

impl BlockCheck {
    fn summarize(&mut self, block: &[u8]) -> Result<Option<Summary>, BlockError> {
        let u = match &mut self.unpacker {
            Some(u) => u,
            None => self.unpacker.insert(Unpacker::new()?),
        };
        logblock::summarize(u.unpack(block, self.max)?)
    }
}

enum AckItem {
    Now(CollectorMsg),
    Commit {
        stream: aftercare_shared::protocol::StreamId,
        seq: u64,
        rx: oneshot::Receiver<Result<CommitOutcome, String>>,
        /// When the batch was read: its acknowledgement's latency starts.
        read_at: Instant,
        tally: BatchTally,
    },
}

async fn accept_batch(
    identity: &Identity,
    host: HostId,
    consent: &ConsentRecord,
    batch: Batch,
    writer: &WriterHandle,
    blocks: &mut BlockCheck,
) -> Result<AckItem, ConnError> {
    let read_at = Instant::now();
    if let Some(claimed) = &batch.claimed_host
        && claimed != &identity.host
    {
        return Err(ConnError::Refused(format!(
            "a batch claims host '{claimed}' but the certificate is for {identity}"
        )));
    }
    let stream = batch.stream();
    let now = now_millis();
    if !consent.allows(stream.scope(), now) {
        warn!(
            seq = batch.seq,
            "rejected a {} batch: the recorded consent does not include {}",
            stream.as_str(),
            stream.scope()
        );
        return Ok(AckItem::Now(CollectorMsg::Rejected {
            stream,
            seq: batch.seq,
            reason: format!(
                "the consent recorded for {identity} does not include {} (active: {})",
                stream.scope(),
                scopes(consent)
            ),
        }));
    }
    let (data, loss) = match batch.payload {
        Payload::Metrics { snapshot, loss } => (BatchData::Metrics(snapshot), loss),
        Payload::Logs { records, loss } => (BatchData::Logs(records), loss),
        Payload::LogBlock { block, loss } => match blocks.summarize(&block) {
            Ok(Some(summary)) => (
                BatchData::LogBlock(LogBlock {
                    block: block.into_vec(),
                    summary,
                }),
                loss,
            ),
            Ok(None) => (BatchData::Logs(Vec::new()), loss),
            Err(e) => {
                // It can never be stored; refusing it keeps the stream moving, and the agent
                // logs the reason.
                warn!(seq = batch.seq, "rejected a log batch: {e}");
                return Ok(AckItem::Now(CollectorMsg::Rejected {
                    stream,
                    seq: batch.seq,
                    reason: e.to_string(),
                }));
            }
        },
    };
    let tally = BatchTally {
        samples: match &data {
            BatchData::Metrics(m) => m.samples.len() as u64,
            _ => 0,
        },
        log_records: match &data {
            BatchData::Logs(r) => r.len() as u64,
            BatchData::LogBlock(b) => u64::from(b.summary.records),
            BatchData::Metrics(_) => 0,
        },
        loss,
    };
    if !loss.is_empty() {
        warn!(
            dropped_batches = loss.dropped_batches,
            dropped_samples = loss.dropped_samples,
            discarded_by_revocation = loss.discarded_by_revocation,
            "agent reports data it had to give up"
        );
    }
    let rx = writer
        .commit(PendingBatch {
            host,
            stream,
            seq: batch.seq,
            received_at: now,
            data,
            loss,
        })
        .await
        .map_err(|e| ConnError::Store(e.to_string()))?;
    Ok(AckItem::Commit {
        stream,
        seq: batch.seq,
        rx,
        read_at,
        tally,
    })
}

/// The Hello, or why the connection is refused.
fn parse_hello(frame: &[u8]) -> Result<Hello, (Refusal, ConnError)> {
    match codec::decode_body::<AgentMsg>(frame) {
        Ok(AgentMsg::Hello(h)) if ACCEPTED.contains(&h.protocol_version) => Ok(h),
        Ok(AgentMsg::Hello(h)) => Err((Refusal::Version, version_mismatch(h.protocol_version))),
        Ok(_) => Err((
            Refusal::Hello,
            ConnError::Refused("the first message must be Hello".into()),
        )),
        Err(e) => match codec::peek_hello_version(frame) {
            Some(v) if !ACCEPTED.contains(&v) => Err((Refusal::Version, version_mismatch(v))),
            _ => Err((Refusal::Hello, ConnError::Codec(e))),
        },
    }
}

/// The agent protocol versions this collector takes.
const ACCEPTED: std::ops::RangeInclusive<u16> = MIN_AGENT_PROTOCOL..=PROTOCOL_VERSION;

fn version_mismatch(agent: u16) -> ConnError {
    ConnError::Refused(format!(
        "agent speaks aftercare protocol version {agent}, this collector speaks versions \
         {MIN_AGENT_PROTOCOL} to {PROTOCOL_VERSION}: upgrade the older of the two"
    ))
}

fn check_claims(identity: &Identity, hello: &Hello) -> Result<(), ConnError> {
    match &hello.claimed {
        Some(c) if c != identity => Err(ConnError::Refused(format!(
            "Hello claims to be {c} but the certificate is for {identity}"
        ))),
        _ => Ok(()),
    }
}

fn scopes(c: &ConsentRecord) -> String {
    let s = c.active_scopes(now_millis());
    if s.is_empty() {
        "none".into()
    } else {
        s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
    }
}

/// Read one frame (flags and body, after the length); `None` at a clean end of stream.
async fn read_frame(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<Option<Vec<u8>>, ConnError> {
    let mut hdr = [0u8; 4];
    match recv.read_exact(&mut hdr).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(ConnError::Stream(e.to_string())),
    }
    // The cap is checked here, before the body is buffered.
    let total = codec::frame_len(&hdr, max)?.expect("4 header bytes present");
    let mut body = vec![0u8; total - 4];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| ConnError::Stream(e.to_string()))?;
    Ok(Some(body))
}

async fn write_msg(
    send: &mut quinn::SendStream,
    msg: &CollectorMsg,
    max: usize,
) -> Result<(), ConnError> {
    let f = codec::to_frame(msg, max)?;
    send.write_all(&f)
        .await
        .map_err(|e| ConnError::Stream(e.to_string()))
}

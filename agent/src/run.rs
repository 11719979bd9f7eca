//! The running agent: collect on a timer, follow log files, gate everything by consent,
//! keep it in the on-disk spool, stream it to the collector, and let the spool forget a
//! batch only when the collector has acknowledged it.
//!
//! One task owns all state (consent, spool, the current link); connecting and the link's
//! reads and writes run in tasks of their own, and the log side (reading, parsing,
//! redaction) on a thread of its own (`logs::reader`); all report back over channels, so a
//! slow collector never delays a tick and a busy log never delays an acknowledgement.
//!
//! Where log reading resumes: each log batch is spooled with a note holding the tailer's
//! positions just past its lines (`outbox`). At start the newest log record in the spool
//! gives them (acknowledged or not: the spool still holds and will send what follows);
//! without one, the checkpoint file, which holds the positions of the newest batch the
//! collector has acknowledged. Lines are thus read once, sent until acknowledged, and
//! stored once (the collector drops a sequence number it already holds).
//!
//! Consent: nothing is collected or read for a scope without it. Withdrawing `logs`
//! stops the reader, deletes the spooled log batches and the checkpoint; lines written
//! while `logs` is not in force are never read (a later grant starts at the files' ends).

use crate::audit::{AuditLog, Event, HourlyAggregator};
use crate::config::AgentConfig;
use crate::consent::{self, ConsentState, scopes_str};
use crate::diagnostics::{self, Diagnostics};
use crate::logs::checkpoint;
use crate::logs::reader::{Chunk, Reader, ReaderConfig};
use crate::logs::redact::RuleSet;
use crate::logs::tailer::{FilePosition, StartAt};
use crate::metrics::Collector;
use crate::outbox::{self, InFlight, Sent};
use crate::spool::Spool;
use crate::state;
use crate::transport::{self, Jitter, Link, LinkError};
use aftercare_shared::codec;
use aftercare_shared::consent::Scope;
use aftercare_shared::logblock;
use aftercare_shared::model::{HostFacts, LossReport};
use aftercare_shared::protocol::{
    self, AgentMsg, Batch, CollectorMsg, Hello, Payload, StreamId, seq_epoch,
};
use aftercare_shared::time_fmt::now_millis;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// How long a shutdown waits for acknowledgements of batches already sent.
const DRAIN: Duration = Duration::from_secs(2);
/// Bytes on the wire awaiting acknowledgement at most: enough to keep a link busy, and the
/// bound on what is read back from the spool into memory.
const WINDOW: usize = 4 << 20;
/// Bytes read from the spool per call.
const TAKE: usize = 1 << 20;
/// A log batch closes at about this size (bounded by the frame limit too).
const LOG_BATCH: usize = 512 << 10;
/// Spool sync, checkpoint and audit bookkeeping.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// How long a link whose stream the collector finished waits for the collector's close
/// (which says whether it is stopping, and when to come back) before counting as lost.
const CLOSE_PATIENCE: Duration = Duration::from_secs(2);

/// What the link's tasks report.
enum LinkEvent {
    Msg(u64, CollectorMsg),
    /// Why, and the window a stopping collector asked to spread the return over.
    Closed(u64, String, Option<Duration>),
}

/// What the link's writer task is told.
enum WriterCmd {
    Frame(Vec<u8>),
    /// Finish the stream after what is queued, wait until the collector has read it, then
    /// close the connection with this reason.
    Close(String),
}

struct Connected {
    generation: u64,
    frames: mpsc::UnboundedSender<WriterCmd>,
    /// Stops the task answering this link's diagnostic streams when the link is dropped.
    _diagnostics: tokio_util::sync::DropGuard,
}

impl Connected {
    /// Hand a batch's frame to the writer and count it in flight; false if the writer is
    /// gone (the link's Closed event follows).
    fn send(
        &self,
        in_flight: &mut InFlight,
        stream: StreamId,
        seq: u64,
        count: u32,
        frame: Vec<u8>,
        note: &[u8],
    ) -> bool {
        let bytes = frame.len();
        if self.frames.send(WriterCmd::Frame(frame)).is_err() {
            return false;
        }
        let note = note.to_vec();
        in_flight.push(
            stream,
            Sent {
                seq,
                count,
                bytes,
                note,
            },
        );
        true
    }
}

pub struct Agent {
    cfg: AgentConfig,
    consent: watch::Receiver<ConsentState>,
    /// Scopes in force as last seen, to tell an expiry when they change.
    active: Vec<Scope>,
    collector: Collector,
    facts: HostFacts,
    spool: Spool,
    in_flight: InFlight,
    reader: Option<Reader>,
    rules: Arc<RuleSet>,
    local: time::UtcOffset,
    /// The note of the newest acknowledged log batch, not yet written to the checkpoint.
    acked_note: Option<Vec<u8>>,
    audit: AuditLog,
    hourly: HourlyAggregator,
    /// When log chunks last came; the heap is given back once a burst is over.
    last_chunk: Option<Instant>,
    /// When `housekeeping` is due: only while something waits for it (an idle agent does
    /// not wake every second for nothing).
    housekeeping_at: Option<Instant>,
    epoch: u32,
    counter: u32,
    link: Option<Connected>,
    /// The consent record the pending or current link's Hello carried.
    hello_consent: aftercare_shared::consent::ConsentRecord,
    generation: u64,
    jitter: Jitter,
    attempt: u32,
    /// Whether a collector has welcomed us in the current epoch: from then on, sequence
    /// numbers of this epoch in its high-water marks are our own.
    welcomed: bool,
    /// Since when the link has had batches in flight without any acknowledgement.
    waiting_since: Option<Instant>,
    events_tx: mpsc::UnboundedSender<LinkEvent>,
    events_rx: mpsc::UnboundedReceiver<LinkEvent>,
    diagnostics: Arc<Diagnostics>,
    shutdown: CancellationToken,
}

/// Start the agent and run until `shutdown`.
pub async fn run(cfg: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("cannot create state dir {}", cfg.state_dir.display()))?;
    let client =
        crate::tls::client_config(&cfg.collector.ca, &cfg.collector.cert, &cfg.collector.key)?;
    let consent = consent::watch(cfg.consent_path(), shutdown.clone())
        .with_context(|| format!("cannot watch {}", cfg.consent_path().display()))?;
    let collector = Collector::new(&cfg.metrics)?;
    let facts = collector.host_facts();
    let epoch = state::next_epoch(&cfg.state_dir)?;
    let rules = Arc::new(RuleSet::new(&cfg.redact)?);
    // Never fatal for damage inside (see `spool`): only an unusable directory stops us.
    let spool = Spool::open_dir(&cfg.spool_dir(), cfg.spool_config())
        .with_context(|| format!("cannot open the spool in {}", cfg.spool_dir().display()))?;
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let active = consent.borrow().active.clone();
    let diagnostics = Arc::new(Diagnostics::new(
        cfg.diagnostics
            .catalog()
            .map_err(|e| anyhow::anyhow!("diagnostics: {e}"))?,
        diagnostics::builtin::Context {
            metrics: cfg.metrics.clone(),
            logs: cfg.logs.clone(),
            rules: rules.clone(),
        },
        consent.clone(),
        AuditLog::new(&cfg.state_dir),
        cfg.collector.max_frame_bytes,
    ));
    let mut agent = Agent {
        audit: AuditLog::new(&cfg.state_dir),
        cfg,
        consent,
        active,
        collector,
        facts,
        spool,
        in_flight: InFlight::default(),
        reader: None,
        rules,
        local: crate::logs::pipeline::local_offset(),
        acked_note: None,
        hourly: HourlyAggregator::new(),
        last_chunk: None,
        housekeeping_at: None,
        epoch,
        counter: 0,
        link: None,
        hello_consent: Default::default(),
        generation: 0,
        jitter: Jitter::seeded(),
        attempt: 0,
        waiting_since: None,
        welcomed: false,
        events_tx,
        events_rx,
        diagnostics,
        shutdown: shutdown.clone(),
    };
    let s = agent.spool.stats;
    info!(
        host = %agent.facts.hostname,
        collector = %agent.cfg.collector.address,
        interval = ?agent.cfg.interval,
        consent = %scopes_str(&agent.consent.borrow().active),
        log_sources = agent.cfg.logs.len(),
        spooled_bytes = agent.spool.bytes(),
        "aftercare-agent {} started", aftercare_shared::VERSION
    );
    if s.damaged > 0 || s.torn_bytes > 0 {
        warn!(
            damaged = s.damaged,
            torn_bytes = s.torn_bytes,
            "spool damage skipped at open (see `aftercare-agent spool verify`)"
        );
    }
    // Consent may have changed while we were down: drop what may no longer leave.
    agent.enforce_consent(true);
    agent.main_loop(client, shutdown).await
}

impl Agent {
    fn allows(&self, scope: Scope) -> bool {
        self.consent.borrow().allows(scope)
    }

    /// A link only when something may leave and there is something to send: consent for
    /// logs with no log files configured opens no connection. `diagnostics` alone opens
    /// one, so that the engineers the customer allowed can reach this host.
    fn wants_link(&self) -> bool {
        self.allows(Scope::Metrics)
            || self.allows(Scope::Diagnostics)
            || (self.allows(Scope::Logs)
                && (!self.cfg.logs.is_empty() || self.spool.has_unacked(StreamId::Logs)))
    }

    async fn main_loop(
        &mut self,
        client: quinn::ClientConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut endpoint: Option<quinn::Endpoint> = None;
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut connecting: Option<JoinHandle<Result<Link, LinkError>>> = None;
        let mut retry_at = Instant::now();
        let mut draining: Option<Instant> = None;

        loop {
            let may_connect = self.wants_link()
                && draining.is_none()
                && self.link.is_none()
                && connecting.is_none();
            let ack_deadline = self
                .waiting_since
                .filter(|_| self.link.is_some())
                .map(|w| w + self.cfg.collector.ack_timeout);
            tokio::select! {
                _ = shutdown.cancelled(), if draining.is_none() => {
                    if let Some(r) = self.reader.take() {
                        r.stop();
                    }
                    if self.link.is_none() || self.in_flight.is_empty() {
                        break;
                    }
                    info!(unacked = self.in_flight.len(), "shutting down: waiting up to {DRAIN:?} for acknowledgements");
                    draining = Some(Instant::now() + DRAIN);
                }
                _ = async { tokio::time::sleep_until(draining.expect("guarded")).await }, if draining.is_some() => break,
                changed = self.consent.changed() => {
                    if changed.is_err() { break; }
                    self.on_consent_change();
                }
                _ = tick.tick(), if draining.is_none() => self.on_tick(),
                _ = async { tokio::time::sleep_until(self.housekeeping_at.expect("guarded")).await },
                    if self.housekeeping_at.is_some() => self.housekeeping(),
                chunk = async { self.reader.as_mut().expect("guarded").chunks.recv().await }, if self.reader.is_some() && draining.is_none() => {
                    match chunk {
                        Some(c) => self.on_log_chunk(c),
                        None => {
                            error!("the log reader stopped; logs are not followed until the agent restarts");
                            if let Some(r) = self.reader.take() { r.stop(); }
                        }
                    }
                }
                _ = async { tokio::time::sleep_until(ack_deadline.expect("guarded")).await }, if ack_deadline.is_some() => {
                    warn!(
                        in_flight = self.in_flight.len(),
                        "no acknowledgement for {:?}: taking the link for dead",
                        self.cfg.collector.ack_timeout
                    );
                    self.close_link("no acknowledgements");
                    retry_at = Instant::now();
                    if draining.is_some() { break; }
                }
                Some(ev) = self.events_rx.recv() => {
                    self.on_link_event(ev, &mut retry_at);
                    if draining.is_some() && (self.in_flight.is_empty() || self.link.is_none()) { break; }
                }
                res = async { connecting.as_mut().expect("guarded").await }, if connecting.is_some() => {
                    connecting = None;
                    match res {
                        Ok(Ok(link)) => self.on_connected(link),
                        Ok(Err(e)) => self.on_connect_failed(e, &mut retry_at),
                        Err(e) => self.on_connect_failed(LinkError::Stream(e.to_string()), &mut retry_at),
                    }
                }
                _ = tokio::time::sleep_until(retry_at), if may_connect => {
                    if endpoint.is_none() {
                        // The socket's address family follows the collector's address, so
                        // the first resolution must succeed before there is an endpoint.
                        match transport::resolve(&self.cfg.collector.address).await {
                            Ok(a) => endpoint = Some(transport::endpoint(client.clone(), a.is_ipv6())?),
                            Err(e) => {
                                self.on_connect_failed(e, &mut retry_at);
                                continue;
                            }
                        }
                    }
                    let ep = endpoint.clone().expect("just set");
                    let cfg = self.cfg.collector.clone();
                    let hello = self.hello();
                    self.hello_consent = hello.consent.clone();
                    connecting = Some(tokio::spawn(async move {
                        let addr = transport::resolve(&cfg.address).await?;
                        transport::connect(&ep, &cfg, addr, &hello).await
                    }));
                }
            }
            if !self.wants_link()
                && let Some(h) = connecting.take()
            {
                h.abort();
            }
        }

        if let Some(h) = connecting.take() {
            h.abort();
        }
        if let Some(r) = self.reader.take() {
            r.stop();
        }
        self.close_link("agent shutting down");
        self.housekeeping();
        if let Err(e) = self.spool.flush() {
            warn!("{e}");
        }
        let last = self.hourly.flush();
        self.write_audit(&last);
        if self.spool.has_unacked(StreamId::Metrics) || self.spool.has_unacked(StreamId::Logs) {
            info!(
                spooled_bytes = self.spool.bytes(),
                "unacknowledged batches stay in the spool and are sent after the next start"
            );
        }
        if let Some(ep) = endpoint {
            let _ = tokio::time::timeout(Duration::from_secs(1), ep.wait_idle()).await;
        }
        info!("aftercare-agent stopped");
        Ok(())
    }

    fn hello(&self) -> Hello {
        Hello {
            protocol_version: protocol::PROTOCOL_VERSION,
            agent_version: aftercare_shared::VERSION.to_string(),
            facts: self.facts.clone(),
            consent: self.consent.borrow().record.clone(),
            claimed: self.cfg.identity.clone(),
            interval_ms: self.cfg.interval.as_millis() as u64,
        }
    }

    fn next_seq(&mut self) -> u64 {
        let seq = protocol::seq(self.epoch, self.counter);
        self.counter = self.counter.wrapping_add(1);
        seq
    }

    fn on_tick(&mut self) {
        // No consent, no collection: nothing is even gathered for sending.
        if !self.allows(Scope::Metrics) {
            return;
        }
        let snapshot = self.collector.collect(now_millis());
        let count = snapshot.samples.len() as u32;
        let seq = self.next_seq();
        let loss = self.spool.take_owed(Scope::Metrics);
        let payload = Payload::Metrics { snapshot, loss };
        self.spool_batch(StreamId::Metrics, seq, count, loss, payload, &[]);
        self.pump();
    }

    fn on_log_chunk(&mut self, c: Chunk) {
        self.last_chunk = Some(Instant::now());
        // Consent may have gone while the chunk was on its way: it is not spooled.
        if !self.allows(Scope::Logs) {
            return;
        }
        if !c.redacted.is_empty() {
            let ev = self.hourly.redacted(now_millis(), &c.redacted);
            self.write_audit(&ev);
        }
        let count = c.records;
        let compressed = if c.compressed {
            Ok(c.block)
        } else {
            logblock::compress(&c.block)
        };
        let block = match compressed {
            Ok(b) => b,
            Err(e) => {
                // zstd fails only without memory; the lines are counted, never silently gone.
                error!(
                    records = count,
                    "log batch not compressed, counted as lost: {e}"
                );
                self.spool
                    .lost(StreamId::Logs, count, &LossReport::default());
                return;
            }
        };
        let seq = self.next_seq();
        let loss = self.spool.take_owed(Scope::Logs);
        let payload = Payload::log_block(block, loss);
        self.spool_batch(StreamId::Logs, seq, count, loss, payload, &c.note);
        self.pump();
    }

    /// Encode a batch and add it to the spool with its note. Failures are counted as loss
    /// by the spool (or here, for a batch that cannot be encoded) and logged.
    fn spool_batch(
        &mut self,
        stream: StreamId,
        seq: u64,
        count: u32,
        loss: LossReport,
        payload: Payload,
        note: &[u8],
    ) {
        let batch = AgentMsg::Batch(Batch {
            seq,
            claimed_host: None,
            payload,
        });
        match codec::to_frame(&batch, self.cfg.collector.max_frame_bytes) {
            Ok(frame) => {
                let p = outbox::wrap(note, &frame);
                if let Err(e) = self.spool.append_carrying(stream, seq, count, &loss, &p) {
                    error!(
                        stream = stream.as_str(),
                        "batch not spooled, counted as lost: {e}"
                    );
                } else if let Some(link) = &self.link
                    && self.in_flight.bytes() < WINDOW
                    && self.spool.take_appended(stream)
                {
                    // Sending had caught up: send it from memory, not read back from disk.
                    link.send(&mut self.in_flight, stream, seq, count, frame, note);
                }
            }
            Err(e) => {
                error!(
                    stream = stream.as_str(),
                    records = count,
                    "cannot encode a batch (over collector.max_frame_bytes?), counted as lost: {e}"
                );
                self.spool.lost(stream, count, &loss);
            }
        }
        self.want_housekeeping();
        self.audit_spool_drops();
    }

    /// What the spool gave up since last asked, into the audit log.
    fn audit_spool_drops(&mut self) {
        for d in self.spool.take_drops() {
            let reason = if d.revoked {
                "consent withdrawn"
            } else {
                "spool full"
            };
            self.write_audit(&[Event::SpoolDropped {
                scope: d.scope,
                records: d.records,
                bytes: d.bytes,
                reason: reason.into(),
            }]);
        }
    }

    /// Write spooled batches on the link while the window allows, metrics first (small,
    /// and the status page depends on them).
    fn pump(&mut self) {
        let Some(link) = &self.link else { return };
        'streams: for stream in [StreamId::Metrics, StreamId::Logs] {
            while self.in_flight.bytes() < WINDOW {
                let recs = match self.spool.take_unsent(stream, TAKE) {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(stream = stream.as_str(), "spool read failed: {e}");
                        break;
                    }
                };
                if recs.is_empty() {
                    break;
                }
                for r in recs {
                    let Some((note, frame)) = outbox::split(&r.payload) else {
                        warn!(seq = r.seq, "spool record without an envelope skipped");
                        continue;
                    };
                    if !link.send(
                        &mut self.in_flight,
                        stream,
                        r.seq,
                        r.count,
                        frame.to_vec(),
                        note,
                    ) {
                        break 'streams; // the writer is gone; the Closed event will follow
                    }
                }
            }
        }
        if !self.in_flight.is_empty() && self.waiting_since.is_none() {
            self.waiting_since = Some(Instant::now());
        }
    }

    fn send_msg(&self, msg: &AgentMsg) {
        if let Some(link) = &self.link
            && let Ok(frame) = codec::to_frame(msg, self.cfg.collector.max_frame_bytes)
        {
            let _ = link.frames.send(WriterCmd::Frame(frame));
        }
    }

    fn write_audit(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        if let Err(e) = self.audit.append(now_millis(), events) {
            warn!("{e}");
        }
    }

    /// Once a second: make the spool durable per its policy, store the checkpoint of the
    /// newest acknowledged log batch, and close the audit log's hour when it ends.
    /// Something (spooled data, an acknowledgement, a burst) wants `housekeeping` soon.
    fn want_housekeeping(&mut self) {
        self.housekeeping_at
            .get_or_insert_with(|| Instant::now() + HOUSEKEEPING);
    }

    fn housekeeping(&mut self) {
        self.housekeeping_at = None;
        if let Err(e) = self.spool.tick() {
            warn!("{e}");
        }
        if let Some(note) = self.acked_note.take() {
            match std::str::from_utf8(&note)
                .map_err(|e| e.to_string())
                .and_then(checkpoint::decode)
            {
                Ok(pos) => {
                    if let Err(e) = checkpoint::store(&self.cfg.checkpoint_path(), &pos) {
                        warn!("{e}");
                    }
                }
                Err(e) => warn!("log batch note unreadable, checkpoint not moved: {e}"),
            }
        }
        let ev = self.hourly.tick(now_millis());
        self.write_audit(&ev);
        // A burst of log lines leaves freed heap behind that glibc keeps (in the reader
        // thread's arena too): give it back once the burst is over and all is acknowledged,
        // or the agent's resident size stays at its peak (measured: 27 MiB after 1M lines,
        // against ~4 MiB before).
        if self.last_chunk.is_some() {
            self.want_housekeeping();
        }
        if self
            .last_chunk
            .is_some_and(|t| t.elapsed() >= 2 * HOUSEKEEPING)
            && self.in_flight.is_empty()
        {
            self.last_chunk = None;
            // SAFETY: malloc_trim only walks and releases the allocator's free memory.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }

    /// Bring the log reader, the spool and the checkpoint in line with consent. `starting`:
    /// the agent just started, so resume where the spool or checkpoint says.
    fn enforce_consent(&mut self, starting: bool) {
        for scope in Scope::ALL {
            if !self.allows(scope) {
                let n = self.spool.discard_scope(scope);
                if n > 0 {
                    info!(%scope, batches = n, "consent withdrawn: deleted unsent data");
                }
            }
        }
        self.audit_spool_drops();
        if !self.allows(Scope::Logs) {
            if let Some(r) = self.reader.take() {
                r.stop();
                info!("logs consent withdrawn: stopped reading log files");
            }
            self.acked_note = None;
            // Lines written while logs may not leave are never read: the next grant
            // starts at the files' ends.
            match std::fs::remove_file(self.cfg.checkpoint_path()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn!("cannot remove the log checkpoint: {e}"),
            }
            return;
        }
        if self.reader.is_some() || self.cfg.logs.is_empty() {
            return;
        }
        let mut sources = self.cfg.logs.clone();
        let checkpoint = if starting {
            self.resume_positions()
        } else {
            for s in &mut sources {
                s.start_at = StartAt::End;
            }
            None
        };
        let chunk_bytes = LOG_BATCH.min(self.cfg.collector.max_frame_bytes / 2);
        match Reader::start(ReaderConfig {
            sources,
            rules: self.rules.clone(),
            driver: Default::default(),
            checkpoint,
            chunk_bytes,
            local: self.local,
        }) {
            Ok(r) => {
                info!(sources = self.cfg.logs.len(), "following log files");
                self.reader = Some(r);
            }
            Err(e) => error!("cannot follow log files: {e}"),
        }
    }

    /// Where log reading resumes after a start: the newest log batch in the spool, else
    /// the checkpoint file, else nothing (each source's `start_at`).
    fn resume_positions(&mut self) -> Option<Vec<FilePosition>> {
        match self.spool.newest_payload(StreamId::Logs) {
            Ok(Some(p)) => match outbox::split(&p)
                .and_then(|(note, _)| std::str::from_utf8(note).ok())
                .map(checkpoint::decode)
            {
                Some(Ok(pos)) => return Some(pos),
                _ => warn!(
                    "the newest spooled log batch has no readable note; using the checkpoint file"
                ),
            },
            Ok(None) => {}
            Err(e) => warn!("{e}; using the checkpoint file"),
        }
        match checkpoint::load(&self.cfg.checkpoint_path()) {
            Ok(p) => p,
            Err(e) => {
                error!("{e}");
                None
            }
        }
    }

    fn on_consent_change(&mut self) {
        let state = self.consent.borrow_and_update().clone();
        // The watch already logged the change of scopes; this is the record itself.
        debug!(scopes = %scopes_str(&state.active), "consent record updated");
        // Grants and revocations are recorded by the command that made them; an expiry has
        // no command, so it is recorded here.
        let now = now_millis();
        let expired: Vec<Event> = self
            .active
            .iter()
            .filter(|s| !state.allows(**s))
            .filter(|s| {
                state
                    .record
                    .grant(**s)
                    .and_then(|g| g.until)
                    .is_some_and(|u| u <= now)
            })
            .map(|&scope| Event::ConsentExpired { scope })
            .collect();
        self.write_audit(&expired);
        self.active = state.active.clone();
        self.enforce_consent(false);
        // Tell the collector what the customer decided, then hang up if nothing may flow.
        self.send_msg(&AgentMsg::ConsentUpdate(state.record.clone()));
        if !self.wants_link() {
            self.close_link("consent withdrawn");
        }
    }

    fn on_connected(&mut self, link: Link) {
        let Link {
            conn,
            mut send,
            mut recv,
            welcome,
        } = link;
        self.attempt = 0;
        self.generation += 1;
        let generation = self.generation;
        info!(
            collector = %conn.remote_address(),
            identity = %welcome.identity,
            collector_version = %welcome.collector_version,
            "connected"
        );
        for (stream, hw) in &welcome.high_water {
            self.adopt_high_water(*stream, *hw);
        }
        self.welcomed = true;
        let diag_conn = conn.clone();
        let reader_conn = conn.clone();
        // Writer: frames from the main task, in order.
        let (frames_tx, mut frames_rx) = mpsc::unbounded_channel::<WriterCmd>();
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let mut why = String::from("agent done");
            while let Some(cmd) = frames_rx.recv().await {
                match cmd {
                    WriterCmd::Frame(f) => {
                        if let Err(e) = send.write_all(&f).await {
                            let _ = events.send(LinkEvent::Closed(generation, e.to_string(), None));
                            return;
                        }
                        transport::count_sent(f.len());
                    }
                    WriterCmd::Close(w) => {
                        why = w;
                        break;
                    }
                }
            }
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
            conn.close(0u32.into(), why.as_bytes());
        });
        // Reader: acknowledgements back to the main task.
        let events = self.events_tx.clone();
        let max = self.cfg.collector.max_frame_bytes;
        tokio::spawn(async move {
            let why = loop {
                match transport::read_msg(&mut recv, max).await {
                    Ok(Some(m)) => {
                        if events.send(LinkEvent::Msg(generation, m)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => break "collector closed the stream".to_string(),
                    Err(e) => break e.to_string(),
                }
            };
            // A stopping collector finishes the stream, then closes saying when to come
            // back: wait (briefly) for that close before reporting the link lost.
            let window = tokio::time::timeout(CLOSE_PATIENCE, reader_conn.closed())
                .await
                .ok()
                .and_then(|e| transport::return_window(&e));
            let _ = events.send(LinkEvent::Closed(generation, why, window));
        });
        // Diagnostic streams the collector opens on this connection: their own task, so a
        // probe never holds up batches or acknowledgements.
        let diag_stop = self.shutdown.child_token();
        tokio::spawn(diagnostics::serve(
            diag_conn,
            self.diagnostics.clone(),
            diag_stop.clone(),
        ));
        self.link = Some(Connected {
            generation,
            frames: frames_tx,
            _diagnostics: diag_stop.drop_guard(),
        });
        if welcome.protocol_version >= protocol::DIAGNOSTICS_PROTOCOL {
            self.send_msg(&AgentMsg::Probes(self.diagnostics.advertised()));
        }
        // The Hello may predate a consent change made while connecting.
        let current = self.consent.borrow().record.clone();
        if current != self.hello_consent {
            self.send_msg(&AgentMsg::ConsentUpdate(current));
        }
        self.in_flight.clear();
        self.spool.rewind();
        self.pump();
    }

    /// If the collector holds sequence numbers that are not ours but not below ours either,
    /// our state directory was lost or copied: move past them and number the spooled
    /// batches of that stream anew (none of them can have been stored, as none of them was
    /// acknowledged).
    fn adopt_high_water(&mut self, stream: StreamId, hw: u64) {
        let Some(new_epoch) = epoch_after_welcome(self.epoch, self.welcomed, hw) else {
            return;
        };
        warn!(
            our_epoch = self.epoch,
            collector_epoch = seq_epoch(hw),
            "the collector has seen newer sequence numbers for this host (state directory lost or copied?); moving to epoch {new_epoch}"
        );
        if let Err(e) = state::store_epoch(&self.cfg.state_dir, new_epoch) {
            error!("{e}");
        }
        self.epoch = new_epoch;
        self.welcomed = false;
        self.counter = 0;
        let max = self.cfg.collector.max_frame_bytes;
        let mut counter = 0u32;
        let res = self.spool.renumber(stream, |payload| {
            let seq = protocol::seq(new_epoch, counter);
            counter += 1;
            let renumbered = outbox::split(payload).and_then(|(note, frame)| {
                let Ok(AgentMsg::Batch(mut b)) = codec::decode_body::<AgentMsg>(&frame[4..]) else {
                    return None;
                };
                b.seq = seq;
                let f = codec::to_frame(&AgentMsg::Batch(b), max).ok()?;
                Some(outbox::wrap(note, &f))
            });
            // Undecodable: keep the bytes; the collector rejects it, and it is counted.
            (seq, renumbered.unwrap_or_else(|| payload.to_vec()))
        });
        match res {
            Ok(n) => info!(
                stream = stream.as_str(),
                batches = n,
                "renumbered spooled batches"
            ),
            Err(e) => error!("renumbering the spool failed: {e}"),
        }
        self.counter = counter;
    }

    fn on_connect_failed(&mut self, e: LinkError, retry_at: &mut Instant) {
        let wait = transport::retry_wait(
            self.attempt,
            self.cfg.collector.reconnect_min,
            self.cfg.collector.reconnect_max,
            e.is_refused_attempt(),
            self.jitter.next01(),
        );
        self.attempt = self.attempt.saturating_add(1);
        // A refusal is a configuration problem, not a network blip: say it loudly.
        if matches!(e, LinkError::Refused(_)) {
            error!("{e}; retrying in {wait:.1?}");
        } else {
            warn!("{e}; retrying in {wait:.1?}");
        }
        *retry_at = Instant::now() + wait;
    }

    fn settle(&mut self, stream: StreamId, seq: u64, sent: bool) {
        let done = self.in_flight.ack(stream, seq);
        if sent {
            let now = now_millis();
            let (mut records, mut bytes) = (0u64, 0u64);
            for s in &done {
                records += u64::from(s.count);
                bytes += s.bytes as u64;
            }
            if records > 0 || bytes > 0 {
                let ev = self.hourly.sent(
                    now,
                    stream.scope(),
                    &self.cfg.collector.address,
                    records,
                    bytes,
                );
                self.write_audit(&ev);
            }
        }
        if stream == StreamId::Logs
            && let Some(last) = done.into_iter().next_back()
            && !last.note.is_empty()
        {
            self.acked_note = Some(last.note);
        }
        if sent {
            self.spool.ack(stream, seq);
        } else {
            self.spool.reject(stream, seq);
        }
        self.want_housekeeping();
        // Progress: the clock restarts for what is still in flight.
        self.waiting_since = (!self.in_flight.is_empty()).then(Instant::now);
        self.pump();
    }

    fn on_link_event(&mut self, ev: LinkEvent, retry_at: &mut Instant) {
        let current = self.link.as_ref().map(|l| l.generation);
        match ev {
            LinkEvent::Msg(g, msg) if Some(g) == current => match msg {
                CollectorMsg::Ack {
                    stream,
                    seq,
                    duplicate,
                } => {
                    debug!(stream = stream.as_str(), seq, duplicate, "ack");
                    self.settle(stream, seq, true);
                }
                CollectorMsg::Rejected {
                    stream,
                    seq,
                    reason,
                } => {
                    warn!(
                        stream = stream.as_str(),
                        seq, "collector rejected a batch: {reason}"
                    );
                    self.settle(stream, seq, false);
                }
                CollectorMsg::Refused { reason } => {
                    error!("collector ended the session: {reason}");
                }
                CollectorMsg::Welcome(_) => warn!("unexpected second Welcome ignored"),
            },
            LinkEvent::Closed(g, why, window) if Some(g) == current => {
                self.link = None;
                self.waiting_since = None;
                self.in_flight.clear();
                let wait = transport::first_wait(
                    window,
                    self.cfg.collector.reconnect_min,
                    self.cfg.collector.reconnect_max,
                    self.jitter.next01(),
                );
                match window {
                    Some(w) => info!(
                        "link lost: {why}; the collector is stopping and spreads its agents' \
                         return over {w:.1?}: reconnecting in {wait:.1?}"
                    ),
                    None => warn!("link lost: {why}"),
                }
                *retry_at = Instant::now() + wait;
            }
            _ => {} // from an earlier link
        }
    }

    fn close_link(&mut self, why: &str) {
        self.waiting_since = None;
        self.in_flight.clear();
        if let Some(link) = self.link.take() {
            info!("closing link: {why}");
            let _ = link.frames.send(WriterCmd::Close(why.to_string()));
        }
    }
}

/// The epoch to move to after a Welcome carrying high-water mark `hw`, if we must move.
///
/// Before the first Welcome of an epoch nothing of it has been sent, so any mark in it or
/// beyond belongs to someone else (a lost or copied state directory). After it, marks in
/// our epoch are our own, and only a later epoch means a clash.
pub fn epoch_after_welcome(epoch: u32, welcomed: bool, hw: u64) -> Option<u32> {
    let theirs = seq_epoch(hw);
    let clash = if welcomed {
        theirs > epoch
    } else {
        theirs >= epoch
    };
    clash.then(|| theirs.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aftercare_shared::protocol::seq;

    #[test]
    fn epochs_move_only_past_foreign_sequence_numbers() {
        // (our epoch, welcomed before, collector's mark) -> new epoch
        let cases = [
            (5, false, seq(4, 900), None),  // older epoch: ours from an earlier run
            (5, false, seq(5, 0), Some(6)), // our fresh epoch already used: state was lost
            (5, false, seq(9, 3), Some(10)), // far ahead: state was lost long ago
            (5, true, seq(5, 40), None),    // our own batches of this run
            (5, true, seq(6, 0), Some(7)),  // someone else numbers past us
            (1, false, 0, None),            // a new host: the collector holds nothing
        ];
        for (epoch, welcomed, hw, want) in cases {
            assert_eq!(
                epoch_after_welcome(epoch, welcomed, hw),
                want,
                "{epoch} {welcomed} {hw:#x}"
            );
        }
    }
}

//! The running agent: collect on a timer, gate by consent, keep a backlog, stream it to the
//! collector and forget each batch only when the collector has acknowledged it.
//!
//! One task owns all state (consent, backlog, the current link); connecting and the link's
//! reads and writes run in tasks of their own that report back over channels, so a slow
//! collector never delays a tick.

use crate::backlog::{Backlog, Entry};
use crate::config::AgentConfig;
use crate::consent::{self, ConsentState, scopes_str};
use crate::metrics::Collector;
use crate::state;
use crate::transport::{self, Jitter, Link, LinkError};
use aftercare_shared::codec;
use aftercare_shared::consent::Scope;
use aftercare_shared::model::HostFacts;
use aftercare_shared::protocol::{
    self, AgentMsg, Batch, CollectorMsg, Hello, Payload, StreamId, seq_epoch,
};
use aftercare_shared::time_fmt::now_millis;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// How long a shutdown waits for acknowledgements of batches already sent.
const DRAIN: Duration = Duration::from_secs(2);

/// What the link's tasks report.
enum LinkEvent {
    Msg(u64, CollectorMsg),
    Closed(u64, String),
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
}

pub struct Agent {
    cfg: AgentConfig,
    consent: watch::Receiver<ConsentState>,
    collector: Collector,
    facts: HostFacts,
    backlog: Backlog,
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
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let mut agent = Agent {
        backlog: Backlog::new(cfg.backlog.max_batches, cfg.backlog.max_bytes),
        cfg,
        consent,
        collector,
        facts,
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
    };
    info!(
        host = %agent.facts.hostname,
        collector = %agent.cfg.collector.address,
        interval = ?agent.cfg.interval,
        consent = %scopes_str(&agent.consent.borrow().active),
        "aftercare-agent {} started", aftercare_shared::VERSION
    );
    agent.main_loop(client, shutdown).await
}

impl Agent {
    fn wants_link(&self) -> bool {
        self.consent.borrow().allows(Scope::Metrics)
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
            tokio::select! {
                _ = shutdown.cancelled(), if draining.is_none() => {
                    if self.link.is_none() || self.backlog.is_empty() {
                        break;
                    }
                    info!(unacked = self.backlog.len(), "shutting down: waiting up to {DRAIN:?} for acknowledgements");
                    draining = Some(Instant::now() + DRAIN);
                }
                _ = async { tokio::time::sleep_until(draining.expect("guarded")).await }, if draining.is_some() => break,
                changed = self.consent.changed() => {
                    if changed.is_err() { break; }
                    self.on_consent_change();
                }
                _ = tick.tick(), if draining.is_none() => self.on_tick(),
                _ = async { tokio::time::sleep_until(self.waiting_since.expect("guarded") + self.cfg.collector.ack_timeout).await },
                    if self.waiting_since.is_some() && self.link.is_some() => {
                    warn!(
                        in_flight = self.backlog.in_flight(),
                        "no acknowledgement for {:?}: taking the link for dead",
                        self.cfg.collector.ack_timeout
                    );
                    self.close_link("no acknowledgements");
                    retry_at = Instant::now();
                    if draining.is_some() { break; }
                }
                Some(ev) = self.events_rx.recv() => {
                    self.on_link_event(ev, &mut retry_at);
                    if draining.is_some() && self.backlog.is_empty() { break; }
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
        if !self.backlog.is_empty() {
            warn!(
                unacked = self.backlog.len(),
                "batches not acknowledged at shutdown are lost (the agent keeps them in memory only)"
            );
        }
        self.close_link("agent shutting down");
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

    fn on_tick(&mut self) {
        // No consent, no collection: nothing is even gathered for sending.
        if !self.consent.borrow().allows(Scope::Metrics) {
            return;
        }
        let snapshot = self.collector.collect(now_millis());
        let samples = snapshot.samples.len() as u64;
        let loss = self.backlog.take_owed();
        let seq = protocol::seq(self.epoch, self.counter);
        self.counter = self.counter.wrapping_add(1);
        let batch = Batch {
            seq,
            claimed_host: None,
            payload: Payload::Metrics { snapshot, loss },
        };
        match codec::to_frame(&AgentMsg::Batch(batch), self.cfg.collector.max_frame_bytes) {
            Ok(frame) => {
                let before = self.backlog.total_dropped;
                self.backlog.push(Entry {
                    stream: StreamId::Metrics,
                    seq,
                    frame,
                    samples,
                    carried: loss,
                });
                if self.backlog.total_dropped > before {
                    warn!(
                        dropped_total = self.backlog.total_dropped,
                        "backlog full: dropped the oldest batch (reported to the collector)"
                    );
                }
            }
            Err(e) => error!("cannot encode a metrics batch: {e}"),
        }
        self.flush();
    }

    /// Write every batch not yet written on the current link.
    fn flush(&mut self) {
        let Some(link) = &self.link else { return };
        for e in self.backlog.take_unsent() {
            if link.frames.send(WriterCmd::Frame(e.frame.clone())).is_err() {
                break; // the writer is gone; the Closed event will follow
            }
        }
        if self.backlog.in_flight() > 0 && self.waiting_since.is_none() {
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

    fn on_consent_change(&mut self) {
        let state = self.consent.borrow_and_update().clone();
        // The watch already logged the change of scopes; this is the record itself.
        debug!(scopes = %scopes_str(&state.active), "consent record updated");
        for scope in Scope::ALL {
            if !state.allows(scope) {
                let n = self.backlog.discard_scope(scope);
                if n > 0 {
                    info!(%scope, batches = n, "consent withdrawn: deleted unsent data");
                }
            }
        }
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
        // Writer: frames from the main task, in order.
        let (frames_tx, mut frames_rx) = mpsc::unbounded_channel::<WriterCmd>();
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let mut why = String::from("agent done");
            while let Some(cmd) = frames_rx.recv().await {
                match cmd {
                    WriterCmd::Frame(f) => {
                        if let Err(e) = send.write_all(&f).await {
                            let _ = events.send(LinkEvent::Closed(generation, e.to_string()));
                            return;
                        }
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
            let _ = events.send(LinkEvent::Closed(generation, why));
        });
        self.link = Some(Connected {
            generation,
            frames: frames_tx,
        });
        // The Hello may predate a consent change made while connecting.
        let current = self.consent.borrow().record.clone();
        if current != self.hello_consent {
            self.send_msg(&AgentMsg::ConsentUpdate(current));
        }
        self.backlog.rewind();
        self.flush();
    }

    /// If the collector holds sequence numbers that are not ours but not below ours either,
    /// our state directory was lost or copied: move past them and number the backlog anew
    /// (none of it can have been stored, as none of it was acknowledged).
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
        let mut counter = 0u32;
        let max = self.cfg.collector.max_frame_bytes;
        self.backlog.renumber(stream, |e| {
            let seq = protocol::seq(new_epoch, counter);
            counter += 1;
            if let Ok(AgentMsg::Batch(mut b)) = codec::decode_body::<AgentMsg>(&e.frame[4..]) {
                b.seq = seq;
                if let Ok(f) = codec::to_frame(&AgentMsg::Batch(b), max) {
                    e.frame = f;
                    e.seq = seq;
                }
            }
        });
        self.counter = counter;
    }

    fn on_connect_failed(&mut self, e: LinkError, retry_at: &mut Instant) {
        let wait = transport::backoff(
            self.attempt,
            self.cfg.collector.reconnect_min,
            self.cfg.collector.reconnect_max,
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

    fn on_link_event(&mut self, ev: LinkEvent, retry_at: &mut Instant) {
        let current = self.link.as_ref().map(|l| l.generation);
        match ev {
            LinkEvent::Msg(g, msg) if Some(g) == current => match msg {
                CollectorMsg::Ack {
                    stream,
                    seq,
                    duplicate,
                } => {
                    let n = self.backlog.ack(stream, seq);
                    debug!(stream = stream.as_str(), seq, duplicate, done = n, "ack");
                    // Progress: the clock restarts for what is still in flight.
                    self.waiting_since = (self.backlog.in_flight() > 0).then(Instant::now);
                }
                CollectorMsg::Rejected {
                    stream,
                    seq,
                    reason,
                } => {
                    self.backlog.reject(stream, seq);
                    self.waiting_since = (self.backlog.in_flight() > 0).then(Instant::now);
                    warn!(
                        stream = stream.as_str(),
                        seq, "collector rejected a batch: {reason}"
                    );
                }
                CollectorMsg::Refused { reason } => {
                    error!("collector ended the session: {reason}");
                }
                CollectorMsg::Welcome(_) => warn!("unexpected second Welcome ignored"),
            },
            LinkEvent::Closed(g, why) if Some(g) == current => {
                warn!("link lost: {why}");
                self.link = None;
                self.waiting_since = None;
                let wait = transport::backoff(
                    0,
                    self.cfg.collector.reconnect_min,
                    self.cfg.collector.reconnect_max,
                    self.jitter.next01(),
                );
                *retry_at = Instant::now() + wait;
            }
            _ => {} // from an earlier link
        }
    }

    fn close_link(&mut self, why: &str) {
        self.waiting_since = None;
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

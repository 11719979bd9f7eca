//! The collector's own health for Prometheus: `GET /metrics` beside the API, in the
//! Prometheus text format (0.0.4), without a token — so it says only aggregates, never a
//! customer's or a host's name.
//!
//! One [`Telemetry`] per running collector, handed to ingest, the writer and the findings
//! thread (not a global: tests run several collectors in one process). Counters and
//! histograms are updated where things happen; what is cheaper to read than to track (the
//! writer's queue, the webhooks' dead letters, the process's memory and descriptors) is
//! read when scraped.

use crate::store::CommitOutcome;
use aftercare_shared::model::LossReport;
use aftercare_shared::protocol::StreamId;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// What `/metrics` answers with.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every name starts with this.
pub const PREFIX: &str = "aftercare_collector";

/// One label from a fixed set of values (a stream, a reason, a level): never a name a
/// customer chose.
type Label = [(&'static str, &'static str); 1];

/// Why a connection was closed before its Welcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The TLS handshake failed: unknown CA, expired or missing certificate, wrong ALPN.
    Tls,
    /// The certificate names no aftercare identity.
    Certificate,
    /// No Hello in time, or not a Hello.
    Hello,
    /// A protocol version this collector does not take.
    Version,
    /// The Hello claims another identity than the certificate's.
    Claim,
    /// The store could not register the host.
    Store,
    /// The collector was shutting down.
    Stopping,
    /// No place among the `ingest.max_connecting` attempts in progress came free in time.
    Busy,
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Refusal::Tls,
        Refusal::Certificate,
        Refusal::Hello,
        Refusal::Version,
        Refusal::Claim,
        Refusal::Store,
        Refusal::Stopping,
        Refusal::Busy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Tls => "tls",
            Refusal::Certificate => "certificate",
            Refusal::Hello => "hello",
            Refusal::Version => "version",
            Refusal::Claim => "claim",
            Refusal::Store => "store",
            Refusal::Stopping => "stopping",
            Refusal::Busy => "busy",
        }
    }
}

/// Fault levels of findings, as their label says them.
const LEVELS: [&str; 4] = ["L1", "L2", "L3", "L4"];

/// What one batch brought, counted once it is stored (a redelivery is not counted again,
/// as the store does not count it again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchTally {
    pub samples: u64,
    pub log_records: u64,
    pub loss: LossReport,
}

/// Per stream: batches, and what agents report they had to give up.
#[derive(Debug, Default)]
struct ByStream {
    received: Family<Label, Counter>,
    stored: Family<Label, Counter>,
    duplicates: Family<Label, Counter>,
    rejected: Family<Label, Counter>,
    dropped_batches: Family<Label, Counter>,
    dropped_records: Family<Label, Counter>,
    revoked_batches: Family<Label, Counter>,
}

pub struct Telemetry {
    registry: Registry,
    agents_connected: Gauge,
    accepted: Counter,
    refused: Family<Label, Counter>,
    streams: ByStream,
    samples_stored: Counter,
    log_records_stored: Counter,
    ack_latency: Histogram,
    handshake_duration: Histogram,
    commit_latency: Histogram,
    commit_group: Histogram,
    commit_failures: Counter,
    writer_queue: Probe,
    connecting: Probe,
    connecting_queued: Probe,
    pass_duration: Histogram,
    pass_failures: Counter,
    findings_lease: Gauge,
    findings_open: Family<Label, Gauge>,
    webhook_delivered: Probe,
    webhook_dead_letters: Probe,
    tls_tickets_issued: Probe,
    tls_resumed: Probe,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

/// From 1 ms to 10 s, about three a decade: acknowledgements and commits.
const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// A findings pass reads windows of every host: from 10 ms to 2 minutes.
const PASS_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];
/// Batches per commit: powers of two up to 1024 (the writer's bound is configurable).
const GROUP_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

impl Telemetry {
    pub fn new() -> Telemetry {
        let mut r = Registry::with_prefix(PREFIX);
        r.register(
            "build",
            "The collector's version and the newest agent protocol it speaks",
            Info::new(vec![
                ("version", aftercare_shared::VERSION.to_string()),
                (
                    "protocol",
                    aftercare_shared::protocol::PROTOCOL_VERSION.to_string(),
                ),
            ]),
        );
        let t = Telemetry {
            agents_connected: Gauge::default(),
            accepted: Counter::default(),
            refused: Family::default(),
            streams: ByStream::default(),
            samples_stored: Counter::default(),
            log_records_stored: Counter::default(),
            ack_latency: Histogram::new(LATENCY_BUCKETS),
            handshake_duration: Histogram::new(LATENCY_BUCKETS),
            commit_latency: Histogram::new(LATENCY_BUCKETS),
            commit_group: Histogram::new(GROUP_BUCKETS),
            commit_failures: Counter::default(),
            writer_queue: Probe::new(MetricType::Gauge),
            connecting: Probe::new(MetricType::Gauge),
            connecting_queued: Probe::new(MetricType::Gauge),
            pass_duration: Histogram::new(PASS_BUCKETS),
            pass_failures: Counter::default(),
            findings_lease: Gauge::default(),
            findings_open: Family::default(),
            webhook_delivered: Probe::new(MetricType::Counter),
            webhook_dead_letters: Probe::new(MetricType::Counter),
            tls_tickets_issued: Probe::new(MetricType::Counter),
            tls_resumed: Probe::new(MetricType::Counter),
            registry: Registry::default(),
        };
        // Every label value from the start, at zero: a rate needs the series before its
        // first increment.
        for reason in Refusal::ALL {
            let _ = t.refused.get_or_create(&[("reason", reason.as_str())]);
        }
        for s in StreamId::ALL {
            let l = [("stream", s.as_str())];
            let b = &t.streams;
            for f in [
                &b.received,
                &b.stored,
                &b.duplicates,
                &b.rejected,
                &b.dropped_batches,
                &b.dropped_records,
                &b.revoked_batches,
            ] {
                let _ = f.get_or_create(&l);
            }
        }
        for level in LEVELS {
            let _ = t.findings_open.get_or_create(&[("level", level)]);
        }
        r.register(
            "agents_connected",
            "Agent connections welcomed and still open",
            t.agents_connected.clone(),
        );
        r.register(
            "connections_accepted",
            "Agent connections welcomed (identity, Hello and consent record accepted)",
            t.accepted.clone(),
        );
        r.register(
            "connections_refused",
            "Agent connections closed before their Welcome, by reason",
            t.refused.clone(),
        );
        let b = &t.streams;
        r.register(
            "batches_received",
            "Batches read from agents, by stream",
            b.received.clone(),
        );
        r.register(
            "batches_stored",
            "Batches committed to the store and acknowledged, by stream",
            b.stored.clone(),
        );
        r.register(
            "batches_duplicate",
            "Batches received again after they were stored, acknowledged again and not stored twice, by stream",
            b.duplicates.clone(),
        );
        r.register(
            "batches_rejected",
            "Batches refused (no consent for their scope, or an unreadable log block), by stream",
            b.rejected.clone(),
        );
        r.register(
            "samples_stored",
            "Metric samples in the batches stored",
            t.samples_stored.clone(),
        );
        r.register(
            "log_records_stored",
            "Log records in the batches stored",
            t.log_records_stored.clone(),
        );
        r.register_with_unit(
            "ack_latency",
            "From a batch fully read to its acknowledgement written",
            Unit::Seconds,
            t.ack_latency.clone(),
        );
        r.register_with_unit(
            "handshake_duration",
            "From an admitted connection attempt's place to its finished TLS handshake",
            Unit::Seconds,
            t.handshake_duration.clone(),
        );
        r.register_with_unit(
            "store_commit_duration",
            "The writer's commit of one group of batches (one transaction, one fsync)",
            Unit::Seconds,
            t.commit_latency.clone(),
        );
        r.register(
            "store_commit_batches",
            "Batches per commit",
            t.commit_group.clone(),
        );
        r.register(
            "store_commit_failures",
            "Commits that failed (their batches were not acknowledged; agents send them again)",
            t.commit_failures.clone(),
        );
        r.register(
            "writer_queue_depth",
            "Requests waiting for the store writer thread",
            t.writer_queue.clone(),
        );
        r.register(
            "connecting",
            "Connection attempts in their handshake, Hello or registration (at most ingest.max_connecting)",
            t.connecting.clone(),
        );
        r.register(
            "connecting_queued",
            "Connection attempts waiting for a place among those connecting",
            t.connecting_queued.clone(),
        );
        r.register_with_unit(
            "findings_pass_duration",
            "One pass of the rules over every host, with its store reads and writes",
            Unit::Seconds,
            t.pass_duration.clone(),
        );
        r.register(
            "findings_pass_failures",
            "Findings passes that failed (tried again at the next)",
            t.pass_failures.clone(),
        );
        r.register(
            "findings_rules_lease_held",
            "1 while this collector runs the rules passes; 0 while another collector on the same database does",
            t.findings_lease.clone(),
        );
        r.register(
            "findings_open",
            "Findings open after the last pass, by fault level",
            t.findings_open.clone(),
        );
        r.register(
            "agent_spool_dropped_batches",
            "Batches agents report they dropped from their full spool, summed over hosts, by stream",
            b.dropped_batches.clone(),
        );
        r.register(
            "agent_spool_dropped_records",
            "Samples (metrics) or lines (logs) in the batches agents dropped, summed over hosts, by stream",
            b.dropped_records.clone(),
        );
        r.register(
            "agent_revoked_batches_discarded",
            "Batches agents discarded unsent because their scope's consent was revoked, by stream",
            b.revoked_batches.clone(),
        );
        r.register(
            "webhook_deliveries",
            "Notifications a webhook receiver accepted, summed over webhooks",
            t.webhook_delivered.clone(),
        );
        r.register(
            "webhook_dead_letters",
            "Notifications given up (attempts used, queue full, or shutdown), summed over webhooks",
            t.webhook_dead_letters.clone(),
        );
        r.register(
            "tls_tickets_issued",
            "TLS session tickets given to agents, so a reconnect resumes without a full handshake",
            t.tls_tickets_issued.clone(),
        );
        r.register(
            "tls_resumed_handshakes",
            "Handshakes that resumed a session from a ticket (no certificate verified again)",
            t.tls_resumed.clone(),
        );
        r.register_collector(Box::new(ProcessCollector));
        Telemetry { registry: r, ..t }
    }

    /// The exposition text, as `/metrics` serves it.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    pub fn connection_refused(&self, why: Refusal) {
        self.refused
            .get_or_create(&[("reason", why.as_str())])
            .inc();
    }

    /// Connections refused so far for this reason.
    pub fn refused(&self, why: Refusal) -> u64 {
        self.refused
            .get_or_create(&[("reason", why.as_str())])
            .get()
    }

    /// Agents welcomed and still connected.
    pub fn agents_connected_now(&self) -> u64 {
        self.agents_connected.get().max(0) as u64
    }

    /// An agent welcomed: counted as accepted and connected until the guard is dropped.
    pub fn agent_connected(&self) -> Connected<'_> {
        self.accepted.inc();
        self.agents_connected.inc();
        Connected(self)
    }

    pub fn batch_received(&self, stream: StreamId) {
        self.stream(&self.streams.received, stream).inc();
    }

    pub fn batch_rejected(&self, stream: StreamId) {
        self.stream(&self.streams.rejected, stream).inc();
    }

    /// A batch's commit answered; what it brought counts only the first time it is stored.
    pub fn batch_committed(&self, stream: StreamId, outcome: CommitOutcome, tally: &BatchTally) {
        let s = &self.streams;
        if outcome == CommitOutcome::Duplicate {
            self.stream(&s.duplicates, stream).inc();
            return;
        }
        self.stream(&s.stored, stream).inc();
        self.samples_stored.inc_by(tally.samples);
        self.log_records_stored.inc_by(tally.log_records);
        let l = &tally.loss;
        if !l.is_empty() {
            self.stream(&s.dropped_batches, stream)
                .inc_by(l.dropped_batches);
            self.stream(&s.dropped_records, stream)
                .inc_by(l.dropped_samples);
            self.stream(&s.revoked_batches, stream)
                .inc_by(l.discarded_by_revocation);
        }
    }

    /// An admitted attempt's handshake finished, `took` after it got its place.
    pub fn handshake_done(&self, took: Duration) {
        self.handshake_duration.observe(took.as_secs_f64());
    }

    pub fn ack_written(&self, since_read: Duration) {
        self.ack_latency.observe(since_read.as_secs_f64());
    }

    /// The writer's commit of `batches` took `took`.
    pub fn commit_done(&self, took: Duration, batches: usize, ok: bool) {
        self.commit_latency.observe(took.as_secs_f64());
        self.commit_group.observe(batches as f64);
        if !ok {
            self.commit_failures.inc();
        }
    }

    /// A findings pass took `took`; `open_by_level` (L1..L4) when it succeeded.
    pub fn findings_pass(&self, took: Duration, open_by_level: Option<[u64; 4]>) {
        self.pass_duration.observe(took.as_secs_f64());
        self.findings_lease.set(1);
        match open_by_level {
            Some(open) => {
                for (level, n) in LEVELS.iter().zip(open) {
                    self.findings_open
                        .get_or_create(&[("level", level)])
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
            }
            None => {
                self.pass_failures.inc();
            }
        }
    }

    /// Another collector on the database holds the rules lease: this one has no findings
    /// figures of its own, so it shows none rather than stale ones.
    pub fn findings_lease_elsewhere(&self) {
        self.findings_lease.set(0);
        self.findings_open.clear();
    }

    /// Read the writer's queue when scraped (set once, when the writer starts).
    pub fn watch_writer_queue(&self, depth: impl Fn() -> u64 + Send + Sync + 'static) {
        self.writer_queue.set(depth);
    }

    /// Read the connection attempts in progress and waiting when scraped (set once, by
    /// ingest).
    pub fn watch_connecting(
        &self,
        in_progress: impl Fn() -> u64 + Send + Sync + 'static,
        queued: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        self.connecting.set(in_progress);
        self.connecting_queued.set(queued);
    }

    /// Sum the webhooks' counts when scraped (set once, when the notifier starts).
    pub fn watch_webhooks(&self, hooks: Vec<Arc<crate::notify::WebhookStats>>) {
        let hooks = Arc::new(hooks);
        let h = hooks.clone();
        self.webhook_delivered
            .set(move || h.iter().map(|s| s.delivered.load(Ordering::Relaxed)).sum());
        self.webhook_dead_letters.set(move || {
            hooks
                .iter()
                .map(|s| s.dead_letters.load(Ordering::Relaxed))
                .sum()
        });
    }

    /// Read the session tickets' counts when scraped (set once, at start).
    pub fn watch_tickets(&self, counts: Arc<crate::tls::tickets::TicketCounts>) {
        let c = counts.clone();
        self.tls_tickets_issued
            .set(move || c.issued.load(Ordering::Relaxed));
        self.tls_resumed
            .set(move || counts.accepted.load(Ordering::Relaxed));
    }

    fn stream<'a>(
        &'a self,
        family: &'a Family<Label, Counter>,
        stream: StreamId,
    ) -> impl std::ops::Deref<Target = Counter> + 'a {
        family.get_or_create(&[("stream", stream.as_str())])
    }
}

/// An agent counted as connected while this lives.
pub struct Connected<'a>(&'a Telemetry);

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.agents_connected.dec();
    }
}

/// `GET /metrics`, served beside the API (like the web desk): outside `/api/v1`, so no
/// token is asked and the route table and its OpenAPI document stay the API's alone.
pub fn router<S: Clone + Send + Sync + 'static>(telemetry: Arc<Telemetry>) -> Router<S> {
    Router::new().route(
        "/metrics",
        get(move || {
            let t = telemetry.clone();
            async move { exposition(&t) }
        }),
    )
}

fn exposition(t: &Telemetry) -> Response {
    match t.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        // Only a failing writer fails encoding, and a String does not fail.
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A value read when scraped from a source wired in after start; nothing until then.
#[derive(Clone)]
struct Probe {
    kind: MetricType,
    read: Arc<OnceLock<Box<dyn Fn() -> u64 + Send + Sync>>>,
}

impl Probe {
    fn new(kind: MetricType) -> Probe {
        Probe {
            kind,
            read: Arc::new(OnceLock::new()),
        }
    }

    fn set(&self, f: impl Fn() -> u64 + Send + Sync + 'static) {
        if self.read.set(Box::new(f)).is_err() {
            tracing::warn!("a telemetry probe was wired twice; keeping the first");
        }
    }
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe").field("kind", &self.kind).finish()
    }
}

impl EncodeMetric for Probe {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let v = self.read.get().map_or(0, |f| f());
        match self.kind {
            MetricType::Counter => encoder.encode_counter::<NoLabelSet, _, u64>(&v, None),
            _ => encoder.encode_gauge(&v),
        }
    }

    fn metric_type(&self) -> MetricType {
        self.kind
    }
}

/// The process as Linux's /proc/self shows it, read at each scrape; a figure that cannot
/// be read is left out.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let p = ProcessFigures::read();
        let name = |n: &str| format!("process_{n}");
        if let Some(v) = p.resident_bytes {
            let m = ConstGauge::new(v);
            m.encode(encoder.encode_descriptor(
                &name("resident_memory"),
                "Resident memory size.",
                Some(&Unit::Bytes),
                m.metric_type(),
            )?)?;
        }
        if let Some(v) = p.open_fds {
            let m = ConstGauge::new(v);
            m.encode(encoder.encode_descriptor(
                &name("open_fds"),
                "Open file descriptors.",
                None,
                m.metric_type(),
            )?)?;
        }
        if let Some(v) = p.start_time {
            let m = ConstGauge::new(v);
            m.encode(encoder.encode_descriptor(
                &name("start_time"),
                "Start time of the process since the Unix epoch.",
                Some(&Unit::Seconds),
                m.metric_type(),
            )?)?;
        }
        if let Some(v) = p.cpu_seconds {
            let m = ConstCounter::new(v);
            m.encode(encoder.encode_descriptor(
                &name("cpu"),
                "User and system CPU time spent.",
                Some(&Unit::Seconds),
                m.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[derive(Debug, Default, PartialEq)]
struct ProcessFigures {
    resident_bytes: Option<u64>,
    open_fds: Option<u64>,
    start_time: Option<f64>,
    cpu_seconds: Option<f64>,
}

impl ProcessFigures {
    fn read() -> ProcessFigures {
        // SAFETY: sysconf only reads a system constant.
        let (tick, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let file = |p: &str| std::fs::read_to_string(p).ok();
        let stat = file("/proc/self/stat").and_then(|s| parse_stat(&s));
        let boot = file("/proc/stat").and_then(|s| parse_btime(&s));
        let tick = (tick > 0).then_some(tick as f64);
        ProcessFigures {
            resident_bytes: file("/proc/self/statm")
                .and_then(|s| parse_statm_resident(&s))
                .zip((page > 0).then_some(page as u64))
                .map(|(pages, size)| pages * size),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
            start_time: stat
                .zip(boot)
                .zip(tick)
                .map(|((s, b), t)| b as f64 + s.start_ticks as f64 / t),
            cpu_seconds: stat.zip(tick).map(|(s, t)| (s.utime + s.stime) as f64 / t),
        }
    }
}

/// What `/proc/self/stat` says that we show, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    /// Since boot.
    start_ticks: u64,
}

/// `/proc/<pid>/stat`: the command name is in parentheses and may hold spaces and
/// parentheses itself, so fields are counted from the last `)` (state is field 3).
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3; field n is f[n - 3].
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
    })
}

/// `/proc/stat`'s `btime`: boot time in seconds since the epoch.
fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `/proc/<pid>/statm`'s second field: resident pages.
fn parse_statm_resident(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The value of one series (name and labels as written) in exposition `text`.
#[cfg(test)]
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse_and_odd_command_names_do_not_shift_fields() {
        // A real line's shape, with a command name holding ") (" and spaces.
        let line = "4242 (we) ird (name) S 1 4242 4242 0 -1 4194560 1200 0 3 0 \
                    250 75 0 0 20 0 9 0 123456 300000000 2500 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 17922 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                utime: 250,
                stime: 75,
                start_ticks: 123456
            })
        );
        assert_eq!(parse_stat("4242 (cut short) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
        assert_eq!(
            parse_btime("cpu  1 2 3\nintr 5\nbtime 1772409600\nprocesses 9\n"),
            Some(1_772_409_600)
        );
        assert_eq!(parse_btime("cpu 1 2 3\n"), None);
        assert_eq!(
            parse_statm_resident("5000 1234 300 10 0 900 0\n"),
            Some(1234)
        );
        assert_eq!(parse_statm_resident("5000"), None);
    }

    #[test]
    fn this_process_figures_are_read_from_proc() {
        let p = ProcessFigures::read();
        assert!(p.resident_bytes.is_some_and(|b| b > 1 << 20), "{p:?}");
        assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // Started in the past, and not before this year (boot time + ticks adds up).
        let start = p.start_time.expect("start time");
        assert!(start <= now + 1.0 && start > 1.7e9, "{start} vs {now}");
        assert!(p.cpu_seconds.is_some(), "{p:?}");
    }

    #[test]
    fn counts_show_in_the_text_format_with_their_units_and_labels() {
        let t = Telemetry::new();
        let text = t.encode().unwrap();
        // Every label value is there from the start, at zero.
        assert_eq!(
            sample(
                &text,
                "aftercare_collector_connections_refused_total{reason=\"version\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "aftercare_collector_findings_open{level=\"L4\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "aftercare_collector_writer_queue_depth"),
            Some(0.0)
        );

        let conn = t.agent_connected();
        t.connection_refused(Refusal::Claim);
        t.batch_received(StreamId::Metrics);
        t.batch_received(StreamId::Metrics);
        let tally = BatchTally {
            samples: 40,
            log_records: 0,
            loss: LossReport {
                dropped_batches: 3,
                dropped_samples: 120,
                discarded_by_revocation: 1,
            },
        };
        t.batch_committed(StreamId::Metrics, CommitOutcome::Stored, &tally);
        // A redelivery: counted as a duplicate, its samples and loss not again.
        t.batch_committed(StreamId::Metrics, CommitOutcome::Duplicate, &tally);
        t.batch_rejected(StreamId::Logs);
        t.ack_written(Duration::from_millis(3));
        t.ack_written(Duration::from_secs(30));
        t.commit_done(Duration::from_millis(2), 5, true);
        t.commit_done(Duration::from_millis(2), 1, false);
        t.findings_pass(Duration::from_millis(20), Some([0, 2, 0, 7]));
        t.findings_pass(Duration::from_millis(20), None);
        t.watch_writer_queue(|| 17);
        t.watch_connecting(|| 3, || 5);
        let text = t.encode().unwrap();
        let want = [
            ("aftercare_collector_agents_connected", 1.0),
            ("aftercare_collector_connections_accepted_total", 1.0),
            (
                "aftercare_collector_connections_refused_total{reason=\"claim\"}",
                1.0,
            ),
            (
                "aftercare_collector_batches_received_total{stream=\"metrics\"}",
                2.0,
            ),
            (
                "aftercare_collector_batches_stored_total{stream=\"metrics\"}",
                1.0,
            ),
            (
                "aftercare_collector_batches_duplicate_total{stream=\"metrics\"}",
                1.0,
            ),
            (
                "aftercare_collector_batches_rejected_total{stream=\"logs\"}",
                1.0,
            ),
            ("aftercare_collector_samples_stored_total", 40.0),
            ("aftercare_collector_log_records_stored_total", 0.0),
            (
                "aftercare_collector_agent_spool_dropped_batches_total{stream=\"metrics\"}",
                3.0,
            ),
            (
                "aftercare_collector_agent_spool_dropped_records_total{stream=\"metrics\"}",
                120.0,
            ),
            (
                "aftercare_collector_agent_revoked_batches_discarded_total{stream=\"metrics\"}",
                1.0,
            ),
            (
                "aftercare_collector_agent_spool_dropped_batches_total{stream=\"logs\"}",
                0.0,
            ),
            ("aftercare_collector_ack_latency_seconds_count", 2.0),
            (
                "aftercare_collector_ack_latency_seconds_bucket{le=\"0.005\"}",
                1.0,
            ),
            (
                "aftercare_collector_ack_latency_seconds_bucket{le=\"10\"}",
                1.0,
            ),
            (
                "aftercare_collector_ack_latency_seconds_bucket{le=\"+Inf\"}",
                2.0,
            ),
            (
                "aftercare_collector_store_commit_duration_seconds_count",
                2.0,
            ),
            ("aftercare_collector_store_commit_batches_sum", 6.0),
            ("aftercare_collector_store_commit_failures_total", 1.0),
            ("aftercare_collector_writer_queue_depth", 17.0),
            ("aftercare_collector_connecting", 3.0),
            ("aftercare_collector_connecting_queued", 5.0),
            (
                "aftercare_collector_findings_pass_duration_seconds_count",
                2.0,
            ),
            ("aftercare_collector_findings_pass_failures_total", 1.0),
            ("aftercare_collector_findings_open{level=\"L2\"}", 2.0),
            ("aftercare_collector_findings_open{level=\"L4\"}", 7.0),
            ("aftercare_collector_webhook_dead_letters_total", 0.0),
        ];
        for (series, v) in want {
            assert_eq!(sample(&text, series), Some(v), "{series} in\n{text}");
        }
        assert!(text.contains("# TYPE aftercare_collector_connections_accepted_total counter\n"));
        assert!(text.contains("# TYPE aftercare_collector_ack_latency_seconds histogram\n"));
        assert!(text.contains(&format!(
            "aftercare_collector_build_info{{version=\"{}\",protocol=\"{}\"}} 1\n",
            aftercare_shared::VERSION,
            aftercare_shared::protocol::PROTOCOL_VERSION
        )));
        assert!(text.contains("aftercare_collector_process_resident_memory_bytes "));
        // Nothing of the OpenMetrics format, which this content type does not announce.
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("aftercare_collector_"), "{line}");
        }
        assert_eq!(
            sample(&text, "aftercare_collector_findings_rules_lease_held"),
            Some(1.0)
        );
        // Another collector took the rules over: no open counts from this one.
        t.findings_lease_elsewhere();
        let text = t.encode().unwrap();
        assert_eq!(
            sample(&text, "aftercare_collector_findings_rules_lease_held"),
            Some(0.0)
        );
        assert!(
            !text.contains("aftercare_collector_findings_open{"),
            "{text}"
        );
        drop(conn);
        let text = t.encode().unwrap();
        assert_eq!(
            sample(&text, "aftercare_collector_agents_connected"),
            Some(0.0)
        );
        assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    }

    #[test]
    fn webhook_counts_are_summed_when_scraped() {
        let t = Telemetry::new();
        let a = Arc::new(crate::notify::WebhookStats::default());
        let b = Arc::new(crate::notify::WebhookStats::default());
        t.watch_webhooks(vec![a.clone(), b.clone()]);
        a.dead_letters.fetch_add(2, Ordering::Relaxed);
        b.dead_letters.fetch_add(3, Ordering::Relaxed);
        b.delivered.fetch_add(9, Ordering::Relaxed);
        let text = t.encode().unwrap();
        assert_eq!(
            sample(&text, "aftercare_collector_webhook_dead_letters_total"),
            Some(5.0)
        );
        assert_eq!(
            sample(&text, "aftercare_collector_webhook_deliveries_total"),
            Some(9.0)
        );
    }
}

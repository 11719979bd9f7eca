//! The collector's store: what agents sent, kept durably and read back by engineers.
//!
//! One trait, [`Store`], so that the SQLite backend (embedded default) and a PostgreSQL one
//! can sit behind it. This file holds the trait and its types and no SQL; `sqlite.rs` is the
//! only place that knows SQLite; `chunk.rs` and `query.rs` are pure (codecs, merging,
//! rates, rollups) and tested without a database.
//!
//! How samples are kept (see `sqlite.rs` for the schema):
//! - **staging**: each committed batch is one row (host, timestamp, and a compact record of
//!   its (series, value) pairs), so ingest costs one insert per batch, not per sample;
//! - **chunks**: once an hour is closed (ended more than [`COMPACT_GRACE_MS`] ago),
//!   [`Store::compact`] moves its staged rows into one compressed block per host and hour.
//!   A host's series are sampled together, so a block stores their timestamps once and each
//!   series' values as its own compressed column;
//! - **rollups**: at the same time, 5-minute aggregates (count, min, max, sum) of every
//!   series of that host-hour; hourly figures are derived from them. For counters they
//!   aggregate per-second rates (see [`query::rates`]), which is what a report shows.
//!
//! Invariants: a (host, stream, sequence) is stored at most once (exactly-once in the store,
//! at-least-once on the wire); [`Store::commit`] returns only when its batches are durable;
//! readers see staging and chunks merged, sorted and without duplicate timestamps.

pub mod chunk;
mod common;
mod database;
mod postgres;
pub mod query;
mod rows;
mod sqlite;

pub use database::{Database, PgUrl};
pub use postgres::{PgStore, open_postgres, open_postgres_readonly};
pub use sqlite::{SqliteStore, open_sqlite, open_sqlite_readonly};

use crate::diagnose::record::{DiagnosticResult, DiagnosticRow, Elsewhere, NewDiagnostic, Sender};
use crate::findings::lifecycle::Event;
use crate::findings::record::{Change, FindingFilter, FindingKey, FindingRow, Silence};
use crate::report::record::{NewReport, ReportRow};
use aftercare_shared::consent::ConsentRecord;
use aftercare_shared::diag::ProbeInfo;
use aftercare_shared::model::{
    HostFacts, LogRecord, LossReport, MetricKind, MetricSnapshot, Severity, UnixMillis,
};
use aftercare_shared::protocol::{Identity, StreamId};
use std::collections::BTreeMap;

pub type HostId = i64;
pub type SeriesId = i64;

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
/// Width of the finest rollup bucket.
pub const ROLLUP_STEP_MS: i64 = 5 * MINUTE_MS;
/// How long after its end an hour stays open for late batches before it is compacted.
/// Later data still lands: compaction merges it into the existing block.
pub const COMPACT_GRACE_MS: i64 = 10 * MINUTE_MS;
/// Staged samples per compaction transaction in [`Store::compact`]: about a second of work.
pub const COMPACT_STEP_SAMPLES: u64 = 2_000_000;
/// A connected host is online while its last batch is at most this many intervals old.
pub const ONLINE_INTERVALS: i64 = 3;

/// Run `f`, which works with a store, where blocking is allowed. PostgreSQL's client blocks
/// on a runtime of its own, which tokio forbids on its threads: from async code (`serve`'s
/// start, tests) store work goes to a thread of its own; elsewhere it runs in place.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(f)
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    } else {
        f()
    }
}

/// Start of the hour holding `ts`.
/// `sla.toml`'s policy with the contracts an admin assigned over the API applied: what
/// deadlines, views and reports all read. The customers whose assigned contract the file no
/// longer has (they keep the file's choice).
pub fn sla_in_force<S: Store + ?Sized>(
    file: &crate::sla::SlaPolicy,
    st: &mut S,
) -> Result<(crate::sla::SlaPolicy, Vec<(String, String)>), StoreError> {
    let mut p = file.clone();
    let assigned = st.contract_assignments()?;
    let unknown = p.set_assigned(assigned.into_iter().map(|a| (a.customer, a.contract)));
    Ok((p, unknown))
}

pub fn hour_start(ts: UnixMillis) -> UnixMillis {
    ts.div_euclid(HOUR_MS) * HOUR_MS
}

/// Staged samples older than this are in closed hours and may be compacted at `now`.
pub fn compaction_cutoff(now: UnixMillis, grace_ms: i64) -> UnixMillis {
    hour_start(now - grace_ms)
}

/// What an agent's Hello tells the store about its host.
#[derive(Debug, Clone, Copy)]
pub struct HostHello<'a> {
    pub identity: &'a Identity,
    pub facts: &'a HostFacts,
    pub agent_version: &'a str,
    pub consent: &'a ConsentRecord,
    pub interval_ms: u64,
    /// When the certificate it connected with expires (the handshake verified it); `None`
    /// keeps what is stored.
    pub cert_expires: Option<UnixMillis>,
}

/// An unscheduled report still running this long after it was asked for has nobody left
/// making it (100 hosts over 90 days take under a minute).
pub const UNSCHEDULED_REPORT_STALE_MS: i64 = 3_600_000;

/// A change to a host's row, as connections come and go; several are applied together
/// ([`Store::host_updates`]) so a reconnect storm costs one sync per group, not per agent.
#[derive(Debug, Clone, Copy)]
pub enum HostUpdate<'a> {
    /// Its Hello: [`Store::register_host`], then its high-water marks.
    Register(HostHello<'a>),
    Consent {
        host: HostId,
        record: &'a ConsentRecord,
    },
    Disconnected(HostId),
    /// The probes its agent advertised: [`Store::set_probes`].
    Probes {
        host: HostId,
        probes: &'a [ProbeInfo],
    },
}

/// What a [`HostUpdate`] gave back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostUpdated {
    Registered {
        host: HostId,
        high_water: Vec<(StreamId, u64)>,
    },
    Done,
}

/// A batch received and checked by ingest, waiting for the next group commit.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingBatch {
    pub host: HostId,
    pub stream: StreamId,
    pub seq: u64,
    pub received_at: UnixMillis,
    pub data: BatchData,
    pub loss: LossReport,
}

/// What a batch carries; its kind matches the batch's stream.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchData {
    Metrics(MetricSnapshot),
    /// Records one by one, as protocol version 1 agents send them; stored as a block.
    Logs(Vec<LogRecord>),
    /// A compressed block (`aftercare_shared::logblock`) ingest has read through, stored
    /// as it came.
    LogBlock(LogBlock),
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogBlock {
    pub block: Vec<u8>,
    pub summary: aftercare_shared::logblock::Summary,
}

/// What to select from a host's logs.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub since: UnixMillis,
    pub until: UnixMillis,
    /// At least this severe (e.g. `Warning` keeps warnings, errors and worse).
    pub min_severity: Option<Severity>,
    /// Only lines this expression matches.
    pub grep: Option<regex::Regex>,
    /// At most this many records: the newest ones.
    pub limit: usize,
}

/// How many log records of one source and severity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCount {
    pub source: String,
    pub severity: Severity,
    pub count: u64,
}

/// The time a log record is filed under: the time it states, else when it was read.
pub fn log_time(r: &LogRecord) -> UnixMillis {
    r.ts.unwrap_or(r.read_at)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    Stored,
    /// At or below the (host, stream) high-water mark: already stored, acknowledge again.
    Duplicate,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HostStatus {
    pub id: HostId,
    pub customer: String,
    pub host: String,
    pub first_seen: UnixMillis,
    /// When the newest batch from this host was received; `None` before the first one.
    pub last_seen: Option<UnixMillis>,
    pub agent_version: String,
    pub consent: ConsentRecord,
    pub facts: HostFacts,
    pub connected: bool,
    pub interval_ms: u64,
    /// Connected, and the last batch is at most [`ONLINE_INTERVALS`] intervals old.
    pub online: bool,
    /// Loss totals as reported by the agent (see [`LossReport`]), all scopes together.
    pub dropped_batches: u64,
    pub dropped_samples: u64,
    pub discarded_by_revocation: u64,
    /// The same totals by scope (`metrics`, `logs`: the scope of the stream whose batches
    /// carried the reports); `dropped_samples` counts log lines for `logs`. Scopes that lost
    /// nothing are absent. [`UNATTRIBUTED`] holds what was reported before the store counted
    /// per scope (a database from before schema 3), so the parts always add up to the totals.
    pub loss: BTreeMap<String, LossReport>,
    /// When the certificate of its agent's latest connection expires (unknown before
    /// schema 9).
    pub cert_expires: Option<UnixMillis>,
}

/// The key of [`HostStatus::loss`] for loss whose scope was not recorded.
pub const UNATTRIBUTED: &str = "unattributed";

impl HostStatus {
    /// `customer/host`, the unambiguous name.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.customer, self.host)
    }
}

/// The raw points of one series, sorted by time, one per timestamp.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SeriesPoints {
    pub name: String,
    pub labels: String,
    pub kind: MetricKind,
    pub points: Vec<(UnixMillis, f64)>,
}

/// The newest value of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    pub name: String,
    pub labels: String,
    pub kind: MetricKind,
    pub ts: UnixMillis,
    pub value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    FiveMinutes,
    Hour,
}

impl Resolution {
    pub fn step_ms(self) -> i64 {
        match self {
            Resolution::FiveMinutes => ROLLUP_STEP_MS,
            Resolution::Hour => HOUR_MS,
        }
    }
}

/// Aggregate of one series over one bucket. For counters, of per-second rates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub start: UnixMillis,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
}

impl Bucket {
    pub fn mean(&self) -> f64 {
        self.sum / self.count as f64
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeriesRollups {
    pub name: String,
    pub labels: String,
    pub kind: MetricKind,
    pub buckets: Vec<Bucket>,
}

/// How long each tier is kept. Raw points answer recent questions exactly; 5-minute
/// rollups serve rules and reports over weeks; hourly rollups serve years of trends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub raw_ms: i64,
    pub five_minutes_ms: i64,
    pub hourly_ms: i64,
    /// Log batches, by their newest line.
    pub logs_ms: i64,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: i64 = 24 * HOUR_MS;
        Retention {
            raw_ms: 14 * DAY,
            five_minutes_ms: 90 * DAY,
            hourly_ms: 730 * DAY,
            // A quarterly report reads a quarter of logs, with a margin.
            logs_ms: 120 * DAY,
        }
    }
}

/// What one retention call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionStats {
    /// Host-hours of raw points removed.
    pub raw_hours: u64,
    /// Host-hours of 5-minute rollups folded into hourly ones.
    pub folded_hours: u64,
    /// Host-hours of rollups removed.
    pub rollup_hours: u64,
    /// Log batches removed.
    pub log_batches: u64,
    /// The call stopped at its budget: call again to finish.
    pub more: bool,
}

/// An API token as the store keeps it (without the token itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenRow {
    pub name: String,
    pub role: crate::api::token::Role,
    pub created_at: UnixMillis,
    pub created_by: String,
    pub revoked_at: Option<UnixMillis>,
}

/// One entry of the audit trail: who changed what, and how it went.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: UnixMillis,
    /// The token's name, or `cli:<user>` for the local command line.
    pub actor: String,
    /// viewer, engineer, admin, or `local`.
    pub role: String,
    /// e.g. `finding.ack`.
    pub action: String,
    /// e.g. `finding/12`, `host/acme/db1`.
    pub target: String,
    /// `ok` or the error code.
    pub outcome: String,
    /// Small JSON.
    pub detail: String,
}

/// Which audit entries to read.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// At or after this.
    pub since: UnixMillis,
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Only entries older than this id (the next page).
    pub before_id: Option<i64>,
    /// At most this many; 0: all.
    pub limit: usize,
}

/// A contract an admin assigned to a customer over the API; it takes precedence over
/// `sla.toml`'s `[customers]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractAssignment {
    pub customer: String,
    pub contract: String,
    pub set_at: UnixMillis,
    pub set_by: String,
}

/// What one compaction call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Host-hours written (new blocks, or existing ones merged with late data).
    pub blocks_written: u64,
    /// Of those, blocks that existed and took late data.
    pub blocks_merged: u64,
    /// Staged batches moved out of staging.
    pub batches: u64,
    /// Staged samples moved out of staging.
    pub samples: u64,
    /// Samples dropped because their series already had a value at that timestamp (the
    /// value written last is kept).
    pub duplicates: u64,
    /// The call stopped at its budget: call again to finish.
    pub more: bool,
}

impl CompactStats {
    pub fn add(&mut self, o: &CompactStats) {
        self.blocks_written += o.blocks_written;
        self.blocks_merged += o.blocks_merged;
        self.batches += o.batches;
        self.samples += o.samples;
        self.duplicates += o.duplicates;
        self.more = o.more;
    }
}

/// Sizes, for the benchmark and for operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub hosts: u64,
    pub series: u64,
    pub staged_batches: u64,
    pub staged_samples: u64,
    pub staged_bytes: u64,
    pub blocks: u64,
    pub block_samples: u64,
    pub block_bytes: u64,
    pub rollup_bytes: u64,
    /// Log batches stored, their records, and their blobs' bytes.
    pub log_batches: u64,
    pub log_records: u64,
    pub log_bytes: u64,
    /// SQLite: pages in use (excluding free pages) times the page size. PostgreSQL: our
    /// tables with their indexes and TOAST (free space within them included).
    pub live_bytes: u64,
    /// SQLite: the database file plus its write-ahead log, as on disk now. PostgreSQL: the
    /// whole database (`pg_database_size`, its catalogs included).
    pub file_bytes: u64,
}

/// One table's bytes on disk, as [`Store::table_sizes`] gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSize {
    /// The table (a partitioned table's partitions counted with it).
    pub name: String,
    pub heap: u64,
    pub indexes: u64,
    /// PostgreSQL: TOAST with its index, the free-space and visibility maps. SQLite keeps
    /// large values in the table's own overflow pages: 0.
    pub toast: u64,
}

impl TableSize {
    pub fn total(&self) -> u64 {
        self.heap + self.indexes + self.toast
    }
}

/// The store, driven by one writer thread (which groups batches into commits); readers such
/// as CLI commands open their own handle.
pub trait Store: Send + std::fmt::Debug {
    /// Insert or update the host named by `hello.identity`; stores its facts, agent version,
    /// consent record and interval, and marks it connected.
    fn register_host(&mut self, hello: &HostHello, now: UnixMillis) -> Result<HostId, StoreError>;
    fn set_consent(
        &mut self,
        host: HostId,
        consent: &ConsentRecord,
        now: UnixMillis,
    ) -> Result<(), StoreError>;
    /// [`Store::register_host`], then the host's [`Store::high_water`] marks: what a
    /// connecting agent's Welcome carries. A backend may do both in one statement.
    fn register_with_high_water(
        &mut self,
        hello: &HostHello,
        now: UnixMillis,
    ) -> Result<(HostId, Vec<(StreamId, u64)>), StoreError> {
        let host = self.register_host(hello, now)?;
        Ok((host, self.high_water(host)?))
    }
    fn set_disconnected(&mut self, host: HostId, now: UnixMillis) -> Result<(), StoreError>;
    /// Apply `updates` in order, each with its own outcome; a backend that can puts them in
    /// one transaction (durable when this returns). The default applies them one by one.
    fn host_updates(
        &mut self,
        updates: &[HostUpdate<'_>],
        now: UnixMillis,
    ) -> Vec<Result<HostUpdated, StoreError>> {
        updates.iter().map(|u| self.host_update(u, now)).collect()
    }
    /// One update on its own (within whatever transaction is open).
    fn host_update(
        &mut self,
        update: &HostUpdate<'_>,
        now: UnixMillis,
    ) -> Result<HostUpdated, StoreError> {
        match *update {
            HostUpdate::Register(ref hello) => {
                let (host, high_water) = self.register_with_high_water(hello, now)?;
                Ok(HostUpdated::Registered { host, high_water })
            }
            HostUpdate::Consent { host, record } => self
                .set_consent(host, record, now)
                .map(|()| HostUpdated::Done),
            HostUpdate::Disconnected(host) => {
                self.set_disconnected(host, now).map(|()| HostUpdated::Done)
            }
            HostUpdate::Probes { host, probes } => {
                self.set_probes(host, probes).map(|()| HostUpdated::Done)
            }
        }
    }
    /// Mark every host disconnected: a starting collector has no connection yet.
    fn disconnect_all(&mut self, now: UnixMillis) -> Result<(), StoreError>;
    /// Per stream, the highest sequence committed for this host (streams never written are
    /// absent).
    fn high_water(&mut self, host: HostId) -> Result<Vec<(StreamId, u64)>, StoreError>;
    /// Store the batches in one transaction, durable (survives a process crash and power
    /// loss) when this returns Ok. A batch at or below its (host, stream) high-water mark,
    /// including one earlier in the same call, is a [`CommitOutcome::Duplicate`] and is not
    /// stored again; the mark moves in the same transaction. Also updates the hosts' last
    /// seen time (duplicates count: the host is alive) and adds the stored batches' loss
    /// reports to the hosts' totals. Batches of unregistered hosts fail the whole call.
    fn commit(&mut self, batches: &[PendingBatch]) -> Result<Vec<CommitOutcome>, StoreError>;
    /// Move staged samples of closed hours into compressed blocks and rollups, stopping
    /// after roughly `budget_samples` staged samples (at least one host's), so that the
    /// writer can interleave it with commits. One transaction per call. Idempotent; late
    /// data merges into existing blocks.
    fn compact_some(
        &mut self,
        now: UnixMillis,
        budget_samples: u64,
    ) -> Result<CompactStats, StoreError>;
    /// [`Store::compact_some`] until nothing closed is left in staging.
    fn compact(&mut self, now: UnixMillis) -> Result<CompactStats, StoreError> {
        let mut total = CompactStats::default();
        loop {
            let step = self.compact_some(now, COMPACT_STEP_SAMPLES)?;
            total.add(&step);
            if !step.more {
                return Ok(total);
            }
        }
    }
    fn hosts(&mut self, now: UnixMillis) -> Result<Vec<HostStatus>, StoreError>;
    /// Raw points with `since <= ts < until`, staging and blocks merged, sorted, one per
    /// timestamp; series without points in the window are left out.
    ///
    /// `host` is `host` or `customer/host`; an unknown or ambiguous name is an error naming
    /// the candidates. `metric` is an exact name, or a prefix ending in `.` or `*` (`cpu.`,
    /// `fs.*`); `None` means every series.
    fn query(
        &mut self,
        host: &str,
        metric: Option<&str>,
        since: UnixMillis,
        until: UnixMillis,
    ) -> Result<Vec<SeriesPoints>, StoreError>;
    /// A host's log records matching `filter`, oldest first.
    fn logs(&mut self, host: &str, filter: &LogFilter) -> Result<Vec<LogRecord>, StoreError>;
    /// How many of a host's log records match `filter` (its `limit` is ignored). Without a
    /// severity or pattern, batches wholly inside the window are counted without decoding.
    fn count_logs(&mut self, host: &str, filter: &LogFilter) -> Result<u64, StoreError>;
    /// A host's log records matching `filter` (its `limit` ignored), counted by source and
    /// severity, sorted by source, then the most severe first.
    fn count_logs_by_source(
        &mut self,
        host: &str,
        filter: &LogFilter,
    ) -> Result<Vec<LogCount>, StoreError>;
    /// The times (see [`log_time`]) of a host's log records matching `filter` (its `limit`
    /// ignored), oldest first: for counting a pattern's lines per day.
    fn log_times(&mut self, host: &str, filter: &LogFilter) -> Result<Vec<UnixMillis>, StoreError>;
    /// The newest value of every series of a host, sorted by name and labels.
    fn latest(&mut self, host: &str) -> Result<Vec<Latest>, StoreError>;
    /// Rollup buckets with `since <= start < until`, from compacted (closed) hours only.
    fn rollups(
        &mut self,
        host: &str,
        metric: Option<&str>,
        resolution: Resolution,
        since: UnixMillis,
        until: UnixMillis,
    ) -> Result<Vec<SeriesRollups>, StoreError>;
    /// As [`Store::rollups`], of the series `select(name, labels)` accepts: for a reader
    /// that needs a few of a host's series (a host-hour's rollups are stored together, so
    /// reading one series costs about what reading all does; keeping only these saves
    /// building the rest).
    fn rollups_where(
        &mut self,
        host: &str,
        select: &dyn Fn(&str, &str) -> bool,
        resolution: Resolution,
        since: UnixMillis,
        until: UnixMillis,
    ) -> Result<Vec<SeriesRollups>, StoreError>;
    fn stats(&mut self) -> Result<StoreStats, StoreError>;
    /// Where the bytes at rest are: each table of ours with its indexes, largest first.
    fn table_sizes(&mut self) -> Result<Vec<TableSize>, StoreError>;
    /// Apply `r` at `now`: drop raw hours and log batches past their age, fold 5-minute
    /// rollups past theirs into hourly ones (at most `budget` host-hours per call), drop
    /// rollups past the hourly tier. One transaction per call.
    fn retain_some(
        &mut self,
        now: UnixMillis,
        r: &Retention,
        budget: usize,
    ) -> Result<RetentionStats, StoreError>;
    /// The key's finding that is not resolved, else its most recently resolved one.
    fn finding_for(&mut self, key: &FindingKey) -> Result<Option<FindingRow>, StoreError>;
    /// Apply one change with its timeline entry, in one transaction; the finding's id.
    fn apply_finding(&mut self, change: &Change) -> Result<i64, StoreError>;
    /// Findings by level, then the nearest deadline.
    fn findings(&mut self, filter: &FindingFilter) -> Result<Vec<FindingRow>, StoreError>;
    /// One finding with its timeline, oldest entry first.
    fn finding(&mut self, id: i64) -> Result<Option<(FindingRow, Vec<Event>)>, StoreError>;
    /// Add a maintenance window; its id.
    fn add_silence(&mut self, s: &Silence) -> Result<i64, StoreError>;
    /// Maintenance windows that end after `after`, by start.
    fn silences(&mut self, after: UnixMillis) -> Result<Vec<Silence>, StoreError>;
    /// End a maintenance window at `at`.
    fn end_silence(&mut self, id: i64, at: UnixMillis) -> Result<(), StoreError>;
    /// Add an API token, keeping only `hash`; a name in use is refused.
    fn add_token(&mut self, t: &TokenRow, hash: &str) -> Result<(), StoreError>;
    /// Every token, revoked ones too, by name.
    fn tokens(&mut self) -> Result<Vec<TokenRow>, StoreError>;
    /// The active token with this hash.
    fn token_by_hash(&mut self, hash: &str) -> Result<Option<TokenRow>, StoreError>;
    fn revoke_token(&mut self, name: &str, at: UnixMillis) -> Result<(), StoreError>;
    /// Append one entry to the audit trail; its id.
    fn add_audit(&mut self, a: &AuditRow) -> Result<i64, StoreError>;
    /// Audit entries matching `f`, newest first.
    fn audit(&mut self, f: &AuditFilter) -> Result<Vec<AuditRow>, StoreError>;
    /// Assign a contract to a customer (replacing an earlier assignment).
    fn set_contract(&mut self, c: &ContractAssignment) -> Result<(), StoreError>;
    /// Every contract assigned over the API, by customer.
    fn contract_assignments(&mut self) -> Result<Vec<ContractAssignment>, StoreError>;
    /// The rules engine's state as last saved (JSON), if any.
    fn rules_state(&mut self) -> Result<Option<String>, StoreError>;
    fn save_rules_state(&mut self, json: &str) -> Result<(), StoreError>;

    /// The id of the host `name` (`customer/host`, or a host name that is unambiguous).
    fn host_id(&mut self, name: &str) -> Result<HostId, StoreError>;
    /// Record a diagnostic request as `pending`; its id. `sender` says which collector
    /// sends it to the agent: this one, or (handed over) the one holding the host's
    /// connection, which takes it with [`Store::claim_diagnostic`]. Still pending past
    /// `deadline`, it is ended by [`Store::expire_diagnostics`].
    fn add_diagnostic(
        &mut self,
        d: &NewDiagnostic,
        sender: Sender,
        deadline: UnixMillis,
    ) -> Result<i64, StoreError>;
    /// Pending requests handed over and not yet taken by a collector, oldest first.
    fn unclaimed_diagnostics(&mut self) -> Result<Vec<(i64, NewDiagnostic)>, StoreError>;
    /// Take a handed-over request for this collector, to be answered by `deadline`; false
    /// if another collector took it first or it has ended.
    fn claim_diagnostic(&mut self, id: i64, deadline: UnixMillis) -> Result<bool, StoreError>;
    /// End the requests still pending past their deadline: `offline` if no collector took
    /// one (no collector holds the host's connection), `failed` if the one that took it
    /// stopped before storing the answer. How many.
    fn expire_diagnostics(&mut self, now: UnixMillis) -> Result<u64, StoreError>;
    /// Keep the probes a host's agent advertised on its connection to this collector, so
    /// that other collectors sharing the database can show them and hand requests over. A
    /// SQLite file has one collector, whose live connections are the truth: it keeps none.
    fn set_probes(&mut self, _host: HostId, _probes: &[ProbeInfo]) -> Result<(), StoreError> {
        Ok(())
    }
    /// The host's connection if another collector sharing this database holds it. A
    /// SQLite file has one collector: never.
    fn connected_elsewhere(&mut self, _host: HostId) -> Result<Option<Elsewhere>, StoreError> {
        Ok(None)
    }
    /// Store how a pending diagnostic ended (output capped at
    /// [`crate::diagnose::record::MAX_STORED_OUTPUT`]); false if it was not pending.
    fn finish_diagnostic(&mut self, id: i64, r: &DiagnosticResult) -> Result<bool, StoreError>;
    /// One diagnostic with its output.
    fn diagnostic(&mut self, id: i64) -> Result<Option<DiagnosticRow>, StoreError>;
    /// A host's diagnostics, newest first, without output: at most `limit`, with ids below
    /// `before_id` when given (the next page).
    fn diagnostics(
        &mut self,
        host: HostId,
        limit: usize,
        before_id: Option<i64>,
    ) -> Result<Vec<DiagnosticRow>, StoreError>;
    /// The diagnostics run from a finding, oldest first, without output.
    fn diagnostics_for_finding(&mut self, finding: i64) -> Result<Vec<DiagnosticRow>, StoreError>;
    /// How many diagnostics requested with `since <= requested_at < until` ran on the host
    /// (status `done`: the agent ran the probe and answered; refusals and failures did not
    /// run).
    fn count_diagnostics_run(
        &mut self,
        host: HostId,
        since: UnixMillis,
        until: UnixMillis,
    ) -> Result<u64, StoreError>;
    /// End every pending diagnostic this collector sent as `failed` with `message` (at
    /// start: the run that sent them is gone, so no answer will come); how many. Requests
    /// waiting for, or taken by, another collector sharing the database are left to it.
    fn abandon_diagnostics(&mut self, now: UnixMillis, message: &str) -> Result<u64, StoreError>;
    /// Record a report to make (`running`); its id. A scheduled report that exists already
    /// for its customer and period gives `None` (it is made once), unless it failed: then
    /// it is taken again.
    fn add_report(&mut self, r: &NewReport) -> Result<Option<i64>, StoreError>;
    fn report_progress(&mut self, id: i64, percent: u8) -> Result<(), StoreError>;
    /// End a running report: its JSON, or why it failed.
    fn finish_report(
        &mut self,
        id: i64,
        outcome: Result<&[u8], &str>,
        now: UnixMillis,
    ) -> Result<(), StoreError>;
    /// One report, with its JSON when done.
    fn report(&mut self, id: i64) -> Result<Option<ReportRow>, StoreError>;
    /// Reports newest first, without their data; `limit` 0: all.
    fn reports(
        &mut self,
        customer: Option<&str>,
        limit: usize,
        before_id: Option<i64>,
    ) -> Result<Vec<ReportRow>, StoreError>;
    /// End running reports as failed with `message` (on taking the scheduler's lease:
    /// whoever made them is gone); how many. Scheduled ones all; one asked for over the API
    /// or made by the CLI only once it has run for [`UNSCHEDULED_REPORT_STALE_MS`], as
    /// another process (the CLI, another collector on the database) may be making it.
    fn abandon_reports(&mut self, now: UnixMillis, message: &str) -> Result<u64, StoreError>;
    /// Take or renew the lease `name` for `holder` until `ttl_ms` from now: true while
    /// `holder` has it. A lease another holder let expire is taken over. Of several
    /// collectors on one database only the holder runs the job the lease names (the rules
    /// engine, the report scheduler). PostgreSQL counts time by its own clock (`now` is
    /// for SQLite), so collectors' clocks need not agree.
    fn lease(
        &mut self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
        now: UnixMillis,
    ) -> Result<bool, StoreError>;
    /// Give the lease up if `holder` has it, so another collector takes over at once.
    fn release_lease(&mut self, name: &str, holder: &str) -> Result<(), StoreError>;
    /// Name the collector this handle writes for (see [`crate::cluster::holder_id`]). Where
    /// several collectors share the database, a host is marked connected by the one its
    /// agent reached, and only that one marks it disconnected: a collector starting, or
    /// closing a connection its agent has already replaced with one to another collector,
    /// leaves the others' hosts alone. A SQLite file has one collector; it ignores this.
    fn set_node(&mut self, _node: &str) {}
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open database {path}: directory {dir} does not exist; create it or point the data directory elsewhere in the config"
    )]
    MissingDir { path: String, dir: String },
    #[error("no database at {path}: run `aftercare-collector serve` once to create it")]
    NoDatabase { path: String },
    #[error(
        "database {path} is schema version {found}, this collector knows up to {known}: upgrade the collector"
    )]
    SchemaTooNew {
        path: String,
        found: u32,
        known: u32,
    },
    #[error(
        "database {path} is schema version {found}, this collector needs {known}: run `aftercare-collector serve` once to upgrade it (read-only commands do not change the database)"
    )]
    SchemaTooOld {
        path: String,
        found: u32,
        known: u32,
    },
    #[error("{path} is not an aftercare database ({detail}); choose another path")]
    NotOurs { path: String, detail: String },
    #[error("{0}")]
    UnknownHost(String),
    #[error("{0}")]
    AmbiguousHost(String),
    #[error("host id {0} is not registered: register the host (its Hello) before storing for it")]
    UnknownHostId(HostId),
    #[error("no finding {0}: `aftercare-collector findings` lists them")]
    NoSuchFinding(i64),
    #[error("{0}")]
    Invalid(String),
    #[error("database {path} is open read-only: {what} needs the collector's writer")]
    ReadOnly { path: String, what: &'static str },
    #[error("database {path} holds a damaged {what}: {detail}; restore the database from a backup")]
    Corrupt {
        path: String,
        what: String,
        detail: String,
    },
    #[error("database {path}: {doing}: {source}")]
    Backend {
        path: String,
        doing: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

//! The SQLite backend of [`Store`], and the only place with SQL.
//!
//! Settings: WAL (readers never block the writer nor it them), `synchronous = FULL` (a
//! commit is on disk, WAL fsynced, when it returns; paid once per group commit),
//! `auto_vacuum = INCREMENTAL` (so space freed by retention can be given back), a busy
//! timeout for every handle.
//!
//! Migrations are numbered by `PRAGMA user_version`; a database from a newer collector is
//! refused rather than guessed at, and `PRAGMA application_id` marks the file as ours so a
//! wrong path is not silently written into.

mod desk;
mod diagnostics;
mod findings;
mod reports;

use super::chunk;
use super::common::{
    HostRow, HostSeries, LatestReader, LogCodec, LogKeeper, LogRows, PointsReader, RollupReader,
    RowError, SeriesRow, SourceCounts, add_loss, batch_series, fold_to_hour, group_failed,
    host_status, kind_from, matching_records, merge_hour, rollup_rows, series_key, sql_int,
};
use super::query::{HostName, MetricFilter};
use super::rows::{self, TOKEN_COLUMNS};
use super::{
    AuditFilter, AuditRow, BatchData, COMPACT_GRACE_MS, CommitOutcome, CompactStats,
    ContractAssignment, HOUR_MS, HostHello, HostId, HostStatus, HostUpdate, HostUpdated, Latest,
    LogCount, LogFilter, PendingBatch, Resolution, Retention, RetentionStats, SeriesId,
    SeriesPoints, SeriesRollups, Store, StoreError, StoreStats, TableSize, TokenRow,
    compaction_cutoff,
};
use crate::diagnose::record::{DiagnosticResult, DiagnosticRow, NewDiagnostic, Sender};
use crate::findings::lifecycle::Event;
use crate::findings::record::{Change, FindingFilter, FindingKey, FindingRow, Silence};
use crate::report::record::{NewReport, ReportRow};
use aftercare_shared::consent::ConsentRecord;
use aftercare_shared::logblock::{self, RecordRef, Summary};
use aftercare_shared::model::{LogRecord, LossReport, MetricKind, Severity, UnixMillis};
use aftercare_shared::protocol::StreamId;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// "AftC": marks a database file as aftercare's.
const APPLICATION_ID: i32 = 0x4166_7443;

/// Schema versions: entry `i` takes a database from version `i` to `i + 1`. Append only;
/// never edit one that has been released.
const MIGRATIONS: &[&str] = &[
    SCHEMA_V1,
    SCHEMA_V2,
    SCHEMA_V3,
    findings::SCHEMA_V4,
    SCHEMA_V5,
    SCHEMA_V6,
    SCHEMA_V7,
    SCHEMA_V8,
    SCHEMA_V9,
    SCHEMA_V10,
    SCHEMA_V11,
];

/// Who sends a diagnostic to the agent, and when a pending one is given up: the same
/// columns as PostgreSQL's, where a request can wait for another collector (see
/// [`Store::claim_diagnostic`]). A SQLite file has one collector, which ends every pending
/// request at start, those from before this version included.
const SCHEMA_V11: &str = "
ALTER TABLE diagnostics ADD COLUMN claimed_by TEXT;
ALTER TABLE diagnostics ADD COLUMN deadline INTEGER;
UPDATE diagnostics SET claimed_by = '', deadline = 0 WHERE status = 'pending';
CREATE INDEX diagnostics_pending ON diagnostics (id) WHERE status = 'pending';
";

/// Leases: which collector runs the rules engine and the report scheduler (see
/// [`Store::lease`]).
const SCHEMA_V10: &str = "
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
";

/// When each agent's certificate expires, as its last connection showed: the report lists
/// the ones near expiry.
const SCHEMA_V9: &str = "
ALTER TABLE hosts ADD COLUMN cert_expires INTEGER;
";

/// Inspection reports: one row per report asked for; the quarter's own (made by the
/// scheduler) once per customer and period.
const SCHEMA_V8: &str = "
CREATE TABLE reports (
    id           INTEGER PRIMARY KEY,
    customer     TEXT NOT NULL,
    period_from  INTEGER NOT NULL,
    period_to    INTEGER NOT NULL,
    label        TEXT NOT NULL,               -- 2026-Q3, or the dates
    lang         TEXT NOT NULL,
    time_zone    TEXT NOT NULL,
    scheduled    INTEGER NOT NULL,            -- 1: the quarter's own, made once
    status       TEXT NOT NULL,               -- running, done, failed
    progress     INTEGER NOT NULL DEFAULT 0,  -- percent while running
    message      TEXT NOT NULL DEFAULT '',
    requested_by TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    data         BLOB                         -- the report's JSON, zstd
);
CREATE UNIQUE INDEX reports_once_per_period ON reports (customer, period_from, period_to)
    WHERE scheduled = 1;
CREATE INDEX reports_by_customer ON reports (customer, id);
";

/// The engineer's desk: the audit trail of every mutating API call (and the CLI's own
/// changes), remote diagnostics with their results, and contracts an admin assigned to a
/// customer over the API (they take precedence over `sla.toml`'s `[customers]`).
const SCHEMA_V7: &str = "
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,                   -- token name, or `cli:<user>`
    role    TEXT NOT NULL,                   -- viewer, engineer, admin, local
    action  TEXT NOT NULL,                   -- e.g. `finding.ack`, `diagnostic.request`
    target  TEXT NOT NULL,                   -- what it acted on: `finding/12`, `host/acme/db1`
    outcome TEXT NOT NULL,                   -- `ok` or the error code
    detail  TEXT NOT NULL DEFAULT ''         -- JSON, small
);
CREATE INDEX audit_by_time ON audit (at);
CREATE TABLE diagnostics (
    id           INTEGER PRIMARY KEY,
    host         INTEGER NOT NULL REFERENCES hosts (id),
    probe        TEXT NOT NULL,
    args         TEXT NOT NULL DEFAULT '{}', -- JSON object of the probe's declared values
    finding      INTEGER REFERENCES findings (id),
    requested_by TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    status       TEXT NOT NULL,              -- pending, done, refused, failed, timeout, offline
    finished_at  INTEGER,
    exit_code    INTEGER,
    truncated    INTEGER NOT NULL DEFAULT 0,
    output       BLOB,
    message      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX diagnostics_by_host ON diagnostics (host, id);
CREATE INDEX diagnostics_by_finding ON diagnostics (finding) WHERE finding IS NOT NULL;
CREATE TABLE customer_contracts (
    customer TEXT PRIMARY KEY,
    contract TEXT NOT NULL,
    set_at   INTEGER NOT NULL,
    set_by   TEXT NOT NULL
);
";

/// API tokens: only their SHA-256 is kept (see `api::token`).
const SCHEMA_V6: &str = "
CREATE TABLE tokens (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL,                    -- viewer, engineer, admin
    hash       TEXT NOT NULL UNIQUE,             -- SHA-256 of the token, hex
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at INTEGER
);
";

/// Retention tiers: rollup rows older than the 5-minute tier are folded into one hourly
/// aggregate per series (bucket 0 of the same encoding), and `minutes` says which a row is.
/// Log batches are dropped by their newest line.
const SCHEMA_V5: &str = "
ALTER TABLE rollups ADD COLUMN minutes INTEGER NOT NULL DEFAULT 5;
CREATE INDEX rollups_by_age ON rollups (minutes, hour);
CREATE INDEX logs_by_age ON logs (ts_max);
";

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Loss per (host, stream), beside the hosts' totals, so a support engineer sees which
/// scope lost what. Totals a version 2 database already holds stay in `hosts` only: their
/// stream was never recorded, and readers show the difference as unattributed. Log counts
/// from the index alone; log blobs compressed, the old ones read as they are.
const SCHEMA_V3: &str = "
CREATE TABLE stream_loss (
    host_id  INTEGER NOT NULL,
    stream   INTEGER NOT NULL,                        -- StreamId::code
    dropped_batches         INTEGER NOT NULL,
    dropped_samples         INTEGER NOT NULL,         -- samples, or lines for logs
    discarded_by_revocation INTEGER NOT NULL,
    PRIMARY KEY (host_id, stream)
) WITHOUT ROWID;

-- How a log batch's blob is encoded: see LogCodec. Rows written before are plain bincode.
ALTER TABLE logs ADD COLUMN codec INTEGER NOT NULL DEFAULT 0;

-- Holds what counting whole batches and skipping rows need, so neither reads the batches:
-- with small batches a row fills most of a page, and a count read every one.
DROP INDEX logs_host_time;
CREATE INDEX logs_host_time ON logs (host_id, ts_max, ts_min, worst, records);
";

/// Logs: one row per batch, its records as one blob (bincode), so ingest costs one insert
/// per batch; the time range and the most severe level let queries skip whole rows.
const SCHEMA_V2: &str = "
CREATE TABLE logs (
    id       INTEGER PRIMARY KEY,
    host_id  INTEGER NOT NULL REFERENCES hosts(id),
    ts_min   INTEGER NOT NULL,
    ts_max   INTEGER NOT NULL,
    records  INTEGER NOT NULL,
    -- syslog level of the most severe record (0 = emergency)
    worst    INTEGER NOT NULL,
    data     BLOB NOT NULL
);
CREATE INDEX logs_host_time ON logs (host_id, ts_max);
";

const SCHEMA_V1: &str = "
-- One row per agent host, keyed by the identity its certificate names.
CREATE TABLE hosts (
    id            INTEGER PRIMARY KEY,
    customer      TEXT NOT NULL,
    host          TEXT NOT NULL,
    first_seen    INTEGER NOT NULL,        -- ms since the epoch, as everywhere here
    last_seen     INTEGER,                 -- receipt of the newest batch
    agent_version TEXT NOT NULL,
    facts         TEXT NOT NULL,           -- HostFacts, JSON
    consent       TEXT NOT NULL,           -- ConsentRecord as last shown, JSON
    interval_ms   INTEGER NOT NULL,
    connected     INTEGER NOT NULL,
    dropped_batches         INTEGER NOT NULL DEFAULT 0,  -- loss totals the agent reported
    dropped_samples         INTEGER NOT NULL DEFAULT 0,
    discarded_by_revocation INTEGER NOT NULL DEFAULT 0,
    UNIQUE (customer, host)
);

CREATE TABLE series (
    id         INTEGER PRIMARY KEY,
    host_id    INTEGER NOT NULL,
    name       TEXT NOT NULL,
    labels     TEXT NOT NULL,
    kind       TEXT NOT NULL,              -- gauge | counter
    last_ts    INTEGER,                    -- newest compacted point; staging may be newer
    last_value REAL,
    UNIQUE (host_id, name, labels)
);

-- Highest sequence committed per (host, stream): redelivered batches are recognised here.
CREATE TABLE streams (
    host_id  INTEGER NOT NULL,
    stream   INTEGER NOT NULL,             -- StreamId::code
    high_seq INTEGER NOT NULL,             -- the u64, bit for bit
    PRIMARY KEY (host_id, stream)
) WITHOUT ROWID;

-- One row per committed batch until its hour is compacted. The rowid is the write order:
-- of two values of a series at one timestamp, the later one wins.
CREATE TABLE staging (
    id      INTEGER PRIMARY KEY,
    host_id INTEGER NOT NULL,
    ts      INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    data    BLOB NOT NULL                  -- chunk::encode_staged
);
CREATE INDEX staging_by_host ON staging (host_id, ts);

-- One compressed block per host and closed hour. A rowid table: ~50 KB blobs in a
-- WITHOUT ROWID table would be stored far less densely.
CREATE TABLE chunks (
    host_id INTEGER NOT NULL,
    hour    INTEGER NOT NULL,              -- start of the hour
    samples INTEGER NOT NULL,
    data    BLOB NOT NULL,                 -- chunk::encode_block
    PRIMARY KEY (host_id, hour)
);

-- 5-minute aggregates of every series of a host-hour, kept longer than raw blocks.
CREATE TABLE rollups (
    host_id INTEGER NOT NULL,
    hour    INTEGER NOT NULL,
    data    BLOB NOT NULL,                 -- chunk::encode_rollups
    PRIMARY KEY (host_id, hour)
);
";

/// Turns SQLite errors into [`StoreError::Backend`] naming the file and what was being done.
#[derive(Clone)]
struct Ctx(Arc<str>);

impl Ctx {
    fn sql(&self, doing: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + use<> {
        let path = self.0.clone();
        move |e| StoreError::Backend {
            path: path.to_string(),
            doing,
            source: Box::new(e),
        }
    }

    fn corrupt(&self, what: impl Into<String>, detail: impl ToString) -> StoreError {
        StoreError::Corrupt {
            path: self.0.to_string(),
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

pub struct SqliteStore {
    conn: Connection,
    cx: Ctx,
    read_only: bool,
    grace_ms: i64,
    /// Hosts known to exist; hosts are never deleted, so this only grows.
    hosts_known: HashSet<HostId>,
    /// Series ids per host, loaded at a host's first batch, so ingest does no lookups.
    /// Cleared when a commit fails, as it may hold series of the rolled-back transaction.
    series: HashMap<HostId, HostSeries>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.cx.0)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

/// Open (creating if needed) the database at `path` for the collector's writer, and bring
/// its schema up to date. The directory must exist.
pub fn open_sqlite(path: &Path) -> Result<SqliteStore, StoreError> {
    let shown = path.display().to_string();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(StoreError::MissingDir {
            path: shown,
            dir: dir.display().to_string(),
        });
    }
    let cx = Ctx(shown.into());
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(cx.sql("opening"))?;
    let setup = cx.sql("setting up the connection");
    conn.busy_timeout(Duration::from_secs(10)).map_err(&setup)?;
    let found = check_ours(&conn, &cx)?;
    if found > SCHEMA_VERSION {
        return Err(too_new(&cx, found));
    }
    let pages: i64 = conn
        .pragma_query_value(None, "page_count", |r| r.get(0))
        .map_err(&setup)?;
    if pages == 0 {
        // Only takes effect before the first table is created.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(&setup)?;
    }
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(&setup)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend {
            path: cx.0.to_string(),
            doing: "switching to write-ahead logging",
            source: format!("SQLite kept journal mode {mode}").into(),
        });
    }
    // Checkpoints every ~40 MB of WAL rather than SQLite's 4 MB: the pages that every
    // commit touches (each host's leaf of the staging index) reach the database file once
    // per checkpoint, not once per few commits (measured: 2.0 -> 2.8 M samples/s). After a
    // larger transaction the WAL is cut back to 64 MB.
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA wal_autocheckpoint = 10000;
         PRAGMA journal_size_limit = 67108864;
         PRAGMA cache_size = -32768;
         PRAGMA temp_store = MEMORY;",
    )
    .map_err(&setup)?;
    conn.set_prepared_statement_cache_capacity(64);
    migrate(&mut conn, &cx)?;
    Ok(SqliteStore {
        conn,
        cx,
        read_only: false,
        grace_ms: COMPACT_GRACE_MS,
        hosts_known: HashSet::new(),
        series: HashMap::new(),
    })
}

/// Open an existing database for reading (CLI commands). It never blocks the writer; its
/// writing methods return [`StoreError::ReadOnly`].
pub fn open_sqlite_readonly(path: &Path) -> Result<SqliteStore, StoreError> {
    let shown = path.display().to_string();
    if !path.is_file() {
        return Err(StoreError::NoDatabase { path: shown });
    }
    let cx = Ctx(shown.into());
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(cx.sql("opening read-only"))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(cx.sql("setting up the connection"))?;
    conn.set_prepared_statement_cache_capacity(64);
    let found = check_ours(&conn, &cx)?;
    if found > SCHEMA_VERSION {
        return Err(too_new(&cx, found));
    }
    if found < SCHEMA_VERSION {
        return Err(StoreError::SchemaTooOld {
            path: cx.0.to_string(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    Ok(SqliteStore {
        conn,
        cx,
        read_only: true,
        grace_ms: COMPACT_GRACE_MS,
        hosts_known: HashSet::new(),
        series: HashMap::new(),
    })
}

fn too_new(cx: &Ctx, found: u32) -> StoreError {
    StoreError::SchemaTooNew {
        path: cx.0.to_string(),
        found,
        known: SCHEMA_VERSION,
    }
}

/// The schema version, after checking the file is ours or empty.
fn check_ours(conn: &Connection, cx: &Ctx) -> Result<u32, StoreError> {
    let err = cx.sql("reading the schema version");
    let app: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(&err)?;
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(&err)?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(&err)?;
    if app == APPLICATION_ID || (app == 0 && version == 0 && objects == 0) {
        return Ok(version);
    }
    Err(StoreError::NotOurs {
        path: cx.0.to_string(),
        detail: if app != 0 {
            format!("its application id is {app:#x}")
        } else {
            "it holds tables of another program".to_string()
        },
    })
}

fn migrate(conn: &mut Connection, cx: &Ctx) -> Result<(), StoreError> {
    let err = cx.sql("upgrading the schema");
    loop {
        // Immediate: two collectors starting at once migrate one after the other.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let v: u32 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(&err)?;
        if v > SCHEMA_VERSION {
            return Err(too_new(cx, v));
        }
        if v == SCHEMA_VERSION {
            return Ok(());
        }
        tx.execute_batch(MIGRATIONS[v as usize]).map_err(&err)?;
        tx.pragma_update(None, "user_version", v + 1)
            .map_err(&err)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(&err)?;
        tx.commit().map_err(&err)?;
    }
}

/// Store one batch's block with what queries select rows by.
fn insert_block(
    tx: &rusqlite::Transaction<'_>,
    host: HostId,
    block: &[u8],
    s: &Summary,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO logs (host_id, ts_min, ts_max, records, worst, codec, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        host,
        s.ts_min,
        s.ts_max,
        i64::from(s.records),
        s.worst.level(),
        LogCodec::Block as i64,
        block
    ])?;
    Ok(())
}

/// Records sent one by one (protocol version 1), stored as a block like the rest.
fn insert_records(
    tx: &rusqlite::Transaction<'_>,
    host: HostId,
    records: &[LogRecord],
) -> rusqlite::Result<()> {
    let failed = |e: logblock::BlockError| rusqlite::Error::ToSqlConversionFailure(Box::new(e));
    let plain = logblock::from_records(records);
    let Some(summary) = logblock::summarize(&plain).map_err(failed)? else {
        return Ok(());
    };
    insert_block(
        tx,
        host,
        &logblock::compress(&plain).map_err(failed)?,
        &summary,
    )
}

impl SqliteStore {
    /// How long after its end an hour waits for late batches before compaction.
    pub fn set_compaction_grace(&mut self, grace_ms: i64) {
        self.grace_ms = grace_ms.max(0);
    }

    /// Copy the write-ahead log into the database file and truncate it.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.writable("a checkpoint")?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(self.cx.sql("checkpointing"))
    }

    /// Give free pages (e.g. of compacted staging rows) back to the file system. Not needed
    /// in steady state, where new staging rows reuse them.
    pub fn release_free_pages(&mut self) -> Result<(), StoreError> {
        self.writable("releasing free pages")?;
        let err = self.cx.sql("releasing free pages");
        // Each step of this pragma frees one page: run it to the end.
        let mut stmt = self
            .conn
            .prepare("PRAGMA incremental_vacuum")
            .map_err(&err)?;
        let mut rows = stmt.query([]).map_err(&err)?;
        while rows.next().map_err(&err)?.is_some() {}
        Ok(())
    }

    fn writable(&self, what: &'static str) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly {
                path: self.cx.0.to_string(),
                what,
            });
        }
        Ok(())
    }

    /// A read transaction, so that a reader's statements all see one state: a compaction
    /// committing between them would otherwise move points out of staging after the blocks
    /// were read. Ends (rolls back, nothing to undo) when dropped.
    fn snapshot(&self) -> rusqlite::Result<rusqlite::Transaction<'_>> {
        self.conn.unchecked_transaction()
    }

    /// Run `sql`, which selects an integer (a time) and a blob, and call `f` with each row
    /// while it returns true. A blob that does not decode is reported as damage to
    /// `what(time)`.
    fn for_each_blob(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        err: &impl Fn(rusqlite::Error) -> StoreError,
        what: impl Fn(UnixMillis) -> String,
        mut f: impl FnMut(UnixMillis, &[u8]) -> Result<bool, RowError>,
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(err)?;
        let mut rows = stmt.query(params).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            let t: UnixMillis = r.get(0).map_err(err)?;
            let data = r.get_ref(1).map_err(err)?;
            let data = data.as_blob().map_err(|e| self.cx.corrupt(what(t), e))?;
            match f(t, data) {
                Ok(true) => {}
                Ok(false) => break,
                Err(RowError::Codec(e)) => return Err(self.cx.corrupt(what(t), e)),
                Err(RowError::Store(e)) => return Err(e),
            }
        }
        Ok(())
    }

    fn resolve_host(&self, name: &str) -> Result<HostId, StoreError> {
        let err = self.cx.sql("looking up the host");
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, customer, host FROM hosts")
            .map_err(&err)?;
        let hosts = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(&err)?
            .collect::<Result<Vec<(HostId, String, String)>, _>>()
            .map_err(&err)?;
        HostName::parse(name).resolve(&hosts)
    }

    /// The host's series that `metric` selects, sorted by name and labels.
    fn host_series(
        &self,
        host: HostId,
        metric: Option<&str>,
    ) -> Result<Vec<SeriesRow>, StoreError> {
        let err = self.cx.sql("reading the host's series");
        let filter = MetricFilter::parse(metric);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, name, labels, kind FROM series WHERE host_id = ?1
                 ORDER BY name, labels",
            )
            .map_err(&err)?;
        let mut rows = stmt.query([host]).map_err(&err)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(&err)? {
            let name: String = r.get(1).map_err(&err)?;
            if !filter.matches(&name) {
                continue;
            }
            let kind: String = r.get(3).map_err(&err)?;
            out.push(SeriesRow {
                id: r.get(0).map_err(&err)?,
                name,
                labels: r.get(2).map_err(&err)?,
                kind: kind_from(&kind)
                    .ok_or_else(|| self.cx.corrupt("series kind", format!("'{kind}'")))?,
            });
        }
        Ok(out)
    }

    /// Every host's loss totals by scope name, from `stream_loss`.
    fn stream_loss(&self) -> Result<HashMap<HostId, BTreeMap<String, LossReport>>, StoreError> {
        let err = self.cx.sql("reading loss per scope");
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT host_id, stream, dropped_batches, dropped_samples, discarded_by_revocation
                 FROM stream_loss",
            )
            .map_err(&err)?;
        let mut rows = stmt.query([]).map_err(&err)?;
        let mut out: HashMap<HostId, BTreeMap<String, LossReport>> = HashMap::new();
        while let Some(r) = rows.next().map_err(&err)? {
            let get_u = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64).map_err(&err);
            let code: i64 = r.get(1).map_err(&err)?;
            let stream = u8::try_from(code)
                .ok()
                .and_then(StreamId::from_code)
                .ok_or_else(|| self.cx.corrupt("stream code of a loss total", code))?;
            let loss = LossReport {
                dropped_batches: get_u(2)?,
                dropped_samples: get_u(3)?,
                discarded_by_revocation: get_u(4)?,
            };
            out.entry(r.get(0).map_err(&err)?)
                .or_default()
                .insert(stream.scope().as_str().to_string(), loss);
        }
        Ok(out)
    }

    /// Call `f` with each of the host's log records that match `filter` (time, severity,
    /// pattern; not its limit), row by row in the order `rows` says, with the row's id and
    /// `ts_max`. `f` answers whether to go on to the next row.
    fn matching_logs(
        &self,
        host: HostId,
        filter: &LogFilter,
        rows: LogRows,
        mut f: impl FnMut(i64, &logblock::BlockReader<'_>, &RecordRef<'_>),
        mut next_row: impl FnMut(UnixMillis) -> bool,
    ) -> Result<(), StoreError> {
        let err = self.cx.sql("reading logs");
        let worst = filter
            .min_severity
            .map_or(Severity::Debug.level(), |s| s.level());
        // The time range and worst level of a batch skip rows that cannot match; the index
        // answers this without touching the blobs.
        let sql = match rows {
            LogRows::Overlapping => {
                "SELECT id, ts_max FROM logs
                 WHERE host_id = ?1 AND ts_max >= ?2 AND ts_min < ?3 AND worst <= ?4
                 ORDER BY id"
            }
            LogRows::Straddling => {
                "SELECT id, ts_max FROM logs
                 WHERE host_id = ?1 AND ts_max >= ?2 AND ts_min < ?3 AND worst <= ?4
                   AND (ts_min < ?2 OR ts_max >= ?3)
                 ORDER BY id"
            }
            LogRows::NewestFirst => {
                "SELECT id, ts_max FROM logs
                 WHERE host_id = ?1 AND ts_max >= ?2 AND ts_min < ?3 AND worst <= ?4
                 ORDER BY ts_max DESC, id DESC"
            }
        };
        let ids: Vec<(i64, UnixMillis)> = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut stmt| {
                stmt.query_map(params![host, filter.since, filter.until, worst], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect()
            })
            .map_err(&err)?;
        let mut unpacker = None;
        let mut blob = self
            .conn
            .prepare_cached("SELECT codec, data FROM logs WHERE id = ?1")
            .map_err(&err)?;
        for (id, ts_max) in ids {
            if !next_row(ts_max) {
                break;
            }
            let mut q = blob.query(params![id]).map_err(&err)?;
            let Some(row) = q.next().map_err(&err)? else {
                continue;
            };
            let codec: i64 = row.get(0).map_err(&err)?;
            let what = || format!("log batch {id}");
            let data = row
                .get_ref(1)
                .map_err(&err)?
                .as_blob()
                .map_err(|e| self.cx.corrupt(what(), e))?;
            matching_records(codec, data, filter, worst, &mut unpacker, |b, r| {
                f(id, b, r)
            })
            .map_err(|e| self.cx.corrupt(what(), e))?;
        }
        Ok(())
    }

    /// [`Store::rollups`] of the series `metric` names and `select` accepts: the blobs hold
    /// every series of a host-hour, and only the selected ones are kept as buckets.
    fn read_rollups(
        &mut self,
        host: &str,
        metric: Option<&str>,
        select: &dyn Fn(&str, &str) -> bool,
        resolution: Resolution,
        since: UnixMillis,
        until: UnixMillis,
    ) -> Result<Vec<SeriesRollups>, StoreError> {
        let err = self.cx.sql("reading rollups");
        let _snapshot = self.snapshot().map_err(&err)?;
        let host = self.resolve_host(host)?;
        let mut series = self.host_series(host, metric)?;
        series.retain(|s| select(&s.name, &s.labels));
        let mut reader = RollupReader::new(&series, resolution, since, until);
        // Hours folded to hourly aggregates have no 5-minute buckets to give. `+minutes`
        // keeps SQLite on the (host, hour) key: on the retention index (minutes, hour) it
        // would read every host's rows of the range, 20 times slower with 100 hosts.
        let sql = match resolution {
            Resolution::FiveMinutes => {
                "SELECT hour, data FROM rollups
                 WHERE host_id = ?1 AND hour > ?2 AND hour < ?3 AND +minutes = 5 ORDER BY hour"
            }
            Resolution::Hour => {
                "SELECT hour, data FROM rollups
                 WHERE host_id = ?1 AND hour > ?2 AND hour < ?3 ORDER BY hour"
            }
        };
        let (from, to) = rollup_rows(since, until);
        self.for_each_blob(
            sql,
            params![host, from, to],
            &err,
            |hour| format!("rollups of host {host} at hour {hour}"),
            |hour, data| {
                reader.row(hour, data)?;
                Ok(true)
            },
        )?;
        Ok(reader.finish(series))
    }

    /// The body of [`Store::commit`].
    fn commit_tx(&mut self, batches: &[PendingBatch]) -> Result<Vec<CommitOutcome>, StoreError> {
        let err = self.cx.sql("committing batches");
        let Self {
            conn,
            hosts_known,
            series,
            ..
        } = self;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let mut outcomes = Vec::with_capacity(batches.len());
        // (host, stream) -> (mark in the database, mark after this transaction)
        let mut marks: HashMap<(HostId, u8), (Option<u64>, Option<u64>)> = HashMap::new();
        // host -> (newest receipt, loss reported by stored batches)
        let mut touched: HashMap<HostId, (UnixMillis, LossReport)> = HashMap::new();
        // (host, stream) -> loss reported by that stream's stored batches
        let mut stream_loss: HashMap<(HostId, u8), LossReport> = HashMap::new();
        let mut key = Vec::with_capacity(128);
        let mut pairs = Vec::with_capacity(128);
        let mut blob = Vec::with_capacity(2048);
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO staging (host_id, ts, samples, data) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(&err)?;
            let mut upsert_series = tx
                .prepare_cached(
                    "INSERT INTO series (host_id, name, labels, kind) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (host_id, name, labels) DO UPDATE SET kind = excluded.kind
                     RETURNING id",
                )
                .map_err(&err)?;
            for b in batches {
                if !hosts_known.contains(&b.host) {
                    let exists = tx
                        .prepare_cached("SELECT 1 FROM hosts WHERE id = ?1")
                        .and_then(|mut s| s.exists([b.host]))
                        .map_err(&err)?;
                    if !exists {
                        return Err(StoreError::UnknownHostId(b.host));
                    }
                    hosts_known.insert(b.host);
                }
                let seen = touched
                    .entry(b.host)
                    .or_insert((b.received_at, LossReport::default()));
                seen.0 = seen.0.max(b.received_at);
                let mark = match marks.entry((b.host, b.stream.code())) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        let db: Option<i64> = tx
                            .prepare_cached(
                                "SELECT high_seq FROM streams WHERE host_id = ?1 AND stream = ?2",
                            )
                            .and_then(|mut s| {
                                s.query_row(params![b.host, b.stream.code()], |r| r.get(0))
                                    .optional()
                            })
                            .map_err(&err)?;
                        let db = db.map(|m| m as u64);
                        e.insert((db, db))
                    }
                };
                if mark.1.is_some_and(|m| b.seq <= m) {
                    outcomes.push(CommitOutcome::Duplicate);
                    continue;
                }
                mark.1 = Some(b.seq);
                if !b.loss.is_empty() {
                    add_loss(&mut seen.1, &b.loss);
                    add_loss(
                        stream_loss.entry((b.host, b.stream.code())).or_default(),
                        &b.loss,
                    );
                }
                outcomes.push(CommitOutcome::Stored);
                let snapshot = match &b.data {
                    BatchData::Metrics(s) => s,
                    BatchData::Logs(records) => {
                        insert_records(&tx, b.host, records).map_err(&err)?;
                        continue;
                    }
                    BatchData::LogBlock(l) => {
                        insert_block(&tx, b.host, &l.block, &l.summary).map_err(&err)?;
                        continue;
                    }
                };
                if snapshot.samples.is_empty() {
                    continue;
                }
                let hs = match series.entry(b.host) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(load_series(&tx, b.host).map_err(&err)?),
                };
                batch_series(
                    hs,
                    &mut |name: &str, labels: &str, kind: MetricKind| {
                        upsert_series.query_row(params![b.host, name, labels, kind.as_str()], |r| {
                            r.get::<_, SeriesId>(0)
                        })
                    },
                    &snapshot.samples,
                    &mut key,
                    &mut pairs,
                )
                .map_err(&err)?;
                blob.clear();
                chunk::encode_staged(&pairs, &mut blob);
                insert
                    .execute(params![b.host, snapshot.ts, pairs.len() as i64, blob])
                    .map_err(&err)?;
            }
            let mut set_mark = tx
                .prepare_cached(
                    "INSERT INTO streams (host_id, stream, high_seq) VALUES (?1, ?2, ?3)
                     ON CONFLICT (host_id, stream) DO UPDATE SET high_seq = excluded.high_seq",
                )
                .map_err(&err)?;
            for (&(host, stream), &(db, now)) in &marks {
                if let Some(m) = now
                    && db != now
                {
                    set_mark
                        .execute(params![host, stream, m as i64])
                        .map_err(&err)?;
                }
            }
            let mut set_host = tx
                .prepare_cached(
                    // Totals saturate: an absurd loss report must not make commits fail.
                    "UPDATE hosts SET last_seen = max(coalesce(last_seen, ?2), ?2),
                        dropped_batches = min(dropped_batches + ?3, 9223372036854775807),
                        dropped_samples = min(dropped_samples + ?4, 9223372036854775807),
                        discarded_by_revocation =
                            min(discarded_by_revocation + ?5, 9223372036854775807)
                     WHERE id = ?1",
                )
                .map_err(&err)?;
            for (&host, (seen, loss)) in &touched {
                set_host
                    .execute(params![
                        host,
                        seen,
                        sql_int(loss.dropped_batches),
                        sql_int(loss.dropped_samples),
                        sql_int(loss.discarded_by_revocation)
                    ])
                    .map_err(&err)?;
            }
            let mut add_stream_loss = tx
                .prepare_cached(
                    "INSERT INTO stream_loss (host_id, stream, dropped_batches, dropped_samples,
                                              discarded_by_revocation)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (host_id, stream) DO UPDATE SET
                        dropped_batches =
                            min(dropped_batches + excluded.dropped_batches, 9223372036854775807),
                        dropped_samples =
                            min(dropped_samples + excluded.dropped_samples, 9223372036854775807),
                        discarded_by_revocation = min(
                            discarded_by_revocation + excluded.discarded_by_revocation,
                            9223372036854775807)",
                )
                .map_err(&err)?;
            for (&(host, stream), loss) in &stream_loss {
                add_stream_loss
                    .execute(params![
                        host,
                        stream,
                        sql_int(loss.dropped_batches),
                        sql_int(loss.dropped_samples),
                        sql_int(loss.discarded_by_revocation)
                    ])
                    .map_err(&err)?;
            }
        }
        tx.commit().map_err(&err)?;
        Ok(outcomes)
    }

    /// Compact one host's closed staging rows; called inside the compaction transaction.
    fn compact_host(
        &self,
        host: HostId,
        cutoff: UnixMillis,
        stats: &mut CompactStats,
    ) -> Result<(), StoreError> {
        let err = self.cx.sql("compacting");
        let kinds: HashMap<SeriesId, MetricKind> = self
            .host_series(host, None)?
            .into_iter()
            .map(|s| (s.id, s.kind))
            .collect();
        // Rows come by time, so each hour's rows are contiguous.
        let mut hour: Option<UnixMillis> = None;
        let mut acc: BTreeMap<SeriesId, Vec<(UnixMillis, f64)>> = BTreeMap::new();
        self.for_each_blob(
            "SELECT ts, data FROM staging WHERE host_id = ?1 AND ts < ?2 ORDER BY ts, id",
            params![host, cutoff],
            &err,
            |_| format!("staged batch of host {host}"),
            |ts, data| {
                let h = super::hour_start(ts);
                if let Some(cur) = hour
                    && cur != h
                {
                    self.write_block(host, cur, &mut acc, &kinds, stats)?;
                }
                hour = Some(h);
                let n =
                    chunk::decode_staged(data, |id, v| acc.entry(id).or_default().push((ts, v)))?;
                stats.batches += 1;
                stats.samples += n as u64;
                Ok(true)
            },
        )?;
        if let Some(h) = hour {
            self.write_block(host, h, &mut acc, &kinds, stats)?;
        }
        self.conn
            .prepare_cached("DELETE FROM staging WHERE host_id = ?1 AND ts < ?2")
            .and_then(|mut s| s.execute(params![host, cutoff]))
            .map_err(&err)?;
        Ok(())
    }

    /// Write (or merge into) the block and rollups of one host-hour from `acc`, which holds
    /// staged points in write order and is left empty.
    fn write_block(
        &self,
        host: HostId,
        hour: UnixMillis,
        acc: &mut BTreeMap<SeriesId, Vec<(UnixMillis, f64)>>,
        kinds: &HashMap<SeriesId, MetricKind>,
        stats: &mut CompactStats,
    ) -> Result<(), StoreError> {
        let err = self.cx.sql("writing a compacted block");
        let conn = &self.conn;
        let what = || format!("block of host {host} at hour {hour}");
        let existing: Option<Vec<u8>> = conn
            .prepare_cached("SELECT data FROM chunks WHERE host_id = ?1 AND hour = ?2")
            .and_then(|mut s| s.query_row(params![host, hour], |r| r.get(0)).optional())
            .map_err(&err)?;
        let merged = merge_hour(hour, existing.as_deref(), acc, kinds, stats)
            .map_err(|e| self.cx.corrupt(what(), e))?;
        let mut set_last = conn
            .prepare_cached(
                "UPDATE series SET last_ts = ?2, last_value = ?3
                 WHERE id = ?1 AND (last_ts IS NULL OR last_ts <= ?2)",
            )
            .map_err(&err)?;
        for (id, t, v) in merged.newest {
            set_last.execute(params![id, t, v]).map_err(&err)?;
        }
        conn.prepare_cached(
            "INSERT OR REPLACE INTO chunks (host_id, hour, samples, data) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut s| s.execute(params![host, hour, sql_int(merged.samples), merged.block]))
        .map_err(&err)?;
        conn.prepare_cached(
            "INSERT OR REPLACE INTO rollups (host_id, hour, data) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut s| s.execute(params![host, hour, merged.rollups]))
        .map_err(&err)?;
        Ok(())
    }
}

/// Load a host's series for the writer's cache.
fn load_series(conn: &Connection, host: HostId) -> rusqlite::Result<HostSeries> {
    let mut stmt =
        conn.prepare_cached("SELECT id, name, labels, kind FROM series WHERE host_id = ?1")?;
    let mut rows = stmt.query([host])?;
    let mut out = HostSeries::default();
    let mut key = Vec::new();
    while let Some(r) = rows.next()? {
        let name: String = r.get(1)?;
        let labels: String = r.get(2)?;
        let kind: String = r.get(3)?;
        series_key(&mut key, &name, &labels);
        // An unknown kind is rewritten by the next sample of that series.
        let kind = kind_from(&kind).unwrap_or(MetricKind::Gauge);
        out.by_key.insert(key.as_slice().into(), (r.get(0)?, kind));
    }
    Ok(out)
}

impl Store for SqliteStore {
    fn finding_for(&mut self, key: &FindingKey) -> Result<Option<FindingRow>, StoreError> {
        self.finding_for_key(key)
    }

    fn apply_finding(&mut self, change: &Change) -> Result<i64, StoreError> {
        self.apply_finding_change(change)
    }

    fn findings(&mut self, filter: &FindingFilter) -> Result<Vec<FindingRow>, StoreError> {
        self.list_findings(filter)
    }

    fn finding(&mut self, id: i64) -> Result<Option<(FindingRow, Vec<Event>)>, StoreError> {
        self.finding_with_timeline(id)
    }

    fn add_silence(&mut self, s: &Silence) -> Result<i64, StoreError> {
        self.insert_silence(s)
    }

    fn silences(&mut self, after: UnixMillis) -> Result<Vec<Silence>, StoreError> {
        self.select_silences(after)
    }

    fn end_silence(&mut self, id: i64, at: UnixMillis) -> Result<(), StoreError> {
        self.close_silence(id, at)
    }

    fn add_token(&mut self, t: &TokenRow, hash: &str) -> Result<(), StoreError> {
        self.writable("adding a token")?;
        let r = self.conn.execute(
            "INSERT INTO tokens (name, role, hash, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![t.name, t.role.as_str(), hash, t.created_at, t.created_by],
        );
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(rows::token_taken(&t.name))
            }
            Err(e) => Err(self.cx.sql("adding a token")(e)),
        }
    }

    fn tokens(&mut self) -> Result<Vec<TokenRow>, StoreError> {
        self.conn
            .prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY name"))
            .and_then(|mut st| st.query_map([], |r| rows::token(r))?.collect())
            .map_err(self.cx.sql("listing tokens"))
    }

    fn token_by_hash(&mut self, hash: &str) -> Result<Option<TokenRow>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1 AND revoked_at IS NULL"
            ))
            .and_then(|mut st| st.query_row([hash], |r| rows::token(r)).optional())
            .map_err(self.cx.sql("checking a token"))
    }

    fn revoke_token(&mut self, name: &str, at: UnixMillis) -> Result<(), StoreError> {
        self.writable("revoking a token")?;
        let n = self
            .conn
            .execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
                params![name, at],
            )
            .map_err(self.cx.sql("revoking a token"))?;
        if n == 0 {
            return Err(rows::no_active_token(name));
        }
        Ok(())
    }

    fn add_audit(&mut self, a: &AuditRow) -> Result<i64, StoreError> {
        self.insert_audit(a)
    }

    fn audit(&mut self, f: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        self.select_audit(f)
    }

    fn set_contract(&mut self, c: &ContractAssignment) -> Result<(), StoreError> {
        self.upsert_contract(c)
    }

    fn contract_assignments(&mut self) -> Result<Vec<ContractAssignment>, StoreError> {
        self.select_contracts()
    }

    fn rules_state(&mut self) -> Result<Option<String>, StoreError> {
        self.load_rules_state()
    }

    fn save_rules_state(&mut self, json: &str) -> Result<(), StoreError> {
        self.store_rules_state(json)
    }

    fn host_id(&mut self, name: &str) -> Result<HostId, StoreError> {
        self.host_id_by_name(name)
    }

    fn add_diagnostic(
        &mut self,
        d: &NewDiagnostic,
        sender: Sender,
        deadline: UnixMillis,
    ) -> Result<i64, StoreError> {
        self.insert_diagnostic(d, sender, deadline)
    }

    fn unclaimed_diagnostics(&mut self) -> Result<Vec<(i64, NewDiagnostic)>, StoreError> {
        self.select_unclaimed_diagnostics()
    }

    fn claim_diagnostic(&mut self, id: i64, deadline: UnixMillis) -> Result<bool, StoreError> {
        self.claim_pending_diagnostic(id, deadline)
    }

    fn expire_diagnostics(&mut self, now: UnixMillis) -> Result<u64, StoreError> {
        self.end_expired_diagnostics(now)
    }

    fn finish_diagnostic(&mut self, id: i64, r: &DiagnosticResult) -> Result<bool, StoreError> {
        self.update_diagnostic(id, r)
    }

    fn diagnostic(&mut self, id: i64) -> Result<Option<DiagnosticRow>, StoreError> {
        self.select_diagnostic(id)
    }

    fn diagnostics(
        &mut self,
        host: HostId,
        limit: usize,
        before_id: Option<i64>,
    ) -> Result<Vec<DiagnosticRow>, StoreError> {
        self.select_diagnostics(host, limit, before_id)
    }

    fn diagnostics_for_finding(&mut self, finding: i64) -> Result<Vec<DiagnosticRow>, StoreError> {
        self.select_finding_diagnostics(finding)
    }

    fn count_diagnostics_run(
        &mut self,
        host: HostId,
        since: UnixMillis,
        until: UnixMillis,
    ) -> Result<u64, StoreError> {
        self.count_done_diagnostics(host, since, until)
    }

    fn abandon_diagnostics(&mut self, now: UnixMillis, message: &str) -> Result<u64, StoreError> {
        self.fail_pending_diagnostics(now, message)
    }

    fn add_report(&mut self, r: &NewReport) -> Result<Option<i64>, StoreError> {
        self.insert_report(r)
    }

    fn report_progress(&mut self, id: i64, percent: u8) -> Result<(), StoreError> {
        self.update_report_progress(id, percent)
    }

    fn finish_report(
        &mut self,
        id: i64,
        outcome: Result<&[u8], &str>,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        self.complete_report(id, outcome, now)
    }

    fn report(&mut self, id: i64) -> Result<Option<ReportRow>, StoreError> {
        self.select_report(id)
    }

    fn reports(
        &mut self,
        customer: Option<&str>,
        limit: usize,
        before_id: Option<i64>,
    ) -> Result<Vec<ReportRow>, StoreError> {
        self.select_reports(customer, limit, before_id)
    }

    fn abandon_reports(&mut self, now: UnixMillis, message: &str) -> Result<u64, StoreError> {
        self.fail_running_reports(now, message)
    }

    fn lease(
        &mut self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        self.writable("taking a lease")?;
        let got = self
            .conn
            .prepare_cached(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                    expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.expires_at < ?4
                 RETURNING holder",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![name, holder, now.saturating_add(ttl_ms), now],
                    |_| Ok(()),
                )
                .optional()
            })
            .map_err(self.cx.sql("taking a lease"))?;
        Ok(got.is_some())
    }

    fn release_lease(&mut self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.writable("giving a lease up")?;
        self.conn
            .execute(
                "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
                params![name, holder],
            )
            .map_err(self.cx.sql("giving a lease up"))?;
        Ok(())
    }

    fn register_host(&mut self, hello: &HostHello, now: UnixMillis) -> Result<HostId, StoreError> {
        self.writable("registering a host")?;
        let err = self.cx.sql("registering a host");
        let facts = serde_json::to_string(hello.facts).expect("host facts serialize");
        let consent = serde_json::to_string(hello.consent).expect("consent serializes");
        let id: HostId = self
            .conn
            .prepare_cached(
                "INSERT INTO hosts (customer, host, first_seen, agent_version, facts, consent,
                                    interval_ms, connected, cert_expires)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8)
                 ON CONFLICT (customer, host) DO UPDATE SET
                    agent_version = excluded.agent_version, facts = excluded.facts,
                    consent = excluded.consent, interval_ms = excluded.interval_ms,
                    connected = 1,
                    cert_expires = coalesce(excluded.cert_expires, cert_expires)
                 RETURNING id",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![
                        hello.identity.customer,
                        hello.identity.host,
                        now,
                        hello.agent_version,
                        facts,
                        consent,
                        sql_int(hello.interval_ms),
                        hello.cert_expires
                    ],
                    |r| r.get(0),
                )
            })
            .map_err(err)?;
        self.hosts_known.insert(id);
        Ok(id)
    }

    fn set_consent(
        &mut self,
        host: HostId,
        consent: &ConsentRecord,
        _now: UnixMillis,
    ) -> Result<(), StoreError> {
        self.writable("storing a consent record")?;
        let consent = serde_json::to_string(consent).expect("consent serializes");
        let n = self
            .conn
            .prepare_cached("UPDATE hosts SET consent = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![host, consent]))
            .map_err(self.cx.sql("storing a consent record"))?;
        if n == 0 {
            return Err(StoreError::UnknownHostId(host));
        }
        Ok(())
    }

    fn set_disconnected(&mut self, host: HostId, _now: UnixMillis) -> Result<(), StoreError> {
        self.writable("marking a host disconnected")?;
        let n = self
            .conn
            .prepare_cached("UPDATE hosts SET connected = 0 WHERE id = ?1")
            .and_then(|mut s| s.execute([host]))
            .map_err(self.cx.sql("marking a host disconnected"))?;
        if n == 0 {
            return Err(StoreError::UnknownHostId(host));
        }
        Ok(())
    }

    fn host_updates(
        &mut self,
        updates: &[HostUpdate<'_>],
        now: UnixMillis,
    ) -> Vec<Result<HostUpdated, StoreError>> {
        // One transaction, one sync: 10,000 agents reconnecting at once would otherwise
        // wait on 20,000 syncs in turn. A failed update is only that update's error (an
        // SQLite statement error leaves the transaction open).
        let one_by_one =
            |st: &mut Self| -> Vec<_> { updates.iter().map(|u| st.host_update(u, now)).collect() };
        if updates.len() < 2
            || self.writable("updating hosts").is_err()
            || self.conn.execute_batch("BEGIN IMMEDIATE").is_err()
        {
            return one_by_one(self);
        }
        let out = one_by_one(self);
        match self.conn.execute_batch("COMMIT") {
            Ok(()) => out,
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                // Hosts registered in the rolled-back transaction may be cached.
                self.hosts_known.clear();
                group_failed(out.len(), &self.cx.0, "updating hosts", &e.to_string())
            }
        }
    }

    fn disconnect_all(&mut self, _now: UnixMillis) -> Result<(), StoreError> {
        self.writable("marking hosts disconnected")?;
        self.conn
            .execute("UPDATE hosts SET connected = 0 WHERE connected <> 0", [])
            .map_err(self.cx.sql("marking hosts disconnected"))?;
        Ok(())
    }

    fn high_water(&mut self, host: HostId) -> Result<Vec<(StreamId, u64)>, StoreError> {
        let err = self.cx.sql("reading high-water marks");
        let mut stmt = self
            .conn
            .prepare_cached("SELECT stream, high_seq FROM streams WHERE host_id = ?1")
            .map_err(&err)?;
        let rows = stmt
            .query_map([host], |r| Ok((r.get::<_, u8>(0)?, r.get::<_, i64>(1)?)))
            .map_err(&err)?;
        let mut out = Vec::new();
        for row in rows {
            let (code, seq) = row.map_err(&err)?;
            let stream = StreamId::from_code(code)
                .ok_or_else(|| self.cx.corrupt("stream code", code.to_string()))?;
            out.push((stream, seq as u64));
        }
        out.sort();
        Ok(out)
    }

    fn commit(&mut self, batches: &[PendingBatch]) -> Result<Vec<CommitOutcome>, StoreError> {
        self.writable("storing batches")?;
        let result = self.commit_tx(batches);
        if result.is_err() {
            // Series created by the rolled-back transaction may be cached: forget them all.
            self.series.clear();
        }
        result
    }

    fn compact_some(
        &mut self,
        now: UnixMillis,
        budget_samples: u64,
    ) -> Result<CompactStats, StoreError> {
        self.writable("compaction")?;
        let err = self.cx.sql("compacting");
        let cutoff = compaction_cutoff(now, self.grace_ms);
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(&err)?;
        let result = (|| {
            let hosts: Vec<HostId> = self
                .conn
                .prepare_cached(
                    "SELECT id FROM hosts
                     WHERE EXISTS (SELECT 1 FROM staging WHERE host_id = hosts.id AND ts < ?1)
                     ORDER BY id",
                )
                .and_then(|mut s| s.query_map([cutoff], |r| r.get(0))?.collect())
                .map_err(&err)?;
            let mut stats = CompactStats::default();
            for host in hosts {
                if stats.samples >= budget_samples {
                    stats.more = true;
                    break;
                }
                self.compact_host(host, cutoff, &mut stats)?;
            }
            Ok(stats)
        })();
        match result {
            Ok(stats) => {
                self.conn.execute_batch("COMMIT").map_err(&err)?;
                Ok(stats)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn hosts(&mut self, now: UnixMillis) -> Result<Vec<HostStatus>, StoreError> {
        let err = self.cx.sql("listing hosts");
        // One state for both tables, so a host's scopes add up to its totals.
        let _snapshot = self.snapshot().map_err(&err)?;
        let mut by_scope = self.stream_loss()?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, customer, host, first_seen, last_seen, agent_version, facts, consent,
                        interval_ms, connected, dropped_batches, dropped_samples,
                        discarded_by_revocation, cert_expires
                 FROM hosts ORDER BY customer, host",
            )
            .map_err(&err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(HostRow {
                    id: r.get(0)?,
                    customer: r.get(1)?,
                    host: r.get(2)?,
                    first_seen: r.get(3)?,
                    last_seen: r.get(4)?,
                    agent_version: r.get(5)?,
                    facts: r.get(6)?,
                    consent: r.get(7)?,
                    interval_ms: r.get(8)?,
                    connected: r.get::<_, i64>(9)? != 0,
                    totals: [r.get(10)?, r.get(11)?, r.get(12)?],
                    cert_expires: r.get(13)?,
                })
            })
            .map_err(&err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(&err)?;
        rows.into_iter()
            .map(|row| {
                host_status(row, &mut by_scope, now).map_err(|(what, e)| self.cx.corrupt(what, e))
            })
            .collect()
    }

    fn logs(&mut self, host: &str, filter: &LogFilter) -> Result<Vec<LogRecord>, StoreError> {
        let err = self.cx.sql("reading logs");
        let _snapshot = self.snapshot().map_err(&err)?;
        let host = self.resolve_host(host)?;
        let keeper = std::cell::RefCell::new(LogKeeper::new(filter.limit));
        let rows = keeper.borrow().rows();
        self.matching_logs(
            host,
            filter,
            rows,
            |id, b, r| keeper.borrow_mut().keep(id, b, r),
            |ts_max| keeper.borrow().go_on(ts_max),
        )?;
        Ok(keeper.into_inner().finish())
    }

    fn count_logs(&mut self, host: &str, filter: &LogFilter) -> Result<u64, StoreError> {
        let err = self.cx.sql("counting logs");
        let _snapshot = self.snapshot().map_err(&err)?;
        let host = self.resolve_host(host)?;
        let mut n: u64 = 0;
        if filter.grep.is_some() || filter.min_severity.is_some() {
            self.matching_logs(
                host,
                filter,
                LogRows::Overlapping,
                |_, _, _| n += 1,
                |_| true,
            )?;
            return Ok(n);
        }
        if filter.since >= filter.until {
            return Ok(0);
        }
        // Every record of a batch wholly inside the window matches: its count is in the row.
        let inside: i64 = self
            .conn
            .prepare_cached(
                "SELECT coalesce(sum(records), 0) FROM logs
                 WHERE host_id = ?1 AND ts_max >= ?2 AND ts_max < ?3 AND ts_min >= ?2",
            )
            .and_then(|mut s| s.query_row(params![host, filter.since, filter.until], |r| r.get(0)))
            .map_err(&err)?;
        n = inside.max(0) as u64;
        self.matching_logs(
            host,
            filter,
            LogRows::Straddling,
            |_, _, _| n += 1,
            |_| true,
        )?;
        Ok(n)
    }

    fn count_logs_by_source(
        &mut self,
        host: &str,
        filter: &LogFilter,
    ) -> Result<Vec<LogCount>, StoreError> {
        let err = self.cx.sql("counting logs");
        let _snapshot = self.snapshot().map_err(&err)?;
        let host = self.resolve_host(host)?;
        let mut counts = SourceCounts::default();
        self.matching_logs(
            host,
            filter,
            LogRows::Overlapping,
            |_, b, r| counts.add(b, r),
            |_| true,
        )?;
        Ok(counts.finish())
    }

    fn log_times(&mut self, host: &str, filter: &LogFilter) -> Result<Vec<UnixMillis>, StoreError> {
        let err = self.cx.sql("reading log times");
        let _snapshot = self.snapshot().map_err(&err)?;
        let host = self.resolve_host(host)?;
        let mut times = Vec::new();
        self.matching_logs(
            host,
            filter,
            LogRows::Overlapping,
            |_, _, r| times.push(r.time()),
            |_| true,
        )?;
        times.sort_unstable();
        Ok(times)
    }

    fn query(
        &mut self,
        host: &str,
        metric: Option<&str>,
        since: UnixMillis,
        until: UnixMillis,
    ) -> Result<Vec<SeriesPoints>, StoreError> {
        let err = self.cx.sql("reading samples");
        let _snapshot = self.snapshot().map_err(&err)?;
        let host = self.resolve_host(host)?;
        let series = self.host_series(host, metric)?;
        if series.is_empty() || since >= until {
            return Ok(Vec::new());
        }
        let mut reader = PointsReader::new(&series, since, until);
        // Blocks first, then staging in write order: the value written last wins.
        self.for_each_blob(
            "SELECT hour, data FROM chunks
             WHERE host_id = ?1 AND hour > ?2 AND hour < ?3 ORDER BY hour",
            params![host, since.saturating_sub(HOUR_MS), until],
            &err,
            |hour| format!("block of host {host} at hour {hour}"),
            |_, data| {
                reader.block(data)?;
                Ok(true)
            },
        )?;
        self.for_each_blob(
            "SELECT ts, data FROM staging WHERE host_id = ?1 AND ts >= ?2 AND ts < ?3
             ORDER BY ts, id",
            params![host, since, until],
            &err,
            |_| format!("staged batch of host {host}"),
            |ts, data| {
                reader.staged(ts, data)?;
                Ok(true)
            },
        )?;
        Ok(reader.finish(series))
    }

    fn latest(&mut self, host: &str) -> Result<Vec<Latest>, StoreError> {
        let err = self.cx.sql("reading the newest values");
        let _snapshot = self.snapshot().map_err(&err)?;
        let host = self.resolve_host(host)?;
        let series = self.host_series(host, None)?;
        let mut reader = LatestReader::new(&series);
        {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT id, last_ts, last_value FROM series WHERE host_id = ?1")
                .map_err(&err)?;
            let rows = stmt
                .query_map([host], |r| {
                    Ok((
                        r.get::<_, SeriesId>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, Option<f64>>(2)?,
                    ))
                })
                .map_err(&err)?;
            for row in rows {
                let (id, t, x) = row.map_err(&err)?;
                reader.compacted(id, t.zip(x));
            }
        }
        // Staging, newest first (and the later write first at equal times), until every
        // series has been seen there.
        self.for_each_blob(
            "SELECT ts, data FROM staging WHERE host_id = ?1 ORDER BY ts DESC, id DESC",
            [host],
            &err,
            |_| format!("staged batch of host {host}"),
            |ts, data| Ok(reader.staged(ts, data)?),
        )?;
        Ok(reader.finish(series))
    }

    fn rollups(
        &mut self,
        host: &str,
        metric: Option<&str>,
        resolution: Resolution,
        since: UnixMillis,
        until: UnixMillis,
    ) -> Result<Vec<SeriesRollups>, StoreError> {
        self.read_rollups(host, metric, &|_, _| true, resolution, since, until)
    }

    fn rollups_where(
        &mut self,
        host: &str,
        select: &dyn Fn(&str, &str) -> bool,
        resolution: Resolution,
        since: UnixMillis,
        until: UnixMillis,
    ) -> Result<Vec<SeriesRollups>, StoreError> {
        self.read_rollups(host, None, select, resolution, since, until)
    }

    fn retain_some(
        &mut self,
        now: UnixMillis,
        r: &Retention,
        budget: usize,
    ) -> Result<RetentionStats, StoreError> {
        self.writable("applying retention")?;
        let err = self.cx.sql("applying retention");
        let cx = self.cx.clone();
        let tx = self.conn.transaction().map_err(&err)?;
        let mut stats = RetentionStats::default();
        // Whole hours only: an hour goes once all of it is past the cutoff.
        let hour_cut = |age: i64| now.saturating_sub(age).saturating_sub(HOUR_MS);
        stats.raw_hours = tx
            .execute("DELETE FROM chunks WHERE hour <= ?1", [hour_cut(r.raw_ms)])
            .map_err(&err)? as u64;
        // Late data older than the raw tier would only be compacted to be deleted.
        tx.execute(
            "DELETE FROM staging WHERE ts < ?1",
            [now.saturating_sub(r.raw_ms)],
        )
        .map_err(&err)?;
        stats.rollup_hours = tx
            .execute(
                "DELETE FROM rollups WHERE hour <= ?1",
                [hour_cut(r.hourly_ms)],
            )
            .map_err(&err)? as u64;
        stats.log_batches = tx
            .execute(
                "DELETE FROM logs WHERE ts_max < ?1",
                [now.saturating_sub(r.logs_ms)],
            )
            .map_err(&err)? as u64;
        let old: Vec<(HostId, i64, Vec<u8>)> = tx
            .prepare(
                "SELECT host_id, hour, data FROM rollups WHERE minutes = 5 AND hour <= ?1
                 ORDER BY hour LIMIT ?2",
            )
            .and_then(|mut st| {
                st.query_map(
                    params![hour_cut(r.five_minutes_ms), budget as i64 + 1],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )?
                .collect()
            })
            .map_err(&err)?;
        stats.more = old.len() > budget;
        for (host, hour, data) in old.into_iter().take(budget) {
            let what = || format!("rollups of host {host} at hour {hour}");
            let folded = fold_to_hour(&data).map_err(|e| cx.corrupt(what(), e))?;
            tx.execute(
                "UPDATE rollups SET data = ?3, minutes = 60 WHERE host_id = ?1 AND hour = ?2",
                params![host, hour, folded],
            )
            .map_err(&err)?;
            stats.folded_hours += 1;
        }
        tx.commit().map_err(&err)?;
        Ok(stats)
    }

    fn table_sizes(&mut self) -> Result<Vec<TableSize>, StoreError> {
        // dbstat: every page of the file by the b-tree it belongs to (overflow pages, where
        // large blobs live, with their table); an index counted with its table.
        let err = self.cx.sql("reading table sizes");
        let mut stmt = self
            .conn
            .prepare(
                "SELECT coalesce(m.tbl_name, d.name) AS t,
                        sum(CASE WHEN m.type = 'index' THEN 0 ELSE d.pgsize END),
                        sum(CASE WHEN m.type = 'index' THEN d.pgsize ELSE 0 END)
                 FROM dbstat d LEFT JOIN sqlite_schema m ON m.name = d.name
                 GROUP BY t ORDER BY sum(d.pgsize) DESC",
            )
            .map_err(&err)?;
        stmt.query_map([], |r| {
            Ok(TableSize {
                name: r.get(0)?,
                heap: r.get::<_, i64>(1)? as u64,
                indexes: r.get::<_, i64>(2)? as u64,
                toast: 0,
            })
        })
        .map_err(&err)?
        .collect::<Result<_, _>>()
        .map_err(err)
    }

    fn stats(&mut self) -> Result<StoreStats, StoreError> {
        let err = self.cx.sql("reading sizes");
        let c = &self.conn;
        let one = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).map_err(&err);
        let three = |sql: &str| {
            c.query_row(sql, [], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            })
            .map_err(&err)
        };
        let (staged_batches, staged_samples, staged_bytes) = three(
            "SELECT count(*), coalesce(sum(samples), 0), coalesce(sum(length(data)), 0) FROM staging",
        )?;
        let (blocks, block_samples, block_bytes) = three(
            "SELECT count(*), coalesce(sum(samples), 0), coalesce(sum(length(data)), 0) FROM chunks",
        )?;
        let (log_batches, log_records, log_bytes) = three(
            "SELECT count(*), coalesce(sum(records), 0), coalesce(sum(length(data)), 0) FROM logs",
        )?;
        let page_size = one("PRAGMA page_size")? as u64;
        let pages = one("PRAGMA page_count")? as u64;
        let free = one("PRAGMA freelist_count")? as u64;
        let path = Path::new(&*self.cx.0);
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let wal = format!("{}-wal", self.cx.0);
        Ok(StoreStats {
            hosts: one("SELECT count(*) FROM hosts")? as u64,
            series: one("SELECT count(*) FROM series")? as u64,
            staged_batches,
            staged_samples,
            staged_bytes,
            blocks,
            block_samples,
            block_bytes,
            rollup_bytes: one("SELECT coalesce(sum(length(data)), 0) FROM rollups")? as u64,
            log_batches,
            log_records,
            log_bytes,
            live_bytes: (pages - free.min(pages)) * page_size,
            file_bytes: size(path) + size(Path::new(&wal)),
        })
    }
}

//! The PostgreSQL backend of [`Store`]: several collectors on one database.
//!
//! The same model as SQLite (staging rows per batch, compressed host-hour blocks and
//! rollups, log batches as blocks; see `store/mod.rs`), with what sharing needs:
//! - a commit locks its hosts' rows (`FOR NO KEY UPDATE`) before reading their high-water
//!   marks, so a batch redelivered to another collector after a reconnect is stored once
//!   even when both commit at the same moment;
//! - compaction and retention take a transaction-scoped advisory lock and step aside when
//!   another collector holds it;
//! - `chunks`, `rollups` and `logs` are range-partitioned by time (see [`schema`]):
//!   partitions are created before the transaction that needs them, and retention drops
//!   the ones wholly past their age;
//! - bulk rows (staging, logs) go in by binary COPY.
//!
//! Connections come from a small pool per URL and process (r2d2); each [`PgStore`] holds
//! one for its life and gives it back when dropped.

mod desk;
mod diagnostics;
mod findings;
mod reports;
pub mod schema;

use super::chunk::{self, BlockReader};
use super::common::{
    HostSeries, LogCodec, LogKeeper, LogRows, RollupReader, RowError, SeriesRow, add_loss,
    batch_series, fold_to_hour, kind_from, matching_records, merge_hour, rollup_rows, series_key,
    sql_int, unattributed_loss,
};
use super::query::{self, HostName, MetricFilter};
use super::{
    AuditFilter, AuditRow, BatchData, COMPACT_GRACE_MS, CommitOutcome, CompactStats,
    ContractAssignment, HOUR_MS, HostHello, HostId, HostStatus, Latest, LogCount, LogFilter,
    ONLINE_INTERVALS, PendingBatch, PgUrl, Resolution, Retention, RetentionStats, SeriesId,
    SeriesPoints, SeriesRollups, Store, StoreError, StoreStats, TokenRow, UNATTRIBUTED,
    compaction_cutoff,
};
use crate::api::token::Role;
use crate::diagnose::record::{DiagnosticResult, DiagnosticRow, NewDiagnostic};
use crate::findings::lifecycle::Event;
use crate::findings::record::{Change, FindingFilter, FindingKey, FindingRow, Silence};
use crate::report::record::{NewReport, ReportRow};
use aftercare_shared::consent::ConsentRecord;
use aftercare_shared::logblock::{self, RecordRef, Summary};
use aftercare_shared::model::{LogRecord, LossReport, MetricKind, Severity, UnixMillis};
use aftercare_shared::protocol::StreamId;
use postgres::types::{ToSql, Type};
use postgres::{GenericClient, NoTls};
use r2d2_postgres::PostgresConnectionManager;
use schema::{MIGRATIONS, PG_SCHEMA_VERSION, Partitioned};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;
type Conn = r2d2::PooledConnection<PostgresConnectionManager<NoTls>>;

/// "AftC", as SQLite's application id: the advisory lock migrations take.
const MIGRATION_LOCK: i64 = 0x4166_7443;
/// Advisory locks of the writers' shared housekeeping: one collector at a time.
const COMPACT_LOCK: i64 = 0x4166_7444;
const RETAIN_LOCK: i64 = 0x4166_7445;
const PARTITION_LOCK: i64 = 0x4166_7446;

/// Connections kept per URL in one process: the writer, the rules engine, the report
/// scheduler and a few API requests at once.
const POOL_SIZE: u32 = 16;

/// The pool of `url`, made at first use; one per URL and process.
fn pool(url: &PgUrl) -> Result<Pool, StoreError> {
    static POOLS: OnceLock<Mutex<HashMap<String, Pool>>> = OnceLock::new();
    // r2d2 gives every pool its own reaper threads unless one pool of threads is shared.
    static REAPER: OnceLock<Arc<scheduled_thread_pool::ScheduledThreadPool>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .expect("pool map");
    if let Some(p) = pools.get(url.as_str()) {
        return Ok(p.clone());
    }
    let config: postgres::Config = url.as_str().parse().map_err(|e| StoreError::Backend {
        path: url.redacted(),
        doing: "reading the database URL",
        source: Box::new(e),
    })?;
    let mut config = config;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config.application_name("aftercare-collector");
    let reaper = REAPER
        .get_or_init(|| {
            Arc::new(scheduled_thread_pool::ScheduledThreadPool::with_name(
                "pg-pool-{}",
                1,
            ))
        })
        .clone();
    let p = r2d2::Pool::builder()
        .max_size(POOL_SIZE)
        .min_idle(Some(0))
        .idle_timeout(Some(Duration::from_secs(300)))
        .connection_timeout(Duration::from_secs(15))
        .thread_pool(reaper)
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .build_unchecked(PostgresConnectionManager::new(config, NoTls));
    pools.insert(url.as_str().to_string(), p.clone());
    Ok(p)
}

/// Turns PostgreSQL errors into [`StoreError::Backend`] naming the database (password
/// hidden) and what was being done.
#[derive(Clone)]
struct Ctx(Arc<str>);

impl Ctx {
    fn sql(&self, doing: &'static str) -> impl Fn(postgres::Error) -> StoreError + use<> {
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

pub struct PgStore {
    conn: Conn,
    cx: Ctx,
    read_only: bool,
    grace_ms: i64,
    /// Hosts known to exist; hosts are never deleted, so this only grows.
    hosts_known: HashSet<HostId>,
    /// Series ids per host, loaded at a host's first batch. Cleared when a commit fails.
    series: HashMap<HostId, HostSeries>,
    /// Partitions known to exist (created by this or another collector).
    partitions: HashSet<(Partitioned, i64)>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.cx.0)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

fn connect(url: &PgUrl) -> Result<(Conn, Ctx), StoreError> {
    let cx = Ctx(url.redacted().into());
    let conn = pool(url)?.get().map_err(|e| StoreError::Backend {
        path: cx.0.to_string(),
        doing: "connecting",
        source: Box::new(e),
    })?;
    Ok((conn, cx))
}

/// Open (creating the schema if the database is empty) for the collector's writer, and
/// bring the schema up to date. The database itself must exist.
pub fn open_postgres(url: &PgUrl) -> Result<PgStore, StoreError> {
    let (mut conn, cx) = connect(url)?;
    conn.batch_execute("SET SESSION default_transaction_read_only = off")
        .map_err(cx.sql("setting up the connection"))?;
    migrate(&mut conn, &cx)?;
    Ok(PgStore::new(conn, cx, false))
}

/// Open an existing database for reading (CLI commands, API reads); its writing methods
/// return [`StoreError::ReadOnly`] and the session refuses writes as well.
pub fn open_postgres_readonly(url: &PgUrl) -> Result<PgStore, StoreError> {
    let (mut conn, cx) = connect(url)?;
    conn.batch_execute("SET SESSION default_transaction_read_only = on")
        .map_err(cx.sql("setting up the connection"))?;
    let found = schema_version(&mut *conn, &cx)?;
    match found {
        None => {
            return Err(StoreError::NoDatabase {
                path: cx.0.to_string(),
            });
        }
        Some(v) if v > PG_SCHEMA_VERSION => return Err(too_new(&cx, v)),
        Some(v) if v < PG_SCHEMA_VERSION => {
            return Err(StoreError::SchemaTooOld {
                path: cx.0.to_string(),
                found: v,
                known: PG_SCHEMA_VERSION,
            });
        }
        Some(_) => {}
    }
    Ok(PgStore::new(conn, cx, true))
}

fn too_new(cx: &Ctx, found: u32) -> StoreError {
    StoreError::SchemaTooNew {
        path: cx.0.to_string(),
        found,
        known: PG_SCHEMA_VERSION,
    }
}

/// The schema version, or None for a database without our schema. A database holding
/// other tables in its search path and not ours is refused.
fn schema_version(c: &mut impl GenericClient, cx: &Ctx) -> Result<Option<u32>, StoreError> {
    let err = cx.sql("reading the schema version");
    let meta: Option<String> = c
        .query_one("SELECT to_regclass('aftercare_schema')::text", &[])
        .map_err(&err)?
        .get(0);
    if meta.is_none() {
        let others: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()",
                &[],
            )
            .map_err(&err)?
            .get(0);
        if others > 0 {
            return Err(StoreError::NotOurs {
                path: cx.0.to_string(),
                detail: format!("its schema holds {others} tables of another program"),
            });
        }
        return Ok(None);
    }
    let row = c
        .query_one("SELECT version, application FROM aftercare_schema", &[])
        .map_err(&err)?;
    let app: String = row.get(1);
    if app != "aftercare" {
        return Err(StoreError::NotOurs {
            path: cx.0.to_string(),
            detail: format!("its schema table names application '{app}'"),
        });
    }
    Ok(Some(row.get::<_, i32>(0).max(0) as u32))
}

fn migrate(conn: &mut Conn, cx: &Ctx) -> Result<(), StoreError> {
    let err = cx.sql("upgrading the schema");
    // Cheap check first, so a collector starting beside others does not queue on the lock.
    if schema_version(&mut **conn, cx)? == Some(PG_SCHEMA_VERSION) {
        return Ok(());
    }
    loop {
        let mut tx = conn.transaction().map_err(&err)?;
        // Collectors starting together migrate one after the other.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(&err)?;
        let v = schema_version(&mut tx, cx)?;
        let v = match v {
            Some(v) if v > PG_SCHEMA_VERSION => return Err(too_new(cx, v)),
            Some(v) if v == PG_SCHEMA_VERSION => return Ok(()),
            Some(v) => v,
            None => {
                tx.batch_execute(
                    "CREATE TABLE aftercare_schema (
                         application TEXT NOT NULL,
                         version     INTEGER NOT NULL
                     );
                     INSERT INTO aftercare_schema VALUES ('aftercare', 0);",
                )
                .map_err(&err)?;
                0
            }
        };
        tx.batch_execute(MIGRATIONS[v as usize]).map_err(&err)?;
        tx.execute(
            "UPDATE aftercare_schema SET version = $1",
            &[&(v as i32 + 1)],
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
    }
}

/// Values of a statement's parameters.
type Params<'a> = [&'a (dyn ToSql + Sync)];

impl PgStore {
    fn new(conn: Conn, cx: Ctx, read_only: bool) -> Self {
        PgStore {
            conn,
            cx,
            read_only,
            grace_ms: COMPACT_GRACE_MS,
            hosts_known: HashSet::new(),
            series: HashMap::new(),
            partitions: HashSet::new(),
        }
    }

    /// How long after its end an hour waits for late batches before compaction.
    pub fn set_compaction_grace(&mut self, grace_ms: i64) {
        self.grace_ms = grace_ms.max(0);
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

    /// A read-only snapshot, so that a reader's statements all see one state (a compaction
    /// committing between them would otherwise move points out of staging after the blocks
    /// were read).
    fn snapshot(&mut self) -> Result<postgres::Transaction<'_>, postgres::Error> {
        self.conn
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
    }

    /// Make sure the partitions holding `slots` exist, each created in its own short
    /// transaction (creating a partition locks its parent).
    fn ensure_partitions(
        &mut self,
        table: Partitioned,
        slots: impl IntoIterator<Item = i64>,
    ) -> Result<(), StoreError> {
        let err = self.cx.sql("creating a partition");
        for slot in slots {
            if self.partitions.contains(&(table, slot)) {
                continue;
            }
            let name = table.name(slot);
            let exists: Option<String> = self
                .conn
                .query_one("SELECT to_regclass($1)::text", &[&name])
                .map_err(&err)?
                .get(0);
            if exists.is_none() {
                let (from, to) = table.bounds(slot);
                let mut tx = self.conn.transaction().map_err(&err)?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
                    .map_err(&err)?;
                tx.batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {} FOR VALUES FROM ({from}) TO ({to})",
                    table.table()
                ))
                .map_err(&err)?;
                tx.commit().map_err(&err)?;
            }
            self.partitions.insert((table, slot));
        }
        Ok(())
    }

    /// The partitions of `table` that exist, by slot.
    fn partition_slots(
        tx: &mut impl GenericClient,
        table: Partitioned,
        err: &impl Fn(postgres::Error) -> StoreError,
    ) -> Result<BTreeSet<i64>, StoreError> {
        let rows = tx
            .query(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = to_regclass($1)",
                &[&table.table()],
            )
            .map_err(err)?;
        Ok(rows
            .iter()
            .filter_map(|r| table.parse(r.get::<_, &str>(0)))
            .collect())
    }

    /// Run `sql`, which selects a bigint (a time) and a bytea, and call `f` with each row
    /// while it returns true. A blob that does not decode is reported as damage to
    /// `what(time)`.
    fn for_each_blob(
        c: &mut impl GenericClient,
        cx: &Ctx,
        sql: &str,
        params: &Params<'_>,
        err: &impl Fn(postgres::Error) -> StoreError,
        what: impl Fn(UnixMillis) -> String,
        mut f: impl FnMut(UnixMillis, &[u8]) -> Result<bool, RowError>,
    ) -> Result<(), StoreError> {
        // Rows stream from the server rather than arriving all at once.
        let mut rows = c.query_raw(sql, params.iter().copied()).map_err(err)?;
        use postgres::fallible_iterator::FallibleIterator;
        while let Some(r) = rows.next().map_err(err)? {
            let t: UnixMillis = r.get(0);
            let data: &[u8] = r.get(1);
            match f(t, data) {
                Ok(true) => {}
                Ok(false) => break,
                Err(RowError::Codec(e)) => return Err(cx.corrupt(what(t), e)),
                Err(RowError::Store(e)) => return Err(e),
            }
        }
        Ok(())
    }

    fn resolve_host(
        c: &mut impl GenericClient,
        cx: &Ctx,
        name: &str,
    ) -> Result<HostId, StoreError> {
        let err = cx.sql("looking up the host");
        let hosts: Vec<(HostId, String, String)> = c
            .query("SELECT id, customer, host FROM hosts", &[])
            .map_err(&err)?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        HostName::parse(name).resolve(&hosts)
    }

    /// The host's series that `metric` selects, sorted by name and labels.
    fn host_series(
        c: &mut impl GenericClient,
        cx: &Ctx,
        host: HostId,
        metric: Option<&str>,
    ) -> Result<Vec<SeriesRow>, StoreError> {
        let err = cx.sql("reading the host's series");
        let filter = MetricFilter::parse(metric);
        let rows = c
            .query(
                "SELECT id, name, labels, kind FROM series WHERE host_id = $1
                 ORDER BY name COLLATE \"C\", labels COLLATE \"C\"",
                &[&host],
            )
            .map_err(&err)?;
        let mut out = Vec::new();
        for r in rows {
            let name: String = r.get(1);
            if !filter.matches(&name) {
                continue;
            }
            let kind: String = r.get(3);
            out.push(SeriesRow {
                id: r.get(0),
                name,
                labels: r.get(2),
                kind: kind_from(&kind)
                    .ok_or_else(|| cx.corrupt("series kind", format!("'{kind}'")))?,
            });
        }
        Ok(out)
    }

    /// Every host's loss totals by scope name, from `stream_loss`.
    fn stream_loss(
        c: &mut impl GenericClient,
        cx: &Ctx,
    ) -> Result<HashMap<HostId, BTreeMap<String, LossReport>>, StoreError> {
        let err = cx.sql("reading loss per scope");
        let rows = c
            .query(
                "SELECT host_id, stream, dropped_batches, dropped_samples, discarded_by_revocation
                 FROM stream_loss",
                &[],
            )
            .map_err(&err)?;
        let mut out: HashMap<HostId, BTreeMap<String, LossReport>> = HashMap::new();
        for r in rows {
            let get_u = |i: usize| r.get::<_, i64>(i).max(0) as u64;
            let code: i32 = r.get(1);
            let stream = u8::try_from(code)
                .ok()
                .and_then(StreamId::from_code)
                .ok_or_else(|| cx.corrupt("stream code of a loss total", code))?;
            let loss = LossReport {
                dropped_batches: get_u(2),
                dropped_samples: get_u(3),
                discarded_by_revocation: get_u(4),
            };
            out.entry(r.get(0))
                .or_default()
                .insert(stream.scope().as_str().to_string(), loss);
        }
        Ok(out)
    }
}

impl Store for PgStore {
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
        self.insert_token(t, hash)
    }

    fn tokens(&mut self) -> Result<Vec<TokenRow>, StoreError> {
        self.select_tokens()
    }

    fn token_by_hash(&mut self, hash: &str) -> Result<Option<TokenRow>, StoreError> {
        self.select_token_by_hash(hash)
    }

    fn revoke_token(&mut self, name: &str, at: UnixMillis) -> Result<(), StoreError> {
        self.update_revoke_token(name, at)
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

    fn add_diagnostic(&mut self, d: &NewDiagnostic) -> Result<i64, StoreError> {
        self.insert_diagnostic(d)
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
    fn register_host(&mut self, hello: &HostHello, now: UnixMillis) -> Result<HostId, StoreError> {
        todo!("pg register_host")
    }

    fn set_consent(
        &mut self,
        host: HostId,
        consent: &ConsentRecord,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        todo!("pg set_consent")
    }

    fn set_disconnected(&mut self, host: HostId, now: UnixMillis) -> Result<(), StoreError> {
        todo!("pg set_disconnected")
    }

    fn set_cert_expiry(&mut self, host: HostId, at: UnixMillis) -> Result<(), StoreError> {
        todo!("pg set_cert_expiry")
    }

    fn disconnect_all(&mut self, now: UnixMillis) -> Result<(), StoreError> {
        todo!("pg disconnect_all")
    }

    fn high_water(&mut self, host: HostId) -> Result<Vec<(StreamId, u64)>, StoreError> {
        todo!("pg high_water")
    }

    fn commit(&mut self, batches: &[PendingBatch]) -> Result<Vec<CommitOutcome>, StoreError> {
        todo!("pg commit")
    }

    fn compact_some(
        &mut self,
        now: UnixMillis,
        budget_samples: u64,
    ) -> Result<CompactStats, StoreError> {
        todo!("pg compact_some")
    }

    fn hosts(&mut self, now: UnixMillis) -> Result<Vec<HostStatus>, StoreError> {
        todo!("pg hosts")
    }

    fn query(
        &mut self,
        host: &str,
        metric: Option<&str>,
        since: UnixMillis,
        until: UnixMillis,
    ) -> Result<Vec<SeriesPoints>, StoreError> {
        todo!("pg query")
    }

    fn logs(&mut self, host: &str, filter: &LogFilter) -> Result<Vec<LogRecord>, StoreError> {
        todo!("pg logs")
    }

    fn count_logs(&mut self, host: &str, filter: &LogFilter) -> Result<u64, StoreError> {
        todo!("pg count_logs")
    }

    fn count_logs_by_source(
        &mut self,
        host: &str,
        filter: &LogFilter,
    ) -> Result<Vec<LogCount>, StoreError> {
        todo!("pg count_logs_by_source")
    }

    fn log_times(&mut self, host: &str, filter: &LogFilter) -> Result<Vec<UnixMillis>, StoreError> {
        todo!("pg log_times")
    }

    fn latest(&mut self, host: &str) -> Result<Vec<Latest>, StoreError> {
        todo!("pg latest")
    }

    fn rollups(
        &mut self,
        host: &str,
        metric: Option<&str>,
        resolution: Resolution,
        since: UnixMillis,
        until: UnixMillis,
    ) -> Result<Vec<SeriesRollups>, StoreError> {
        todo!("pg rollups")
    }

    fn rollups_where(
        &mut self,
        host: &str,
        select: &dyn Fn(&str, &str) -> bool,
        resolution: Resolution,
        since: UnixMillis,
        until: UnixMillis,
    ) -> Result<Vec<SeriesRollups>, StoreError> {
        todo!("pg rollups_where")
    }

    fn stats(&mut self) -> Result<StoreStats, StoreError> {
        todo!("pg stats")
    }

    fn retain_some(
        &mut self,
        now: UnixMillis,
        r: &Retention,
        budget: usize,
    ) -> Result<RetentionStats, StoreError> {
        todo!("pg retain_some")
    }
}

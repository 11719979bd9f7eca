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
mod tls;

use super::chunk::{self};
use super::common::{
    HostRow, HostSeries, LatestReader, LogCodec, LogKeeper, LogRows, PointsReader, RollupReader,
    RowError, SeriesRow, SourceCounts, add_loss, batch_series, fold_to_hour, group_failed,
    host_status, kind_from, matching_records, merge_hour, rollup_rows, series_key, sql_int,
};
use super::query::{HostName, MetricFilter};
use super::{
    AuditFilter, AuditRow, BatchData, COMPACT_GRACE_MS, CommitOutcome, CompactStats,
    ContractAssignment, HOUR_MS, HostHello, HostId, HostStatus, HostUpdate, HostUpdated, Latest,
    LogCount, LogFilter, PendingBatch, PgUrl, Resolution, Retention, RetentionStats, SeriesId,
    SeriesPoints, SeriesRollups, Store, StoreError, StoreStats, TableSize, TokenRow,
    compaction_cutoff,
};
use crate::diagnose::record::{DiagnosticResult, DiagnosticRow, Elsewhere, NewDiagnostic, Sender};
use crate::findings::lifecycle::Event;
use crate::findings::record::{Change, FindingFilter, FindingKey, FindingRow, Silence};
use crate::report::record::{NewReport, ReportRow};
use aftercare_shared::consent::ConsentRecord;
use aftercare_shared::diag::ProbeInfo;
use aftercare_shared::logblock::{self, RecordRef, Summary};
use aftercare_shared::model::{LogRecord, LossReport, MetricKind, Severity, UnixMillis};
use aftercare_shared::protocol::StreamId;
use postgres::GenericClient;
use postgres::types::{ToSql, Type};
use r2d2_postgres::PostgresConnectionManager;
use schema::{MIGRATIONS, PG_SCHEMA_VERSION, Partitioned};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_postgres_rustls::MakeRustlsConnect;

type Pool = r2d2::Pool<Manager>;
type Conn = r2d2::PooledConnection<Manager>;

/// "AftC", as SQLite's application id: the advisory lock migrations take.
const MIGRATION_LOCK: i64 = 0x4166_7443;
/// Advisory locks of the writers' shared housekeeping: one collector at a time.
const COMPACT_LOCK: i64 = 0x4166_7444;
const RETAIN_LOCK: i64 = 0x4166_7445;
const PARTITION_LOCK: i64 = 0x4166_7446;

/// Hosts' registrations in one statement, $1..$7 arrays with one element per Hello (their
/// identities distinct: one statement cannot update a row twice): insert, or update what
/// the Hello says and when its certificate expires ($7; NULL keeps what is stored), and
/// mark it connected through this collector ($9) at $8. One row per Hello and stream
/// written: the Hello's position (from 1), the host's id and the stream's high-water mark
/// (NULL stream when none is written yet). A reconnect storm is thousands of
/// registrations: a statement for each group of them, not for each.
const REGISTER_HOSTS: &str = "
    WITH v AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::bigint[], $7::bigint[])
            WITH ORDINALITY AS v (customer, host, agent_version, facts, consent,
                                  interval_ms, cert_expires, ord)
    ), h AS (
        INSERT INTO hosts (customer, host, first_seen, agent_version, facts, consent,
                           interval_ms, connected, connected_via, cert_expires)
        SELECT customer, host, $8, agent_version, facts, consent, interval_ms, true, $9,
               cert_expires
        FROM v ORDER BY ord
        ON CONFLICT (customer, host) DO UPDATE SET
           agent_version = EXCLUDED.agent_version, facts = EXCLUDED.facts,
           consent = EXCLUDED.consent, interval_ms = EXCLUDED.interval_ms,
           connected = true, connected_via = EXCLUDED.connected_via,
           cert_expires = COALESCE(EXCLUDED.cert_expires, hosts.cert_expires)
        RETURNING id, customer, host
    )
    SELECT v.ord, h.id, s.stream, s.high_seq
    FROM v JOIN h ON h.customer = v.customer AND h.host = v.host
    LEFT JOIN streams s ON s.host_id = h.id";

/// A registered host's id and high-water marks.
type Registration = (HostId, Vec<(StreamId, u64)>);

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
    let bad_url = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Backend {
        path: url.redacted(),
        doing: "reading the database URL",
        source: e,
    };
    // libpq's TLS parameters are ours to apply: see `tls`.
    let (crate_url, tls_params) = tls::split_url(url.as_str()).map_err(|e| bad_url(e.into()))?;
    let tls = tls::connector(&tls_params).map_err(|e| bad_url(e.into()))?;
    let mut config: postgres::Config = crate_url.parse().map_err(|e| bad_url(Box::new(e)))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config.application_name("aftercare-collector");
    let reaper = REAPER
        .get_or_init(|| {
            Arc::new(
                scheduled_thread_pool::ScheduledThreadPool::builder()
                    .num_threads(1)
                    .thread_name_pattern("pg-pool-{}")
                    .build(),
            )
        })
        .clone();
    let p = r2d2::Pool::builder()
        .max_size(POOL_SIZE)
        .min_idle(Some(0))
        .idle_timeout(Some(Duration::from_secs(300)))
        .connection_timeout(Duration::from_secs(5))
        .thread_pool(reaper)
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .build_unchecked(Manager(PostgresConnectionManager::new(config, tls)));
    pools.insert(url.as_str().to_string(), p.clone());
    Ok(p)
}

/// r2d2 keeps only the `Display` of the last failed connection, and the postgres crate's
/// shows just the kind ("error performing TLS handshake"): errors of this manager show
/// their causes too, so that a refused certificate says why.
struct Manager(PostgresConnectionManager<MakeRustlsConnect>);

#[derive(Debug)]
struct ConnectError(postgres::Error);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = std::error::Error::source(&self.0);
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

impl std::error::Error for ConnectError {}

impl r2d2::ManageConnection for Manager {
    type Connection = postgres::Client;
    type Error = ConnectError;

    fn connect(&self) -> Result<postgres::Client, ConnectError> {
        self.0.connect().map_err(ConnectError)
    }

    fn is_valid(&self, c: &mut postgres::Client) -> Result<(), ConnectError> {
        self.0.is_valid(c).map_err(ConnectError)
    }

    fn has_broken(&self, c: &mut postgres::Client) -> bool {
        self.0.has_broken(c)
    }
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

    /// The stream a stored code names; `what` says where the code was read.
    fn stream(&self, code: i32, what: &str) -> Result<StreamId, StoreError> {
        u8::try_from(code)
            .ok()
            .and_then(StreamId::from_code)
            .ok_or_else(|| self.corrupt(what, code))
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
    /// When to refresh the statistics of the tables new hosts fill.
    planner: Growth,
    /// The collector this handle writes for: see [`Store::set_node`].
    node: String,
    /// Statements of the host updates, prepared once on this connection: unprepared, each
    /// call is parsed and planned again, in a round trip of its own (a reconnect storm
    /// makes thousands).
    statements: HashMap<String, postgres::Statement>,
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
    // One statement, so one snapshot: asked in two, a collector migrating beside us could
    // commit in between, and its fresh tables be taken for another program's.
    let row = c
        .query_one(
            "SELECT count(*) FILTER (WHERE c.relname = 'aftercare_schema'),
                    count(*) FILTER (WHERE c.relname <> 'aftercare_schema')
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()",
            &[],
        )
        .map_err(&err)?;
    let (meta, others): (i64, i64) = (row.get(0), row.get(1));
    if meta == 0 {
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
            planner: Growth::default(),
            node: String::new(),
            statements: HashMap::new(),
        }
    }

    /// `sql` prepared on this connection, once.
    fn prepared(&mut self, sql: &str) -> Result<postgres::Statement, postgres::Error> {
        if let Some(st) = self.statements.get(sql) {
            return Ok(st.clone());
        }
        let st = self.conn.prepare(sql)?;
        self.statements.insert(sql.to_string(), st.clone());
        Ok(st)
    }

    /// VACUUM the staging table: what autovacuum does after compaction deleted an hour of
    /// rows, at once. Space is made reusable, and pages at the table's end are given back.
    pub fn vacuum_staging(&mut self) -> Result<(), StoreError> {
        self.writable("vacuuming staging")?;
        self.conn
            .batch_execute("VACUUM staging")
            .map_err(self.cx.sql("vacuuming staging"))
    }

    /// Register `hellos` (identities distinct) in one statement: each one's host id and
    /// high-water marks, in order.
    fn register_many(
        &mut self,
        hellos: &[&HostHello<'_>],
        now: UnixMillis,
    ) -> Result<Vec<Registration>, StoreError> {
        self.writable("registering hosts")?;
        let mut customers = Vec::with_capacity(hellos.len());
        let mut hosts = Vec::with_capacity(hellos.len());
        let mut versions = Vec::with_capacity(hellos.len());
        let mut facts = Vec::with_capacity(hellos.len());
        let mut consents = Vec::with_capacity(hellos.len());
        let mut intervals = Vec::with_capacity(hellos.len());
        let mut expiries = Vec::with_capacity(hellos.len());
        for h in hellos {
            customers.push(h.identity.customer.as_str());
            hosts.push(h.identity.host.as_str());
            versions.push(h.agent_version);
            facts.push(serde_json::to_string(h.facts).expect("host facts serialize"));
            consents.push(serde_json::to_string(h.consent).expect("consent serializes"));
            intervals.push(sql_int(h.interval_ms));
            expiries.push(h.cert_expires);
        }
        let err = self.cx.sql("registering hosts");
        let statement = self.prepared(REGISTER_HOSTS).map_err(&err)?;
        let rows = self
            .conn
            .query(
                &statement,
                &[
                    &customers, &hosts, &versions, &facts, &consents, &intervals, &expiries, &now,
                    &self.node,
                ],
            )
            .map_err(err)?;
        let mut out: Vec<Option<Registration>> = vec![None; hellos.len()];
        for r in &rows {
            let ord: i64 = r.get(0);
            let slot = usize::try_from(ord - 1)
                .ok()
                .and_then(|i| out.get_mut(i))
                .ok_or_else(|| self.cx.corrupt("registering hosts", format!("row {ord}")))?;
            let (_, marks) = slot.get_or_insert_with(|| (r.get(1), Vec::new()));
            let Some(code) = r.get::<_, Option<i32>>(2) else {
                continue; // no stream written yet
            };
            marks.push((
                self.cx.stream(code, "stream code")?,
                r.get::<_, i64>(3) as u64,
            ));
        }
        out.into_iter()
            .map(|one| {
                let (host, mut marks) =
                    one.ok_or_else(|| self.cx.corrupt("registering hosts", "no id returned"))?;
                self.hosts_known.insert(host);
                marks.sort();
                Ok((host, marks))
            })
            .collect()
    }

    /// [`Store::set_disconnected`] for each of `hosts` in one statement; each one's outcome.
    fn disconnect_many(
        &mut self,
        hosts: &[HostId],
    ) -> Result<Vec<Result<HostUpdated, StoreError>>, StoreError> {
        let err = self.cx.sql("marking hosts disconnected");
        let statement = self
            .prepared(
                "UPDATE hosts SET connected = connected AND connected_via <> $2
                 WHERE id = ANY($1) RETURNING id",
            )
            .map_err(&err)?;
        let found: HashSet<HostId> = self
            .conn
            .query(&statement, &[&hosts, &self.node])
            .map_err(err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(hosts
            .iter()
            .map(|&h| {
                if found.contains(&h) {
                    Ok(HostUpdated::Done)
                } else {
                    Err(StoreError::UnknownHostId(h))
                }
            })
            .collect())
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
            let stream = cx.stream(code, "stream code of a loss total")?;
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

/// A log batch ready to store: what queries select it by, and its blob.
struct LogRow {
    summary: Summary,
    block: Vec<u8>,
}

/// Records sent one by one (protocol version 1), made into a block like the rest.
fn records_row(records: &[LogRecord]) -> Result<Option<LogRow>, logblock::BlockError> {
    let plain = logblock::from_records(records);
    let Some(summary) = logblock::summarize(&plain)? else {
        return Ok(None);
    };
    Ok(Some(LogRow {
        summary,
        block: logblock::compress(&plain)?,
    }))
}

/// Write `rows` into `table`'s `columns` by binary COPY.
fn copy_rows(
    tx: &mut postgres::Transaction<'_>,
    sql: &postgres::Statement,
    types: &[Type],
    rows: impl Iterator<Item = Vec<Box<dyn ToSql + Sync>>>,
) -> Result<u64, postgres::Error> {
    let sink = tx.copy_in(sql)?;
    let mut w = postgres::binary_copy::BinaryCopyInWriter::new(sink, types);
    for r in rows {
        let refs: Vec<&(dyn ToSql + Sync)> = r.iter().map(|b| &**b).collect();
        w.write(&refs)?;
    }
    w.finish()
}

/// The statements of a commit, prepared once per connection: a statement given as text is
/// a round trip more (to prepare it) and parsed and planned again each time, and a commit
/// runs while registrations wait behind it.
struct CommitSql {
    /// The group's hosts, locked.
    lock_hosts: postgres::Statement,
    /// Their streams' high-water marks, read once the locks are held.
    marks_of: postgres::Statement,
    /// Series of hosts not yet cached.
    series_of: postgres::Statement,
    /// New series, in the order given (see `prepare_series`), with their ids.
    series_new: postgres::Statement,
    copy_staging: postgres::Statement,
    copy_logs: postgres::Statement,
    /// The new high-water marks ($1..$3), the hosts' newest receipt and loss ($4..$8) and
    /// the streams' loss ($9..$13), in one statement. Totals saturate: an absurd loss
    /// report must not make commits fail.
    finish: postgres::Statement,
}

const LOCK_HOSTS: &str = "SELECT id FROM hosts WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE";

/// A statement of its own, after [`LOCK_HOSTS`]: a statement reads the database as it was
/// when the statement began, so marks read by the locking statement itself would predate
/// the commit it waited for, and a batch that commit stored would be stored again.
const MARKS_OF: &str = "SELECT host_id, stream, high_seq FROM streams WHERE host_id = ANY($1)";

const SERIES_OF: &str =
    "SELECT host_id, id, name, labels, kind FROM series WHERE host_id = ANY($1)";

const SERIES_NEW: &str = "
    INSERT INTO series (host_id, name, labels, kind)
    SELECT h, n, l, k FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])
        WITH ORDINALITY AS u (h, n, l, k, ord) ORDER BY ord
    ON CONFLICT (host_id, name, labels) DO UPDATE SET kind = EXCLUDED.kind
    RETURNING host_id, id, name, labels, kind";

const COPY_STAGING: &str = "COPY staging (host_id, ts, samples, data) FROM STDIN BINARY";

const COPY_LOGS: &str =
    "COPY logs (host_id, ts_min, ts_max, records, worst, codec, data) FROM STDIN BINARY";

const FINISH_COMMIT: &str = "
    WITH marks AS (
        INSERT INTO streams (host_id, stream, high_seq)
        SELECT * FROM unnest($1::bigint[], $2::int[], $3::bigint[])
        ON CONFLICT (host_id, stream) DO UPDATE SET high_seq = EXCLUDED.high_seq
    ), stream_loss_added AS (
        INSERT INTO stream_loss AS l (host_id, stream, dropped_batches, dropped_samples,
                                      discarded_by_revocation)
        SELECT * FROM unnest($9::bigint[], $10::int[], $11::bigint[], $12::bigint[],
                             $13::bigint[])
        ON CONFLICT (host_id, stream) DO UPDATE SET
           dropped_batches = LEAST(l.dropped_batches::numeric
               + EXCLUDED.dropped_batches, 9223372036854775807),
           dropped_samples = LEAST(l.dropped_samples::numeric
               + EXCLUDED.dropped_samples, 9223372036854775807),
           discarded_by_revocation = LEAST(l.discarded_by_revocation::numeric
               + EXCLUDED.discarded_by_revocation, 9223372036854775807)
    )
    UPDATE hosts h SET last_seen = GREATEST(coalesce(h.last_seen, u.seen), u.seen),
       dropped_batches = LEAST(h.dropped_batches::numeric + u.b, 9223372036854775807),
       dropped_samples = LEAST(h.dropped_samples::numeric + u.s, 9223372036854775807),
       discarded_by_revocation =
           LEAST(h.discarded_by_revocation::numeric + u.r, 9223372036854775807)
    FROM unnest($4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[])
       AS u (id, seen, b, s, r)
    WHERE h.id = u.id";

impl PgStore {
    fn commit_statements(&mut self) -> Result<CommitSql, postgres::Error> {
        Ok(CommitSql {
            lock_hosts: self.prepared(LOCK_HOSTS)?,
            marks_of: self.prepared(MARKS_OF)?,
            series_of: self.prepared(SERIES_OF)?,
            series_new: self.prepared(SERIES_NEW)?,
            copy_staging: self.prepared(COPY_STAGING)?,
            copy_logs: self.prepared(COPY_LOGS)?,
            finish: self.prepared(FINISH_COMMIT)?,
        })
    }

    /// The body of [`Store::commit`].
    fn commit_tx(&mut self, batches: &[PendingBatch]) -> Result<Vec<CommitOutcome>, StoreError> {
        let err = self.cx.sql("committing batches");
        // Log rows are made before the transaction, and their partitions exist before it
        // starts (creating one locks its parent table).
        let mut log_rows: Vec<Option<LogRow>> = Vec::with_capacity(batches.len());
        for b in batches {
            log_rows.push(match &b.data {
                BatchData::Metrics(_) => None,
                BatchData::LogBlock(l) => Some(LogRow {
                    summary: l.summary,
                    block: l.block.clone(),
                }),
                BatchData::Logs(records) => records_row(records).map_err(|e| {
                    StoreError::Invalid(format!(
                        "a log batch of host {} cannot be stored: {e}",
                        b.host
                    ))
                })?,
            });
        }
        let slots: BTreeSet<i64> = log_rows
            .iter()
            .flatten()
            .map(|r| Partitioned::Logs.slot(r.summary.ts_max))
            .collect();
        self.ensure_partitions(Partitioned::Logs, slots)?;

        let sql = self.commit_statements().map_err(&err)?;
        let Self {
            conn,
            series,
            hosts_known,
            planner,
            cx,
            ..
        } = self;
        let mut tx = conn.transaction().map_err(&err)?;
        let mut hosts: Vec<HostId> = batches.iter().map(|b| b.host).collect();
        hosts.sort_unstable();
        hosts.dedup();
        // Lock the hosts' rows: a batch redelivered to another collector waits here for
        // this commit and then sees its high-water mark. Also proves the hosts exist.
        let locked: HashSet<HostId> = tx
            .query(&sql.lock_hosts, &[&hosts])
            .map_err(&err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if let Some(&missing) = hosts.iter().find(|h| !locked.contains(h)) {
            return Err(StoreError::UnknownHostId(missing));
        }
        // (host, stream) -> (mark in the database, mark after this transaction)
        let mut marks: HashMap<(HostId, u8), (Option<u64>, Option<u64>)> = HashMap::new();
        for r in tx.query(&sql.marks_of, &[&hosts]).map_err(&err)? {
            let m = Some(r.get::<_, i64>(2) as u64);
            let stream = cx.stream(r.get(1), "stream code")?;
            marks.insert((r.get(0), stream.code()), (m, m));
        }
        hosts_known.extend(locked);
        // Every series the group needs, known or created in two statements rather than a
        // round trip per series (a first batch from 10,000 new hosts is a million series).
        let created = prepare_series(&mut tx, &sql, series, batches).map_err(&err)?;
        let mut outcomes = Vec::with_capacity(batches.len());
        // host -> (newest receipt, loss reported by stored batches)
        let mut touched: HashMap<HostId, (UnixMillis, LossReport)> = HashMap::new();
        let mut stream_loss: HashMap<(HostId, u8), LossReport> = HashMap::new();
        let mut staged: Vec<Vec<Box<dyn ToSql + Sync>>> = Vec::new();
        let mut logs: Vec<Vec<Box<dyn ToSql + Sync>>> = Vec::new();
        let mut key = Vec::with_capacity(128);
        let mut pairs = Vec::with_capacity(128);
        for (b, log_row) in batches.iter().zip(log_rows) {
            let seen = touched
                .entry(b.host)
                .or_insert((b.received_at, LossReport::default()));
            seen.0 = seen.0.max(b.received_at);
            let mark = marks
                .entry((b.host, b.stream.code()))
                .or_insert((None, None));
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
                BatchData::Logs(_) | BatchData::LogBlock(_) => {
                    if let Some(l) = log_row {
                        logs.push(vec![
                            Box::new(b.host),
                            Box::new(l.summary.ts_min),
                            Box::new(l.summary.ts_max),
                            Box::new(l.summary.records as i32),
                            Box::new(i32::from(l.summary.worst.level())),
                            Box::new(LogCodec::Block as i32),
                            Box::new(l.block),
                        ]);
                    }
                    continue;
                }
            };
            if snapshot.samples.is_empty() {
                continue;
            }
            // `prepare_series` loaded every host of the group that has samples.
            let hs = series.entry(b.host).or_default();
            batch_series(
                hs,
                &mut |name: &str, labels: &str, kind: MetricKind| {
                    tx.query_one(
                        "INSERT INTO series (host_id, name, labels, kind) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (host_id, name, labels) DO UPDATE SET kind = EXCLUDED.kind
                         RETURNING id",
                        &[&b.host, &name, &labels, &kind.as_str()],
                    )
                    .map(|r| r.get::<_, SeriesId>(0))
                },
                &snapshot.samples,
                &mut key,
                &mut pairs,
            )
            .map_err(&err)?;
            let mut blob = Vec::with_capacity(16 * pairs.len());
            chunk::encode_staged(&pairs, &mut blob);
            staged.push(vec![
                Box::new(b.host),
                Box::new(snapshot.ts),
                Box::new(pairs.len() as i32),
                Box::new(blob),
            ]);
        }
        if !staged.is_empty() {
            copy_rows(
                &mut tx,
                &sql.copy_staging,
                &[Type::INT8, Type::INT8, Type::INT4, Type::BYTEA],
                staged.into_iter(),
            )
            .map_err(&err)?;
        }
        if !logs.is_empty() {
            copy_rows(
                &mut tx,
                &sql.copy_logs,
                &[
                    Type::INT8,
                    Type::INT8,
                    Type::INT8,
                    Type::INT4,
                    Type::INT4,
                    Type::INT4,
                    Type::BYTEA,
                ],
                logs.into_iter(),
            )
            .map_err(&err)?;
        }
        let (mut mh, mut ms, mut mq) = (Vec::new(), Vec::new(), Vec::new());
        for (&(host, stream), &(db, now)) in &marks {
            if let Some(m) = now
                && db != now
            {
                mh.push(host);
                ms.push(i32::from(stream));
                mq.push(m as i64);
            }
        }
        let mut cols: [Vec<i64>; 5] = Default::default();
        for (&host, (seen, loss)) in &touched {
            cols[0].push(host);
            cols[1].push(*seen);
            cols[2].push(sql_int(loss.dropped_batches));
            cols[3].push(sql_int(loss.dropped_samples));
            cols[4].push(sql_int(loss.discarded_by_revocation));
        }
        let mut lost: [Vec<i64>; 4] = Default::default();
        let mut lost_streams: Vec<i32> = Vec::new();
        for (&(host, stream), loss) in &stream_loss {
            lost[0].push(host);
            lost_streams.push(i32::from(stream));
            lost[1].push(sql_int(loss.dropped_batches));
            lost[2].push(sql_int(loss.dropped_samples));
            lost[3].push(sql_int(loss.discarded_by_revocation));
        }
        tx.execute(
            &sql.finish,
            &[
                &mh,
                &ms,
                &mq,
                &cols[0],
                &cols[1],
                &cols[2],
                &cols[3],
                &cols[4],
                &lost[0],
                &lost_streams,
                &lost[1],
                &lost[2],
                &lost[3],
            ],
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        if planner.grew(created) {
            // Without statistics the planner takes a host's series for 0.5 % of the table and
            // loads a group's by scanning all of it: after a reconnect storm, 70 ms per
            // commit at a million series. Autovacuum would analyze within a minute. The
            // batches are committed already: a failure here only costs speed.
            if let Err(e) = conn.batch_execute("ANALYZE series, streams") {
                tracing::warn!("analyzing the series table after it grew: {e}");
            }
        }
        Ok(outcomes)
    }

    /// The body of [`Store::compact_some`].
    fn compact_tx(&mut self, now: UnixMillis, budget: u64) -> Result<CompactStats, StoreError> {
        let err = self.cx.sql("compacting");
        let cx = self.cx.clone();
        let cutoff = compaction_cutoff(now, self.grace_ms);
        let hours: Vec<i64> = self
            .conn
            .query(
                "SELECT DISTINCT ts - ((ts % 3600000) + 3600000) % 3600000 FROM staging
                 WHERE ts < $1",
                &[&cutoff],
            )
            .map_err(&err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if hours.is_empty() {
            return Ok(CompactStats::default());
        }
        self.ensure_partitions(
            Partitioned::Chunks,
            hours.iter().map(|&h| Partitioned::Chunks.slot(h)),
        )?;
        self.ensure_partitions(
            Partitioned::Rollups,
            hours.iter().map(|&h| Partitioned::Rollups.slot(h)),
        )?;
        let mut tx = self.conn.transaction().map_err(&err)?;
        // One collector compacts at a time; the others find the work done.
        let mine: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&COMPACT_LOCK])
            .map_err(&err)?
            .get(0);
        if !mine {
            return Ok(CompactStats::default());
        }
        let hosts: Vec<HostId> = tx
            .query(
                "SELECT DISTINCT host_id FROM staging WHERE ts < $1 ORDER BY host_id",
                &[&cutoff],
            )
            .map_err(&err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut stats = CompactStats::default();
        for host in hosts {
            if stats.samples >= budget {
                stats.more = true;
                break;
            }
            compact_host(&mut tx, &cx, host, cutoff, &mut stats)?;
        }
        tx.commit().map_err(&err)?;
        Ok(stats)
    }

    /// The body of [`Store::retain_some`].
    fn retain_tx(
        &mut self,
        now: UnixMillis,
        r: &Retention,
        budget: usize,
    ) -> Result<RetentionStats, StoreError> {
        let err = self.cx.sql("applying retention");
        let cx = self.cx.clone();
        let mut tx = self.conn.transaction().map_err(&err)?;
        let mine: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&RETAIN_LOCK])
            .map_err(&err)?
            .get(0);
        if !mine {
            return Ok(RetentionStats::default());
        }
        let mut stats = RetentionStats::default();
        // Whole hours only: an hour goes once all of it is past the cutoff.
        let hour_cut = |age: i64| now.saturating_sub(age).saturating_sub(HOUR_MS);
        stats.raw_hours = drop_older(
            &mut tx,
            Partitioned::Chunks,
            "hour",
            hour_cut(r.raw_ms).saturating_add(1),
            &err,
        )?;
        // Late data older than the raw tier would only be compacted to be deleted.
        tx.execute(
            "DELETE FROM staging WHERE ts < $1",
            &[&now.saturating_sub(r.raw_ms)],
        )
        .map_err(&err)?;
        stats.rollup_hours = drop_older(
            &mut tx,
            Partitioned::Rollups,
            "hour",
            hour_cut(r.hourly_ms).saturating_add(1),
            &err,
        )?;
        stats.log_batches = drop_older(
            &mut tx,
            Partitioned::Logs,
            "ts_max",
            now.saturating_sub(r.logs_ms),
            &err,
        )?;
        let old = tx
            .query(
                "SELECT host_id, hour, data FROM rollups WHERE minutes = 5 AND hour <= $1
                 ORDER BY hour LIMIT $2",
                &[&hour_cut(r.five_minutes_ms), &(budget as i64 + 1)],
            )
            .map_err(&err)?;
        stats.more = old.len() > budget;
        for row in old.into_iter().take(budget) {
            let (host, hour): (HostId, i64) = (row.get(0), row.get(1));
            let folded = fold_to_hour(row.get(2))
                .map_err(|e| cx.corrupt(format!("rollups of host {host} at hour {hour}"), e))?;
            tx.execute(
                "UPDATE rollups SET data = $3, minutes = 60 WHERE host_id = $1 AND hour = $2",
                &[&host, &hour, &folded],
            )
            .map_err(&err)?;
            stats.folded_hours += 1;
        }
        tx.commit().map_err(&err)?;
        Ok(stats)
    }

    /// Call `f` with each of the host's log records that match `filter` (time, severity,
    /// pattern; not its limit), row by row in the order `rows` says, with the row's id.
    /// `next_row(ts_max)` answers whether to go on to the next row; rows stream from the
    /// server, so stopping early reads no more of them.
    fn matching_logs(
        tx: &mut postgres::Transaction<'_>,
        cx: &Ctx,
        host: HostId,
        filter: &LogFilter,
        rows: LogRows,
        mut f: impl FnMut(i64, &logblock::BlockReader<'_>, &RecordRef<'_>),
        mut next_row: impl FnMut(UnixMillis) -> bool,
    ) -> Result<(), StoreError> {
        let err = cx.sql("reading logs");
        let worst = filter
            .min_severity
            .map_or(Severity::Debug.level(), |s| s.level());
        let sql = match rows {
            LogRows::Overlapping => {
                "SELECT id, ts_max, codec, data FROM logs
                 WHERE host_id = $1 AND ts_max >= $2 AND ts_min < $3 AND worst <= $4
                 ORDER BY id"
            }
            LogRows::Straddling => {
                "SELECT id, ts_max, codec, data FROM logs
                 WHERE host_id = $1 AND ts_max >= $2 AND ts_min < $3 AND worst <= $4
                   AND (ts_min < $2 OR ts_max >= $3)
                 ORDER BY id"
            }
            LogRows::NewestFirst => {
                "SELECT id, ts_max, codec, data FROM logs
                 WHERE host_id = $1 AND ts_max >= $2 AND ts_min < $3 AND worst <= $4
                 ORDER BY ts_max DESC, id DESC"
            }
        };
        let worst_i = i32::from(worst);
        let params: [&(dyn ToSql + Sync); 4] = [&host, &filter.since, &filter.until, &worst_i];
        let mut it = tx.query_raw(sql, params).map_err(&err)?;
        let mut unpacker = None;
        use postgres::fallible_iterator::FallibleIterator;
        while let Some(row) = it.next().map_err(&err)? {
            let id: i64 = row.get(0);
            if !next_row(row.get(1)) {
                break;
            }
            let codec: i32 = row.get(2);
            matching_records(
                i64::from(codec),
                row.get(3),
                filter,
                worst,
                &mut unpacker,
                |b, r| f(id, b, r),
            )
            .map_err(|e| cx.corrupt(format!("log batch {id}"), e))?;
        }
        Ok(())
    }

    /// [`Store::rollups`] of the series `metric` names and `select` accepts.
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
        let cx = self.cx.clone();
        let mut tx = self.snapshot().map_err(&err)?;
        let host = Self::resolve_host(&mut tx, &cx, host)?;
        let mut series = Self::host_series(&mut tx, &cx, host, metric)?;
        series.retain(|s| select(&s.name, &s.labels));
        let mut reader = RollupReader::new(&series, resolution, since, until);
        // Hours folded to hourly aggregates have no 5-minute buckets to give.
        let sql = match resolution {
            Resolution::FiveMinutes => {
                "SELECT hour, data FROM rollups
                 WHERE host_id = $1 AND hour > $2 AND hour < $3 AND minutes = 5 ORDER BY hour"
            }
            Resolution::Hour => {
                "SELECT hour, data FROM rollups
                 WHERE host_id = $1 AND hour > $2 AND hour < $3 ORDER BY hour"
            }
        };
        let (from, to) = rollup_rows(since, until);
        Self::for_each_blob(
            &mut tx,
            &cx,
            sql,
            &[&host, &from, &to],
            &err,
            |hour| format!("rollups of host {host} at hour {hour}"),
            |hour, data| {
                reader.row(hour, data)?;
                Ok(true)
            },
        )?;
        Ok(reader.finish(series))
    }
}

/// Remove the rows of `table` whose `column` is below `cut`: partitions wholly below it
/// are dropped, the rest deleted row by row. How many rows went.
fn drop_older(
    tx: &mut postgres::Transaction<'_>,
    table: Partitioned,
    column: &str,
    cut: i64,
    err: &impl Fn(postgres::Error) -> StoreError,
) -> Result<u64, StoreError> {
    let mut gone = 0u64;
    for slot in PgStore::partition_slots(tx, table, err)? {
        let (_, end) = table.bounds(slot);
        if end > cut {
            continue;
        }
        let name = table.name(slot);
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {name}"), &[])
            .map_err(err)?
            .get(0);
        tx.batch_execute(&format!("DROP TABLE {name}"))
            .map_err(err)?;
        gone += n as u64;
    }
    gone += tx
        .execute(
            &format!("DELETE FROM {} WHERE {column} < $1", table.table()),
            &[&cut],
        )
        .map_err(err)?;
    Ok(gone)
}

/// Series created by this handle, counted so that statistics are refreshed as the table
/// grows: at 10,000 new series, then each time it has doubled (a handful of ANALYZEs
/// while a fleet of a million series arrives, none after).
#[derive(Debug, Default)]
struct Growth {
    since: u64,
    before: u64,
}

impl Growth {
    const FIRST: u64 = 10_000;

    /// Count `created`; true when the statistics should be refreshed now.
    fn grew(&mut self, created: u64) -> bool {
        self.since += created;
        if self.since < Self::FIRST.max(self.before) {
            return false;
        }
        self.before += self.since;
        self.since = 0;
        true
    }
}

/// Load the series of the group's hosts not cached yet (one query), then create every
/// series the group's samples name that is missing or changed kind (one statement). How
/// many it created.
fn prepare_series(
    tx: &mut postgres::Transaction<'_>,
    sql: &CommitSql,
    cache: &mut HashMap<HostId, HostSeries>,
    batches: &[PendingBatch],
) -> Result<u64, postgres::Error> {
    let metrics = || {
        batches.iter().filter_map(|b| match &b.data {
            BatchData::Metrics(s) if !s.samples.is_empty() => Some((b.host, &s.samples)),
            _ => None,
        })
    };
    let mut uncached: Vec<HostId> = metrics()
        .map(|(h, _)| h)
        .filter(|h| !cache.contains_key(h))
        .collect();
    uncached.sort_unstable();
    uncached.dedup();
    if !uncached.is_empty() {
        for &h in &uncached {
            cache.insert(h, HostSeries::default());
        }
        for r in tx.query(&sql.series_of, &[&uncached])? {
            remember(cache, &r);
        }
    }
    // (host, key) -> (name, labels, kind): one row each, as ON CONFLICT DO UPDATE needs;
    // in order, so that a host's series share heap pages and a restarted collector reads
    // them from a few pages rather than from a page each (3.6 times the time, measured in
    // a reconnect storm of 10,000 hosts).
    let mut wanted: BTreeMap<(HostId, Vec<u8>), (&str, &str, MetricKind)> = BTreeMap::new();
    let mut key = Vec::new();
    for (host, samples) in metrics() {
        let Some(hs) = cache.get(&host) else { continue };
        for (i, smp) in samples.iter().enumerate() {
            series_key(&mut key, &smp.name, &smp.labels);
            if let Some((k, _, kind)) = hs.last.get(i)
                && **k == *key
                && *kind == smp.kind
            {
                continue;
            }
            if hs
                .by_key
                .get(key.as_slice())
                .is_some_and(|&(_, k)| k == smp.kind)
            {
                continue;
            }
            wanted.insert((host, key.clone()), (&smp.name, &smp.labels, smp.kind));
        }
    }
    if wanted.is_empty() {
        return Ok(0);
    }
    let (mut hosts, mut names, mut labels, mut kinds) = (vec![], vec![], vec![], vec![]);
    for (&(host, _), &(name, label, kind)) in &wanted {
        hosts.push(host);
        names.push(name);
        labels.push(label);
        kinds.push(kind.as_str());
    }
    let rows = tx.query(&sql.series_new, &[&hosts, &names, &labels, &kinds])?;
    for r in &rows {
        remember(cache, r);
    }
    Ok(rows.len() as u64)
}

/// Cache a `(host_id, id, name, labels, kind)` row of `series`.
fn remember(cache: &mut HashMap<HostId, HostSeries>, r: &postgres::Row) {
    let mut key = Vec::new();
    series_key(&mut key, r.get(2), r.get(3));
    // An unknown kind is rewritten by the next sample of that series.
    let kind = kind_from(r.get(4)).unwrap_or(MetricKind::Gauge);
    if let Some(hs) = cache.get_mut(&r.get::<_, HostId>(0)) {
        hs.by_key.insert(key.as_slice().into(), (r.get(1), kind));
    }
}

/// Compact one host's closed staging rows inside the compaction transaction.
fn compact_host(
    tx: &mut postgres::Transaction<'_>,
    cx: &Ctx,
    host: HostId,
    cutoff: UnixMillis,
    stats: &mut CompactStats,
) -> Result<(), StoreError> {
    let err = cx.sql("compacting");
    let kinds: HashMap<SeriesId, MetricKind> = PgStore::host_series(tx, cx, host, None)?
        .into_iter()
        .map(|s| (s.id, s.kind))
        .collect();
    let rows = tx
        .query(
            "SELECT ts, data FROM staging WHERE host_id = $1 AND ts < $2 ORDER BY ts, id",
            &[&host, &cutoff],
        )
        .map_err(&err)?;
    // Rows come by time, so each hour's rows are contiguous.
    let mut hour: Option<UnixMillis> = None;
    let mut acc: BTreeMap<SeriesId, Vec<(UnixMillis, f64)>> = BTreeMap::new();
    for r in &rows {
        let ts: UnixMillis = r.get(0);
        let h = super::hour_start(ts);
        if let Some(cur) = hour
            && cur != h
        {
            write_block(tx, cx, host, cur, &mut acc, &kinds, stats)?;
        }
        hour = Some(h);
        let n = chunk::decode_staged(r.get(1), |id, v| acc.entry(id).or_default().push((ts, v)))
            .map_err(|e| cx.corrupt(format!("staged batch of host {host}"), e))?;
        stats.batches += 1;
        stats.samples += n as u64;
    }
    if let Some(h) = hour {
        write_block(tx, cx, host, h, &mut acc, &kinds, stats)?;
    }
    tx.execute(
        "DELETE FROM staging WHERE host_id = $1 AND ts < $2",
        &[&host, &cutoff],
    )
    .map_err(&err)?;
    Ok(())
}

/// Write (or merge into) the block and rollups of one host-hour from `acc`.
fn write_block(
    tx: &mut postgres::Transaction<'_>,
    cx: &Ctx,
    host: HostId,
    hour: UnixMillis,
    acc: &mut BTreeMap<SeriesId, Vec<(UnixMillis, f64)>>,
    kinds: &HashMap<SeriesId, MetricKind>,
    stats: &mut CompactStats,
) -> Result<(), StoreError> {
    let err = cx.sql("writing a compacted block");
    let existing: Option<Vec<u8>> = tx
        .query_opt(
            "SELECT data FROM chunks WHERE host_id = $1 AND hour = $2",
            &[&host, &hour],
        )
        .map_err(&err)?
        .map(|r| r.get(0));
    let merged = merge_hour(hour, existing.as_deref(), acc, kinds, stats)
        .map_err(|e| cx.corrupt(format!("block of host {host} at hour {hour}"), e))?;
    let (mut ids, mut ts, mut vs) = (Vec::new(), Vec::new(), Vec::new());
    for (id, t, v) in merged.newest {
        ids.push(id);
        ts.push(t);
        vs.push(v);
    }
    tx.execute(
        "UPDATE series s SET last_ts = u.t, last_value = u.v
         FROM unnest($1::bigint[], $2::bigint[], $3::float8[]) AS u (id, t, v)
         WHERE s.id = u.id AND (s.last_ts IS NULL OR s.last_ts <= u.t)",
        &[&ids, &ts, &vs],
    )
    .map_err(&err)?;
    tx.execute(
        "INSERT INTO chunks (host_id, hour, samples, data) VALUES ($1, $2, $3, $4)
         ON CONFLICT (host_id, hour) DO UPDATE SET samples = EXCLUDED.samples, data = EXCLUDED.data",
        &[&host, &hour, &sql_int(merged.samples), &merged.block],
    )
    .map_err(&err)?;
    // Rewritten rollups are 5-minute ones again, as SQLite's INSERT OR REPLACE makes them.
    tx.execute(
        "INSERT INTO rollups (host_id, hour, data) VALUES ($1, $2, $3)
         ON CONFLICT (host_id, hour) DO UPDATE SET data = EXCLUDED.data, minutes = 5",
        &[&host, &hour, &merged.rollups],
    )
    .map_err(&err)?;
    Ok(())
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

    fn set_probes(&mut self, host: HostId, probes: &[ProbeInfo]) -> Result<(), StoreError> {
        self.update_probes(host, probes)
    }

    fn connected_elsewhere(&mut self, host: HostId) -> Result<Option<Elsewhere>, StoreError> {
        self.select_elsewhere(host)
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
        _now: UnixMillis,
    ) -> Result<bool, StoreError> {
        self.writable("taking a lease")?;
        // The database's clock, not ours: collectors' clocks may disagree.
        let got = self
            .conn
            .query_opt(
                "INSERT INTO leases (name, holder, expires_at)
                 VALUES ($1, $2, clock_timestamp() + $3 * interval '1 millisecond')
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder,
                    expires_at = EXCLUDED.expires_at
                 WHERE leases.holder = EXCLUDED.holder OR leases.expires_at < clock_timestamp()
                 RETURNING holder",
                &[&name, &holder, &(ttl_ms as f64)],
            )
            .map_err(self.cx.sql("taking a lease"))?;
        Ok(got.is_some())
    }

    fn set_node(&mut self, node: &str) {
        self.node = node.to_string();
    }

    fn release_lease(&mut self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.writable("giving a lease up")?;
        self.conn
            .execute(
                "DELETE FROM leases WHERE name = $1 AND holder = $2",
                &[&name, &holder],
            )
            .map_err(self.cx.sql("giving a lease up"))?;
        Ok(())
    }
    fn register_host(&mut self, hello: &HostHello, now: UnixMillis) -> Result<HostId, StoreError> {
        self.register_with_high_water(hello, now)
            .map(|(host, _)| host)
    }

    fn register_with_high_water(
        &mut self,
        hello: &HostHello,
        now: UnixMillis,
    ) -> Result<(HostId, Vec<(StreamId, u64)>), StoreError> {
        let mut one = self.register_many(&[hello], now)?;
        Ok(one.pop().expect("one outcome per Hello"))
    }

    fn set_consent(
        &mut self,
        host: HostId,
        consent: &ConsentRecord,
        _now: UnixMillis,
    ) -> Result<(), StoreError> {
        self.writable("storing a consent record")?;
        let consent = serde_json::to_string(consent).expect("consent serializes");
        let statement = self
            .prepared("UPDATE hosts SET consent = $2 WHERE id = $1")
            .map_err(self.cx.sql("storing a consent record"))?;
        let n = self
            .conn
            .execute(&statement, &[&host, &consent])
            .map_err(self.cx.sql("storing a consent record"))?;
        if n == 0 {
            return Err(StoreError::UnknownHostId(host));
        }
        Ok(())
    }

    fn set_disconnected(&mut self, host: HostId, _now: UnixMillis) -> Result<(), StoreError> {
        self.writable("marking a host disconnected")?;
        let mut done = self.disconnect_many(&[host])?;
        done.pop()
            .expect("one outcome per host")
            .map(|_: HostUpdated| ())
    }

    fn host_updates(
        &mut self,
        updates: &[HostUpdate<'_>],
        now: UnixMillis,
    ) -> Vec<Result<HostUpdated, StoreError>> {
        // One transaction (one WAL flush) for the group. A database error aborts a
        // PostgreSQL transaction, and a savepoint per update would cost two more round
        // trips each; so on such an error the group is rolled back and applied one by one,
        // each update alone. Errors of ours (an unknown host) leave the transaction usable.
        let one_by_one =
            |st: &mut Self| -> Vec<_> { updates.iter().map(|u| st.host_update(u, now)).collect() };
        if updates.len() < 2
            || self.writable("updating hosts").is_err()
            || self.conn.batch_execute("BEGIN").is_err()
        {
            return one_by_one(self);
        }
        let mut out = Vec::with_capacity(updates.len());
        let mut i = 0;
        while i < updates.len() {
            // Disconnections in a row (a stopping collector's thousands) are one statement,
            // and so are registrations in a row (a restarted one's).
            let hosts = disconnections_in_a_row(&updates[i..]);
            let hellos = registrations_in_a_row(&updates[i..]);
            let done = if hosts.len() > 1 {
                self.disconnect_many(&hosts)
            } else if hellos.len() > 1 {
                self.register_many(&hellos, now).map(|done| {
                    done.into_iter()
                        .map(|(host, high_water)| Ok(HostUpdated::Registered { host, high_water }))
                        .collect()
                })
            } else {
                match self.host_update(&updates[i], now) {
                    Err(e @ StoreError::Backend { .. }) => Err(e),
                    r => Ok(vec![r]),
                }
            };
            let done = match done {
                Ok(done) => done,
                Err(e) => {
                    tracing::warn!(
                        "a group of host updates failed ({e}); applying them one by one"
                    );
                    let _ = self.conn.batch_execute("ROLLBACK");
                    // Registrations of the rolled-back transaction may be cached.
                    self.hosts_known.clear();
                    return one_by_one(self);
                }
            };
            i += done.len();
            out.extend(done);
        }
        match self.conn.batch_execute("COMMIT") {
            Ok(()) => out,
            Err(e) => {
                let _ = self.conn.batch_execute("ROLLBACK");
                // Hosts registered in the rolled-back transaction may be cached.
                self.hosts_known.clear();
                group_failed(out.len(), &self.cx.0, "updating hosts", &e.to_string())
            }
        }
    }

    fn disconnect_all(&mut self, _now: UnixMillis) -> Result<(), StoreError> {
        self.writable("marking hosts disconnected")?;
        self.conn
            .execute(
                "UPDATE hosts SET connected = false WHERE connected AND connected_via = $1",
                &[&self.node],
            )
            .map_err(self.cx.sql("marking hosts disconnected"))?;
        Ok(())
    }

    fn high_water(&mut self, host: HostId) -> Result<Vec<(StreamId, u64)>, StoreError> {
        let err = self.cx.sql("reading high-water marks");
        let statement = self
            .prepared("SELECT stream, high_seq FROM streams WHERE host_id = $1")
            .map_err(&err)?;
        let rows = self.conn.query(&statement, &[&host]).map_err(&err)?;
        let mut out = Vec::new();
        for r in rows {
            let code: i32 = r.get(0);
            out.push((
                self.cx.stream(code, "stream code")?,
                r.get::<_, i64>(1) as u64,
            ));
        }
        out.sort();
        Ok(out)
    }

    fn commit(&mut self, batches: &[PendingBatch]) -> Result<Vec<CommitOutcome>, StoreError> {
        self.writable("storing batches")?;
        let result = self.commit_tx(batches);
        if result.is_err() {
            // Series created by the rolled-back transaction may be cached, and another
            // collector's retention may have dropped a partition this one thinks exists.
            self.series.clear();
            self.partitions.clear();
        }
        result
    }

    fn compact_some(
        &mut self,
        now: UnixMillis,
        budget_samples: u64,
    ) -> Result<CompactStats, StoreError> {
        self.writable("compaction")?;
        let result = self.compact_tx(now, budget_samples);
        if result.is_err() {
            self.partitions.clear();
        }
        result
    }

    fn hosts(&mut self, now: UnixMillis) -> Result<Vec<HostStatus>, StoreError> {
        let err = self.cx.sql("listing hosts");
        let cx = self.cx.clone();
        // One state for both tables, so a host's scopes add up to its totals.
        let mut tx = self.snapshot().map_err(&err)?;
        let mut by_scope = Self::stream_loss(&mut tx, &cx)?;
        let rows = tx
            .query(
                "SELECT id, customer, host, first_seen, last_seen, agent_version, facts, consent,
                        interval_ms, connected, dropped_batches, dropped_samples,
                        discarded_by_revocation, cert_expires
                 FROM hosts ORDER BY customer COLLATE \"C\", host COLLATE \"C\"",
                &[],
            )
            .map_err(&err)?;
        rows.into_iter()
            .map(|r| {
                let row = HostRow {
                    id: r.get(0),
                    customer: r.get(1),
                    host: r.get(2),
                    first_seen: r.get(3),
                    last_seen: r.get(4),
                    agent_version: r.get(5),
                    facts: r.get(6),
                    consent: r.get(7),
                    interval_ms: r.get(8),
                    connected: r.get(9),
                    totals: [r.get(10), r.get(11), r.get(12)],
                    cert_expires: r.get(13),
                };
                host_status(row, &mut by_scope, now).map_err(|(what, e)| cx.corrupt(what, e))
            })
            .collect()
    }

    fn query(
        &mut self,
        host: &str,
        metric: Option<&str>,
        since: UnixMillis,
        until: UnixMillis,
    ) -> Result<Vec<SeriesPoints>, StoreError> {
        let err = self.cx.sql("reading samples");
        let cx = self.cx.clone();
        let mut tx = self.snapshot().map_err(&err)?;
        let host = Self::resolve_host(&mut tx, &cx, host)?;
        let series = Self::host_series(&mut tx, &cx, host, metric)?;
        if series.is_empty() || since >= until {
            return Ok(Vec::new());
        }
        let mut reader = PointsReader::new(&series, since, until);
        // Blocks first, then staging in write order: the value written last wins.
        Self::for_each_blob(
            &mut tx,
            &cx,
            "SELECT hour, data FROM chunks
             WHERE host_id = $1 AND hour > $2 AND hour < $3 ORDER BY hour",
            &[&host, &since.saturating_sub(HOUR_MS), &until],
            &err,
            |hour| format!("block of host {host} at hour {hour}"),
            |_, data| {
                reader.block(data)?;
                Ok(true)
            },
        )?;
        Self::for_each_blob(
            &mut tx,
            &cx,
            "SELECT ts, data FROM staging WHERE host_id = $1 AND ts >= $2 AND ts < $3
             ORDER BY ts, id",
            &[&host, &since, &until],
            &err,
            |_| format!("staged batch of host {host}"),
            |ts, data| {
                reader.staged(ts, data)?;
                Ok(true)
            },
        )?;
        Ok(reader.finish(series))
    }

    fn logs(&mut self, host: &str, filter: &LogFilter) -> Result<Vec<LogRecord>, StoreError> {
        let err = self.cx.sql("reading logs");
        let cx = self.cx.clone();
        let mut tx = self.snapshot().map_err(&err)?;
        let host = Self::resolve_host(&mut tx, &cx, host)?;
        let keeper = std::cell::RefCell::new(LogKeeper::new(filter.limit));
        let rows = keeper.borrow().rows();
        Self::matching_logs(
            &mut tx,
            &cx,
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
        let cx = self.cx.clone();
        let mut tx = self.snapshot().map_err(&err)?;
        let host = Self::resolve_host(&mut tx, &cx, host)?;
        let mut n: u64 = 0;
        if filter.grep.is_some() || filter.min_severity.is_some() {
            Self::matching_logs(
                &mut tx,
                &cx,
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
        let inside: i64 = tx
            .query_one(
                "SELECT coalesce(sum(records), 0)::bigint FROM logs
                 WHERE host_id = $1 AND ts_max >= $2 AND ts_max < $3 AND ts_min >= $2",
                &[&host, &filter.since, &filter.until],
            )
            .map_err(&err)?
            .get(0);
        n = inside.max(0) as u64;
        Self::matching_logs(
            &mut tx,
            &cx,
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
        let cx = self.cx.clone();
        let mut tx = self.snapshot().map_err(&err)?;
        let host = Self::resolve_host(&mut tx, &cx, host)?;
        let mut counts = SourceCounts::default();
        Self::matching_logs(
            &mut tx,
            &cx,
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
        let cx = self.cx.clone();
        let mut tx = self.snapshot().map_err(&err)?;
        let host = Self::resolve_host(&mut tx, &cx, host)?;
        let mut times = Vec::new();
        Self::matching_logs(
            &mut tx,
            &cx,
            host,
            filter,
            LogRows::Overlapping,
            |_, _, r| times.push(r.time()),
            |_| true,
        )?;
        times.sort_unstable();
        Ok(times)
    }

    fn latest(&mut self, host: &str) -> Result<Vec<Latest>, StoreError> {
        let err = self.cx.sql("reading the newest values");
        let cx = self.cx.clone();
        let mut tx = self.snapshot().map_err(&err)?;
        let host = Self::resolve_host(&mut tx, &cx, host)?;
        let series = Self::host_series(&mut tx, &cx, host, None)?;
        let mut reader = LatestReader::new(&series);
        for r in tx
            .query(
                "SELECT id, last_ts, last_value FROM series WHERE host_id = $1",
                &[&host],
            )
            .map_err(&err)?
        {
            let point = r.get::<_, Option<i64>>(1).zip(r.get::<_, Option<f64>>(2));
            reader.compacted(r.get(0), point);
        }
        // Staging, newest first (and the later write first at equal times), until every
        // series has been seen there.
        Self::for_each_blob(
            &mut tx,
            &cx,
            "SELECT ts, data FROM staging WHERE host_id = $1 ORDER BY ts DESC, id DESC",
            &[&host],
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

    fn table_sizes(&mut self) -> Result<Vec<TableSize>, StoreError> {
        let err = self.cx.sql("reading table sizes");
        let rows = self
            .conn
            .query(
                "SELECT coalesce(p.relname, c.relname)::text AS name,
                        sum(pg_relation_size(c.oid))::bigint,
                        sum(pg_indexes_size(c.oid))::bigint,
                        sum(pg_total_relation_size(c.oid) - pg_relation_size(c.oid)
                            - pg_indexes_size(c.oid))::bigint
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
                 LEFT JOIN pg_class p ON p.oid = i.inhparent
                 WHERE n.nspname = current_schema() AND c.relkind = 'r'
                 GROUP BY 1 ORDER BY sum(pg_total_relation_size(c.oid)) DESC",
                &[],
            )
            .map_err(err)?;
        Ok(rows
            .iter()
            .map(|r| TableSize {
                name: r.get(0),
                heap: r.get::<_, i64>(1) as u64,
                indexes: r.get::<_, i64>(2) as u64,
                toast: r.get::<_, i64>(3) as u64,
            })
            .collect())
    }

    fn stats(&mut self) -> Result<StoreStats, StoreError> {
        let err = self.cx.sql("reading sizes");
        let mut tx = self.snapshot().map_err(&err)?;
        let mut one = |sql: &str| -> Result<i64, StoreError> {
            Ok(tx.query_one(sql, &[]).map_err(&err)?.get(0))
        };
        let hosts = one("SELECT count(*) FROM hosts")? as u64;
        let series = one("SELECT count(*) FROM series")? as u64;
        let rollup_bytes =
            one("SELECT coalesce(sum(octet_length(data)), 0)::bigint FROM rollups")? as u64;
        let size = one("SELECT pg_database_size(current_database())")? as u64;
        // Our tables with their indexes and TOAST, free space within them included; not the
        // system catalogs every database carries (~8 MB).
        let ours = one(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind = 'r'",
        )? as u64;
        let mut three = |sql: &str| -> Result<(u64, u64, u64), StoreError> {
            let r = tx.query_one(sql, &[]).map_err(&err)?;
            Ok((
                r.get::<_, i64>(0) as u64,
                r.get::<_, i64>(1) as u64,
                r.get::<_, i64>(2) as u64,
            ))
        };
        let (staged_batches, staged_samples, staged_bytes) = three(
            "SELECT count(*), coalesce(sum(samples), 0)::bigint,
                    coalesce(sum(octet_length(data)), 0)::bigint FROM staging",
        )?;
        let (blocks, block_samples, block_bytes) = three(
            "SELECT count(*), coalesce(sum(samples), 0)::bigint,
                    coalesce(sum(octet_length(data)), 0)::bigint FROM chunks",
        )?;
        let (log_batches, log_records, log_bytes) = three(
            "SELECT count(*), coalesce(sum(records), 0)::bigint,
                    coalesce(sum(octet_length(data)), 0)::bigint FROM logs",
        )?;
        Ok(StoreStats {
            hosts,
            series,
            staged_batches,
            staged_samples,
            staged_bytes,
            blocks,
            block_samples,
            block_bytes,
            rollup_bytes,
            log_batches,
            log_records,
            log_bytes,
            live_bytes: ours,
            // The database's own figure: tables, indexes, free space and its catalogs.
            file_bytes: size,
        })
    }

    fn retain_some(
        &mut self,
        now: UnixMillis,
        r: &Retention,
        budget: usize,
    ) -> Result<RetentionStats, StoreError> {
        self.writable("applying retention")?;
        let result = self.retain_tx(now, r, budget);
        // Partitions may be gone: look again before writing into them.
        self.partitions.clear();
        result
    }
}

/// The Hellos of the registrations at the head of `updates`, up to the first whose host
/// is already among them.
fn registrations_in_a_row<'a>(updates: &'a [HostUpdate<'a>]) -> Vec<&'a HostHello<'a>> {
    let mut seen = HashSet::new();
    updates
        .iter()
        .map_while(|u| match u {
            HostUpdate::Register(hello) if seen.insert(hello.identity) => Some(hello),
            _ => None,
        })
        .collect()
}

/// The hosts of the disconnections at the head of `updates`.
fn disconnections_in_a_row(updates: &[HostUpdate<'_>]) -> Vec<HostId> {
    updates
        .iter()
        .map_while(|u| match u {
            HostUpdate::Disconnected(h) => Some(*h),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::Growth;

    #[test]
    fn statistics_are_refreshed_as_the_series_table_doubles() {
        let mut g = Growth::default();
        // 100 series per new host, in groups of 10 hosts: when is ANALYZE run?
        let at: Vec<u64> = (1..=1_000u64)
            .filter(|_| g.grew(1_000))
            .map(|group| group * 1_000)
            .collect();
        assert_eq!(
            at,
            [10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 640_000]
        );
        // Groups that create nothing never do.
        assert!(!(0..100).any(|_| g.grew(0)));
    }
}

//! The scenarios: each sets up a collector on one backend and its agents, runs, measures,
//! checks its own accounting, and hands back one row of the table.

use crate::agent::{self, Agent, Attempts, CONNECT_PATIENCE, Gate, Plan, Sent, Start};
use crate::collector::{Counts, Running};
use crate::common::thousands;
use crate::lag::{Lag, LagSummary};
use crate::procstat::{self, ThreadTimes};
use crate::report::{Measure, Row, Target};
use crate::sim::{EPOCH, INTERVAL_MS, LogBursts, SAMPLES_PER_BATCH, customer_name, host_name};
use aftercare_agent::transport;
use aftercare_collector::ca;
use aftercare_collector::config::CollectorConfig;
use aftercare_collector::store::{
    COMPACT_GRACE_MS, Database, HOUR_MS, MINUTE_MS, StoreStats, TableSize, hour_start,
};
use aftercare_shared::protocol::{StreamId, seq};
use aftercare_shared::time_fmt::now_millis;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How long the collector child may take to stop before it is killed.
const STOP_PATIENCE: Duration = Duration::from_secs(30);

/// Settings every scenario reads.
pub struct Settings {
    pub agents: usize,
    /// Batches per agent in `ingest`; per phase (before and after the restart) in `reconnect`.
    pub batches: u32,
    pub reconnect_batches: u32,
    pub window: usize,
    /// `ingest`: one batch per agent per this, instead of as fast as the window allows.
    pub pace: Option<Duration>,
    pub collector_threads: usize,
    pub agent_threads: usize,
    /// `None`: each scenario's own (see [`agent::AGENTS_PER_SOCKET`]).
    pub agents_per_socket: Option<usize>,
    pub return_rate: Option<u32>,
    /// The collector's `ingest.max_connecting`, if not its default.
    pub max_connecting: Option<usize>,
    /// How long `idle` holds every connection before reading the collector's memory.
    pub idle_hold: Duration,
    /// `logs`: bursts per agent, and lines per burst (one batch each).
    pub log_bursts: u32,
    pub burst_lines: u32,
}

/// One backend's database for one scenario.
pub enum Db {
    Sqlite,
    /// Held so the database lives as long as the scenario (and is dropped after).
    Postgres(aftercare_pgtest::TestDb),
}

impl Db {
    pub fn name(&self) -> &'static str {
        match self {
            Db::Sqlite => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }
}

/// A collector's files and its agents' TLS identities, ready to run.
struct Setup {
    config: PathBuf,
    cfg: CollectorConfig,
    clients: Vec<quinn::ClientConfig>,
    agents_rt: tokio::runtime::Runtime,
    /// How late the agents' runtime runs (see [`Lag`]).
    agents_lag: Lag,
}

fn write_config(dir: &Path, db: &Db, s: &Settings, listen: &str) -> Result<PathBuf> {
    let database = match db {
        Db::Sqlite => String::new(),
        Db::Postgres(t) => format!("database = \"{}\"\n", t.url()),
    };
    let connecting = s
        .max_connecting
        .map(|n| format!("max_connecting = {n}\n"))
        .unwrap_or_default();
    let return_rate = s
        .return_rate
        .map(|n| format!("return_rate = {n}\n"))
        .unwrap_or_default();
    let path = dir.join("collector.toml");
    // In-run compaction is pushed past the run, so ingest figures are ingest only; the
    // scenario compacts afterwards to measure bytes at rest.
    std::fs::write(
        &path,
        format!(
            "data_dir = \"collector\"\nlisten = \"{listen}\"\n{database}\
             [api]\nlisten = \"127.0.0.1:0\"\n[ingest]\ncompact_every = \"1h\"\n{connecting}{return_rate}"
        ),
    )?;
    Ok(path)
}

/// The support company's CA and one certificate per simulated agent, issued once per run
/// and shared by every scenario (10,000 certificates take a while to make).
pub struct Pki {
    ca: PathBuf,
    clients: Vec<quinn::ClientConfig>,
}

impl Pki {
    pub fn issue(dir: &Path, agents: usize) -> Result<Pki> {
        let ca = dir.join("ca");
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        ca::init_ca(&ca, &["localhost".to_string()], &ca::InitOptions::default())?;
        let t = Instant::now();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let issue = |i: usize| -> Result<quinn::ClientConfig> {
            let out = dir.join("agents").join(host_name(i));
            ca::issue_agent_cert(
                &ca,
                &customer_name(i),
                &host_name(i),
                &out,
                ca::Validity::days_from_now(2),
            )?;
            Ok(aftercare_agent::tls::client_config(
                &out.join("ca.crt"),
                &out.join("agent.crt"),
                &out.join("agent.key"),
            )?)
        };
        // Agent i goes to thread i % threads; results are put back in order below.
        let parts: Vec<Vec<quinn::ClientConfig>> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..threads)
                .map(|k| {
                    let issue = &issue;
                    sc.spawn(move || {
                        (k..agents)
                            .step_by(threads)
                            .map(issue)
                            .collect::<Result<Vec<_>>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("issuing thread"))
                .collect::<Result<_>>()
        })?;
        let clients = (0..agents)
            .map(|i| parts[i % threads][i / threads].clone())
            .collect();
        eprintln!(
            "{agents} agent certificates issued in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        Ok(Pki { ca, clients })
    }
}

fn setup(dir: &Path, db: &Db, s: &Settings, pki: &Pki) -> Result<Setup> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = write_config(dir, db, s, "127.0.0.1:0")?;
    let cfg = CollectorConfig::load(&config)?;
    let ca_dir = cfg.ca_dir();
    std::fs::create_dir_all(&ca_dir)?;
    for f in std::fs::read_dir(&pki.ca)? {
        let f = f?;
        std::fs::copy(f.path(), ca_dir.join(f.file_name()))?;
    }
    let clients = pki.clients.clone();
    let agents_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(s.agent_threads)
        .thread_name("agents-rt")
        .enable_all()
        .build()?;
    // Entered so the probe's task lands on the agents' runtime.
    let agents_lag = {
        let _on = agents_rt.enter();
        Lag::start()
    };
    Ok(Setup {
        config,
        cfg,
        clients,
        agents_rt,
        agents_lag,
    })
}

/// The simulated clock of a run of `batches` ticks: whole hours, ending more than an hour
/// before now, so compaction can close every hour.
fn clock(batches: u32) -> (i64, i64) {
    let hours = u64::from(batches).div_ceil((HOUR_MS / INTERVAL_MS) as u64) as i64;
    let start = hour_start(now_millis()) - (hours + 2) * HOUR_MS;
    (
        start,
        start + (hours + 1) * HOUR_MS + COMPACT_GRACE_MS + MINUTE_MS,
    )
}

/// Start every agent's connection; once all are in (or failed), returns the join handles
/// and the go signal, with the connect time.
async fn spawn_agents<F, Fut, T>(
    clients: Vec<quinn::ClientConfig>,
    plan: &Arc<Plan>,
    body: F,
) -> (
    Vec<tokio::task::JoinHandle<Result<T, String>>>,
    watch::Sender<bool>,
    Duration,
    usize,
)
where
    F: Fn(Agent, Gate) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>> + Send + 'static,
    T: Send + 'static,
{
    let n = clients.len();
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(n.max(1));
    let (go_tx, go_rx) = watch::channel(false);
    let t = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    let mut endpoint = Err(String::new());
    for (i, client) in clients.into_iter().enumerate() {
        let gate = Gate {
            ready: ready_tx.clone(),
            go: go_rx.clone(),
        };
        if i % plan.per_socket == 0 {
            endpoint = agent::shared_endpoint().map_err(|e| format!("a client endpoint: {e}"));
        }
        match &endpoint {
            Ok(ep) => {
                let agent = Agent::new(i, ep.clone(), client, plan.clone());
                tasks.push(tokio::spawn(body(agent, gate)));
            }
            Err(e) => {
                let e = format!("{}: {e}", host_name(i));
                tasks.push(tokio::spawn(async move { Err(e) }));
            }
        }
    }
    drop(ready_tx);
    // Every agent connected (or failed: its sender is gone without a word).
    let mut ready = 0;
    while ready_rx.recv().await.is_some() {
        ready += 1;
    }
    (tasks, go_tx, t.elapsed(), ready)
}

async fn join_all<T>(
    tasks: Vec<tokio::task::JoinHandle<Result<T, String>>>,
) -> Vec<Result<T, String>> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap_or_else(|e| Err(format!("agent task: {e}"))));
    }
    out
}

/// The store's figures, with the collector stopped: as ingest left it, then compacted.
struct AtRest {
    before: StoreStats,
    compacted_samples: u64,
    duplicates: u64,
    rest: StoreStats,
    /// Where the bytes are, per table.
    tables: Vec<TableSize>,
}

fn at_rest(cfg: &CollectorConfig, now: i64) -> Result<AtRest> {
    let mut store = cfg.database.open()?;
    let before = store.stats()?;
    let cs = store.compact(now)?;
    drop(store);
    // SQLite: the file as it rests, WAL folded in and free pages (compacted staging rows)
    // given back. PostgreSQL: staging vacuumed, as autovacuum would after compaction.
    match &cfg.database {
        Database::Sqlite(path) => {
            let mut sqlite = aftercare_collector::store::open_sqlite(path)?;
            sqlite.checkpoint()?;
            sqlite.release_free_pages()?;
            sqlite.checkpoint()?;
        }
        Database::Postgres(url) => {
            aftercare_collector::store::open_postgres(url)?.vacuum_staging()?;
        }
    }
    let rest = cfg.database.open()?.stats()?;
    let tables = cfg.database.open()?.table_sizes()?;
    Ok(AtRest {
        tables,
        before,
        compacted_samples: cs.samples,
        duplicates: cs.duplicates,
        rest,
    })
}

/// The bytes of the tables that grow with samples: blocks and rollups.
fn sample_tables(tables: &[TableSize]) -> u64 {
    tables
        .iter()
        .filter(|t| matches!(t.name.as_str(), "chunks" | "rollups"))
        .map(TableSize::total)
        .sum()
}

/// Bytes at rest: SQLite's file (WAL folded, free pages given back); PostgreSQL's tables
/// of ours with their indexes and TOAST.
fn at_rest_bytes(db: &Database, s: &StoreStats) -> u64 {
    match db {
        Database::Sqlite(_) => s.file_bytes,
        Database::Postgres(_) => s.live_bytes,
    }
}

/// Every simulated host's high-water mark for metrics, read from the store by host name
/// (`hosts` rather than `host_id`: the latter is not yet written for PostgreSQL).
fn high_waters(cfg: &CollectorConfig, agents: usize) -> Result<Vec<Option<u64>>> {
    let mut store = cfg.database.open()?;
    let ids: std::collections::HashMap<String, _> = store
        .hosts(now_millis())?
        .into_iter()
        .map(|h| (h.host, h.id))
        .collect();
    (0..agents)
        .map(|i| {
            let Some(&id) = ids.get(&host_name(i)) else {
                return Ok(None);
            };
            Ok(store
                .high_water(id)?
                .into_iter()
                .find(|(s, _)| *s == StreamId::Metrics)
                .map(|(_, v)| v))
        })
        .collect()
}

fn collect_failures<T>(results: Vec<Result<T, String>>, failures: &mut Vec<String>) -> Vec<T> {
    let mut ok = Vec::new();
    for r in results {
        match r {
            Ok(v) => ok.push(v),
            Err(e) if failures.len() < 20 => failures.push(e),
            Err(_) => {}
        }
    }
    ok
}

fn cpu_split(
    row: &mut Row,
    collector: &[(&'static str, ThreadTimes)],
    agents: &[(&'static str, ThreadTimes)],
    secs: f64,
) {
    // Groups that did nothing (a process's idle main thread) are left out.
    for (g, t) in collector
        .iter()
        .chain(agents)
        .filter(|(_, t)| t.cpu + t.wait > 0.005)
    {
        row.detail.push(format!(
            "{g:<48} {:>8.2} CPU s {:>5.0} % of wall, {:>6.2} s runnable but waiting",
            t.cpu,
            100.0 * t.cpu / secs,
            t.wait
        ));
    }
}

/// What agents connected first, then sending `batches` each all at once, saw; and what
/// that cost the collector (`pid`), the agents and the machine from the go.
struct Sending {
    connect: Duration,
    wall: Duration,
    results: Vec<Result<Sent, String>>,
    cpu_collector: Vec<(&'static str, ThreadTimes)>,
    cpu_agents: Vec<(&'static str, ThreadTimes)>,
    machine: f64,
}

fn send_all(
    clients: Vec<quinn::ClientConfig>,
    rt: &tokio::runtime::Runtime,
    plan: &Arc<Plan>,
    pid: u32,
    batches: u32,
) -> Sending {
    rt.block_on(async {
        let (tasks, go, connect, _) = spawn_agents(clients, plan, |mut agent, gate| async move {
            let mut link = agent.connect_fresh(gate).await?;
            let sent = agent.send(&mut link, 0, batches).await?;
            agent.finish(link).await?;
            Ok(sent)
        })
        .await;
        let (c0, a0, m0) = (
            procstat::thread_times(pid),
            procstat::thread_times(std::process::id()),
            procstat::machine_busy(),
        );
        let t = Instant::now();
        let _ = go.send(true);
        let results = join_all(tasks).await;
        let wall = t.elapsed();
        Sending {
            connect,
            wall,
            results,
            cpu_collector: procstat::times_by_group(
                &c0,
                &procstat::thread_times(pid),
                "collector: other threads",
            ),
            cpu_agents: procstat::times_by_group(
                &a0,
                &procstat::thread_times(std::process::id()),
                "loadgen: other threads",
            ),
            machine: procstat::machine_busy() - m0,
        }
    })
}

/// The agents that finished (failures go to `failures`), the acknowledgements they got,
/// and every acknowledgement's latency, sorted.
fn acknowledged(
    results: Vec<Result<Sent, String>>,
    failures: &mut Vec<String>,
) -> (Vec<Sent>, u64, Vec<u32>) {
    let sent: Vec<Sent> = collect_failures(results, failures);
    let acked = sent.iter().map(|r| r.acked).sum();
    let mut latencies: Vec<u32> = sent
        .iter()
        .flat_map(|r| r.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    (sent, acked, latencies)
}

/// Throughput, acknowledgement latency and bytes at rest.
pub fn ingest(dir: &Path, db: &Db, s: &Settings, pki: &Pki) -> Result<Row> {
    let su = setup(dir, db, s, pki)?;
    let (start, compact_at) = clock(s.batches);
    let collector = Running::start(&su.config, s.collector_threads)?;
    let pid = collector.pid();
    let plan = Arc::new(Plan::new(
        collector.addr,
        s.window,
        s.agents_per_socket.unwrap_or(1),
        start,
        s.pace,
    ));
    let batches = s.batches;
    let run = send_all(su.clients, &su.agents_rt, &plan, pid, batches);
    collector.stop(STOP_PATIENCE)?;

    let mut row = Row::new("ingest", db.name());
    let (sent, acked, latencies) = acknowledged(run.results, &mut row.failures);
    let samples = acked * SAMPLES_PER_BATCH as u64;
    let secs = run.wall.as_secs_f64();
    let rest = at_rest(&su.cfg, compact_at)?;

    let expected_batches = s.agents as u64 * u64::from(batches);
    let expected_samples = expected_batches * SAMPLES_PER_BATCH as u64;
    let collector_cpu: f64 = run.cpu_collector.iter().map(|(_, t)| t.cpu).sum();
    row.measures = vec![
        Measure::new("samples/s acknowledged", samples as f64 / secs, "/s")
            .target(Target::AtLeast(1_000_000.0)),
        Measure::new(
            "ack latency p50",
            procstat::percentile_us(&latencies, 0.5),
            "ms",
        ),
        Measure::new(
            "ack latency p99",
            procstat::percentile_us(&latencies, 0.99),
            "ms",
        )
        .target(Target::AtMost(1000.0)),
        Measure::new(
            // What grows with samples: the blocks and their rollups, with their tables'
            // indexes and page overhead (TOAST on PostgreSQL).
            "bytes/sample at rest (blocks + rollups)",
            sample_tables(&rest.tables) as f64 / rest.rest.block_samples.max(1) as f64,
            "B",
        )
        .target(Target::AtMost(2.0)),
        Measure::new(
            // SQLite: the database file. PostgreSQL: our tables, indexes and TOAST (its
            // catalogs, ~8 MB in every database, are in the detail's database size). One
            // simulated hour carries every per-series and per-host row alone.
            "bytes/sample, whole store after 1 simulated hour",
            at_rest_bytes(&su.cfg.database, &rest.rest) as f64
                / rest.rest.block_samples.max(1) as f64,
            "B",
        ),
        Measure::new(
            "collector CPU s per million samples",
            collector_cpu / (samples.max(1) as f64 / 1e6),
            "s",
        ),
    ];
    row.detail.push(format!(
        "{} agents x {batches} batches x {SAMPLES_PER_BATCH} samples, window {}, {}; connect {:.2} s; \
         run {secs:.2} s; {} samples acked; machine busy {:.0} % of its CPUs",
        s.agents,
        s.window,
        match s.pace {
            Some(p) => format!(
                "one batch per agent every {p:?} (offered {} samples/s)",
                thousands((s.agents as f64 * SAMPLES_PER_BATCH as f64 / p.as_secs_f64()) as u64)
            ),
            None => "as fast as the window allows".into(),
        },
        run.connect.as_secs_f64(),
        thousands(samples),
        100.0 * run.machine / (secs * cpus())
    ));
    let frame_bytes: u64 = sent.iter().map(|r| r.frame_bytes).sum();
    let writes: u64 = sent.iter().map(|r| r.writes).sum();
    row.detail.push(format!(
        "wire: {:.2} frame bytes/sample before QUIC, {:.1} frames per write_all",
        frame_bytes as f64 / samples.max(1) as f64,
        acked as f64 / writes.max(1) as f64
    ));
    cpu_split(&mut row, &run.cpu_collector, &run.cpu_agents, secs);
    row.detail.push(format!(
        "at rest: staging {:.2} B/sample (payload); blocks {:.3} B/sample (payload), rollups {:.3}, \
         tables {:.3}, whole database {:.3}",
        rest.before.staged_bytes as f64 / rest.before.staged_samples.max(1) as f64,
        rest.rest.block_bytes as f64 / rest.rest.block_samples.max(1) as f64,
        rest.rest.rollup_bytes as f64 / rest.rest.block_samples.max(1) as f64,
        rest.rest.live_bytes as f64 / rest.rest.block_samples.max(1) as f64,
        rest.rest.file_bytes as f64 / rest.rest.block_samples.max(1) as f64,
    ));
    let fixed: u64 =
        rest.tables.iter().map(TableSize::total).sum::<u64>() - sample_tables(&rest.tables);
    row.detail.push(format!(
        "the rest (series, hosts and their marks, staging emptied, the desk's tables): {} bytes, \
         {:.0} per series; over 14 days of raw samples kept, {:.3} B/sample",
        thousands(fixed),
        fixed as f64 / rest.rest.series.max(1) as f64,
        fixed as f64
            / (rest.rest.block_samples.max(1) as f64 * 24.0 * 14.0 * 3_600_000.0
                / (s.batches as f64 * 10_000.0).max(1.0)),
    ));
    if !rest.tables.is_empty() {
        // The largest, as B/sample: heap + indexes + TOAST.
        let per = |b: u64| b as f64 / rest.rest.block_samples.max(1) as f64;
        let top: Vec<String> = rest
            .tables
            .iter()
            .take(5)
            .map(|t| {
                format!(
                    "{} {:.3}+{:.3}+{:.3}",
                    t.name,
                    per(t.heap),
                    per(t.indexes),
                    per(t.toast)
                )
            })
            .collect();
        row.detail.push(format!(
            "tables, B/sample as heap+indexes+TOAST: {}",
            top.join(", ")
        ));
    }
    row.check(
        acked == expected_batches,
        format!("{acked} batches acknowledged, expected {expected_batches}"),
    );
    row.check(
        rest.before.hosts == s.agents as u64,
        format!(
            "{} hosts in the store, expected {}",
            rest.before.hosts, s.agents
        ),
    );
    row.check(
        rest.before.staged_batches == expected_batches
            && rest.before.staged_samples == expected_samples,
        format!(
            "staging holds {} batches / {} samples, expected {expected_batches} / {expected_samples}",
            rest.before.staged_batches, rest.before.staged_samples
        ),
    );
    row.check(
        rest.compacted_samples == expected_samples && rest.duplicates == 0,
        format!(
            "compaction moved {} samples ({} duplicates), expected {expected_samples}",
            rest.compacted_samples, rest.duplicates
        ),
    );
    row.check(
        rest.rest.block_samples == expected_samples && rest.rest.staged_samples == 0,
        format!(
            "blocks hold {} samples and staging {}, expected {expected_samples} and 0",
            rest.rest.block_samples, rest.rest.staged_samples
        ),
    );
    Ok(row)
}

/// Log bursts: every agent sends its bursts of realistic lines (a compressed block per
/// batch, as the agent sends them) as fast as the window allows, or paced; each stored once.
pub fn logs(dir: &Path, db: &Db, s: &Settings, pki: &Pki) -> Result<Row> {
    let su = setup(dir, db, s, pki)?;
    let (start, _) = clock(1);
    let collector = Running::start(&su.config, s.collector_threads)?;
    let pid = collector.pid();
    let bursts = Arc::new(LogBursts::new(s.burst_lines, start).map_err(anyhow::Error::msg)?);
    let mut plan = Plan::new(
        collector.addr,
        s.window,
        s.agents_per_socket.unwrap_or(1),
        start,
        s.pace,
    );
    plan.logs = Some(bursts.clone());
    let plan = Arc::new(plan);
    let n = s.log_bursts;
    let run = send_all(su.clients, &su.agents_rt, &plan, pid, n);
    collector.stop(STOP_PATIENCE)?;

    let mut row = Row::new("logs", db.name());
    let (_, acked, latencies) = acknowledged(run.results, &mut row.failures);
    let lines = acked * u64::from(bursts.lines);
    let secs = run.wall.as_secs_f64();
    let stats = su.cfg.database.open()?.stats()?;
    let expected_batches = s.agents as u64 * u64::from(n);
    let expected_lines = expected_batches * u64::from(bursts.lines);
    row.measures = vec![
        Measure::new("log lines/s acknowledged", lines as f64 / secs, "/s"),
        Measure::new(
            "ack latency p50",
            procstat::percentile_us(&latencies, 0.5),
            "ms",
        ),
        Measure::new(
            "ack latency p99",
            procstat::percentile_us(&latencies, 0.99),
            "ms",
        ),
        Measure::new(
            "bytes/line stored (compressed)",
            stats.log_bytes as f64 / stats.log_records.max(1) as f64,
            "B",
        ),
    ];
    row.detail.push(format!(
        "{} agents x {n} bursts x {} lines, window {}, {}; run {secs:.2} s; {} lines acked",
        s.agents,
        bursts.lines,
        s.window,
        match s.pace {
            Some(p) => format!("one burst per agent every {p:?}"),
            None => "as fast as the window allows".into(),
        },
        thousands(lines)
    ));
    cpu_split(&mut row, &run.cpu_collector, &run.cpu_agents, secs);
    row.check(
        acked == expected_batches,
        format!("{acked} log batches acknowledged, expected {expected_batches}"),
    );
    row.check(
        stats.log_batches == expected_batches && stats.log_records == expected_lines,
        format!(
            "the store holds {} log batches / {} lines, expected {expected_batches} / {expected_lines}",
            stats.log_batches, stats.log_records
        ),
    );
    Ok(row)
}

/// Every agent connected and idle: the collector's memory per connection.
pub fn idle(dir: &Path, db: &Db, s: &Settings, pki: &Pki) -> Result<Row> {
    let su = setup(dir, db, s, pki)?;
    let collector = Running::start(&su.config, s.collector_threads)?;
    let pid = collector.pid();
    // Let the collector finish starting (store, threads) before the baseline.
    std::thread::sleep(Duration::from_millis(500));
    let rss0 = procstat::rss_bytes(pid);
    let plan = Arc::new(Plan::new(
        collector.addr,
        s.window,
        s.agents_per_socket.unwrap_or(agent::AGENTS_PER_SOCKET),
        now_millis(),
        None,
    ));
    let hold = s.idle_hold;
    let (connect, ready, rss1, results) = su.agents_rt.block_on(async {
        let (tasks, go, connect, ready) =
            spawn_agents(su.clients, &plan, |agent, gate| async move {
                let link = agent.connect_fresh(gate).await?;
                link.conn.close(0u32.into(), b"done");
                Ok(())
            })
            .await;
        // Idle connections: keep-alives only, then read what they cost the collector.
        tokio::time::sleep(hold).await;
        let rss1 = procstat::rss_bytes(pid);
        let _ = go.send(true);
        (connect, ready, rss1, join_all(tasks).await)
    });
    collector.stop(STOP_PATIENCE)?;
    let mut row = Row::new("idle", db.name());
    collect_failures(results, &mut row.failures);
    let per = rss1.saturating_sub(rss0) as f64 / ready.max(1) as f64;
    row.measures = vec![
        Measure::new("agents connected at once", ready as f64, "")
            .target(Target::AtLeast(10_000.0)),
        Measure::new("collector RSS per idle connection", per / 1024.0, "KiB")
            .target(Target::AtMost(100.0)),
    ];
    row.detail.push(format!(
        "collector RSS {:.1} MiB before the agents, {:.1} MiB with {ready} connected (held {:.1} s); \
         all connected in {:.2} s",
        rss0 as f64 / 1048576.0,
        rss1 as f64 / 1048576.0,
        hold.as_secs_f64(),
        connect.as_secs_f64()
    ));
    row.check(
        ready == s.agents,
        format!("{ready} of {} agents connected", s.agents),
    );
    Ok(row)
}

struct Reconnected {
    acked: u64,
    /// When its first batch after the restart was acknowledged.
    back: Instant,
    attempts: Attempts,
    /// The welcomed connection's RTT estimate at the end, as its agent's QUIC saw it.
    rtt: Duration,
    /// Its packets declared lost, of those sent.
    lost: (u64, u64),
    /// The window the stopping collector asked it to spread its return over.
    told: Option<Duration>,
}

/// What the agents' side of a restart saw.
struct Storm {
    results: Vec<Result<Reconnected, String>>,
    /// From the stop signal to the collector's exit.
    stop_time: Duration,
    /// Microseconds from the restart to each agent's first acknowledgement, sorted.
    backs: Vec<u32>,
    /// From the restart to the restarted collector listening.
    ready: Duration,
    restart_error: Option<String>,
    /// The stopping collector's counts, and the restarted one's.
    counts: (Counts, Counts),
    slowest: Vec<String>,
    agents_lag: LagSummary,
}

/// The collector stopped and started again on the same port: how long until every agent is
/// back and acknowledged, and whether any batch was lost or stored twice.
pub fn reconnect(dir: &Path, db: &Db, s: &Settings, pki: &Pki) -> Result<Row> {
    let su = setup(dir, db, s, pki)?;
    let b = s.reconnect_batches.max(1);
    let (start, _) = clock(2 * b);
    let first = Running::start(&su.config, s.collector_threads)?;
    let addr = first.addr;
    let plan = Arc::new(Plan::new(
        addr,
        s.window,
        s.agents_per_socket.unwrap_or(agent::AGENTS_PER_SOCKET),
        start,
        None,
    ));
    let agents = s.agents;
    let threads = s.collector_threads;
    let Storm {
        results,
        stop_time,
        backs,
        ready,
        restart_error,
        counts: (before, after),
        slowest,
        agents_lag,
    } = su.agents_rt.block_on(async {
        let (done_tx, mut done_rx) = mpsc::channel::<()>(agents.max(1));
        // Back agents stay connected, as real ones do, until every agent is back (or has
        // failed): closing their sessions during the storm would load the collector with
        // work a real restart does not have.
        let (back_tx, mut back_rx) = mpsc::channel::<()>(agents.max(1));
        let (release_tx, release_rx) = watch::channel(false);
        let (tasks, go, _, _) = spawn_agents(su.clients, &plan, move |mut agent, gate| {
            let done = done_tx.clone();
            let back = back_tx.clone();
            let mut release = release_rx.clone();
            async move {
                let mut link = agent.connect_fresh(gate).await?;
                let before = agent.send(&mut link, 0, b).await?;
                let _ = done.send(()).await;
                drop(done);
                // The collector's stop closes the connection, saying when to come back.
                let told = transport::return_window(&link.conn.closed().await);
                drop(link);
                let (mut link, attempts) = agent.reconnect(Start::AfterLoss(told)).await?;
                let want = seq(EPOCH, b);
                let hw = link.welcome.high_water.clone();
                if hw != [(StreamId::Metrics, want)] {
                    return Err(format!(
                        "{}: after the restart the collector's high-water marks are {hw:?}, \
                             expected metrics {want:#x}",
                        agent.name
                    ));
                }
                let after = agent.send(&mut link, b, 2 * b).await?;
                let path = link.conn.stats().path;
                let _ = back.send(()).await;
                drop(back);
                let _ = release.wait_for(|r| *r).await;
                agent.finish(link).await?;
                Ok(Reconnected {
                    acked: before.acked + after.acked,
                    back: after.first_ack.unwrap_or_else(Instant::now),
                    attempts,
                    rtt: path.rtt,
                    lost: (path.lost_packets, path.sent_packets),
                    told,
                })
            }
        })
        .await;
        let _ = go.send(true);
        let mut done = 0;
        while done < agents && done_rx.recv().await.is_some() {
            done += 1;
        }
        drop(done_rx);
        let t = Instant::now();
        let mut error = None;
        // Before the restart: the tickets given; after it: the sessions resumed.
        let (mut before, mut after) = (Counts::default(), Counts::default());
        match first.stop(STOP_PATIENCE) {
            Ok(c) => before = c,
            Err(e) => error = Some(format!("stopping the collector: {e:#}")),
        }
        let stop_time = t.elapsed();
        // The same port again: what agents were configured with.
        let restarted = Instant::now();
        // Off the agents' threads: it waits for the child's "ready" line.
        let config = write_config(dir, db, s, &addr.to_string());
        let starting = tokio::task::spawn_blocking(move || {
            let r = config.and_then(|config| Running::start(&config, threads));
            (r, restarted.elapsed())
        });
        // Every agent has reported back or ended (its sender gone either way; the one
        // `spawn_agents` was given went with it).
        while back_rx.recv().await.is_some() {}
        let _ = release_tx.send(true);
        let results = join_all(tasks).await;
        // Microseconds, as `procstat::percentile_us` takes them.
        let mut backs: Vec<u32> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|r| {
                let back = r.back.saturating_duration_since(restarted).as_micros();
                u32::try_from(back).unwrap_or(u32::MAX)
            })
            .collect();
        backs.sort();
        let slowest = slowest_stories(&results, restarted, SLOWEST_TOLD);
        let agents_lag = su.agents_lag.since(restarted);
        let (running, ready) = match starting.await {
            Ok(r) => r,
            Err(e) => (
                Err(anyhow::anyhow!("the start task failed: {e}")),
                Duration::ZERO,
            ),
        };
        match running {
            Ok(r) => match r.stop(STOP_PATIENCE) {
                Ok(c) => after = c,
                Err(e) => {
                    error.get_or_insert(format!("stopping the restarted collector: {e:#}"));
                }
            },
            Err(e) => {
                error.get_or_insert(format!("restarting the collector: {e:#}"));
            }
        }
        Storm {
            results,
            stop_time,
            backs,
            ready,
            restart_error: error,
            counts: (before, after),
            slowest,
            agents_lag,
        }
    });

    let mut row = Row::new("reconnect", db.name());
    row.failures.extend(restart_error);
    let ok = collect_failures(results, &mut row.failures);
    let acked: u64 = ok.iter().map(|r| r.acked).sum();
    let attempts: u64 = ok.iter().map(|r| u64::from(r.attempts.made)).sum();
    let unanswered: u64 = ok.iter().map(|r| u64::from(r.attempts.unanswered)).sum();
    let expected = agents as u64 * 2 * u64::from(b);
    row.measures = vec![
        Measure::new(
            "all agents back and acked, after restart",
            procstat::percentile_us(&backs, 1.0) / 1e3,
            "s",
        )
        .target(Target::AtMost(10.0)),
    ];
    let at = |q: f64| procstat::percentile_us(&backs, q) / 1e3;
    row.detail.push(format!(
        "the restarted collector was ready (listening, store open) after {:.2} s; agents back \
         and acked: half by {:.2} s, 90 % by {:.2} s",
        ready.as_secs_f64(),
        at(0.5),
        at(0.9),
    ));
    // The storm's shape: a slow first second is handshakes started and not yet finished.
    let mut per_second = Vec::new();
    for &us in &backs {
        let s = (us / 1_000_000) as usize;
        if per_second.len() <= s {
            per_second.resize(s + 1, 0u32);
        }
        per_second[s] += 1;
    }
    row.detail.push(format!(
        "agents back in each second after the restart: {}",
        per_second
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let told: Vec<Duration> = ok.iter().filter_map(|r| r.told).collect();
    row.detail.push(format!(
        "{agents} agents, {b} batches before the restart and {b} after; the stop took {:.2} s; \
         {} agents told by the stopping collector to come back within {:.1} s; {:.2} connection \
         attempts per agent (jittered backoff {:?}..{:?}), {unanswered} of them unanswered \
         (given up after {:?})",
        stop_time.as_secs_f64(),
        told.len(),
        told.iter().max().copied().unwrap_or_default().as_secs_f64(),
        attempts as f64 / ok.len().max(1) as f64,
        plan.link.reconnect_min,
        plan.link.reconnect_max,
        CONNECT_PATIENCE,
    ));
    // The restarted collector's count: handshakes after the restart that resumed a session
    // from a ticket the first collector gave (keyed from the same server key).
    row.detail.push(format!(
        "{} of {} reconnections resumed their TLS session from a ticket ({} tickets given before \
         the restart)",
        after.resumed,
        ok.len(),
        before.tickets_issued
    ));
    row.detail.push(format!(
        "attempts refused: {} by the stopping collector; by the restarted one {} for want of a \
         place (ingest.max_connecting = {}, {:?} each at most) and {} in their handshake (not \
         finished within 5 s: their agents had given up)",
        before.refused_stopping,
        after.refused_busy,
        su.cfg.ingest.max_connecting,
        aftercare_collector::ingest::QUEUE_WAIT,
        after.refused_tls,
    ));
    // A 10 ms timer on each side: which one fell behind during the storm.
    row.detail.push(format!(
        "how late each runtime ran from the restart on (a 10 ms timer): the simulated agents' \
         {agents_lag}; the restarted collector's {}",
        after.lag
    ));
    row.detail.extend(slowest);
    row.check(
        acked == expected,
        format!("{acked} batches acknowledged, expected {expected}"),
    );
    let stats = su.cfg.database.open()?.stats()?;
    row.check(
        stats.staged_batches == expected
            && stats.staged_samples == expected * SAMPLES_PER_BATCH as u64,
        format!(
            "the store holds {} batches / {} samples, expected {expected} / {}",
            stats.staged_batches,
            stats.staged_samples,
            expected * SAMPLES_PER_BATCH as u64
        ),
    );
    let want = seq(EPOCH, 2 * b);
    let wrong = high_waters(&su.cfg, agents)?
        .iter()
        .filter(|h| **h != Some(want))
        .count();
    row.check(
        wrong == 0,
        format!("{wrong} hosts' high-water marks are not {want:#x}"),
    );
    Ok(row)
}

/// How many of the last agents back after a restart have their attempts told.
const SLOWEST_TOLD: usize = 3;

/// The attempts of the `n` agents back last, each from the restart: a storm's tail is
/// where the collector's admission and the agents' backoff show.
fn slowest_stories(
    results: &[Result<Reconnected, String>],
    restarted: Instant,
    n: usize,
) -> Vec<String> {
    let mut ok: Vec<&Reconnected> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    ok.sort_by_key(|r| std::cmp::Reverse(r.back));
    let at = |t: Instant| {
        // Attempts before the restart (to the stopping collector) are negative.
        if t >= restarted {
            t.duration_since(restarted).as_secs_f64()
        } else {
            -restarted.duration_since(t).as_secs_f64()
        }
    };
    ok.iter()
        .take(n)
        .map(|r| {
            let tried: Vec<String> = r
                .attempts
                .history
                .iter()
                .map(|(began, took, how)| {
                    format!(
                        "{:+.2} s for {:.2} s: {how}",
                        at(*began),
                        took.as_secs_f64()
                    )
                })
                .collect();
            format!(
                "back at {:.2} s after {} attempts ({}); then its RTT estimate was {} ms and \
                 {} of its {} packets had been declared lost",
                at(r.back),
                tried.len(),
                tried.join("; "),
                r.rtt.as_millis(),
                r.lost.0,
                r.lost.1,
            )
        })
        .collect()
}

fn cpus() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

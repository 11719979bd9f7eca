//! aftercare-loadgen: many simulated agents, each with its own certificate, over real QUIC
//! and mutual TLS to a collector on 127.0.0.1, on SQLite and PostgreSQL in the same run.
//! One row per (scenario, backend), each measure against the project's target; the exit
//! status is non-zero when a self-check (exactly-once accounting) fails.
//!
//! `cargo run --release -p aftercare-loadgen -- all --agents 200`
//!
//! The collector runs as a child process of this binary (`collector`, below) doing the real
//! ingest path; see `collector.rs` for why.

use anyhow::{Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

mod agent;
mod alloc;
mod collector;
mod lag;
mod procstat;
mod report;
mod scenario;
mod sim;

// Rng and number formatting, shared with the collector's store benches.
#[path = "../../collector/benches/common/mod.rs"]
mod common;

#[derive(Parser)]
#[command(
    version,
    about = "Simulated agents against a real collector: throughput, idle memory, reconnects"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Simulated agents, each with its own certificate, connection and UDP socket.
    #[arg(long, global = true, default_value_t = 200)]
    agents: usize,
    #[arg(long, global = true, value_enum, default_value_t = Backend::Both)]
    backend: Backend,
    /// A PostgreSQL server, as the URL of a role that may create databases: each scenario
    /// gets a fresh database there, dropped afterwards. Without it, a throwaway cluster of
    /// aftercare-pgtest (fsync off: its figures are not durable ones).
    #[arg(long, global = true)]
    postgres_url: Option<String>,
    /// Batches of 100 samples per agent in `ingest` (360 make a simulated hour).
    #[arg(long, global = true, default_value_t = 360)]
    batches: u32,
    /// Log bursts per agent in `logs` (one batch each).
    #[arg(long, global = true, default_value_t = 20)]
    log_bursts: u32,
    /// Lines per log burst in `logs`.
    #[arg(long, global = true, default_value_t = 1000)]
    burst_lines: u32,
    /// Batches per agent before the restart in `reconnect`, and as many after. One is what
    /// a restart shorter than the agents' 10 s interval leaves each of them to send; more
    /// add a backlog to the storm.
    #[arg(long, global = true, default_value_t = 1)]
    reconnect_batches: u32,
    /// Batches in flight (written, not yet acknowledged) per connection.
    #[arg(long, global = true, default_value_t = 32)]
    window: usize,
    /// `ingest`: each agent sends one batch per this (e.g. `1s`: 10 s of a host's life per
    /// second), the latency an agent sees at a given load; without it agents send as fast
    /// as the window allows (throughput, with latency set by how much is queued).
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    pace: Option<Duration>,
    /// How long `idle` holds the connections before reading the collector's memory.
    #[arg(long, global = true, default_value = "3s", value_parser = humantime::parse_duration)]
    idle_hold: Duration,
    /// Worker threads of the collector's runtime (default: the number of CPUs).
    #[arg(long, global = true)]
    collector_threads: Option<usize>,
    /// The collector's `ingest.max_connecting`: attempts in their handshake at once (default:
    /// the collector's own default).
    #[arg(long, global = true)]
    max_connecting: Option<usize>,
    /// The collector's `ingest.return_rate`: agents a second a stopping collector spreads
    /// its agents' return for (default: the collector's own default).
    #[arg(long, global = true)]
    return_rate: Option<u32>,
    /// Worker threads of the agents' runtime (default: the number of CPUs).
    #[arg(long, global = true)]
    agent_threads: Option<usize>,
    /// Simulated agents per UDP socket (default: one each for `ingest` and `logs`, 64 for
    /// `idle` and `reconnect`).
    #[arg(long, global = true)]
    agents_per_socket: Option<usize>,
    /// Where the collectors' data and the agents' certificates go (default: a temporary
    /// directory, removed at the end).
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Throughput, acknowledgement latency p50/p99, bytes per sample at rest.
    Ingest,
    /// Log bursts: lines/s acknowledged, acknowledgement latency, bytes per line stored;
    /// every burst stored once.
    Logs,
    /// Every agent connected and idle: the collector's memory per connection.
    Idle,
    /// The collector stopped and restarted on the same port: time until every agent is
    /// back and acknowledged; no batch lost or stored twice.
    Reconnect,
    /// Every scenario above, in that order.
    All,
    /// The collector under load (started by the scenarios, not by hand).
    #[command(hide = true)]
    Collector {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
    Both,
}

type ScenarioFn =
    fn(&std::path::Path, &scenario::Db, &scenario::Settings, &scenario::Pki) -> Result<report::Row>;

/// The throwaway PostgreSQL cluster's `shared_buffers` (see `main`).
const PG_BUFFERS: &str = "512MB";

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Command::Collector { config, threads } = &cli.command {
        // Agents leaving abruptly (idle, reconnect) are expected here: errors only.
        aftercare_collector::logging::init("error");
        return collector::serve(config, *threads);
    }
    if let Some(url) = &cli.postgres_url {
        // SAFETY: no other thread exists yet to read the environment concurrently.
        unsafe { std::env::set_var(aftercare_pgtest::ENV, url) };
    } else if std::env::var_os(aftercare_pgtest::SHARED_BUFFERS_ENV).is_none() {
        // 10,000 hosts' series and their indexes do not fit the tests' 32MB; a database
        // for that many hosts has far more.
        // SAFETY: as above.
        unsafe { std::env::set_var(aftercare_pgtest::SHARED_BUFFERS_ENV, PG_BUFFERS) };
    }
    let nofile = procstat::raise_nofile()?;
    // Each agent holds a UDP socket and its certificate files are read once; the collector
    // child inherits the limit.
    if nofile < cli.agents as u64 + 256 {
        bail!(
            "{} agents need more open files than the hard limit allows ({nofile}); raise it \
             (ulimit -Hn) and run again",
            cli.agents
        );
    }
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let settings = scenario::Settings {
        agents: cli.agents.max(1),
        batches: cli.batches.clamp(1, u32::MAX / 4),
        reconnect_batches: cli.reconnect_batches.clamp(1, u32::MAX / 4),
        window: cli.window.max(1),
        pace: cli.pace.filter(|p| !p.is_zero()),
        collector_threads: cli.collector_threads.unwrap_or(cpus).max(1),
        agent_threads: cli.agent_threads.unwrap_or(cpus).max(1),
        agents_per_socket: cli.agents_per_socket.map(|n| n.max(1)),
        return_rate: cli.return_rate,
        max_connecting: cli.max_connecting,
        idle_hold: cli.idle_hold,
        log_bursts: cli.log_bursts.clamp(1, u32::MAX / 4),
        burst_lines: cli.burst_lines.clamp(1, 100_000),
    };
    let scenarios: Vec<(&'static str, ScenarioFn)> = match cli.command {
        Command::Ingest => vec![("ingest", scenario::ingest)],
        Command::Logs => vec![("logs", scenario::logs)],
        Command::Idle => vec![("idle", scenario::idle)],
        Command::Reconnect => vec![("reconnect", scenario::reconnect)],
        Command::All => vec![
            ("ingest", scenario::ingest),
            ("logs", scenario::logs),
            ("idle", scenario::idle),
            ("reconnect", scenario::reconnect),
        ],
        Command::Collector { .. } => unreachable!("handled above"),
    };
    let tmp = tempfile::tempdir()?;
    let base = cli.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let pki = scenario::Pki::issue(&base.join("pki"), settings.agents)?;
    let mut rows = Vec::new();
    for (name, run) in scenarios {
        for backend in ["sqlite", "postgres"] {
            match (cli.backend, backend) {
                (Backend::Sqlite, "postgres") | (Backend::Postgres, "sqlite") => continue,
                _ => {}
            }
            eprintln!("{name} on {backend} ...");
            let db = if backend == "sqlite" {
                scenario::Db::Sqlite
            } else {
                scenario::Db::Postgres(aftercare_pgtest::database())
            };
            let dir = base.join(format!("{name}-{backend}"));
            rows.push(run(&dir, &db, &settings, &pki).unwrap_or_else(|e| {
                let mut row = report::Row::new(name, db.name());
                row.failures.push(format!("{e:#}"));
                row
            }));
        }
    }
    report::print(&rows);
    if cli.postgres_url.is_none() && cli.backend != Backend::Sqlite {
        println!();
        println!(
            "PostgreSQL here is aftercare-pgtest's throwaway cluster (fsync off, shared_buffers \
             {}): not a durable figure. Give --postgres-url for a real server.",
            std::env::var(aftercare_pgtest::SHARED_BUFFERS_ENV).unwrap_or_default()
        );
    }
    println!(
        "Figures from a machine shared with other work are noisy: trust ratios and directions \
         more than the last digit."
    );
    if let Some(d) = &cli.dir {
        println!("left in {}", d.display());
    }
    if rows.iter().any(|r| !r.failures.is_empty()) {
        bail!("self-checks failed (see FAILED above)");
    }
    Ok(())
}

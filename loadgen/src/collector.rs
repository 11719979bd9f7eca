//! The collector under load: the real ingest path (QUIC endpoint, mutual TLS, ingest tasks,
//! writer thread, store) in a child process of its own, started as
//! `aftercare-loadgen collector --config FILE`.
//!
//! A process of its own because two scenarios need one: `idle` reads the collector's memory
//! from /proc (agents in the same process would be counted with it), and `reconnect` stops
//! and starts it, which must lose everything a process holds in memory. Only the ingest path
//! runs: `serve`'s findings engine, report scheduler and API are not what is measured.

use crate::lag::LagSummary;
use aftercare_collector::config::CollectorConfig;
use aftercare_collector::store::off_runtime;
use aftercare_collector::telemetry::Refusal;
use aftercare_collector::tls::{ServerTlsFiles, load_quinn_server_config};
use aftercare_collector::writer::{self, WriterOptions};
use aftercare_collector::{diagnose, ingest, net};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What the child prints on stdout once its endpoint is bound.
const READY: &str = "listening ";
/// What the child prints on stdout as it exits: its counts.
const COUNTS: &str = "counts ";

/// What a collector child counted: the session tickets it made and accepted (resumed
/// handshakes), the connection attempts it refused, and how late its runtime ran.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub tickets_issued: u64,
    pub resumed: u64,
    /// No place among `ingest.max_connecting` came free in time.
    pub refused_busy: u64,
    /// Arrived while it was stopping.
    pub refused_stopping: u64,
    /// Handshakes refused or not finished in time (their agents had given up).
    pub refused_tls: u64,
    /// Over the child's whole life.
    pub lag: LagSummary,
}

/// The child's side: serve ingest until SIGTERM or SIGINT, then shut down in order.
pub fn serve(config: &Path, threads: usize) -> Result<()> {
    let cfg = CollectorConfig::load(config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("collector-rt")
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Taken first: the probe's first window may open before `start` returns.
        let started = std::time::Instant::now();
        let lag = crate::lag::Lag::start();
        let mut store = off_runtime(|| cfg.database.open())
            .with_context(|| format!("cannot open database {}", cfg.database))?;
        off_runtime(|| store.disconnect_all(aftercare_shared::time_fmt::now_millis()))?;
        let files = ServerTlsFiles::in_dir(&cfg.ca_dir());
        let (server, tickets) = load_quinn_server_config(&files)?;
        let secret = std::fs::read(&files.key)
            .with_context(|| format!("cannot read {}", files.key.display()))?;
        let endpoint = net::server_endpoint(cfg.listen, server, &secret)
            .with_context(|| format!("cannot listen on udp {}", cfg.listen))?;
        println!("{READY}{}", endpoint.local_addr()?);
        let ing = &cfg.ingest;
        // Counted as the real collector counts, so its cost is in the figures.
        let telemetry = std::sync::Arc::new(aftercare_collector::telemetry::Telemetry::new());
        let (writer, join) = writer::spawn(
            store,
            WriterOptions {
                max_batches_per_commit: ing.max_batches_per_commit,
                queue_depth: ing.queue_depth,
                compact_every: ing.compact_every,
                retention: cfg.retention.to_store(),
                telemetry: telemetry.clone(),
            },
        );
        let stop = CancellationToken::new();
        let on_signal = stop.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            on_signal.cancel();
        });
        ingest::serve(
            endpoint,
            writer,
            ingest::IngestOptions {
                max_frame: cfg.max_frame_bytes,
                admission: ingest::Admission::new(ing.max_connecting),
                links: diagnose::Links::new(),
                share_probes: false,
                telemetry: telemetry.clone(),
                going_away: ingest::GoingAway::new(ing.return_rate),
            },
            stop,
        )
        .await;
        // Every writer handle is gone: the writer commits what is queued and stops.
        tokio::task::spawn_blocking(move || join.join()).await.ok();
        let t = tickets.tally();
        let l = lag.since(started);
        println!(
            "{COUNTS}{} {} {} {} {} {} {} {}",
            t.issued,
            t.accepted,
            telemetry.refused(Refusal::Busy),
            telemetry.refused(Refusal::Stopping),
            telemetry.refused(Refusal::Tls),
            l.max.as_micros(),
            l.behind,
            l.seconds,
        );
        Ok(())
    })
}

/// The parent's handle on a running collector child.
pub struct Running {
    child: Child,
    /// The rest of the child's stdout (its last line counts tickets).
    out: BufReader<std::process::ChildStdout>,
    pub addr: SocketAddr,
}

impl Running {
    /// Start the collector with `config` and wait until it listens.
    pub fn start(config: &Path, threads: usize) -> Result<Running> {
        let exe = std::env::current_exe().context("cannot find the loadgen executable")?;
        let mut child = Command::new(exe)
            .arg("collector")
            .arg("--config")
            .arg(config)
            .arg("--threads")
            .arg(threads.to_string())
            .env(
                std::ffi::OsStr::from_bytes(crate::alloc::COLLECTOR_ALLOCATOR.to_bytes()),
                "1",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start the collector child")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut out = BufReader::new(stdout);
        let mut line = String::new();
        out.read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix(READY) else {
            let _ = child.kill();
            let status = child.wait()?;
            bail!("the collector child did not start ({status}); its errors are above");
        };
        Ok(Running {
            addr: addr.parse().context("the collector child's address")?,
            child,
            out,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ask it to stop (SIGTERM: stop accepting, answer what was read, commit, exit) and wait
    /// up to `patience` before killing it. What it counted.
    pub fn stop(mut self, patience: Duration) -> Result<Counts> {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("the collector child exited with {status}");
                }
                let mut rest = String::new();
                std::io::Read::read_to_string(&mut self.out, &mut rest)?;
                let counts = rest
                    .lines()
                    .find_map(|l| l.strip_prefix(COUNTS))
                    .context("the collector child did not say its counts")?;
                let n: Vec<u64> = counts
                    .split(' ')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .ok()
                    .filter(|n: &Vec<u64>| n.len() == 8)
                    .with_context(|| {
                        format!("the collector child's counts are unreadable: {counts:?}")
                    })?;
                return Ok(Counts {
                    tickets_issued: n[0],
                    resumed: n[1],
                    refused_busy: n[2],
                    refused_stopping: n[3],
                    refused_tls: n[4],
                    lag: LagSummary {
                        max: Duration::from_micros(n[5]),
                        behind: n[6] as u32,
                        seconds: n[7] as u32,
                    },
                });
            }
            if t.elapsed() > patience {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the collector child did not stop within {patience:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A scenario that failed half way must not leave a collector behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

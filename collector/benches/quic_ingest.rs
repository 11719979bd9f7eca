//! End-to-end ingest benchmark: simulated agents send metric batches to a real collector
//! through the whole ingest path — QUIC with mutual TLS (one certificate per agent), the
//! framing codec, the per-connection ingest tasks, the writer thread's group commits and
//! SQLite (WAL, synchronous=FULL) — and count what comes back acknowledged.
//!
//! `cargo bench -p aftercare-collector --bench quic_ingest`
//!
//! Environment (all optional):
//! - `AGENTS` (default 200): simulated agents, each with its own certificate, connection
//!   and UDP socket;
//! - `BATCHES` (default 2880, eight simulated hours; 360 make an hour): batches per agent,
//!   100 samples each, on a 10 s grid that ends more than an hour in the past, so that
//!   compaction can close every hour;
//! - `WINDOW` (default 32): batches in flight (written, not yet acknowledged) per connection;
//! - `COLLECTOR_THREADS`, `AGENT_THREADS` (default: the number of CPUs): worker threads of
//!   the collector's and the agents' tokio runtimes;
//! - `AFTERCARE_BENCH_DIR`: where the collector's data directory goes (default a temporary
//!   directory, removed at the end);
//! - `AFTERCARE_LOG`: the collector's log level (default `warn`).
//!
//! Agents write their frames in batches of up to [`WRITE_BYTES`] per `write_all` (one write
//! per message is ~4x slower, see ../shared/PROBES.md). An ack's latency runs from the
//! `write_all` that carried its batch to the Ack read back.
//!
//! The agents and the collector run in one process, on two runtimes with named threads, so
//! CPU time is reported per thread group (from /proc/self/task) as well as for the process.
//! The collector's in-run compaction is pushed past the run (`compact_every = "1h"`), so the
//! ingest figures are ingest only; the bench compacts afterwards and reports bytes at rest.
//! It exits non-zero unless every batch was acknowledged exactly once, in order, and the
//! store holds exactly agents × batches × 100 samples.
//!
//! The allocator is the system's (glibc), as in the collector binary. To compare another,
//! preload it, e.g. `LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2` before running
//! the bench executable: every decoded batch is ~200 small strings allocated by an ingest
//! task and freed by the writer thread, which glibc handles poorly.

use aftercare_agent::config::CollectorConfig as AgentLinkConfig;
use aftercare_agent::transport;
use aftercare_collector::ca;
use aftercare_collector::config::CollectorConfig;
use aftercare_collector::server::Collector;
use aftercare_collector::store::{COMPACT_GRACE_MS, HOUR_MS, MINUTE_MS, Store, hour_start};
use aftercare_shared::codec;
use aftercare_shared::consent::{ConsentRecord, Scope};
use aftercare_shared::model::{HostFacts, LossReport, MetricKind, MetricSnapshot, Sample, labels};
use aftercare_shared::protocol::{
    AgentMsg, Batch, CollectorMsg, Hello, PROTOCOL_VERSION, Payload, StreamId, seq,
};
use aftercare_shared::time_fmt::now_millis;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

mod common;
use common::*;

const INTERVAL_MS: i64 = 10_000;
const SAMPLES_PER_BATCH: usize = 100;
/// Frames are concatenated up to this many bytes per `write_all`.
const WRITE_BYTES: usize = 64 * 1024;
/// An agent that waits this long for an acknowledgement gives up (and the bench fails).
const ACK_PATIENCE: Duration = Duration::from_secs(60);
const EPOCH: u32 = 1;

/// How one series moves from tick to tick.
enum Gen {
    /// A CPU percentage as the agent computes it from /proc/stat: busy ticks over `ticks`
    /// ticks of the interval (100 per second per CPU), wandering around `base`.
    Cpu {
        base: f64,
        v: f64,
        noise: f64,
        ticks: f64,
    },
    /// Load average: slow, 2 decimals.
    Load {
        v: f64,
    },
    /// Bytes moving by whole pages now and then.
    Pages {
        v: f64,
        p: f64,
        pages: f64,
    },
    Const(f64),
    /// A counter growing by about `per_tick` (in whole units), with relative jitter, sent
    /// multiplied by `unit` (1 for bytes and counts, 0.001 for milliseconds sent as seconds).
    Counter {
        v: f64,
        per_tick: f64,
        jitter: f64,
        unit: f64,
    },
    /// A counter that rarely moves (errors, drops, OOM kills).
    Rare {
        v: f64,
        p: f64,
    },
    /// A small integer gauge (process count, threads).
    Small {
        v: f64,
        step: f64,
    },
    /// Whole degrees.
    Temp {
        v: f64,
    },
    /// Seconds since boot, from the batch's timestamp.
    Uptime {
        boot: i64,
    },
    /// How long a collection took, in seconds: a few hundred microseconds.
    Duration,
}

impl Gen {
    fn next(&mut self, rng: &mut Rng, ts: i64) -> f64 {
        match self {
            Gen::Cpu {
                base,
                v,
                noise,
                ticks,
            } => {
                *v += 0.3 * (*base - *v) + *noise * rng.normal();
                *v = v.clamp(0.0, 100.0);
                (*v / 100.0 * *ticks).round() / *ticks * 100.0
            }
            Gen::Load { v } => {
                *v = (*v + 0.02 * rng.normal()).max(0.0);
                (*v * 100.0).round() / 100.0
            }
            Gen::Pages { v, p, pages } => {
                if rng.chance(*p) {
                    *v = (*v + 4096.0 * (rng.normal() * *pages).round()).max(0.0);
                }
                *v
            }
            Gen::Const(v) => *v,
            Gen::Counter {
                v,
                per_tick,
                jitter,
                unit,
            } => {
                *v += (*per_tick * (1.0 + *jitter * rng.normal()))
                    .max(0.0)
                    .round();
                *v * *unit
            }
            Gen::Rare { v, p } => {
                if rng.chance(*p) {
                    *v += 1.0;
                }
                *v
            }
            Gen::Small { v, step } => {
                if rng.chance(0.2) {
                    *v = (*v + (rng.normal() * *step).round()).max(1.0);
                }
                *v
            }
            Gen::Temp { v } => {
                if rng.chance(0.1) {
                    *v += (rng.normal() * 0.7).round();
                }
                *v
            }
            Gen::Uptime { boot } => ((ts - *boot) / 1000) as f64,
            Gen::Duration => (250.0 + 50.0 * rng.normal()).round() / 1e6,
        }
    }
}

fn counter(v: f64, per_tick: f64, jitter: f64) -> Gen {
    Gen::Counter {
        v,
        per_tick,
        jitter,
        unit: 1.0,
    }
}

/// One simulated agent's metrics: the names, kinds and labels of the agent's own collector
/// (see the table at the top of agent/src/metrics/mod.rs), 100 series.
struct AgentSim {
    rng: Rng,
    gens: Vec<Gen>,
    msg: AgentMsg,
}

impl AgentSim {
    fn new(seed: u64, start: i64) -> AgentSim {
        let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xABCD);
        let mut series: Vec<(&str, String, MetricKind, Gen)> = Vec::new();
        let mut gauge = |name, l: String, g| series.push((name, l, MetricKind::Gauge, g));
        let cores = 8.0;
        let busy = 5.0 + 50.0 * rng.unit();
        let cpu = |base: f64, noise: f64, ticks: f64| Gen::Cpu {
            base,
            v: base,
            noise,
            ticks,
        };
        // 10 s at 100 ticks per second, per CPU.
        let all = 1000.0 * cores;
        gauge("cpu.usage", String::new(), cpu(busy, 3.0, all));
        gauge("cpu.user", String::new(), cpu(busy * 0.7, 2.0, all));
        gauge("cpu.system", String::new(), cpu(busy * 0.25, 1.0, all));
        gauge("cpu.iowait", String::new(), cpu(1.0, 0.3, all));
        for c in 0..cores as u32 {
            let l = labels(&[("core", &c.to_string())]);
            gauge("cpu.usage", l, cpu(busy, 6.0, 1000.0));
        }
        for n in ["load.1", "load.5", "load.15"] {
            gauge(n, String::new(), Gen::Load { v: busy / 20.0 });
        }
        let mem = 64.0 * (1u64 << 30) as f64;
        gauge("mem.total", String::new(), Gen::Const(mem));
        for (n, frac, p) in [
            ("mem.used", 0.4, 0.9),
            ("mem.available", 0.55, 0.9),
            ("mem.free", 0.1, 0.9),
            ("mem.cached", 0.3, 0.5),
            ("mem.buffers", 0.02, 0.2),
        ] {
            let v = (mem * frac / 4096.0).round() * 4096.0;
            gauge(n, String::new(), Gen::Pages { v, p, pages: 300.0 });
        }
        gauge(
            "swap.total",
            String::new(),
            Gen::Const(8.0 * (1u64 << 30) as f64),
        );
        gauge(
            "swap.used",
            String::new(),
            Gen::Pages {
                v: 4096.0 * 1000.0,
                p: 0.02,
                pages: 5.0,
            },
        );
        for (dev, fstype, mount) in [
            ("/dev/sda2", "ext4", "/"),
            ("/dev/sda1", "vfat", "/boot/efi"),
            ("/dev/mapper/vg0-var", "xfs", "/var"),
            ("/dev/nvme0n1p1", "xfs", "/data"),
        ] {
            let l = labels(&[("device", dev), ("fstype", fstype), ("mount", mount)]);
            let size =
                (((1u64 << 30) as f64 * (1.0 + 500.0 * rng.unit())) / 4096.0).round() * 4096.0;
            let used = (size * (0.2 + 0.6 * rng.unit()) / 4096.0).round() * 4096.0;
            gauge("fs.bytes.total", l.clone(), Gen::Const(size));
            gauge(
                "fs.bytes.used",
                l.clone(),
                Gen::Pages {
                    v: used,
                    p: 0.3,
                    pages: 50.0,
                },
            );
            gauge(
                "fs.bytes.available",
                l.clone(),
                Gen::Pages {
                    v: size * 0.95 - used,
                    p: 0.3,
                    pages: 50.0,
                },
            );
            let inodes = (size / 16384.0).round();
            gauge("fs.inodes.total", l.clone(), Gen::Const(inodes));
            gauge(
                "fs.inodes.used",
                l.clone(),
                Gen::Small {
                    v: 120_000.0,
                    step: 3.0,
                },
            );
            gauge(
                "fs.inodes.free",
                l,
                Gen::Small {
                    v: inodes - 120_000.0,
                    step: 3.0,
                },
            );
        }
        gauge(
            "proc.count",
            String::new(),
            Gen::Small {
                v: 300.0,
                step: 2.0,
            },
        );
        gauge(
            "proc.threads",
            String::new(),
            Gen::Small {
                v: 1500.0,
                step: 5.0,
            },
        );
        gauge(
            "proc.running",
            String::new(),
            Gen::Small { v: 2.0, step: 1.0 },
        );
        let boot = start - 40 * 86_400_000;
        gauge("system.uptime", String::new(), Gen::Uptime { boot });
        for s in ["temp1", "temp2"] {
            let l = labels(&[("chip", "coretemp-isa-0000"), ("sensor", s)]);
            gauge("sensor.temperature", l, Gen::Temp { v: 45.0 });
        }
        gauge(
            "agent.memory.rss",
            String::new(),
            Gen::Pages {
                v: 4096.0 * 1100.0,
                p: 0.05,
                pages: 2.0,
            },
        );
        gauge("agent.collect.time", String::new(), Gen::Duration);

        let mut count = |name, l: String, g| series.push((name, l, MetricKind::Counter, g));
        count(
            "cpu.context_switches",
            String::new(),
            counter(1e9, 5e4, 0.3),
        );
        count(
            "mem.oom_kills",
            String::new(),
            Gen::Rare { v: 0.0, p: 0.0001 },
        );
        count("swap.in", String::new(), Gen::Rare { v: 4096.0, p: 0.01 });
        count("swap.out", String::new(), Gen::Rare { v: 8192.0, p: 0.01 });
        count("proc.forks", String::new(), counter(1e6, 20.0, 0.5));
        count(
            "agent.cpu",
            String::new(),
            Gen::Counter {
                v: 120.0,
                per_tick: 2.0,
                jitter: 0.5,
                unit: 0.01,
            },
        );
        for (dev, load) in [("sda", 1.0), ("sdb", 0.1), ("nvme0n1", 5.0)] {
            let l = labels(&[("device", dev)]);
            for (n, per_tick, unit) in [
                ("disk.read.bytes", 2e6 * load, 1.0),
                ("disk.write.bytes", 4e6 * load, 1.0),
                ("disk.read.ops", 50.0 * load, 1.0),
                ("disk.write.ops", 120.0 * load, 1.0),
                // Milliseconds in /proc/diskstats, sent as seconds.
                ("disk.io.time", 300.0 * load, 0.001),
            ] {
                count(
                    n,
                    l.clone(),
                    Gen::Counter {
                        v: per_tick * 1e5,
                        per_tick,
                        jitter: 0.4,
                        unit,
                    },
                );
            }
        }
        for (iface, load) in [("eth0", 1.0), ("eth1", 0.05), ("lo", 0.3)] {
            let l = labels(&[("interface", iface)]);
            for (n, per_tick) in [
                ("net.rx.bytes", 8e6 * load),
                ("net.tx.bytes", 5e6 * load),
                ("net.rx.packets", 9e3 * load),
                ("net.tx.packets", 7e3 * load),
            ] {
                count(n, l.clone(), counter(per_tick * 1e5, per_tick, 0.3));
            }
            for (n, p) in [
                ("net.rx.errors", 0.001),
                ("net.tx.errors", 0.0),
                ("net.rx.drops", 0.01),
                ("net.tx.drops", 0.0),
            ] {
                count(n, l.clone(), Gen::Rare { v: 3.0, p });
            }
        }
        assert_eq!(series.len(), SAMPLES_PER_BATCH);

        let mut gens = Vec::new();
        let mut samples = Vec::new();
        for (name, labels, kind, g) in series {
            samples.push(Sample {
                name: name.to_string(),
                labels,
                kind,
                value: 0.0,
            });
            gens.push(g);
        }
        let msg = AgentMsg::Batch(Batch {
            seq: 0,
            claimed_host: None,
            payload: Payload::Metrics {
                snapshot: MetricSnapshot { ts: 0, samples },
                loss: LossReport::default(),
            },
        });
        AgentSim { rng, gens, msg }
    }

    /// The batch of tick `i` at `ts` (rewritten in place: no allocation per tick).
    fn tick(&mut self, i: u32, ts: i64) -> &AgentMsg {
        let AgentMsg::Batch(b) = &mut self.msg else {
            unreachable!("the simulation holds a batch")
        };
        b.seq = seq(EPOCH, i + 1);
        let Payload::Metrics { snapshot, .. } = &mut b.payload else {
            unreachable!("the bench builds metrics batches")
        };
        snapshot.ts = ts;
        for (s, g) in snapshot.samples.iter_mut().zip(&mut self.gens) {
            s.value = g.next(&mut self.rng, ts);
        }
        &self.msg
    }
}

struct Plan {
    batches: u32,
    window: usize,
    /// Timestamp of tick 0 (before each agent's phase).
    start: i64,
    max_frame: usize,
}

#[derive(Default)]
struct AgentResult {
    acked: u64,
    /// Microseconds from the write that carried a batch to its Ack.
    latencies_us: Vec<u32>,
    frame_bytes: u64,
    writes: u64,
    /// UDP as the agent's connection saw it: sent to the collector, and received from it.
    udp_tx: quinn::UdpStats,
    udp_rx: quinn::UdpStats,
}

fn hello(name: &str) -> Hello {
    let mut consent = ConsentRecord::default();
    consent
        .grant_scopes(
            &[Scope::Metrics],
            "Bench Admin",
            time::OffsetDateTime::now_utc(),
            None,
        )
        .expect("grant");
    Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: "bench".into(),
        facts: HostFacts {
            hostname: name.into(),
            os_name: "Debian GNU/Linux".into(),
            kernel: "6.1.0".into(),
            arch: "x86_64".into(),
            cpu_count: 8,
            memory_bytes: 64 << 30,
            ..Default::default()
        },
        consent,
        claimed: None,
        interval_ms: INTERVAL_MS as u64,
    }
}

/// One agent: connect (Hello, Welcome), say it is ready, wait for the start, then send its
/// batches pipelined and read the acknowledgements, checking each comes once and in order.
async fn run_agent(
    index: usize,
    client: quinn::ClientConfig,
    link_cfg: Arc<AgentLinkConfig>,
    addr: std::net::SocketAddr,
    plan: Arc<Plan>,
    ready: mpsc::Sender<()>,
    mut go: watch::Receiver<bool>,
) -> Result<AgentResult, String> {
    let name = host_name(index);
    let mut sim = AgentSim::new(index as u64, plan.start);
    let endpoint = transport::endpoint(client, false).map_err(|e| format!("{name}: {e}"))?;
    let link = transport::connect(&endpoint, &link_cfg, addr, &hello(&name))
        .await
        .map_err(|e| format!("{name}: connect: {e}"))?;
    if !link.welcome.high_water.is_empty() {
        return Err(format!(
            "{name}: a fresh database already holds data for it: {:?}",
            link.welcome.high_water
        ));
    }
    let _ = ready.send(()).await;
    drop(ready);
    go.wait_for(|g| *g)
        .await
        .map_err(|_| format!("{name}: no start signal"))?;

    let transport::Link {
        conn,
        mut send,
        mut recv,
        ..
    } = link;
    // Agents tick at different moments within the interval.
    let phase = (index as i64 * 7919) % INTERVAL_MS;
    let window = Semaphore::new(plan.window);
    // (seq, written at) of every batch written and not yet acknowledged, oldest first; the
    // writer and reader below share it (the lock is never held across an await).
    let in_flight: Mutex<VecDeque<(u64, Instant)>> = Mutex::new(VecDeque::new());
    let max = plan.max_frame;
    let batches = plan.batches;

    let writer = async {
        let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BYTES + 16 * 1024);
        let mut seqs: Vec<u64> = Vec::with_capacity(plan.window);
        let (mut frame_bytes, mut writes) = (0u64, 0u64);
        let mut i = 0u32;
        loop {
            // Flush when the buffer is full, when the window is, or at the end.
            let room = i < batches && window.available_permits() > 0;
            if !buf.is_empty() && (buf.len() >= WRITE_BYTES || !room) {
                let now = Instant::now();
                in_flight
                    .lock()
                    .expect("in-flight list")
                    .extend(seqs.drain(..).map(|s| (s, now)));
                send.write_all(&buf)
                    .await
                    .map_err(|e| format!("{name}: write: {e}"))?;
                frame_bytes += buf.len() as u64;
                writes += 1;
                buf.clear();
            }
            if i == batches {
                break;
            }
            window
                .acquire()
                .await
                .map_err(|_| format!("{name}: window closed"))?
                .forget();
            let ts = plan.start + i64::from(i) * INTERVAL_MS + phase + (sim.rng.next() % 6) as i64;
            let msg = sim.tick(i, ts);
            seqs.push(seq(EPOCH, i + 1));
            codec::encode(msg, max, &mut buf).map_err(|e| format!("{name}: encode: {e}"))?;
            i += 1;
        }
        Ok::<_, String>((frame_bytes, writes))
    };

    let reader = async {
        let mut latencies_us = Vec::with_capacity(batches as usize);
        let mut acked = 0u64;
        while acked < u64::from(batches) {
            let msg = tokio::time::timeout(ACK_PATIENCE, transport::read_msg(&mut recv, max))
                .await
                .map_err(|_| format!("{name}: no acknowledgement within {ACK_PATIENCE:?}"))?
                .map_err(|e| format!("{name}: read: {e}"))?;
            match msg {
                Some(CollectorMsg::Ack {
                    stream,
                    seq,
                    duplicate,
                }) => {
                    let front = in_flight.lock().expect("in-flight list").pop_front();
                    let Some((want, at)) = front else {
                        return Err(format!("{name}: Ack of {seq:#x} for no batch in flight"));
                    };
                    if seq != want || stream != StreamId::Metrics || duplicate {
                        return Err(format!(
                            "{name}: expected Ack of metrics {want:#x}, got {stream:?} {seq:#x} \
                             (duplicate: {duplicate})"
                        ));
                    }
                    latencies_us.push(at.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    acked += 1;
                    window.add_permits(1);
                }
                Some(other) => return Err(format!("{name}: unexpected answer {other:?}")),
                None => {
                    return Err(format!(
                        "{name}: the collector closed the stream after {acked} acks"
                    ));
                }
            }
        }
        Ok::<_, String>((acked, latencies_us))
    };

    let ((frame_bytes, writes), (acked, latencies_us)) = tokio::try_join!(writer, reader)?;
    if !in_flight.lock().expect("in-flight list").is_empty() {
        return Err(format!("{name}: batches left without an Ack"));
    }
    let stats = conn.stats();
    // Our end of the stream is finished only once every Ack is in: the collector closes the
    // connection as soon as it has read to the end and answered what it read, and a close
    // discards whatever stream data is still unsent.
    send.finish().map_err(|e| format!("{name}: finish: {e}"))?;
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await;
    endpoint.close(0u32.into(), b"done");
    Ok(AgentResult {
        acked,
        latencies_us,
        frame_bytes,
        writes,
        udp_tx: stats.udp_tx,
        udp_rx: stats.udp_rx,
    })
}

fn host_name(index: usize) -> String {
    format!("host{index:05}")
}

fn customer_name(index: usize) -> String {
    format!("customer{:03}", index / 50)
}

/// What one thread of this process has used: CPU seconds, and seconds it was runnable but
/// waited for a CPU (from /proc/self/task/*/schedstat; 0 where the kernel lacks it).
#[derive(Clone, Copy, Default)]
struct ThreadTimes {
    cpu: f64,
    wait: f64,
}

fn thread_times() -> HashMap<u32, (String, ThreadTimes)> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        // schedstat: nanoseconds on a CPU, nanoseconds waiting on a run queue, time slices.
        let sched: Vec<f64> = std::fs::read_to_string(e.path().join("schedstat"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let t = if sched.len() >= 2 {
            ThreadTimes {
                cpu: sched[0] / 1e9,
                wait: sched[1] / 1e9,
            }
        } else {
            // Fields after the name: state is field 3, utime 14, stime 15.
            let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            ThreadTimes {
                cpu: (ticks(11) + ticks(12)) / hz,
                wait: 0.0,
            }
        };
        out.insert(tid, (comm, t));
    }
    out
}

fn group_of(comm: &str) -> &'static str {
    if comm.starts_with("collector-rt") {
        "collector: QUIC, TLS, ingest tasks"
    } else if comm.starts_with("store-writer") {
        "collector: store writer thread"
    } else if comm.starts_with("agents-rt") {
        "simulated agents"
    } else {
        "other (main thread)"
    }
}

/// Times of each thread group between two readings.
fn times_by_group(
    before: &HashMap<u32, (String, ThreadTimes)>,
    after: &HashMap<u32, (String, ThreadTimes)>,
) -> Vec<(&'static str, ThreadTimes)> {
    let mut groups: Vec<(&'static str, ThreadTimes)> = Vec::new();
    for (tid, (comm, t)) in after {
        let b = before.get(tid).map(|b| b.1).unwrap_or_default();
        let g = group_of(comm);
        let i = match groups.iter().position(|(n, _)| *n == g) {
            Some(i) => i,
            None => {
                groups.push((g, ThreadTimes::default()));
                groups.len() - 1
            }
        };
        groups[i].1.cpu += t.cpu - b.cpu;
        groups[i].1.wait += t.wait - b.wait;
    }
    groups.sort_by(|a, b| a.0.cmp(b.0));
    groups
}

/// Busy CPU seconds of the whole machine (all processes), from /proc/stat.
fn machine_busy() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    busy / hz
}

/// User + system CPU seconds of the whole process.
fn process_cpu() -> f64 {
    // SAFETY: getrusage writes into the struct we pass; zeroed is a valid rusage.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn percentile_us(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    f64::from(sorted[((sorted.len() - 1) as f64 * p).round() as usize]) / 1e3
}

fn main() {
    let agents = env_or("AGENTS", 200).max(1) as usize;
    let batches = env_or("BATCHES", 2880).clamp(1, u64::from(u32::MAX - 1)) as u32;
    let window = env_or("WINDOW", 32).max(1) as usize;
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let collector_threads = env_or("COLLECTOR_THREADS", cpus).max(1) as usize;
    let agent_threads = env_or("AGENT_THREADS", cpus).max(1) as usize;
    aftercare_collector::logging::init("warn");

    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = std::env::var_os("AFTERCARE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf())
        .join("quic-ingest");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench directory");
    let failures = match run(
        &dir,
        agents,
        batches,
        window,
        collector_threads,
        agent_threads,
    ) {
        Ok(f) => f,
        Err(e) => vec![format!("{e:#}")],
    };
    if std::env::var_os("AFTERCARE_BENCH_DIR").is_some() {
        println!("left in {}", dir.display());
    }
    if !failures.is_empty() {
        eprintln!();
        for f in &failures {
            eprintln!("FAILED: {f}");
        }
        std::process::exit(1);
    }
}

fn run(
    dir: &Path,
    agents: usize,
    batches: u32,
    window: usize,
    collector_threads: usize,
    agent_threads: usize,
) -> anyhow::Result<Vec<String>> {
    let mut failures = Vec::new();
    let config_path = dir.join("collector.toml");
    std::fs::write(
        &config_path,
        "data_dir = \"collector\"\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
         [ingest]\ncompact_every = \"1h\"\n",
    )?;
    let cfg = CollectorConfig::load(&config_path)?;
    std::fs::create_dir_all(&cfg.data_dir)?;
    ca::init_ca(
        &cfg.ca_dir(),
        &cfg.server_names,
        &ca::InitOptions::default(),
    )?;

    // One certificate and client configuration per agent.
    let t = Instant::now();
    let mut clients = Vec::with_capacity(agents);
    for i in 0..agents {
        let out = dir.join("agents").join(host_name(i));
        ca::issue_agent_cert(
            &cfg.ca_dir(),
            &customer_name(i),
            &host_name(i),
            &out,
            ca::Validity::days_from_now(2),
        )?;
        clients.push(aftercare_agent::tls::client_config(
            &out.join("ca.crt"),
            &out.join("agent.crt"),
            &out.join("agent.key"),
        )?);
    }
    let issue_time = t.elapsed();

    // The simulated clock: whole hours, ending more than an hour before now.
    let hours = u64::from(batches).div_ceil((HOUR_MS / INTERVAL_MS) as u64) as i64;
    let start = hour_start(now_millis()) - (hours + 2) * HOUR_MS;
    let plan = Arc::new(Plan {
        batches,
        window,
        start,
        max_frame: codec::DEFAULT_MAX_FRAME,
    });
    let expected_batches = agents as u64 * u64::from(batches);
    let expected_samples = expected_batches * SAMPLES_PER_BATCH as u64;

    let collector_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(collector_threads)
        .thread_name("collector-rt")
        .enable_all()
        .build()?;
    let agents_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(agent_threads)
        .thread_name("agents-rt")
        .enable_all()
        .build()?;
    let collector = {
        let _in = collector_rt.enter();
        Collector::bind(&cfg)?
    };
    let addr = collector.local_addr();
    let stop = CancellationToken::new();
    let serving = collector_rt.spawn(collector.run(stop.clone()));

    println!(
        "aftercare ingest benchmark through QUIC + mutual TLS + ingest tasks + writer + SQLite \
         (WAL, synchronous=FULL)"
    );
    println!(
        "{agents} agents (own certificate, connection and UDP socket each) x {batches} batches \
         x {SAMPLES_PER_BATCH} samples on a 10 s grid ({hours} simulated h, starting {}), \
         window {window} batches, writes of up to {} KiB; runtimes: collector {collector_threads} \
         threads, agents {agent_threads}, on {} CPUs",
        aftercare_shared::time_fmt::rfc3339(start),
        WRITE_BYTES / 1024,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "setup: {agents} agent certificates issued in {:.1} s; database {}",
        issue_time.as_secs_f64(),
        cfg.database
    );

    let link_cfg = Arc::new(AgentLinkConfig {
        address: addr.to_string(),
        server_name: "localhost".into(),
        ca: PathBuf::new(),
        cert: PathBuf::new(),
        key: PathBuf::new(),
        reconnect_min: Duration::from_millis(100),
        reconnect_max: Duration::from_secs(1),
        max_frame_bytes: codec::DEFAULT_MAX_FRAME,
        ack_timeout: ACK_PATIENCE,
    });

    struct Ingest {
        connect: Duration,
        wall: Duration,
        cpu_process: f64,
        cpu_machine: f64,
        cpu_groups: Vec<(&'static str, ThreadTimes)>,
        results: Vec<Result<AgentResult, String>>,
    }
    let ingest = agents_rt.block_on(async {
        let (ready_tx, mut ready_rx) = mpsc::channel::<()>(agents);
        let (go_tx, go_rx) = watch::channel(false);
        let t = Instant::now();
        let tasks: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(i, client)| {
                tokio::spawn(run_agent(
                    i,
                    client,
                    link_cfg.clone(),
                    addr,
                    plan.clone(),
                    ready_tx.clone(),
                    go_rx.clone(),
                ))
            })
            .collect();
        drop(ready_tx);
        // Every agent connected (or failed: its sender is gone without a word).
        let mut ready = 0;
        while ready_rx.recv().await.is_some() {
            ready += 1;
        }
        let connect = t.elapsed();
        if ready < agents {
            eprintln!("only {ready} of {agents} agents connected");
        }
        let cpu0 = process_cpu();
        let machine0 = machine_busy();
        let threads0 = thread_times();
        let t = Instant::now();
        let _ = go_tx.send(true);
        let mut results = Vec::with_capacity(agents);
        for task in tasks {
            results.push(
                task.await
                    .unwrap_or_else(|e| Err(format!("agent task: {e}"))),
            );
        }
        let wall = t.elapsed();
        let cpu_groups = times_by_group(&threads0, &thread_times());
        Ingest {
            connect,
            wall,
            cpu_process: process_cpu() - cpu0,
            cpu_machine: machine_busy() - machine0,
            cpu_groups,
            results,
        }
    });

    stop.cancel();
    match collector_rt.block_on(serving) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failures.push(format!("collector run: {e:#}")),
        Err(e) => failures.push(format!("collector task: {e}")),
    }
    agents_rt.shutdown_timeout(Duration::from_secs(5));
    collector_rt.shutdown_timeout(Duration::from_secs(5));

    let mut acked = 0u64;
    let mut latencies: Vec<u32> = Vec::with_capacity(expected_batches as usize);
    let (mut frame_bytes, mut writes) = (0u64, 0u64);
    let (mut udp_tx, mut udp_rx) = (quinn::UdpStats::default(), quinn::UdpStats::default());
    for r in ingest.results {
        match r {
            Ok(r) => {
                for (sum, one) in [(&mut udp_tx, r.udp_tx), (&mut udp_rx, r.udp_rx)] {
                    sum.datagrams += one.datagrams;
                    sum.bytes += one.bytes;
                    sum.ios += one.ios;
                }
                acked += r.acked;
                latencies.extend_from_slice(&r.latencies_us);
                frame_bytes += r.frame_bytes;
                writes += r.writes;
            }
            Err(e) => {
                if failures.len() < 20 {
                    failures.push(e);
                }
            }
        }
    }
    latencies.sort_unstable();
    let samples = acked * SAMPLES_PER_BATCH as u64;
    let secs = ingest.wall.as_secs_f64();
    let collector_cpu: f64 = ingest
        .cpu_groups
        .iter()
        .filter(|(g, _)| g.starts_with("collector"))
        .map(|(_, t)| t.cpu)
        .sum();

    println!();
    println!("end to end (acknowledged)");
    let row = |what: &str, v: String| println!("  {what:<50} {v:>14}");
    row("agents", thousands(agents as u64));
    row("batches acked", thousands(acked));
    row("samples acked", thousands(samples));
    row(
        "connect: handshakes + Hello/Welcome, all",
        format!("{:.2} s", ingest.connect.as_secs_f64()),
    );
    row(
        "wall time (first write to last Ack)",
        format!("{secs:.2} s"),
    );
    row(
        "samples/s",
        thousands((samples as f64 / secs).round() as u64),
    );
    row("batches/s", thousands((acked as f64 / secs).round() as u64));
    row(
        "ack latency p50",
        format!("{:.1} ms", percentile_us(&latencies, 0.5)),
    );
    row(
        "ack latency p99",
        format!("{:.1} ms", percentile_us(&latencies, 0.99)),
    );
    row(
        "ack latency max",
        format!("{:.1} ms", percentile_us(&latencies, 1.0)),
    );
    row(
        "frame bytes/sample on the wire (before QUIC)",
        format!("{:.2}", frame_bytes as f64 / samples.max(1) as f64),
    );
    row(
        "frames per write_all (mean)",
        format!("{:.1}", acked as f64 / writes.max(1) as f64),
    );
    let per_batch = |n: u64| format!("{:.2}", n as f64 / acked.max(1) as f64);
    row(
        "UDP datagrams agents -> collector, per batch",
        per_batch(udp_tx.datagrams),
    );
    row(
        "UDP bytes agents -> collector, per sample",
        format!("{:.2}", udp_tx.bytes as f64 / samples.max(1) as f64),
    );
    row(
        "UDP datagrams collector -> agents, per batch",
        per_batch(udp_rx.datagrams),
    );
    row(
        "UDP bytes collector -> agents, per batch",
        per_batch(udp_rx.bytes),
    );
    println!();
    println!(
        "CPU during the run. ONE process: the simulated agents and the collector share it, \
         so it is split by thread\n(/proc/self/task; run-queue = runnable but waiting for a \
         CPU)"
    );
    println!(
        "  {:<50} {:>8} {:>6} {:>12} {:>6}",
        "threads", "CPU s", "wall%", "run-queue s", "wall%"
    );
    for (g, t) in &ingest.cpu_groups {
        println!(
            "  {g:<50} {:>8.2} {:>6.0} {:>12.2} {:>6.0}",
            t.cpu,
            100.0 * t.cpu / secs,
            t.wait,
            100.0 * t.wait / secs
        );
    }
    row(
        "whole process (getrusage)",
        format!("{:.2} s", ingest.cpu_process),
    );
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    row(
        "other processes on this machine (/proc/stat)",
        format!(
            "{:.2} s",
            (ingest.cpu_machine - ingest.cpu_process).max(0.0)
        ),
    );
    row(
        "machine busy (all processes) / CPU available",
        format!("{:.0} %", 100.0 * ingest.cpu_machine / (secs * cpus)),
    );
    row(
        "collector CPU per million samples",
        format!("{:.2} s", collector_cpu / (samples.max(1) as f64 / 1e6)),
    );
    row(
        "collector CPU / wall (cores busy)",
        format!("{:.2}", collector_cpu / secs),
    );

    // The database, with the collector stopped: staging as ingest left it, then compacted;
    // bytes at rest measured on the SQLite file after giving free pages back.
    let mut store = aftercare_collector::store::open_sqlite(
        cfg.database
            .sqlite_path()
            .expect("the bench runs on SQLite"),
    )?;
    let before = store.stats()?;
    let now = start + (hours + 1) * HOUR_MS + COMPACT_GRACE_MS + MINUTE_MS;
    let t = Instant::now();
    let cs = store.compact(now)?;
    let compact_time = t.elapsed();
    let compacted = store.stats()?;
    store.checkpoint()?;
    store.release_free_pages()?;
    store.checkpoint()?;
    let rest = store.stats()?;

    println!();
    println!(
        "compaction afterwards: {} samples into {} host-hour blocks in {:.1} s ({} samples/s)",
        thousands(cs.samples),
        cs.blocks_written,
        compact_time.as_secs_f64(),
        thousands((cs.samples as f64 / compact_time.as_secs_f64()) as u64)
    );
    println!();
    println!("{:<52} {:>14} {:>12}", "at rest", "bytes", "bytes/sample");
    let size = |what: &str, bytes: u64, n: u64| {
        println!(
            "  {:<50} {:>14} {:>12.3}",
            what,
            thousands(bytes),
            bytes as f64 / n.max(1) as f64
        );
    };
    size(
        "staging before compaction (blob payload)",
        before.staged_bytes,
        before.staged_samples,
    );
    size(
        "file incl. WAL before compaction",
        before.file_bytes,
        before.staged_samples,
    );
    size(
        "blocks after compaction (payload)",
        compacted.block_bytes,
        compacted.block_samples,
    );
    size(
        "rollups (payload)",
        compacted.rollup_bytes,
        compacted.block_samples,
    );
    size(
        "live pages after compaction",
        rest.live_bytes,
        rest.block_samples,
    );
    size(
        "file incl. WAL, checkpointed, free pages released",
        rest.file_bytes,
        rest.block_samples,
    );

    // Correctness: every batch acknowledged once (checked per agent, in order), and the
    // store holds exactly what was sent.
    let mut check = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };
    check(
        acked == expected_batches,
        format!("{acked} batches acknowledged, expected {expected_batches}"),
    );
    check(
        before.hosts == agents as u64,
        format!("{} hosts in the store, expected {agents}", before.hosts),
    );
    check(
        before.staged_batches == expected_batches && before.staged_samples == expected_samples,
        format!(
            "staging holds {} batches / {} samples, expected {expected_batches} / {expected_samples}",
            before.staged_batches, before.staged_samples
        ),
    );
    check(
        cs.samples == expected_samples && cs.duplicates == 0,
        format!(
            "compaction moved {} samples ({} duplicates), expected {expected_samples}",
            cs.samples, cs.duplicates
        ),
    );
    check(
        rest.block_samples == expected_samples && rest.staged_samples == 0,
        format!(
            "blocks hold {} samples and staging {}, expected {expected_samples} and 0",
            rest.block_samples, rest.staged_samples
        ),
    );
    if failures.is_empty() {
        println!();
        println!(
            "verified: {} batches each acknowledged once and in order; the store holds exactly \
             {} samples",
            thousands(expected_batches),
            thousands(expected_samples)
        );
    }
    Ok(failures)
}

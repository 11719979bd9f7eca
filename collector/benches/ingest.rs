//! Ingest benchmark of the SQLite store: many hosts, each sending 100 realistic series every
//! 10 s, committed in groups as the collector's writer thread does, then compacted.
//!
//! `cargo bench -p aftercare-collector --bench ingest`
//!
//! Environment (all optional): `AFTERCARE_BENCH_HOSTS` (default 1000),
//! `AFTERCARE_BENCH_HOURS` (simulated hours, default 2), `AFTERCARE_BENCH_GROUP` (batches per
//! commit, default 250), `AFTERCARE_BENCH_DIR` (where the database goes; default a
//! temporary directory, removed at the end).
//!
//! The series of a host (see `HostSim::new`): CPU total and 8 cores (noisy percentages as
//! sysinfo gives them, f32), load averages (2 decimals), memory and swap (bytes, slowly
//! varying by pages), 5 filesystems (sizes constant, used bytes and inodes nearly constant),
//! 3 disks and 4 network interfaces (byte, operation and packet counters growing with
//! jitter; error and drop counters that rarely move), processes, uptime, temperatures, the
//! agent's own CPU and memory. Timestamps are 10 s apart, jittered by up to 5 ms.
//!
//! After compaction it times one findings pass of the built-in rules over every host (as
//! `serve` runs it, reading the store) and retention folding the hours' 5-minute rollups
//! into hourly ones.

use aftercare_collector::findings::engine::Engine;
use aftercare_collector::rules::RuleSet;
use aftercare_collector::sla::SlaPolicy;
use aftercare_collector::store::chunk::BlockReader;
use aftercare_collector::store::{
    BatchData, HOUR_MS, HostHello, MINUTE_MS, PendingBatch, Retention, Store, open_sqlite,
};
use aftercare_shared::consent::ConsentRecord;
use aftercare_shared::model::{HostFacts, LossReport, MetricKind, MetricSnapshot, Sample};
use aftercare_shared::protocol::{Identity, StreamId};
use std::time::{Duration, Instant};

mod common;
use common::*;

const INTERVAL_MS: i64 = 10_000;

/// How one series moves from tick to tick.
enum Gen {
    /// A percentage wandering around `base`, reported as f32 (sysinfo's cpu_usage).
    Pct {
        base: f64,
        v: f64,
        noise: f64,
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
    /// A counter growing by about `per_tick`, with relative jitter.
    Counter {
        v: f64,
        per_tick: f64,
        jitter: f64,
    },
    /// A counter that rarely moves (errors, drops).
    Rare {
        v: f64,
        p: f64,
    },
    /// A small integer gauge (process count).
    Small {
        v: f64,
    },
    /// Whole degrees.
    Temp {
        v: f64,
    },
    /// Seconds since boot.
    Uptime {
        boot: i64,
    },
}

impl Gen {
    fn next(&mut self, rng: &mut Rng, ts: i64) -> f64 {
        match self {
            Gen::Pct { base, v, noise } => {
                *v += 0.3 * (*base - *v) + *noise * rng.normal();
                *v = v.clamp(0.0, 100.0);
                f64::from(*v as f32)
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
            } => {
                *v += (*per_tick * (1.0 + *jitter * rng.normal()))
                    .max(0.0)
                    .round();
                *v
            }
            Gen::Rare { v, p } => {
                if rng.chance(*p) {
                    *v += 1.0;
                }
                *v
            }
            Gen::Small { v } => {
                if rng.chance(0.2) {
                    *v = (*v + (rng.normal() * 2.0).round()).max(1.0);
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
        }
    }
}

struct HostSim {
    rng: Rng,
    gens: Vec<Gen>,
}

impl HostSim {
    /// The simulation of one host, and its batch (rewritten in place at every tick).
    fn new(id: i64, seed: u64) -> (HostSim, PendingBatch) {
        let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xABCD);
        let mut series: Vec<(String, String, MetricKind, Gen)> = Vec::new();
        let gauge = MetricKind::Gauge;
        let counter = MetricKind::Counter;
        let busy = 5.0 + 50.0 * rng.unit();
        series.push(("cpu.usage_pct".into(), String::new(), gauge, pct(busy, 3.0)));
        for c in 0..8 {
            series.push((
                "cpu.usage_pct".into(),
                format!("core={c}"),
                gauge,
                pct(busy, 6.0),
            ));
        }
        for (n, l) in [
            ("load.1", busy / 20.0),
            ("load.5", busy / 20.0),
            ("load.15", busy / 20.0),
        ] {
            series.push((n.into(), String::new(), gauge, Gen::Load { v: l }));
        }
        let mem = 64.0 * (1u64 << 30) as f64;
        series.push((
            "mem.total_bytes".into(),
            String::new(),
            gauge,
            Gen::Const(mem),
        ));
        for (n, frac, p) in [
            ("mem.used_bytes", 0.4, 0.9),
            ("mem.available_bytes", 0.55, 0.9),
            ("mem.cached_bytes", 0.3, 0.5),
            ("mem.buffers_bytes", 0.02, 0.2),
        ] {
            let v = (mem * frac / 4096.0).round() * 4096.0;
            series.push((
                n.into(),
                String::new(),
                gauge,
                Gen::Pages { v, p, pages: 300.0 },
            ));
        }
        series.push((
            "swap.total_bytes".into(),
            String::new(),
            gauge,
            Gen::Const(8.0 * (1u64 << 30) as f64),
        ));
        series.push((
            "swap.used_bytes".into(),
            String::new(),
            gauge,
            Gen::Pages {
                v: 4096.0 * 1000.0,
                p: 0.02,
                pages: 5.0,
            },
        ));
        for mount in ["/", "/boot", "/var", "/home", "/data"] {
            let l = format!("mount={mount}");
            let size = ((1u64 << 30) as f64 * (10.0 + 500.0 * rng.unit())).round();
            series.push(("fs.total_bytes".into(), l.clone(), gauge, Gen::Const(size)));
            series.push((
                "fs.used_bytes".into(),
                l.clone(),
                gauge,
                Gen::Pages {
                    v: (size * 0.5 / 4096.0).round() * 4096.0,
                    p: 0.3,
                    pages: 50.0,
                },
            ));
            series.push((
                "fs.total_inodes".into(),
                l.clone(),
                gauge,
                Gen::Const(6_553_600.0),
            ));
            series.push((
                "fs.used_inodes".into(),
                l,
                gauge,
                Gen::Small { v: 120_000.0 },
            ));
        }
        for (dev, load) in [("sda", 1.0), ("sdb", 0.1), ("nvme0n1", 5.0)] {
            let l = format!("dev={dev}");
            for (n, per_tick) in [
                ("disk.read_bytes", 2e6 * load),
                ("disk.write_bytes", 4e6 * load),
                ("disk.reads", 50.0 * load),
                ("disk.writes", 120.0 * load),
                ("disk.io_ms", 300.0 * load),
            ] {
                series.push((
                    n.into(),
                    l.clone(),
                    counter,
                    Gen::Counter {
                        v: per_tick * 1e5,
                        per_tick,
                        jitter: 0.4,
                    },
                ));
            }
        }
        for (iface, load) in [
            ("eth0", 1.0),
            ("eth1", 0.05),
            ("lo", 0.3),
            ("docker0", 0.01),
        ] {
            let l = format!("if={iface}");
            for (n, per_tick) in [
                ("net.rx_bytes", 8e6 * load),
                ("net.tx_bytes", 5e6 * load),
                ("net.rx_packets", 9e3 * load),
                ("net.tx_packets", 7e3 * load),
            ] {
                series.push((
                    n.into(),
                    l.clone(),
                    counter,
                    Gen::Counter {
                        v: per_tick * 1e5,
                        per_tick,
                        jitter: 0.3,
                    },
                ));
            }
            for (n, p) in [
                ("net.rx_errors", 0.001),
                ("net.tx_errors", 0.0),
                ("net.rx_dropped", 0.01),
                ("net.tx_dropped", 0.0),
            ] {
                series.push((n.into(), l.clone(), counter, Gen::Rare { v: 3.0, p }));
            }
        }
        series.push((
            "procs.count".into(),
            String::new(),
            gauge,
            Gen::Small { v: 300.0 },
        ));
        series.push((
            "procs.threads".into(),
            String::new(),
            gauge,
            Gen::Small { v: 1500.0 },
        ));
        let boot = T0 - 40 * 86_400_000;
        series.push((
            "system.uptime_s".into(),
            String::new(),
            gauge,
            Gen::Uptime { boot },
        ));
        series.push((
            "system.boot_time".into(),
            String::new(),
            gauge,
            Gen::Const((boot / 1000) as f64),
        ));
        for s in 0..4 {
            series.push((
                "temp.celsius".into(),
                format!("sensor=core{s}"),
                gauge,
                Gen::Temp { v: 45.0 },
            ));
        }
        series.push((
            "agent.cpu_pct".into(),
            String::new(),
            gauge,
            pct(0.02, 0.01),
        ));
        series.push((
            "agent.rss_bytes".into(),
            String::new(),
            gauge,
            Gen::Pages {
                v: 4096.0 * 1000.0,
                p: 0.05,
                pages: 2.0,
            },
        ));
        series.push((
            "cpu.context_switches".into(),
            String::new(),
            counter,
            Gen::Counter {
                v: 1e9,
                per_tick: 5e4,
                jitter: 0.3,
            },
        ));
        series.push((
            "cpu.interrupts".into(),
            String::new(),
            counter,
            Gen::Counter {
                v: 1e9,
                per_tick: 3e4,
                jitter: 0.3,
            },
        ));
        series.push((
            "procs.forks".into(),
            String::new(),
            counter,
            Gen::Counter {
                v: 1e6,
                per_tick: 20.0,
                jitter: 0.5,
            },
        ));
        series.push((
            "net.tcp_established".into(),
            String::new(),
            gauge,
            Gen::Small { v: 80.0 },
        ));
        assert_eq!(series.len(), 100);

        let mut gens = Vec::new();
        let mut samples = Vec::new();
        for (name, labels, kind, g) in series {
            samples.push(Sample {
                name,
                labels,
                kind,
                value: 0.0,
            });
            gens.push(g);
        }
        let batch = PendingBatch {
            host: id,
            stream: StreamId::Metrics,
            seq: 0,
            received_at: 0,
            data: BatchData::Metrics(MetricSnapshot { ts: 0, samples }),
            loss: LossReport::default(),
        };
        (HostSim { rng, gens }, batch)
    }

    /// Move to tick `i`, rewriting the batch in place (no allocation per tick).
    fn tick(&mut self, b: &mut PendingBatch, i: u64, phase: i64) {
        let ts = T0 + i as i64 * INTERVAL_MS + phase + (self.rng.next() % 6) as i64;
        b.seq = i + 1;
        b.received_at = ts + 40;
        let BatchData::Metrics(snapshot) = &mut b.data else {
            unreachable!("the bench builds metrics batches")
        };
        snapshot.ts = ts;
        for (s, g) in snapshot.samples.iter_mut().zip(&mut self.gens) {
            s.value = g.next(&mut self.rng, ts);
        }
    }
}

fn pct(base: f64, noise: f64) -> Gen {
    Gen::Pct {
        base,
        v: base,
        noise,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let hosts = env_or("AFTERCARE_BENCH_HOSTS", 1000) as usize;
    let hours = env_or("AFTERCARE_BENCH_HOURS", 2);
    let group = env_or("AFTERCARE_BENCH_GROUP", 250).max(1) as usize;
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = std::env::var_os("AFTERCARE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let path = dir.join("bench.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let mut store = open_sqlite(&path).expect("open the database");

    let facts = HostFacts::default();
    let consent = ConsentRecord::default();
    let mut sims = Vec::with_capacity(hosts);
    let mut batches = Vec::with_capacity(hosts);
    for h in 0..hosts {
        let identity = Identity {
            customer: format!("customer{}", h / 50),
            host: format!("host{h:05}"),
        };
        let hello = HostHello {
            identity: &identity,
            facts: &facts,
            agent_version: "bench",
            consent: &consent,
            interval_ms: INTERVAL_MS as u64,
            cert_expires: None,
        };
        let id = store.register_host(&hello, T0).expect("register");
        let (sim, batch) = HostSim::new(id, h as u64);
        sims.push(sim);
        batches.push(batch);
    }
    let ticks = hours * HOUR_MS as u64 / INTERVAL_MS as u64;
    let total_batches = ticks * hosts as u64;
    let total_samples = total_batches * 100;
    println!("aftercare store ingest benchmark: SQLite, WAL, synchronous=FULL");
    println!(
        "simulated: {hosts} hosts x 100 series every 10 s for {hours} h = {} samples in {} batches, {group} batches per commit",
        thousands(total_samples),
        thousands(total_batches)
    );
    println!("database: {}", path.display());

    // Commit, tick by tick, hosts in groups, as the writer thread would.
    let mut latencies = Vec::new();
    let mut commit_time = Duration::ZERO;
    let mut generate_time = Duration::ZERO;
    let wall = Instant::now();
    let mut last_report = Instant::now();
    for i in 0..ticks {
        let t = Instant::now();
        for (h, (sim, b)) in sims.iter_mut().zip(&mut batches).enumerate() {
            // Hosts tick at different moments within the interval.
            sim.tick(b, i, (h as i64 * 7919) % INTERVAL_MS);
        }
        generate_time += t.elapsed();
        for group in batches.chunks(group) {
            let t = Instant::now();
            store.commit(group).expect("commit");
            let d = t.elapsed();
            commit_time += d;
            latencies.push(d);
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  ... tick {i}/{ticks}, {} samples/s",
                per_s((i + 1) * hosts as u64 * 100, commit_time)
            );
            last_report = Instant::now();
        }
    }
    let commit_wall = wall.elapsed();
    let before = store.stats().expect("stats");

    // Compact everything: all simulated hours are closed at this time.
    let now = T0 + hours as i64 * HOUR_MS + 11 * MINUTE_MS;
    let t = Instant::now();
    let cs = store.compact(now).expect("compact");
    let compact_time = t.elapsed();

    // Reads: one host's hour from a block, its newest values.
    let t = Instant::now();
    let q = store
        .query("host00000", None, T0, T0 + HOUR_MS)
        .expect("query");
    let query_time = t.elapsed();
    let t = Instant::now();
    let latest = store.latest("host00000").expect("latest");
    let latest_time = t.elapsed();
    assert_eq!(q.len(), 100);
    assert_eq!(latest.len(), 100);

    store.checkpoint().expect("checkpoint");
    let after = store.stats().expect("stats");
    store.release_free_pages().expect("release free pages");
    store.checkpoint().expect("checkpoint");
    let trimmed = store.stats().expect("stats");

    latencies.sort();
    println!();
    println!(
        "{:<34} {:>14} {:>10} {:>12}",
        "phase", "samples", "seconds", "samples/s"
    );
    println!(
        "{:<34} {:>14} {:>10.1} {:>12}",
        "commit (durable, in commit())",
        thousands(total_samples),
        commit_time.as_secs_f64(),
        per_s(total_samples, commit_time)
    );
    println!(
        "{:<34} {:>14} {:>10.1} {:>12}",
        "  wall incl. generating data",
        thousands(total_samples),
        commit_wall.as_secs_f64(),
        per_s(total_samples, commit_wall)
    );
    println!(
        "{:<34} {:>14} {:>10.1} {:>12}",
        "compact (blocks + rollups)",
        thousands(cs.samples),
        compact_time.as_secs_f64(),
        per_s(cs.samples, compact_time)
    );
    println!(
        "commit latency per group of {group}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} commits); data generation {:.1} s",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
        latencies.len(),
        generate_time.as_secs_f64()
    );
    println!(
        "compaction: {} host-hour blocks, {} duplicates; read one host-hour (100 series) {:.1} ms, latest values {:.1} ms",
        cs.blocks_written,
        cs.duplicates,
        query_time.as_secs_f64() * 1e3,
        latest_time.as_secs_f64() * 1e3
    );

    let n = after.block_samples.max(1) as f64;
    println!();
    println!("{:<44} {:>14} {:>12}", "at rest", "bytes", "bytes/sample");
    let row = |what: &str, bytes: u64, samples: f64| {
        println!(
            "{:<44} {:>14} {:>12.3}",
            what,
            thousands(bytes),
            bytes as f64 / samples
        );
    };
    row(
        "staging before compaction (blob payload)",
        before.staged_bytes,
        before.staged_samples.max(1) as f64,
    );
    row(
        "file before compaction (incl. WAL)",
        before.file_bytes,
        before.staged_samples.max(1) as f64,
    );
    row("blocks: compressed payload", after.block_bytes, n);
    row("rollups: 5-min aggregates payload", after.rollup_bytes, n);
    row("live pages after compaction", after.live_bytes, n);
    row("file incl. WAL after checkpoint", after.file_bytes, n);
    row("file after releasing free pages", trimmed.file_bytes, n);

    // The findings engine as `serve` runs it: one pass of the built-in rules over every
    // host, reading the store (the first pass, from an empty state).
    let mut engine = Engine::new(
        RuleSet::builtin(),
        SlaPolicy::default(),
        Duration::from_secs(86_400),
        &mut store,
    );
    let t = Instant::now();
    let pass = engine.pass(&mut store, now, None).expect("findings pass");
    let pass_time = t.elapsed();
    println!();
    println!(
        "findings pass: {} built-in rules over {} hosts read from the store in {:.2} s ({:.0} us per host); {} opened, {} read errors",
        RuleSet::builtin().rules().len(),
        pass.hosts,
        pass_time.as_secs_f64(),
        pass_time.as_secs_f64() * 1e6 / pass.hosts.max(1) as f64,
        pass.opened,
        pass.errors.len()
    );

    // Retention: the same hours 91 days later, their 5-minute rollups folded into hourly
    // ones (raw blocks past 14 days dropped).
    let later = now + 91 * 24 * HOUR_MS;
    let t = Instant::now();
    let mut folded = 0;
    loop {
        let r = store
            .retain_some(later, &Retention::default(), 1000)
            .expect("retention");
        folded += r.folded_hours;
        if !r.more {
            break;
        }
    }
    let fold_time = t.elapsed();
    let hourly = store.stats().expect("stats");
    println!(
        "retention: {folded} host-hours folded to hourly in {:.2} s ({:.1} ns per sample); hourly rollups {} bytes = {:.4} bytes/sample (5-min: {:.3})",
        fold_time.as_secs_f64(),
        fold_time.as_nanos() as f64 / n,
        thousands(hourly.rollup_bytes),
        hourly.rollup_bytes as f64 / n,
        after.rollup_bytes as f64 / n
    );

    compare_layouts(&path);
}

/// Payload of the host-hour blocks against one pco chunk per series and hour (timestamps and
/// values each compressed per series, the layout PROBES.md measured), on a few blocks.
fn compare_layouts(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).expect("open for comparison");
    let mut stmt = conn
        .prepare("SELECT data FROM chunks ORDER BY random() LIMIT 50")
        .expect("prepare");
    let blobs: Vec<Vec<u8>> = stmt
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let config = pco::ChunkConfig::default();
    let (mut block_bytes, mut per_series_bytes, mut samples) = (0usize, 0usize, 0usize);
    for b in &blobs {
        block_bytes += b.len();
        let reader = BlockReader::parse(b).expect("block");
        for s in reader.decode_all().expect("decode") {
            let ts: Vec<i64> = s.points.iter().map(|p| p.0).collect();
            let vs: Vec<f64> = s.points.iter().map(|p| p.1).collect();
            samples += ts.len();
            per_series_bytes += pco::standalone::simple_compress(&ts, &config)
                .expect("pco")
                .len()
                + pco::standalone::simple_compress(&vs, &config)
                    .expect("pco")
                    .len();
        }
    }
    if samples > 0 {
        println!();
        println!(
            "layout check on {} host-hour blocks (payload only):",
            blobs.len()
        );
        let per = |bytes: usize| bytes as f64 / samples as f64;
        println!(
            "  {:<52} {:.3} bytes/sample",
            "host-hour block (timestamps shared by all series)",
            per(block_bytes)
        );
        println!(
            "  {:<52} {:.3} bytes/sample",
            "one pco chunk per series-hour (own timestamps)",
            per(per_series_bytes)
        );
    }
}

//! A simulated agent's metrics: 100 series with the names, kinds and labels of the real
//! agent, moving as real hosts' do (so bytes at rest are realistic), and its Hello.

use crate::common::Rng;
use aftercare_shared::consent::{ConsentRecord, Scope};
use aftercare_shared::logblock;
use aftercare_shared::model::{
    HostFacts, LogRecord, LossReport, MetricKind, MetricSnapshot, Sample, Severity, labels,
};
use aftercare_shared::protocol::{AgentMsg, Batch, Hello, PROTOCOL_VERSION, Payload, seq};

pub const INTERVAL_MS: i64 = 10_000;
pub const SAMPLES_PER_BATCH: usize = 100;
/// The sequence epoch every simulated agent uses (one per run: agents never restart).
pub const EPOCH: u32 = 1;

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
pub struct AgentSim {
    pub rng: Rng,
    gens: Vec<Gen>,
    msg: AgentMsg,
}

impl AgentSim {
    pub fn new(seed: u64, start: i64) -> AgentSim {
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

    /// Log batch `i` (0-based; sequence `i + 1` of the logs stream) carrying `block`.
    pub fn log_burst(i: u32, block: &[u8]) -> AgentMsg {
        AgentMsg::Batch(Batch {
            seq: seq(EPOCH, i + 1),
            claimed_host: None,
            payload: Payload::log_block(block.to_vec(), LossReport::default()),
        })
    }

    /// The batch of tick `i` at `ts` (rewritten in place: no allocation per tick).
    pub fn tick(&mut self, i: u32, ts: i64) -> &AgentMsg {
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

/// Log bursts: a few compressed blocks of `lines` realistic lines each (sshd, nginx,
/// kernel, cron, an application), made once and sent round robin, as the agent sends them
/// (one compressed block per batch).
pub struct LogBursts {
    pub lines: u32,
    blocks: Vec<Vec<u8>>,
}

impl LogBursts {
    /// Blocks made; agents start at different ones.
    const BLOCKS: usize = 8;

    pub fn new(lines: u32, start: i64) -> Result<LogBursts, String> {
        let mut rng = Rng(0x5EED_1065);
        let mut blocks = Vec::with_capacity(Self::BLOCKS);
        let mut offset = 0u64;
        for b in 0..Self::BLOCKS {
            let records: Vec<LogRecord> = (0..lines)
                .map(|i| {
                    let at = start + (b as i64 * i64::from(lines) + i64::from(i)) * 5;
                    let (severity, line) = log_line(&mut rng, at);
                    let r = LogRecord {
                        source: "system".into(),
                        file: "/var/log/syslog".into(),
                        offset,
                        read_at: at + 3,
                        ts: Some(at),
                        severity,
                        line,
                        part: 0,
                    };
                    offset += r.line.len() as u64 + 1;
                    r
                })
                .collect();
            let plain = logblock::from_records(&records);
            blocks.push(logblock::compress(&plain).map_err(|e| format!("log block: {e}"))?);
        }
        Ok(LogBursts { lines, blocks })
    }

    pub fn block(&self, n: usize) -> &[u8] {
        &self.blocks[n % self.blocks.len()]
    }
}

/// One syslog-style line of about 100–250 bytes, and its severity.
fn log_line(rng: &mut Rng, at: i64) -> (Severity, String) {
    let t = at.rem_euclid(86_400_000);
    let stamp = format!(
        "Nov 30 {:02}:{:02}:{:02}",
        t / 3_600_000,
        t / 60_000 % 60,
        t / 1000 % 60
    );
    let ip = format!(
        "10.{}.{}.{}",
        rng.next() % 256,
        rng.next() % 256,
        1 + rng.next() % 254
    );
    let pid = 1000 + rng.next() % 60_000;
    const PATHS: [&str; 6] = [
        "/api/v1/orders",
        "/api/v1/orders/search",
        "/static/app.js",
        "/login",
        "/api/v1/inventory/items",
        "/healthz",
    ];
    const USERS: [&str; 4] = ["deploy", "backup", "root", "monitor"];
    let roll = rng.next() % 100;
    match roll {
        0..=54 => {
            let status = if rng.chance(0.02) { 500 } else { 200 };
            let sev = if status == 500 {
                Severity::Error
            } else {
                Severity::Info
            };
            (
                sev,
                format!(
                    "{stamp} web01 nginx[{pid}]: {ip} - - \"GET {} HTTP/1.1\" {status} {} \"-\" \"Mozilla/5.0 (X11; Linux x86_64)\" rt={:.3}",
                    PATHS[(rng.next() % 6) as usize],
                    200 + rng.next() % 40_000,
                    rng.unit() * 0.4
                ),
            )
        }
        55..=74 => (
            Severity::Info,
            format!(
                "{stamp} web01 sshd[{pid}]: Accepted publickey for {} from {ip} port {} ssh2: ED25519 SHA256:{:016x}",
                USERS[(rng.next() % 4) as usize],
                30_000 + rng.next() % 30_000,
                rng.next()
            ),
        ),
        75..=84 => (
            Severity::Info,
            format!(
                "{stamp} web01 CRON[{pid}]: ({}) CMD (/usr/local/bin/rotate-reports --quiet)",
                USERS[(rng.next() % 4) as usize]
            ),
        ),
        85..=94 => (
            Severity::Warning,
            format!(
                "{stamp} web01 orders-api[{pid}]: WARN slow query took {} ms: SELECT * FROM orders WHERE customer_id = {}",
                300 + rng.next() % 5000,
                rng.next() % 100_000
            ),
        ),
        _ => (
            Severity::Warning,
            format!(
                "{stamp} web01 kernel: [{:.6}] IPv4: martian source {ip} from 10.0.0.1, on dev eth0",
                rng.unit() * 1e6
            ),
        ),
    }
}

pub fn hello(name: &str) -> Hello {
    let mut consent = ConsentRecord::default();
    consent
        .grant_scopes(
            &[Scope::Metrics, Scope::Logs],
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

pub fn host_name(index: usize) -> String {
    format!("host{index:05}")
}

pub fn customer_name(index: usize) -> String {
    format!("customer{:03}", index / 50)
}

//! Exactly once under faults, with the real binaries on 127.0.0.1: 200,000 numbered lines
//! written while the log is rotated by rename and by copytruncate, the agent is killed
//! with SIGKILL at random moments and started again, and the collector is killed and
//! restarted; then every line is in the store exactly once. And the same through a
//! collector outage: the spool fills while it is away and drains when it is back.

use aftercare_shared::consent::Scope;
use aftercare_tests::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const HOST: &str = "acme/db1";

/// Small deterministic generator; the seed is printed so a failure can be replayed.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Line numbers found in the store, and how often each.
fn stored_numbers(f: &Fixture, total: usize) -> (Vec<u32>, usize) {
    let mut seen = vec![0u32; total];
    let mut foreign = 0;
    for r in stored_logs(f, HOST) {
        match r
            .line
            .split_once("n=")
            .and_then(|(_, rest)| rest.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n < total)
        {
            Some(n) => seen[n] += 1,
            None => foreign += 1,
        }
    }
    (seen, foreign)
}

fn logs_of(f: &Fixture) -> String {
    let mut out = String::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    names.sort();
    for p in names {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        out.push_str(&format!("\n--- {} (last lines)\n", p.display()));
        for l in tail.into_iter().rev() {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Wait until every line is stored, then check each is there exactly once.
fn expect_exactly_once(f: &Fixture, total: usize, within: Duration) {
    let end = Instant::now() + within;
    loop {
        let (seen, foreign) = stored_numbers(f, total);
        let missing = seen.iter().filter(|&&n| n == 0).count();
        let twice: Vec<usize> = (0..total).filter(|&i| seen[i] > 1).take(10).collect();
        assert!(
            twice.is_empty(),
            "lines stored more than once (first: {twice:?}){}",
            logs_of(f)
        );
        assert_eq!(foreign, 0, "records that are not ours in the store");
        if missing == 0 {
            return;
        }
        if Instant::now() > end {
            let first: Vec<usize> = (0..total).filter(|&i| seen[i] == 0).take(10).collect();
            panic!(
                "{missing} of {total} lines never arrived (first: {first:?}){}",
                logs_of(f)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The writer: `total` numbered lines of ~120 bytes into `dir/app.log`, in bursts, rotating
/// every `rotate_every` lines, alternately by rename (the application reopens) and by
/// copytruncate (the application keeps its O_APPEND descriptor). Like logrotate with a
/// paused writer, nothing is written between copy and truncate.
fn write_lines(
    dir: &Path,
    total: usize,
    burst: usize,
    pause: Duration,
    rotate_every: usize,
    written: &AtomicU64,
) {
    let live = dir.join("app.log");
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&live)
            .unwrap()
    };
    let mut f = open();
    let mut rotations = 0;
    let mut buf = String::new();
    for n in 0..total {
        buf.push_str(&format!(
            "2026-11-22T10:00:00.{:06}Z INFO app[42]: request n={n} done status=200 bytes={} path=/api/v1/items\n",
            n % 1_000_000,
            n * 7 % 9973
        ));
        if (n + 1) % burst == 0 || n + 1 == total {
            f.write_all(buf.as_bytes()).unwrap();
            buf.clear();
            written.store(n as u64 + 1, Ordering::Relaxed);
            std::thread::sleep(pause);
        }
        if (n + 1) % rotate_every == 0 && n + 1 < total {
            rotations += 1;
            let rotated = dir.join(format!("app.log.{rotations}"));
            if rotations % 2 == 1 {
                std::fs::rename(&live, &rotated).unwrap();
                f = open();
            } else {
                std::fs::copy(&live, &rotated).unwrap();
                f.set_len(0).unwrap();
            }
        }
    }
}

struct Setup {
    f: Fixture,
    cfg_arg: String,
    agent_cfg: String,
    logs_dir: PathBuf,
}

fn setup() -> Setup {
    let port = free_udp_port();
    let f = Fixture::with_listen(&format!("127.0.0.1:{port}"));
    let cfg_arg = f.config_path().to_str().unwrap().to_string();
    let certs = f.issue("a1", "acme", "db1");
    f.agent_config("a1", &certs, format!("127.0.0.1:{port}").parse().unwrap());
    let logs_dir = f.dir.path().join("var-log");
    std::fs::create_dir(&logs_dir).unwrap();
    let cfg = add_log_source(
        &f,
        "a1",
        &format!(
            "name = \"app\"\npaths = [\"{}/app.log*\"]\nstart_at = \"beginning\"",
            logs_dir.display()
        ),
    );
    grant(&cfg, &[Scope::Metrics, Scope::Logs]);
    let agent_cfg = f.agent_config_path("a1").to_str().unwrap().to_string();
    Setup {
        f,
        cfg_arg,
        agent_cfg,
        logs_dir,
    }
}

#[test]
fn every_line_once_through_rotation_agent_kills_and_a_collector_restart() {
    const TOTAL: usize = 200_000;
    let s = setup();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let mut rng = XorShift(seed);
    let log = |n: String| s.f.dir.path().join(n);
    let mut collector = Proc::spawn(
        "aftercare-collector",
        &["--config", &s.cfg_arg, "serve"],
        &log("collector-0.log".into()),
    );
    let agent_args = ["--config", s.agent_cfg.as_str(), "run"];
    let mut agent = Proc::spawn("aftercare-agent", &agent_args, &log("agent-00.log".into()));

    let written = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (dir, written, done) = (s.logs_dir.clone(), written.clone(), done.clone());
        std::thread::spawn(move || {
            // ~12 s of writing: 400 bursts of 500 lines, 30 ms apart.
            write_lines(
                &dir,
                TOTAL,
                500,
                Duration::from_millis(30),
                30_000,
                &written,
            );
            done.store(true, Ordering::Relaxed);
        })
    };

    // While the writer runs: SIGKILL the agent at random moments, restart it at once; kill
    // the collector once, midway, and bring it back a second later.
    let mut kills = 0;
    let mut collector_restarted = false;
    let started = Instant::now();
    while !done.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(300 + rng.below(1500)));
        agent.kill9();
        kills += 1;
        agent = Proc::spawn(
            "aftercare-agent",
            &agent_args,
            &log(format!("agent-{kills:02}.log")),
        );
        if !collector_restarted && written.load(Ordering::Relaxed) > TOTAL as u64 / 2 {
            collector.kill9();
            std::thread::sleep(Duration::from_secs(1));
            collector = Proc::spawn(
                "aftercare-collector",
                &["--config", &s.cfg_arg, "serve"],
                &log("collector-1.log".into()),
            );
            collector_restarted = true;
        }
    }
    writer.join().unwrap();
    assert!(kills >= 3, "the agent was killed only {kills} times");
    assert!(collector_restarted);
    expect_exactly_once(&s.f, TOTAL, Duration::from_secs(90));
    eprintln!("{kills} agent kills, 1 collector restart: {TOTAL} lines exactly once");
    assert!(agent.terminate(), "the agent stops cleanly");
    assert!(collector.terminate(), "the collector stops cleanly");
}

#[test]
fn a_collector_outage_fills_the_spool_and_it_drains_exactly_once() {
    const TOTAL: usize = 60_000;
    let s = setup();
    // Small segments, so that the compressed backlog spans many and draining deletes them.
    let mut cfg = std::fs::read_to_string(&s.agent_cfg).unwrap();
    cfg.push_str("\n[spool]\nsegment_bytes = 16384\n");
    std::fs::write(&s.agent_cfg, cfg).unwrap();
    let log = |n: &str| s.f.dir.path().join(n);
    let agent_args = ["--config", s.agent_cfg.as_str(), "run"];
    // No collector: everything written goes to the spool.
    let mut agent = Proc::spawn("aftercare-agent", &agent_args, &log("agent-1.log"));
    let written = AtomicU64::new(0);
    write_lines(
        &s.logs_dir,
        TOTAL,
        1000,
        Duration::from_millis(20),
        25_000,
        &written,
    );
    let spool = s.f.dir.path().join("a1-state/spool");
    let spool_bytes = || -> u64 {
        std::fs::read_dir(&spool)
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    // Every line read and held on disk, as `spool verify` counts them: (lines, unacked).
    let spooled_lines = || -> (u64, u64) {
        let out = std::process::Command::new(bin("aftercare-agent"))
            .args(["--config", s.agent_cfg.as_str(), "spool", "verify"])
            .output()
            .expect("run spool verify");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("logs "))
            .unwrap_or_default();
        let number_after = |key: &str| -> u64 {
            line.split(key)
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        (number_after("lines "), number_after(" ("))
    };
    let end = Instant::now() + PATIENCE;
    while spooled_lines() != (TOTAL as u64, TOTAL as u64) {
        assert!(
            Instant::now() < end,
            "spool holds (lines, unacked) {:?} of {TOTAL} ({} bytes){}",
            spooled_lines(),
            spool_bytes(),
            logs_of(&s.f)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let full = spool_bytes();
    assert!(full > 8 * 16384, "the backlog spans segments: {full} bytes");
    // A restart while offline keeps it all.
    agent.kill9();
    let mut agent = Proc::spawn("aftercare-agent", &agent_args, &log("agent-2.log"));
    let mut collector = Proc::spawn(
        "aftercare-collector",
        &["--config", &s.cfg_arg, "serve"],
        &log("collector.log"),
    );
    expect_exactly_once(&s.f, TOTAL, Duration::from_secs(60));
    // Drained: acknowledged segments are deleted (the newest of each stream stays for
    // appends). Not `spool verify`'s unacked count: the agent saves its acknowledgement
    // marks lazily, so an outside reader sees them late.
    let end = Instant::now() + PATIENCE;
    while spool_bytes() > 4 * 16384 {
        assert!(
            Instant::now() < end,
            "spool not drained: {} of {full} bytes",
            spool_bytes()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(agent.terminate());
    assert!(collector.terminate());
}

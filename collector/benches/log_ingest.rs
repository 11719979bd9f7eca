//! Log ingest benchmark of the SQLite store: realistic syslog lines (~200 bytes) in batches,
//! committed in groups as the collector's writer thread does; then bytes per stored line
//! and how fast reads and counts (`logs --count`) answer. Batches are log blocks
//! (`aftercare_shared::logblock`), as agents send them since protocol version 2; the bench
//! also times the agent's part (encoding and zstd) and ingest's (reading a block through
//! before it is committed) on their own.
//!
//! `cargo bench -p aftercare-collector --bench log_ingest`
//!
//! Environment (all optional): `AFTERCARE_BENCH_LINES` (a file of lines; by default
//! `../shared/bench-peers/gen_lines.py` writes one into the temporary directory),
//! `AFTERCARE_BENCH_N` (lines, default 2,000,000), `AFTERCARE_BENCH_BATCH` (lines per
//! batch, default 1000), `AFTERCARE_BENCH_GROUP` (batches per commit, default 20),
//! `AFTERCARE_BENCH_HOSTS` (default 10), `AFTERCARE_BENCH_DIR` (where the database goes;
//! default a temporary directory, removed at the end).

use aftercare_collector::store::{
    BatchData, HostHello, LogBlock, LogFilter, PendingBatch, Store, open_sqlite,
    open_sqlite_readonly,
};
use aftercare_shared::consent::ConsentRecord;
use aftercare_shared::logblock;
use aftercare_shared::model::{HostFacts, LogRecord, LossReport, Severity};
use aftercare_shared::protocol::{Identity, StreamId};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// Lines of one host are this far apart (gen_lines.py's are ~5 ms).
const STEP_MS: i64 = 5;

fn lines(n: usize, dir: &Path) -> Vec<String> {
    let file = match std::env::var_os("AFTERCARE_BENCH_LINES") {
        Some(f) => PathBuf::from(f),
        None => {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench-peers/gen_lines.py");
            let out = dir.join("lines.txt");
            let ok = std::process::Command::new("python3")
                .arg(&script)
                .arg(n.to_string())
                .arg(&out)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "cannot run {}: set AFTERCARE_BENCH_LINES to a file of log lines",
                script.display()
            );
            out
        }
    };
    let text = std::fs::read_to_string(&file).expect("read the lines");
    let mut v: Vec<String> = text.lines().map(str::to_string).collect();
    assert!(!v.is_empty(), "{} holds no lines", file.display());
    // Fewer lines than asked for are reused.
    let have = v.len();
    for i in have..n {
        v.push(v[i % have].clone());
    }
    v.truncate(n);
    v
}

/// Most lines are info; nginx 500s are errors and martian sources warnings.
fn severity(line: &str) -> Severity {
    if line.contains("\" 500 ") {
        Severity::Error
    } else if line.contains("martian") {
        Severity::Warning
    } else {
        Severity::Info
    }
}

fn main() {
    let n = env_or("AFTERCARE_BENCH_N", 2_000_000) as usize;
    let per_batch = env_or("AFTERCARE_BENCH_BATCH", 1000).max(1) as usize;
    let group = env_or("AFTERCARE_BENCH_GROUP", 20).max(1) as usize;
    let hosts = env_or("AFTERCARE_BENCH_HOSTS", 10).max(1) as usize;
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = std::env::var_os("AFTERCARE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let path = dir.join("logs-bench.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let lines = lines(n, tmp.path());
    let line_bytes: u64 = lines.iter().map(|l| l.len() as u64).sum();

    let mut store = open_sqlite(&path).expect("open the database");
    let facts = HostFacts::default();
    let consent = ConsentRecord::default();
    let ids: Vec<_> = (0..hosts)
        .map(|h| {
            let identity = Identity {
                customer: "acme".into(),
                host: format!("host{h:03}"),
            };
            let hello = HostHello {
                identity: &identity,
                facts: &facts,
                agent_version: "bench",
                consent: &consent,
                interval_ms: 10_000,
                cert_expires: None,
            };
            store.register_host(&hello, T0).expect("register")
        })
        .collect();

    // Batches go to the hosts in turn; each host's lines follow on in time.
    let mut batches = Vec::with_capacity(n / per_batch + 1);
    let mut next_line = vec![0i64; hosts];
    for (b, chunk) in lines.chunks(per_batch).enumerate() {
        let h = b % hosts;
        let records = chunk
            .iter()
            .map(|line| {
                let k = next_line[h];
                next_line[h] += 1;
                let ts = T0 + k * STEP_MS;
                LogRecord {
                    source: "syslog".into(),
                    file: "/var/log/syslog".into(),
                    offset: k as u64 * 200,
                    read_at: ts + 50,
                    ts: Some(ts),
                    severity: severity(line),
                    line: line.clone(),
                    part: 0,
                }
            })
            .collect();
        batches.push(PendingBatch {
            host: ids[h],
            stream: StreamId::Logs,
            seq: (b / hosts) as u64 + 1,
            received_at: T0,
            data: BatchData::Logs(records),
            loss: LossReport::default(),
        });
    }
    drop(lines);
    println!("aftercare store log ingest benchmark: SQLite, WAL, synchronous=FULL");
    println!(
        "{} lines ({:.0} bytes on average) in {} batches of {per_batch} from {hosts} hosts, {group} batches per commit",
        thousands(n as u64),
        line_bytes as f64 / n as f64,
        thousands(batches.len() as u64)
    );

    // The agent's part: each batch into a block, then compressed.
    let mut plain_bytes = 0u64;
    let mut packed_bytes = 0u64;
    let mut encode_plain = Duration::ZERO;
    let mut encode_packed = Duration::ZERO;
    for b in &mut batches {
        let BatchData::Logs(records) = &b.data else {
            unreachable!()
        };
        let t = Instant::now();
        let plain = logblock::from_records(records);
        encode_plain += t.elapsed();
        let t = Instant::now();
        let block = logblock::compress(&plain).expect("compress");
        encode_packed += t.elapsed();
        plain_bytes += plain.len() as u64;
        packed_bytes += block.len() as u64;
        // What ingest then does before handing the batch to the writer.
        b.data = BatchData::LogBlock(LogBlock {
            block,
            summary: logblock::summarize(&plain)
                .expect("block")
                .expect("records"),
        });
    }
    let mut unpacker = logblock::Unpacker::new().expect("zstd");
    let t = Instant::now();
    for b in &batches {
        let BatchData::LogBlock(l) = &b.data else {
            unreachable!()
        };
        let plain = unpacker.unpack(&l.block, 1 << 26).expect("unpack");
        std::hint::black_box(logblock::summarize(plain).expect("block"));
    }
    let check = t.elapsed();

    let t = Instant::now();
    for g in batches.chunks(group) {
        store.commit(g).expect("commit");
    }
    let commit = t.elapsed();
    store.checkpoint().expect("checkpoint");
    let stats = store.stats().expect("stats");
    drop(store);
    let per_line = |b: u64| b as f64 / stats.log_records.max(1) as f64;
    println!();
    println!(
        "commit (durable): {:.2} s, {} lines/s, {:.0} MB/s of lines",
        commit.as_secs_f64(),
        per_s(n as u64, commit),
        line_bytes as f64 / 1e6 / commit.as_secs_f64()
    );
    println!(
        "agent's part: block encoding {} lines/s ({:.1} bytes/line), zstd level 1 {} lines/s ({:.1} bytes/line)",
        per_s(n as u64, encode_plain),
        plain_bytes as f64 / n as f64,
        per_s(n as u64, encode_packed),
        packed_bytes as f64 / n as f64
    );
    println!(
        "ingest's check (decompress, read every record): {} lines/s",
        per_s(n as u64, check)
    );
    println!(
        "at rest: log blobs {:.1} bytes/line; database file {:.1} bytes/line ({} bytes)",
        per_line(stats.log_bytes),
        per_line(stats.file_bytes),
        thousands(stats.file_bytes)
    );

    // Reads through a reader's handle, as the CLI does; host000 holds 1/hosts of the lines.
    let mut ro = open_sqlite_readonly(&path).expect("open read-only");
    let host_lines = next_line[0];
    let all = LogFilter {
        since: 0,
        until: i64::MAX,
        ..Default::default()
    };
    let timed = |what: &str, f: &mut dyn FnMut() -> u64| {
        let t = Instant::now();
        let got = f();
        println!(
            "{what:<52} {:>12} in {:>8.1} ms",
            thousands(got),
            t.elapsed().as_secs_f64() * 1e3
        );
        got
    };
    println!();
    let counted = timed("count one host's lines (whole batches summed)", &mut || {
        ro.count_logs("host000", &all).expect("count")
    });
    assert_eq!(counted, host_lines as u64);
    let half = LogFilter {
        since: T0 + host_lines / 2 * STEP_MS + 1,
        ..all.clone()
    };
    timed("count its newer half (one batch decoded)", &mut || {
        ro.count_logs("host000", &half).expect("count")
    });
    let errors = LogFilter {
        min_severity: Some(Severity::Error),
        ..all.clone()
    };
    timed("count its errors (every batch decoded)", &mut || {
        ro.count_logs("host000", &errors).expect("count")
    });
    let grep = LogFilter {
        grep: Some(regex::Regex::new("sshd.*deploy from 10\\.1\\.").unwrap()),
        ..all.clone()
    };
    timed("count lines matching a pattern", &mut || {
        ro.count_logs("host000", &grep).expect("count")
    });
    let newest = LogFilter { limit: 200, ..all };
    timed(
        "read its newest 200 lines (newest batches first)",
        &mut || ro.logs("host000", &newest).expect("logs").len() as u64,
    );
}

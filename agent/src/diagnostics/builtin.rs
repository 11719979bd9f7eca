//! The built-in probes: read-only looks at the host, from /proc and /sys in Rust where the
//! kernel says it there, and fixed argv (no shell, no engineer-supplied text) where only a
//! tool knows (systemd units, the kernel ring buffer).
//!
//! Parsers are pure and tested on text; the probe functions do the reading.

use super::exec::{self, Ran};
use crate::logs::config::LogSource;
use crate::logs::driver::Glob;
use crate::logs::redact::{Redactor, RuleSet};
use crate::metrics::MetricsConfig;
use crate::metrics::fs;
use aftercare_shared::diag::{ArgKind, ArgSpec, DiagOutcome, ProbeInfo};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

pub const TOP_PROCESSES: &str = "top-processes";
pub const FILESYSTEMS: &str = "filesystems";
pub const SOCKETS: &str = "sockets";
pub const FAILED_UNITS: &str = "failed-units";
pub const KERNEL_MESSAGES: &str = "kernel-messages";
pub const LOG_TAIL: &str = "log-tail";
pub const CLOCK: &str = "clock";
pub const INTERFACES: &str = "interfaces";

pub const BUILTINS: [&str; 8] = [
    TOP_PROCESSES,
    FILESYSTEMS,
    SOCKETS,
    FAILED_UNITS,
    KERNEL_MESSAGES,
    LOG_TAIL,
    CLOCK,
    INTERFACES,
];

const TIMEOUT: Duration = Duration::from_secs(10);
const CAP: u64 = 64 << 10;
/// How long CPU use is sampled.
const CPU_SAMPLE: Duration = Duration::from_millis(500);

fn int(name: &str, min: i64, max: i64, default: i64) -> ArgSpec {
    ArgSpec {
        name: name.into(),
        kind: ArgKind::Integer { min, max },
        default: Some(default.to_string()),
    }
}

/// What each built-in declares.
pub fn infos() -> Vec<ProbeInfo> {
    let p = |name: &str, description: &str, args: Vec<ArgSpec>, cap: u64| ProbeInfo {
        name: name.into(),
        description: description.into(),
        args,
        timeout_ms: TIMEOUT.as_millis() as u64,
        max_output: cap,
    };
    vec![
        p(
            TOP_PROCESSES,
            "processes using the most CPU (over half a second) and memory (resident)",
            vec![int("count", 1, 100, 15)],
            CAP,
        ),
        p(FILESYSTEMS, "filesystem space and inode use", vec![], CAP),
        p(
            SOCKETS,
            "listening TCP/UDP sockets and TCP connection counts by state",
            vec![],
            CAP,
        ),
        p(
            FAILED_UNITS,
            "failed systemd units (systemctl --failed)",
            vec![],
            CAP,
        ),
        p(
            KERNEL_MESSAGES,
            "recent kernel errors and warnings (dmesg, else journalctl -k)",
            vec![int("lines", 1, 1000, 200)],
            CAP,
        ),
        p(
            LOG_TAIL,
            "the last lines of a configured log source, redacted",
            vec![
                ArgSpec {
                    name: "source".into(),
                    kind: ArgKind::Name,
                    default: None,
                },
                int("lines", 1, 1000, 100),
            ],
            256 << 10,
        ),
        p(
            CLOCK,
            "system clock and kernel NTP synchronisation state (adjtimex)",
            vec![],
            CAP,
        ),
        p(
            INTERFACES,
            "network interfaces: state, carrier, MTU, speed, errors",
            vec![],
            CAP,
        ),
    ]
}

/// What the built-ins need from the agent.
#[derive(Clone)]
pub struct Context {
    pub metrics: MetricsConfig,
    pub logs: Vec<LogSource>,
    pub rules: Arc<RuleSet>,
}

/// Run built-in `name` with validated `args`; the result is capped by the caller.
pub async fn run(name: &str, args: &[(String, String)], cx: &Context, cap: usize) -> Ran {
    let arg = |n: &str| -> i64 {
        args.iter()
            .find(|(k, _)| k == n)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    };
    let text = match name {
        TOP_PROCESSES => top_processes(arg("count") as usize).await,
        FILESYSTEMS => {
            let m = cx.metrics.clone();
            blocking(move || filesystems(&m)).await
        }
        SOCKETS => blocking(sockets).await,
        INTERFACES => blocking(interfaces).await,
        CLOCK => Ok(clock()),
        FAILED_UNITS => return failed_units(cap).await,
        KERNEL_MESSAGES => return kernel_messages(arg("lines") as usize, cap).await,
        LOG_TAIL => {
            let source = args
                .iter()
                .find(|(k, _)| k == "source")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let lines = arg("lines") as usize;
            let (logs, rules) = (cx.logs.clone(), cx.rules.clone());
            blocking(move || log_tail(&logs, rules, &source, lines)).await
        }
        other => Err(format!("no built-in probe '{other}'")),
    };
    match text {
        Ok(t) => Ran::text(t.into_bytes(), cap),
        Err(e) => Ran::failed(e),
    }
}

async fn blocking(
    f: impl FnOnce() -> Result<String, String> + Send + 'static,
) -> Result<String, String> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(format!("probe task failed: {e}")))
}

// ---- processes ----

/// One process from `/proc/<pid>/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub comm: String,
    /// utime + stime, clock ticks.
    pub ticks: u64,
    /// Resident pages.
    pub rss_pages: u64,
}

/// Parse `/proc/<pid>/stat`: the command name is in parentheses and may itself hold spaces
/// and parentheses, so the fields are counted after the last `)`.
pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_string();
    let f: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // f[0] is field 3 (state): utime 14, stime 15, rss 24.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let rss: i64 = f.get(21)?.parse().ok()?;
    Some(ProcStat {
        pid,
        comm,
        ticks: utime + stime,
        rss_pages: rss.max(0) as u64,
    })
}

fn read_procs() -> BTreeMap<u32, ProcStat> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // A process may end between listing and reading: skipped.
        if let Ok(t) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && let Some(p) = parse_proc_stat(&t)
        {
            out.insert(pid, p);
        }
    }
    out
}

async fn top_processes(count: usize) -> Result<String, String> {
    let first = tokio::task::spawn_blocking(read_procs)
        .await
        .map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    tokio::time::sleep(CPU_SAMPLE).await;
    let second = tokio::task::spawn_blocking(read_procs)
        .await
        .map_err(|e| e.to_string())?;
    let secs = started.elapsed().as_secs_f64();
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    Ok(format_top(&first, &second, secs, hz, page, count))
}

/// The two tables, from two samples `secs` apart.
pub fn format_top(
    first: &BTreeMap<u32, ProcStat>,
    second: &BTreeMap<u32, ProcStat>,
    secs: f64,
    hz: f64,
    page: u64,
    count: usize,
) -> String {
    let mut cpu: Vec<(f64, &ProcStat)> = second
        .values()
        .map(|p| {
            let before = first.get(&p.pid).map(|f| f.ticks).unwrap_or(p.ticks);
            let pct = p.ticks.saturating_sub(before) as f64 / hz / secs.max(1e-3) * 100.0;
            (pct, p)
        })
        .collect();
    cpu.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.pid.cmp(&b.1.pid)));
    let mut mem: Vec<&ProcStat> = second.values().collect();
    mem.sort_by(|a, b| b.rss_pages.cmp(&a.rss_pages).then(a.pid.cmp(&b.pid)));
    let mut s = format!("top {count} processes by CPU (sampled over {secs:.1} s)\n");
    let _ = writeln!(s, "{:>8} {:>7} {:>10}  COMMAND", "PID", "CPU%", "RSS");
    for (pct, p) in cpu.iter().take(count) {
        let _ = writeln!(
            s,
            "{:>8} {:>7.1} {:>10}  {}",
            p.pid,
            pct,
            human(p.rss_pages * page),
            p.comm
        );
    }
    let _ = writeln!(s, "\ntop {count} processes by resident memory");
    let _ = writeln!(s, "{:>8} {:>10}  COMMAND", "PID", "RSS");
    for p in mem.iter().take(count) {
        let _ = writeln!(
            s,
            "{:>8} {:>10}  {}",
            p.pid,
            human(p.rss_pages * page),
            p.comm
        );
    }
    s
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

// ---- filesystems ----

fn filesystems(m: &MetricsConfig) -> Result<String, String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let entries = fs::parse_mountinfo(&text);
    let filter = fs::FsFilter {
        exclude_fs_types: m.exclude_fs_types.clone(),
        include_fs_types: m.include_fs_types.clone(),
        exclude_mounts: m.exclude_mounts.clone(),
    };
    let chosen = fs::select(&entries, &filter);
    let points: Vec<&str> = chosen.iter().map(|e| e.mount_point.as_str()).collect();
    // The metrics' prober: a hung (e.g. NFS) mount costs its time limit, not the probe.
    let mut prober = fs::Prober::new(Arc::new(fs::statvfs), m.fs_timeout);
    let round = prober.start(points.iter().copied());
    let outcomes = prober.finish(round, &points);
    let mut s = format!(
        "{:<28} {:<10} {:>10} {:>10} {:>10} {:>5} {:>6}  SOURCE\n",
        "MOUNT", "TYPE", "SIZE", "USED", "AVAIL", "USE%", "IUSE%"
    );
    for (e, o) in chosen.iter().zip(outcomes) {
        match o {
            fs::Outcome::Measured(u) => {
                let pct = |used: u64, total: u64| {
                    if total == 0 {
                        "-".to_string()
                    } else {
                        format!("{:.0}%", used as f64 * 100.0 / total as f64)
                    }
                };
                let _ = writeln!(
                    s,
                    "{:<28} {:<10} {:>10} {:>10} {:>10} {:>5} {:>6}  {}",
                    e.mount_point,
                    e.fstype,
                    human(u.bytes_total),
                    human(u.bytes_used),
                    human(u.bytes_available),
                    pct(u.bytes_used, u.bytes_used + u.bytes_available),
                    pct(u.inodes_used, u.inodes_total),
                    e.source
                );
            }
            fs::Outcome::Failed(err) => {
                let _ = writeln!(
                    s,
                    "{:<28} {:<10} statvfs failed: {err}",
                    e.mount_point, e.fstype
                );
            }
            fs::Outcome::Hung | fs::Outcome::NotProbed => {
                let _ = writeln!(
                    s,
                    "{:<28} {:<10} no answer within {:?} (hung mount?)",
                    e.mount_point, e.fstype, m.fs_timeout
                );
            }
        }
    }
    Ok(s)
}

// ---- sockets ----

/// One line of `/proc/net/{tcp,tcp6,udp,udp6}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SockLine {
    pub local: String,
    pub state: u8,
}

/// Parse a `/proc/net/tcp`-style table (the header line is skipped).
pub fn parse_net_sockets(text: &str) -> Vec<SockLine> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local = hex_addr(f.get(1)?)?;
            let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
            Some(SockLine { local, state })
        })
        .collect()
}

/// `0100007F:0016` → `127.0.0.1:22`; the 32-bit words of IPv6 are in host (little-endian)
/// order.
fn hex_addr(s: &str) -> Option<String> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    match words.as_slice() {
        [w] => Some(format!(
            "{}:{port}",
            std::net::Ipv4Addr::from(w.swap_bytes())
        )),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            Some(format!("[{}]:{port}", std::net::Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

const TCP_STATES: [&str; 12] = [
    "?",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
];
const TCP_LISTEN: u8 = 0x0A;
/// A UDP socket that is bound but not connected.
const UDP_UNCONNECTED: u8 = 0x07;

/// The report from the four tables' text (`None`: unreadable).
pub fn format_sockets(tables: &[(&str, Option<String>)]) -> String {
    let mut listening = Vec::new();
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    let mut notes = String::new();
    for (proto, text) in tables {
        let Some(text) = text else {
            let _ = writeln!(notes, "/proc/net/{proto}: unreadable");
            continue;
        };
        let tcp = proto.starts_with("tcp");
        for s in parse_net_sockets(text) {
            if tcp {
                let name = TCP_STATES.get(s.state as usize).copied().unwrap_or("?");
                *counts.entry(name).or_default() += 1;
                if s.state == TCP_LISTEN {
                    listening.push(format!("{proto:<5} {}", s.local));
                }
            } else if s.state == UDP_UNCONNECTED {
                listening.push(format!("{proto:<5} {}", s.local));
            }
        }
    }
    listening.sort();
    listening.dedup();
    let mut s = String::from("listening sockets\n");
    for l in &listening {
        let _ = writeln!(s, "  {l}");
    }
    s.push_str("\nTCP connections by state\n");
    for (state, n) in &counts {
        let _ = writeln!(s, "  {state:<12} {n}");
    }
    s.push_str(&notes);
    s
}

fn sockets() -> Result<String, String> {
    let tables: Vec<(&str, Option<String>)> = ["tcp", "tcp6", "udp", "udp6"]
        .into_iter()
        .map(|p| (p, std::fs::read_to_string(format!("/proc/net/{p}")).ok()))
        .collect();
    Ok(format_sockets(&tables))
}

// ---- interfaces ----

fn interfaces() -> Result<String, String> {
    let dir = std::fs::read_dir("/sys/class/net")
        .map_err(|e| format!("cannot read /sys/class/net: {e}"))?;
    let mut names: Vec<String> = dir
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let read = |n: &str, f: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{n}/{f}"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "-".into())
    };
    let mut s = format!(
        "{:<16} {:<8} {:<7} {:>6} {:>8} {:<18} {:>9} {:>9} {:>9} {:>9}\n",
        "IFACE",
        "STATE",
        "CARRIER",
        "MTU",
        "SPEED",
        "ADDRESS",
        "RX_ERR",
        "TX_ERR",
        "RX_DROP",
        "TX_DROP"
    );
    for n in &names {
        let speed = read(n, "speed");
        let speed = match speed.parse::<i64>() {
            Ok(v) if v > 0 => format!("{v}Mb/s"),
            _ => "-".into(),
        };
        let _ = writeln!(
            s,
            "{:<16} {:<8} {:<7} {:>6} {:>8} {:<18} {:>9} {:>9} {:>9} {:>9}",
            n,
            read(n, "operstate"),
            read(n, "carrier"),
            read(n, "mtu"),
            speed,
            read(n, "address"),
            read(n, "statistics/rx_errors"),
            read(n, "statistics/tx_errors"),
            read(n, "statistics/rx_dropped"),
            read(n, "statistics/tx_dropped"),
        );
    }
    Ok(s)
}

// ---- clock ----

fn clock() -> String {
    let now = aftercare_shared::time_fmt::now_millis();
    let mut s = format!(
        "system time: {}\n",
        aftercare_shared::time_fmt::rfc3339(now)
    );
    // SAFETY: adjtimex with modes = 0 only reads the kernel's clock state into `tx`.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        let _ = writeln!(s, "adjtimex failed: {}", std::io::Error::last_os_error());
        return s;
    }
    let unsynced = tx.status & libc::STA_UNSYNC != 0;
    let _ = writeln!(
        s,
        "synchronised: {}",
        if unsynced || state == libc::TIME_ERROR {
            "no"
        } else {
            "yes"
        }
    );
    // The offset is in microseconds, or nanoseconds with STA_NANO.
    let offset_us = if tx.status & libc::STA_NANO != 0 {
        tx.offset as f64 / 1000.0
    } else {
        tx.offset as f64
    };
    let _ = writeln!(s, "offset: {offset_us:.0} us");
    let _ = writeln!(s, "maximum error: {} us", tx.maxerror);
    let _ = writeln!(s, "estimated error: {} us", tx.esterror);
    let _ = writeln!(s, "kernel clock state: {state} (0 ok, 5 unsynchronised)");
    s
}

// ---- external tools ----

/// An absolute path to `tool` in the usual system directories (no PATH lookup).
fn find_tool(tool: &str) -> Option<String> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| format!("{d}/{tool}"))
        .find(|p| std::path::Path::new(p).is_file())
}

async fn failed_units(cap: usize) -> Ran {
    let Some(systemctl) = find_tool("systemctl") else {
        return Ran::failed("systemctl is not installed on this host (no systemd?)".into());
    };
    let argv: Vec<String> = [
        systemctl.as_str(),
        "--failed",
        "--no-legend",
        "--plain",
        "--no-pager",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut r = exec::run(&argv, TIMEOUT, cap).await;
    if matches!(r.outcome, DiagOutcome::Done { exit_code: Some(0) }) && r.output.is_empty() {
        r.output = b"no failed units\n".to_vec();
    }
    r
}

async fn kernel_messages(lines: usize, cap: usize) -> Ran {
    // Read whole (bounded), then keep the newest lines: the end is what matters.
    const WHOLE: usize = 4 << 20;
    let mut tried = Vec::new();
    let candidates: [(&str, &[&str]); 2] = [
        ("dmesg", &["--time-format", "iso", "--level", "err,warn"]),
        (
            "journalctl",
            &["-k", "-p", "warning", "-n", "1000", "--no-pager", "-q"],
        ),
    ];
    for (tool, args) in candidates {
        let Some(path) = find_tool(tool) else {
            tried.push(format!("{tool}: not installed"));
            continue;
        };
        let argv: Vec<String> = std::iter::once(path)
            .chain(args.iter().map(|a| a.to_string()))
            .collect();
        let r = exec::run(&argv, TIMEOUT, WHOLE).await;
        match r.outcome {
            DiagOutcome::Done { exit_code: Some(0) } => {
                let text = String::from_utf8_lossy(&r.output);
                let all: Vec<&str> = text.lines().collect();
                let mut out = all[all.len().saturating_sub(lines)..].join("\n");
                if out.is_empty() {
                    out = format!("({tool}: no kernel errors or warnings)");
                }
                out.push('\n');
                return Ran::text(out.into_bytes(), cap);
            }
            _ => {
                let why = String::from_utf8_lossy(&r.output);
                tried.push(format!(
                    "{tool}: {}",
                    why.lines().next().unwrap_or("failed")
                ));
            }
        }
    }
    Ran::failed(format!(
        "no way to read kernel messages here: {}",
        tried.join("; ")
    ))
}

// ---- log tail ----

fn log_tail(
    logs: &[LogSource],
    rules: Arc<RuleSet>,
    source: &str,
    lines: usize,
) -> Result<String, String> {
    let Some(src) = logs.iter().find(|s| s.name.as_deref() == Some(source)) else {
        let names: Vec<&str> = logs.iter().filter_map(|s| s.name.as_deref()).collect();
        return Err(format!(
            "no [[logs]] source named '{source}' (named sources: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ));
    };
    // The newest file the source's paths match now.
    let mut files = BTreeMap::new();
    for p in &src.paths {
        if let Ok(g) = Glob::parse(p) {
            g.expand(&mut files);
        }
    }
    let newest = files
        .values()
        .filter_map(|p| Some((std::fs::metadata(p).ok()?.modified().ok()?, p.clone())))
        .max()
        .map(|(_, p)| p)
        .ok_or_else(|| format!("source '{source}' matches no file now"))?;
    let text = read_tail(&newest, lines).map_err(|e| format!("{}: {e}", newest.display()))?;
    let mut red = Redactor::new(rules);
    let mut s = format!(
        "source {source}: last {lines} lines of {} (redacted)\n",
        newest.display()
    );
    for l in text.lines() {
        s.push_str(&red.redact(l));
        s.push('\n');
    }
    Ok(s)
}

/// The last `lines` lines of a file, read from its end (at most 4 MiB).
fn read_tail(path: &std::path::Path, lines: usize) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    const MAX: u64 = 4 << 20;
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(MAX);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(MAX).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    // A first line cut by the 4 MiB window is dropped.
    let skip = usize::from(start > 0);
    let from = all.len().saturating_sub(lines).max(skip.min(all.len()));
    Ok(all[from..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every built-in on this machine: the /proc and /sys ones answer; the ones that need a
    /// tool answer or say plainly why not.
    #[tokio::test]
    async fn every_builtin_answers_on_this_host() {
        let cx = Context {
            metrics: MetricsConfig::default(),
            logs: Vec::new(),
            rules: Arc::new(RuleSet::new(&[]).unwrap()),
        };
        for info in infos() {
            let args: Vec<(String, String)> = info
                .args
                .iter()
                .filter_map(|a| Some((a.name.clone(), a.default.clone()?)))
                .collect();
            let ran = tokio::time::timeout(
                Duration::from_secs(30),
                run(&info.name, &args, &cx, info.max_output as usize),
            )
            .await
            .expect("bounded");
            let text = String::from_utf8_lossy(&ran.output).into_owned();
            match info.name.as_str() {
                TOP_PROCESSES | FILESYSTEMS | SOCKETS | INTERFACES | CLOCK => {
                    assert_eq!(
                        ran.outcome,
                        DiagOutcome::Done { exit_code: None },
                        "{}",
                        info.name
                    );
                    assert!(!text.is_empty(), "{}", info.name);
                }
                LOG_TAIL => {
                    // No source configured here: it says which exist.
                    assert!(
                        matches!(ran.outcome, DiagOutcome::Failed(ref m) if m.contains("[[logs]]"))
                    );
                }
                _ => match &ran.outcome {
                    DiagOutcome::Done { .. } => {}
                    DiagOutcome::Failed(m) => assert!(!m.is_empty(), "{}", info.name),
                    other => panic!("{}: {other:?}", info.name),
                },
            }
        }
    }

    #[test]
    fn proc_stat_with_spaces_and_parens_in_the_name() {
        let t = "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 123456 789 18446744073709551615";
        let p = parse_proc_stat(t).unwrap();
        assert_eq!(
            p,
            ProcStat {
                pid: 1234,
                comm: "my (odd) prog".into(),
                ticks: 300,
                rss_pages: 789
            }
        );
        assert_eq!(parse_proc_stat("garbage"), None);
    }

    #[test]
    fn top_sorts_by_cpu_delta_and_by_rss() {
        let p = |pid, ticks, rss| ProcStat {
            pid,
            comm: format!("p{pid}"),
            ticks,
            rss_pages: rss,
        };
        let first: BTreeMap<u32, ProcStat> = [(1, p(1, 100, 10)), (2, p(2, 100, 500))]
            .into_iter()
            .collect();
        let second: BTreeMap<u32, ProcStat> =
            [(1, p(1, 150, 10)), (2, p(2, 101, 500)), (3, p(3, 0, 1))]
                .into_iter()
                .collect();
        let s = format_top(&first, &second, 1.0, 100.0, 4096, 2);
        let (cpu, mem) = s.split_once("by resident memory").unwrap();
        assert!(cpu.find("p1").unwrap() < cpu.find("p2").unwrap(), "{s}");
        assert!(cpu.contains("50.0") && !cpu.contains("p3"), "{s}");
        assert!(mem.find("p2").unwrap() < mem.find("p1").unwrap(), "{s}");
    }

    #[test]
    fn sockets_listening_and_counted() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1\n\
   1: 0100007F:0016 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2\n\
   2: 0100007F:0016 0100007F:C351 01 00000000:00000000 00:00000000 00000000     0        0 3\n";
        let tcp6 = "  sl  local_address                         remote_address                        st\n\
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A\n";
        let udp = "  sl  local_address rem_address   st\n   0: 00000000:0044 00000000:0000 07\n";
        let s = format_sockets(&[
            ("tcp", Some(tcp.into())),
            ("tcp6", Some(tcp6.into())),
            ("udp", Some(udp.into())),
            ("udp6", None),
        ]);
        assert!(s.contains("tcp   127.0.0.1:22"), "{s}");
        assert!(s.contains("tcp6  [::1]:8080"), "{s}");
        assert!(s.contains("udp   0.0.0.0:68"), "{s}");
        assert!(
            s.contains("ESTABLISHED  2") && s.contains("LISTEN       2"),
            "{s}"
        );
        assert!(s.contains("/proc/net/udp6: unreadable"), "{s}");
    }

    #[test]
    fn log_tail_takes_the_newest_lines_and_redacts_them() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("app.log");
        let body: String = (1..=50)
            .map(|i| format!("line {i} password=hunter{i}\n"))
            .collect();
        std::fs::write(&path, body).unwrap();
        let src: LogSource = toml::from_str(&format!(
            "name = \"app\"\npaths = [\"{}\"]\n",
            d.path().join("*.log").display()
        ))
        .unwrap();
        let rules = Arc::new(RuleSet::new(&[]).unwrap());
        let s = log_tail(std::slice::from_ref(&src), rules.clone(), "app", 3).unwrap();
        assert!(
            s.contains("line 48") && s.contains("line 50") && !s.contains("line 47"),
            "{s}"
        );
        assert!(!s.contains("hunter"), "secrets are masked: {s}");
        let e = log_tail(&[src], rules, "other", 3).unwrap_err();
        assert!(e.contains("'other'") && e.contains("app"), "{e}");
    }
}

//! What processes use, read from /proc: CPU per thread group, memory, the machine's load.

use std::collections::HashMap;

/// What one thread has used: CPU seconds, and seconds it was runnable but waited for a CPU
/// (from /proc/PID/task/*/schedstat; 0 where the kernel lacks it).
#[derive(Clone, Copy, Default)]
pub struct ThreadTimes {
    pub cpu: f64,
    pub wait: f64,
}

/// The threads of process `pid` by thread id: name and times.
pub fn thread_times(pid: u32) -> HashMap<u32, (String, ThreadTimes)> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
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

fn group_of(comm: &str, other: &'static str) -> &'static str {
    if comm.starts_with("collector-rt") {
        "collector: QUIC, TLS, decode, ingest tasks"
    } else if comm.starts_with("store-writer") {
        "collector: store writer (commit, compression)"
    } else if comm.starts_with("agents-rt") {
        "simulated agents"
    } else {
        other
    }
}

/// Times of each thread group between two readings.
/// `other` names threads of no known group (each process's main thread, helpers).
pub fn times_by_group(
    before: &HashMap<u32, (String, ThreadTimes)>,
    after: &HashMap<u32, (String, ThreadTimes)>,
    other: &'static str,
) -> Vec<(&'static str, ThreadTimes)> {
    let mut groups: Vec<(&'static str, ThreadTimes)> = Vec::new();
    for (tid, (comm, t)) in after {
        let b = before.get(tid).map(|b| b.1).unwrap_or_default();
        let g = group_of(comm, other);
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
pub fn machine_busy() -> f64 {
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

pub fn percentile_us(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    f64::from(sorted[((sorted.len() - 1) as f64 * p).round() as usize]) / 1e3
}

/// Resident memory of process `pid` in bytes (VmRSS), 0 if it cannot be read.
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Raise the soft limit on open files to the hard one: every simulated agent holds a UDP
/// socket, and 10,000 of them pass the usual soft limit of 1,024. Children inherit it.
pub fn raise_nofile() -> std::io::Result<u64> {
    // SAFETY: getrlimit writes into the struct we pass; zeroed is a valid rlimit.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    r.rlim_cur = r.rlim_max;
    // SAFETY: valid pointer to an rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r.rlim_cur)
}

//! Pure parsers for the `/proc` files the collector reads. Each takes the file's text and
//! returns plain values, so that every one is tested with real-looking inputs and no I/O.
//!
//! Parsers are lenient: a line they do not understand is skipped rather than failing the
//! whole file, because kernels add fields and a partial snapshot beats none.

/// Jiffies (USER_HZ) spent by one CPU, or by all of them, in each state: a `cpu` line of
/// `/proc/stat`. Guest time is already included in user and nice, so it is not kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

/// Percentages of one interval between two [`CpuTimes`] readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUsage {
    /// Everything but idle and iowait.
    pub busy: f64,
    /// user + nice.
    pub user: f64,
    /// system + irq + softirq.
    pub system: f64,
    pub iowait: f64,
    pub steal: f64,
}

impl CpuTimes {
    /// How the CPU spent the time from `earlier` to `self`, or `None` when fewer than
    /// `min_jiffies` elapsed: over a handful of ticks the percentages are noise.
    pub fn usage_since(&self, earlier: &CpuTimes, min_jiffies: u64) -> Option<CpuUsage> {
        // Per-field saturating deltas: iowait is known to step backwards on some kernels,
        // and one such field must not turn the whole interval negative.
        let d = CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            nice: self.nice.saturating_sub(earlier.nice),
            system: self.system.saturating_sub(earlier.system),
            idle: self.idle.saturating_sub(earlier.idle),
            iowait: self.iowait.saturating_sub(earlier.iowait),
            irq: self.irq.saturating_sub(earlier.irq),
            softirq: self.softirq.saturating_sub(earlier.softirq),
            steal: self.steal.saturating_sub(earlier.steal),
        };
        let total = d.user + d.nice + d.system + d.idle + d.iowait + d.irq + d.softirq + d.steal;
        if total == 0 || total < min_jiffies {
            return None;
        }
        let pct = |x: u64| (x as f64 * 100.0 / total as f64).clamp(0.0, 100.0);
        Some(CpuUsage {
            busy: pct(total - d.idle - d.iowait),
            user: pct(d.user + d.nice),
            system: pct(d.system + d.irq + d.softirq),
            iowait: pct(d.iowait),
            steal: pct(d.steal),
        })
    }
}

/// What the collector uses from `/proc/stat`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stat {
    /// The aggregate `cpu` line.
    pub total: Option<CpuTimes>,
    /// `cpuN` lines as (N, times); offline CPUs are absent.
    pub cores: Vec<(u32, CpuTimes)>,
    pub context_switches: Option<u64>,
    /// Boot time, seconds since the epoch.
    pub boot_time: Option<u64>,
    /// Processes created since boot.
    pub forks: Option<u64>,
    pub procs_running: Option<u64>,
    pub procs_blocked: Option<u64>,
}

pub fn parse_stat(text: &str, out: &mut Stat) {
    out.total = None;
    out.cores.clear();
    out.context_switches = None;
    out.boot_time = None;
    out.forks = None;
    out.procs_running = None;
    out.procs_blocked = None;
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let Some(key) = it.next() else { continue };
        if let Some(rest) = key.strip_prefix("cpu") {
            let mut v = [0u64; 8];
            for slot in v.iter_mut() {
                // Old kernels lack steal; a missing field reads as zero.
                *slot = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            }
            let t = CpuTimes {
                user: v[0],
                nice: v[1],
                system: v[2],
                idle: v[3],
                iowait: v[4],
                irq: v[5],
                softirq: v[6],
                steal: v[7],
            };
            if rest.is_empty() {
                out.total = Some(t);
            } else if let Ok(n) = rest.parse() {
                out.cores.push((n, t));
            }
            continue;
        }
        let value = it.next().and_then(|s| s.parse().ok());
        match key {
            "ctxt" => out.context_switches = value,
            "btime" => out.boot_time = value,
            "processes" => out.forks = value,
            "procs_running" => out.procs_running = value,
            "procs_blocked" => out.procs_blocked = value,
            _ => {}
        }
    }
}

/// `/proc/loadavg`: the 1, 5 and 15 minute load averages and the number of threads
/// (kernel scheduling entities) that exist.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadAvg {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
    pub threads: Option<u64>,
}

pub fn parse_loadavg(text: &str) -> Option<LoadAvg> {
    let mut it = text.split_ascii_whitespace();
    let one = it.next()?.parse().ok()?;
    let five = it.next()?.parse().ok()?;
    let fifteen = it.next()?.parse().ok()?;
    let threads = it
        .next()
        .and_then(|s| s.split_once('/'))
        .and_then(|(_, all)| all.parse().ok());
    Some(LoadAvg {
        one,
        five,
        fifteen,
        threads,
    })
}

/// `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub total: Option<u64>,
    pub free: Option<u64>,
    pub available: Option<u64>,
    pub buffers: Option<u64>,
    pub cached: Option<u64>,
    pub swap_total: Option<u64>,
    pub swap_free: Option<u64>,
}

impl MemInfo {
    /// Memory in use by programs and the kernel that cannot simply be dropped: what
    /// `free` and sysinfo call used. Needs MemAvailable (Linux 3.14+).
    pub fn used(&self) -> Option<u64> {
        Some(self.total?.saturating_sub(self.available?))
    }

    pub fn swap_used(&self) -> Option<u64> {
        Some(self.swap_total?.saturating_sub(self.swap_free?))
    }
}

pub fn parse_meminfo(text: &str) -> MemInfo {
    let mut m = MemInfo::default();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "MemTotal" => &mut m.total,
            "MemFree" => &mut m.free,
            "MemAvailable" => &mut m.available,
            "Buffers" => &mut m.buffers,
            "Cached" => &mut m.cached,
            "SwapTotal" => &mut m.swap_total,
            "SwapFree" => &mut m.swap_free,
            _ => continue,
        };
        *slot = parse_kb(rest);
    }
    m
}

/// A `meminfo`-style value such as `   24684092 kB`, in bytes.
fn parse_kb(rest: &str) -> Option<u64> {
    let mut it = rest.split_ascii_whitespace();
    let n: u64 = it.next()?.parse().ok()?;
    match it.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// What the collector uses from `/proc/vmstat`: swap traffic (pages) and OOM kills, the
/// signs of thrashing and of memory exhaustion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VmStat {
    pub swap_in_pages: Option<u64>,
    pub swap_out_pages: Option<u64>,
    /// Linux 4.13+.
    pub oom_kills: Option<u64>,
}

pub fn parse_vmstat(text: &str) -> VmStat {
    let mut v = VmStat::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        let slot = match key {
            "pswpin" => &mut v.swap_in_pages,
            "pswpout" => &mut v.swap_out_pages,
            "oom_kill" => &mut v.oom_kills,
            _ => continue,
        };
        *slot = value.trim().parse().ok();
    }
    v
}

/// `/proc/uptime`: seconds since boot.
pub fn parse_uptime(text: &str) -> Option<f64> {
    text.split_ascii_whitespace().next()?.parse().ok()
}

/// One line of `/proc/diskstats`. Sectors there are always 512 bytes, whatever the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskStat<'a> {
    pub name: &'a str,
    pub reads: u64,
    pub read_sectors: u64,
    pub writes: u64,
    pub write_sectors: u64,
    /// Milliseconds during which the device had I/O in flight.
    pub io_ms: u64,
}

pub fn parse_diskstats(text: &str) -> impl Iterator<Item = DiskStat<'_>> {
    text.lines().filter_map(|line| {
        let mut it = line.split_ascii_whitespace();
        let _major = it.next()?;
        let _minor = it.next()?;
        let name = it.next()?;
        let mut f = [0u64; 10];
        for slot in f.iter_mut() {
            *slot = it.next()?.parse().ok()?;
        }
        // reads, reads merged, sectors read, ms reading, writes, writes merged,
        // sectors written, ms writing, I/Os in flight, ms doing I/O.
        Some(DiskStat {
            name,
            reads: f[0],
            read_sectors: f[2],
            writes: f[4],
            write_sectors: f[6],
            io_ms: f[9],
        })
    })
}

/// Whether a block device name looks like a partition (`sda1`, `nvme0n1p2`, `mmcblk0p1`).
/// Only a fallback for when `/sys/block`, which lists whole disks, cannot be read.
pub fn looks_like_partition(name: &str) -> bool {
    let digits_at_end = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits_at_end == 0 {
        return false;
    }
    let base = &name[..name.len() - digits_at_end];
    // nvme0n1p1, mmcblk0p1, md0p1, nbd0p1, loop0p1: "<disk ending in a digit>p<N>".
    if let Some(disk) = base.strip_suffix('p')
        && disk.ends_with(|c: char| c.is_ascii_digit())
    {
        return true;
    }
    // sda1, vdb2, hdc3, xvda1: letters-only disk names followed by a number.
    ["sd", "vd", "hd", "xvd"].iter().any(|p| {
        base.strip_prefix(p)
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_lowercase()))
    })
}

/// One interface of `/proc/net/dev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetDev<'a> {
    pub name: &'a str,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_drops: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_drops: u64,
}

pub fn parse_net_dev(text: &str) -> impl Iterator<Item = NetDev<'_>> {
    text.lines().filter_map(|line| {
        // The two header lines have no colon; the counters can touch the colon when wide.
        let (name, rest) = line.split_once(':')?;
        let mut it = rest.split_ascii_whitespace();
        let mut f = [0u64; 12];
        for slot in f.iter_mut() {
            *slot = it.next()?.parse().ok()?;
        }
        // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets errs drop.
        Some(NetDev {
            name: name.trim(),
            rx_bytes: f[0],
            rx_packets: f[1],
            rx_errors: f[2],
            rx_drops: f[3],
            tx_bytes: f[8],
            tx_packets: f[9],
            tx_errors: f[10],
            tx_drops: f[11],
        })
    })
}

/// What the agent learns about itself from `/proc/self/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelfStat {
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    pub threads: u64,
}

pub fn parse_self_stat(text: &str) -> Option<SelfStat> {
    // The command name (field 2) may hold spaces and parentheses: fields resume after the
    // last ')'. Counting from field 3 (state) as index 0, utime is field 14.
    let (_, rest) = text.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_ascii_whitespace().take(18).collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let threads = f.get(17)?.parse().ok()?;
    Some(SelfStat {
        cpu_ticks: utime + stime,
        threads,
    })
}

/// Resident and proportional set size, in bytes, from `/proc/self/smaps_rollup`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SelfMemory {
    pub rss: Option<u64>,
    pub pss: Option<u64>,
}

pub fn parse_smaps_rollup(text: &str) -> SelfMemory {
    let mut m = SelfMemory::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Rss:") {
            m.rss = parse_kb(rest);
        } else if let Some(rest) = line.strip_prefix("Pss:") {
            m.pss = parse_kb(rest);
        }
    }
    m
}

/// Resident pages from `/proc/self/statm` (the fallback before Linux 4.14's smaps_rollup).
pub fn parse_statm_resident_pages(text: &str) -> Option<u64> {
    text.split_ascii_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "\
cpu  33261 0 6151 66790 495 0 44 20 0 0
cpu0 16524 0 2154 34609 96 0 10 6 0 0
cpu1 16736 0 3997 32181 399 0 33 13 0 0
intr 4567890 9 0 0 0 0 0 0 0 0 0 0 0
ctxt 9876543
btime 1767225600
processes 12345
procs_running 3
procs_blocked 1
softirq 123456 1 2 3 4 5 6 7 8 9 10
";

    #[test]
    fn stat_has_total_cores_and_counters() {
        let mut s = Stat::default();
        parse_stat(STAT, &mut s);
        let total = s.total.unwrap();
        assert_eq!(total.user, 33261);
        assert_eq!(total.idle, 66790);
        assert_eq!(total.steal, 20);
        assert_eq!(s.cores.len(), 2);
        assert_eq!(s.cores[1].0, 1);
        assert_eq!(s.cores[1].1.system, 3997);
        assert_eq!(s.context_switches, Some(9876543));
        assert_eq!(s.boot_time, Some(1767225600));
        assert_eq!(s.forks, Some(12345));
        assert_eq!(s.procs_running, Some(3));
        assert_eq!(s.procs_blocked, Some(1));

        // Reusing the output clears what the new text lacks.
        parse_stat("cpu  1 2 3 4\n", &mut s);
        assert!(s.cores.is_empty());
        assert_eq!(s.context_switches, None);
        assert_eq!(
            s.total.unwrap().steal,
            0,
            "old kernels without steal read as zero"
        );
    }

    #[test]
    fn cpu_usage_between_readings() {
        let t = |user, system, idle, iowait, steal| CpuTimes {
            user,
            system,
            idle,
            iowait,
            steal,
            ..Default::default()
        };
        // (earlier, later, min_jiffies, expected (busy, user, system, iowait, steal))
        let cases = [
            (
                t(0, 0, 0, 0, 0),
                t(25, 25, 50, 0, 0),
                10,
                Some((50.0, 25.0, 25.0, 0.0, 0.0)),
            ),
            (
                t(100, 0, 100, 0, 0),
                t(100, 0, 200, 0, 0),
                10,
                Some((0.0, 0.0, 0.0, 0.0, 0.0)),
            ),
            (
                t(0, 0, 0, 0, 0),
                t(10, 0, 70, 10, 10),
                10,
                Some((20.0, 10.0, 0.0, 10.0, 10.0)),
            ),
            // Too short an interval to mean anything.
            (t(0, 0, 0, 0, 0), t(1, 0, 2, 0, 0), 10, None),
            // Nothing elapsed (same reading twice).
            (t(5, 5, 5, 5, 5), t(5, 5, 5, 5, 5), 0, None),
            // iowait stepping backwards does not produce negative or >100 values.
            (
                t(0, 0, 0, 50, 0),
                t(50, 0, 50, 40, 0),
                10,
                Some((50.0, 50.0, 0.0, 0.0, 0.0)),
            ),
        ];
        for (i, (a, b, min, want)) in cases.into_iter().enumerate() {
            let got = b
                .usage_since(&a, min)
                .map(|u| (u.busy, u.user, u.system, u.iowait, u.steal));
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn loadavg() {
        let l = parse_loadavg("0.54 0.80 0.39 1/87 8841\n").unwrap();
        assert_eq!(
            (l.one, l.five, l.fifteen, l.threads),
            (0.54, 0.80, 0.39, Some(87))
        );
        assert_eq!(parse_loadavg(""), None);
        assert_eq!(parse_loadavg("0.1 0.2\n"), None);
    }

    #[test]
    fn meminfo_in_bytes() {
        let text = "\
MemTotal:       24684092 kB
MemFree:        24447096 kB
MemAvailable:   24357472 kB
Buffers:            3100 kB
Cached:            33628 kB
SwapCached:            0 kB
Active(anon):       1528 kB
SwapTotal:       2097148 kB
SwapFree:        2000000 kB
HugePages_Total:       0
";
        let m = parse_meminfo(text);
        assert_eq!(m.total, Some(24684092 * 1024));
        assert_eq!(m.available, Some(24357472 * 1024));
        assert_eq!(m.used(), Some((24684092 - 24357472) * 1024));
        assert_eq!(m.cached, Some(33628 * 1024));
        assert_eq!(m.swap_used(), Some(97148 * 1024));
        // A kernel without MemAvailable: no guess at used.
        let old = parse_meminfo("MemTotal: 100 kB\nMemFree: 50 kB\n");
        assert_eq!(old.used(), None);
    }

    #[test]
    fn vmstat_swap_and_oom() {
        let text = "nr_free_pages 6111763\npswpin 12\npswpout 34\npgfault 99\noom_kill 2\n";
        assert_eq!(
            parse_vmstat(text),
            VmStat {
                swap_in_pages: Some(12),
                swap_out_pages: Some(34),
                oom_kills: Some(2)
            }
        );
        assert_eq!(parse_vmstat("pswpin 1\n").oom_kills, None);
    }

    #[test]
    fn uptime() {
        assert_eq!(parse_uptime("536.76 667.91\n"), Some(536.76));
        assert_eq!(parse_uptime(""), None);
    }

    const DISKSTATS: &str = "   7       0 loop0 120 0 2400 10 0 0 0 0 0 20 10 0 0 0 0 0 0
   1       0 ram0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
   8       0 sda 46123 5485 4609634 45058 5795 34605 13084000 50161 0 7688 95666 3832 59 173152 438 159 6
   8       1 sda1 46000 5485 4600000 45000 5790 34605 13080000 50100 0 7600 95000
 259       0 nvme0n1 900 10 72000 300 400 20 64000 200 2 1500 600
 259       1 nvme0n1p1 800 10 64000 280 400 20 64000 200 0 1400 580
 253       0 dm-0 50 0 800 5 60 0 960 7 0 11 12 0 0 0 0
 broken line
";

    #[test]
    fn diskstats_lines() {
        let all: Vec<_> = parse_diskstats(DISKSTATS).collect();
        let names: Vec<_> = all.iter().map(|d| d.name).collect();
        assert_eq!(
            names,
            [
                "loop0",
                "ram0",
                "sda",
                "sda1",
                "nvme0n1",
                "nvme0n1p1",
                "dm-0"
            ]
        );
        let sda = all[2];
        assert_eq!(
            sda,
            DiskStat {
                name: "sda",
                reads: 46123,
                read_sectors: 4609634,
                writes: 5795,
                write_sectors: 13084000,
                io_ms: 7688
            }
        );
        // Pre-4.18 lines with only 11 fields parse too.
        assert_eq!(all[4].io_ms, 1500);
    }

    #[test]
    fn partition_names() {
        let cases = [
            ("sda", false),
            ("sda1", true),
            ("sdaa12", true),
            ("vda", false),
            ("vdb2", true),
            ("xvda1", true),
            ("nvme0n1", false),
            ("nvme0n1p1", true),
            ("mmcblk0", false),
            ("mmcblk0p2", true),
            ("dm-0", false),
            ("md0", false),
            ("md127p1", true),
            ("sr0", false),
            ("loop7", false),
        ];
        for (name, want) in cases {
            assert_eq!(looks_like_partition(name), want, "{name}");
        }
    }

    #[test]
    fn net_dev_interfaces() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0
  eth0: 52471086    3462    1    2    0     0          0         0   339313    2461    3    4    0     0       0          0
enp3s0f1:12345678901 5 0 0 0 0 0 0 6 7 0 0 0 0 0 0
";
        let all: Vec<_> = parse_net_dev(text).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].name, "lo");
        assert_eq!(
            all[1],
            NetDev {
                name: "eth0",
                rx_bytes: 52471086,
                rx_packets: 3462,
                rx_errors: 1,
                rx_drops: 2,
                tx_bytes: 339313,
                tx_packets: 2461,
                tx_errors: 3,
                tx_drops: 4
            }
        );
        assert_eq!((all[2].name, all[2].rx_bytes), ("enp3s0f1", 12345678901));
        assert_eq!(all[2].tx_bytes, 6);
    }

    #[test]
    fn self_stat_survives_odd_command_names() {
        let text = "8838 (tokio (rt) x) S 8832 8832 7716 0 -1 4194304 98 0 0 0 150 25 0 0 20 0 3 0 53675 3133440 414 18446744073709551615 1 2 3\n";
        assert_eq!(
            parse_self_stat(text),
            Some(SelfStat {
                cpu_ticks: 175,
                threads: 3
            })
        );
        assert_eq!(parse_self_stat("8838 (cat) R 1 2"), None);
    }

    #[test]
    fn self_memory() {
        let text =
            "5564a593c000-7ffe9ce7f000 ---p 00000000 00:00 0                          [rollup]
Rss:                1748 kB
Pss:                 438 kB
Pss_Dirty:           112 kB
Pss_Anon:            112 kB
";
        assert_eq!(
            parse_smaps_rollup(text),
            SelfMemory {
                rss: Some(1748 * 1024),
                pss: Some(438 * 1024)
            }
        );
        assert_eq!(
            parse_statm_resident_pages("765 432 404 5 0 123 0\n"),
            Some(432)
        );
    }
}

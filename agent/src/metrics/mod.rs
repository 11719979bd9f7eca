//! The host's health, one [`MetricSnapshot`] per tick.
//!
//! Almost everything is read straight from `/proc` (one read per file, a pure parser per
//! file in `procfs`): it is cheaper than sysinfo's refreshes, which open sysfs files per
//! interface and per disk. sysinfo is used only for the host facts, once per connection.
//! Filesystems are measured with `statvfs` on a helper thread under a time limit (`fs`),
//! so that a dead NFS server cannot stall the agent.
//!
//! Counters are sent raw; the collector computes rates. Gauges are values at the tick.
//!
//! | name | kind | unit | labels | source |
//! |---|---|---|---|---|
//! | `cpu.usage` | gauge | % | none (all CPUs) or `core` | /proc/stat, between two ticks |
//! | `cpu.user`, `cpu.system`, `cpu.iowait`, `cpu.steal` | gauge | % | none | /proc/stat (user includes nice; system includes irq and softirq) |
//! | `cpu.context_switches` | counter | count | none | /proc/stat `ctxt` |
//! | `load.1`, `load.5`, `load.15` | gauge | | none | /proc/loadavg |
//! | `mem.total`, `mem.used`, `mem.available`, `mem.free`, `mem.buffers`, `mem.cached` | gauge | bytes | none | /proc/meminfo (used = total - available) |
//! | `mem.oom_kills` | counter | count | none | /proc/vmstat `oom_kill` |
//! | `swap.total`, `swap.used` | gauge | bytes | none | /proc/meminfo |
//! | `swap.in`, `swap.out` | counter | bytes | none | /proc/vmstat `pswpin`, `pswpout` |
//! | `fs.bytes.total`, `fs.bytes.used`, `fs.bytes.available` | gauge | bytes | `device`, `fstype`, `mount` | statvfs (available = to unprivileged users) |
//! | `fs.inodes.total`, `fs.inodes.used`, `fs.inodes.free` | gauge | count | `device`, `fstype`, `mount` | statvfs; absent where the filesystem has no inode table |
//! | `fs.hung` | gauge | 1 | `device`, `fstype`, `mount` | present only while the mount's statvfs has not returned |
//! | `disk.read.bytes`, `disk.write.bytes` | counter | bytes | `device` | /proc/diskstats (whole disks and dm/md, no partitions) |
//! | `disk.read.ops`, `disk.write.ops` | counter | count | `device` | /proc/diskstats |
//! | `disk.io.time` | counter | seconds | `device` | /proc/diskstats: time with I/O in flight (its rate is utilization) |
//! | `net.rx.bytes`, `net.rx.packets`, `net.rx.errors`, `net.rx.drops` | counter | bytes, count | `interface` | /proc/net/dev |
//! | `net.tx.bytes`, `net.tx.packets`, `net.tx.errors`, `net.tx.drops` | counter | bytes, count | `interface` | /proc/net/dev |
//! | `proc.count` | gauge | count | none | entries of /proc |
//! | `proc.threads` | gauge | count | none | /proc/loadavg |
//! | `proc.running`, `proc.blocked` | gauge | count | none | /proc/stat |
//! | `proc.forks` | counter | count | none | /proc/stat `processes` |
//! | `system.uptime` | gauge | seconds | none | /proc/uptime |
//! | `sensor.temperature` | gauge | °C | `chip`, `sensor` | /sys/class/hwmon (thermal zones if no hwmon); absent without sensors |
//! | `agent.cpu` | counter | seconds | none | /proc/self/stat utime + stime |
//! | `agent.memory.rss` | gauge | bytes | none | /proc/self/statm, or smaps_rollup when read for PSS |
//! | `agent.memory.pss` | gauge | bytes | none | /proc/self/smaps_rollup, once a minute (Linux 4.14+) |
//! | `agent.threads` | gauge | count | none | /proc/self/stat |
//! | `agent.sent.bytes` | counter | bytes | none | frames written to the collector link (`transport::sent_bytes`) |
//! | `agent.fs.hung_probes` | gauge | count | none | probe threads blocked in statvfs |
//! | `agent.collect.time` | gauge | seconds | none | how long this collect took |
//!
//! CPU percentages need two readings: the first comes from [`Collector::new`], and a tick
//! less than 100 ms after the previous one leaves them out rather than report noise.

mod config;
pub(crate) mod fs;
mod host;
mod procfs;
mod sensors;

pub use config::MetricsConfig;

use aftercare_shared::model::{HostFacts, MetricKind, MetricSnapshot, Sample, UnixMillis, labels};
use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use config::name_matches;
use procfs::{CpuTimes, Stat};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("invalid metrics configuration: {0}")]
    Config(String),
    #[error("cannot read {path}: {source} (metrics need Linux with /proc mounted)")]
    NoProcfs {
        path: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Safety net for the mount-table change notification.
const MOUNTS_REREAD: Duration = Duration::from_secs(60);
/// How often the agent's PSS is measured.
const PSS_EVERY: Duration = Duration::from_secs(60);
/// How often sensors are looked for again: drivers can load after the agent starts.
const SENSOR_REDISCOVERY: Duration = Duration::from_secs(600);

/// Gathers one snapshot per call. Holds the previous CPU reading, the filesystem prober's
/// thread and a few buffers reused between ticks.
pub struct Collector {
    // What the configuration selects.
    fs_filter: fs::FsFilter,
    exclude_disks: Vec<String>,
    exclude_interfaces: Vec<String>,
    temperatures: bool,

    clk_tck: f64,
    page_size: u64,
    /// The file being parsed; reused so that a tick allocates little.
    buf: String,
    /// This tick's and the previous tick's /proc/stat: CPU percentages are their difference.
    stat: Stat,
    stat_prev: Stat,

    /// Kept open: polling it says whether anything was mounted or unmounted since the last
    /// read, which costs far less than reading it (the kernel resolves every path).
    mountinfo: Option<std::fs::File>,
    mountinfo_read_at: Option<Instant>,
    /// The mounts selected at the last read.
    mounts: Vec<fs::MountEntry>,
    prober: fs::Prober,

    /// Block device name -> whether to report it (whole disk, not excluded).
    disks: HashMap<String, bool>,
    /// Whether /sys/block can tell whole disks from partitions.
    sys_block: bool,
    sensors: Vec<sensors::Sensor>,
    sensors_found_at: Option<Instant>,
    pss_read_at: Option<Instant>,
    /// Sources that failed once already: warned about once, not every tick.
    warned: HashSet<&'static str>,
}

impl Collector {
    pub fn new(cfg: &MetricsConfig) -> Result<Self, MetricsError> {
        Self::with_probe(cfg, Arc::new(fs::statvfs))
    }

    /// `new` with another filesystem probe, so that tests can make mounts hang.
    fn with_probe(cfg: &MetricsConfig, probe: Arc<fs::ProbeFn>) -> Result<Self, MetricsError> {
        cfg.validate().map_err(MetricsError::Config)?;
        let mut buf = String::with_capacity(4096);
        // The first CPU reading: the baseline for the first tick's percentages. Also the
        // proof that /proc is there at all.
        let mut stat = Stat::default();
        let text = read_into("/proc/stat", &mut buf).map_err(|source| MetricsError::NoProcfs {
            path: "/proc/stat",
            source,
        })?;
        procfs::parse_stat(text, &mut stat);
        Ok(Collector {
            fs_filter: fs::FsFilter {
                exclude_fs_types: cfg.exclude_fs_types.clone(),
                include_fs_types: cfg.include_fs_types.clone(),
                exclude_mounts: cfg.exclude_mounts.clone(),
            },
            exclude_disks: cfg.exclude_disks.clone(),
            exclude_interfaces: cfg.exclude_interfaces.clone(),
            temperatures: cfg.temperatures,
            clk_tck: sysconf(libc::_SC_CLK_TCK).unwrap_or(100) as f64,
            page_size: sysconf(libc::_SC_PAGESIZE).unwrap_or(4096),
            buf,
            stat: Stat::default(),
            stat_prev: stat,
            mountinfo: None,
            mountinfo_read_at: None,
            mounts: Vec::new(),
            prober: fs::Prober::new(probe, cfg.fs_timeout),
            disks: HashMap::new(),
            sys_block: Path::new("/sys/block").is_dir(),
            sensors: Vec::new(),
            sensors_found_at: None,
            pss_read_at: None,
            warned: HashSet::new(),
        })
    }

    /// One snapshot. Cheap (well under a millisecond of CPU on a small host); blocks at most
    /// `fs_timeout` when a filesystem does not answer, and only on the tick it stops.
    pub fn collect(&mut self, now: UnixMillis) -> MetricSnapshot {
        let started = Instant::now();
        let mut out = Vec::with_capacity(128);

        // Filesystems first: their probes run on the helper thread while /proc is read.
        self.refresh_mounts();
        let mounts = std::mem::take(&mut self.mounts);
        let points: Vec<&str> = mounts.iter().map(|m| m.mount_point.as_str()).collect();
        let round = self.prober.start(points.iter().copied());

        self.cpu_and_kernel(&mut out);
        self.load(&mut out);
        self.memory(&mut out);
        self.disks(&mut out);
        self.network(&mut out);
        self.uptime_and_processes(&mut out);
        if self.temperatures {
            self.temperatures(&mut out);
        }
        self.agent(&mut out);

        let outcomes = self.prober.finish(round, &points);
        for (m, outcome) in mounts.iter().zip(outcomes) {
            let l = labels(&[
                ("device", &m.source),
                ("fstype", &m.fstype),
                ("mount", &m.mount_point),
            ]);
            match outcome {
                fs::Outcome::Measured(u) => {
                    // Pseudo filesystems that slipped through the type list have no size.
                    if u.bytes_total == 0 {
                        continue;
                    }
                    gauge(&mut out, "fs.bytes.total", &l, u.bytes_total as f64);
                    gauge(&mut out, "fs.bytes.used", &l, u.bytes_used as f64);
                    gauge(&mut out, "fs.bytes.available", &l, u.bytes_available as f64);
                    if u.inodes_total > 0 {
                        gauge(&mut out, "fs.inodes.total", &l, u.inodes_total as f64);
                        gauge(&mut out, "fs.inodes.used", &l, u.inodes_used as f64);
                        gauge(&mut out, "fs.inodes.free", &l, u.inodes_free as f64);
                    }
                }
                fs::Outcome::Hung => gauge(&mut out, "fs.hung", &l, 1.0),
                fs::Outcome::Failed(e) => {
                    tracing::debug!(mount = m.mount_point, error = %e, "statvfs failed");
                }
                fs::Outcome::NotProbed => {}
            }
        }
        self.mounts = mounts;
        gauge(
            &mut out,
            "agent.fs.hung_probes",
            "",
            self.prober.hung_count() as f64,
        );
        gauge(
            &mut out,
            "agent.collect.time",
            "",
            started.elapsed().as_secs_f64(),
        );
        MetricSnapshot {
            ts: now,
            samples: out,
        }
    }

    /// Hostname, OS, kernel, CPU, memory, boot time and this agent's build.
    pub fn host_facts(&self) -> HostFacts {
        let mut buf = String::new();
        let memory = read_into("/proc/meminfo", &mut buf)
            .ok()
            .and_then(|t| procfs::parse_meminfo(t).total)
            .unwrap_or(0);
        let boot_time = read_into("/proc/stat", &mut buf)
            .ok()
            .and_then(|t| {
                let mut s = Stat::default();
                procfs::parse_stat(t, &mut s);
                s.boot_time
            })
            .map_or(0, |secs| secs as UnixMillis * 1000);
        host::gather(memory, boot_time)
    }

    /// The mounts to measure, selected again only when the mount table changed (or once a
    /// minute, in case a change went unnoticed); on a read error the last selection stands.
    fn refresh_mounts(&mut self) {
        let due = self
            .mountinfo_read_at
            .is_none_or(|t| t.elapsed() >= MOUNTS_REREAD);
        if !due
            && self
                .mountinfo
                .as_ref()
                .is_some_and(|f| !mount_table_changed(f))
        {
            return;
        }
        let text = match self.mountinfo.as_mut() {
            Some(f) => read_again(f, &mut self.buf),
            None => std::fs::File::open("/proc/self/mountinfo").and_then(|mut f| {
                self.buf.clear();
                f.read_to_string(&mut self.buf)?;
                self.mountinfo = Some(f);
                Ok(self.buf.as_str())
            }),
        };
        match text {
            Ok(text) => {
                let all = fs::parse_mountinfo(text);
                self.mounts = fs::select(&all, &self.fs_filter)
                    .into_iter()
                    .cloned()
                    .collect();
                self.mountinfo_read_at = Some(Instant::now());
            }
            Err(e) => {
                self.mountinfo = None;
                self.warn_once("/proc/self/mountinfo", &e);
            }
        }
    }

    fn cpu_and_kernel(&mut self, out: &mut Vec<Sample>) {
        let text = match read_into("/proc/stat", &mut self.buf) {
            Ok(t) => t,
            Err(e) => return self.warn_once("/proc/stat", &e),
        };
        procfs::parse_stat(text, &mut self.stat);
        let s = &self.stat;
        // 100 ms per CPU at least between the readings, else the percentages are noise.
        let min_core = (self.clk_tck / 10.0) as u64;
        let ncores = s.cores.len().max(1) as u64;
        let total = match (s.total, self.stat_prev.total) {
            (Some(now), Some(prev)) => now.usage_since(&prev, min_core * ncores),
            _ => None,
        };
        if let Some(u) = total {
            gauge(out, "cpu.usage", "", u.busy);
            gauge(out, "cpu.user", "", u.user);
            gauge(out, "cpu.system", "", u.system);
            gauge(out, "cpu.iowait", "", u.iowait);
            gauge(out, "cpu.steal", "", u.steal);
            for (core, now) in &s.cores {
                let prev: Option<&CpuTimes> = self
                    .stat_prev
                    .cores
                    .iter()
                    .find(|(c, _)| c == core)
                    .map(|(_, t)| t);
                if let Some(u) = prev.and_then(|p| now.usage_since(p, min_core)) {
                    let l = labels(&[("core", &core.to_string())]);
                    gauge(out, "cpu.usage", &l, u.busy);
                }
            }
        }
        if let Some(v) = s.context_switches {
            counter(out, "cpu.context_switches", "", v as f64);
        }
        if let Some(v) = s.procs_running {
            gauge(out, "proc.running", "", v as f64);
        }
        if let Some(v) = s.procs_blocked {
            gauge(out, "proc.blocked", "", v as f64);
        }
        if let Some(v) = s.forks {
            counter(out, "proc.forks", "", v as f64);
        }
        // Keep the old baseline when the interval was too short, so the next one is longer.
        if total.is_some() || self.stat_prev.total.is_none() {
            std::mem::swap(&mut self.stat, &mut self.stat_prev);
        }
    }

    fn load(&mut self, out: &mut Vec<Sample>) {
        let text = match read_into("/proc/loadavg", &mut self.buf) {
            Ok(t) => t,
            Err(e) => return self.warn_once("/proc/loadavg", &e),
        };
        if let Some(l) = procfs::parse_loadavg(text) {
            gauge(out, "load.1", "", l.one);
            gauge(out, "load.5", "", l.five);
            gauge(out, "load.15", "", l.fifteen);
            if let Some(t) = l.threads {
                gauge(out, "proc.threads", "", t as f64);
            }
        }
    }

    fn memory(&mut self, out: &mut Vec<Sample>) {
        match read_into("/proc/meminfo", &mut self.buf) {
            Ok(text) => {
                let m = procfs::parse_meminfo(text);
                let fields = [
                    ("mem.total", m.total),
                    ("mem.used", m.used()),
                    ("mem.available", m.available),
                    ("mem.free", m.free),
                    ("mem.buffers", m.buffers),
                    ("mem.cached", m.cached),
                    ("swap.total", m.swap_total),
                    ("swap.used", m.swap_used()),
                ];
                for (name, v) in fields {
                    if let Some(v) = v {
                        gauge(out, name, "", v as f64);
                    }
                }
            }
            Err(e) => self.warn_once("/proc/meminfo", &e),
        }
        match read_into("/proc/vmstat", &mut self.buf) {
            Ok(text) => {
                let v = procfs::parse_vmstat(text);
                let page = self.page_size as f64;
                if let Some(n) = v.swap_in_pages {
                    counter(out, "swap.in", "", n as f64 * page);
                }
                if let Some(n) = v.swap_out_pages {
                    counter(out, "swap.out", "", n as f64 * page);
                }
                if let Some(n) = v.oom_kills {
                    counter(out, "mem.oom_kills", "", n as f64);
                }
            }
            Err(e) => self.warn_once("/proc/vmstat", &e),
        }
    }

    fn disks(&mut self, out: &mut Vec<Sample>) {
        let text = match read_into("/proc/diskstats", &mut self.buf) {
            Ok(t) => t,
            Err(e) => return self.warn_once("/proc/diskstats", &e),
        };
        for d in procfs::parse_diskstats(text) {
            let keep = match self.disks.get(d.name) {
                Some(&k) => k,
                None => {
                    let k = wanted_disk(d.name, &self.exclude_disks, self.sys_block);
                    // Device names churn little, but bound the cache anyway.
                    if self.disks.len() >= 4096 {
                        self.disks.clear();
                    }
                    self.disks.insert(d.name.to_string(), k);
                    k
                }
            };
            if !keep {
                continue;
            }
            let l = labels(&[("device", d.name)]);
            // diskstats counts 512-byte sectors whatever the device's sector size.
            counter(out, "disk.read.bytes", &l, d.read_sectors as f64 * 512.0);
            counter(out, "disk.write.bytes", &l, d.write_sectors as f64 * 512.0);
            counter(out, "disk.read.ops", &l, d.reads as f64);
            counter(out, "disk.write.ops", &l, d.writes as f64);
            counter(out, "disk.io.time", &l, d.io_ms as f64 / 1000.0);
        }
    }

    fn network(&mut self, out: &mut Vec<Sample>) {
        let text = match read_into("/proc/net/dev", &mut self.buf) {
            Ok(t) => t,
            Err(e) => return self.warn_once("/proc/net/dev", &e),
        };
        for n in procfs::parse_net_dev(text) {
            if self
                .exclude_interfaces
                .iter()
                .any(|p| name_matches(p, n.name))
            {
                continue;
            }
            let l = labels(&[("interface", n.name)]);
            let fields = [
                ("net.rx.bytes", n.rx_bytes),
                ("net.rx.packets", n.rx_packets),
                ("net.rx.errors", n.rx_errors),
                ("net.rx.drops", n.rx_drops),
                ("net.tx.bytes", n.tx_bytes),
                ("net.tx.packets", n.tx_packets),
                ("net.tx.errors", n.tx_errors),
                ("net.tx.drops", n.tx_drops),
            ];
            for (name, v) in fields {
                counter(out, name, &l, v as f64);
            }
        }
    }

    fn uptime_and_processes(&mut self, out: &mut Vec<Sample>) {
        match read_into("/proc/uptime", &mut self.buf) {
            Ok(text) => {
                if let Some(up) = procfs::parse_uptime(text) {
                    gauge(out, "system.uptime", "", up);
                }
            }
            Err(e) => self.warn_once("/proc/uptime", &e),
        }
        match std::fs::read_dir("/proc") {
            Ok(rd) => {
                let n = rd
                    .flatten()
                    .filter(|e| {
                        e.file_name()
                            .as_encoded_bytes()
                            .iter()
                            .all(u8::is_ascii_digit)
                    })
                    .count();
                gauge(out, "proc.count", "", n as f64);
            }
            Err(e) => self.warn_once("/proc", &e),
        }
    }

    fn temperatures(&mut self, out: &mut Vec<Sample>) {
        let stale = self
            .sensors_found_at
            .is_none_or(|t| t.elapsed() >= SENSOR_REDISCOVERY);
        if stale {
            self.sensors = sensors::discover(Path::new("/sys/class"));
            self.sensors_found_at = Some(Instant::now());
        }
        for s in &self.sensors {
            if let Some(c) = sensors::read_celsius(&s.input, &mut self.buf) {
                let l = labels(&[("chip", &s.chip), ("sensor", &s.sensor)]);
                gauge(out, "sensor.temperature", &l, c);
            }
        }
    }

    fn agent(&mut self, out: &mut Vec<Sample>) {
        match read_into("/proc/self/stat", &mut self.buf) {
            Ok(text) => {
                if let Some(s) = procfs::parse_self_stat(text) {
                    counter(out, "agent.cpu", "", s.cpu_ticks as f64 / self.clk_tck);
                    gauge(out, "agent.threads", "", s.threads as f64);
                }
            }
            Err(e) => self.warn_once("/proc/self/stat", &e),
        }
        // RSS every tick from statm (cheap); PSS, the footprint that counts on a shared host,
        // from smaps_rollup once a minute: the kernel walks every mapping to produce it.
        let pss_due = self.pss_read_at.is_none_or(|t| t.elapsed() >= PSS_EVERY);
        let mut mem = procfs::SelfMemory::default();
        if pss_due && let Ok(text) = read_into("/proc/self/smaps_rollup", &mut self.buf) {
            mem = procfs::parse_smaps_rollup(text);
            self.pss_read_at = Some(Instant::now());
        }
        if mem.rss.is_none() {
            mem.rss = read_into("/proc/self/statm", &mut self.buf)
                .ok()
                .and_then(procfs::parse_statm_resident_pages)
                .map(|pages| pages * self.page_size);
        }
        if let Some(v) = mem.rss {
            gauge(out, "agent.memory.rss", "", v as f64);
        }
        if let Some(v) = mem.pss {
            gauge(out, "agent.memory.pss", "", v as f64);
        }
        counter(
            out,
            "agent.sent.bytes",
            "",
            crate::transport::sent_bytes() as f64,
        );
    }

    fn warn_once(&mut self, source: &'static str, e: &io::Error) {
        if self.warned.insert(source) {
            tracing::warn!(source, error = %e, "cannot read; its metrics are left out");
        } else {
            tracing::debug!(source, error = %e, "cannot read");
        }
    }
}

/// Whole disks only (partitions would count the same I/O twice), minus excluded names.
fn wanted_disk(name: &str, exclude: &[String], sys_block: bool) -> bool {
    if exclude.iter().any(|p| name_matches(p, name)) {
        return false;
    }
    if sys_block {
        // /sys/block lists whole disks (and dm, md); partitions live below their disk.
        let p: PathBuf = Path::new("/sys/block").join(name.replace('/', "!"));
        p.exists()
    } else {
        !procfs::looks_like_partition(name)
    }
}

/// Whether the mount table changed since `f` was last polled: the kernel flags a mount
/// or unmount as a priority event on open mountinfo files (proc(5)). An error counts as a
/// change, so that the file is read.
fn mount_table_changed(f: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a zero timeout; the fd stays open for the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
    rc != 0
}

fn read_again<'b>(f: &mut std::fs::File, buf: &'b mut String) -> io::Result<&'b str> {
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(0))?;
    buf.clear();
    f.read_to_string(buf)?;
    Ok(buf)
}

fn read_into<'b>(path: &str, buf: &'b mut String) -> io::Result<&'b str> {
    buf.clear();
    std::fs::File::open(path)?.read_to_string(buf)?;
    Ok(buf)
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).ok().filter(|&v| v > 0)
}

fn gauge(out: &mut Vec<Sample>, name: &str, labels: &str, value: f64) {
    push(out, name, labels, MetricKind::Gauge, value);
}

fn counter(out: &mut Vec<Sample>, name: &str, labels: &str, value: f64) {
    push(out, name, labels, MetricKind::Counter, value);
}

fn push(out: &mut Vec<Sample>, name: &str, labels: &str, kind: MetricKind, value: f64) {
    // A NaN or infinity would poison the collector's aggregates; drop it here.
    if value.is_finite() {
        out.push(Sample {
            name: name.to_string(),
            labels: labels.to_string(),
            kind,
            value,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(snap: &'a MetricSnapshot, name: &str, labels: &str) -> Option<&'a Sample> {
        snap.samples
            .iter()
            .find(|s| s.name == name && s.labels == labels)
    }

    #[test]
    fn on_this_machine() {
        let mut c = Collector::new(&MetricsConfig::default()).unwrap();
        let first = c.collect(1_000);
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        let snap = c.collect(1_200);
        let took = t.elapsed();
        eprintln!(
            "collect() took {took:?} for {} samples (first: {} samples)",
            snap.samples.len(),
            first.samples.len()
        );
        assert_eq!(snap.ts, 1_200);

        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let kb: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        assert_eq!(find(&snap, "mem.total", "").unwrap().value, kb * 1024.0);

        let root = snap
            .samples
            .iter()
            .find(|s| s.name == "fs.bytes.total" && s.labels.ends_with(",mount=/"))
            .expect("root filesystem reported");
        let used = find(&snap, "fs.bytes.used", &root.labels).unwrap();
        assert!(root.value > 0.0 && root.value >= used.value);

        assert!(find(&snap, "net.rx.bytes", "interface=lo").is_some());
        assert_eq!(
            find(&snap, "net.rx.bytes", "interface=lo").unwrap().kind,
            MetricKind::Counter
        );
        assert!(find(&snap, "agent.memory.rss", "").unwrap().value > 0.0);
        assert!(find(&snap, "agent.cpu", "").is_some());
        assert_eq!(
            find(&snap, "agent.sent.bytes", "").unwrap().kind,
            MetricKind::Counter
        );
        assert!(find(&snap, "system.uptime", "").unwrap().value > 0.0);
        assert!(find(&snap, "proc.count", "").unwrap().value >= 1.0);
        assert!(find(&snap, "load.1", "").is_some());

        // CPU: the total and every online core, within 0..=100.
        let cpu = find(&snap, "cpu.usage", "").expect("cpu.usage after 200 ms");
        assert!((0.0..=100.0).contains(&cpu.value));
        let cores = snap
            .samples
            .iter()
            .filter(|s| s.name == "cpu.usage" && s.labels.starts_with("core="))
            .count();
        assert_eq!(cores, c.stat_prev.cores.len());

        for snap in [&first, &snap] {
            let mut seen = HashSet::new();
            for s in &snap.samples {
                assert!(s.value.is_finite(), "{s:?}");
                assert!(
                    seen.insert((s.name.as_str(), s.labels.as_str())),
                    "duplicate {} {{{}}}",
                    s.name,
                    s.labels
                );
            }
        }
        // Nothing pseudo slipped in.
        assert!(
            !snap.samples.iter().any(|s| s.labels.contains("fstype=proc")
                || s.labels.contains("fstype=sysfs")
                || s.labels.contains("fstype=cgroup"))
        );
        assert_eq!(c.prober.hung_count(), 0);
    }

    #[test]
    fn a_hung_root_filesystem_is_reported_and_does_not_stall_collect() {
        let probe = |p: &std::ffi::CStr| {
            if p.to_bytes() == b"/" {
                std::thread::sleep(Duration::from_millis(400));
            }
            fs::statvfs(p)
        };
        let cfg = MetricsConfig {
            fs_timeout: Duration::from_millis(100),
            ..Default::default()
        };
        let mut c = Collector::with_probe(&cfg, Arc::new(probe)).unwrap();
        for _ in 0..2 {
            let t = Instant::now();
            let snap = c.collect(0);
            assert!(
                t.elapsed() < Duration::from_millis(300),
                "{:?}",
                t.elapsed()
            );
            let hung: Vec<&Sample> = snap
                .samples
                .iter()
                .filter(|s| s.name == "fs.hung")
                .collect();
            assert_eq!(hung.len(), 1, "{hung:?}");
            assert!(hung[0].labels.ends_with(",mount=/"));
            assert!(
                !snap
                    .samples
                    .iter()
                    .any(|s| s.name == "fs.bytes.total" && s.labels.ends_with(",mount=/"))
            );
            assert_eq!(find(&snap, "agent.fs.hung_probes", "").unwrap().value, 1.0);
            // Everything else is still there.
            assert!(find(&snap, "mem.total", "").is_some());
        }
    }

    #[test]
    fn host_facts_of_this_machine() {
        let c = Collector::new(&MetricsConfig::default()).unwrap();
        let f = c.host_facts();
        eprintln!("{f:?}");
        assert!(!f.hostname.is_empty());
        assert!(!f.kernel.is_empty());
        assert!(!f.arch.is_empty());
        assert!(f.cpu_count >= 1);
        assert!(f.memory_bytes > 0);
        // Booted after 2000-01-01 and before now.
        assert!(f.boot_time > 946_684_800_000);
        assert!(f.boot_time < aftercare_shared::time_fmt::now_millis());
        assert!(f.agent_build.starts_with("aftercare-agent "));
        assert!(f.agent_build.contains(std::env::consts::ARCH));
    }

    #[test]
    fn collector_can_move_to_another_thread() {
        // The caller may run collect() on a blocking thread so the runtime never waits.
        fn assert_send<T: Send>() {}
        assert_send::<Collector>();
    }

    #[test]
    fn invalid_config_is_refused() {
        let cfg = MetricsConfig {
            fs_timeout: Duration::ZERO,
            ..Default::default()
        };
        let e = Collector::new(&cfg).err().unwrap();
        assert!(e.to_string().contains("metrics.fs_timeout"), "{e}");
    }

    #[test]
    fn disk_selection() {
        let exclude = MetricsConfig::default().exclude_disks;
        let cases = [
            ("loop0", false),
            ("ram0", false),
            ("zram0", false),
            ("sda", true),
            ("sda1", false),
            ("nvme0n1", true),
            ("nvme0n1p1", false),
            ("dm-0", true),
        ];
        for (name, want) in cases {
            assert_eq!(wanted_disk(name, &exclude, false), want, "{name}");
        }
    }
}

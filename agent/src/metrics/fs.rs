//! Filesystems: which mounts to report (pure, from `/proc/self/mountinfo`) and measuring
//! them with `statvfs` under a time limit.
//!
//! `statvfs` on a mount whose server is gone (NFS, CIFS, FUSE) can block for minutes or for
//! ever, in uninterruptible sleep. So the calls run on a helper thread and the collector
//! waits for them only until a deadline. A mount whose call has not returned is *hung*: it
//! is reported as such and not probed again until that call returns, so that at most one
//! thread per hung mount (plus one healthy worker) can ever exist.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the filesystem: equal for every bind mount of it.
    pub dev: String,
    /// The directory of the filesystem that is mounted here: `/` unless a bind mount of a
    /// subdirectory.
    pub root: String,
    pub mount_point: String,
    pub fstype: String,
    /// What was mounted: `/dev/sda1`, `server:/export`, `tmpfs`.
    pub source: String,
}

/// mountinfo is used rather than `/proc/mounts` because it carries the device number and
/// the bind root, which tell bind mounts of one filesystem apart from distinct filesystems
/// that merely share a source name (every tmpfs is called `tmpfs`).
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    // 36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    // Optional fields (master:1 ...) end with a lone "-".
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let _id = l.next()?;
    let _parent = l.next()?;
    let dev = l.next()?;
    let root = l.next()?;
    let mount_point = l.next()?;
    let mut r = right.split(' ');
    let fstype = r.next()?;
    let source = r.next()?;
    Some(MountEntry {
        dev: dev.to_string(),
        root: unescape_octal(root),
        mount_point: unescape_octal(mount_point),
        fstype: fstype.to_string(),
        source: unescape_octal(source),
    })
}

/// The kernel writes space, tab, newline and backslash in paths as `\040`-style octal.
fn unescape_octal(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Which mounts are worth reporting.
#[derive(Debug, Clone, Default)]
pub struct FsFilter {
    pub exclude_fs_types: Vec<String>,
    pub include_fs_types: Vec<String>,
    pub exclude_mounts: Vec<String>,
}

impl FsFilter {
    fn wants(&self, m: &MountEntry) -> bool {
        let type_excluded =
            self.exclude_fs_types.contains(&m.fstype) && !self.include_fs_types.contains(&m.fstype);
        !type_excluded
            && !self
                .exclude_mounts
                .iter()
                .any(|p| mount_matches(p, &m.mount_point))
    }
}

/// `/sys` matches `/sys` and everything below it; `/var/lib/docker/` (trailing slash) only
/// what is below, so that a disk mounted at `/var/lib/docker` itself is still watched.
pub fn mount_matches(pattern: &str, mount_point: &str) -> bool {
    if pattern == "/" {
        // "Itself and below" would be every mount: `/` means the root filesystem only.
        return mount_point == "/";
    }
    if pattern.ends_with('/') {
        return mount_point.starts_with(pattern);
    }
    mount_point
        .strip_prefix(pattern)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Remote and FUSE filesystems are probed after local ones: they are the ones that hang,
/// and a hang uses up the tick's time for everything queued behind it.
pub fn is_network_fs(m: &MountEntry) -> bool {
    const NET: &[&str] = &[
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ceph",
        "glusterfs",
        "9p",
        "afs",
        "lustre",
        "gpfs",
        "davfs",
        "sshfs",
    ];
    NET.contains(&m.fstype.as_str())
        || m.fstype.starts_with("fuse")
        || m.source.starts_with("//")
        || (m.source.contains(':') && !m.source.starts_with('/'))
}

/// The mounts to probe, in probing order: filtered, one per filesystem (bind mounts of the
/// same device shown once, preferring the mount of its root, then the first mounted), one
/// per mount point (the topmost, the one `statvfs` sees), local ones first.
pub fn select<'a>(entries: &'a [MountEntry], filter: &FsFilter) -> Vec<&'a MountEntry> {
    // The topmost mount at each path is the last one listed.
    let mut top: HashMap<&str, usize> = HashMap::new();
    for (i, m) in entries.iter().enumerate() {
        top.insert(&m.mount_point, i);
    }
    let mut by_dev: HashMap<&str, usize> = HashMap::new();
    let mut chosen: Vec<usize> = Vec::new();
    for (i, m) in entries.iter().enumerate() {
        if top[m.mount_point.as_str()] != i || !filter.wants(m) {
            continue;
        }
        match by_dev.get(m.dev.as_str()) {
            None => {
                by_dev.insert(&m.dev, chosen.len());
                chosen.push(i);
            }
            Some(&slot) => {
                if entries[chosen[slot]].root != "/" && m.root == "/" {
                    chosen[slot] = i;
                }
            }
        }
    }
    let mut out: Vec<&MountEntry> = chosen.into_iter().map(|i| &entries[i]).collect();
    out.sort_by_key(|m| is_network_fs(m)); // stable: mount order within each group
    out
}

/// Space and inodes of one filesystem, in bytes and counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsUsage {
    pub bytes_total: u64,
    /// Total minus free, as `df` shows it (blocks reserved for root count as used by no one
    /// but are not available either).
    pub bytes_used: u64,
    /// Available to unprivileged users.
    pub bytes_available: u64,
    /// Zero on filesystems without a fixed inode table (btrfs, some FUSE).
    pub inodes_total: u64,
    pub inodes_used: u64,
    pub inodes_free: u64,
}

/// The real probe.
// The statvfs field types are u64 here but u32 on some 32-bit targets.
#[allow(clippy::unnecessary_cast)]
pub fn statvfs(path: &CStr) -> io::Result<FsUsage> {
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `s` is a valid out-pointer; statvfs fills all of
    // it on success, and we read it only then.
    let rc = unsafe { libc::statvfs(path.as_ptr(), s.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: rc == 0, so the kernel initialized the struct.
    let s = unsafe { s.assume_init() };
    let frsize = s.f_frsize as u64;
    let total = s.f_blocks as u64 * frsize;
    let free = s.f_bfree as u64 * frsize;
    let files = s.f_files as u64;
    let ffree = s.f_ffree as u64;
    Ok(FsUsage {
        bytes_total: total,
        bytes_used: total.saturating_sub(free),
        bytes_available: s.f_bavail as u64 * frsize,
        inodes_total: files,
        inodes_used: files.saturating_sub(ffree),
        inodes_free: ffree,
    })
}

pub type ProbeFn = dyn Fn(&CStr) -> io::Result<FsUsage> + Send + Sync;

/// What became of one mount in a round.
#[derive(Debug)]
pub enum Outcome {
    Measured(FsUsage),
    /// statvfs itself failed (permission, stale handle): nothing to report this time.
    Failed(io::Error),
    /// Hung: its probe did not return in time, this round or an earlier one.
    Hung,
    /// Not reached this round because an earlier mount used up the time.
    NotProbed,
}

struct Job {
    id: u64,
    path: CString,
}

struct Done {
    id: u64,
    result: io::Result<FsUsage>,
}

struct Worker {
    jobs: mpsc::Sender<Job>,
    /// Set when the worker is left behind: it answers the jobs still queued for it without
    /// probing, once (if ever) its current call returns, and then exits.
    abandoned: Arc<AtomicBool>,
    /// Id + 1 of the job whose probe is running, 0 when none: at a deadline, this names the
    /// call that is stuck.
    busy: Arc<AtomicU64>,
}

/// Runs probes on a helper thread, one round per tick, each round bounded by a deadline.
pub struct Prober {
    probe: Arc<ProbeFn>,
    timeout: Duration,
    worker: Option<Worker>,
    done_tx: mpsc::Sender<Done>,
    done_rx: mpsc::Receiver<Done>,
    next_id: u64,
    /// Hung probes: job id -> mount point. Each is a thread blocked in a call.
    hung: HashMap<u64, String>,
}

/// A round under way: started with [`Prober::start`], ended with [`Prober::finish`].
pub struct Round {
    /// Job id per mount point given to `start`; `None` for mount points not probed (hung).
    ids: Vec<Option<u64>>,
    deadline: Instant,
}

impl Prober {
    pub fn new(probe: Arc<ProbeFn>, timeout: Duration) -> Self {
        let (done_tx, done_rx) = mpsc::channel();
        Prober {
            probe,
            timeout,
            worker: None,
            done_tx,
            done_rx,
            next_id: 0,
            hung: HashMap::new(),
        }
    }

    /// Mounts whose probe has not returned; each holds one thread.
    pub fn hung_count(&self) -> usize {
        self.hung.len()
    }

    fn is_hung(&self, mount_point: &str) -> bool {
        self.hung.values().any(|m| m == mount_point)
    }

    /// Queue a probe of each mount point that is not hung; the round's clock starts now.
    pub fn start<'a>(&mut self, mount_points: impl IntoIterator<Item = &'a str>) -> Round {
        self.collect_late();
        let deadline = Instant::now() + self.timeout;
        let mut ids = Vec::new();
        for mp in mount_points {
            let path = match CString::new(mp) {
                Ok(p) if !self.is_hung(mp) => p,
                _ => {
                    ids.push(None);
                    continue;
                }
            };
            let id = self.next_id;
            self.next_id += 1;
            let sent = self.worker().jobs.send(Job { id, path }).is_ok();
            if !sent {
                // No thread behind the queue (spawning failed): try again next round.
                self.worker = None;
            }
            ids.push(sent.then_some(id));
        }
        Round { ids, deadline }
    }

    /// Wait for the round's results until its deadline: one outcome per mount point given to
    /// `start`, in the same order (`mount_points` must be the same list).
    pub fn finish(&mut self, round: Round, mount_points: &[&str]) -> Vec<Outcome> {
        let mut results: Vec<Option<io::Result<FsUsage>>> =
            round.ids.iter().map(|_| None).collect();
        let mut pending = round.ids.iter().flatten().count();
        while pending > 0 {
            let Some(left) = round.deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            let Ok(done) = self.done_rx.recv_timeout(left) else {
                break;
            };
            if let Some(slot) = round.ids.iter().position(|id| *id == Some(done.id)) {
                results[slot] = Some(done.result);
                pending -= 1;
            } else {
                self.settle_late(done.id);
            }
        }
        let mut stuck = None;
        if pending > 0
            && let Some(w) = self.worker.take()
        {
            // Flag first, then read `busy`: the worker publishes `busy` before it checks the
            // flag, so whatever job it is in or about to start is the one we see.
            w.abandoned.store(true, Ordering::SeqCst);
            stuck = w.busy.load(Ordering::SeqCst).checked_sub(1);
        }
        let mut out = Vec::with_capacity(results.len());
        for ((result, id), mp) in results.into_iter().zip(&round.ids).zip(mount_points) {
            out.push(match (result, *id) {
                (Some(Ok(u)), _) => Outcome::Measured(u),
                (Some(Err(e)), _) => Outcome::Failed(e),
                (None, Some(id)) if Some(id) == stuck => {
                    self.hung.insert(id, mp.to_string());
                    tracing::warn!(
                        mount = mp,
                        timeout = ?self.timeout,
                        "statvfs did not return in time; the mount is reported hung and not \
                         probed again until the call returns"
                    );
                    Outcome::Hung
                }
                (None, None) if self.is_hung(mp) => Outcome::Hung,
                (None, _) => Outcome::NotProbed,
            });
        }
        out
    }

    /// Take in answers of probes that returned after their round ended.
    fn collect_late(&mut self) {
        while let Ok(done) = self.done_rx.try_recv() {
            self.settle_late(done.id);
        }
    }

    /// A hung probe returned: its mount can be probed again. Its value is stale; dropped.
    fn settle_late(&mut self, id: u64) {
        if let Some(mp) = self.hung.remove(&id) {
            tracing::info!(
                mount = mp,
                "statvfs returned after hanging; probing it again"
            );
        }
    }

    fn worker(&mut self) -> &Worker {
        self.worker.get_or_insert_with(|| {
            let (jobs, rx) = mpsc::channel::<Job>();
            let abandoned = Arc::new(AtomicBool::new(false));
            let busy = Arc::new(AtomicU64::new(0));
            let probe = self.probe.clone();
            let done = self.done_tx.clone();
            let (flag, busy2) = (abandoned.clone(), busy.clone());
            let spawned = thread::Builder::new()
                .name("fs-probe".into())
                // statvfs needs next to no stack: keep the thread cheap.
                .stack_size(64 * 1024)
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        busy2.store(job.id + 1, Ordering::SeqCst);
                        let result = if flag.load(Ordering::SeqCst) {
                            Err(io::Error::other("not probed: worker abandoned"))
                        } else {
                            // A panicking probe must not leave its mount hung for ever.
                            panic::catch_unwind(AssertUnwindSafe(|| probe(&job.path)))
                                .unwrap_or_else(|_| Err(io::Error::other("probe panicked")))
                        };
                        busy2.store(0, Ordering::SeqCst);
                        if done.send(Done { id: job.id, result }).is_err() {
                            break;
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the filesystem probe thread");
            }
            Worker {
                jobs,
                abandoned,
                busy,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    const MOUNTINFO: &str = r"22 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
23 28 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
26 23 0:25 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
24 28 0:5 / /dev rw,nosuid,relatime shared:8 - devtmpfs udev rw,size=8131484k,nr_inodes=2032871,mode=755
27 28 0:26 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=1632760k,mode=755
28 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw,errors=remount-ro
29 28 8:1 / /boot/efi rw,relatime shared:30 - vfat /dev/sda1 rw,fmask=0077,dmask=0077
31 28 253:0 / /data rw,relatime shared:31 - xfs /dev/mapper/vg-data rw,attr2,inode64,noquota
32 28 0:45 / /mnt/backup rw,relatime shared:40 - nfs4 nas:/export/backup rw,vers=4.2,addr=10.0.0.5
33 28 253:0 /www /srv/www rw,relatime shared:31 - xfs /dev/mapper/vg-data rw,attr2,inode64,noquota
34 28 0:50 / /var/lib/docker/overlay2/abc/merged rw,relatime - overlay overlay rw,lowerdir=/x,upperdir=/y,workdir=/z
35 28 8:2 /home/me/My\040Files /mnt/my\040files rw,relatime shared:1 - ext4 /dev/sda2 rw
36 28 0:51 / /var/lib/docker rw,relatime shared:41 - ext4 /dev/sdb1 rw
37 28 0:52 / /dev/shm rw,nosuid,nodev shared:9 - tmpfs tmpfs rw
38 28 0:53 / /media/usb\040stick rw,relatime shared:42 - vfat /dev/sdc1 rw
";

    fn default_filter() -> FsFilter {
        let d = crate::metrics::MetricsConfig::default();
        FsFilter {
            exclude_fs_types: d.exclude_fs_types,
            include_fs_types: d.include_fs_types,
            exclude_mounts: d.exclude_mounts,
        }
    }

    #[test]
    fn mountinfo_fields_and_escapes() {
        let all = parse_mountinfo(MOUNTINFO);
        assert_eq!(all.len(), 15);
        assert_eq!(
            all[5],
            MountEntry {
                dev: "8:2".into(),
                root: "/".into(),
                mount_point: "/".into(),
                fstype: "ext4".into(),
                source: "/dev/sda2".into()
            }
        );
        assert_eq!(all[11].root, "/home/me/My Files");
        assert_eq!(all[11].mount_point, "/mnt/my files");
        assert_eq!(unescape_octal(r"a\134b\011c\"), "a\\b\tc\\");
        assert!(parse_mountinfo("garbage\n\n").is_empty());
    }

    #[test]
    fn selection_skips_pseudo_and_duplicates() {
        let all = parse_mountinfo(MOUNTINFO);
        let chosen: Vec<(&str, &str, &str)> = select(&all, &default_filter())
            .iter()
            .map(|m| (m.mount_point.as_str(), m.source.as_str(), m.fstype.as_str()))
            .collect();
        assert_eq!(
            chosen,
            [
                ("/", "/dev/sda2", "ext4"),
                ("/boot/efi", "/dev/sda1", "vfat"),
                // The bind mount /srv/www of the same xfs is not shown again.
                ("/data", "/dev/mapper/vg-data", "xfs"),
                // A disk mounted at /var/lib/docker itself is watched; container layers
                // below it are not.
                ("/var/lib/docker", "/dev/sdb1", "ext4"),
                ("/media/usb stick", "/dev/sdc1", "vfat"),
                // Network filesystems last, so that a hang delays nothing local.
                ("/mnt/backup", "nas:/export/backup", "nfs4"),
            ]
        );
    }

    #[test]
    fn tmpfs_can_be_included() {
        let all = parse_mountinfo(MOUNTINFO);
        let mut f = default_filter();
        f.include_fs_types = vec!["tmpfs".into()];
        let mounts: Vec<&str> = select(&all, &f)
            .iter()
            .map(|m| m.mount_point.as_str())
            .collect();
        // /dev/shm stays out: the default exclude_mounts covers /dev.
        assert!(mounts.contains(&"/run"), "{mounts:?}");
        assert!(!mounts.contains(&"/dev/shm"), "{mounts:?}");
    }

    #[test]
    fn bind_of_a_subdirectory_yields_to_the_whole_filesystem() {
        let text = "40 1 8:3 /sub /early rw - ext4 /dev/sdd1 rw\n41 1 8:3 / /late rw - ext4 /dev/sdd1 rw\n";
        let all = parse_mountinfo(text);
        let chosen = select(&all, &FsFilter::default());
        assert_eq!(chosen.len(), 1);
        assert_eq!(chosen[0].mount_point, "/late");
    }

    #[test]
    fn stacked_mounts_report_the_top_one() {
        let text =
            "40 1 8:3 / /mnt rw - ext4 /dev/sdd1 rw\n41 40 8:4 / /mnt rw - ext4 /dev/sde1 rw\n";
        let all = parse_mountinfo(text);
        let chosen = select(&all, &FsFilter::default());
        assert_eq!(chosen.len(), 1);
        assert_eq!(chosen[0].source, "/dev/sde1");
    }

    #[test]
    fn mount_patterns() {
        let cases = [
            ("/sys", "/sys", true),
            ("/sys", "/sys/fs/cgroup", true),
            ("/sys", "/system", false),
            ("/var/lib/docker/", "/var/lib/docker", false),
            (
                "/var/lib/docker/",
                "/var/lib/docker/overlay2/x/merged",
                true,
            ),
            ("/", "/", true),
            ("/", "/data", false),
            ("/", "/data", false),
        ];
        for (p, m, want) in cases {
            assert_eq!(mount_matches(p, m), want, "{p} vs {m}");
        }
    }

    #[test]
    fn statvfs_of_root_is_plausible() {
        let u = statvfs(c"/").unwrap();
        assert!(u.bytes_total > 0 && u.bytes_total >= u.bytes_used);
        assert!(u.bytes_available <= u.bytes_total);
        assert!(statvfs(c"/no/such/dir/here").is_err());
    }

    fn usage(n: u64) -> FsUsage {
        FsUsage {
            bytes_total: n,
            ..Default::default()
        }
    }

    /// A probe that hangs on `/hung` for `hang`, answers everything else at once, and
    /// counts calls per path.
    fn fake_probe(hang: Duration) -> (Arc<ProbeFn>, Arc<Mutex<HashMap<String, usize>>>) {
        let calls = Arc::new(Mutex::new(HashMap::new()));
        let c = calls.clone();
        let probe = move |p: &CStr| {
            let p = p.to_str().unwrap().to_string();
            *c.lock().unwrap().entry(p.clone()).or_insert(0) += 1;
            match p.as_str() {
                "/hung" => {
                    thread::sleep(hang);
                    Ok(usage(99))
                }
                "/denied" => Err(io::Error::from(io::ErrorKind::PermissionDenied)),
                _ => Ok(usage(p.len() as u64)),
            }
        };
        (Arc::new(probe), calls)
    }

    #[test]
    fn a_hung_mount_costs_one_timeout_then_is_skipped_until_it_returns() {
        let timeout = Duration::from_millis(100);
        let hang = Duration::from_millis(600);
        let (probe, calls) = fake_probe(hang);
        let mut p = Prober::new(probe, timeout);
        let mounts = ["/", "/denied", "/hung", "/after"];

        // Round 1: / answers, /denied fails, /hung times out, /after waits behind it.
        let t0 = Instant::now();
        let round = p.start(mounts);
        let out = p.finish(round, &mounts);
        let took = t0.elapsed();
        assert!(took >= timeout && took < timeout * 4, "{took:?}");
        assert!(matches!(out[0], Outcome::Measured(u) if u == usage(1)));
        assert!(
            matches!(&out[1], Outcome::Failed(e) if e.kind() == io::ErrorKind::PermissionDenied)
        );
        assert!(matches!(out[2], Outcome::Hung));
        assert!(matches!(out[3], Outcome::NotProbed));
        assert_eq!(p.hung_count(), 1);

        // Round 2, right away: /hung is not probed again, nothing waits for it, and the
        // mount behind it is measured by a fresh worker.
        let t1 = Instant::now();
        let round = p.start(mounts);
        let out = p.finish(round, &mounts);
        assert!(t1.elapsed() < timeout, "{:?}", t1.elapsed());
        assert!(matches!(out[2], Outcome::Hung));
        assert!(matches!(out[3], Outcome::Measured(u) if u == usage(6)));
        assert_eq!(
            calls.lock().unwrap()["/hung"],
            1,
            "no second thread piled up"
        );
        assert_eq!(calls.lock().unwrap().get("/after"), Some(&1));

        // Once the hung call returns, the mount is probed again (and hangs again here).
        thread::sleep(hang.saturating_sub(t0.elapsed()) + Duration::from_millis(50));
        let round = p.start(mounts);
        let out = p.finish(round, &mounts);
        assert_eq!(calls.lock().unwrap()["/hung"], 2);
        assert!(matches!(out[2], Outcome::Hung));
        assert!(matches!(out[3], Outcome::NotProbed));
    }

    #[test]
    fn threads_do_not_pile_up_under_repeated_hangs() {
        let live = Arc::new(AtomicUsize::new(0));
        let max_live = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(AtomicUsize::new(0));
        let (l, m, c) = (live.clone(), max_live.clone(), calls.clone());
        let probe = move |p: &CStr| {
            if p.to_bytes() == b"/hung" {
                c.fetch_add(1, Ordering::SeqCst);
                let n = l.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(n, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(250));
                l.fetch_sub(1, Ordering::SeqCst);
            }
            Ok(usage(1))
        };
        let mut p = Prober::new(Arc::new(probe), Duration::from_millis(20));
        let mounts = ["/hung", "/ok"];
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(700) {
            let round = p.start(mounts);
            let _ = p.finish(round, &mounts);
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            max_live.load(Ordering::SeqCst),
            1,
            "one thread per hung mount"
        );
        // Probed again each time the previous call had returned, never while it had not.
        let n = calls.load(Ordering::SeqCst);
        assert!((2..=3).contains(&n), "{n} calls");
        assert_eq!(p.hung_count(), 1);
    }

    #[test]
    fn a_panicking_probe_is_a_failure_not_a_hang() {
        let first = Arc::new(AtomicBool::new(true));
        let f = first.clone();
        let probe = move |_: &CStr| {
            if f.swap(false, Ordering::SeqCst) {
                panic!("probe bug (expected by this test)");
            }
            Ok(usage(7))
        };
        // A generous limit: a panic's unwinding (and backtrace, with RUST_BACKTRACE set) on a
        // loaded machine can take longer than half a second, and the results come as soon
        // as they are there.
        let mut p = Prober::new(Arc::new(probe), Duration::from_secs(10));
        let mounts = ["/a", "/b"];
        let round = p.start(mounts);
        let out = p.finish(round, &mounts);
        assert!(matches!(out[0], Outcome::Failed(_)), "{:?}", out[0]);
        assert!(matches!(out[1], Outcome::Measured(u) if u == usage(7)));
        assert_eq!(p.hung_count(), 0);
    }
}

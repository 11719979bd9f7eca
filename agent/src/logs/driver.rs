//! The I/O side of the tailer: finds the files a source's globs match, opens and reads them,
//! and wakes on file events (notify) or a slow poll (filesystems without events, NFS).
//!
//! Per source one [`Tailer`] (its line limit and `start_at` are the source's) and one open
//! descriptor per [`FileId`] the tailer follows, so a file renamed away or unlinked is read
//! to its end through the descriptor (`pread` at the offset asked); it is closed when the
//! tailer releases it. A scan opens each matching path, takes `fstat` (dev, inode, size) and
//! the first `HEAD_BYTES` through that same descriptor, so the observation and the bytes
//! read later are of one file whatever renames happen in between.
//!
//! Events: the parent directory of each glob is watched (recursively below a `**` or a
//! wildcard directory segment). Only creation, data modification, rename, removal and
//! close-after-write wake a scan: our own opens and reads produce open and close-after-read
//! events, and a watcher that scans on those feeds itself (PROBES.md). Events arriving
//! together are coalesced into one scan.
//!
//! Reads are plain blocking `pread`s on the caller's task, bounded per call of
//! [`LogDriver::next_lines`]; a slow filesystem slows that call, not the runtime's other
//! timers more than one bounded batch.
//!
//! Known limits: writes to a file renamed out of the paths (a writer that has not reopened
//! yet) wake nothing, as its new name matches no glob; they are read at the next scan (the
//! new file's creation, or the poll). Every scan opens every matching file, changed or not
//! (a `stat` by path first could skip unchanged ones). A directory symlink is followed for
//! a `*` segment or a literal one, never below a `**`.

use super::config::LogSource;
use super::fingerprint::{DevIno, HEAD_BYTES};
use super::tailer::{FileId, FilePosition, Line, Observation, ReadRequest, Tailer, TailerConfig};
use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::warn;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("log path '{pattern}': {reason}")]
    Pattern {
        pattern: String,
        reason: &'static str,
    },
    #[error("cannot start the log file watcher: {0}")]
    Watcher(#[source] notify::Error),
    #[error("cannot start the log reader thread: {0}")]
    Thread(String),
}

#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// A scan at least this often, events or not: the only wake-up on filesystems that
    /// deliver no events (NFS), and how a directory created after start is found.
    pub poll_interval: Duration,
    /// Watch with notify (inotify); off: polling alone.
    pub notify: bool,
    /// Bytes per `pread` (the tailer's `read_chunk`; also the reusable buffer's size).
    pub read_chunk: usize,
    /// How long a file no longer at any path stays open after its last new bytes.
    pub rotate_wait: Duration,
    /// Bytes read per call of `next_lines` at most, so one huge file cannot hold the loop
    /// (or the memory of the lines) for long; the next call goes on without waiting.
    pub max_bytes_per_call: usize,
    /// Events within this long of the first one make one scan.
    pub coalesce: Duration,
    /// Scans on events this far apart at least: a log written a thousand times a second
    /// costs a few scans a second, not a thousand (each opens every matching file).
    pub min_scan_gap: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            poll_interval: Duration::from_secs(2),
            notify: true,
            read_chunk: 64 * 1024,
            rotate_wait: Duration::from_secs(60),
            max_bytes_per_call: 1024 * 1024,
            coalesce: Duration::from_millis(20),
            min_scan_gap: Duration::from_millis(100),
        }
    }
}

/// A line and the source (index into the sources given to [`LogDriver::new`]) it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLine {
    pub source: usize,
    pub line: Line,
}

// ---------------------------------------------------------------------------------------
// Globs

/// Directories below a `**` are descended this deep at most (a runaway tree, a bind-mount
/// loop).
const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Literal(OsString),
    /// Has `*` or `?`.
    Wild(Vec<u8>),
    /// `**`: any number of directories, zero included.
    Any,
}

/// An absolute path pattern: `*` and `?` within one path segment, `**` as a whole segment
/// for any depth of directories. `*` and `?` do not match a leading `.` (hidden and temp
/// files, as in a shell); `[...]` classes are not supported and are taken literally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    segs: Vec<Seg>,
}

impl Glob {
    pub fn parse(pattern: &str) -> Result<Glob, DriverError> {
        let bad = |reason| DriverError::Pattern {
            pattern: pattern.into(),
            reason,
        };
        if !pattern.starts_with('/') {
            return Err(bad("not absolute"));
        }
        let mut segs = Vec::new();
        for s in pattern.split('/').filter(|s| !s.is_empty() && *s != ".") {
            if s == ".." {
                return Err(bad("'..' is not allowed"));
            }
            segs.push(if s == "**" {
                Seg::Any
            } else if s.contains("**") {
                return Err(bad("'**' must be a whole path segment"));
            } else if s.contains(['*', '?']) {
                Seg::Wild(s.as_bytes().to_vec())
            } else {
                Seg::Literal(s.into())
            });
        }
        match segs.last() {
            None => Err(bad("names no file")),
            Some(Seg::Any) => Err(bad("ends in '**'; name the files, e.g. '**/*.log'")),
            Some(_) => Ok(Glob { segs }),
        }
    }

    /// The directory to watch and whether recursively: the literal prefix; recursive when
    /// a wildcard stands for a directory (a `**`, or `*` before the last segment).
    pub fn watch_root(&self) -> (PathBuf, bool) {
        let n = self
            .segs
            .iter()
            .position(|s| !matches!(s, Seg::Literal(_)))
            .unwrap_or(self.segs.len() - 1)
            .min(self.segs.len() - 1);
        let mut dir = PathBuf::from("/");
        for s in &self.segs[..n] {
            if let Seg::Literal(l) = s {
                dir.push(l);
            }
        }
        (dir, n + 1 < self.segs.len())
    }

    /// Whether `path` (absolute) matches the whole pattern.
    pub fn matches(&self, path: &Path) -> bool {
        self.match_path(path, false)
    }

    /// Whether `path` matches, or could be a directory on the way to a match.
    fn leads_to(&self, path: &Path) -> bool {
        self.match_path(path, true)
    }

    fn match_path(&self, path: &Path, prefix: bool) -> bool {
        let mut names = Vec::new();
        for c in path.components() {
            match c {
                Component::Normal(n) => names.push(n),
                Component::RootDir | Component::CurDir => {}
                Component::Prefix(_) | Component::ParentDir => return false,
            }
        }
        match_segs(&self.segs, &names, prefix)
    }

    /// The files matching now: (path as matched, path to open). A matching symlink is
    /// followed once: to a file it counts, to another symlink it does not (no chains, no
    /// loops). `**` descends real directories only, for the same reason. Directories and
    /// other non-files are skipped; unreadable directories are skipped quietly (a later
    /// scan retries).
    pub fn expand(&self, out: &mut BTreeMap<PathBuf, PathBuf>) {
        walk(Path::new("/"), &self.segs, 0, out);
    }
}

fn match_segs(pat: &[Seg], names: &[&OsStr], prefix: bool) -> bool {
    let Some((first, rest)) = pat.split_first() else {
        return names.is_empty();
    };
    let Some((name, more)) = names.split_first() else {
        return prefix;
    };
    match first {
        Seg::Any => match_segs(rest, names, prefix) || match_segs(pat, more, prefix),
        Seg::Literal(l) => l == name && match_segs(rest, more, prefix),
        Seg::Wild(w) => wild_match(w, name.as_bytes()) && match_segs(rest, more, prefix),
    }
}

/// `*` (any run of bytes) and `?` (one byte) within one name; no leading-dot matches.
fn wild_match(pat: &[u8], name: &[u8]) -> bool {
    if name.first() == Some(&b'.') && pat.first() != Some(&b'.') {
        return false;
    }
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was, and the name position it is currently made to cover up to.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == name[n]) && pat[p] != b'*' {
            p += 1;
            n += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&b| b == b'*')
}

enum Kind {
    File(PathBuf),
    Dir,
    Other,
}

/// What `p` is, following one symlink at most; a file comes with the path to open.
fn classify(p: &Path) -> Kind {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return Kind::Other;
    };
    let (m, target) = if m.file_type().is_symlink() {
        let Ok(t) = std::fs::read_link(p) else {
            return Kind::Other;
        };
        let t = p.parent().unwrap_or(Path::new("/")).join(t);
        match std::fs::symlink_metadata(&t) {
            Ok(m) if !m.file_type().is_symlink() => (m, t),
            _ => return Kind::Other,
        }
    } else {
        (m, p.to_path_buf())
    };
    if m.is_file() {
        Kind::File(target)
    } else if m.is_dir() {
        Kind::Dir
    } else {
        Kind::Other
    }
}

fn walk(dir: &Path, segs: &[Seg], depth: usize, out: &mut BTreeMap<PathBuf, PathBuf>) {
    let Some((first, rest)) = segs.split_first() else {
        return;
    };
    let visit = |p: PathBuf, out: &mut BTreeMap<PathBuf, PathBuf>| match classify(&p) {
        Kind::File(open) if rest.is_empty() => {
            out.insert(p, open);
        }
        Kind::Dir if !rest.is_empty() => walk(&p, rest, depth, out),
        _ => {}
    };
    match first {
        Seg::Literal(l) => visit(dir.join(l), out),
        Seg::Wild(w) => {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            for e in rd.flatten() {
                if wild_match(w, e.file_name().as_bytes()) {
                    visit(e.path(), out);
                }
            }
        }
        Seg::Any => {
            walk(dir, rest, depth, out);
            if depth >= MAX_DEPTH {
                return;
            }
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            for e in rd.flatten() {
                let hidden = e.file_name().as_bytes().first() == Some(&b'.');
                // file_type does not follow symlinks: a linked directory is not descended.
                if !hidden && e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), segs, depth + 1, out);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The driver

struct Root {
    dir: PathBuf,
    recursive: bool,
    watched: Option<DevIno>,
}

struct Source {
    globs: Vec<Glob>,
    tailer: Tailer,
    fds: BTreeMap<FileId, File>,
}

/// Feeds one [`Tailer`] per source from the filesystem. See the module docs.
pub struct LogDriver {
    config: DriverConfig,
    sources: Vec<Source>,
    /// Kept alive for its thread and inotify descriptor; `None` when polling only.
    watcher: Option<notify::RecommendedWatcher>,
    /// The directories to watch, each with the (dev, inode) it is watched as.
    roots: Vec<Root>,
    /// A permit stored by the watcher's thread: many events before we look are one wake.
    wake: Arc<Notify>,
    events: Arc<AtomicU64>,
    buf: Vec<u8>,
    /// A scan is due (woken, or the poll timer fired), at this time (coalescing).
    scan_at: Option<Instant>,
    next_poll: Instant,
    last_scan: Instant,
    /// Reads were left for the next call (the per-call budget ran out).
    more: bool,
    /// The source `pump` serves first (rotating).
    first: usize,
    scans: u64,
    /// Paths whose opening failed, warned about once until they open again.
    failing: BTreeSet<PathBuf>,
}

impl LogDriver {
    /// Sources as configured (validated), and the positions of the last checkpoint (`None`
    /// on a fresh start, where each source's `start_at` applies). Nothing is read yet: the
    /// first call of [`next_lines`](Self::next_lines) scans at once.
    pub fn new(
        sources: &[LogSource],
        config: DriverConfig,
        checkpoint: Option<Vec<FilePosition>>,
    ) -> Result<LogDriver, DriverError> {
        let mut srcs = Vec::new();
        for s in sources {
            let globs = s
                .paths
                .iter()
                .map(|p| Glob::parse(p))
                .collect::<Result<Vec<_>, _>>()?;
            let tc = TailerConfig {
                max_line_bytes: s.max_line_bytes,
                read_chunk: config.read_chunk,
                start_at: s.start_at,
                rotate_wait: config.rotate_wait,
            };
            // Every tailer gets every position: each keeps those its first scan finds.
            let tailer = match &checkpoint {
                Some(p) => Tailer::from_checkpoint(tc, p.clone()),
                None => Tailer::new(tc),
            };
            srcs.push(Source {
                globs,
                tailer,
                fds: BTreeMap::new(),
            });
        }
        let wake = Arc::new(Notify::new());
        let events = Arc::new(AtomicU64::new(0));
        let mut roots: BTreeMap<PathBuf, bool> = BTreeMap::new();
        for g in srcs.iter().flat_map(|s| &s.globs) {
            let (dir, recursive) = g.watch_root();
            *roots.entry(dir).or_default() |= recursive;
        }
        let watcher = if config.notify {
            let globs: Vec<Glob> = srcs.iter().flat_map(|s| s.globs.clone()).collect();
            let (wake, events) = (wake.clone(), events.clone());
            let w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let Ok(ev) = res else { return };
                if relevant(&ev, &globs) {
                    events.fetch_add(1, Ordering::Relaxed);
                    wake.notify_one();
                }
            })
            .map_err(DriverError::Watcher)?;
            Some(w)
        } else {
            None
        };
        let now = Instant::now();
        let mut d = LogDriver {
            buf: vec![0; config.read_chunk.max(1)],
            config,
            sources: srcs,
            watcher,
            roots: roots
                .into_iter()
                .map(|(dir, recursive)| Root {
                    dir,
                    recursive,
                    watched: None,
                })
                .collect(),
            wake,
            events,
            scan_at: Some(now),
            next_poll: now,
            last_scan: now,
            more: false,
            first: 0,
            scans: 0,
            failing: BTreeSet::new(),
        };
        d.watch_roots();
        Ok(d)
    }

    /// The next lines, in file order per file. Waits for a file event or the poll timer
    /// when there is nothing to read. Cancel-safe: dropped while waiting, nothing is lost
    /// (a wake already taken is remembered, and read lines are only ever returned).
    pub async fn next_lines(&mut self) -> Vec<SourceLine> {
        loop {
            // Reads left by the budget go on without waiting (a partial line may need more).
            while self.more {
                let lines = self.pump();
                if !lines.is_empty() {
                    return lines;
                }
                // A budget's worth read without a line: let the runtime's other tasks run.
                tokio::task::yield_now().await;
            }
            if self.scan_at.is_none() {
                tokio::select! {
                    _ = self.wake.notified() => {
                        let at = (Instant::now() + self.config.coalesce)
                            .max(self.last_scan + self.config.min_scan_gap);
                        self.scan_at = Some(at);
                    }
                    _ = tokio::time::sleep_until(self.next_poll) => {
                        self.scan_at = Some(Instant::now());
                    }
                }
            }
            if let Some(at) = self.scan_at {
                tokio::time::sleep_until(at).await;
            }
            self.scan();
            let lines = self.pump();
            if !lines.is_empty() {
                return lines;
            }
        }
    }

    /// The collector holds `source`'s line of `file` ending at `end` (and those before).
    pub fn ack(&mut self, source: usize, file: FileId, end: u64) {
        if let Some(s) = self.sources.get_mut(source) {
            s.tailer.handle_ack(file, end);
        }
    }

    /// The positions to store, if any changed since the last call: all sources' together,
    /// one entry per file (a file in two sources keeps the lower offset: lines again
    /// rather than lost).
    pub fn take_checkpoint(&mut self) -> Option<Vec<FilePosition>> {
        let mut changed = false;
        for s in &mut self.sources {
            changed |= s.tailer.take_checkpoint().is_some();
        }
        changed.then(|| self.positions())
    }

    /// Every position worth storing now.
    pub fn positions(&self) -> Vec<FilePosition> {
        let mut by_file: BTreeMap<DevIno, FilePosition> = BTreeMap::new();
        for p in self.sources.iter().flat_map(|s| s.tailer.positions()) {
            match by_file.get(&p.dev_ino) {
                Some(q) if q.offset <= p.offset => {}
                _ => {
                    by_file.insert(p.dev_ino, p);
                }
            }
        }
        by_file.into_values().collect()
    }

    /// Scans done so far (for tests and the agent's self-metrics).
    pub fn scans(&self) -> u64 {
        self.scans
    }

    /// Relevant file events seen so far.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Descriptors held (files followed, renamed-away ones included).
    pub fn open_files(&self) -> usize {
        self.sources.iter().map(|s| s.fds.len()).sum()
    }

    /// Watch each root directory that exists and is not watched as what it is now: one
    /// missing at start is watched once created; one deleted and re-created (its inotify
    /// watch died with it) is watched again. One `stat` per root and scan.
    fn watch_roots(&mut self) {
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        for r in &mut self.roots {
            let now = std::fs::metadata(&r.dir).ok().map(|m| DevIno {
                dev: m.dev(),
                ino: m.ino(),
            });
            if now == r.watched {
                continue;
            }
            if r.watched.is_some() {
                let _ = w.unwatch(&r.dir);
            }
            r.watched = None;
            if now.is_none() {
                // Not there (yet): the poll timer finds its files meanwhile.
                continue;
            }
            let mode = if r.recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            if let Err(e) = w.watch(&r.dir, mode) {
                // Gone again in between: next scan. Anything else (the inotify watch
                // limit): said once for this directory, which is polled from now on.
                if !matches!(e.kind, notify::ErrorKind::PathNotFound) {
                    warn!(dir = %r.dir.display(), "cannot watch log directory, polling it: {e}");
                    r.watched = now;
                }
            } else {
                r.watched = now;
            }
        }
    }

    /// Observe every matching path of every source; the tailers answer with reads.
    fn scan(&mut self) {
        self.scan_at = None;
        self.scans += 1;
        self.last_scan = Instant::now();
        self.next_poll = self.last_scan + self.config.poll_interval;
        self.watch_roots();
        let now = std::time::Instant::now();
        for s in &mut self.sources {
            let mut paths = BTreeMap::new();
            for g in &s.globs {
                g.expand(&mut paths);
            }
            let mut opened = Vec::with_capacity(paths.len());
            for (path, open) in paths {
                match observe(&path, &open) {
                    Ok(o) => {
                        self.failing.remove(&path);
                        opened.push(o);
                    }
                    // Gone between listing and opening: a rotation; the next scan sees it.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        if self.failing.insert(path.clone()) {
                            warn!(path = %path.display(), "cannot read log file: {e}");
                        }
                    }
                }
            }
            let obs: Vec<Observation> = opened.iter().map(|(_, o)| o.clone()).collect();
            let ids = s.tailer.handle_scan(now, &obs);
            for ((f, _), id) in opened.into_iter().zip(ids) {
                // 0: not followed (yet); already held: a duplicate. Either closes here.
                if id != 0 {
                    s.fds.entry(id).or_insert(f);
                }
            }
            while let Some(id) = s.tailer.poll_release() {
                s.fds.remove(&id);
            }
        }
        self.more = true;
    }

    /// Serve the tailers' reads within the per-call budget; collect their lines.
    fn pump(&mut self) -> Vec<SourceLine> {
        self.more = false;
        let mut budget = self.config.max_bytes_per_call;
        let mut lines = Vec::new();
        // Start at another source each call: one huge backlog cannot starve the others.
        let n = self.sources.len();
        self.first = (self.first + 1) % n.max(1);
        for i in (self.first..n).chain(0..self.first) {
            let s = &mut self.sources[i];
            loop {
                if budget == 0 {
                    self.more = true;
                    break;
                }
                let Some(r) = s.tailer.poll_read() else {
                    break;
                };
                let n = read(&s.fds, &r, &mut self.buf);
                budget = budget.saturating_sub(n.max(1));
                s.tailer
                    .handle_read(std::time::Instant::now(), r.file, r.offset, &self.buf[..n]);
            }
            while let Some(id) = s.tailer.poll_release() {
                s.fds.remove(&id);
            }
            lines.extend(
                std::iter::from_fn(|| s.tailer.poll_line())
                    .map(|line| SourceLine { source: i, line }),
            );
        }
        lines
    }
}

/// `pread` for a request; an error reads as end of file (warned), so the tailer asks again
/// at the next scan rather than waiting forever for an answer.
fn read(fds: &BTreeMap<FileId, File>, r: &ReadRequest, buf: &mut [u8]) -> usize {
    let Some(f) = fds.get(&r.file) else {
        return 0;
    };
    let max = r.max.min(buf.len());
    loop {
        match f.read_at(&mut buf[..max], r.offset) {
            Ok(n) => return n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                warn!(file = r.file, offset = r.offset, "log read failed: {e}");
                return 0;
            }
        }
    }
}

/// Open `open` and describe it as found at `path`: identity and size from `fstat`, the
/// head by `pread`, all through the descriptor that later reads use.
fn observe(path: &Path, open: &Path) -> std::io::Result<(File, Observation)> {
    let f = File::open(open)?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut head = vec![0; HEAD_BYTES.min(m.len() as usize)];
    let mut n = 0;
    while n < head.len() {
        match f.read_at(&mut head[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(n);
    let o = Observation {
        path: path.to_path_buf(),
        dev_ino: DevIno {
            dev: m.dev(),
            ino: m.ino(),
        },
        size: m.len(),
        head,
    };
    Ok((f, o))
}

/// Whether an event can change what a scan finds. Reads (ours too) are not changes: open
/// and close-after-read events would wake a scan that opens the files again (PROBES.md).
/// Data changes count only for matching files (a busy log beside ours is not news);
/// creations, renames and removals also for directories that may lead to a match.
fn relevant(ev: &notify::Event, globs: &[Glob]) -> bool {
    let data = matches!(
        ev.kind,
        EventKind::Modify(ModifyKind::Data(_))
            | EventKind::Modify(ModifyKind::Any)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    );
    let names = matches!(
        ev.kind,
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
    );
    if data {
        ev.paths.iter().any(|p| globs.iter().any(|g| g.matches(p)))
    } else if names {
        ev.paths.iter().any(|p| globs.iter().any(|g| g.leads_to(p)))
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::checkpoint;
    use std::fs::OpenOptions;
    use std::io::Write;

    fn source(paths: &[&Path]) -> LogSource {
        LogSource {
            name: None,
            paths: paths.iter().map(|p| p.display().to_string()).collect(),
            encoding: "utf-8".into(),
            max_line_bytes: 4096,
            multiline_start: None,
            multiline_timeout: Duration::from_secs(1),
            start_at: Default::default(),
        }
    }

    fn quick(poll: Duration) -> DriverConfig {
        DriverConfig {
            poll_interval: poll,
            read_chunk: 64,
            ..DriverConfig::default()
        }
    }

    fn append(path: &Path, text: &str) {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    /// Lines until `n` arrived or `within` passed.
    async fn collect(d: &mut LogDriver, n: usize, within: Duration) -> Vec<SourceLine> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while got.len() < n {
            match tokio::time::timeout_at(deadline, d.next_lines()).await {
                Ok(l) => got.extend(l),
                Err(_) => break,
            }
        }
        got
    }

    fn text(lines: &[SourceLine]) -> Vec<String> {
        lines
            .iter()
            .map(|l| String::from_utf8(l.line.bytes.clone()).unwrap())
            .collect()
    }

    #[test]
    fn wildcards_match_within_a_segment_and_not_leading_dots() {
        assert!(wild_match(b"*.log", b"app.log"));
        assert!(wild_match(b"a?p*", b"app.log.1"));
        assert!(wild_match(b"*a*b*", b"xaxxbx"));
        assert!(!wild_match(b"*.log", b"app.log.1"));
        assert!(!wild_match(b"*.log", b".hidden.log"));
        assert!(wild_match(b".*.log", b".hidden.log"));
        assert!(!wild_match(b"?", b""));
        let g = Glob::parse("/var/log/**/*.log").unwrap();
        assert!(g.matches(Path::new("/var/log/a.log")));
        assert!(g.matches(Path::new("/var/log/x/y/a.log")));
        assert!(!g.matches(Path::new("/var/log/x/a.txt")));
        assert!(g.leads_to(Path::new("/var/log/x")));
        assert!(!g.leads_to(Path::new("/etc/x")));
        assert_eq!(g.watch_root(), (PathBuf::from("/var/log"), true));
        let g = Glob::parse("/var/log/*.log").unwrap();
        assert_eq!(g.watch_root(), (PathBuf::from("/var/log"), false));
        let g = Glob::parse("/var/log/syslog").unwrap();
        assert_eq!(g.watch_root(), (PathBuf::from("/var/log"), false));
        let g = Glob::parse("/srv/*/log/current").unwrap();
        assert_eq!(g.watch_root(), (PathBuf::from("/srv"), true));
        for bad in ["var/log/a", "/var/log/**", "/var/a**b/x", "/", "/a/../b"] {
            let e = Glob::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn expansion_skips_directories_follows_a_symlink_once_and_descends_double_stars() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::create_dir_all(root.join("dir.log")).unwrap();
        std::fs::create_dir_all(root.join(".hid")).unwrap();
        for f in ["x.log", "a/y.log", "a/b/c/z.log", "a/n.txt", ".hid/h.log"] {
            std::fs::write(root.join(f), "1\n").unwrap();
        }
        std::os::unix::fs::symlink(root.join("x.log"), root.join("link.log")).unwrap();
        std::os::unix::fs::symlink(root.join("link.log"), root.join("chain.log")).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("loop")).unwrap();
        let names = |pattern: &str| {
            let mut out = BTreeMap::new();
            Glob::parse(&format!("{}/{pattern}", root.display()))
                .unwrap()
                .expand(&mut out);
            out.into_iter()
                .map(|(p, open)| {
                    let rel = |p: &Path| p.strip_prefix(root).unwrap().display().to_string();
                    (rel(&p), rel(&open))
                })
                .collect::<Vec<_>>()
        };
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            names("*.log"),
            [s("link.log", "x.log"), s("x.log", "x.log")],
            "no directory, no chain of links"
        );
        assert_eq!(
            names("**/*.log"),
            [
                s("a/b/c/z.log", "a/b/c/z.log"),
                s("a/y.log", "a/y.log"),
                s("link.log", "x.log"),
                s("x.log", "x.log"),
            ],
            "not through the linked directory, not into hidden ones"
        );
        assert_eq!(names("?/*.log"), [s("a/y.log", "a/y.log")]);
        assert_eq!(names("a/b/c/z.log"), [s("a/b/c/z.log", "a/b/c/z.log")]);
        assert!(names("missing/*.log").is_empty());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn appends_arrive_through_notify_within_a_second() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("app.log");
        append(&f, "a1\n");
        // A poll far away: only an event can deliver in time.
        let mut drv =
            LogDriver::new(&[source(&[&f])], quick(Duration::from_secs(60)), None).unwrap();
        let got = collect(&mut drv, 1, Duration::from_secs(1)).await;
        assert_eq!(text(&got), ["a1"]);
        for i in 2..5 {
            append(&f, &format!("a{i}\n"));
            let got = collect(&mut drv, 1, Duration::from_secs(1)).await;
            assert_eq!(text(&got), [format!("a{i}")]);
        }
        assert_eq!(got_path(&got), f);
    }

    fn got_path(l: &[SourceLine]) -> PathBuf {
        l[0].line.path.to_path_buf()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn rename_rotation_while_writing_delivers_every_line_once_in_order() {
        let d = tempfile::tempdir().unwrap();
        let live = d.path().join("app.log");
        append(&live, "");
        let mut drv =
            LogDriver::new(&[source(&[&live])], quick(Duration::from_secs(2)), None).unwrap();
        let dir = d.path().to_path_buf();
        const N: usize = 300;
        let writer = std::thread::spawn(move || {
            let live = dir.join("app.log");
            let mut w = OpenOptions::new().append(true).open(&live).unwrap();
            for i in 0..N {
                if i > 0 && i % 50 == 0 {
                    // logrotate's default: rename, the writer goes on a little, reopens.
                    std::fs::rename(&live, dir.join(format!("app.log.{i}"))).unwrap();
                    for _ in 0..3 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    w = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&live)
                        .unwrap();
                }
                w.write_all(format!("{i:04}\n").as_bytes()).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let got = collect(&mut drv, N, Duration::from_secs(4)).await;
        writer.join().unwrap();
        let mut serials: Vec<usize> = text(&got).iter().map(|s| s.parse().unwrap()).collect();
        // In order within each file.
        let mut last: BTreeMap<FileId, usize> = BTreeMap::new();
        for (l, s) in got.iter().zip(&serials) {
            if let Some(p) = last.insert(l.line.file, *s) {
                assert!(p < *s, "{p} then {s} in file {}", l.line.file);
            }
        }
        serials.sort();
        assert_eq!(
            serials,
            (0..N).collect::<Vec<_>>(),
            "each line exactly once"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn copytruncate_and_delete_then_recreate_lose_and_repeat_nothing() {
        let d = tempfile::tempdir().unwrap();
        let live = d.path().join("app.log");
        append(&live, "a1\na2\na3\n");
        let mut drv =
            LogDriver::new(&[source(&[&live])], quick(Duration::from_secs(2)), None).unwrap();
        assert_eq!(
            text(&collect(&mut drv, 3, Duration::from_secs(1)).await),
            ["a1", "a2", "a3"]
        );
        // copytruncate: the copy is outside our paths; the writer keeps its descriptor.
        std::fs::copy(&live, d.path().join("app.log.1")).unwrap();
        OpenOptions::new()
            .write(true)
            .open(&live)
            .unwrap()
            .set_len(0)
            .unwrap();
        // The truncate is seen before new bytes pass the old offset (a tailer's limit).
        assert!(
            collect(&mut drv, 1, Duration::from_millis(300))
                .await
                .is_empty()
        );
        append(&live, "b1\nb2\n");
        assert_eq!(
            text(&collect(&mut drv, 2, Duration::from_secs(1)).await),
            ["b1", "b2"]
        );
        // Delete and re-create.
        std::fs::remove_file(&live).unwrap();
        append(&live, "c1\n");
        assert_eq!(
            text(&collect(&mut drv, 1, Duration::from_secs(1)).await),
            ["c1"]
        );
        assert!(
            collect(&mut drv, 1, Duration::from_millis(300))
                .await
                .is_empty(),
            "nothing twice"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn new_files_matching_a_glob_are_picked_up_others_are_not() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("logs")).unwrap();
        let flat = d.path().join("logs/*.log");
        let deep = d.path().join("deep/**/*.log");
        let mut drv = LogDriver::new(
            &[source(&[&flat]), source(&[&deep])],
            quick(Duration::from_millis(500)),
            None,
        )
        .unwrap();
        assert!(
            collect(&mut drv, 1, Duration::from_millis(200))
                .await
                .is_empty()
        );
        append(&d.path().join("logs/b.log"), "b\n");
        append(&d.path().join("logs/c.txt"), "not ours\n");
        let got = collect(&mut drv, 1, Duration::from_secs(1)).await;
        assert_eq!(text(&got), ["b"]);
        assert_eq!(got[0].source, 0);
        // A directory that did not exist at start, below a `**`.
        std::fs::create_dir_all(d.path().join("deep/x/y")).unwrap();
        append(&d.path().join("deep/x/y/z.log"), "z\n");
        let got = collect(&mut drv, 1, Duration::from_secs(2)).await;
        assert_eq!(text(&got), ["z"]);
        assert_eq!(got[0].source, 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_watched_directory_deleted_and_recreated_is_watched_again() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("logs");
        std::fs::create_dir(&dir).unwrap();
        let f = dir.join("app.log");
        append(&f, "r1\n");
        let mut drv =
            LogDriver::new(&[source(&[&f])], quick(Duration::from_secs(1)), None).unwrap();
        assert_eq!(collect(&mut drv, 1, Duration::from_secs(1)).await.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            collect(&mut drv, 1, Duration::from_millis(100))
                .await
                .is_empty()
        );
        std::fs::create_dir(&dir).unwrap();
        append(&f, "r2\n");
        // Found by the poll timer (nothing watched the parent)...
        assert_eq!(
            text(&collect(&mut drv, 1, Duration::from_millis(1500)).await),
            ["r2"]
        );
        // ...which watched the new directory: the next append is an event again.
        let events = drv.events();
        append(&f, "r3\n");
        assert_eq!(
            text(&collect(&mut drv, 1, Duration::from_secs(1)).await),
            ["r3"]
        );
        assert!(drv.events() > events, "seen through notify");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_busy_log_costs_a_few_scans_a_second_and_a_rotated_one_is_closed() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("app.log");
        append(&f, "");
        let cfg = DriverConfig {
            rotate_wait: Duration::from_millis(200),
            ..quick(Duration::from_millis(300))
        };
        let mut drv = LogDriver::new(&[source(&[&f])], cfg, None).unwrap();
        collect(&mut drv, 1, Duration::from_millis(50)).await;
        let scans = drv.scans();
        let path = f.clone();
        let began = std::time::Instant::now();
        let writer = std::thread::spawn(move || {
            let mut w = OpenOptions::new().append(true).open(&path).unwrap();
            for i in 0..400 {
                w.write_all(format!("{i}\n").as_bytes()).unwrap();
                std::thread::sleep(Duration::from_micros(2500));
            }
        });
        let got = collect(&mut drv, 400, Duration::from_secs(3)).await;
        writer.join().unwrap();
        assert_eq!(got.len(), 400);
        // ~1 s of writes (longer on a busy machine); min_scan_gap is 100 ms.
        let took = began.elapsed();
        let n = drv.scans() - scans;
        let most = (took.as_millis() / 100) as u64 + 6;
        assert!(n <= most, "{n} scans in {took:?}");

        // Renamed away: read to its end, then closed after rotate_wait.
        std::fs::rename(&f, d.path().join("app.log.1")).unwrap();
        append(&f, "new\n");
        assert_eq!(
            text(&collect(&mut drv, 1, Duration::from_secs(1)).await),
            ["new"]
        );
        assert_eq!(drv.open_files(), 2);
        collect(&mut drv, 1, Duration::from_millis(800)).await;
        assert_eq!(
            drv.open_files(),
            1,
            "the rotated file's descriptor is closed"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_large_backlog_comes_in_bounded_batches_in_order() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("app.log");
        let all: String = (0..2000).map(|i| format!("{i:05}\n")).collect();
        append(&f, &all);
        let cfg = DriverConfig {
            max_bytes_per_call: 1000,
            ..quick(Duration::from_secs(60))
        };
        let mut drv = LogDriver::new(&[source(&[&f])], cfg, None).unwrap();
        let mut got = Vec::new();
        let mut calls = 0;
        while got.len() < 2000 && calls < 100 {
            let batch = tokio::time::timeout(Duration::from_secs(1), drv.next_lines())
                .await
                .expect("the rest comes without waiting for an event");
            // The budget is checked before each read of up to read_chunk (64) bytes.
            assert!(
                batch.len() <= (1000 + 64) / 6 + 1,
                "{} lines in one call",
                batch.len()
            );
            got.extend(batch);
            calls += 1;
        }
        let want: Vec<String> = (0..2000).map(|i| format!("{i:05}")).collect();
        assert_eq!(text(&got), want);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn one_source_backlog_does_not_starve_another() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a.log"), d.path().join("b.log"));
        append(&a, &"a\n".repeat(5000));
        append(&b, &"b\n".repeat(5000));
        let cfg = DriverConfig {
            max_bytes_per_call: 500,
            ..quick(Duration::from_secs(60))
        };
        let mut drv = LogDriver::new(&[source(&[&a]), source(&[&b])], cfg, None).unwrap();
        let mut seen = BTreeSet::new();
        for _ in 0..2 {
            for l in drv.next_lines().await {
                seen.insert(l.source);
            }
        }
        assert_eq!(seen.len(), 2, "both sources within two calls");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn polling_alone_delivers_without_notify() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("app.log");
        let cfg = DriverConfig {
            notify: false,
            ..quick(Duration::from_millis(300))
        };
        let mut drv = LogDriver::new(&[source(&[&f])], cfg, None).unwrap();
        append(&f, "p1\n");
        assert_eq!(
            text(&collect(&mut drv, 1, Duration::from_secs(1)).await),
            ["p1"]
        );
        append(&f, "p2\n");
        assert_eq!(
            text(&collect(&mut drv, 1, Duration::from_secs(1)).await),
            ["p2"]
        );
        assert_eq!(drv.events(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_restart_resends_only_what_was_not_acknowledged() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("app.log");
        let cp = d.path().join("logs.checkpoint");
        append(&f, "l1\nl2\nl3\n");
        let sources = [source(&[&f])];
        let mut drv = LogDriver::new(&sources, quick(Duration::from_secs(2)), None).unwrap();
        let got = collect(&mut drv, 3, Duration::from_secs(1)).await;
        assert_eq!(text(&got), ["l1", "l2", "l3"]);
        for l in &got[..2] {
            drv.ack(l.source, l.line.file, l.line.end);
        }
        checkpoint::store(&cp, &drv.take_checkpoint().unwrap()).unwrap();
        assert_eq!(drv.take_checkpoint(), None, "unchanged");
        drop(drv);
        append(&f, "l4\n");
        let positions = checkpoint::load(&cp).unwrap();
        let mut drv = LogDriver::new(&sources, quick(Duration::from_secs(2)), positions).unwrap();
        assert_eq!(
            text(&collect(&mut drv, 2, Duration::from_secs(1)).await),
            ["l3", "l4"]
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_quiet_file_causes_no_scans_beyond_the_poll_timer() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("app.log");
        append(&f, "q1\n");
        // A busy file beside ours, not matching: its writes are not our news.
        let other = d.path().join("other.txt");
        let mut drv =
            LogDriver::new(&[source(&[&f])], quick(Duration::from_secs(2)), None).unwrap();
        assert_eq!(collect(&mut drv, 1, Duration::from_secs(1)).await.len(), 1);
        let (scans, events) = (drv.scans(), drv.events());
        let busy = std::thread::spawn(move || {
            for _ in 0..50 {
                append(&other, "x\n");
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        assert!(
            collect(&mut drv, 1, Duration::from_secs(1))
                .await
                .is_empty()
        );
        busy.join().unwrap();
        assert!(drv.scans() - scans <= 2, "{} scans", drv.scans() - scans);
        // Our own opens and reads of app.log woke nothing.
        assert_eq!(drv.events(), events);
        assert_eq!(drv.open_files(), 1);
    }
}

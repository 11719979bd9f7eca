//! The tailer's state: which files exist, how far each was read and acknowledged, and the
//! lines cut from the bytes read. Pure: no file is opened and no clock read here.
//!
//! The driver (the watcher and the reads) feeds it, quinn-proto style:
//!
//! - [`Tailer::handle_scan`]: what the configured paths hold now, one [`Observation`] per
//!   path (taken from a descriptor the driver opened: `fstat` plus a `pread` of the head).
//!   The answer says, per observation, which [`FileId`] the driver keeps that descriptor as.
//! - [`Tailer::handle_read`]: the bytes a [`ReadRequest`] returned (empty: end of file).
//! - [`Tailer::handle_ack`]: the collector durably holds a line, up to its `end` offset.
//!
//! and drains it with [`Tailer::poll_read`], [`Tailer::poll_line`], [`Tailer::poll_release`]
//! (close that descriptor) and [`Tailer::take_checkpoint`].
//!
//! How a file is recognised (see `fingerprint`): same (dev, inode) and a consistent head is
//! the same file. The same inode with a different head (a reused inode, or a file
//! truncated and rewritten), or with a size below what we already read (truncate,
//! copytruncate), is a new file read from 0: its old state is dropped and its id released.
//! A file no longer at any configured path (renamed away, unlinked) stays open and is read
//! to its end; it is released once at end of file and idle for `rotate_wait`, so a writer
//! that has not yet reopened its log loses nothing. (Acknowledgement is not awaited: a
//! file gone from our paths cannot be found again after a restart, so its position would
//! serve nothing, and a collector outage must not pin descriptors.)
//!
//! Known limits, by nature rather than by choice: a file truncated and rewritten past our
//! offset with the same first bytes before we look again is indistinguishable from an
//! append; lines written between copytruncate's copy and its truncate exist only in the
//! copy (the rotator loses them unless the copy is itself within the configured paths).
//! A new file whose first 256 bytes equal a followed file's is left unread for up to
//! [`COPY_WAIT`]: it may be copytruncate's copy, seen before the truncate; a file that
//! merely starts with the same long banner is read whole after that wait.

use super::fingerprint::{DevIno, Fingerprint, HEAD_BYTES, heads_consistent};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The tailer's name for one file's content, stable while that content is followed.
/// Never reused: a replaced file gets a new id, so late acks for the old one are ignored.
pub type FileId = u64;

/// Where to start in a file seen for the first time on a fresh start (no checkpoint).
/// Files that appear later are always read from the beginning: they are new, and
/// whatever was written to them is news.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    #[default]
    Beginning,
    End,
}

#[derive(Debug, Clone)]
pub struct TailerConfig {
    /// Longest line kept whole (without its newline); longer ones are split and marked.
    pub max_line_bytes: usize,
    /// Bytes asked for per read.
    pub read_chunk: usize,
    pub start_at: StartAt,
    /// How long a file no longer at any path stays open after its last new bytes.
    pub rotate_wait: Duration,
}

impl Default for TailerConfig {
    fn default() -> Self {
        TailerConfig {
            max_line_bytes: 32 * 1024,
            read_chunk: 64 * 1024,
            start_at: StartAt::Beginning,
            rotate_wait: Duration::from_secs(60),
        }
    }
}

/// One path as found by a scan.
#[derive(Debug, Clone)]
pub struct Observation {
    pub path: PathBuf,
    pub dev_ino: DevIno,
    pub size: u64,
    /// The first `min(size, HEAD_BYTES)` bytes.
    pub head: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub file: FileId,
    pub offset: u64,
    pub max: usize,
}

/// A complete line (without its newline), or a piece of an over-long one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub file: FileId,
    /// Where the file was last seen.
    pub path: Arc<Path>,
    pub offset: u64,
    /// Just past the bytes this record consumed (its newline included): what to ack.
    pub end: u64,
    pub bytes: Vec<u8>,
    /// A piece of a line longer than `max_line_bytes`; the next piece follows.
    pub split: bool,
    /// Continues the previous piece of the same line.
    pub continued: bool,
}

/// One file's position as stored: only acknowledged offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePosition {
    pub dev_ino: DevIno,
    pub fingerprint: Fingerprint,
    pub offset: u64,
    /// Informational: where it was last seen.
    pub path: Option<PathBuf>,
}

#[derive(Debug)]
struct Tracked {
    dev_ino: DevIno,
    head: Vec<u8>,
    path: Arc<Path>,
    attached: bool,
    read_offset: u64,
    /// Offset of `buf[0]`: everything before it was emitted.
    line_start: u64,
    buf: Vec<u8>,
    in_split: bool,
    /// Started at end-of-file minus one: drop bytes through the first newline.
    skip_partial: bool,
    acked: u64,
    reading: bool,
    at_eof: bool,
    last_data: Instant,
}

#[derive(Debug)]
pub struct Tailer {
    config: TailerConfig,
    files: BTreeMap<FileId, Tracked>,
    next_id: FileId,
    /// Positions restored from a checkpoint and not yet matched to a file. Kept until the
    /// first scan ends: whatever it did not find is gone.
    restored: Vec<FilePosition>,
    fresh_start: bool,
    scanned: bool,
    reads: VecDeque<ReadRequest>,
    lines: VecDeque<Line>,
    releases: VecDeque<FileId>,
    /// Files truncated or replaced lately: what a copy made by copytruncate is recognised
    /// by. Kept for [`COPY_WAIT`], not one scan: a scan may list the directory before the
    /// copy is made and open the original after its truncate, so the copy comes next scan.
    replaced: Vec<Replaced>,
    dirty: bool,
    /// New files whose whole head equals a followed file's, first seen when: a copy in
    /// the making (copytruncate copies, then truncates), left unread for a while.
    deferred: BTreeMap<DevIno, Instant>,
}

#[derive(Debug)]
struct Replaced {
    dev: u64,
    /// Of a whole head: a short one would match any file that merely starts alike.
    fingerprint: Fingerprint,
    /// Where the lines delivered from it end: a copy holds at least that much.
    delivered: u64,
    at: Instant,
}

/// How long a new file that looks like a copy of a followed one waits for its original to
/// be truncated (logrotate's copytruncate truncates right after copying) before it is
/// taken for a file of its own and read whole.
pub const COPY_WAIT: Duration = Duration::from_secs(5);

impl Tailer {
    /// A tailer with no memory of earlier runs: `start_at` applies to the first scan.
    pub fn new(config: TailerConfig) -> Self {
        Self::restore(config, Vec::new(), true)
    }

    /// A tailer resuming from a checkpoint's positions. Files the checkpoint does not know
    /// are read from the beginning (they appeared while the agent was down).
    pub fn from_checkpoint(config: TailerConfig, positions: Vec<FilePosition>) -> Self {
        Self::restore(config, positions, false)
    }

    fn restore(config: TailerConfig, restored: Vec<FilePosition>, fresh_start: bool) -> Self {
        let config = TailerConfig {
            max_line_bytes: config.max_line_bytes.max(1),
            read_chunk: config.read_chunk.max(1),
            ..config
        };
        Tailer {
            config,
            files: BTreeMap::new(),
            next_id: 1,
            restored,
            fresh_start,
            scanned: false,
            reads: VecDeque::new(),
            lines: VecDeque::new(),
            releases: VecDeque::new(),
            replaced: Vec::new(),
            dirty: false,
            deferred: BTreeMap::new(),
        }
    }

    /// What the configured paths hold now. Returns, for each observation in order, the id
    /// under which the driver keeps the descriptor it observed through (if it already has
    /// one for that id, the new descriptor is a duplicate and may be closed).
    pub fn handle_scan(&mut self, now: Instant, observations: &[Observation]) -> Vec<FileId> {
        for t in self.files.values_mut() {
            t.attached = false;
        }
        self.replaced
            .retain(|r| now.saturating_duration_since(r.at) < COPY_WAIT);
        // Files we know first: a truncated original must be seen as such before its copy
        // is looked at, whatever order the paths came in.
        let mut ids = vec![0; observations.len()];
        // Restored positions count as known: copytruncate may have run while we were down.
        for pass in [true, false] {
            for (i, o) in observations.iter().enumerate() {
                let known = self.files.values().any(|t| t.dev_ino == o.dev_ino)
                    || self.restored.iter().any(|p| p.dev_ino == o.dev_ino);
                if known == pass && ids[i] == 0 {
                    ids[i] = self.observe(now, o);
                }
            }
        }
        self.deferred
            .retain(|_, first| now.saturating_duration_since(*first) < 2 * COPY_WAIT);
        if !self.scanned {
            self.scanned = true;
            if !self.restored.is_empty() {
                self.restored.clear();
                self.dirty = true;
            }
        }
        let ids_now: Vec<FileId> = self.files.keys().copied().collect();
        for id in ids_now {
            let t = &self.files[&id];
            if !t.attached {
                if self.releasable(now, id) {
                    self.release(id);
                } else {
                    // Nobody tells us a detached file grew: look at its end each scan.
                    self.schedule(id);
                }
            }
        }
        ids
    }

    fn observe(&mut self, now: Instant, o: &Observation) -> FileId {
        let head = &o.head[..o.head.len().min(HEAD_BYTES)];
        let known = self
            .files
            .iter()
            .find(|(_, t)| t.dev_ino == o.dev_ino)
            .map(|(&id, _)| id);
        if let Some(id) = known {
            let t = self.files.get_mut(&id).expect("found above");
            if heads_consistent(&t.head, head) && o.size >= t.read_offset {
                if head.len() > t.head.len() {
                    t.head = head.to_vec();
                }
                if *t.path != *o.path {
                    t.path = Arc::from(o.path.as_path());
                }
                t.attached = true;
                if o.size > t.read_offset {
                    self.schedule(id);
                }
                return id;
            }
            // Truncated, or the inode now holds other content: the old file is gone.
            if t.head.len() == HEAD_BYTES {
                self.replaced.push(Replaced {
                    dev: t.dev_ino.dev,
                    fingerprint: Fingerprint::of(&t.head),
                    delivered: t.line_start,
                    at: now,
                });
            }
            self.release(id);
            return self.track(now, o, 0);
        }
        if let Some(i) = self.restored.iter().position(|p| p.dev_ino == o.dev_ino) {
            let p = self.restored.swap_remove(i);
            self.dirty = true;
            let start = if p.fingerprint.matches(head) && o.size >= p.offset {
                p.offset
            } else {
                // Truncated while we were down (copytruncate): its copy, if in our paths,
                // holds what we had delivered, and is recognised like one made while up.
                if usize::from(p.fingerprint.len) == HEAD_BYTES {
                    self.replaced.push(Replaced {
                        dev: o.dev_ino.dev,
                        fingerprint: p.fingerprint,
                        delivered: p.offset,
                        at: now,
                    });
                }
                0
            };
            return self.track(now, o, start);
        }
        // copytruncate's copy within our paths: a new file with the full head of a file
        // truncated lately (this scan or one within `COPY_WAIT`), at least as long as what
        // was delivered from it. Its bytes up to there were delivered already. Both head
        // conditions matter: a short head would match any file that merely starts alike,
        // and a new file sharing a fixed banner with a live one (rename rotation of a log
        // that starts with one) must be read whole. A copy seen before its original's
        // truncate waits for it (`COPY_WAIT`), then is read whole: duplicates, never loss.
        if head.len() == HEAD_BYTES
            && let Some(i) = self.replaced.iter().position(|r| {
                r.dev == o.dev_ino.dev && r.fingerprint.matches(head) && o.size >= r.delivered
            })
        {
            // One copy per truncate: a second look-alike is no copy of it.
            let start = self.replaced.swap_remove(i).delivered;
            return self.track(now, o, start);
        }
        // A copy of a followed file whose original has not been truncated (yet): seen
        // between copytruncate's copy and its truncate. Not read now (the original still
        // holds these lines); a later scan that sees the truncate takes it as the copy.
        if head.len() == HEAD_BYTES
            && self
                .files
                .values()
                .any(|t| t.dev_ino.dev == o.dev_ino.dev && t.head.as_slice() == head)
        {
            let first = *self.deferred.entry(o.dev_ino).or_insert(now);
            if now.saturating_duration_since(first) < COPY_WAIT {
                return 0;
            }
        }
        self.deferred.remove(&o.dev_ino);
        if self.fresh_start && !self.scanned && self.config.start_at == StartAt::End && o.size > 0 {
            // Start one byte early and skip through the next newline: if the last byte is
            // one, nothing else is skipped; if a line is being written, its tail (whose
            // start we never saw) is not sent as a line.
            let id = self.track(now, o, o.size - 1);
            let t = self.files.get_mut(&id).expect("just tracked");
            t.skip_partial = true;
            t.acked = o.size;
            return id;
        }
        self.track(now, o, 0)
    }

    fn track(&mut self, now: Instant, o: &Observation, start: u64) -> FileId {
        let id = self.next_id;
        self.next_id += 1;
        self.files.insert(
            id,
            Tracked {
                dev_ino: o.dev_ino,
                head: o.head[..o.head.len().min(HEAD_BYTES)].to_vec(),
                path: Arc::from(o.path.as_path()),
                attached: true,
                read_offset: start,
                line_start: start,
                buf: Vec::new(),
                in_split: false,
                skip_partial: false,
                acked: start,
                reading: false,
                at_eof: false,
                last_data: now,
            },
        );
        self.dirty = true;
        if o.size > start {
            self.schedule(id);
        }
        id
    }

    fn schedule(&mut self, id: FileId) {
        let max = self.config.read_chunk;
        if let Some(t) = self.files.get_mut(&id)
            && !t.reading
        {
            t.reading = true;
            self.reads.push_back(ReadRequest {
                file: id,
                offset: t.read_offset,
                max,
            });
        }
    }

    fn releasable(&self, now: Instant, id: FileId) -> bool {
        let t = &self.files[&id];
        // The end must be fresh: a read still out may bring bytes written since.
        !t.attached
            && t.at_eof
            && !t.reading
            && now.saturating_duration_since(t.last_data) >= self.config.rotate_wait
    }

    fn release(&mut self, id: FileId) {
        if self.files.remove(&id).is_some() {
            self.releases.push_back(id);
            self.dirty = true;
        }
    }

    /// The bytes read for a request (`data` empty: end of file at `offset`). Answers to
    /// requests of released files, or at an offset that is no longer current, are ignored.
    pub fn handle_read(&mut self, now: Instant, file: FileId, offset: u64, data: &[u8]) {
        let max_line = self.config.max_line_bytes;
        let Some(t) = self.files.get_mut(&file) else {
            return;
        };
        if offset != t.read_offset {
            return;
        }
        t.reading = false;
        if data.is_empty() {
            t.at_eof = true;
            if self.releasable(now, file) {
                self.release(file);
            }
            return;
        }
        t.at_eof = false;
        t.last_data = now;
        t.read_offset += data.len() as u64;
        t.buf.extend_from_slice(data);
        if t.skip_partial {
            let skip = match t.buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    t.skip_partial = false;
                    i + 1
                }
                None => t.buf.len(),
            };
            t.buf.drain(..skip);
            t.line_start += skip as u64;
            if t.acked < t.line_start {
                t.acked = t.line_start;
                self.dirty = true;
            }
        }
        cut_lines(t, file, max_line, &mut self.lines);
        // Read on until a read finds the end: the file may have grown past what we saw.
        self.schedule(file);
    }

    /// The collector holds the line of `file` ending at `end` (and all before it).
    pub fn handle_ack(&mut self, file: FileId, end: u64) {
        if let Some(t) = self.files.get_mut(&file) {
            let end = end.min(t.line_start);
            if end > t.acked {
                t.acked = end;
                self.dirty = true;
            }
        }
    }

    pub fn poll_read(&mut self) -> Option<ReadRequest> {
        self.reads.pop_front()
    }

    pub fn poll_line(&mut self) -> Option<Line> {
        self.lines.pop_front()
    }

    /// A file the tailer no longer follows: close its descriptor.
    pub fn poll_release(&mut self) -> Option<FileId> {
        self.releases.pop_front()
    }

    /// The positions to store, if they changed since the last call.
    pub fn take_checkpoint(&mut self) -> Option<Vec<FilePosition>> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        Some(self.positions())
    }

    /// Every position worth storing: followed files at their acknowledged offset, plus
    /// restored positions not yet matched (so a crash before the first scan keeps them).
    pub fn positions(&self) -> Vec<FilePosition> {
        let mut out: Vec<FilePosition> = self
            .files
            .values()
            .map(|t| FilePosition {
                dev_ino: t.dev_ino,
                fingerprint: Fingerprint::of(&t.head),
                offset: t.acked,
                path: Some(t.path.to_path_buf()),
            })
            .collect();
        out.extend(self.restored.iter().cloned());
        out
    }

    /// How many files are followed (open descriptors the driver should hold).
    pub fn files(&self) -> usize {
        self.files.len()
    }
}

/// Cut complete lines, and pieces of over-long ones, off the front of `t.buf`.
fn cut_lines(t: &mut Tracked, file: FileId, max_line: usize, out: &mut VecDeque<Line>) {
    let mut start = 0;
    loop {
        let rest = &t.buf[start..];
        // A newline within max_line + 1 bytes ends a line that fits.
        let window = &rest[..rest.len().min(max_line + 1)];
        let (len, consumed, split) = match memchr::memchr(b'\n', window) {
            Some(i) => (i, i + 1, false),
            None if rest.len() > max_line => (max_line, max_line, true),
            None => break,
        };
        let offset = t.line_start;
        t.line_start += consumed as u64;
        out.push_back(Line {
            file,
            path: t.path.clone(),
            offset,
            end: t.line_start,
            bytes: rest[..len].to_vec(),
            split,
            continued: t.in_split,
        });
        t.in_split = split;
        start += consumed;
    }
    t.buf.drain(..start);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(path: &str, ino: u64, content: &[u8]) -> Observation {
        Observation {
            path: PathBuf::from(path),
            dev_ino: DevIno { dev: 1, ino },
            size: content.len() as u64,
            head: content[..content.len().min(HEAD_BYTES)].to_vec(),
        }
    }

    /// Serve every read from `files` (by id) until none is asked; return the lines.
    fn pump(t: &mut Tailer, now: Instant, files: &BTreeMap<FileId, Vec<u8>>) -> Vec<String> {
        while let Some(r) = t.poll_read() {
            let content = &files[&r.file];
            let from = (r.offset as usize).min(content.len());
            let to = (from + r.max).min(content.len());
            t.handle_read(now, r.file, r.offset, &content[from..to]);
        }
        std::iter::from_fn(|| t.poll_line())
            .map(|l| String::from_utf8(l.bytes).unwrap())
            .collect()
    }

    fn small() -> TailerConfig {
        TailerConfig {
            max_line_bytes: 8,
            read_chunk: 5,
            ..TailerConfig::default()
        }
    }

    #[test]
    fn appends_yield_complete_lines_and_a_partial_one_waits() {
        let now = Instant::now();
        let mut t = Tailer::new(small());
        let mut c = b"one\ntwo\nthr".to_vec();
        let ids = t.handle_scan(now, &[obs("a", 7, &c)]);
        let mut files = BTreeMap::from([(ids[0], c.clone())]);
        assert_eq!(pump(&mut t, now, &files), ["one", "two"]);
        c.extend_from_slice(b"ee\n");
        files.insert(ids[0], c.clone());
        assert_eq!(t.handle_scan(now, &[obs("a", 7, &c)]), ids);
        assert_eq!(pump(&mut t, now, &files), ["three"]);
    }

    #[test]
    fn long_lines_are_split_and_marked_never_dropped() {
        let now = Instant::now();
        let mut t = Tailer::new(small());
        let c = b"0123456789abcdefXYZ\nok\n".to_vec();
        let ids = t.handle_scan(now, &[obs("a", 7, &c)]);
        let files = BTreeMap::from([(ids[0], c)]);
        while let Some(r) = t.poll_read() {
            let f = &files[&r.file];
            let from = r.offset as usize;
            let to = (from + r.max).min(f.len());
            t.handle_read(now, r.file, r.offset, &f[from..to]);
        }
        let l: Vec<Line> = std::iter::from_fn(|| t.poll_line()).collect();
        let parts: Vec<(&[u8], bool, bool)> = l
            .iter()
            .map(|l| (l.bytes.as_slice(), l.split, l.continued))
            .collect();
        assert_eq!(
            parts,
            [
                (&b"01234567"[..], true, false),
                (&b"89abcdef"[..], true, true),
                (&b"XYZ"[..], false, true),
                (&b"ok"[..], false, false),
            ]
        );
        assert_eq!((l[2].offset, l[2].end), (16, 20));
    }

    #[test]
    fn rename_rotation_drains_the_old_file_then_releases_it() {
        let now = Instant::now();
        let mut t = Tailer::new(small());
        let old = b"a1\na2\n".to_vec();
        let ids = t.handle_scan(now, &[obs("app.log", 1, &old)]);
        let mut files = BTreeMap::from([(ids[0], old.clone())]);
        assert_eq!(pump(&mut t, now, &files), ["a1", "a2"]);
        // Renamed out of our paths; the writer still appends to it; a new file appears.
        let old = b"a1\na2\na3\n".to_vec();
        files.insert(ids[0], old);
        let new = b"b1\n".to_vec();
        let ids2 = t.handle_scan(now, &[obs("app.log", 2, &new)]);
        assert_ne!(ids2[0], ids[0]);
        files.insert(ids2[0], new);
        let mut got = pump(&mut t, now, &files);
        got.sort();
        assert_eq!(got, ["a3", "b1"]);
        // Not released before rotate_wait, nor while a probe of its end is out.
        t.handle_scan(now, &[obs("app.log", 2, &files[&ids2[0]])]);
        pump(&mut t, now, &files);
        assert_eq!(t.poll_release(), None, "rotate_wait");
        let later = now + Duration::from_secs(61);
        t.handle_scan(later, &[obs("app.log", 2, &files[&ids2[0]])]);
        assert_eq!(t.poll_release(), Some(ids[0]));
        assert_eq!(t.files(), 1);
    }

    #[test]
    fn truncation_and_inode_reuse_start_a_new_file_from_zero() {
        let now = Instant::now();
        let mut t = Tailer::new(small());
        let c = b"x1\nx2\n".to_vec();
        let id = t.handle_scan(now, &[obs("a", 5, &c)])[0];
        let mut files = BTreeMap::from([(id, c)]);
        assert_eq!(pump(&mut t, now, &files), ["x1", "x2"]);
        // copytruncate: same inode, smaller than our offset.
        let c = b"y\n".to_vec();
        let id2 = t.handle_scan(now, &[obs("a", 5, &c)])[0];
        assert_ne!(id2, id);
        assert_eq!(t.poll_release(), Some(id));
        files.insert(id2, c);
        assert_eq!(pump(&mut t, now, &files), ["y"]);
        // Same inode, larger, but other first bytes: a new file (inode reuse).
        let c = b"z1\nz2\nz3\n".to_vec();
        let id3 = t.handle_scan(now, &[obs("a", 5, &c)])[0];
        assert_ne!(id3, id2);
        files.insert(id3, c);
        assert_eq!(pump(&mut t, now, &files), ["z1", "z2", "z3"]);
    }

    #[test]
    fn checkpoints_hold_acked_offsets_and_resume_there() {
        let now = Instant::now();
        let mut t = Tailer::new(small());
        let c = b"l1\nl2\nl3\n".to_vec();
        let id = t.handle_scan(now, &[obs("a", 5, &c)])[0];
        let files = BTreeMap::from([(id, c.clone())]);
        assert_eq!(pump(&mut t, now, &files).len(), 3);
        t.handle_ack(id, 6);
        let cp = t.take_checkpoint().unwrap();
        assert_eq!(cp[0].offset, 6);
        assert_eq!(t.take_checkpoint(), None, "unchanged");
        let mut t = Tailer::from_checkpoint(small(), cp);
        let id = t.handle_scan(now, &[obs("renamed", 5, &c)])[0];
        let files = BTreeMap::from([(id, c)]);
        assert_eq!(pump(&mut t, now, &files), ["l3"], "unacked line again");
    }

    #[test]
    fn start_at_end_applies_only_to_a_fresh_first_scan() {
        let now = Instant::now();
        let cfg = TailerConfig {
            start_at: StartAt::End,
            ..small()
        };
        let mut t = Tailer::new(cfg.clone());
        let old = b"old\n".to_vec();
        let id = t.handle_scan(now, &[obs("a", 1, &old)])[0];
        let mut files = BTreeMap::from([(id, old.clone())]);
        assert!(pump(&mut t, now, &files).is_empty());
        let new = b"new\n".to_vec();
        let ids = t.handle_scan(now, &[obs("a", 1, &old), obs("b", 2, &new)]);
        files.insert(ids[1], new);
        assert_eq!(pump(&mut t, now, &files), ["new"]);
        assert_eq!(
            t.positions()[0].offset,
            4,
            "at the end, not before its last byte"
        );

        // A line half written when we start: its tail is not taken for a line.
        let mut t = Tailer::new(cfg);
        let mut c = b"old\npart".to_vec();
        let id = t.handle_scan(now, &[obs("a", 1, &c)])[0];
        let mut files = BTreeMap::from([(id, c.clone())]);
        assert!(pump(&mut t, now, &files).is_empty());
        assert_eq!(t.positions()[0].offset, 8);
        c.extend_from_slice(b"ial\nnext\n");
        files.insert(id, c.clone());
        t.handle_scan(now, &[obs("a", 1, &c)]);
        assert_eq!(pump(&mut t, now, &files), ["next"]);
        assert_eq!(
            t.positions()[0].offset,
            12,
            "the skipped tail counts as done"
        );
    }

    #[test]
    fn a_copy_made_by_copytruncate_is_not_read_again_a_banner_twin_is() {
        let now = Instant::now();
        let mut t = Tailer::new(small());
        let c: Vec<u8> = (0..100)
            .flat_map(|i| format!("{i:04}\n").into_bytes())
            .collect();
        let id = t.handle_scan(now, &[obs("app.log", 1, &c)])[0];
        let mut files = BTreeMap::from([(id, c.clone())]);
        assert_eq!(pump(&mut t, now, &files).len(), 100);
        // copytruncate with the copy inside our paths, listed before the original.
        let ids = t.handle_scan(now, &[obs("app.log.1", 2, &c), obs("app.log", 1, b"")]);
        files.insert(ids[1], Vec::new());
        files.insert(ids[0], c.clone());
        assert!(pump(&mut t, now, &files).is_empty());
        assert_eq!(t.positions().len(), 2);

        // The copy seen before the truncate waits for it, then is known as the copy.
        let mut t = Tailer::new(small());
        let id = t.handle_scan(now, &[obs("app.log", 1, &c)])[0];
        let mut files = BTreeMap::from([(id, c.clone())]);
        assert_eq!(pump(&mut t, now, &files).len(), 100);
        let ids = t.handle_scan(now, &[obs("app.log", 1, &c), obs("app.log.1", 2, &c)]);
        assert_eq!(ids[1], 0, "not followed while it may be a copy");
        let ids = t.handle_scan(now, &[obs("app.log", 1, b""), obs("app.log.1", 2, &c)]);
        files.insert(ids[0], Vec::new());
        files.insert(ids[1], c.clone());
        assert!(pump(&mut t, now, &files).is_empty());

        // Rename rotation of a log that opens with the same long banner: the new file
        // shares the old one's head; after the wait for a truncate, it is read whole.
        let mut t = Tailer::new(small());
        let id = t.handle_scan(now, &[obs("app.log", 1, &c)])[0];
        let mut files = BTreeMap::from([(id, c.clone())]);
        assert_eq!(pump(&mut t, now, &files).len(), 100);
        let mut new = c[..HEAD_BYTES].to_vec();
        new.extend_from_slice(b"fresh\n");
        let ids = t.handle_scan(now, &[obs("app.log.1", 1, &c), obs("app.log", 2, &new)]);
        assert_eq!(ids[1], 0, "it might be a copy: it waits for a truncate");
        let later = now + COPY_WAIT;
        let ids = t.handle_scan(later, &[obs("app.log.1", 1, &c), obs("app.log", 2, &new)]);
        files.insert(ids[1], new);
        assert_eq!(pump(&mut t, later, &files).len(), HEAD_BYTES / 5 + 1);
    }

    #[test]
    fn a_copy_listed_only_after_its_truncate_was_seen_is_still_known() {
        let now = Instant::now();
        let c: Vec<u8> = (0..100)
            .flat_map(|i| format!("{i:04}\n").into_bytes())
            .collect();
        // app.log read to its end, then seen truncated by a scan whose listing was taken
        // before the copy existed (the open came after the truncate).
        let read_then_truncated = || {
            let mut t = Tailer::new(small());
            let id = t.handle_scan(now, &[obs("app.log", 1, &c)])[0];
            let mut files = BTreeMap::from([(id, c.clone())]);
            assert_eq!(pump(&mut t, now, &files).len(), 100);
            let ids = t.handle_scan(now, &[obs("app.log", 1, b"")]);
            files.insert(ids[0], Vec::new());
            assert!(pump(&mut t, now, &files).is_empty());
            (t, files)
        };
        for (wait, read_whole) in [(Duration::from_secs(1), false), (COPY_WAIT, true)] {
            let (mut t, mut files) = read_then_truncated();
            let later = now + wait;
            let ids = t.handle_scan(later, &[obs("app.log", 1, b""), obs("app.log.1", 2, &c)]);
            files.insert(ids[1], c.clone());
            let lines = pump(&mut t, later, &files);
            assert_eq!(
                lines.len(),
                if read_whole { 100 } else { 0 },
                "after {wait:?}"
            );
        }
        // A look-alike shorter than what was delivered from the original is no copy of it.
        let (mut t, mut files) = read_then_truncated();
        let short = c[..HEAD_BYTES + 5].to_vec();
        let ids = t.handle_scan(now, &[obs("app.log", 1, b""), obs("other.log", 2, &short)]);
        files.insert(ids[1], short);
        assert_eq!(pump(&mut t, now, &files).len(), HEAD_BYTES / 5 + 1);
    }

    #[test]
    fn stale_reads_and_acks_of_released_files_are_ignored() {
        let now = Instant::now();
        let mut t = Tailer::new(small());
        let id = t.handle_scan(now, &[obs("a", 1, b"ab\n")])[0];
        let r = t.poll_read().unwrap();
        t.handle_read(now, id, r.offset + 1, b"b\n");
        assert_eq!(t.poll_line(), None, "not at the offset asked");
        t.handle_read(now, id, 0, b"ab\n");
        assert_eq!(t.poll_line().unwrap().end, 3);
        // Truncated: id is released; its late answers and acks change nothing.
        let id2 = t.handle_scan(now, &[obs("a", 1, b"")])[0];
        assert_ne!(id2, id);
        t.handle_read(now, id, 3, b"cd\n");
        t.handle_ack(id, 3);
        assert_eq!(t.positions()[0].offset, 0);
        assert_eq!(t.poll_line(), None);
    }
}

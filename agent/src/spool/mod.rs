//! The bounded on-disk spool: batches wait here until the collector acknowledges them.
//!
//! # On disk
//!
//! One directory (`<state_dir>/spool`) holding:
//!
//! - Segment files `SSS-IIIIIIIIIIIIIIIIIIII.seg`: `SSS` is the stream code
//!   (`StreamId::code()`), `I…` the id of the segment's first record, both zero-padded
//!   decimal. Each stream has its own chain of segments, so revoking a scope deletes whole
//!   files and a new stream needs no format change. A segment starts with the 8 bytes
//!   `ACSPOOL\x01` (the last byte is the format version), then records back to back:
//!
//!   | bytes | field |
//!   |---|---|
//!   | 0..2 | magic `AC 5B`, to find the next record after damage |
//!   | 2 | stream code (never 0) |
//!   | 3 | flags: bit 0, the body ends with the loss report the batch carries |
//!   | 4..8 | body length, u32 LE: payload (at most 64 MiB), then 24 bytes if flagged |
//!   | 8..12 | CRC-32C of every record byte except these four |
//!   | 12..16 | count: samples or lines in the payload, for loss accounting |
//!   | 16..24 | record id, u64 LE: +1 per record across all streams |
//!   | 24..32 | the batch's sequence number on its stream, u64 LE |
//!   | 32.. | payload: the encoded frame, opaque here; if flagged, then the loss report it carries (dropped batches, dropped samples, discarded by revocation: 3 x u64 LE) |
//!
//! - `state`: text, replaced atomically (temp file, fsync, rename, fsync of the directory):
//!   the highest acknowledged sequence number per stream, and the loss per scope that the
//!   collector has not been told of yet.
//!
//! # Invariants
//!
//! - A record leaves the spool only when its whole segment goes: when every record in it is
//!   acknowledged (and appends have moved to a newer segment), when the spool is over
//!   `max_bytes` (oldest segment of all streams first; its unacknowledged records and
//!   samples are counted per scope as dropped), or when its scope is revoked (counted as
//!   discarded). Loss is never silent: the counts wait in `state` until the caller hands
//!   them to a batch (`take_owed`, then `append_carrying`); a batch dropped or discarded
//!   unsent makes the loss it carried owed again.
//! - Sequence numbers grow per stream and acknowledgements come in order per stream, so
//!   "acknowledged" is one number per stream. After a restart nothing at or below the
//!   persisted number is sent again; what was acknowledged after the last write of `state`
//!   may be sent again, which is harmless (the collector stores each sequence once).
//! - Damage never stops the agent: a record whose CRC does not match (a bit flip) is
//!   skipped and counted, and reading resumes at the next intact record; a torn tail (a
//!   crash mid-write) is cut off at open so appends continue after the last whole record.
//!   `open` fails only if the directory itself cannot be made or listed. (Damage with no
//!   intact record after it in the newest segment cannot be told from a torn tail, and is
//!   cut off the same way.)
//! - Memory does not grow with the spool: per segment a few numbers; records are read from
//!   disk when sent, a batch at a time.
//! - A failed write (a full disk) is an error the caller sees, counted as a dropped batch;
//!   the partly written record is cut off (or skipped by CRC if even that fails).
//!
//! # Durability
//!
//! `fsync` decides when appended records and `state` reach the disk (`Always`, at most
//! every `Every(d)`, or `Never`, leaving it to the kernel). A killed process loses nothing
//! written either way; a power cut loses at most what came in since the last sync. Drops
//! and revocations write `state` at once, whatever the policy. Acknowledgement marks alone
//! are written at most every `ACKS_SAVED_EVERY` (and at `flush`), unless the policy is
//! `Always`: a mark lost to a crash only sends acknowledged batches again, which the
//! collector recognises, and an idle agent does not rewrite `state` for every batch.
//!
//! Every call is plain synchronous file I/O of one record or one batch (tens of
//! microseconds); only `fsync` can take long (milliseconds, more on a busy disk). So the run
//! loop keeps a timer policy and calls `tick` on its timer and `flush` at shutdown, and
//! never waits on the spool for longer than that. `Always` is for tests and paranoid
//! configs.

pub mod book;
pub mod format;
pub mod fs;
pub mod verify;

use aftercare_shared::consent::Scope;
use aftercare_shared::model::LossReport;
use aftercare_shared::protocol::StreamId;
use book::{Book, SegMeta, Unacked};
use format::{Item, SEG_HEADER, SEG_MAGIC, Scanner};
use fs::{DirStorage, Storage};
use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};
use tracing::warn;

pub const STATE_FILE: &str = "state";
/// How often acknowledgement marks alone are written to `state` (see `Spool::tick`).
pub const ACKS_SAVED_EVERY: Duration = Duration::from_secs(60);
const STATE_HEADER: &str = "aftercare-spool-state 1";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SpoolError {
    move |source| SpoolError::Io {
        what: what.into(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every append and acknowledgement.
    Always,
    /// At most this often (appends and acknowledgements in between may wait for `flush`).
    Every(Duration),
    /// Leave it to the kernel (and to `flush` at shutdown).
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolConfig {
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            max_bytes: 256 << 20,
            segment_bytes: 8 << 20,
            fsync: FsyncPolicy::Every(Duration::from_secs(1)),
        }
    }
}

/// A record read back for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: u64,
    pub stream: StreamId,
    pub seq: u64,
    pub count: u32,
    pub payload: Vec<u8>,
}

/// Counters since open, for the agent's own log and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Damaged ranges skipped (a record each, as far as anyone can tell).
    pub damaged: u64,
    /// Bytes cut off torn tails at open.
    pub torn_bytes: u64,
    /// Records dropped because the spool was full, or not written (disk full).
    pub dropped: u64,
    /// Records discarded by revocation.
    pub discarded: u64,
    /// Records the collector refused for good.
    pub rejected: u64,
}

/// Per segment name: the stream code and first record id.
pub fn parse_segment_name(name: &str) -> Option<(u8, u64)> {
    let stem = name.strip_suffix(".seg")?;
    let (s, i) = stem.split_once('-')?;
    Some((s.parse().ok()?, i.parse().ok()?))
}

pub fn segment_name(stream: u8, first_id: u64) -> String {
    format!("{stream:03}-{first_id:020}.seg")
}

fn scope_index(scope: Scope) -> usize {
    Scope::ALL
        .iter()
        .position(|s| *s == scope)
        .expect("every scope is in ALL")
}

fn scope_of(code: u8) -> Option<Scope> {
    StreamId::from_code(code).map(StreamId::scope)
}

pub struct Spool<S: Storage = DirStorage> {
    fs: S,
    cfg: SpoolConfig,
    book: Book,
    /// Open append handles, per stream code, to that stream's newest segment.
    writers: BTreeMap<u8, S::Writer>,
    /// Streams whose newest segment may end in a partial record: append to a new one.
    tainted: Vec<u8>,
    /// Per stream code, where sending continues: (segment first id, offset).
    cursors: BTreeMap<u8, (u64, u64)>,
    next_id: u64,
    owed: [LossReport; Scope::ALL.len()],
    state_dirty: bool,
    /// Acknowledgements not yet in `state`: saved lazily (see `ACKS_SAVED_EVERY`).
    acks_unsaved: bool,
    last_state_write: Instant,
    data_unsynced: bool,
    last_sync: Instant,
    scratch: Vec<u8>,
    drops: Vec<Dropped>,
    /// The newest append: (stream code, segment first id, offset before, offset after).
    last_append: Option<(u8, u64, u64, u64)>,
    pub stats: SpoolStats,
}

/// Unsent records the spool gave up, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub scope: Scope,
    pub records: u64,
    /// The segment's size on disk (records of one stream only).
    pub bytes: u64,
    /// By revocation, rather than for want of room.
    pub revoked: bool,
}

impl Spool<DirStorage> {
    /// Open (or make) the spool in `dir`. Damage inside is repaired or skipped, never fatal.
    pub fn open_dir(dir: &Path, cfg: SpoolConfig) -> Result<Self, SpoolError> {
        let fs = DirStorage::new(dir).map_err(io_err(format!("create {}", dir.display())))?;
        Spool::open(fs, cfg)
    }
}

/// Acked sequence per stream and owed loss per scope, as `state` holds them. Unreadable
/// lines are ignored: the worst outcome is a resend (harmless) or a count not reported.
pub fn parse_state(text: &str) -> (BTreeMap<u8, u64>, [LossReport; Scope::ALL.len()]) {
    let mut acked = BTreeMap::new();
    let mut owed = [LossReport::default(); Scope::ALL.len()];
    let mut lines = text.lines();
    if lines.next() != Some(STATE_HEADER) {
        return (acked, owed);
    }
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["acked", code, seq] => {
                if let (Ok(c), Ok(s)) = (code.parse(), seq.parse()) {
                    acked.insert(c, s);
                }
            }
            ["owed", scope, b, s, r] => {
                let scope = Scope::ALL.into_iter().find(|x| x.as_str() == *scope);
                if let (Some(scope), Ok(b), Ok(s), Ok(r)) = (scope, b.parse(), s.parse(), r.parse())
                {
                    owed[scope_index(scope)] = LossReport {
                        dropped_batches: b,
                        dropped_samples: s,
                        discarded_by_revocation: r,
                    };
                }
            }
            _ => {}
        }
    }
    (acked, owed)
}

/// One pass over a segment: its metadata and every damaged range in it.
pub struct SegScan {
    pub meta: SegMeta,
    pub header_ok: bool,
    pub damaged: Vec<(u64, u64, bool)>,
    /// Records, samples and carried loss above the acknowledged sequence number.
    pub unacked: (u64, u64, LossReport),
}

/// Walk a whole segment, checking every CRC.
pub fn scan_segment<R: Read + Seek>(
    r: &mut R,
    stream: u8,
    first_id: u64,
    len: u64,
    acked: u64,
) -> io::Result<SegScan> {
    let mut head = [0u8; SEG_HEADER as usize];
    let header_ok = len >= SEG_HEADER && r.read_exact(&mut head).is_ok() && head == SEG_MAGIC;
    r.seek(SeekFrom::Start(SEG_HEADER.min(len)))?;
    let mut meta = SegMeta {
        stream,
        first_id,
        last_id: first_id,
        first_seq: 0,
        last_seq: 0,
        records: 0,
        samples: 0,
        bytes: len,
        carried: LossReport::default(),
    };
    let mut damaged = Vec::new();
    let mut unacked = (0, 0, LossReport::default());
    let mut sc = Scanner::new(SEG_HEADER.min(len), len);
    while let Some(item) = sc.next(r)? {
        match item {
            Item::Record { header: h, .. } if h.stream == stream => {
                if meta.records == 0 {
                    meta.first_seq = h.seq;
                }
                meta.last_seq = meta.last_seq.max(h.seq);
                meta.last_id = meta.last_id.max(h.id);
                meta.records += 1;
                meta.samples += u64::from(h.count);
                let carried = format::split_body(&h, sc.body()).1;
                add_loss(&mut meta.carried, &carried);
                if h.seq > acked {
                    unacked.0 += 1;
                    unacked.1 += u64::from(h.count);
                    add_loss(&mut unacked.2, &carried);
                }
            }
            // Intact but in the wrong chain: it cannot be trusted to belong here.
            Item::Record { offset, header } => damaged.push((offset, header.total(), false)),
            Item::Damaged {
                offset,
                len,
                to_end,
            } => damaged.push((offset, len, to_end)),
        }
    }
    Ok(SegScan {
        meta,
        header_ok,
        damaged,
        unacked,
    })
}

impl<S: Storage> Spool<S> {
    pub fn open(fs: S, cfg: SpoolConfig) -> Result<Self, SpoolError> {
        let files = fs.list().map_err(io_err("list"))?;
        let (acked, owed) = match fs.read_small(STATE_FILE) {
            Ok(Some(b)) => parse_state(&String::from_utf8_lossy(&b)),
            Ok(None) => Default::default(),
            Err(e) => {
                warn!("spool state unreadable ({e}): acknowledged batches may be sent again");
                Default::default()
            }
        };
        let mut stats = SpoolStats::default();
        let mut named: Vec<(u8, u64, String, u64)> = files
            .into_iter()
            .filter_map(|(n, len)| parse_segment_name(&n).map(|(s, i)| (s, i, n, len)))
            .collect();
        named.sort_by_key(|n| n.1);
        let mut segs: Vec<SegMeta> = Vec::new();
        let mut tainted = Vec::new();
        for (i, (stream, first_id, name, len)) in named.iter().enumerate() {
            let newest = !named[i + 1..].iter().any(|n| n.0 == *stream);
            let scan = fs.open_read(name).and_then(|mut r| {
                scan_segment(&mut r, *stream, *first_id, *len, acked_of(&acked, *stream))
            });
            let mut scan = match scan {
                Ok(s) => s,
                Err(e) => {
                    // Unreadable now; leave it for `spool verify` and a person.
                    warn!("spool segment {name} unreadable, skipped: {e}");
                    stats.damaged += 1;
                    continue;
                }
            };
            if !scan.header_ok {
                warn!("spool segment {name}: bad header (not a spool file or damaged)");
            }
            for &(off, dlen, to_end) in &scan.damaged {
                if to_end && newest {
                    // A crash mid-write: cut the torn record so appends follow whole ones.
                    match fs.truncate(name, off) {
                        Ok(()) => {
                            scan.meta.bytes = off;
                            stats.torn_bytes += dlen;
                            warn!(
                                "spool segment {name}: cut a torn record of {dlen} bytes at {off}"
                            );
                            continue;
                        }
                        Err(e) => warn!("spool segment {name}: cannot cut torn tail: {e}"),
                    }
                }
                stats.damaged += 1;
                warn!("spool segment {name}: skipped {dlen} damaged bytes at offset {off}");
            }
            if scan.meta.records == 0 {
                // Nothing to deliver: a segment made just before a crash, or all damage.
                if let Err(e) = fs.remove(name) {
                    warn!("spool segment {name}: cannot remove empty segment: {e}");
                }
                continue;
            }
            if !scan.header_ok && newest {
                // Its records are delivered, but nothing more is appended to it.
                tainted.push(*stream);
            }
            segs.push(scan.meta);
        }
        let book = Book::new(segs, acked);
        // Past every name on disk too, so that no new segment is named like an old one
        // that could not be read or removed.
        let next_id = named
            .iter()
            .map(|n| n.1 + 1)
            .chain([book.next_id()])
            .max()
            .unwrap_or(0);
        let mut sp = Spool {
            fs,
            cfg,
            next_id,
            book,
            writers: BTreeMap::new(),
            tainted,
            cursors: BTreeMap::new(),
            owed,
            state_dirty: false,
            acks_unsaved: false,
            last_state_write: Instant::now(),
            data_unsynced: false,
            last_sync: Instant::now(),
            scratch: Vec::new(),
            drops: Vec::new(),
            last_append: None,
            stats,
        };
        sp.delete_acked();
        Ok(sp)
    }

    pub fn config(&self) -> &SpoolConfig {
        &self.cfg
    }

    /// Bytes on disk, segment headers included.
    pub fn bytes(&self) -> u64 {
        self.book.bytes()
    }

    pub fn segments(&self) -> usize {
        self.book.segments().len()
    }

    pub fn has_unacked(&self, stream: StreamId) -> bool {
        self.book.has_unacked(stream.code())
    }

    pub fn acked(&self, stream: StreamId) -> u64 {
        self.book.acked(stream.code())
    }

    /// Loss of `scope` not yet reported; it stays owed until `take_owed`.
    pub fn owed(&self, scope: Scope) -> LossReport {
        self.owed[scope_index(scope)]
    }

    /// The loss for the next batch of `scope` to carry; owed no more from here on.
    pub fn take_owed(&mut self, scope: Scope) -> LossReport {
        let l = std::mem::take(&mut self.owed[scope_index(scope)]);
        if !l.is_empty() {
            self.state_dirty = true;
        }
        l
    }

    /// Add a batch that carries no loss report.
    pub fn append(
        &mut self,
        stream: StreamId,
        seq: u64,
        count: u32,
        payload: &[u8],
    ) -> Result<(), SpoolError> {
        self.append_carrying(stream, seq, count, &LossReport::default(), payload)
    }

    /// Add a batch whose frame carries `carried` (from `take_owed`): if the batch is dropped
    /// or discarded unsent, that loss is owed again. Over the bound, the oldest segments go
    /// first (counted). An error means the batch was not stored; it is counted as dropped
    /// here, the caller only logs it.
    pub fn append_carrying(
        &mut self,
        stream: StreamId,
        seq: u64,
        count: u32,
        carried: &LossReport,
        payload: &[u8],
    ) -> Result<(), SpoolError> {
        let code = stream.code();
        let r = self.append_inner(code, seq, count, carried, payload, true);
        if r.is_err() {
            self.lost(stream, count, carried);
        } else {
            self.maybe_sync();
        }
        r
    }

    /// A batch that never made it into the spool (it could not be encoded): counted as
    /// dropped, with the loss it carried owed again.
    pub fn lost(&mut self, stream: StreamId, count: u32, carried: &LossReport) {
        let l = &mut self.owed[scope_index(stream.scope())];
        add_loss(l, carried);
        l.dropped_batches += 1;
        l.dropped_samples += u64::from(count);
        self.stats.dropped += 1;
        self.state_dirty = true;
        self.persist_state();
    }

    fn append_inner(
        &mut self,
        code: u8,
        seq: u64,
        count: u32,
        carried: &LossReport,
        payload: &[u8],
        may_drop: bool,
    ) -> Result<(), SpoolError> {
        if payload.len() > format::MAX_PAYLOAD as usize {
            return Err(SpoolError::Io {
                what: "append".into(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "record too large"),
            });
        }
        let h = format::header(code, count, self.next_id, seq, payload, carried);
        let total = h.total();
        let mut dropped_any = false;
        while may_drop && let Some(old) = self.book.to_drop(total + SEG_HEADER, self.cfg.max_bytes)
        {
            self.drop_segment(old, false);
            dropped_any = true;
        }
        if dropped_any {
            self.persist_state();
        }
        let id = self.next_id;
        let roll = match self.book.active(code) {
            None => true,
            Some(a) => {
                self.tainted.contains(&code)
                    || (a.records > 0 && a.bytes + total > self.cfg.segment_bytes)
            }
        };
        if roll {
            if let Some(mut w) = self.writers.remove(&code)
                && self.cfg.fsync != FsyncPolicy::Never
                && let Err(e) = self.fs.sync(&mut w)
            {
                warn!("spool: sync of a full segment failed: {e}");
            }
            let name = segment_name(code, id);
            let mut w = self
                .fs
                .open_append(&name, true)
                .map_err(io_err(format!("create {name}")))?;
            if let Err(e) = w.write_all(&SEG_MAGIC) {
                let _ = self.fs.remove(&name);
                return Err(io_err(format!("write {name}"))(e));
            }
            self.tainted.retain(|c| *c != code);
            self.book.add(SegMeta {
                stream: code,
                first_id: id,
                last_id: id,
                first_seq: seq,
                last_seq: seq,
                records: 0,
                samples: 0,
                bytes: SEG_HEADER,
                carried: LossReport::default(),
            });
            self.writers.insert(code, w);
        }
        let active = *self.book.active(code).expect("made above");
        let name = segment_name(code, active.first_id);
        if !self.writers.contains_key(&code) {
            let w = self
                .fs
                .open_append(&name, false)
                .map_err(io_err(format!("open {name}")))?;
            self.writers.insert(code, w);
        }
        self.scratch.clear();
        format::encode(&mut self.scratch, &h, payload, carried);
        let w = self.writers.get_mut(&code).expect("opened above");
        if let Err(e) = w.write_all(&self.scratch) {
            // Cut what was written of it; if even that fails, the CRC will skip it, but no
            // more appends go after it.
            self.writers.remove(&code);
            if self.fs.truncate(&name, active.bytes).is_err() {
                self.tainted.push(code);
            }
            return Err(io_err(format!("write {name}"))(e));
        }
        let a = self.book.active_mut(code).expect("active");
        if a.records == 0 {
            a.first_seq = seq;
        }
        a.last_id = id;
        a.last_seq = a.last_seq.max(seq);
        a.records += 1;
        a.samples += u64::from(count);
        self.last_append = Some((code, a.first_id, a.bytes, a.bytes + total));
        a.bytes += total;
        add_loss(&mut a.carried, carried);
        self.next_id += 1;
        self.data_unsynced = true;
        Ok(())
    }

    /// Delete a whole segment, counting its unacknowledged records as dropped or discarded.
    fn drop_segment(&mut self, seg: SegMeta, revoked: bool) {
        let name = segment_name(seg.stream, seg.first_id);
        let (records, samples, carried) = match self.book.unacked(&seg) {
            Unacked::Nothing => (0, 0, LossReport::default()),
            Unacked::All(r, s) => (r, s, seg.carried),
            Unacked::Part => {
                self.count_unacked(&seg)
                    .unwrap_or((seg.records, seg.samples, seg.carried))
            }
        };
        self.writers.remove(&seg.stream);
        if let Err(e) = self.fs.remove(&name) {
            // Forgotten anyway: its records are counted lost and will not be sent; a later
            // open finds the file again.
            warn!("spool: cannot delete {name}: {e}");
        }
        self.book.remove(seg.first_id);
        if records == 0 {
            return;
        }
        match scope_of(seg.stream) {
            Some(scope) => {
                let l = &mut self.owed[scope_index(scope)];
                // Its own data is gone; the loss it carried is still to be told.
                add_loss(l, &carried);
                self.drops.push(Dropped {
                    scope,
                    records,
                    bytes: seg.bytes,
                    revoked,
                });
                if revoked {
                    l.discarded_by_revocation += records;
                } else {
                    l.dropped_batches += records;
                    l.dropped_samples += samples;
                }
                self.state_dirty = true;
            }
            None => warn!(
                "spool: dropped {records} records of unknown stream {}",
                seg.stream
            ),
        }
        if revoked {
            self.stats.discarded += records;
        } else {
            self.stats.dropped += records;
            warn!("spool full: dropped {records} unsent batches ({samples} samples), reported");
        }
    }

    fn count_unacked(&self, seg: &SegMeta) -> io::Result<(u64, u64, LossReport)> {
        let acked = self.book.acked(seg.stream);
        let mut r = self.fs.open_read(&segment_name(seg.stream, seg.first_id))?;
        Ok(scan_segment(&mut r, seg.stream, seg.first_id, seg.bytes, acked)?.unacked)
    }

    /// Up to about `max_bytes` of payload of `stream` not yet handed out on this connection
    /// (at least one record if there is any), oldest first.
    pub fn take_unsent(
        &mut self,
        stream: StreamId,
        max_bytes: usize,
    ) -> Result<Vec<Record>, SpoolError> {
        let code = stream.code();
        let acked = self.book.acked(code);
        let segs = self.stream_segments(code);
        let (cur_seg, cur_off) = self.cursors.get(&code).copied().unwrap_or((0, 0));
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for seg in segs.iter().filter(|s| s.first_id >= cur_seg) {
            let start = if seg.first_id == cur_seg {
                cur_off.max(SEG_HEADER)
            } else {
                SEG_HEADER
            };
            if start >= seg.bytes {
                continue;
            }
            let (mut r, mut sc, name) = self.open_at(code, seg, start)?;
            while let Some(item) = sc.next(&mut r).map_err(io_err(format!("read {name}")))? {
                match item {
                    Item::Record { header: h, .. } if h.stream == code && h.seq > acked => {
                        bytes += h.len as usize;
                        out.push(Record {
                            id: h.id,
                            stream,
                            seq: h.seq,
                            count: h.count,
                            payload: format::split_body(&h, sc.body()).0.to_vec(),
                        });
                    }
                    Item::Record { .. } => {}
                    Item::Damaged { offset, len, .. } => {
                        self.stats.damaged += 1;
                        warn!(
                            "spool segment {name}: skipped {len} damaged bytes at offset {offset}"
                        );
                    }
                }
                self.cursors.insert(code, (seg.first_id, sc.pos()));
                if bytes >= max_bytes {
                    return Ok(out);
                }
            }
            self.cursors.insert(code, (seg.first_id, seg.bytes));
        }
        Ok(out)
    }

    /// `stream`'s segments (by code), oldest first.
    fn stream_segments(&self, code: u8) -> Vec<SegMeta> {
        self.book
            .segments()
            .iter()
            .filter(|s| s.stream == code)
            .copied()
            .collect()
    }

    /// Segment `seg` of stream `code` opened and positioned at `start`, a scanner over the
    /// rest of it, and its name for messages.
    fn open_at(
        &self,
        code: u8,
        seg: &SegMeta,
        start: u64,
    ) -> Result<(S::Reader, Scanner, String), SpoolError> {
        let name = segment_name(code, seg.first_id);
        let mut r = self
            .fs
            .open_read(&name)
            .map_err(io_err(format!("open {name}")))?;
        r.seek(SeekFrom::Start(start))
            .map_err(io_err(format!("read {name}")))?;
        Ok((r, Scanner::new(start, seg.bytes), name))
    }

    /// The payload of `stream`'s newest intact record, acknowledged or not: where the log
    /// tailer stood when it last handed lines over (see `run`). Reads the newest segment.
    pub fn newest_payload(&mut self, stream: StreamId) -> Result<Option<Vec<u8>>, SpoolError> {
        let code = stream.code();
        let Some(seg) = self.book.active(code).copied() else {
            return Ok(None);
        };
        let (mut r, mut sc, name) = self.open_at(code, &seg, SEG_HEADER)?;
        let mut newest: Option<(u64, Vec<u8>)> = None;
        while let Some(item) = sc.next(&mut r).map_err(io_err(format!("read {name}")))? {
            if let Item::Record { header: h, .. } = item
                && h.stream == code
                && newest.as_ref().is_none_or(|(id, _)| h.id > *id)
            {
                newest = Some((h.id, format::split_body(&h, sc.body()).0.to_vec()));
            }
        }
        Ok(newest.map(|(_, p)| p))
    }

    /// Give every unacknowledged record of `stream` a new sequence number and payload:
    /// `f(old payload)` returns them, in order, numbered past everything on this stream.
    /// Used when the collector turns out to hold sequence numbers of ours that we never
    /// sent (a lost or copied state directory). Copies one segment at a time, then deletes
    /// it: a crash midway leaves some records twice, the old copies under numbers the
    /// collector already holds (it acknowledges them as duplicates), so nothing is stored
    /// twice. Loss counts carried by records move with them.
    pub fn renumber(
        &mut self,
        stream: StreamId,
        mut f: impl FnMut(&[u8]) -> (u64, Vec<u8>),
    ) -> Result<u64, SpoolError> {
        let code = stream.code();
        let acked = self.book.acked(code);
        let old = self.stream_segments(code);
        // New records go to new segments, never after the old ones in the same file.
        self.tainted.push(code);
        self.cursors.remove(&code);
        let mut moved = 0;
        for seg in old {
            let (mut r, mut sc, name) = self.open_at(code, &seg, SEG_HEADER)?;
            let mut recs = Vec::new();
            while let Some(item) = sc.next(&mut r).map_err(io_err(format!("read {name}")))? {
                if let Item::Record { header: h, .. } = item
                    && h.stream == code
                    && h.seq > acked
                {
                    let (payload, carried) = format::split_body(&h, sc.body());
                    recs.push((h.count, carried, payload.to_vec()));
                }
            }
            drop(r);
            for (count, carried, payload) in recs {
                let (seq, payload) = f(&payload);
                // Over the bound by one segment at most, for as long as this takes.
                self.append_inner(code, seq, count, &carried, &payload, false)?;
                moved += 1;
            }
            self.writers.remove(&code);
            if let Err(e) = self.fs.remove(&name) {
                warn!("spool: cannot delete renumbered segment {name}: {e}");
            }
            self.book.remove(seg.first_id);
        }
        self.tainted.retain(|c| *c != code);
        if let Err(e) = self.flush() {
            warn!("{e}");
        }
        Ok(moved)
    }

    /// What was dropped or discarded since the last call.
    pub fn take_drops(&mut self) -> Vec<Dropped> {
        std::mem::take(&mut self.drops)
    }

    /// The caller sends the record it just appended to `stream` from memory, if sending
    /// had caught up with everything before it: then the send cursor moves past it and
    /// this returns true (and `take_unsent` will not read it back). Otherwise it is left
    /// for `take_unsent`, in order.
    pub fn take_appended(&mut self, stream: StreamId) -> bool {
        let code = stream.code();
        match self.last_append.take() {
            Some((c, seg, before, after))
                if c == code && self.cursors.get(&code) == Some(&(seg, before)) =>
            {
                self.cursors.insert(code, (seg, after));
                true
            }
            _ => false,
        }
    }

    /// A new connection: everything unacknowledged is to be sent again.
    pub fn rewind(&mut self) {
        self.cursors.clear();
    }

    /// The collector acknowledged `seq` of `stream` (and, acks being in order, all before).
    pub fn ack(&mut self, stream: StreamId, seq: u64) {
        if self.book.ack(stream.code(), seq) {
            self.acks_unsaved = true;
            self.delete_acked();
            self.maybe_sync();
        }
    }

    /// The collector refused `seq` for good: it is not sent again. Acknowledgements being in
    /// order, everything before it was already settled, so this moves the mark like an ack.
    pub fn reject(&mut self, stream: StreamId, seq: u64) {
        self.stats.rejected += 1;
        self.ack(stream, seq);
    }

    fn delete_acked(&mut self) {
        for first_id in self.book.deletable() {
            if let Some(seg) = self.book.segments().iter().find(|s| s.first_id == first_id) {
                let seg = *seg;
                self.drop_segment(seg, false);
            }
        }
    }

    /// Consent for `scope` was withdrawn: its streams' segments are deleted, their unsent
    /// records counted as discarded. Returns how many records were discarded.
    pub fn discard_scope(&mut self, scope: Scope) -> u64 {
        let before = self.stats.discarded;
        let segs: Vec<SegMeta> = self
            .book
            .segments()
            .iter()
            .filter(|s| scope_of(s.stream) == Some(scope))
            .copied()
            .collect();
        for s in segs {
            self.cursors.remove(&s.stream);
            self.drop_segment(s, true);
        }
        self.persist_state();
        self.stats.discarded - before
    }

    /// Make everything durable now, acknowledgement marks included (at shutdown).
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        self.sync(true)
    }

    /// The caller's timer: appended data reaches the disk per the fsync policy;
    /// acknowledgement marks at most every `ACKS_SAVED_EVERY` (a mark lost in a crash only
    /// makes batches be sent again, which the collector recognises), so an idle agent does
    /// not rewrite `state` for every batch. Loss counts are never delayed.
    pub fn tick(&mut self) -> Result<(), SpoolError> {
        self.sync(false)
    }

    fn sync(&mut self, all: bool) -> Result<(), SpoolError> {
        // The encoding buffer grows to the largest batch; a burst's size is not kept.
        if self.scratch.capacity() > 256 << 10 {
            self.scratch = Vec::new();
        }
        let mut first_err = None;
        if self.data_unsynced {
            for (code, w) in self.writers.iter_mut() {
                if let Err(e) = w.flush().and_then(|()| self.fs.sync(w)) {
                    first_err.get_or_insert(io_err(format!("sync stream {code}"))(e));
                }
            }
            self.data_unsynced = first_err.is_some();
        }
        let acks_due = self.acks_unsaved
            && (all
                || self.cfg.fsync == FsyncPolicy::Always
                || self.last_state_write.elapsed() >= ACKS_SAVED_EVERY);
        if (self.state_dirty || acks_due)
            && let Err(e) = self.write_state()
        {
            first_err.get_or_insert(e);
        }
        self.last_sync = Instant::now();
        first_err.map_or(Ok(()), Err)
    }

    fn maybe_sync(&mut self) {
        let due = match self.cfg.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Every(d) => self.last_sync.elapsed() >= d,
            FsyncPolicy::Never => false,
        };
        if due && let Err(e) = self.tick() {
            warn!("{e}");
        }
    }

    /// Write `state` now if it changed: loss counts must not wait for a timer.
    fn persist_state(&mut self) {
        if self.state_dirty
            && let Err(e) = self.write_state()
        {
            warn!("{e}");
        }
    }

    fn write_state(&mut self) -> Result<(), SpoolError> {
        let mut s = String::from(STATE_HEADER);
        s.push('\n');
        for (code, seq) in self.book.acked_all() {
            s.push_str(&format!("acked {code} {seq}\n"));
        }
        for (scope, l) in Scope::ALL.iter().zip(&self.owed) {
            if !l.is_empty() {
                s.push_str(&format!(
                    "owed {} {} {} {}\n",
                    scope.as_str(),
                    l.dropped_batches,
                    l.dropped_samples,
                    l.discarded_by_revocation
                ));
            }
        }
        self.fs
            .write_atomic(STATE_FILE, s.as_bytes())
            .map_err(io_err("write state"))?;
        self.state_dirty = false;
        self.acks_unsaved = false;
        self.last_state_write = Instant::now();
        Ok(())
    }
}

fn add_loss(to: &mut LossReport, l: &LossReport) {
    to.dropped_batches += l.dropped_batches;
    to.dropped_samples += l.dropped_samples;
    to.discarded_by_revocation += l.discarded_by_revocation;
}

fn acked_of(acked: &BTreeMap<u8, u64>, stream: u8) -> u64 {
    acked.get(&stream).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests;

//! A batch's log records as one compressed block: the form they travel in (protocol
//! version 2, [`crate::protocol::Payload::LogBlock`]) and rest in at the collector.
//!
//! Why a block and not `Vec<LogRecord>`: a record repeats its source and file name, and
//! the lines of one log resemble each other, so zstd makes a batch about 3.5 times
//! smaller. Compressing once on the host shrinks everything after it: the spool (an
//! outage holds that much more), encryption and packets on both sides, and the collector
//! stores the block as it came instead of decoding, re-encoding and compressing again.
//!
//! Layout: one zstd frame (with its content size in the header) holding, in bincode 2's
//! standard configuration (varint integers):
//!
//! ```text
//! version u8 = 1
//! files   Vec<(source: str, file: str)>     every (source, file) the records name
//! count   u32                               how many records follow
//! records count × { file: u32 (index into files), offset: u64, read_at: i64,
//!                   ts: Option<i64>, severity: Severity, part: u32, line: str }
//! ```
//!
//! Reading never trusts the block: the decompressed size is checked against a cap before
//! anything is allocated, every record is decoded under bincode's checks (UTF-8 included)
//! and every file index is checked, and bytes after the last record are refused.

use crate::model::{LogRecord, Severity, UnixMillis};
use serde::{Deserialize, Serialize};

/// The layout version written first in every block.
pub const BLOCK_VERSION: u8 = 1;

/// zstd level: the fastest standard level. Its ratio on syslog-like lines is about 3.5;
/// the negative levels gain a third in speed and lose a third of the ratio.
const LEVEL: i32 = 1;
/// zstd's hash table for a block of up to 512 KiB: 2^12 entries (16 KiB, in L1) instead of
/// level 1's 2^14 compresses gen_lines.py's lines 25% faster at the same ratio (3.6).
const HASH_LOG: u32 = 12;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::NoLimit,
>;

fn config() -> Config {
    bincode::config::standard()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlockError {
    #[error("log block is not a zstd frame with its size: {0}")]
    Frame(String),
    #[error("log block holds {size} bytes, over the {max}-byte cap")]
    TooLarge { size: u64, max: usize },
    #[error("log block has layout version {0}; this build reads version {BLOCK_VERSION}")]
    Version(u8),
    #[error("malformed log block: {0}")]
    Malformed(String),
    #[error("log block cannot be made: {0}")]
    Encode(String),
}

/// One record as encoded in a block, its strings borrowed from the block.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RecordRef<'a> {
    /// Index into the block's files.
    pub file: u32,
    pub offset: u64,
    pub read_at: UnixMillis,
    pub ts: Option<UnixMillis>,
    pub severity: Severity,
    pub part: u32,
    #[serde(borrow)]
    pub line: &'a str,
}

impl RecordRef<'_> {
    /// The time the record is filed under: its own, else when it was read.
    pub fn time(&self) -> UnixMillis {
        self.ts.unwrap_or(self.read_at)
    }
}

#[derive(Serialize, Deserialize)]
struct Header<'a> {
    version: u8,
    #[serde(borrow)]
    files: Vec<(&'a str, &'a str)>,
    count: u32,
}

/// Builds a block record by record. Reused: `finish` leaves it empty.
#[derive(Default)]
pub struct BlockWriter {
    files: Vec<(String, String)>,
    /// The index `file` returned last: consecutive records nearly always share a file.
    last: usize,
    count: u32,
    body: Vec<u8>,
}

impl BlockWriter {
    pub fn new() -> BlockWriter {
        BlockWriter::default()
    }

    /// The index of (source, file), added if new.
    pub fn file(&mut self, source: &str, file: &str) -> u32 {
        let same = |f: &(String, String)| f.0 == source && f.1 == file;
        if self.files.get(self.last).is_some_and(same) {
            return self.last as u32;
        }
        self.last = match self.files.iter().position(same) {
            Some(i) => i,
            None => {
                self.files.push((source.to_string(), file.to_string()));
                self.files.len() - 1
            }
        };
        self.last as u32
    }

    /// Add a record; `r.file` must come from [`BlockWriter::file`].
    pub fn push(&mut self, r: &RecordRef<'_>) {
        debug_assert!((r.file as usize) < self.files.len());
        // Writing to a Vec cannot fail, and every field has a serde form bincode takes.
        bincode::serde::encode_into_std_write(r, &mut self.body, config())
            .expect("a record always encodes into a Vec");
        self.count += 1;
    }

    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded size so far, before compression.
    pub fn plain_bytes(&self) -> usize {
        self.body.len()
            + self
                .files
                .iter()
                .map(|f| f.0.len() + f.1.len() + 4)
                .sum::<usize>()
    }

    /// The plain (uncompressed) block, and the writer emptied for the next one.
    pub fn finish_plain(&mut self) -> Vec<u8> {
        let header = Header {
            version: BLOCK_VERSION,
            files: self.files.iter().map(|f| (&f.0[..], &f.1[..])).collect(),
            count: self.count,
        };
        let mut plain = Vec::with_capacity(self.body.len() + 64 + self.plain_bytes());
        bincode::serde::encode_into_std_write(&header, &mut plain, config())
            .expect("a header always encodes into a Vec");
        plain.extend_from_slice(&self.body);
        self.files.clear();
        self.body.clear();
        self.count = 0;
        self.last = 0;
        plain
    }
}

/// Compress a plain block (from [`BlockWriter::finish_plain`]) into its wire form.
pub fn compress(plain: &[u8]) -> Result<Vec<u8>, BlockError> {
    // A fresh context per block: a block is hundreds of KiB at most and the context's
    // setup costs microseconds, while a kept one would hold its tables in an idle agent.
    let failed = |e: std::io::Error| BlockError::Encode(e.to_string());
    let mut c = zstd::bulk::Compressor::new(LEVEL).map_err(failed)?;
    c.set_parameter(zstd::zstd_safe::CParameter::HashLog(HASH_LOG))
        .map_err(failed)?;
    c.compress(plain).map_err(failed)
}

/// Decompresses blocks, reusing its context and buffer from one block to the next.
pub struct Unpacker {
    zstd: zstd::bulk::Decompressor<'static>,
    plain: Vec<u8>,
}

impl Unpacker {
    pub fn new() -> Result<Unpacker, BlockError> {
        Ok(Unpacker {
            zstd: zstd::bulk::Decompressor::new().map_err(|e| BlockError::Frame(e.to_string()))?,
            plain: Vec::new(),
        })
    }

    /// The plain form of a block, refusing one that would exceed `max` bytes before
    /// allocating for it.
    pub fn unpack(&mut self, block: &[u8], max: usize) -> Result<&[u8], BlockError> {
        let size = match zstd::zstd_safe::get_frame_content_size(block) {
            Ok(Some(n)) => n,
            Ok(None) => return Err(BlockError::Frame("no content size in its header".into())),
            Err(_) => return Err(BlockError::Frame("not a zstd frame".into())),
        };
        if size > max as u64 {
            return Err(BlockError::TooLarge { size, max });
        }
        self.plain.clear();
        self.plain.reserve_exact(size as usize);
        let n = self
            .zstd
            .decompress_to_buffer(block, &mut self.plain)
            .map_err(|e| BlockError::Frame(e.to_string()))?;
        if n as u64 != size {
            return Err(BlockError::Frame(format!(
                "{n} bytes decompressed, {size} announced"
            )));
        }
        Ok(&self.plain)
    }
}

/// A plain block being read: its files, then its records one by one.
pub struct BlockReader<'a> {
    files: Vec<(&'a str, &'a str)>,
    left: u32,
    rest: &'a [u8],
}

impl<'a> BlockReader<'a> {
    pub fn new(plain: &'a [u8]) -> Result<BlockReader<'a>, BlockError> {
        let Some(&version) = plain.first() else {
            return Err(BlockError::Malformed("empty".into()));
        };
        if version != BLOCK_VERSION {
            return Err(BlockError::Version(version));
        }
        let (h, used): (Header<'a>, usize) =
            bincode::serde::borrow_decode_from_slice(plain, config())
                .map_err(|e| BlockError::Malformed(format!("header: {e}")))?;
        Ok(BlockReader {
            files: h.files,
            left: h.count,
            rest: &plain[used..],
        })
    }

    /// Every (source, file) the records name.
    pub fn files(&self) -> &[(&'a str, &'a str)] {
        &self.files
    }

    /// Records not yet read.
    pub fn remaining(&self) -> u32 {
        self.left
    }

    /// The next record, `None` after the last; an error for a malformed one, or for bytes
    /// left after the announced count.
    pub fn next_record(&mut self) -> Option<Result<RecordRef<'a>, BlockError>> {
        if self.left == 0 {
            if self.rest.is_empty() {
                return None;
            }
            let n = self.rest.len();
            self.rest = &[];
            return Some(Err(BlockError::Malformed(format!(
                "{n} bytes after the last record"
            ))));
        }
        let decoded: Result<(RecordRef<'a>, usize), _> =
            bincode::serde::borrow_decode_from_slice(self.rest, config());
        match decoded {
            Ok((r, used)) if (r.file as usize) < self.files.len() => {
                self.rest = &self.rest[used..];
                self.left -= 1;
                Some(Ok(r))
            }
            Ok((r, _)) => {
                self.left = 0;
                self.rest = &[];
                Some(Err(BlockError::Malformed(format!(
                    "record names file {} of {}",
                    r.file,
                    self.files.len()
                ))))
            }
            Err(e) => {
                self.left = 0;
                self.rest = &[];
                Some(Err(BlockError::Malformed(format!("record: {e}"))))
            }
        }
    }

    /// The record as the owned model type.
    pub fn to_owned(&self, r: &RecordRef<'_>) -> LogRecord {
        let (source, file) = self.files[r.file as usize];
        LogRecord {
            source: source.to_string(),
            file: file.to_string(),
            offset: r.offset,
            read_at: r.read_at,
            ts: r.ts,
            severity: r.severity,
            line: r.line.to_string(),
            part: r.part,
        }
    }
}

/// What the collector files a block under, found by reading every record (which also
/// proves the block well formed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub records: u32,
    pub ts_min: UnixMillis,
    pub ts_max: UnixMillis,
    /// The most severe record's severity.
    pub worst: Severity,
}

/// Read a whole plain block; `None` summary for a block without records.
pub fn summarize(plain: &[u8]) -> Result<Option<Summary>, BlockError> {
    let mut r = BlockReader::new(plain)?;
    let mut s: Option<Summary> = None;
    while let Some(rec) = r.next_record() {
        let rec = rec?;
        let t = rec.time();
        match &mut s {
            None => {
                s = Some(Summary {
                    records: 1,
                    ts_min: t,
                    ts_max: t,
                    worst: rec.severity,
                })
            }
            Some(s) => {
                s.records += 1;
                s.ts_min = s.ts_min.min(t);
                s.ts_max = s.ts_max.max(t);
                s.worst = s.worst.min(rec.severity);
            }
        }
    }
    Ok(s)
}

/// Every record of a plain block as the owned model type.
pub fn decode_all(plain: &[u8]) -> Result<Vec<LogRecord>, BlockError> {
    let mut r = BlockReader::new(plain)?;
    let mut out = Vec::with_capacity(r.remaining().min(1 << 16) as usize);
    while let Some(rec) = r.next_record() {
        let rec = rec?;
        out.push(r.to_owned(&rec));
    }
    Ok(out)
}

/// A block of these records (in this order), for tests and for re-encoding old batches.
pub fn from_records(records: &[LogRecord]) -> Vec<u8> {
    let mut w = BlockWriter::new();
    for r in records {
        let file = w.file(&r.source, &r.file);
        w.push(&RecordRef {
            file,
            offset: r.offset,
            read_at: r.read_at,
            ts: r.ts,
            severity: r.severity,
            part: r.part,
            line: &r.line,
        });
    }
    w.finish_plain()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(source: &str, file: &str, offset: u64, line: &str, sev: Severity) -> LogRecord {
        LogRecord {
            source: source.into(),
            file: file.into(),
            offset,
            read_at: 1_764_000_000_000 + offset as i64,
            ts: offset
                .is_multiple_of(2)
                .then_some(1_763_999_000_000 + offset as i64),
            severity: sev,
            line: line.into(),
            part: (offset % 3) as u32,
        }
    }

    fn sample() -> Vec<LogRecord> {
        vec![
            rec("app", "/var/log/app.log", 0, "started", Severity::Info),
            rec(
                "app",
                "/var/log/app.log",
                8,
                "disk 数据 full",
                Severity::Error,
            ),
            rec("sys", "/var/log/syslog", 0, "", Severity::Warning),
            rec("app", "/var/log/app.log.1", 10, "rotated", Severity::Debug),
            rec("app", "/var/log/app.log", 25, "again", Severity::Notice),
        ]
    }

    fn round(records: &[LogRecord]) -> Vec<LogRecord> {
        let block = compress(&from_records(records)).unwrap();
        let mut u = Unpacker::new().unwrap();
        decode_all(u.unpack(&block, 1 << 20).unwrap()).unwrap()
    }

    #[test]
    fn records_round_trip_and_names_are_stored_once() {
        let recs = sample();
        assert_eq!(round(&recs), recs);
        let plain = from_records(&recs);
        let r = BlockReader::new(&plain).unwrap();
        assert_eq!(r.files().len(), 3, "three distinct (source, file) pairs");
        assert_eq!(r.remaining(), 5);
        assert_eq!(round(&[]), vec![]);
    }

    #[test]
    fn the_summary_covers_every_record() {
        let s = summarize(&from_records(&sample())).unwrap().unwrap();
        assert_eq!(s.records, 5);
        assert_eq!(s.worst, Severity::Error);
        assert_eq!(s.ts_min, 1_763_999_000_000);
        // The odd offset has no time of its own: it is filed under when it was read.
        assert_eq!(s.ts_max, 1_764_000_000_000 + 25);
        assert_eq!(summarize(&from_records(&[])).unwrap(), None);
    }

    #[test]
    fn a_writer_is_reusable_after_finish() {
        let mut w = BlockWriter::new();
        let f = w.file("a", "/x");
        let r = RecordRef {
            file: f,
            offset: 1,
            read_at: 2,
            ts: None,
            severity: Severity::Info,
            part: 0,
            line: "one",
        };
        w.push(&r);
        assert_eq!(w.len(), 1);
        let first = w.finish_plain();
        assert!(w.is_empty());
        let f = w.file("b", "/y");
        assert_eq!(f, 0, "the table starts over");
        w.push(&RecordRef { file: f, ..r });
        let second = decode_all(&w.finish_plain()).unwrap();
        assert_eq!(second[0].source, "b");
        assert_eq!(decode_all(&first).unwrap()[0].source, "a");
    }

    #[test]
    fn bad_blocks_are_refused_with_what_is_wrong() {
        let plain = from_records(&sample());
        let mut u = Unpacker::new().unwrap();
        // Over the cap: refused from the header, before decompressing.
        let block = compress(&plain).unwrap();
        assert!(matches!(
            u.unpack(&block, 10),
            Err(BlockError::TooLarge { max: 10, .. })
        ));
        // Not zstd at all.
        assert!(matches!(
            u.unpack(b"plain text", 1 << 20),
            Err(BlockError::Frame(_))
        ));
        // A frame without its size (streamed) is refused.
        let mut streamed = Vec::new();
        {
            use std::io::Write;
            let mut e = zstd::stream::write::Encoder::new(&mut streamed, 1).unwrap();
            e.write_all(&plain).unwrap();
            e.finish().unwrap();
        }
        assert_eq!(
            u.unpack(&streamed, 1 << 20).map(|_| ()),
            Err(BlockError::Frame("no content size in its header".into()))
        );
        // Another layout version.
        let mut v2 = plain.clone();
        v2[0] = 2;
        assert_eq!(summarize(&v2).err(), Some(BlockError::Version(2)));
        // Trailing bytes.
        let mut long = plain.clone();
        long.push(0);
        assert!(
            matches!(summarize(&long), Err(BlockError::Malformed(m)) if m.contains("after the last"))
        );
        // Cut short.
        assert!(summarize(&plain[..plain.len() - 3]).is_err());
        // A file index out of range.
        let mut w = BlockWriter::new();
        w.file("a", "/x");
        w.push(&RecordRef {
            file: 0,
            offset: 0,
            read_at: 0,
            ts: None,
            severity: Severity::Info,
            part: 0,
            line: "x",
        });
        let mut p = w.finish_plain();
        // Header: version 1, files len 1, "a" (1, 'a'), "/x" (2, '/', 'x'), count 1; then the
        // record's file index.
        let at = 1 + 1 + 2 + 3 + 1;
        assert_eq!(p[at], 0);
        p[at] = 5;
        assert!(
            matches!(summarize(&p), Err(BlockError::Malformed(m)) if m.contains("file 5 of 1"))
        );
        // Invalid UTF-8 in a line.
        let mut bad = from_records(&[rec("a", "/x", 0, "ok", Severity::Info)]);
        let n = bad.len();
        bad[n - 1] = 0xff;
        assert!(summarize(&bad).is_err());
    }

    fn arb_record() -> impl Strategy<Value = LogRecord> {
        (
            0usize..3,
            0usize..3,
            any::<u64>(),
            any::<i64>(),
            proptest::option::of(any::<i64>()),
            0u8..8,
            any::<u32>(),
            ".{0,40}",
        )
            .prop_map(|(s, f, offset, read_at, ts, sev, part, line)| LogRecord {
                source: ["app", "sys", ""][s].into(),
                file: ["/a", "/var/log/b.log", "/c"][f].into(),
                offset,
                read_at,
                ts,
                severity: Severity::from_code(sev).unwrap(),
                line,
                part,
            })
    }

    proptest! {
        #[test]
        fn any_records_round_trip(recs in proptest::collection::vec(arb_record(), 0..40)) {
            prop_assert_eq!(round(&recs), recs);
        }

        #[test]
        fn damaged_blocks_error_not_panic(
            recs in proptest::collection::vec(arb_record(), 1..20),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let mut plain = from_records(&recs);
            let i = at.index(plain.len());
            plain[i] ^= flip;
            let _ = summarize(&plain);
            let _ = decode_all(&plain);
            let block = compress(&from_records(&recs)).unwrap();
            let mut b = block.clone();
            let j = at.index(b.len());
            b[j] ^= flip;
            let mut u = Unpacker::new().unwrap();
            if let Ok(plain) = u.unpack(&b, 1 << 20) {
                let _ = decode_all(plain);
            }
        }
    }
}

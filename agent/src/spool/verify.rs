//! `aftercare-agent spool verify`: read a spool offline and say what is in it and what is
//! damaged. Changes nothing on disk (a running agent repairs torn tails at its next start).

use super::fs::{DirStorage, Storage};
use super::{STATE_FILE, parse_segment_name, parse_state, scan_segment};
use aftercare_shared::protocol::StreamId;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegReport {
    pub name: String,
    pub stream: u8,
    pub bytes: u64,
    pub records: u64,
    pub unacked: u64,
    /// Samples (metrics) or lines (logs) in those records, and in the unacknowledged ones.
    pub items: u64,
    pub unacked_items: u64,
    pub header_ok: bool,
    /// (offset, length, runs to the end of the file).
    pub damaged: Vec<(u64, u64, bool)>,
    /// Set when the file could not be read at all.
    pub error: Option<String>,
}

impl SegReport {
    pub fn is_damaged(&self) -> bool {
        !self.header_ok || !self.damaged.is_empty() || self.error.is_some()
    }
}

#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub dir: PathBuf,
    pub segments: Vec<SegReport>,
    pub acked: BTreeMap<u8, u64>,
    pub state_found: bool,
}

fn stream_name(code: u8) -> String {
    StreamId::from_code(code)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|| format!("stream-{code}"))
}

impl VerifyReport {
    /// Segments with damage of any kind.
    pub fn damaged_segments(&self) -> usize {
        self.segments.iter().filter(|s| s.is_damaged()).count()
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        let bytes: u64 = self.segments.iter().map(|s| s.bytes).sum();
        let _ = writeln!(
            o,
            "spool {}: {} segments, {bytes} bytes",
            self.dir.display(),
            self.segments.len()
        );
        if !self.state_found {
            let _ = writeln!(o, "no state file: nothing recorded as acknowledged");
        }
        if self.segments.is_empty() {
            let _ = writeln!(o, "empty");
            return o;
        }
        let _ = writeln!(
            o,
            "{:<30} {:<10} {:>9} {:>9} {:>9} {:>11}  state",
            "segment", "stream", "records", "acked", "unacked", "bytes"
        );
        for s in &self.segments {
            let _ = writeln!(
                o,
                "{:<30} {:<10} {:>9} {:>9} {:>9} {:>11}  {}",
                s.name,
                stream_name(s.stream),
                s.records,
                s.records - s.unacked,
                s.unacked,
                s.bytes,
                if s.is_damaged() { "DAMAGED" } else { "ok" }
            );
            if let Some(e) = &s.error {
                let _ = writeln!(o, "  unreadable: {e}");
            }
            if !s.header_ok {
                let _ = writeln!(o, "  bad segment header (not ACSPOOL version 1)");
            }
            for &(off, len, to_end) in &s.damaged {
                let _ = writeln!(
                    o,
                    "  {} at offset {off}: {len} bytes{}",
                    if to_end {
                        "torn tail"
                    } else {
                        "corrupt record"
                    },
                    if to_end {
                        " (a write cut short; cut off at the agent's next start)"
                    } else {
                        " (CRC mismatch; skipped when sending)"
                    }
                );
            }
        }
        #[derive(Default)]
        struct Sum {
            records: u64,
            unacked: u64,
            items: u64,
            unacked_items: u64,
            bytes: u64,
            damaged: usize,
        }
        let mut per: BTreeMap<u8, Sum> = BTreeMap::new();
        for s in &self.segments {
            let e = per.entry(s.stream).or_default();
            e.records += s.records;
            e.unacked += s.unacked;
            e.items += s.items;
            e.unacked_items += s.unacked_items;
            e.bytes += s.bytes;
            e.damaged += s.damaged.len() + usize::from(s.error.is_some());
        }
        let _ = writeln!(o, "per stream:");
        for (code, e) in per {
            let what = if code == StreamId::Logs.code() {
                "lines"
            } else {
                "samples"
            };
            let _ = writeln!(
                o,
                "  {:<10} records {}, unacked {} ({} {what}), {what} {}, bytes {}, damaged {}, acked up to seq {}",
                stream_name(code),
                e.records,
                e.unacked,
                e.unacked_items,
                e.items,
                e.bytes,
                e.damaged,
                self.acked.get(&code).copied().unwrap_or(0)
            );
        }
        o
    }
}

/// Walk every segment of the spool in `dir`, checking every CRC.
pub fn verify(dir: &Path) -> io::Result<VerifyReport> {
    let mut rep = VerifyReport {
        dir: dir.to_path_buf(),
        ..Default::default()
    };
    if !dir.exists() {
        return Ok(rep);
    }
    let fs = DirStorage::existing(dir);
    if let Some(b) = fs.read_small(STATE_FILE)? {
        rep.state_found = true;
        rep.acked = parse_state(&String::from_utf8_lossy(&b)).0;
    }
    let mut files: Vec<(u64, u8, String, u64)> = fs
        .list()?
        .into_iter()
        .filter_map(|(n, len)| parse_segment_name(&n).map(|(s, i)| (i, s, n, len)))
        .collect();
    files.sort();
    for (first_id, stream, name, len) in files {
        let acked = rep.acked.get(&stream).copied().unwrap_or(0);
        let seg = match fs
            .open_read(&name)
            .and_then(|mut r| scan_segment(&mut r, stream, first_id, len, acked))
        {
            Ok(s) => SegReport {
                name,
                stream,
                bytes: len,
                records: s.meta.records,
                unacked: s.unacked.0,
                items: s.meta.samples,
                unacked_items: s.unacked.1,
                header_ok: s.header_ok,
                damaged: s.damaged,
                error: None,
            },
            Err(e) => SegReport {
                name,
                stream,
                bytes: len,
                records: 0,
                unacked: 0,
                items: 0,
                unacked_items: 0,
                header_ok: true,
                damaged: Vec::new(),
                error: Some(e.to_string()),
            },
        };
        rep.segments.push(seg);
    }
    Ok(rep)
}

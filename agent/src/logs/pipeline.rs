//! From the tailer's lines to the records that leave the host: multiline joining, the
//! line's own time and severity, decoding to UTF-8, redaction. Pure: lines and time in,
//! records out (to an [`Emit`]); the reader thread does the reading and the batching.
//!
//! Every record comes with the (source, file, end) it acknowledges, so the caller can move
//! the tailer's positions exactly past the lines that made it into a batch. Lines still
//! held by a multiline combiner are not acknowledged: a restart reads them again.
//!
//! A record is handed out borrowed, not built: at hundreds of thousands of lines a second
//! the allocations of an owned record per line cost more than everything else here.

use super::config::LogSource;
use super::driver::SourceLine;
use super::encoding::LineEncoding;
use super::multiline::{Combiner, Record};
use super::redact::{Redactor, RuleSet};
use super::severity;
use super::tailer::FileId;
use aftercare_shared::model::{LogRecord, Severity, UnixMillis};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use time::{OffsetDateTime, UtcOffset};

/// One record as the pipeline hands it out, borrowing its text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Emitted<'a> {
    /// What the record acknowledges: the source's index, the file, the end offset.
    pub source: usize,
    pub file: FileId,
    pub end: u64,
    /// The source's name (`[[logs]] name`, or its first path).
    pub source_name: &'a str,
    /// The path the file was last seen at.
    pub path: &'a str,
    /// Byte offset of the record's first line in that file.
    pub offset: u64,
    pub read_at: UnixMillis,
    /// From the line itself, where it has one.
    pub ts: Option<UnixMillis>,
    /// Stated by the line, else `Info`.
    pub severity: Severity,
    /// Part `n` (1-based) of a line longer than the source's limit; 0 for a whole line.
    pub part: u32,
    /// UTF-8, decoded from the source's encoding (malformed bytes become U+FFFD), redacted.
    pub line: &'a str,
}

/// Where the pipeline's records go.
pub trait Emit {
    fn emit(&mut self, r: Emitted<'_>);
}

/// A record made owned, with the position it acknowledges (tests and small callers).
#[derive(Debug, Clone, PartialEq)]
pub struct Out {
    pub source: usize,
    pub file: FileId,
    pub end: u64,
    pub record: LogRecord,
}

impl Emit for Vec<Out> {
    fn emit(&mut self, r: Emitted<'_>) {
        self.push(Out {
            source: r.source,
            file: r.file,
            end: r.end,
            record: LogRecord {
                source: r.source_name.into(),
                file: r.path.into(),
                offset: r.offset,
                read_at: r.read_at,
                ts: r.ts,
                severity: r.severity,
                line: r.line.into(),
                part: r.part,
            },
        });
    }
}

struct SourceState {
    name: String,
    encoding: LineEncoding,
    cfg: LogSource,
    redactor: Redactor,
}

/// Per followed file: its multiline combiner (if the source has a rule) and the part
/// number of a line being split.
#[derive(Default)]
struct FileState {
    combiner: Option<Combiner>,
    part: u32,
    last_seen: Option<Instant>,
}

pub struct Pipeline {
    sources: Vec<SourceState>,
    files: BTreeMap<(usize, FileId), FileState>,
    local: UtcOffset,
    /// The last path shown, as text: lines of one file share one `Arc`, so the text is
    /// made once per run of lines rather than once per line.
    path_text: Option<(Arc<Path>, String)>,
}

impl Pipeline {
    pub fn new(sources: &[LogSource], rules: Arc<RuleSet>, local: UtcOffset) -> Pipeline {
        Pipeline {
            sources: sources
                .iter()
                .map(|s| SourceState {
                    name: s.display_name().to_string(),
                    // Validated with the config; a bad label cannot get this far.
                    encoding: s.line_encoding().unwrap_or_default(),
                    cfg: s.clone(),
                    redactor: Redactor::new(rules.clone()),
                })
                .collect(),
            files: BTreeMap::new(),
            local,
            path_text: None,
        }
    }

    /// Lines as the driver returned them, read at `read_at`.
    pub fn push(
        &mut self,
        now: Instant,
        read_at: OffsetDateTime,
        lines: Vec<SourceLine>,
        out: &mut impl Emit,
    ) {
        let mut last: Option<(usize, FileId)> = None;
        for SourceLine { source, line } in lines {
            let Some(src) = self.sources.get(source) else {
                continue;
            };
            let file = line.file;
            // Lines come in runs of one file: its state is looked up once per run.
            if last != Some((source, file)) {
                self.files.entry((source, file)).or_default().last_seen = Some(now);
                last = Some((source, file));
            }
            match src.cfg.multiline_start {
                None => self.emit(source, Record { line, lines: 1 }, read_at, out),
                Some(rule) => {
                    let (max, wait) = (src.cfg.max_line_bytes, src.cfg.multiline_timeout);
                    let st = self.files.entry((source, file)).or_default();
                    let c = st
                        .combiner
                        .get_or_insert_with(|| Combiner::new(Some(rule), max, wait));
                    for r in c.push(now, line) {
                        self.emit(source, r, read_at, out);
                    }
                }
            }
        }
    }

    /// Records whose multiline wait is over.
    pub fn poll_timeouts(&mut self, now: Instant, read_at: OffsetDateTime, out: &mut impl Emit) {
        let mut due = Vec::new();
        for (&(source, _), st) in self.files.iter_mut() {
            if let Some(c) = st.combiner.as_mut()
                && let Some(r) = c.poll_timeout(now)
            {
                due.push((source, r));
            }
        }
        for (source, r) in due {
            self.emit(source, r, read_at, out);
        }
    }

    /// When `poll_timeouts` will have something.
    pub fn deadline(&self) -> Option<Instant> {
        self.files
            .values()
            .filter_map(|s| s.combiner.as_ref()?.deadline())
            .min()
    }

    /// Forget files not seen for `idle` that hold nothing pending (rotated away long ago).
    pub fn forget_idle(&mut self, now: Instant, idle: std::time::Duration) {
        self.files.retain(|_, s| {
            let pending = s.combiner.as_ref().is_some_and(|c| c.deadline().is_some());
            pending || s.last_seen.is_some_and(|t| now.duration_since(t) < idle)
        });
    }

    /// Redaction counts per rule since the last call, all sources together.
    pub fn take_redaction_counts(&mut self) -> Vec<(String, u64)> {
        let mut sum: BTreeMap<String, u64> = BTreeMap::new();
        for s in &mut self.sources {
            for (rule, n) in s.redactor.take_counts() {
                *sum.entry(rule).or_default() += n;
            }
        }
        sum.into_iter().filter(|(_, n)| *n > 0).collect()
    }

    fn emit(&mut self, source: usize, r: Record, read_at: OffsetDateTime, out: &mut impl Emit) {
        let (file, end) = (r.line.file, r.line.end);
        let part = match (r.line.split, r.line.continued) {
            (false, false) => 0,
            (true, false) => 1,
            (_, true) => {
                let st = self.files.entry((source, file)).or_default();
                st.part + 1
            }
        };
        if r.line.split || r.line.continued {
            self.files.entry((source, file)).or_default().part =
                if r.line.split { part } else { 0 };
        }
        let path = match &self.path_text {
            Some((p, text)) if Arc::ptr_eq(p, &r.line.path) => text,
            _ => {
                let text = r.line.path.to_string_lossy().into_owned();
                &self.path_text.insert((r.line.path.clone(), text)).1
            }
        };
        let src = &mut self.sources[source];
        // Severity and time come from the record's first line (a trace's header), read in
        // the raw bytes: ASCII is the same bytes in every encoding a source may have. A
        // piece that continues a split line starts mid-line: nothing there to parse.
        let bytes = &r.line.bytes[..];
        let first = match memchr::memchr(b'\n', bytes) {
            Some(i) => &bytes[..i],
            None => bytes,
        };
        let parsed = (!r.line.continued).then(|| severity::parse(first, read_at, self.local));
        let text = src.encoding.decode(bytes);
        // Redaction works line by line: a joined trace is redacted as its lines.
        let line: Cow<'_, str> = if r.lines > 1 {
            let mut s = String::with_capacity(text.len());
            for (i, l) in text.split('\n').enumerate() {
                if i > 0 {
                    s.push('\n');
                }
                s.push_str(&src.redactor.redact(l));
            }
            Cow::Owned(s)
        } else {
            src.redactor.redact(&text)
        };
        out.emit(Emitted {
            source,
            file,
            end,
            source_name: &src.name,
            path,
            offset: r.line.offset,
            read_at: millis(read_at),
            ts: parsed.and_then(|p| p.timestamp).map(millis),
            severity: parsed.and_then(|p| p.severity).unwrap_or(Severity::Info),
            part,
            line: &line,
        });
    }
}

/// Milliseconds since the epoch, without the 128-bit division of `unix_timestamp_nanos`.
fn millis(t: OffsetDateTime) -> UnixMillis {
    t.unix_timestamp() * 1000 + i64::from(t.millisecond())
}

/// This machine's offset from UTC now, for lines that state a time without a zone
/// (RFC 3164 syslog). Read once at start: the `time` crate will not read it in a
/// threaded process, and a DST change mid-run shifts such times by an hour at most.
pub fn local_offset() -> UtcOffset {
    // SAFETY: localtime_r writes only into `tm`, which we own.
    let secs = unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return UtcOffset::UTC;
        }
        tm.tm_gmtoff
    };
    UtcOffset::from_whole_seconds(secs as i32).unwrap_or(UtcOffset::UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::config::MultilineStart;
    use crate::logs::tailer::Line;
    use std::time::Duration;
    use time::macros::datetime;

    fn source(multiline: Option<MultilineStart>) -> LogSource {
        let mut s: LogSource =
            toml::from_str("name = \"app\"\npaths = [\"/var/log/app.log\"]").unwrap();
        s.multiline_start = multiline;
        s.max_line_bytes = 256;
        s
    }

    fn line(file: FileId, offset: u64, text: &str, split: bool, continued: bool) -> SourceLine {
        SourceLine {
            source: 0,
            line: Line {
                file,
                path: std::path::Path::new("/var/log/app.log").into(),
                offset,
                end: offset + text.len() as u64 + u64::from(!split),
                bytes: text.as_bytes().to_vec(),
                split,
                continued,
            },
        }
    }

    fn pipeline(m: Option<MultilineStart>) -> Pipeline {
        Pipeline::new(
            &[source(m)],
            Arc::new(RuleSet::new(&[]).unwrap()),
            UtcOffset::UTC,
        )
    }

    #[test]
    fn lines_become_redacted_records_that_acknowledge_their_end() {
        let mut p = pipeline(None);
        let now = Instant::now();
        let at = datetime!(2026-11-22 04:00 UTC);
        let mut out = Vec::new();
        p.push(
            now,
            at,
            vec![
                line(
                    1,
                    0,
                    "2026-11-22T03:59:00Z ERROR db down password=hunter2",
                    false,
                    false,
                ),
                line(1, 52, "plain", false, false),
            ],
            &mut out,
        );
        assert_eq!(out.len(), 2);
        let r = &out[0].record;
        assert_eq!(r.severity, Severity::Error);
        assert_eq!(r.ts, Some(millis(datetime!(2026-11-22 03:59 UTC))));
        assert_eq!(r.read_at, millis(at));
        assert!(
            r.line.contains("[REDACTED:") && !r.line.contains("hunter2"),
            "{}",
            r.line
        );
        assert_eq!(
            (r.source.as_str(), r.file.as_str(), r.offset),
            ("app", "/var/log/app.log", 0)
        );
        assert_eq!((out[0].end, out[1].end), (52, 58));
        assert_eq!(
            out[1].record.severity,
            Severity::Info,
            "no stated severity reads as info"
        );
        assert_eq!(
            p.take_redaction_counts(),
            vec![("kv-secret".to_string(), 1)]
        );
        assert!(p.take_redaction_counts().is_empty());
    }

    #[test]
    fn a_gbk_source_arrives_as_utf8_text() {
        let mut src = source(None);
        src.encoding = "gbk".into();
        let mut p = Pipeline::new(&[src], Arc::new(RuleSet::new(&[]).unwrap()), UtcOffset::UTC);
        let (gbk, _, bad) = encoding_rs::GBK.encode("2026-11-22T10:00:01Z ERROR 数据库连接失败");
        assert!(!bad);
        let mut l = line(1, 0, "", false, false);
        l.line.bytes = gbk.to_vec();
        let mut out = Vec::new();
        p.push(
            Instant::now(),
            datetime!(2026-11-22 10:00 UTC),
            vec![l],
            &mut out,
        );
        assert_eq!(
            out[0].record.line,
            "2026-11-22T10:00:01Z ERROR 数据库连接失败"
        );
        assert_eq!(out[0].record.severity, Severity::Error);
    }

    #[test]
    fn a_trace_takes_its_headers_time_and_severity_and_a_piece_has_none() {
        let mut p = pipeline(Some(MultilineStart::Timestamp));
        let t0 = Instant::now();
        let at = datetime!(2026-11-22 04:00 UTC);
        let mut out = Vec::new();
        let head = "2026-11-22 03:50:11,123 ERROR boom";
        let body = "java.lang.IllegalStateException: INFO";
        p.push(
            t0,
            at,
            vec![
                line(1, 0, head, false, false),
                line(1, 35, body, false, false),
                line(1, 73, "2026-11-22 03:50:12 INFO next", false, false),
            ],
            &mut out,
        );
        let r = &out[0].record;
        assert_eq!(r.line, format!("{head}\n{body}"));
        assert_eq!(r.severity, Severity::Error);
        assert_eq!(r.ts, Some(millis(datetime!(2026-11-22 03:50:11.123 UTC))));
        assert_eq!((r.offset, out[0].end), (0, 73));

        let mut p = pipeline(None);
        let mut out = Vec::new();
        let mut piece = line(2, 256, "", true, true);
        piece.line.bytes = b"ERROR in the middle \xff".to_vec();
        p.push(t0, at, vec![piece], &mut out);
        let r = &out[0].record;
        assert_eq!(
            r.severity,
            Severity::Info,
            "a continued piece is not a line start"
        );
        assert_eq!(r.ts, None);
        assert!(
            r.line.ends_with('\u{fffd}'),
            "malformed bytes are marked, not dropped"
        );
    }

    #[test]
    fn split_lines_are_numbered_parts() {
        let mut p = pipeline(None);
        let mut out = Vec::new();
        let at = datetime!(2026-11-22 04:00 UTC);
        p.push(
            Instant::now(),
            at,
            vec![
                line(1, 0, "aaaa", true, false),
                line(1, 4, "bbbb", true, true),
                line(1, 8, "cc", false, true),
                line(1, 11, "whole", false, false),
            ],
            &mut out,
        );
        let parts: Vec<u32> = out.iter().map(|o| o.record.part).collect();
        assert_eq!(parts, vec![1, 2, 3, 0]);
    }

    #[test]
    fn a_trace_is_one_record_and_pending_lines_wait() {
        let mut p = pipeline(Some(MultilineStart::Timestamp));
        let t0 = Instant::now();
        let at = datetime!(2026-11-22 04:00 UTC);
        let mut out = Vec::new();
        p.push(
            t0,
            at,
            vec![
                line(1, 0, "2026-11-22 03:59:00 ERROR boom", false, false),
                line(1, 31, "\tat x(X.java:1)", false, false),
                line(1, 47, "2026-11-22 03:59:01 INFO next", false, false),
            ],
            &mut out,
        );
        assert_eq!(out.len(), 1, "the second record waits for its end");
        assert_eq!(
            out[0].record.line,
            "2026-11-22 03:59:00 ERROR boom\n\tat x(X.java:1)"
        );
        assert_eq!(out[0].end, 47);
        assert_eq!(p.deadline(), Some(t0 + Duration::from_secs(1)));
        p.poll_timeouts(t0 + Duration::from_millis(10), at, &mut out);
        assert_eq!(out.len(), 1);
        p.poll_timeouts(t0 + Duration::from_secs(1), at, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].end, 77);
        assert_eq!(p.deadline(), None);
        p.forget_idle(t0 + Duration::from_secs(3600), Duration::from_secs(600));
        assert!(p.files.is_empty());
    }
}

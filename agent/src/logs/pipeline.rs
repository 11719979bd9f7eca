//! From the tailer's lines to the records that leave the host: multiline joining, the
//! line's own time and severity, redaction, and the wire form. Pure: lines and time in,
//! records out; the run loop does the reading and the sending.
//!
//! Every record keeps the (source, file, end) it acknowledges, so the caller can move the
//! tailer's positions exactly past the lines that made it into a batch. Lines still held
//! by a multiline combiner are not acknowledged: a restart reads them again.

use super::config::LogSource;
use super::driver::SourceLine;
use super::encoding::LineEncoding;
use super::multiline::{Combiner, Record};
use super::record::LogRecord as Parsed;
use super::redact::{Redactor, RuleSet};
use super::tailer::FileId;
use aftercare_shared::model::{LogRecord, Severity, UnixMillis};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use time::{OffsetDateTime, UtcOffset};

/// A record ready for a batch, and the position it acknowledges.
#[derive(Debug, Clone, PartialEq)]
pub struct Out {
    pub source: usize,
    pub file: FileId,
    pub end: u64,
    pub record: LogRecord,
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
        }
    }

    /// Lines as the driver returned them, read at `read_at`.
    pub fn push(
        &mut self,
        now: Instant,
        read_at: OffsetDateTime,
        lines: Vec<SourceLine>,
        out: &mut Vec<Out>,
    ) {
        for SourceLine { source, line } in lines {
            let Some(src) = self.sources.get(source) else {
                continue;
            };
            let file = line.file;
            let st = self.files.entry((source, file)).or_default();
            st.last_seen = Some(now);
            match src.cfg.multiline_start {
                None => self.emit(source, Record { line, lines: 1 }, read_at, out),
                Some(rule) => {
                    let c = st.combiner.get_or_insert_with(|| {
                        Combiner::new(
                            Some(rule),
                            src.cfg.max_line_bytes,
                            src.cfg.multiline_timeout,
                        )
                    });
                    for r in c.push(now, line) {
                        self.emit(source, r, read_at, out);
                    }
                }
            }
        }
    }

    /// Records whose multiline wait is over.
    pub fn poll_timeouts(&mut self, now: Instant, read_at: OffsetDateTime, out: &mut Vec<Out>) {
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

    fn emit(&mut self, source: usize, r: Record, read_at: OffsetDateTime, out: &mut Vec<Out>) {
        let (file, end) = (r.line.file, r.line.end);
        let st = self.files.entry((source, file)).or_default();
        let part = match (r.line.split, r.line.continued) {
            (false, false) => 0,
            (true, false) => 1,
            (_, true) => st.part + 1,
        };
        st.part = if r.line.split { part } else { 0 };
        let src = &mut self.sources[source];
        let p = Parsed::new(&src.name, r, read_at, self.local, src.encoding);
        // Redaction works line by line: a joined trace is redacted as its lines.
        let text = if p.lines > 1 {
            let mut s = String::with_capacity(p.text.len());
            for (i, l) in p.text.split('\n').enumerate() {
                if i > 0 {
                    s.push('\n');
                }
                s.push_str(&src.redactor.redact(l));
            }
            s
        } else {
            match src.redactor.redact(&p.text) {
                std::borrow::Cow::Borrowed(_) => p.text,
                std::borrow::Cow::Owned(s) => s,
            }
        };
        out.push(Out {
            source,
            file,
            end,
            record: LogRecord {
                source: p.source,
                file: p.file.to_string_lossy().into_owned(),
                offset: p.offset,
                read_at: millis(p.read_at),
                ts: p.timestamp.map(millis),
                severity: p.severity.unwrap_or(Severity::Info),
                line: text,
                part,
            },
        });
    }
}

fn millis(t: OffsetDateTime) -> UnixMillis {
    (t.unix_timestamp_nanos() / 1_000_000) as UnixMillis
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
                path: "/var/log/app.log".into(),
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

//! A log record as it will leave the host: what was read, from where, when, and what the
//! line says about itself. Pure; the wire form joins `aftercare_shared::model` when the
//! tailer is wired into the run loop (redaction comes between this and the wire).

use super::encoding::LineEncoding;
use super::multiline::Record;
use super::severity::{self, Severity};
use std::path::PathBuf;
use time::{OffsetDateTime, UtcOffset};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogRecord {
    /// The source's name (`[[logs]] name`, or its first path).
    pub source: String,
    /// The path the file was last seen at.
    pub file: PathBuf,
    /// Byte offset of the record's first line in that file.
    pub offset: u64,
    pub read_at: OffsetDateTime,
    /// From the line itself, where it has one.
    pub timestamp: Option<OffsetDateTime>,
    pub severity: Option<Severity>,
    /// UTF-8, decoded from the source's encoding; malformed bytes become U+FFFD.
    pub text: String,
    /// A piece of a line longer than `max_line_bytes` (more follows), and whether it
    /// continues the previous piece.
    pub split: bool,
    pub continued: bool,
    /// Lines joined into this record by the multiline rule.
    pub lines: u32,
}

impl LogRecord {
    /// Severity and timestamp come from the record's first line (a trace's header), read
    /// in the raw bytes: ASCII is the same bytes in every encoding a source may have.
    pub fn new(
        source: &str,
        r: Record,
        read_at: OffsetDateTime,
        local: UtcOffset,
        encoding: LineEncoding,
    ) -> Self {
        let first = r.line.bytes.split(|&b| b == b'\n').next().unwrap_or(&[]);
        // A piece that continues a split line starts mid-line: nothing there to parse.
        let parsed = (!r.line.continued).then(|| severity::parse(first, read_at, local));
        let text = encoding.decode_owned(r.line.bytes);
        LogRecord {
            source: source.into(),
            file: r.line.path,
            offset: r.line.offset,
            read_at,
            timestamp: parsed.and_then(|p| p.timestamp),
            severity: parsed.and_then(|p| p.severity),
            text,
            split: r.line.split,
            continued: r.line.continued,
            lines: r.lines,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::tailer::Line;
    use time::macros::datetime;

    fn rec(bytes: &[u8], continued: bool, lines: u32) -> Record {
        Record {
            line: Line {
                file: 3,
                path: "/var/log/app.log".into(),
                offset: 120,
                end: 120 + bytes.len() as u64 + 1,
                bytes: bytes.to_vec(),
                split: false,
                continued,
            },
            lines,
        }
    }

    #[test]
    fn a_trace_takes_its_headers_time_and_severity() {
        let now = datetime!(2026-11-22 04:00 UTC);
        let r = LogRecord::new(
            "app",
            rec(
                b"2026-11-22 03:50:11,123 ERROR boom\njava.lang.IllegalStateException: INFO\n\tat x(X.java:1)",
                false,
                3,
            ),
            now,
            UtcOffset::UTC,
            LineEncoding::default(),
        );
        assert_eq!(r.severity, Some(Severity::Error));
        assert_eq!(r.timestamp, Some(datetime!(2026-11-22 03:50:11.123 UTC)));
        assert_eq!((r.offset, r.lines, r.source.as_str()), (120, 3, "app"));
        assert_eq!(r.file, PathBuf::from("/var/log/app.log"));
        assert_eq!(r.read_at, now);

        let piece = LogRecord::new(
            "app",
            rec(b"ERROR in the middle \xff", true, 1),
            now,
            UtcOffset::UTC,
            LineEncoding::default(),
        );
        assert_eq!(
            piece.severity, None,
            "a continued piece is not a line start"
        );
        assert!(piece.text.ends_with('\u{fffd}'));
    }

    #[test]
    fn a_gbk_line_is_parsed_in_its_bytes_and_decoded_to_utf8() {
        let now = datetime!(2026-11-22 04:00 UTC);
        let text = "2026-11-22 10:00:01 ERROR 数据库连接失败\n\tat 连接池.获取(Pool.java:42)";
        let (bytes, _, unmappable) = encoding_rs::GBK.encode(text);
        assert!(!unmappable);
        assert_ne!(&*bytes, text.as_bytes());
        let gbk = LineEncoding::for_label("gbk").unwrap();
        let local = UtcOffset::from_hms(8, 0, 0).unwrap();
        let r = LogRecord::new("app", rec(&bytes, false, 2), now, local, gbk);
        assert_eq!(r.severity, Some(Severity::Error));
        assert_eq!(r.timestamp, Some(datetime!(2026-11-22 10:00:01 +8)));
        assert_eq!(r.text, text);

        // The same bytes read as UTF-8: the same severity and time, unreadable text.
        let u = LogRecord::new(
            "app",
            rec(&bytes, false, 2),
            now,
            local,
            LineEncoding::default(),
        );
        assert_eq!((u.severity, u.timestamp), (r.severity, r.timestamp));
        assert!(u.text.starts_with("2026-11-22 10:00:01 ERROR \u{fffd}"));
    }
}

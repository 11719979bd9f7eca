//! `[[logs]]` sources in agent.toml: which files, and how their lines become records.
//!
//! ```toml
//! [[logs]]
//! name = "nginx"                       # default: the first path
//! paths = ["/var/log/nginx/*.log"]     # absolute paths or globs
//! start_at = "end"                     # for files seen on a fresh start: "beginning" (default) or "end"
//! max_line_bytes = 32768               # longer lines are split into marked pieces
//! multiline_start = "timestamp"        # or "not_indented"; default: every line is a record
//! multiline_timeout = "1s"             # a pending record is sent after this long without a new line
//! encoding = "gbk"                     # default "utf-8"; also gb18030, gb2312 (read as GBK)
//! ```
//!
//! `encoding` takes any ASCII-compatible WHATWG label (see `encoding.rs`): UTF-16 is refused,
//! because lines are cut at the byte 0x0A before they are decoded.
//!
//! Multiline rules are a fixed set rather than a pattern: a regex engine would cost the
//! agent 0.3–0.5 MB of PSS, and these two cover stack traces (Java's `\tat ...` and
//! `Caused by: ...` lines, Python's indented `File ...` lines) in logs whose records begin
//! with a time. Parsed on its own for now; `AgentConfig` takes it when the tailer is wired
//! into the run loop.

use super::encoding::LineEncoding;
use super::tailer::StartAt;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSource {
    #[serde(default)]
    pub name: Option<String>,
    pub paths: Vec<String>,
    #[serde(default = "default_encoding")]
    pub encoding: String,
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    #[serde(default)]
    pub multiline_start: Option<MultilineStart>,
    #[serde(
        default = "default_multiline_timeout",
        with = "aftercare_shared::config::duration"
    )]
    pub multiline_timeout: Duration,
    #[serde(default)]
    pub start_at: StartAt,
}

/// Which lines begin a new record; the others continue the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MultilineStart {
    /// A line beginning with a timestamp (ISO 8601, RFC 3164, optionally after `<PRI>` or `[`).
    Timestamp,
    /// A line not beginning with a space or a tab.
    NotIndented,
}

pub const MIN_LINE_BYTES: usize = 256;
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

fn default_encoding() -> String {
    "utf-8".into()
}
fn default_max_line_bytes() -> usize {
    32 * 1024
}
fn default_multiline_timeout() -> Duration {
    Duration::from_secs(1)
}

impl LogSource {
    /// The source's name in records: `name`, or its first path.
    pub fn display_name(&self) -> &str {
        self.name
            .as_deref()
            .or(self.paths.first().map(String::as_str))
            .unwrap_or("")
    }

    /// The encoding `encoding` names; an error for a name `validate` refuses.
    pub fn line_encoding(&self) -> Result<LineEncoding, super::encoding::EncodingError> {
        LineEncoding::for_label(&self.encoding)
    }

    /// Check one source; `key` is how the error names it, e.g. `logs[2]`.
    pub fn validate(&self, key: &str) -> Result<(), String> {
        if self.paths.is_empty() {
            return Err(format!(
                "{key}.paths is empty: name at least one file or glob"
            ));
        }
        for p in &self.paths {
            if !p.starts_with('/') {
                return Err(format!(
                    "{key}.paths: '{p}' is not absolute (log paths must start with '/')"
                ));
            }
            if p.ends_with('/') {
                return Err(format!(
                    "{key}.paths: '{p}' is a directory; name files or a glob such as '{p}*.log'"
                ));
            }
        }
        if let Some(n) = &self.name
            && n.trim().is_empty()
        {
            return Err(format!("{key}.name is empty"));
        }
        if let Err(e) = self.line_encoding() {
            return Err(format!("{key}.encoding = '{}': {e}", self.encoding));
        }
        if !(MIN_LINE_BYTES..=MAX_LINE_BYTES).contains(&self.max_line_bytes) {
            return Err(format!(
                "{key}.max_line_bytes = {} is out of range: use {MIN_LINE_BYTES} to {MAX_LINE_BYTES}",
                self.max_line_bytes
            ));
        }
        if self.multiline_timeout.is_zero() || self.multiline_timeout > Duration::from_secs(60) {
            return Err(format!(
                "{key}.multiline_timeout = {:?} is out of range: use 1ms to 60s",
                self.multiline_timeout
            ));
        }
        Ok(())
    }
}

/// Validate a list of sources as found under `[[logs]]`; names must be unique.
pub fn validate_all(sources: &[LogSource]) -> Result<(), String> {
    for (i, s) in sources.iter().enumerate() {
        s.validate(&format!("logs[{i}]"))?;
        if let Some(j) = sources[..i]
            .iter()
            .position(|o| o.display_name() == s.display_name())
        {
            return Err(format!(
                "logs[{i}] and logs[{j}] are both named '{}'; give one a `name`",
                s.display_name()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        logs: Vec<LogSource>,
    }

    fn parse(text: &str) -> Result<Vec<LogSource>, String> {
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        validate_all(&f.logs)?;
        Ok(f.logs)
    }

    #[test]
    fn defaults() {
        let l = parse("[[logs]]\npaths = [\"/var/log/syslog\"]\n").unwrap();
        let s = &l[0];
        assert_eq!(s.display_name(), "/var/log/syslog");
        assert_eq!(s.max_line_bytes, 32 * 1024);
        assert_eq!(s.start_at, StartAt::Beginning);
        assert_eq!(s.multiline_start, None);
        assert_eq!(s.multiline_timeout, Duration::from_secs(1));
        assert_eq!(s.encoding, "utf-8");
        assert_eq!(s.line_encoding(), Ok(LineEncoding::default()));
    }

    #[test]
    fn everything_set() {
        let l = parse(
            r#"
[[logs]]
name = "app"
paths = ["/var/log/app/*.log", "/srv/app/log/current"]
start_at = "end"
max_line_bytes = 4096
multiline_start = "timestamp"
multiline_timeout = "500ms"
encoding = "UTF8"

[[logs]]
paths = ["/var/log/auth.log"]
multiline_start = "not_indented"
"#,
        )
        .unwrap();
        assert_eq!(l[0].start_at, StartAt::End);
        assert_eq!(l[0].multiline_start, Some(MultilineStart::Timestamp));
        assert_eq!(l[0].multiline_timeout, Duration::from_millis(500));
        assert_eq!(l[1].multiline_start, Some(MultilineStart::NotIndented));
        assert_eq!(l[0].line_encoding().unwrap().name(), "UTF-8");
    }

    #[test]
    fn chinese_and_other_encodings() {
        let src = |e: &str| format!("[[logs]]\npaths = [\"/var/log/a\"]\nencoding = \"{e}\"\n");
        for (label, name) in [
            ("gbk", "GBK"),
            ("GB2312", "GBK"),
            ("gb18030", "gb18030"),
            ("shift_jis", "Shift_JIS"),
        ] {
            let l = parse(&src(label)).unwrap();
            assert_eq!(l[0].line_encoding().unwrap().name(), name, "{label}");
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        let src = |extra: &str| format!("[[logs]]\npaths = [\"/var/log/a\"]\n{extra}");
        for (extra, needle) in [
            (
                "encoding = \"big-5\"",
                "logs[0].encoding = 'big-5': unknown encoding: use utf-8 (the default), gbk, gb18030",
            ),
            (
                "encoding = \"utf-16\"",
                "logs[0].encoding = 'utf-16': UTF-16LE is not supported: lines are split at the byte 0x0A",
            ),
            ("max_line_bytes = 10", "logs[0].max_line_bytes = 10"),
            ("start_at = \"middle\"", "middle"),
            ("multiline_start = \"^\\\\s\"", "multiline_start"),
            ("multiline_timeout = \"0s\"", "logs[0].multiline_timeout"),
            ("name = \" \"", "logs[0].name is empty"),
            ("pathz = []", "pathz"),
        ] {
            let e = parse(&src(extra)).unwrap_err();
            assert!(e.contains(needle), "{extra}: {e}");
        }
        let e = parse("[[logs]]\npaths = [\"var/log/a\"]\n").unwrap_err();
        assert!(e.contains("logs[0].paths") && e.contains("absolute"), "{e}");
        let e = parse("[[logs]]\npaths = []\n").unwrap_err();
        assert!(e.contains("logs[0].paths is empty"), "{e}");
        let e = parse("[[logs]]\npaths = [\"/a\"]\n[[logs]]\npaths = [\"/a\"]\n").unwrap_err();
        assert!(e.contains("logs[1] and logs[0]"), "{e}");
    }
}

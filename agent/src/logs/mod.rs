//! Log files for the `logs` scope: which file is which, how far each was read and
//! acknowledged, and the lines in them.
//!
//! - `fingerprint`: file identity (dev, inode, first bytes)
//! - `tailer`: the pure state machine (observations and bytes in; lines, reads, positions out)
//! - `checkpoint`: positions on disk, versioned, written atomically
//! - `driver`: globs, the reads and the notify watch that feed the tailer
//! - `config`: `[[logs]]` sources (paths, globs, line limits, multiline rule, start_at, encoding)
//! - `encoding`: a source's encoding (UTF-8, GBK/GB18030, other WHATWG labels) and decoding (pure)
//! - `multiline`: joining a stack trace's lines into one record (pure)
//! - `severity`: severity and timestamp of a line (syslog PRI, ISO 8601, RFC 3164, keywords)
//! - `redact`: masking secrets before a line leaves the host (built-ins and customer rules)
//! - `pipeline`: lines to wire records (multiline, time, severity, redaction; pure)
//! - `reader`: the thread that runs driver and pipeline and hands chunks to `run`

pub mod checkpoint;
pub mod config;
pub mod driver;
pub mod encoding;
pub mod fingerprint;
pub mod multiline;
pub mod pipeline;
pub mod reader;
pub mod redact;
pub mod severity;
pub mod tailer;

#[cfg(test)]
mod model_tests;

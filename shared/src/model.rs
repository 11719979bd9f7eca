//! The data model of what an agent sends: host facts and metric samples.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC. All timestamps on the wire and in the store.
pub type UnixMillis = i64;

/// Facts about the host, sent once per connection in Hello.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HostFacts {
    pub hostname: String,
    pub os_name: String,
    pub os_version: String,
    pub kernel: String,
    pub arch: String,
    pub cpu_model: String,
    pub cpu_count: u32,
    pub memory_bytes: u64,
    pub boot_time: UnixMillis,
    /// The agent's own build: version, target and profile.
    pub agent_build: String,
}

/// How a value behaves over time. Counters only grow (until a reset, e.g. a reboot) and are
/// sent raw, so that the collector computes rates and a missed interval cannot distort them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MetricKind {
    Gauge,
    Counter,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Gauge => "gauge",
            MetricKind::Counter => "counter",
        }
    }
}

/// One value of one series at the batch's timestamp.
///
/// `labels` is the subject within the metric (a core, a mount point, an interface), written
/// as `key=value` pairs joined by `,` in key order, or empty. Keeping it a plain string keeps
/// the wire small and the series key trivially comparable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub name: String,
    pub labels: String,
    pub kind: MetricKind,
    pub value: f64,
}

/// Everything collected at one tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MetricSnapshot {
    pub ts: UnixMillis,
    pub samples: Vec<Sample>,
}

/// How serious a log line is, from its syslog priority or its words. Ordered: `Emergency`
/// is the most severe.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
pub enum Severity {
    Emergency,
    Alert,
    Critical,
    Error,
    Warning,
    Notice,
    #[default]
    Info,
    Debug,
}

impl Severity {
    pub const ALL: [Severity; 8] = [
        Severity::Emergency,
        Severity::Alert,
        Severity::Critical,
        Severity::Error,
        Severity::Warning,
        Severity::Notice,
        Severity::Info,
        Severity::Debug,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Emergency => "emerg",
            Severity::Alert => "alert",
            Severity::Critical => "crit",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Notice => "notice",
            Severity::Info => "info",
            Severity::Debug => "debug",
        }
    }

    /// The syslog numeric level (0 = emergency .. 7 = debug).
    pub fn level(self) -> u8 {
        self as u8
    }

    /// From a syslog numeric level.
    pub fn from_code(code: u8) -> Option<Severity> {
        Severity::ALL.get(usize::from(code)).copied()
    }

    pub fn parse(s: &str) -> Option<Severity> {
        let s = s.trim().to_ascii_lowercase();
        Severity::ALL.into_iter().find(|v| {
            v.as_str() == s
                || matches!(
                    (v, s.as_str()),
                    (Severity::Emergency, "emergency" | "panic")
                        | (Severity::Critical, "critical" | "fatal")
                        | (Severity::Error, "err")
                        | (Severity::Warning, "warn")
                )
        })
    }
}

/// One log record as it leaves the host (after redaction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// The `[[logs]]` source's name.
    pub source: String,
    /// The file the line was read from, as the agent saw its path.
    pub file: String,
    /// Byte offset of the line in that file.
    pub offset: u64,
    /// When the agent read it.
    pub read_at: UnixMillis,
    /// The time the line itself states, where it has one.
    pub ts: Option<UnixMillis>,
    pub severity: Severity,
    pub line: String,
    /// Set when a line longer than the source's limit was split: this is part `n` (1-based)
    /// of a longer line; 0 for a whole line.
    pub part: u32,
}

/// What the agent had to give up since the last batch, so that loss is reported, never
/// silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LossReport {
    /// Batches dropped from the agent's backlog because it was full (oldest first).
    pub dropped_batches: u64,
    /// Samples (metrics) or lines (logs) in those batches; the name stays for the wire.
    pub dropped_samples: u64,
    /// Batches discarded because consent for their scope was revoked before they were sent.
    pub discarded_by_revocation: u64,
}

impl LossReport {
    pub fn is_empty(&self) -> bool {
        *self == LossReport::default()
    }
}

/// The unit a metric's value is in, from the agent's naming (see the table in the agent's
/// `metrics` module), so that views and reports print values the way a person reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Percent,
    Seconds,
    Celsius,
    /// A count or a plain number (load averages).
    Number,
}

pub fn unit_of(name: &str) -> Unit {
    match name {
        "mem.oom_kills" => Unit::Number,
        "cpu.usage" | "cpu.user" | "cpu.system" | "cpu.iowait" | "cpu.steal" => Unit::Percent,
        "system.uptime" | "agent.cpu" | "disk.io.time" | "agent.collect.time" => Unit::Seconds,
        "sensor.temperature" => Unit::Celsius,
        n if n.starts_with("mem.")
            || n.starts_with("swap.")
            || n.starts_with("fs.bytes.")
            || n.starts_with("agent.memory.")
            || n.ends_with(".bytes") =>
        {
            Unit::Bytes
        }
        _ => Unit::Number,
    }
}

/// Build the canonical label string from pairs, sorting by key.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let mut v: Vec<_> = pairs.to_vec();
    v.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = String::new();
    for (i, (k, val)) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push('=');
        // Commas and equals signs in values (odd mount points) would make the key ambiguous.
        for c in val.chars() {
            match c {
                ',' | '=' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                _ => out.push(c),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_parse_and_order() {
        assert_eq!(Severity::parse("WARN"), Some(Severity::Warning));
        assert_eq!(Severity::parse("err"), Some(Severity::Error));
        assert_eq!(Severity::parse("fatal"), Some(Severity::Critical));
        assert_eq!(Severity::parse("loud"), None);
        assert!(
            Severity::Error < Severity::Warning,
            "more severe sorts first"
        );
        assert_eq!(Severity::Debug.level(), 7);
        assert_eq!(Severity::from_code(3), Some(Severity::Error));
        assert_eq!(Severity::from_code(8), None);
    }

    #[test]
    fn units_follow_the_names() {
        assert_eq!(unit_of("mem.total"), Unit::Bytes);
        assert_eq!(unit_of("net.rx.bytes"), Unit::Bytes);
        assert_eq!(unit_of("net.rx.packets"), Unit::Number);
        assert_eq!(unit_of("cpu.usage"), Unit::Percent);
        assert_eq!(unit_of("mem.oom_kills"), Unit::Number);
        assert_eq!(unit_of("disk.io.time"), Unit::Seconds);
        assert_eq!(unit_of("load.1"), Unit::Number);
    }

    #[test]
    fn labels_are_sorted_and_escaped() {
        assert_eq!(labels(&[]), "");
        assert_eq!(
            labels(&[("mount", "/"), ("dev", "sda1")]),
            "dev=sda1,mount=/"
        );
        assert_eq!(labels(&[("mount", "/a,b=c")]), "mount=/a\\,b\\=c");
    }
}

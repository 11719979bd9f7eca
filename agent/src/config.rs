//! `agent.toml`: where the collector is, where state lives, how often to collect.
//!
//! Every key has a default except the collector's address and credentials; unknown keys are
//! refused, and `validate` names the key that is wrong.

pub use aftercare_shared::config::ConfigError;
use aftercare_shared::config::{invalid, parse_toml};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CONFIG: &str = "/etc/aftercare/agent.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Consent file, sequence epoch, spool, log checkpoint and audit log.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// How often metrics are collected.
    #[serde(
        default = "default_interval",
        with = "aftercare_shared::config::duration"
    )]
    pub interval: Duration,
    pub collector: CollectorConfig,
    #[serde(default)]
    pub spool: SpoolSection,
    /// Log files to follow (`[[logs]]`), sent only under the `logs` scope.
    #[serde(default)]
    pub logs: Vec<crate::logs::config::LogSource>,
    #[serde(default)]
    pub metrics: crate::metrics::MetricsConfig,
    /// Who this agent believes it is. Optional: the collector takes identity from the
    /// certificate and refuses a connection whose claim differs.
    #[serde(default)]
    pub identity: Option<aftercare_shared::protocol::Identity>,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// The customer's own redaction rules (`[[redact]]`), applied after the built-in ones.
    #[serde(default)]
    pub redact: Vec<crate::logs::redact::RedactRule>,
    /// Remote diagnosis (`[diagnostics]`): which probes may run, and the customer's own.
    /// Nothing runs without the `diagnostics` consent scope.
    #[serde(default)]
    pub diagnostics: crate::diagnostics::config::DiagnosticsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// `host:port` of the collector's QUIC listener.
    pub address: String,
    /// The name the collector's certificate must carry.
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// The support company's CA certificate (PEM).
    pub ca: PathBuf,
    /// This agent's certificate and key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// First wait after a failed connection; doubles up to `reconnect_max`, with jitter.
    #[serde(
        default = "default_reconnect_min",
        with = "aftercare_shared::config::duration"
    )]
    pub reconnect_min: Duration,
    #[serde(
        default = "default_reconnect_max",
        with = "aftercare_shared::config::duration"
    )]
    pub reconnect_max: Duration,
    /// Largest frame sent or accepted.
    #[serde(default = "default_max_frame")]
    pub max_frame_bytes: usize,
    /// A link whose oldest batch in flight has waited this long for its acknowledgement is
    /// taken for dead and opened anew (the collector may have vanished without a word).
    #[serde(
        default = "default_ack_timeout",
        with = "aftercare_shared::config::duration"
    )]
    pub ack_timeout: Duration,
    /// A connection attempt whose QUIC and TLS handshake has not completed by then is given
    /// up and tried again with backoff. Without it, an attempt sent to a collector that
    /// died waits out QUIC's retransmissions, which back off to many seconds, and the agent
    /// comes back to a restarted collector late.
    #[serde(
        default = "default_connect_timeout",
        with = "aftercare_shared::config::duration"
    )]
    pub connect_timeout: Duration,
}

/// The on-disk spool of batches awaiting acknowledgement (see `crate::spool`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolSection {
    /// Where the spool lives; default `<state_dir>/spool`.
    pub dir: Option<PathBuf>,
    /// Most bytes on disk; past it the oldest segments are dropped, counted and reported.
    pub max_bytes: u64,
    /// Size of one segment file: the unit of deletion.
    pub segment_bytes: u64,
    /// When appends and acknowledgements reach the disk: "always", "never" (the kernel
    /// decides; a killed agent still loses nothing, a power cut may), or a duration such as
    /// "1s" (at most that much is lost in a power cut).
    pub fsync: String,
}

impl Default for SpoolSection {
    fn default() -> Self {
        let d = crate::spool::SpoolConfig::default();
        SpoolSection {
            dir: None,
            max_bytes: d.max_bytes,
            segment_bytes: d.segment_bytes,
            fsync: "1s".into(),
        }
    }
}

impl SpoolSection {
    fn validate(&self) -> Result<crate::spool::SpoolConfig, String> {
        use crate::spool::FsyncPolicy;
        if !(4096..=64 << 20).contains(&self.segment_bytes) {
            return Err(format!(
                "spool.segment_bytes = {} is out of range: use 4096 to 67108864",
                self.segment_bytes
            ));
        }
        if self.max_bytes < 2 * self.segment_bytes {
            return Err(format!(
                "spool.max_bytes = {} must be at least twice spool.segment_bytes ({})",
                self.max_bytes, self.segment_bytes
            ));
        }
        let fsync = match self.fsync.as_str() {
            "always" => FsyncPolicy::Always,
            "never" => FsyncPolicy::Never,
            d => FsyncPolicy::Every(humantime::parse_duration(d).map_err(|_| {
                format!(
                    "spool.fsync = '{d}': use \"always\", \"never\" or a duration such as \"1s\""
                )
            })?),
        };
        Ok(crate::spool::SpoolConfig {
            max_bytes: self.max_bytes,
            segment_bytes: self.segment_bytes,
            fsync,
        })
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/aftercare")
}
fn default_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_server_name() -> String {
    "localhost".into()
}
fn default_reconnect_min() -> Duration {
    Duration::from_millis(500)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(60)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_ack_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_frame() -> usize {
    aftercare_shared::codec::DEFAULT_MAX_FRAME
}
fn default_log_level() -> String {
    "info".into()
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: AgentConfig = parse_toml(text, path)?;
        // Relative paths are relative to the config file, so a config folder can be moved.
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(d) = cfg.spool.dir.as_mut()
            && d.is_relative()
        {
            *d = base.join(&*d);
        }
        for p in [
            &mut cfg.state_dir,
            &mut cfg.collector.ca,
            &mut cfg.collector.cert,
            &mut cfg.collector.key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        cfg.validate().map_err(invalid(path))?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        if self.interval < Duration::from_secs(1) || self.interval > Duration::from_secs(3600) {
            return Err(format!(
                "interval = {:?} is out of range: use 1s to 1h",
                self.interval
            ));
        }
        let c = &self.collector;
        if c.address.trim().is_empty() || !c.address.contains(':') {
            return Err(format!(
                "collector.address = '{}' must be host:port, e.g. \"collector.example.com:7443\"",
                c.address
            ));
        }
        if c.server_name.trim().is_empty() {
            return Err("collector.server_name is empty".into());
        }
        if c.reconnect_min.is_zero() || c.reconnect_min > c.reconnect_max {
            return Err(
                "collector.reconnect_min must be above zero and at most collector.reconnect_max"
                    .into(),
            );
        }
        if c.connect_timeout < Duration::from_millis(100) {
            return Err("collector.connect_timeout must be at least 100ms".into());
        }
        if c.ack_timeout < Duration::from_secs(1) {
            return Err("collector.ack_timeout must be at least 1s".into());
        }
        if !(1024..=aftercare_shared::codec::MAX_FRAME_LIMIT).contains(&c.max_frame_bytes) {
            return Err(format!(
                "collector.max_frame_bytes = {} is out of range: use 1024 to {}",
                c.max_frame_bytes,
                aftercare_shared::codec::MAX_FRAME_LIMIT
            ));
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log_level.as_str()) {
            return Err(format!(
                "log_level = '{}': use error, warn, info, debug or trace",
                self.log_level
            ));
        }
        self.spool.validate()?;
        crate::logs::config::validate_all(&self.logs)?;
        self.metrics
            .validate()
            .map_err(|e| format!("metrics: {e}"))?;
        // Compiled here only to refuse a bad pattern at start, naming the rule.
        crate::logs::redact::RuleSet::new(&self.redact).map_err(|e| e.to_string())?;
        self.diagnostics.catalog()?;
        Ok(())
    }

    pub fn consent_path(&self) -> PathBuf {
        self.state_dir.join("consent.toml")
    }

    pub fn checkpoint_path(&self) -> PathBuf {
        self.state_dir.join("logs.checkpoint")
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.spool
            .dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("spool"))
    }

    /// The spool's settings, as validated at load.
    pub fn spool_config(&self) -> crate::spool::SpoolConfig {
        self.spool
            .validate()
            .expect("validated when the config was loaded")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
[collector]
address = "127.0.0.1:7443"
ca = "ca.crt"
cert = "agent.crt"
key = "/abs/agent.key"
"#;

    #[test]
    fn defaults_and_relative_paths() {
        let c = AgentConfig::parse(MIN, Path::new("/etc/aftercare/agent.toml")).unwrap();
        assert_eq!(c.interval, Duration::from_secs(10));
        assert_eq!(c.collector.ca, Path::new("/etc/aftercare/ca.crt"));
        assert_eq!(c.collector.key, Path::new("/abs/agent.key"));
        assert_eq!(c.state_dir, Path::new("/var/lib/aftercare"));
        assert_eq!(c.spool_dir(), Path::new("/var/lib/aftercare/spool"));
        assert_eq!(c.spool_config(), crate::spool::SpoolConfig::default());
        let c = AgentConfig::parse(
            &format!("{MIN}[spool]\ndir = \"sp\"\nmax_bytes = 1048576\nsegment_bytes = 65536\nfsync = \"always\"\n"),
            Path::new("/etc/aftercare/agent.toml"),
        )
        .unwrap();
        assert_eq!(c.spool_dir(), Path::new("/etc/aftercare/sp"));
        assert_eq!(c.spool_config().fsync, crate::spool::FsyncPolicy::Always);
    }

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../../config/agent.toml");
        let c = AgentConfig::parse(text, Path::new("/etc/aftercare/agent.toml")).unwrap();
        assert_eq!(c.spool_config(), crate::spool::SpoolConfig::default());
        assert_eq!(c.collector.connect_timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_values_name_the_key() {
        let p = Path::new("a.toml");
        let e = AgentConfig::parse(&format!("interval = \"0s\"\n{MIN}"), p).unwrap_err();
        assert!(e.to_string().contains("interval"), "{e}");
        let e = AgentConfig::parse(&format!("interval = \"soon\"\n{MIN}"), p).unwrap_err();
        assert!(e.to_string().contains("soon"), "{e}");
        let e = AgentConfig::parse(&format!("intervall = \"5s\"\n{MIN}"), p).unwrap_err();
        assert!(e.to_string().contains("intervall"), "{e}");
        let e = AgentConfig::parse(&MIN.replace("127.0.0.1:7443", "nowhere"), p).unwrap_err();
        assert!(e.to_string().contains("collector.address"), "{e}");
        for (bad, key) in [
            ("segment_bytes = 10", "spool.segment_bytes"),
            ("max_bytes = 100000", "spool.max_bytes"),
            ("fsync = \"sometimes\"", "spool.fsync"),
            ("size = 1", "size"),
        ] {
            let e = AgentConfig::parse(&format!("{MIN}[spool]\n{bad}\n"), p).unwrap_err();
            assert!(e.to_string().contains(key), "{bad}: {e}");
        }
        let e = AgentConfig::parse("state_dir = \"/x\"\n", p).unwrap_err();
        assert!(e.to_string().contains("collector"), "{e}");
        let e = AgentConfig::parse(&format!("{MIN}connect_timeout = \"10ms\"\n"), p).unwrap_err();
        assert!(e.to_string().contains("collector.connect_timeout"), "{e}");
    }

    #[test]
    fn redact_rules() {
        let p = Path::new("a.toml");
        let ok = format!(
            "{MIN}\n[[redact]]\nname = \"employee-id\"\npattern = \"EMP-[0-9]{{6}}\"\n\
             [[redact]]\nname = \"ticket\"\npattern = \"TCK[0-9]+\"\nreplace_with = \"TCK#\"\n"
        );
        let c = AgentConfig::parse(&ok, p).unwrap();
        assert_eq!(c.redact.len(), 2);
        assert_eq!(c.redact[1].replace_with.as_deref(), Some("TCK#"));
        assert!(AgentConfig::parse(MIN, p).unwrap().redact.is_empty());

        let bad = format!("{MIN}\n[[redact]]\nname = \"employee-id\"\npattern = \"EMP-(\"\n");
        let e = AgentConfig::parse(&bad, p).unwrap_err().to_string();
        assert!(e.contains("employee-id") && e.contains("EMP-("), "{e}");
        let typo = format!("{MIN}\n[[redact]]\nname = \"x\"\npatern = \"y\"\n");
        let e = AgentConfig::parse(&typo, p).unwrap_err().to_string();
        assert!(e.contains("patern"), "{e}");
    }
}

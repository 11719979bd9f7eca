//! `collector.toml`: where to listen, where the data lives.

pub use aftercare_shared::config::ConfigError;
use aftercare_shared::config::{invalid, parse_toml};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CONFIG: &str = "/etc/aftercare/collector.toml";
pub const DEFAULT_PORT: u16 = 7443;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// CA, database and (later) reports live here.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// UDP address of the QUIC listener.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The SQLite database file, relative to `data_dir`; or a `postgres://` URL, where
    /// several collectors share one database. TLS to PostgreSQL as libpq's URL parameters
    /// say: `sslmode` `disable`, `prefer` (the default: encrypted when the server offers
    /// it, unchecked), `require` (encrypted, unchecked), `verify-ca` (the certificate signed
    /// by a CA in `sslrootcert`) or `verify-full` (that, and naming the URL's host);
    /// `sslrootcert=/path/ca.pem` also makes `prefer` and `require` check the CA.
    #[serde(default = "default_database")]
    pub database: crate::store::Database,
    /// Names agents use to reach this collector; `ca init` puts them in the server
    /// certificate (DNS names and IP addresses).
    #[serde(default = "default_server_names")]
    pub server_names: Vec<String>,
    /// Largest frame accepted from an agent.
    #[serde(default = "default_max_frame")]
    pub max_frame_bytes: usize,
    #[serde(default)]
    pub ingest: IngestConfig,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Where findings are announced (see `notify`).
    #[serde(default)]
    pub webhooks: Vec<crate::notify::config::WebhookConfig>,
    /// The SLA policy (`config/sla.toml` shows every key); relative to this file. Absent
    /// at the default name: the built-in contracts apply.
    #[serde(default = "default_sla_file")]
    pub sla_file: PathBuf,
    /// The rules (`config/rules.toml` is the built-in set, commented); relative to this
    /// file. Absent at the default name: the built-in rules apply.
    #[serde(default = "default_rules_file")]
    pub rules_file: PathBuf,
    #[serde(default)]
    pub findings: FindingsConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub reports: ReportsConfig,
}

/// Quarterly inspection reports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsConfig {
    /// Make each customer's report for the quarter just ended, once, on the first day of
    /// the next quarter in the customer's zone (and on start, if that day was missed).
    pub schedule: bool,
    /// How often the scheduler looks for a quarter to report on.
    #[serde(with = "aftercare_shared::config::duration")]
    pub check_every: Duration,
    /// Zone the quarters are read in (IANA name), unless a customer has its own.
    pub time_zone: String,
    /// `en` or `zh-CN`, unless a customer has its own.
    pub lang: String,
    /// A folder whose templates replace the built-in ones (`config/templates/`), e.g. to
    /// carry the company's letterhead; relative to `data_dir`.
    pub templates: Option<PathBuf>,
    /// Per customer: `[reports.customers.acme] lang = "zh-CN", time_zone = "Asia/Shanghai"`.
    pub customers: std::collections::BTreeMap<String, CustomerReports>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerReports {
    pub lang: Option<String>,
    pub time_zone: Option<String>,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        ReportsConfig {
            schedule: true,
            check_every: Duration::from_secs(3600),
            time_zone: "UTC".into(),
            lang: "en".into(),
            templates: None,
            customers: Default::default(),
        }
    }
}

impl ReportsConfig {
    /// (lang, time zone) of `customer`'s reports.
    pub fn for_customer(&self, customer: &str) -> (String, String) {
        let c = self.customers.get(customer);
        (
            c.and_then(|c| c.lang.clone())
                .unwrap_or_else(|| self.lang.clone()),
            c.and_then(|c| c.time_zone.clone())
                .unwrap_or_else(|| self.time_zone.clone()),
        )
    }

    fn validate(&self) -> Result<(), String> {
        let lang = |key: String, v: &str| {
            if crate::report::LANGS.contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "{key} = \"{v}\": reports are written in en or zh-CN"
                ))
            }
        };
        let zone = |key: String, v: &str| {
            crate::report::period::zone(v)
                .map(|_| ())
                .map_err(|e| format!("{key}: {e}"))
        };
        lang("reports.lang".into(), &self.lang)?;
        zone("reports.time_zone".into(), &self.time_zone)?;
        for (name, c) in &self.customers {
            if let Some(l) = &c.lang {
                lang(format!("reports.customers.{name}.lang"), l)?;
            }
            if let Some(z) = &c.time_zone {
                zone(format!("reports.customers.{name}.time_zone"), z)?;
            }
        }
        if self.check_every < Duration::from_secs(1) {
            return Err("reports.check_every must be at least 1s".into());
        }
        Ok(())
    }
}

/// The engineer's HTTP API (`/api/v1`, bearer tokens).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// TCP address; loopback by default: put a TLS-terminating proxy in front to expose it.
    pub listen: SocketAddr,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_API_PORT)),
        }
    }
}

pub const DEFAULT_API_PORT: u16 = 7480;

/// How long each tier of data is kept (see `store::Retention`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Raw points.
    #[serde(with = "aftercare_shared::config::duration")]
    pub raw: Duration,
    /// 5-minute rollups (then folded into hourly ones).
    #[serde(with = "aftercare_shared::config::duration")]
    pub five_minutes: Duration,
    /// Hourly rollups.
    #[serde(with = "aftercare_shared::config::duration")]
    pub hourly: Duration,
    /// Log lines.
    #[serde(with = "aftercare_shared::config::duration")]
    pub logs: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let d = crate::store::Retention::default();
        let dur = |ms: i64| Duration::from_millis(ms as u64);
        RetentionConfig {
            raw: dur(d.raw_ms),
            five_minutes: dur(d.five_minutes_ms),
            hourly: dur(d.hourly_ms),
            logs: dur(d.logs_ms),
        }
    }
}

impl RetentionConfig {
    pub fn to_store(&self) -> crate::store::Retention {
        let ms = |d: Duration| d.as_millis().min(i64::MAX as u128) as i64;
        crate::store::Retention {
            raw_ms: ms(self.raw),
            five_minutes_ms: ms(self.five_minutes),
            hourly_ms: ms(self.hourly),
            logs_ms: ms(self.logs),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FindingsConfig {
    /// How often the rules are evaluated.
    #[serde(with = "aftercare_shared::config::duration")]
    pub evaluate_every: Duration,
    /// A finding that comes back within this long after it was resolved reopens, rather
    /// than opening anew.
    #[serde(with = "aftercare_shared::config::duration")]
    pub reopen_within: Duration,
}

impl Default for FindingsConfig {
    fn default() -> Self {
        FindingsConfig {
            evaluate_every: Duration::from_secs(30),
            reopen_within: Duration::from_secs(24 * 3600),
        }
    }
}

fn default_sla_file() -> PathBuf {
    PathBuf::from(DEFAULT_SLA_FILE)
}

fn default_rules_file() -> PathBuf {
    PathBuf::from(DEFAULT_RULES_FILE)
}

/// `rules_file`'s default name, beside the configuration.
pub const DEFAULT_RULES_FILE: &str = "rules.toml";

/// A file's text; `None` when it is absent under its default name (built-ins apply). A file
/// named on purpose must exist.
fn optional_file(path: &Path, default_name: &str) -> Result<Option<String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && path.file_name() == Some(default_name.as_ref()) =>
        {
            Ok(None)
        }
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// `sla_file`'s default name, beside the configuration.
pub const DEFAULT_SLA_FILE: &str = "sla.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Most batches committed in one transaction (one fsync).
    pub max_batches_per_commit: usize,
    /// How often closed hours are compacted from staging into compressed chunks.
    #[serde(with = "aftercare_shared::config::duration")]
    pub compact_every: Duration,
    /// Batches waiting for the writer before agents are slowed down (back-pressure).
    pub queue_depth: usize,
    /// Connection attempts between their first packet and their Welcome, at most this many
    /// at once; more are refused at once and their agents retry after their backoff.
    pub max_connecting: usize,
    /// Agents per second a stopping collector expects to take back when it (or the next
    /// one) is up: it tells its agents to spread their return over connected / return_rate
    /// seconds (at most ten minutes), so a restart is not met by all of them at once.
    pub return_rate: u32,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_batches_per_commit: 1024,
            compact_every: Duration::from_secs(60),
            queue_depth: 8192,
            max_connecting: 256,
            return_rate: 1000,
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/aftercare-collector")
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))
}
fn default_database() -> crate::store::Database {
    crate::store::Database::Sqlite(PathBuf::from("aftercare.db"))
}
fn default_server_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}
fn default_max_frame() -> usize {
    aftercare_shared::codec::DEFAULT_MAX_FRAME
}
fn default_log_level() -> String {
    "info".into()
}

impl Default for CollectorConfig {
    fn default() -> Self {
        toml::from_str("").expect("all keys have defaults")
    }
}

impl CollectorConfig {
    /// Load `path`; a missing file at the default location means all defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && path == Path::new(DEFAULT_CONFIG) =>
            {
                String::new()
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: CollectorConfig = parse_toml(text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if cfg.data_dir.is_relative() {
            cfg.data_dir = base.join(&cfg.data_dir);
        }
        cfg.database.relative_to(&cfg.data_dir);
        if cfg.sla_file.is_relative() {
            cfg.sla_file = base.join(&cfg.sla_file);
        }
        if cfg.rules_file.is_relative() {
            cfg.rules_file = base.join(&cfg.rules_file);
        }
        cfg.validate().map_err(invalid(path))?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        if self.server_names.is_empty() || self.server_names.iter().any(|n| n.trim().is_empty()) {
            return Err("server_names must list at least one non-empty name".into());
        }
        if !(1024..=aftercare_shared::codec::MAX_FRAME_LIMIT).contains(&self.max_frame_bytes) {
            return Err(format!(
                "max_frame_bytes = {} is out of range: use 1024 to {}",
                self.max_frame_bytes,
                aftercare_shared::codec::MAX_FRAME_LIMIT
            ));
        }
        let i = &self.ingest;
        if !(1..=65536).contains(&i.max_batches_per_commit) {
            return Err("ingest.max_batches_per_commit must be 1 to 65536".into());
        }
        if i.compact_every < Duration::from_secs(1) {
            return Err("ingest.compact_every must be at least 1s".into());
        }
        if i.queue_depth == 0 {
            return Err("ingest.queue_depth must be at least 1".into());
        }
        if i.max_connecting == 0 {
            return Err(
                "ingest.max_connecting must be at least 1 (it bounds handshakes in progress)"
                    .into(),
            );
        }
        if i.return_rate == 0 {
            return Err(
                "ingest.return_rate must be at least 1 (agents per second taken back after a \
                 restart)"
                    .into(),
            );
        }
        crate::notify::config::validate_all(&self.webhooks)?;
        self.reports.validate()?;
        let f = &self.findings;
        if f.evaluate_every < Duration::from_secs(1) || f.evaluate_every > Duration::from_secs(3600)
        {
            return Err("findings.evaluate_every must be 1s to 1h".into());
        }
        if f.reopen_within > Duration::from_secs(90 * 86400) {
            return Err("findings.reopen_within must be at most 90d".into());
        }
        let r = &self.retention;
        // The built-in forecasts fit a day of raw points.
        if r.raw < Duration::from_secs(2 * 86400) {
            return Err(
                "retention.raw must be at least 2d: forecast rules read a day of raw points".into(),
            );
        }
        if r.five_minutes < r.raw || r.hourly < r.five_minutes {
            return Err(
                "retention: keep raw <= five_minutes <= hourly (each tier outlives the finer one)"
                    .into(),
            );
        }
        if r.logs < Duration::from_secs(86400) {
            return Err("retention.logs must be at least 1d".into());
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log_level.as_str()) {
            return Err(format!(
                "log_level = '{}': use error, warn, info, debug or trace",
                self.log_level
            ));
        }
        Ok(())
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.data_dir.join("ca")
    }

    /// The operator's report templates folder, if any.
    pub fn report_templates(&self) -> Option<PathBuf> {
        self.reports
            .templates
            .as_ref()
            .map(|p| self.data_dir.join(p))
    }

    /// The SLA policy from `sla_file`; the built-in one when that file is absent under its
    /// default name. A file named on purpose must exist.
    pub fn sla_policy(&self) -> Result<crate::sla::SlaPolicy, ConfigError> {
        match optional_file(&self.sla_file, DEFAULT_SLA_FILE)? {
            None => Ok(crate::sla::SlaPolicy::default()),
            Some(text) => crate::sla::SlaPolicy::parse(&text)
                .map_err(|e| invalid(&self.sla_file)(e.to_string())),
        }
    }

    /// The rules from `rules_file`; the built-in set when that file is absent under its
    /// default name.
    pub fn rule_set(&self) -> Result<crate::rules::RuleSet, ConfigError> {
        match optional_file(&self.rules_file, DEFAULT_RULES_FILE)? {
            None => Ok(crate::rules::RuleSet::builtin()),
            Some(text) => crate::rules::RuleSet::parse(&text)
                .map_err(|e| invalid(&self.rules_file)(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_paths_and_errors() {
        let c = CollectorConfig::parse("data_dir = \"d\"\n", Path::new("/srv/c.toml")).unwrap();
        assert_eq!(c.data_dir, Path::new("/srv/d"));
        assert_eq!(
            c.database.sqlite_path(),
            Some(Path::new("/srv/d/aftercare.db"))
        );
        assert_eq!(c.ca_dir(), Path::new("/srv/d/ca"));
        assert_eq!(c.listen.port(), DEFAULT_PORT);
        let e = CollectorConfig::parse("listen = \"nowhere\"\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
        let e =
            CollectorConfig::parse("[ingest]\nqueue_depth = 0\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("ingest.queue_depth"), "{e}");
        let e = CollectorConfig::parse("[ingest]\nmax_connecting = 0\n", Path::new("c.toml"))
            .unwrap_err();
        assert!(e.to_string().contains("ingest.max_connecting"), "{e}");
        let e =
            CollectorConfig::parse("[ingest]\nreturn_rate = 0\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("ingest.return_rate"), "{e}");
        let e = CollectorConfig::parse("lsiten = 1\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("lsiten"), "{e}");
        let e =
            CollectorConfig::parse("[retention]\nraw = \"1d\"\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("retention.raw"), "{e}");
        let e = CollectorConfig::parse("[retention]\nhourly = \"30d\"\n", Path::new("c.toml"))
            .unwrap_err();
        assert!(e.to_string().contains("five_minutes <= hourly"), "{e}");
        let e = CollectorConfig::parse(
            "[[webhooks]]\nname = \"ops\"\nurl = \"https://h\"\nlevels = [\"L9\"]\n",
            Path::new("c.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("webhooks[0] 'ops': levels"), "{e}");
        for (text, key) in [
            ("[reports]\nlang = \"fr\"\n", "reports.lang"),
            (
                "[reports]\ntime_zone = \"Mars/Base\"\n",
                "reports.time_zone",
            ),
            (
                "[reports.customers.acme]\ntime_zone = \"Asia/Shanghia\"\n",
                "reports.customers.acme.time_zone",
            ),
            (
                "[reports.customers.acme]\nlang = \"zh\"\n",
                "reports.customers.acme.lang",
            ),
        ] {
            let e = CollectorConfig::parse(text, Path::new("c.toml")).unwrap_err();
            assert!(e.to_string().contains(key), "{key}: {e}");
        }
        let c = CollectorConfig::parse(
            "[reports]\ntime_zone = \"Asia/Shanghai\"\n[reports.customers.acme]\nlang = \"zh-CN\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(
            c.reports.for_customer("acme"),
            ("zh-CN".into(), "Asia/Shanghai".into())
        );
        assert_eq!(
            c.reports.for_customer("globex"),
            ("en".into(), "Asia/Shanghai".into())
        );
    }

    /// The shipped example parses, and so do its commented-out webhooks once uncommented.
    #[test]
    fn the_example_file_parses_with_its_webhooks() {
        let text = include_str!("../../config/collector.toml");
        CollectorConfig::parse(text, Path::new("/etc/aftercare/collector.toml")).unwrap();
        let webhooks = text.split_once("# [[webhooks]]").unwrap().1;
        let uncommented: String = format!("# [[webhooks]]{webhooks}")
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with("[[") || l.split_once(" = ").is_some())
            .map(|l| format!("{l}\n"))
            .collect();
        let c = CollectorConfig::parse(&uncommented, Path::new("/etc/aftercare/c.toml")).unwrap();
        assert_eq!(c.webhooks.len(), 2);
        assert_eq!(
            c.webhooks[1].format,
            crate::notify::config::Format::Dingtalk
        );
    }
}

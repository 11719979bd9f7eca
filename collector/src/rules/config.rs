//! The rule file: its schema, its validation, and the built-in set.
//!
//! Rules are read field by field from TOML tables rather than through serde derives, so
//! that every refusal names the rule and the field (`rule 'fs-full': window "5x" is not a
//! duration ...`) and a field that does not belong to a rule's kind is refused by name.
//! Regexes are compiled here, once; evaluation never fails on a rule.

use aftercare_shared::model::Severity;
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use toml::Value;

/// The example file `config/rules.toml`, which is exactly the built-in set.
pub const BUILTIN_RULES: &str = include_str!("../../../config/rules.toml");

/// The fault levels of the service contracts: one type for rules, findings and SLA.
pub use crate::sla::Level;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Availability,
    Capacity,
    Performance,
    Hardware,
    Software,
    Security,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Category::Availability,
        Category::Capacity,
        Category::Performance,
        Category::Hardware,
        Category::Software,
        Category::Security,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Availability => "availability",
            Category::Capacity => "capacity",
            Category::Performance => "performance",
            Category::Hardware => "hardware",
            Category::Software => "software",
            Category::Security => "security",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s.trim())
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule, validated.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    /// For people; the name when the file gives none.
    pub title: String,
    pub level: Level,
    pub category: Category,
    pub recommendation: String,
    /// How long the raise condition must hold before a finding is raised (0: at once).
    pub for_ms: i64,
    /// How long a raised finding stays raised after its raise condition last held, even if
    /// the clear condition holds (0: clears at once). For events that do not undo
    /// themselves: a kernel panic's log line leaves the window, the panic stays a fact.
    pub keep_for_ms: i64,
    pub check: Check,
}

/// What a rule looks at, by kind.
#[derive(Debug, Clone)]
pub enum Check {
    Threshold(Threshold),
    Forecast(Forecast),
    LogPattern(LogPattern),
    Heartbeat(Heartbeat),
    SpoolDrops(SpoolDrops),
    ConsentExpiry(ConsentExpiry),
    ClockSkew(ClockSkew),
}

impl Check {
    /// The `kind` word of the rule file.
    pub fn kind(&self) -> &'static str {
        match self {
            Check::Threshold(_) => "threshold",
            Check::Forecast(_) => "forecast",
            Check::LogPattern(_) => "log_pattern",
            Check::Heartbeat(_) => "heartbeat",
            Check::SpoolDrops(_) => "spool_drops",
            Check::ConsentExpiry(_) => "consent_expiry",
            Check::ClockSkew(_) => "clock_skew",
        }
    }
}

/// Which series a metric rule reads, and how one value per series is derived.
#[derive(Debug, Clone)]
pub struct Selector {
    pub metric: String,
    /// The value is `100 × metric / percent_of`, joined on equal labels and timestamps.
    pub percent_of: Option<String>,
    /// The value is divided by the host's CPU count.
    pub per_core: bool,
    /// Every one must match (whole value; an absent label is "").
    pub matches: Vec<LabelMatch>,
    /// None may match.
    pub excludes: Vec<LabelMatch>,
    /// The labels naming the subject; empty: all the series' labels.
    pub subject: Vec<String>,
    /// Positions of `metric` and `percent_of` in [`RuleSet::metrics`].
    pub(crate) metric_ix: usize,
    pub(crate) percent_ix: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct LabelMatch {
    pub label: String,
    /// Anchored: matches the whole value.
    pub regex: Regex,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Avg,
    Max,
    Min,
    Last,
    /// Per second over the window (a counter's increase, resets handled, over the time).
    Rate,
    /// A counter's increase over the window (resets handled); a gauge's last minus first.
    Increase,
}

impl Aggregate {
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::Avg => "avg",
            Aggregate::Max => "max",
            Aggregate::Min => "min",
            Aggregate::Last => "last",
            Aggregate::Rate => "rate",
            Aggregate::Increase => "increase",
        }
    }

    fn parse(s: &str) -> Option<Aggregate> {
        [
            Aggregate::Avg,
            Aggregate::Max,
            Aggregate::Min,
            Aggregate::Last,
            Aggregate::Rate,
            Aggregate::Increase,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// Where a threshold raises and where it clears again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Line {
    /// Raised when the value is above `raise`; cleared at or below `clear` (`clear <= raise`).
    Above { raise: f64, clear: f64 },
    /// Raised when the value is below `raise`; cleared at or above `clear` (`clear >= raise`).
    Below { raise: f64, clear: f64 },
}

#[derive(Debug, Clone)]
pub struct Threshold {
    pub selector: Selector,
    pub aggregate: Aggregate,
    pub window_ms: i64,
    pub line: Line,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Rising,
    Falling,
}

#[derive(Debug, Clone)]
pub struct Forecast {
    pub selector: Selector,
    pub window_ms: i64,
    pub direction: Direction,
    pub limit: f64,
    pub horizon_ms: i64,
    pub clear_horizon_ms: i64,
    pub min_points: usize,
    /// Least r² of the fitted line.
    pub min_fit: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSubject {
    Host,
    Source,
    File,
    /// A named capture group of the pattern; lines where it did not take part are the host's.
    Group(String),
}

#[derive(Debug, Clone)]
pub struct LogPattern {
    /// `None`: every line (of the selected sources and severities).
    pub pattern: Option<Regex>,
    /// Empty: every source.
    pub sources: Vec<String>,
    /// Lines at least this severe.
    pub min_severity: Option<Severity>,
    pub window_ms: i64,
    pub more_than: u64,
    pub clear_at_most: u64,
    pub subject: LogSubject,
    /// Matching lines kept as evidence.
    pub lines: usize,
}

#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub intervals: u32,
    pub at_least_ms: i64,
}

#[derive(Debug, Clone)]
pub struct SpoolDrops {
    pub window_ms: i64,
    pub more_than: u64,
}

#[derive(Debug, Clone)]
pub struct ConsentExpiry {
    pub within_ms: i64,
}

#[derive(Debug, Clone)]
pub struct ClockSkew {
    pub limit_ms: i64,
    pub clear_ms: i64,
}

/// A validated rule file: the enabled rules in file order, and what evaluation must read.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Every metric some rule reads, with the longest window it is read over.
    metrics: Vec<(String, i64)>,
    logs_ms: Option<i64>,
    losses_ms: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read rules {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("rules {path}: {source}")]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<RulesError>,
    },
    #[error("not a valid rules file: {0}")]
    Toml(String),
    #[error("{0}")]
    Rule(#[from] RuleError),
    #[error("rule '{name}' is defined twice (rules {first} and {second}); rename or remove one")]
    Duplicate {
        name: String,
        first: usize,
        second: usize,
    },
}

impl RulesError {
    /// The error about one rule, if it is one (inside a file or not).
    pub fn rule_error(&self) -> Option<&RuleError> {
        match self {
            RulesError::Rule(e) => Some(e),
            RulesError::InFile { source, .. } => source.rule_error(),
            _ => None,
        }
    }
}

/// A rule refused: its name (or position, when it has no usable name), the field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule '{rule}': {message}")]
pub struct RuleError {
    pub rule: String,
    pub field: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<toml::Table>,
}

impl RuleSet {
    /// The built-in set: `config/rules.toml` as compiled in.
    pub fn builtin() -> RuleSet {
        RuleSet::parse(BUILTIN_RULES).expect("the built-in rules are valid (tested)")
    }

    /// Read a rules file; errors name the file, the rule and the field.
    pub fn load(path: &Path) -> Result<RuleSet, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        RuleSet::parse(&text).map_err(|e| RulesError::InFile {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// The file at `path`, or the built-in set when there is none.
    pub fn load_or_builtin(path: Option<&Path>) -> Result<RuleSet, RulesError> {
        path.map_or_else(|| Ok(RuleSet::builtin()), RuleSet::load)
    }

    pub fn parse(text: &str) -> Result<RuleSet, RulesError> {
        let file: RulesFile = toml::from_str(text).map_err(|e| RulesError::Toml(e.to_string()))?;
        let mut rules: Vec<(Rule, bool)> = Vec::with_capacity(file.rule.len());
        for (i, table) in file.rule.into_iter().enumerate() {
            let (rule, enabled) = parse_rule(i + 1, table)?;
            if let Some(first) = rules.iter().position(|(r, _)| r.name == rule.name) {
                return Err(RulesError::Duplicate {
                    name: rule.name,
                    first: first + 1,
                    second: i + 1,
                });
            }
            rules.push((rule, enabled));
        }
        let rules = rules
            .into_iter()
            .filter_map(|(r, enabled)| enabled.then_some(r))
            .collect();
        Ok(RuleSet::from_rules(rules))
    }

    /// The set, with what evaluation must read worked out.
    fn from_rules(mut rules: Vec<Rule>) -> RuleSet {
        let mut metrics: Vec<(String, i64)> = Vec::new();
        let mut need = |name: &str, window: i64| -> usize {
            match metrics.iter().position(|(m, _)| m == name) {
                Some(i) => {
                    metrics[i].1 = metrics[i].1.max(window);
                    i
                }
                None => {
                    metrics.push((name.to_string(), window));
                    metrics.len() - 1
                }
            }
        };
        let (mut logs_ms, mut losses_ms) = (None::<i64>, None::<i64>);
        for rule in &mut rules {
            let (sel, window) = match &mut rule.check {
                Check::Threshold(t) => (&mut t.selector, t.window_ms),
                Check::Forecast(f) => (&mut f.selector, f.window_ms),
                Check::LogPattern(l) => {
                    logs_ms = Some(logs_ms.unwrap_or(0).max(l.window_ms));
                    continue;
                }
                Check::SpoolDrops(s) => {
                    losses_ms = Some(losses_ms.unwrap_or(0).max(s.window_ms));
                    continue;
                }
                _ => continue,
            };
            sel.metric_ix = need(&sel.metric, window);
            sel.percent_ix = sel.percent_of.as_deref().map(|p| need(p, window));
        }
        RuleSet {
            rules,
            metrics,
            logs_ms,
            losses_ms,
        }
    }

    /// The enabled rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn get(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// Every metric the rules read, with the longest window each is read over: what the
    /// store must be able to answer for one evaluation.
    pub fn metrics(&self) -> &[(String, i64)] {
        &self.metrics
    }

    /// The longest log window, if any rule reads logs.
    pub fn logs_window(&self) -> Option<i64> {
        self.logs_ms
    }

    /// The longest spool-drop window, if any rule reads loss reports.
    pub fn losses_window(&self) -> Option<i64> {
        self.losses_ms
    }
}

/// Reads one rule's table, field by field; what is left at the end is unknown.
struct Fields {
    rule: String,
    table: toml::Table,
}

impl Fields {
    fn err(&self, field: &str, message: impl Into<String>) -> RuleError {
        RuleError {
            rule: self.rule.clone(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn wrong_type(&self, field: &str, want: &str, v: &Value) -> RuleError {
        self.err(
            field,
            format!("{field} must be {want}, not {} ({v})", v.type_str()),
        )
    }

    fn string(&mut self, field: &str) -> Result<Option<String>, RuleError> {
        match self.table.remove(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong_type(field, "a string", &v)),
        }
    }

    fn required_string(&mut self, field: &str) -> Result<String, RuleError> {
        match self.string(field)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(self.err(field, format!("{field} is empty"))),
            None => Err(self.err(field, format!("{field} is missing"))),
        }
    }

    fn number(&mut self, field: &str) -> Result<Option<f64>, RuleError> {
        let v = match self.table.remove(field) {
            None => return Ok(None),
            Some(Value::Integer(i)) => i as f64,
            Some(Value::Float(f)) => f,
            Some(v) => return Err(self.wrong_type(field, "a number", &v)),
        };
        if !v.is_finite() {
            return Err(self.err(field, format!("{field} must be a finite number")));
        }
        Ok(Some(v))
    }

    fn count(&mut self, field: &str) -> Result<Option<u64>, RuleError> {
        match self.table.remove(field) {
            None => Ok(None),
            Some(Value::Integer(i)) if i >= 0 => Ok(Some(i as u64)),
            Some(v) => Err(self.wrong_type(field, "a whole number, 0 or more", &v)),
        }
    }

    fn boolean(&mut self, field: &str) -> Result<Option<bool>, RuleError> {
        match self.table.remove(field) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(b)),
            Some(v) => Err(self.wrong_type(field, "true or false", &v)),
        }
    }

    fn duration(&mut self, field: &str) -> Result<Option<i64>, RuleError> {
        let Some(s) = self.string(field)? else {
            return Ok(None);
        };
        let d = humantime::parse_duration(s.trim()).map_err(|_| {
            self.err(
                field,
                format!("{field} \"{s}\" is not a duration (write e.g. \"90s\", \"5m\", \"7d\")"),
            )
        })?;
        Ok(Some(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    }

    fn required_duration(&mut self, field: &str) -> Result<i64, RuleError> {
        match self.duration(field)? {
            Some(ms) if ms > 0 => Ok(ms),
            Some(_) => Err(self.err(field, format!("{field} must be longer than 0"))),
            None => Err(self.err(field, format!("{field} is missing"))),
        }
    }

    /// A string or a list of strings.
    fn strings(&mut self, field: &str) -> Result<Option<Vec<String>>, RuleError> {
        match self.table.remove(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(vec![s])),
            Some(Value::Array(a)) => {
                let mut out = Vec::with_capacity(a.len());
                for v in &a {
                    match v {
                        Value::String(s) if !s.trim().is_empty() => out.push(s.clone()),
                        other => {
                            return Err(self.wrong_type(field, "a list of names", other));
                        }
                    }
                }
                Ok(Some(out))
            }
            Some(v) => Err(self.wrong_type(field, "a name or a list of names", &v)),
        }
    }

    fn regex(&self, field: &str, pattern: &str, anchored: bool) -> Result<Regex, RuleError> {
        let src = if anchored {
            format!("^(?:{pattern})$")
        } else {
            pattern.to_string()
        };
        Regex::new(&src).map_err(|e| {
            self.err(
                field,
                format!("{field} \"{pattern}\" is not a valid regex: {e}"),
            )
        })
    }

    /// `{ label = "regex", ... }`
    fn label_matches(&mut self, field: &str) -> Result<Vec<LabelMatch>, RuleError> {
        let table = match self.table.remove(field) {
            None => return Ok(Vec::new()),
            Some(Value::Table(t)) => t,
            Some(v) => return Err(self.wrong_type(field, "a table { label = \"regex\" }", &v)),
        };
        let mut out = Vec::with_capacity(table.len());
        for (label, v) in table {
            let Value::String(pattern) = v else {
                return Err(self.wrong_type(&format!("{field}.{label}"), "a regex string", &v));
            };
            out.push(LabelMatch {
                regex: self.regex(&format!("{field}.{label}"), &pattern, true)?,
                label,
            });
        }
        Ok(out)
    }

    /// Refuse what is left: fields that are misspelt, or belong to another kind.
    fn finish(self, kind: &str, allowed: &[&str]) -> Result<(), RuleError> {
        match self.table.keys().next() {
            None => Ok(()),
            Some(field) => Err(self.err(
                field,
                format!(
                    "unknown field \"{field}\"; a {kind} rule takes: {}",
                    [COMMON, allowed].concat().join(", ")
                ),
            )),
        }
    }
}

const COMMON: &[&str] = &[
    "name",
    "kind",
    "level",
    "category",
    "recommendation",
    "title",
    "for",
    "keep_for",
    "enabled",
];
const KINDS: &str =
    "threshold, forecast, log_pattern, heartbeat, spool_drops, consent_expiry or clock_skew";

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// One `[[rule]]` table (the `index`-th, 1-based) into a rule and whether it is enabled.
fn parse_rule(index: usize, table: toml::Table) -> Result<(Rule, bool), RuleError> {
    let mut f = Fields {
        rule: format!("#{index}"),
        table,
    };
    let name = f.required_string("name")?;
    if !valid_name(&name) {
        return Err(f.err(
            "name",
            format!(
                "name \"{name}\" is not usable: use up to 64 letters, digits, '.', '_' and '-', starting with a letter or digit"
            ),
        ));
    }
    f.rule = name.clone();
    let kind = f.required_string("kind")?;
    let level_s = f.required_string("level")?;
    let level = Level::parse(&level_s).ok_or_else(|| {
        f.err(
            "level",
            format!("level \"{level_s}\" is not a fault level: use L1, L2, L3 or L4"),
        )
    })?;
    let category_s = f.required_string("category")?;
    let category = Category::parse(&category_s).ok_or_else(|| {
        f.err(
            "category",
            format!(
                "category \"{category_s}\" is unknown: use availability, capacity, performance, hardware, software or security"
            ),
        )
    })?;
    let recommendation = f.required_string("recommendation")?.trim().to_string();
    let title = f.string("title")?.unwrap_or_else(|| name.clone());
    let for_ms = f.duration("for")?.unwrap_or(0);
    let keep_for_ms = f.duration("keep_for")?.unwrap_or(0);
    let enabled = f.boolean("enabled")?.unwrap_or(true);
    let (check, allowed): (Check, &[&str]) = match kind.as_str() {
        "threshold" => (Check::Threshold(threshold(&mut f)?), THRESHOLD),
        "forecast" => (Check::Forecast(forecast(&mut f)?), FORECAST),
        "log_pattern" => (Check::LogPattern(log_pattern(&mut f)?), LOG_PATTERN),
        "heartbeat" => (
            Check::Heartbeat(Heartbeat {
                intervals: match f.count("intervals")? {
                    None => 5,
                    Some(n @ 1..=1000) => n as u32,
                    Some(n) => {
                        return Err(f.err(
                            "intervals",
                            format!("intervals = {n} is out of range: use 1 to 1000"),
                        ));
                    }
                },
                at_least_ms: f.duration("at_least")?.unwrap_or(0),
            }),
            &["intervals", "at_least"],
        ),
        "spool_drops" => (
            Check::SpoolDrops(SpoolDrops {
                window_ms: f.required_duration("window")?,
                more_than: f.count("more_than")?.unwrap_or(0),
            }),
            &["window", "more_than"],
        ),
        "consent_expiry" => (
            Check::ConsentExpiry(ConsentExpiry {
                within_ms: f.required_duration("within")?,
            }),
            &["within"],
        ),
        "clock_skew" => {
            let limit_ms = f.required_duration("limit")?;
            let clear_ms = f.duration("clear")?.unwrap_or(limit_ms);
            if clear_ms > limit_ms {
                return Err(f.err("clear", "clear must not be longer than limit"));
            }
            (
                Check::ClockSkew(ClockSkew { limit_ms, clear_ms }),
                &["limit", "clear"],
            )
        }
        other => {
            return Err(f.err("kind", format!("kind \"{other}\" is unknown: use {KINDS}")));
        }
    };
    f.finish(&kind, allowed)?;
    Ok((
        Rule {
            name,
            title,
            level,
            category,
            recommendation,
            for_ms,
            keep_for_ms,
            check,
        },
        enabled,
    ))
}

const THRESHOLD: &[&str] = &[
    "metric",
    "percent_of",
    "per_core",
    "match",
    "exclude",
    "subject",
    "aggregate",
    "window",
    "above",
    "below",
    "clear_below",
    "clear_above",
];
const FORECAST: &[&str] = &[
    "metric",
    "percent_of",
    "per_core",
    "match",
    "exclude",
    "subject",
    "window",
    "rising_to",
    "falling_to",
    "horizon",
    "clear_horizon",
    "min_points",
    "min_fit",
];
const LOG_PATTERN: &[&str] = &[
    "pattern",
    "sources",
    "min_severity",
    "window",
    "more_than",
    "clear_at_most",
    "subject",
    "lines",
];

fn selector(f: &mut Fields) -> Result<Selector, RuleError> {
    let metric = f.required_string("metric")?;
    let percent_of = f.string("percent_of")?;
    let per_core = f.boolean("per_core")?.unwrap_or(false);
    if per_core && percent_of.is_some() {
        return Err(f.err(
            "per_core",
            "per_core and percent_of do not go together: choose one",
        ));
    }
    Ok(Selector {
        metric,
        percent_of,
        per_core,
        matches: f.label_matches("match")?,
        excludes: f.label_matches("exclude")?,
        subject: f.strings("subject")?.unwrap_or_default(),
        metric_ix: 0,
        percent_ix: None,
    })
}

fn threshold(f: &mut Fields) -> Result<Threshold, RuleError> {
    let selector = selector(f)?;
    let agg_s = f.required_string("aggregate")?;
    let aggregate = Aggregate::parse(&agg_s).ok_or_else(|| {
        f.err(
            "aggregate",
            format!("aggregate \"{agg_s}\" is unknown: use avg, max, min, last, rate or increase"),
        )
    })?;
    if selector.percent_of.is_some() && matches!(aggregate, Aggregate::Rate | Aggregate::Increase) {
        return Err(f.err(
            "aggregate",
            format!(
                "aggregate \"{agg_s}\" does not apply to a percentage (percent_of): use avg, max, min or last"
            ),
        ));
    }
    let window_ms = f.required_duration("window")?;
    let (above, below) = (f.number("above")?, f.number("below")?);
    let (clear_below, clear_above) = (f.number("clear_below")?, f.number("clear_above")?);
    let line = match (above, below) {
        (Some(raise), None) => {
            if clear_above.is_some() {
                return Err(f.err(
                    "clear_above",
                    "clear_above goes with below; with above, write clear_below",
                ));
            }
            let clear = clear_below.unwrap_or(raise);
            if clear > raise {
                return Err(f.err(
                    "clear_below",
                    format!("clear_below ({clear}) must not be above `above` ({raise})"),
                ));
            }
            Line::Above { raise, clear }
        }
        (None, Some(raise)) => {
            if clear_below.is_some() {
                return Err(f.err(
                    "clear_below",
                    "clear_below goes with above; with below, write clear_above",
                ));
            }
            let clear = clear_above.unwrap_or(raise);
            if clear < raise {
                return Err(f.err(
                    "clear_above",
                    format!("clear_above ({clear}) must not be below `below` ({raise})"),
                ));
            }
            Line::Below { raise, clear }
        }
        (Some(_), Some(_)) => {
            return Err(f.err("below", "give either above or below, not both"));
        }
        (None, None) => return Err(f.err("above", "above (or below) is missing")),
    };
    Ok(Threshold {
        selector,
        aggregate,
        window_ms,
        line,
    })
}

fn forecast(f: &mut Fields) -> Result<Forecast, RuleError> {
    let selector = selector(f)?;
    let window_ms = f.required_duration("window")?;
    let (direction, limit) = match (f.number("rising_to")?, f.number("falling_to")?) {
        (Some(l), None) => (Direction::Rising, l),
        (None, Some(l)) => (Direction::Falling, l),
        (Some(_), Some(_)) => {
            return Err(f.err(
                "falling_to",
                "give either rising_to or falling_to, not both",
            ));
        }
        (None, None) => {
            return Err(f.err("rising_to", "rising_to (or falling_to) is missing"));
        }
    };
    let horizon_ms = f.required_duration("horizon")?;
    let clear_horizon_ms = f.duration("clear_horizon")?.unwrap_or(horizon_ms);
    if clear_horizon_ms < horizon_ms {
        return Err(f.err(
            "clear_horizon",
            "clear_horizon must not be shorter than horizon",
        ));
    }
    let min_points = match f.count("min_points")? {
        None => 12,
        Some(n @ 3..=1_000_000) => n as usize,
        Some(n) => {
            return Err(f.err(
                "min_points",
                format!("min_points = {n} is out of range: use 3 or more"),
            ));
        }
    };
    let min_fit = f.number("min_fit")?.unwrap_or(0.5);
    if !(0.0..=1.0).contains(&min_fit) {
        return Err(f.err(
            "min_fit",
            format!("min_fit = {min_fit} is out of range: it is an r², 0 to 1"),
        ));
    }
    Ok(Forecast {
        selector,
        window_ms,
        direction,
        limit,
        horizon_ms,
        clear_horizon_ms,
        min_points,
        min_fit,
    })
}

fn log_pattern(f: &mut Fields) -> Result<LogPattern, RuleError> {
    let pattern = match f.string("pattern")? {
        None => None,
        Some(p) => Some(f.regex("pattern", &p, false)?),
    };
    let sources = f.strings("sources")?.unwrap_or_default();
    let min_severity = match f.string("min_severity")? {
        None => None,
        Some(s) => Some(Severity::parse(&s).ok_or_else(|| {
            f.err(
                "min_severity",
                format!(
                    "min_severity \"{s}\" is unknown: use emerg, alert, crit, error, warning, notice, info or debug"
                ),
            )
        })?),
    };
    let window_ms = f.required_duration("window")?;
    let more_than = f.count("more_than")?.unwrap_or(0);
    let clear_at_most = f.count("clear_at_most")?.unwrap_or(more_than);
    if clear_at_most > more_than {
        return Err(f.err(
            "clear_at_most",
            format!("clear_at_most ({clear_at_most}) must not be above more_than ({more_than})"),
        ));
    }
    let subject = match f.string("subject")?.as_deref() {
        None => LogSubject::Host,
        Some("source") => LogSubject::Source,
        Some("file") => LogSubject::File,
        Some(group) => {
            let has_group = pattern
                .as_ref()
                .is_some_and(|re| re.capture_names().flatten().any(|n| n == group));
            if !has_group {
                return Err(f.err(
                    "subject",
                    format!(
                        "subject \"{group}\" is neither source, file, nor a named group of the pattern (write (?P<{group}>...))"
                    ),
                ));
            }
            LogSubject::Group(group.to_string())
        }
    };
    let lines = match f.count("lines")? {
        None => 5,
        Some(n @ 0..=100) => n as usize,
        Some(n) => {
            return Err(f.err(
                "lines",
                format!("lines = {n} is out of range: use 0 to 100"),
            ));
        }
    };
    Ok(LogPattern {
        pattern,
        sources,
        min_severity,
        window_ms,
        more_than,
        clear_at_most,
        subject,
        lines,
    })
}

/// `90s` as `1m 30s`, `24h` as `1d`: a window or a limit as people read it.
pub fn fmt_duration(ms: i64) -> String {
    let ms = ms.max(0);
    let mut s = ms / 1000;
    if s == 0 {
        return format!("{ms}ms");
    }
    let mut out = Vec::new();
    for (n, unit) in [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")] {
        if s >= n {
            out.push(format!("{}{unit}", s / n));
            s %= n;
        }
    }
    out.join(" ")
}

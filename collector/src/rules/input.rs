//! What evaluation reads: per host, plain facts ([`HostInfo`]) and the [`Observations`]
//! trait over stored data, which the store implements and tests fill with synthetic data
//! ([`MemoryObservations`]).
//!
//! Clocks: metric timestamps and log times are the agent's; `last_seen`, loss reports and
//! `now` are the collector's. [`HostInfo::clock_skew_ms`] (agent minus collector) lets
//! evaluation ask for "the last five minutes" on the agent's clock.

use crate::store::{HostStatus, log_time};
use aftercare_shared::consent::ConsentRecord;
use aftercare_shared::model::{LogRecord, LossReport, MetricKind, UnixMillis};
use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;

/// A host as evaluation sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostInfo {
    /// `customer/host`: the key of its findings.
    pub name: String,
    /// When it first registered (the heartbeat's reference before any data came).
    pub first_seen: UnixMillis,
    /// When its newest batch was received (collector clock).
    pub last_seen: Option<UnixMillis>,
    /// The agent's collection interval.
    pub interval_ms: u64,
    /// CPUs, from the host facts; `None` if unknown (rules with `per_core` skip the host).
    pub cores: Option<u32>,
    /// The consent record the agent showed last.
    pub consent: ConsentRecord,
    /// The agent's clock minus the collector's, estimated from receive times; `None` when
    /// not known.
    pub clock_skew_ms: Option<i64>,
}

impl HostInfo {
    /// From the store's view of a host, with the skew estimate ingest keeps.
    pub fn from_status(s: &HostStatus, clock_skew_ms: Option<i64>) -> HostInfo {
        HostInfo {
            name: s.full_name(),
            first_seen: s.first_seen,
            last_seen: s.last_seen,
            interval_ms: s.interval_ms,
            cores: (s.facts.cpu_count > 0).then_some(s.facts.cpu_count),
            consent: s.consent.clone(),
            clock_skew_ms,
        }
    }
}

/// One series of a metric: its labels (canonical `k=v,k2=v2`), kind and points, sorted by
/// time, one per timestamp. Counters are raw cumulative values.
#[derive(Debug, Clone, PartialEq)]
pub struct Series<'a> {
    pub labels: Cow<'a, str>,
    pub kind: MetricKind,
    pub points: Cow<'a, [(UnixMillis, f64)]>,
}

/// A loss report as received with one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct LossEvent {
    /// When the batch carrying it was received (collector clock).
    pub at: UnixMillis,
    /// `metrics` or `logs`: the scope of the stream that carried it.
    pub scope: String,
    pub report: LossReport,
}

/// Stored data, per host (`customer/host`). An error makes evaluation hold the findings of
/// the rules that needed the data (nothing is raised or cleared on missing data) and is
/// reported in [`crate::rules::Evaluation::errors`].
pub trait Observations {
    type Error: std::fmt::Display;

    /// Every series of `metric` (an exact name) with its points at or after `since` (agent
    /// clock), sorted by time. Counters must be their raw cumulative values. A gauge read
    /// over a long window (the forecasts' day) may be thinned beyond the last hour, e.g. to
    /// the store's 5-minute rollup means: a trend does not need every tick, and
    /// [`crate::rules::RuleSet::metrics`] tells each metric's longest window. Series
    /// without points there may be left out.
    fn series(
        &self,
        host: &str,
        metric: &str,
        since: UnixMillis,
    ) -> Result<Vec<Series<'_>>, Self::Error>;

    /// Log records filed (see [`log_time`]) at or after `since` (agent clock), in any order.
    fn logs(&self, host: &str, since: UnixMillis) -> Result<Cow<'_, [LogRecord]>, Self::Error>;

    /// Loss reports received at or after `since` (collector clock).
    fn losses(&self, host: &str, since: UnixMillis) -> Result<Vec<LossEvent>, Self::Error>;
}

/// Observations held in memory: for tests, benchmarks, and anything that has its data at
/// hand. Append points in time order.
#[derive(Debug, Clone, Default)]
pub struct MemoryObservations {
    hosts: HashMap<String, MemoryHost>,
}

#[derive(Debug, Clone, Default)]
struct MemoryHost {
    /// metric -> series.
    series: HashMap<String, Vec<OwnedSeries>>,
    /// Sorted by [`log_time`].
    logs: Vec<LogRecord>,
    losses: Vec<LossEvent>,
}

#[derive(Debug, Clone)]
struct OwnedSeries {
    labels: String,
    kind: MetricKind,
    points: Vec<(UnixMillis, f64)>,
}

impl MemoryObservations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append one point (after the series' newest).
    pub fn push(
        &mut self,
        host: &str,
        metric: &str,
        labels: &str,
        kind: MetricKind,
        ts: UnixMillis,
        value: f64,
    ) {
        self.series_mut(host, metric, labels, kind)
            .points
            .push((ts, value));
    }

    /// Append points (after the series' newest).
    pub fn extend(
        &mut self,
        host: &str,
        metric: &str,
        labels: &str,
        kind: MetricKind,
        points: impl IntoIterator<Item = (UnixMillis, f64)>,
    ) {
        self.series_mut(host, metric, labels, kind)
            .points
            .extend(points);
    }

    fn series_mut(
        &mut self,
        host: &str,
        metric: &str,
        labels: &str,
        kind: MetricKind,
    ) -> &mut OwnedSeries {
        let list = self
            .hosts
            .entry(host.to_string())
            .or_default()
            .series
            .entry(metric.to_string())
            .or_default();
        let i = match list.iter().position(|s| s.labels == labels) {
            Some(i) => i,
            None => {
                list.push(OwnedSeries {
                    labels: labels.to_string(),
                    kind,
                    points: Vec::new(),
                });
                list.len() - 1
            }
        };
        &mut list[i]
    }

    pub fn push_log(&mut self, host: &str, record: LogRecord) {
        let logs = &mut self.hosts.entry(host.to_string()).or_default().logs;
        let t = log_time(&record);
        let at = logs.partition_point(|r| log_time(r) <= t);
        logs.insert(at, record);
    }

    pub fn push_loss(&mut self, host: &str, event: LossEvent) {
        self.hosts
            .entry(host.to_string())
            .or_default()
            .losses
            .push(event);
    }
}

impl Observations for MemoryObservations {
    type Error = Infallible;

    fn series(
        &self,
        host: &str,
        metric: &str,
        since: UnixMillis,
    ) -> Result<Vec<Series<'_>>, Infallible> {
        let Some(list) = self.hosts.get(host).and_then(|h| h.series.get(metric)) else {
            return Ok(Vec::new());
        };
        Ok(list
            .iter()
            .filter_map(|s| {
                let from = s.points.partition_point(|p| p.0 < since);
                (from < s.points.len()).then(|| Series {
                    labels: Cow::Borrowed(s.labels.as_str()),
                    kind: s.kind,
                    points: Cow::Borrowed(&s.points[from..]),
                })
            })
            .collect())
    }

    fn logs(&self, host: &str, since: UnixMillis) -> Result<Cow<'_, [LogRecord]>, Infallible> {
        let Some(h) = self.hosts.get(host) else {
            return Ok(Cow::Borrowed(&[]));
        };
        let from = h.logs.partition_point(|r| log_time(r) < since);
        Ok(Cow::Borrowed(&h.logs[from..]))
    }

    fn losses(&self, host: &str, since: UnixMillis) -> Result<Vec<LossEvent>, Infallible> {
        Ok(self
            .hosts
            .get(host)
            .map(|h| h.losses.iter().filter(|l| l.at >= since).cloned().collect())
            .unwrap_or_default())
    }
}

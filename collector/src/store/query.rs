//! Pure pieces of reading and compacting: name matching, merging points, counter rates and
//! rollup aggregation. No database here.

use super::{HOUR_MS, ROLLUP_STEP_MS, StoreError};
use aftercare_shared::model::{MetricKind, UnixMillis};

/// Rollup buckets per hour.
pub const BUCKETS_PER_HOUR: usize = (HOUR_MS / ROLLUP_STEP_MS) as usize;

/// Which series of a host a query wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricFilter {
    All,
    Exact(String),
    Prefix(String),
}

impl MetricFilter {
    /// `None` is every series; `cpu.` or `cpu.*` a prefix; anything else an exact name.
    pub fn parse(metric: Option<&str>) -> MetricFilter {
        match metric.map(str::trim) {
            None | Some("") | Some("*") => MetricFilter::All,
            Some(m) => {
                if let Some(p) = m.strip_suffix('*') {
                    MetricFilter::Prefix(p.to_string())
                } else if m.ends_with('.') {
                    MetricFilter::Prefix(m.to_string())
                } else {
                    MetricFilter::Exact(m.to_string())
                }
            }
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            MetricFilter::All => true,
            MetricFilter::Exact(n) => name == n,
            MetricFilter::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

/// A host as a person names it: `host` or `customer/host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostName<'a> {
    pub customer: Option<&'a str>,
    pub host: &'a str,
}

impl<'a> HostName<'a> {
    pub fn parse(s: &'a str) -> HostName<'a> {
        let s = s.trim();
        match s.split_once('/') {
            Some((c, h)) => HostName {
                customer: Some(c),
                host: h,
            },
            None => HostName {
                customer: None,
                host: s,
            },
        }
    }

    /// Pick the one host this name means among `(id, customer, host)` rows.
    pub fn resolve<Id: Copy>(&self, hosts: &[(Id, String, String)]) -> Result<Id, StoreError> {
        let hits: Vec<&(Id, String, String)> = hosts
            .iter()
            .filter(|(_, c, h)| h == self.host && self.customer.is_none_or(|want| want == c))
            .collect();
        let full = |(_, c, h): &(Id, String, String)| format!("{c}/{h}");
        match hits.as_slice() {
            [one] => Ok(one.0),
            [] => {
                let name = match self.customer {
                    Some(c) => format!("{c}/{}", self.host),
                    None => self.host.to_string(),
                };
                let mut known: Vec<String> = hosts.iter().map(full).collect();
                known.sort();
                let list = if known.is_empty() {
                    "no host has connected yet".to_string()
                } else if known.len() > 20 {
                    format!(
                        "known hosts include {} (see `aftercare-collector hosts`)",
                        known[..20].join(", ")
                    )
                } else {
                    format!("known hosts: {}", known.join(", "))
                };
                Err(StoreError::UnknownHost(format!(
                    "no host named '{name}'; {list}"
                )))
            }
            many => {
                let mut names: Vec<String> = many.iter().map(|r| full(r)).collect();
                names.sort();
                Err(StoreError::AmbiguousHost(format!(
                    "host name '{}' is ambiguous, it matches {}; write it as customer/host",
                    self.host,
                    names.join(", ")
                )))
            }
        }
    }
}

/// Sort points by time and keep one per timestamp: the one that came last in `points`.
/// Callers append in write order (blocks before staging, staging by row), so the value
/// written last wins, the same rule compaction follows.
pub fn sort_dedup_last_wins(points: &mut Vec<(UnixMillis, f64)>) -> usize {
    // Stable: equal timestamps keep their write order.
    points.sort_by_key(|p| p.0);
    let before = points.len();
    let mut out = 0;
    for i in 0..points.len() {
        if out > 0 && points[out - 1].0 == points[i].0 {
            points[out - 1] = points[i];
        } else {
            points[out] = points[i];
            out += 1;
        }
    }
    points.truncate(out);
    before - out
}

/// Per-second rates of a counter's points, sorted by time. A drop in value is a reset (the
/// counter restarted from zero, e.g. after a reboot), so the increase over that interval is
/// the new value itself. Each rate is stamped with the later point's time; the first point
/// has none, and pairs with a non-finite value or no time between them give none.
pub fn rates(points: &[(UnixMillis, f64)]) -> Vec<(UnixMillis, f64)> {
    let mut out = Vec::with_capacity(points.len().saturating_sub(1));
    for w in points.windows(2) {
        let ((t0, v0), (t1, v1)) = (w[0], w[1]);
        if t1 <= t0 || !v0.is_finite() || !v1.is_finite() {
            continue;
        }
        let increase = if v1 >= v0 { v1 - v0 } else { v1 };
        out.push((t1, increase * 1000.0 / (t1 - t0) as f64));
    }
    out
}

/// Count, min, max and sum of some values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agg {
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
}

impl Agg {
    pub fn of(v: f64) -> Agg {
        Agg {
            count: 1,
            min: v,
            max: v,
            sum: v,
        }
    }

    pub fn add(&mut self, v: f64) {
        self.merge(&Agg::of(v));
    }

    pub fn merge(&mut self, o: &Agg) {
        self.count += o.count;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
    }
}

/// The 5-minute aggregates of one series within the hour starting at `hour`: of its values
/// for a gauge, of its per-second rates for a counter (rates need two points, so the first
/// point of the hour contributes none). Non-finite values are left out.
pub fn hour_buckets(
    hour: UnixMillis,
    kind: MetricKind,
    points: &[(UnixMillis, f64)],
) -> [Option<Agg>; BUCKETS_PER_HOUR] {
    let mut out: [Option<Agg>; BUCKETS_PER_HOUR] = [None; BUCKETS_PER_HOUR];
    let mut add = |ts: UnixMillis, v: f64| {
        if !v.is_finite() {
            return;
        }
        let i = ((ts - hour) / ROLLUP_STEP_MS).clamp(0, BUCKETS_PER_HOUR as i64 - 1) as usize;
        match &mut out[i] {
            Some(a) => a.add(v),
            slot => *slot = Some(Agg::of(v)),
        }
    };
    match kind {
        MetricKind::Gauge => points.iter().for_each(|&(t, v)| add(t, v)),
        MetricKind::Counter => rates(points).into_iter().for_each(|(t, v)| add(t, v)),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_filters() {
        let cases = [
            (None, "cpu.total", true),
            (Some("cpu."), "cpu.total", true),
            (Some("cpu."), "cpux", false),
            (Some("fs.*"), "fs.used", true),
            (Some("fs.*"), "fsx", false),
            (Some("fs*"), "fsx", true),
            (Some("mem.used"), "mem.used", true),
            (Some("mem.used"), "mem.used_pct", false),
            (Some("*"), "anything", true),
        ];
        for (f, name, want) in cases {
            assert_eq!(MetricFilter::parse(f).matches(name), want, "{f:?} {name}");
        }
    }

    #[test]
    fn host_names_resolve_or_name_candidates() {
        let hosts = vec![
            (1, "acme".to_string(), "db1".to_string()),
            (2, "acme".to_string(), "web".to_string()),
            (3, "globex".to_string(), "web".to_string()),
        ];
        assert_eq!(HostName::parse("db1").resolve(&hosts).unwrap(), 1);
        assert_eq!(HostName::parse("globex/web").resolve(&hosts).unwrap(), 3);
        let e = HostName::parse("web")
            .resolve(&hosts)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ambiguous") && e.contains("acme/web") && e.contains("globex/web"),
            "{e}"
        );
        let e = HostName::parse("acme/nope")
            .resolve(&hosts)
            .unwrap_err()
            .to_string();
        assert!(e.contains("acme/nope") && e.contains("acme/db1"), "{e}");
        let none: Vec<(i64, String, String)> = vec![];
        let e = HostName::parse("x").resolve(&none).unwrap_err().to_string();
        assert!(e.contains("no host has connected"), "{e}");
    }

    #[test]
    fn dedup_keeps_last_written() {
        let mut p = vec![(20, 2.0), (10, 1.0), (20, 3.0), (5, 0.5), (10, 1.5)];
        assert_eq!(sort_dedup_last_wins(&mut p), 2);
        assert_eq!(p, vec![(5, 0.5), (10, 1.5), (20, 3.0)]);
    }

    #[test]
    fn counter_rates_with_reset() {
        let p = [
            (0, 100.0),
            (10_000, 200.0), // +100 in 10 s
            (20_000, 400.0), // +200
            (30_000, 50.0),  // reset: restarted from 0, so +50
            (40_000, 150.0), // +100
            (40_000, 150.0), // same time: no rate
            (45_000, f64::NAN),
            (50_000, 160.0),
        ];
        assert_eq!(
            rates(&p),
            vec![
                (10_000, 10.0),
                (20_000, 20.0),
                (30_000, 5.0),
                (40_000, 10.0)
            ]
        );
        assert!(rates(&[]).is_empty());
        assert!(rates(&[(0, 1.0)]).is_empty());
    }

    #[test]
    fn buckets_of_gauges_and_counters() {
        let hour = 3 * HOUR_MS;
        let g = [(hour, 1.0), (hour + 10_000, 3.0), (hour + 301_000, 5.0)];
        let b = hour_buckets(hour, MetricKind::Gauge, &g);
        assert_eq!(
            b[0],
            Some(Agg {
                count: 2,
                min: 1.0,
                max: 3.0,
                sum: 4.0
            })
        );
        assert_eq!(b[1], Some(Agg::of(5.0)));
        assert!(b[2..].iter().all(Option::is_none));
        let c = [(hour, 0.0), (hour + 10_000, 100.0), (hour + 20_000, 300.0)];
        let b = hour_buckets(hour, MetricKind::Counter, &c);
        assert_eq!(
            b[0],
            Some(Agg {
                count: 2,
                min: 10.0,
                max: 20.0,
                sum: 30.0
            })
        );
    }
}

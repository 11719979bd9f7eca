//! Numbers from points: the window a rule looks at, counters turned into rates, the
//! percentage of two series, and the aggregates. The same counter semantics as the store's
//! rollups ([`crate::store::query::rates`]): a drop in a counter is a reset, never a negative
//! rate.

use super::config::Aggregate;
use crate::store::query::rates;
use aftercare_shared::model::{MetricKind, UnixMillis};
use std::borrow::Cow;

pub type Point = (UnixMillis, f64);

/// The points at or after `since` (points are sorted by time).
pub fn window(points: &[Point], since: UnixMillis) -> &[Point] {
    &points[points.partition_point(|p| p.0 < since)..]
}

/// What a series' values mean per point: a gauge's values, a counter's per-second rates.
pub fn values(kind: MetricKind, points: &[Point]) -> Cow<'_, [Point]> {
    match kind {
        MetricKind::Gauge => Cow::Borrowed(points),
        MetricKind::Counter => Cow::Owned(rates(points)),
    }
}

/// `100 × num / den` at the timestamps both have (a zero or non-finite denominator gives no
/// point). Both sorted by time.
pub fn percent(num: &[Point], den: &[Point]) -> Vec<Point> {
    let mut out = Vec::with_capacity(num.len().min(den.len()));
    let (mut i, mut j) = (0, 0);
    while i < num.len() && j < den.len() {
        let (tn, tdn) = (num[i].0, den[j].0);
        if tn < tdn {
            i += 1;
        } else if tdn < tn {
            j += 1;
        } else {
            let (n, d) = (num[i].1, den[j].1);
            if d != 0.0 && n.is_finite() && d.is_finite() {
                out.push((tn, 100.0 * n / d));
            }
            i += 1;
            j += 1;
        }
    }
    out
}

/// The increase over the points: a counter's sum of steps, a reset counting as the new
/// value itself; a gauge's last minus first.
pub fn increase(kind: MetricKind, points: &[Point]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    match kind {
        MetricKind::Gauge => Some(points[points.len() - 1].1 - points[0].1),
        MetricKind::Counter => Some(
            points
                .windows(2)
                .filter(|w| w[0].1.is_finite() && w[1].1.is_finite())
                .map(|w| {
                    if w[1].1 >= w[0].1 {
                        w[1].1 - w[0].1
                    } else {
                        w[1].1
                    }
                })
                .sum(),
        ),
    }
}

/// One value for the window. `avg`, `max`, `min`, `last` are of the values (a counter's
/// per-second rates); `rate` is the increase over the time between the first and last point;
/// `increase` as [`increase`]. `None` without enough points.
pub fn aggregate(agg: Aggregate, kind: MetricKind, points: &[Point]) -> Option<f64> {
    match agg {
        Aggregate::Increase => increase(kind, points),
        Aggregate::Rate => {
            let inc = increase(kind, points)?;
            let secs = (points[points.len() - 1].0 - points[0].0) as f64 / 1000.0;
            (secs > 0.0).then(|| inc / secs)
        }
        Aggregate::Avg | Aggregate::Max | Aggregate::Min | Aggregate::Last => {
            let vals = values(kind, points);
            let mut finite = vals.iter().map(|p| p.1).filter(|v| v.is_finite());
            match agg {
                Aggregate::Last => finite.next_back(),
                Aggregate::Max => finite.reduce(f64::max),
                Aggregate::Min => finite.reduce(f64::min),
                _ => {
                    let (n, sum) = finite.fold((0u64, 0.0), |(n, s), v| (n + 1, s + v));
                    (n > 0).then(|| sum / n as f64)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MetricKind::{Counter, Gauge};

    #[test]
    fn aggregates_of_gauges() {
        let p = [(0, 1.0), (10_000, 3.0), (20_000, f64::NAN), (30_000, 2.0)];
        let cases = [
            (Aggregate::Avg, Some(2.0)),
            (Aggregate::Max, Some(3.0)),
            (Aggregate::Min, Some(1.0)),
            (Aggregate::Last, Some(2.0)),
            (Aggregate::Increase, Some(1.0)),
            (Aggregate::Rate, Some(1.0 / 30.0)),
        ];
        for (agg, want) in cases {
            assert_eq!(aggregate(agg, Gauge, &p), want, "{agg:?}");
        }
        assert_eq!(aggregate(Aggregate::Rate, Gauge, &p[..1]), None);
        assert_eq!(aggregate(Aggregate::Avg, Gauge, &[]), None);
    }

    #[test]
    fn counter_resets_never_make_negative_rates() {
        // 100 per 10 s, then a reboot: the counter starts again from 0 and reaches 50.
        let p = [
            (0, 1000.0),
            (10_000, 1100.0),
            (20_000, 1200.0),
            (30_000, 50.0),
        ];
        assert_eq!(increase(Counter, &p), Some(250.0));
        let rate = aggregate(Aggregate::Rate, Counter, &p).unwrap();
        assert!((rate - 250.0 / 30.0).abs() < 1e-9, "{rate}");
        for agg in [
            Aggregate::Avg,
            Aggregate::Min,
            Aggregate::Max,
            Aggregate::Last,
        ] {
            let v = aggregate(agg, Counter, &p).unwrap();
            assert!(v >= 0.0, "{agg:?} {v}");
        }
        assert_eq!(aggregate(Aggregate::Min, Counter, &p), Some(5.0));
        assert_eq!(aggregate(Aggregate::Max, Counter, &p), Some(10.0));
    }

    #[test]
    fn percent_joins_on_time() {
        let used = [(0, 1.0), (10, 2.0), (20, 3.0), (40, 4.0)];
        let total = [(0, 4.0), (20, 0.0), (30, 8.0), (40, 8.0)];
        assert_eq!(percent(&used, &total), vec![(0, 25.0), (40, 50.0)]);
    }

    #[test]
    fn window_is_at_or_after() {
        let p = [(0, 0.0), (10, 1.0), (20, 2.0)];
        assert_eq!(window(&p, 10), &p[1..]);
        assert_eq!(window(&p, 21), &[] as &[Point]);
    }
}

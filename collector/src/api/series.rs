//! Which tier answers a metrics range, the step, and points averaged into step buckets
//! (pure).

use crate::store::{HOUR_MS, ROLLUP_STEP_MS, Retention};
use aftercare_shared::model::UnixMillis;

/// Raw points answer ranges up to this long (where raw is still kept).
pub const RAW_RANGE_MS: i64 = 6 * HOUR_MS;
/// Points per series an automatic step aims at, at most.
pub const TARGET_POINTS: i64 = 500;
/// A step giving more points than this per series is refused.
pub const MAX_POINTS: i64 = 11_000;
/// The finest step.
pub const MIN_STEP_MS: i64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Raw,
    FiveMinutes,
    Hour,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Raw => "raw",
            Source::FiveMinutes => "5m",
            Source::Hour => "1h",
        }
    }

    /// The width of one stored value.
    pub fn resolution_ms(self) -> i64 {
        match self {
            Source::Raw => MIN_STEP_MS,
            Source::FiveMinutes => ROLLUP_STEP_MS,
            Source::Hour => HOUR_MS,
        }
    }
}

/// The tier for `[from, to)` at `now`: raw for short ranges raw still covers, 5-minute
/// rollups while that tier covers `from`, hourly beyond. Never raw for a long range: a
/// month of raw points would be read only to be averaged away.
pub fn source_for(from: UnixMillis, to: UnixMillis, now: UnixMillis, r: &Retention) -> Source {
    if to - from <= RAW_RANGE_MS && from >= now - r.raw_ms {
        Source::Raw
    } else if from >= now - r.five_minutes_ms {
        Source::FiveMinutes
    } else {
        Source::Hour
    }
}

/// A step giving at most about [`TARGET_POINTS`] points, a round number of seconds, minutes
/// or hours, and no finer than the source.
pub fn auto_step(span_ms: i64, source: Source) -> i64 {
    const NICE: [i64; 14] = [
        1_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000,
        1_800_000, 3_600_000, 21_600_000, 86_400_000,
    ];
    let want = (span_ms + TARGET_POINTS - 1) / TARGET_POINTS;
    let nice = NICE
        .iter()
        .copied()
        .find(|&s| s >= want)
        .unwrap_or_else(|| want.div_euclid(86_400_000).max(1) * 86_400_000 + 86_400_000);
    nice.max(source.resolution_ms())
}

/// Why a step does not fit a range.
pub fn check_step(span_ms: i64, step_ms: i64) -> Result<(), String> {
    if step_ms < MIN_STEP_MS {
        return Err(format!("must be at least {}s", MIN_STEP_MS / 1000));
    }
    if span_ms / step_ms > MAX_POINTS {
        return Err(format!(
            "too small for the range: {} points per series, at most {MAX_POINTS}; use {}s or more",
            span_ms / step_ms,
            (span_ms + MAX_POINTS - 1) / MAX_POINTS / 1000 + 1
        ));
    }
    Ok(())
}

/// Mean of the points at or after `from` in each `step` bucket (points sorted by time),
/// stamped with the bucket's start. Buckets are aligned to multiples of `step` since the
/// epoch, so the same range asked again a little later gives the same buckets, and 5-minute
/// or hourly steps line up with the rollups. Buckets without points are left out.
pub fn bucket_means(
    points: &[(UnixMillis, f64)],
    from: UnixMillis,
    step: i64,
) -> Vec<(UnixMillis, f64)> {
    let mut out: Vec<(UnixMillis, f64)> = Vec::new();
    let mut cur: Option<(UnixMillis, f64, u64)> = None;
    for &(t, v) in points {
        if !v.is_finite() || t < from {
            continue;
        }
        let b = t - t.rem_euclid(step);
        match &mut cur {
            Some((start, sum, n)) if *start == b => {
                *sum += v;
                *n += 1;
            }
            _ => {
                if let Some((start, sum, n)) = cur.take() {
                    out.push((start, sum / n as f64));
                }
                cur = Some((b, v, 1));
            }
        }
    }
    if let Some((start, sum, n)) = cur {
        out.push((start, sum / n as f64));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * HOUR_MS;

    #[test]
    fn ranges_pick_their_tier() {
        let r = Retention::default();
        let now = 1_000 * DAY;
        assert_eq!(source_for(now - HOUR_MS, now, now, &r), Source::Raw);
        assert_eq!(source_for(now - 6 * HOUR_MS, now, now, &r), Source::Raw);
        assert_eq!(
            source_for(now - 7 * HOUR_MS, now, now, &r),
            Source::FiveMinutes
        );
        assert_eq!(
            source_for(now - 30 * DAY, now, now, &r),
            Source::FiveMinutes
        );
        // An hour long ago, past raw retention: rollups.
        assert_eq!(
            source_for(now - 20 * DAY, now - 20 * DAY + HOUR_MS, now, &r),
            Source::FiveMinutes
        );
        assert_eq!(source_for(now - 120 * DAY, now, now, &r), Source::Hour);
    }

    #[test]
    fn steps_are_round_bounded_and_checked() {
        assert_eq!(auto_step(HOUR_MS, Source::Raw), 10_000);
        assert_eq!(auto_step(6 * HOUR_MS, Source::Raw), 60_000);
        assert_eq!(auto_step(HOUR_MS, Source::FiveMinutes), ROLLUP_STEP_MS);
        assert_eq!(auto_step(30 * DAY, Source::FiveMinutes), 21_600_000);
        assert!(auto_step(365 * DAY, Source::Hour) >= DAY);
        for span in [HOUR_MS, DAY, 30 * DAY, 365 * DAY, 3000 * DAY] {
            let s = auto_step(span, Source::Raw);
            assert!(span / s <= TARGET_POINTS, "{span} {s}");
            assert!(check_step(span, s).is_ok());
        }
        assert!(check_step(30 * DAY, 60_000).is_err());
        assert!(check_step(HOUR_MS, 500).is_err());
    }

    #[test]
    fn points_average_into_buckets() {
        let pts = [
            (-1, 7.0),
            (0, 1.0),
            (30_000, 3.0),
            (60_000, 10.0),
            (180_000, f64::NAN),
            (190_000, 4.0),
        ];
        assert_eq!(
            bucket_means(&pts, 0, 60_000),
            vec![(0, 2.0), (60_000, 10.0), (180_000, 4.0)]
        );
        // Buckets are aligned to the step, not to `from`.
        assert_eq!(
            bucket_means(&pts[1..4], 20_000, 60_000),
            vec![(0, 3.0), (60_000, 10.0)]
        );
    }
}

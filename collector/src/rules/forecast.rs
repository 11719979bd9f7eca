//! Least squares: the straight line through a series' points, how well it fits, and when
//! it reaches a limit.

use aftercare_shared::model::UnixMillis;

/// `value ≈ at_ref + slope × (t − t_ref)`, time in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Change per second.
    pub slope: f64,
    /// The line's value at `t_ref`.
    pub at_ref: f64,
    /// The mean time of the points.
    pub t_ref: UnixMillis,
    /// Coefficient of determination: 1 is a perfect line, 0 no better than the mean.
    pub r2: f64,
    pub points: usize,
    /// From the first point to the last.
    pub span_ms: i64,
}

impl Fit {
    /// The line's value at `t`.
    pub fn at(&self, t: UnixMillis) -> f64 {
        self.at_ref + self.slope * (t - self.t_ref) as f64 / 1000.0
    }

    /// When the line reaches `limit`; `None` for a flat line or one too far out to name.
    pub fn reaches(&self, limit: f64) -> Option<UnixMillis> {
        if self.slope == 0.0 || !self.slope.is_finite() {
            return None;
        }
        let secs = (limit - self.at_ref) / self.slope;
        // A thousand years out is "never"; it also keeps the cast in range.
        (secs.abs() < 3.2e10).then(|| self.t_ref + (secs * 1000.0) as i64)
    }
}

/// The least-squares line through the finite points; `None` for fewer than two, or all at
/// one time.
pub fn fit(points: &[(UnixMillis, f64)]) -> Option<Fit> {
    let finite = || points.iter().filter(|p| p.1.is_finite());
    let n = finite().count();
    if n < 2 {
        return None;
    }
    // Times relative to the first point keep the sums well conditioned.
    let t0 = finite().next()?.0;
    let x = |t: UnixMillis| (t - t0) as f64 / 1000.0;
    let (sx, sy) = finite().fold((0.0, 0.0), |(sx, sy), p| (sx + x(p.0), sy + p.1));
    let (mx, my) = (sx / n as f64, sy / n as f64);
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for &(t, v) in finite() {
        let (dx, dy) = (x(t) - mx, v - my);
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
        first = first.min(t);
        last = last.max(t);
    }
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let r2 = if syy == 0.0 {
        0.0
    } else {
        (sxy * sxy / (sxx * syy)).clamp(0.0, 1.0)
    };
    Some(Fit {
        slope,
        at_ref: my,
        t_ref: t0 + (mx * 1000.0).round() as i64,
        r2,
        points: n,
        span_ms: last - first,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn a_line_is_found_exactly() {
        // 1 % per day from 50 %, hourly for two days.
        let p: Vec<_> = (0..48)
            .map(|h| (h * 3_600_000, 50.0 + h as f64 / 24.0))
            .collect();
        let f = fit(&p).unwrap();
        assert!((f.slope * 86_400.0 - 1.0).abs() < 1e-9, "{f:?}");
        assert!((f.r2 - 1.0).abs() < 1e-9);
        assert!((f.at(0) - 50.0).abs() < 1e-6);
        let t = f.reaches(100.0).unwrap();
        assert!((t - 50 * DAY).abs() < 1000, "{t}");
        assert_eq!(f.span_ms, 47 * 3_600_000);
    }

    #[test]
    fn flat_and_degenerate_series() {
        let flat: Vec<_> = (0..10).map(|i| (i * 1000, 7.0)).collect();
        let f = fit(&flat).unwrap();
        assert_eq!(f.slope, 0.0);
        assert_eq!(f.r2, 0.0);
        assert_eq!(f.reaches(10.0), None);
        assert_eq!(fit(&[(5, 1.0)]), None);
        assert_eq!(fit(&[(5, 1.0), (5, 2.0)]), None);
        assert_eq!(fit(&[(5, 1.0), (6, f64::NAN)]), None);
    }

    #[test]
    fn noise_fits_badly() {
        // A deterministic zig-zag around 50.
        let p: Vec<_> = (0..200)
            .map(|i| {
                (
                    i * 60_000,
                    50.0 + [3.0, -2.0, 1.0, -3.0, 2.0, -1.0][i as usize % 6],
                )
            })
            .collect();
        let f = fit(&p).unwrap();
        assert!(f.r2 < 0.05, "{f:?}");
    }
}

//! Evidence: what a finding shows an engineer, written from a check's [`Detail`].
//!
//! The summary is one sentence with numbers rounded the way a person reads them (two
//! significant digits, predicted dates to the hour), so that a finding is "updated" when
//! what it says changes, not at every wobble of a value.

use super::checks::{Detail, Verdict};
use super::config::{
    Aggregate, Check, Direction, Forecast, Line, Rule, Selector, Threshold, fmt_duration,
};
use crate::store::log_time;
use crate::view::fmt_bytes;
use aftercare_shared::model::{MetricKind, Unit, UnixMillis, unit_of};
use aftercare_shared::time_fmt::to_offset;
use serde::{Deserialize, Serialize};

/// What a finding shows: a sentence, the figures behind it, and matching log lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// One sentence, subject first.
    pub summary: String,
    /// The value compared: a threshold's aggregate, a forecast's change per day, a log
    /// match count, batches dropped, seconds of clock skew.
    pub value: Option<f64>,
    /// The line it is compared with, in the same unit (a heartbeat's: seconds of silence).
    pub limit: Option<f64>,
    /// The time range looked at (collector clock); a heartbeat's starts at the last data.
    pub from: UnixMillis,
    pub to: UnixMillis,
    /// When the forecast reaches its limit, or the consent ends (collector clock).
    pub predicted: Option<UnixMillis>,
    /// The first matching log lines, redacted as the agent sent them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<EvidenceLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceLine {
    /// The time the line states, else when the agent read it.
    pub at: UnixMillis,
    pub source: String,
    pub line: String,
}

impl Evidence {
    /// Whether this evidence says something materially different from `reported`, the
    /// evidence last reported for the same finding: its sentence changes other than in its
    /// numbers ("above" becomes "not yet at or below", hours become days), its value moves
    /// by 10 % or more, or its predicted time by 10 % or more of the time that was left.
    /// Log lines and smaller moves are not news: a finding is not updated at every wobble.
    pub fn differs_materially(&self, reported: &Evidence) -> bool {
        let moved =
            |new: f64, old: f64| (new - old).abs() >= 0.1 * old.abs().max(f64::MIN_POSITIVE);
        shape(&self.summary) != shape(&reported.summary)
            || match (self.value, reported.value) {
                (Some(new), Some(old)) => moved(new, old),
                (new, old) => new.is_some() != old.is_some(),
            }
            || match (self.predicted, reported.predicted) {
                (Some(new), Some(old)) => {
                    let left = (old - reported.to).max(3_600_000) as f64;
                    (new - old).abs() as f64 >= 0.1 * left
                }
                (new, old) => new.is_some() != old.is_some(),
            }
    }
}

/// A sentence without its numbers.
fn shape(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_ascii_digit() && *c != '.' && *c != '-')
        .collect()
}

/// Everything `render` needs besides the detail.
pub struct Context<'a> {
    pub rule: &'a Rule,
    pub subject: &'a str,
    pub now: UnixMillis,
    /// Agent minus collector clock.
    pub skew_ms: i64,
    pub interval_ms: u64,
}

pub fn render(c: &Context, verdict: Verdict, detail: &Detail) -> Evidence {
    let window = window_of(&c.rule.check);
    let mut e = Evidence {
        summary: String::new(),
        value: None,
        limit: None,
        from: c.now - window.unwrap_or(0),
        to: c.now,
        predicted: None,
        lines: Vec::new(),
    };
    let text = match (&c.rule.check, detail) {
        (_, Detail::Gone) => gone(c, window.unwrap_or(0)),
        (Check::Threshold(t), Detail::Value { value, kind, .. }) => {
            e.value = *value;
            e.limit = Some(line_raise(&t.line));
            threshold(t, verdict, value.unwrap_or(f64::NAN), *kind)
        }
        (Check::Forecast(f), Detail::Trend { fit, reaches }) => {
            e.value = fit.map(|f| f.slope * 86_400.0);
            e.limit = Some(f.limit);
            e.predicted = reaches.map(|t| t.max(c.now + c.skew_ms) - c.skew_ms);
            forecast(f, c, fit.as_ref(), e.predicted)
        }
        (Check::LogPattern(l), Detail::Logs { count, lines }) => {
            e.value = Some(*count as f64);
            e.limit = Some(l.more_than as f64);
            e.lines = lines
                .iter()
                .map(|r| EvidenceLine {
                    at: log_time(r),
                    source: r.source.clone(),
                    line: r.line.clone(),
                })
                .collect();
            let lines = if *count == 1 { "line" } else { "lines" };
            let rel = match verdict {
                Verdict::Raise | Verdict::Hold if l.clear_at_most < l.more_than => format!(
                    "limit more than {}, clears at {} or fewer",
                    l.more_than, l.clear_at_most
                ),
                Verdict::Raise | Verdict::Hold => format!("more than {}", l.more_than),
                _ => format!("at most {}", l.clear_at_most),
            };
            format!(
                "{count} matching {lines} in the last {}, {rel}",
                fmt_duration(l.window_ms)
            )
        }
        (
            Check::Heartbeat(h),
            Detail::Silent {
                last,
                limit_ms,
                consent_inactive,
            },
        ) => {
            e.limit = Some(*limit_ms as f64 / 1000.0);
            e.from = last.unwrap_or(c.now).min(c.now);
            if *consent_inactive {
                "consent for metrics is not active: the host is expected to be silent".into()
            } else {
                let since = match last {
                    Some(t) => fmt_time(*t),
                    None => "it registered".into(),
                };
                match verdict {
                    Verdict::Raise => format!(
                        "nothing received since {since} (limit {}: {} intervals of {}, at least {})",
                        fmt_duration(*limit_ms),
                        h.intervals,
                        fmt_duration(c.interval_ms as i64),
                        fmt_duration(h.at_least_ms)
                    ),
                    _ => format!("data received again, last at {since}"),
                }
            }
        }
        (Check::SpoolDrops(s), Detail::Drops { batches, samples }) => {
            e.value = Some(*batches as f64);
            e.limit = Some(s.more_than as f64);
            format!(
                "the agent dropped {batches} batches ({samples} samples or lines) from its full spool in the last {}",
                fmt_duration(s.window_ms)
            )
        }
        (Check::ConsentExpiry(_), Detail::Consent { until, by }) => match until {
            None => format!("granted by {by} with no end date"),
            Some(u) => {
                e.predicted = Some(*u);
                if *u <= c.now {
                    format!("granted by {by}, ended {}", fmt_time(*u))
                } else {
                    format!(
                        "granted by {by}, ends {} (in {})",
                        fmt_time(*u),
                        fmt_span(*u - c.now)
                    )
                }
            }
        },
        (Check::ClockSkew(k), Detail::Skew { skew_ms }) => {
            e.value = Some(*skew_ms as f64 / 1000.0);
            e.limit = Some(k.limit_ms as f64 / 1000.0);
            let way = if *skew_ms >= 0 { "ahead of" } else { "behind" };
            let by = match skew_ms.unsigned_abs() {
                ms @ 60_000.. => fmt_duration(ms as i64),
                ms => format!("{}s", num(ms as f64 / 1000.0)),
            };
            format!(
                "the agent's clock is {by} {way} the collector's (limit {})",
                fmt_duration(k.limit_ms)
            )
        }
        (check, detail) => {
            debug_assert!(false, "{} rule with detail {detail:?}", check.kind());
            String::new()
        }
    };
    e.summary = match c.subject {
        "" => text,
        s => format!("{s}: {text}"),
    };
    e
}

fn window_of(check: &Check) -> Option<i64> {
    match check {
        Check::Threshold(t) => Some(t.window_ms),
        Check::Forecast(f) => Some(f.window_ms),
        Check::LogPattern(l) => Some(l.window_ms),
        Check::SpoolDrops(s) => Some(s.window_ms),
        _ => None,
    }
}

fn gone(c: &Context, window_ms: i64) -> String {
    match &c.rule.check {
        Check::LogPattern(_) => format!("no matching line in the last {}", fmt_duration(window_ms)),
        Check::SpoolDrops(_) => format!("nothing dropped in the last {}", fmt_duration(window_ms)),
        Check::ConsentExpiry(_) => "no longer granted (revoked)".into(),
        _ => format!(
            "no longer reported: no samples in the last {} while the host sends data",
            fmt_duration(window_ms)
        ),
    }
}

fn line_raise(l: &Line) -> f64 {
    match *l {
        Line::Above { raise, .. } | Line::Below { raise, .. } => raise,
    }
}

/// `last of fs.bytes.available as % of fs.bytes.total over 5m`
fn expression(sel: &Selector, agg: Option<Aggregate>, window_ms: i64) -> String {
    let mut s = String::new();
    if let Some(a) = agg {
        s.push_str(a.as_str());
        s.push_str(" of ");
    }
    s.push_str(&sel.metric);
    if let Some(p) = &sel.percent_of {
        s.push_str(" as % of ");
        s.push_str(p);
    }
    if sel.per_core {
        s.push_str(" per CPU");
    }
    s.push_str(" over ");
    s.push_str(&fmt_duration(window_ms));
    s
}

fn threshold(t: &Threshold, verdict: Verdict, v: f64, kind: MetricKind) -> String {
    let per_second = t.aggregate == Aggregate::Rate
        || (kind == MetricKind::Counter && t.aggregate != Aggregate::Increase);
    let q = |x: f64| quantity(&t.selector, x, per_second);
    // Raised or between the lines, the sentence is the same: a value hovering in the band
    // is no news.
    let rel = match (t.line, verdict) {
        (Line::Above { raise, clear }, Verdict::Raise | Verdict::Hold) if clear < raise => {
            format!("limit {}, clears at or below {}", q(raise), q(clear))
        }
        (Line::Below { raise, clear }, Verdict::Raise | Verdict::Hold) if clear > raise => {
            format!("limit {}, clears at or above {}", q(raise), q(clear))
        }
        (Line::Above { raise, .. }, Verdict::Raise | Verdict::Hold) => {
            format!("above {}", q(raise))
        }
        (Line::Below { raise, .. }, Verdict::Raise | Verdict::Hold) => {
            format!("below {}", q(raise))
        }
        (Line::Above { clear, .. }, _) => format!("at or below {}", q(clear)),
        (Line::Below { clear, .. }, _) => format!("at or above {}", q(clear)),
    };
    format!(
        "{} is {}, {rel}",
        expression(&t.selector, Some(t.aggregate), t.window_ms),
        q(v)
    )
}

fn forecast(
    f: &Forecast,
    c: &Context,
    fit: Option<&super::forecast::Fit>,
    predicted: Option<UnixMillis>,
) -> String {
    let expr = expression(&f.selector, None, f.window_ms);
    let Some(fit) = fit else {
        return format!("{expr}: too few points for a trend");
    };
    let per_day = fit.slope * 86_400.0;
    let q = |x: f64| quantity(&f.selector, x, false);
    let moves = match per_day >= 0.0 {
        true => format!("rises {} per day", q(per_day)),
        false => format!("falls {} per day", q(-per_day)),
    };
    let how = format!("r² {:.1}", fit.r2);
    let toward = match f.direction {
        Direction::Rising => per_day > 0.0,
        Direction::Falling => per_day < 0.0,
    };
    if !toward {
        return format!("{expr} {moves} ({how}): not heading for {}", q(f.limit));
    }
    if fit.r2 < f.min_fit {
        return format!("{expr}: no clear trend ({how})");
    }
    match predicted {
        None => format!(
            "{expr} {moves} ({how}): does not reach {} in sight",
            q(f.limit)
        ),
        Some(t) if t <= c.now => format!("{expr} {moves} ({how}): at {} already", q(f.limit)),
        Some(t) => format!(
            "{expr} {moves} ({how}): reaches {} around {}, in {}",
            q(f.limit),
            fmt_hour(t),
            fmt_span(t - c.now)
        ),
    }
}

/// A value with the unit the selector's metric implies.
fn quantity(sel: &Selector, v: f64, per_second: bool) -> String {
    let rate = if per_second { "/s" } else { "" };
    if sel.percent_of.is_some() {
        return format!("{}%", num(v));
    }
    if sel.per_core {
        return num(v);
    }
    match unit_of(&sel.metric) {
        Unit::Bytes => {
            let b = fmt_bytes(v);
            // fmt_bytes gives one decimal; two significant digits are enough here.
            match b.split_once(' ') {
                Some((n, u)) => match n.parse::<f64>() {
                    Ok(x) => format!("{} {u}{rate}", num(x)),
                    Err(_) => format!("{b}{rate}"),
                },
                None => format!("{b}{rate}"),
            }
        }
        Unit::Percent => format!("{}%", num(v)),
        Unit::Celsius => format!("{}°C", num(v)),
        Unit::Seconds if per_second => num(v),
        Unit::Seconds => format!("{}s", num(v)),
        Unit::Number => format!("{}{rate}", num(v)),
    }
}

/// Two significant digits, whole numbers from 10 up: `97`, `4.2`, `0.035`.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "unknown".into();
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 10.0 {
        format!("{v:.0}")
    } else {
        let decimals = (1 - a.log10().floor() as i32).clamp(1, 12) as usize;
        let s = format!("{v:.decimals$}");
        // 1.0 -> 1, 0.50 -> 0.5
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }
}

/// `2026-03-05 14:07 UTC`
pub fn fmt_time(ms: UnixMillis) -> String {
    let t = to_offset(ms);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// To the nearest hour: `2026-03-05 14:00 UTC`.
fn fmt_hour(ms: UnixMillis) -> String {
    const H: i64 = 3_600_000;
    fmt_time((ms + H / 2).div_euclid(H) * H)
}

/// `3.2 days`, `5 hours`, `40 minutes`
fn fmt_span(ms: i64) -> String {
    let h = ms as f64 / 3_600_000.0;
    if h >= 48.0 {
        format!("{} days", num(h / 24.0))
    } else if h >= 2.0 {
        format!("{} hours", h.round())
    } else {
        format!("{} minutes", (h * 60.0).round().max(1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_a_person_writes_them() {
        let cases = [
            (97.23, "97"),
            (4.24, "4.2"),
            (1.0, "1"),
            (0.5, "0.5"),
            (0.0351, "0.035"),
            (-3.3, "-3.3"),
            (0.0, "0"),
            (1234.4, "1234"),
        ];
        for (v, want) in cases {
            assert_eq!(num(v), want, "{v}");
        }
    }

    #[test]
    fn spans_and_times() {
        assert_eq!(fmt_span(3 * 86_400_000 + 5 * 3_600_000), "3.2 days");
        assert_eq!(fmt_span(5 * 3_600_000), "5 hours");
        assert_eq!(fmt_span(40 * 60_000), "40 minutes");
        // 2026-03-02T00:00:00Z + 14h29m
        let t = 1_772_409_600_000 + 14 * 3_600_000 + 29 * 60_000;
        assert_eq!(fmt_time(t), "2026-03-02 14:29 UTC");
        assert_eq!(fmt_hour(t), "2026-03-02 14:00 UTC");
    }
}

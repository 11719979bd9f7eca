//! A report's period, read in the customer's time zone (pure): calendar quarters, the last
//! one that has ended, and `--from/--to` dates. A quarter starts at local midnight on the
//! first day of January, April, July or October; the end is exclusive.

use aftercare_shared::model::UnixMillis;
use jiff::civil::Date;
use jiff::tz::{TimeZone, TimeZoneDatabase};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub from: UnixMillis,
    pub to: UnixMillis,
    /// `2026-Q3`, or `2026-07-01..2026-08-15` (the last day included).
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("time zone '{0}' is not in the tz database: name one such as Asia/Shanghai or UTC")]
    Zone(String),
    #[error("quarter '{0}': write it as YEAR-QN, e.g. 2026-Q3")]
    Quarter(String),
    #[error("{field} '{value}': write a date (2026-07-01) or an RFC 3339 time")]
    Time { field: &'static str, value: String },
    #[error("the period ends ({to}) before it starts ({from})")]
    Empty { from: String, to: String },
}

pub fn zone(name: &str) -> Result<TimeZone, PeriodError> {
    TimeZoneDatabase::bundled()
        .get(name)
        .map_err(|_| PeriodError::Zone(name.to_string()))
}

fn midnight(d: Date, tz: &TimeZone) -> UnixMillis {
    // Local midnight can fall in a gap (a DST change at 00:00): the compatible instant is
    // the first one after it.
    tz.to_ambiguous_timestamp(d.at(0, 0, 0, 0))
        .compatible()
        .map(|t| t.as_millisecond())
        .unwrap_or(i64::MIN)
}

fn local_date(at: UnixMillis, tz: &TimeZone) -> Date {
    tz.to_datetime(jiff::Timestamp::from_millisecond(at).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
        .date()
}

/// Quarter `q` (1..=4) of `year`.
pub fn quarter(year: i16, q: u8, tz: &TimeZone) -> Period {
    let q = q.clamp(1, 4);
    let start = Date::new(year, ((q - 1) * 3 + 1) as i8, 1).expect("a valid first day");
    let end = if q == 4 {
        Date::new(year.saturating_add(1), 1, 1)
    } else {
        Date::new(year, (q * 3 + 1) as i8, 1)
    }
    .expect("a valid first day");
    Period {
        from: midnight(start, tz),
        to: midnight(end, tz),
        label: format!("{year}-Q{q}"),
    }
}

/// The quarter `at` falls in.
pub fn quarter_containing(at: UnixMillis, tz: &TimeZone) -> Period {
    let d = local_date(at, tz);
    quarter(d.year(), ((d.month() - 1) / 3 + 1) as u8, tz)
}

/// The newest quarter that has ended by `now`: the one the scheduler reports on.
pub fn last_ended_quarter(now: UnixMillis, tz: &TimeZone) -> Period {
    let this = quarter_containing(now, tz);
    quarter_containing(this.from - 1, tz)
}

/// `2026-Q3`.
pub fn parse_quarter(s: &str, tz: &TimeZone) -> Result<Period, PeriodError> {
    let bad = || PeriodError::Quarter(s.to_string());
    let (y, q) = s.trim().split_once(['-', ' ']).ok_or_else(bad)?;
    let year: i16 = y.parse().map_err(|_| bad())?;
    let q: u8 = q
        .trim()
        .strip_prefix(['Q', 'q'])
        .and_then(|n| n.parse().ok())
        .filter(|n| (1..=4).contains(n))
        .ok_or_else(bad)?;
    if !(1970..=9998).contains(&year) {
        return Err(bad());
    }
    Ok(quarter(year, q, tz))
}

/// A day (local midnight in `tz`) or an RFC 3339 instant.
fn instant(field: &'static str, s: &str, tz: &TimeZone) -> Result<UnixMillis, PeriodError> {
    let s = s.trim();
    if let Ok(d) = s.parse::<Date>() {
        return Ok(midnight(d, tz));
    }
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| PeriodError::Time {
            field,
            value: s.to_string(),
        })
}

/// `--from 2026-07-01 --to 2026-08-15`: `to` as a date includes that whole day.
pub fn between(from: &str, to: &str, tz: &TimeZone) -> Result<Period, PeriodError> {
    let start = instant("from", from, tz)?;
    let end = match to.trim().parse::<Date>() {
        Ok(d) => midnight(d.tomorrow().unwrap_or(d), tz),
        Err(_) => instant("to", to, tz)?,
    };
    let day = |t: UnixMillis| local_date(t, tz).to_string();
    if end <= start {
        return Err(PeriodError::Empty {
            from: from.trim().to_string(),
            to: to.trim().to_string(),
        });
    }
    Ok(Period {
        from: start,
        to: end,
        label: format!("{}..{}", day(start), day(end - 1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> UnixMillis {
        s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn quarters_start_at_local_midnight() {
        let sh = zone("Asia/Shanghai").unwrap();
        let q3 = quarter(2026, 3, &sh);
        assert_eq!(q3.from, ms("2026-06-30T16:00:00Z"));
        assert_eq!(q3.to, ms("2026-09-30T16:00:00Z"));
        assert_eq!(q3.label, "2026-Q3");
        let q4 = quarter(2026, 4, &sh);
        assert_eq!(q4.to, ms("2026-12-31T16:00:00Z"));
        // 2026-07-01 00:30 in Shanghai is still June 30 in UTC, but Q3 there.
        assert_eq!(quarter_containing(ms("2026-06-30T16:30:00Z"), &sh), q3);
        assert_eq!(
            quarter_containing(ms("2026-06-30T16:30:00Z"), &TimeZone::UTC).label,
            "2026-Q2"
        );
    }

    #[test]
    fn the_last_ended_quarter_is_the_one_before_now() {
        let utc = TimeZone::UTC;
        assert_eq!(
            last_ended_quarter(ms("2026-10-01T00:00:00Z"), &utc).label,
            "2026-Q3"
        );
        assert_eq!(
            last_ended_quarter(ms("2026-09-30T23:59:59Z"), &utc).label,
            "2026-Q2"
        );
        assert_eq!(
            last_ended_quarter(ms("2027-02-11T08:00:00Z"), &utc).label,
            "2026-Q4"
        );
        // A DST zone: Berlin's Q2 is 1 h shorter on the clock's day of change, still whole.
        let berlin = zone("Europe/Berlin").unwrap();
        let q = last_ended_quarter(ms("2026-07-02T00:00:00Z"), &berlin);
        assert_eq!(q.from, ms("2026-03-31T22:00:00Z"));
        assert_eq!(q.to, ms("2026-06-30T22:00:00Z"));
    }

    #[test]
    fn quarters_and_dates_parse_or_say_what_to_write() {
        let utc = TimeZone::UTC;
        assert_eq!(
            parse_quarter("2026-Q1", &utc).unwrap(),
            quarter(2026, 1, &utc)
        );
        assert_eq!(parse_quarter("2026 q4", &utc).unwrap().label, "2026-Q4");
        for bad in ["2026-Q5", "Q3", "2026", "26-Q1x"] {
            assert!(
                matches!(parse_quarter(bad, &utc), Err(PeriodError::Quarter(_))),
                "{bad}"
            );
        }
        let p = between("2026-07-01", "2026-08-15", &utc).unwrap();
        assert_eq!(p.from, ms("2026-07-01T00:00:00Z"));
        assert_eq!(p.to, ms("2026-08-16T00:00:00Z"));
        assert_eq!(p.label, "2026-07-01..2026-08-15");
        let e = between("2026-07-01", "yesterday", &utc).unwrap_err();
        assert!(e.to_string().starts_with("to 'yesterday'"), "{e}");
        assert!(matches!(
            between("2026-08-01", "2026-07-01", &utc),
            Err(PeriodError::Empty { .. })
        ));
        assert!(matches!(zone("Mars/Olympus"), Err(PeriodError::Zone(_))));
    }
}

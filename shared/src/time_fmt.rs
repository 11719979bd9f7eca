//! Timestamps as people read and write them: RFC 3339 in UTC, or a bare date.

use crate::model::UnixMillis;
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, UtcOffset};

#[derive(Debug, thiserror::Error)]
#[error(
    "'{input}' is not a date or time: write 2027-03-31 (through the end of that day, UTC), \
     2027-03-31T18:00:00Z, or a span back from now such as 90m, 12h, 7d"
)]
pub struct BadTime {
    pub input: String,
}

/// Now, in Unix milliseconds.
pub fn now_millis() -> UnixMillis {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as UnixMillis
}

pub fn to_offset(ms: UnixMillis) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub fn from_offset(t: OffsetDateTime) -> UnixMillis {
    (t.unix_timestamp_nanos() / 1_000_000) as UnixMillis
}

/// `2026-11-22T02:30:05Z`
pub fn rfc3339(ms: UnixMillis) -> String {
    to_offset(ms)
        .replace_millisecond(0)
        .unwrap_or_else(|_| to_offset(ms))
        .format(&Rfc3339)
        .unwrap_or_else(|_| ms.to_string())
}

/// An end of validity: a bare date means through the end of that day (UTC), so
/// `--until 2027-03-31` still covers the 31st.
pub fn parse_until(input: &str) -> Result<OffsetDateTime, BadTime> {
    let s = input.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t.to_offset(UtcOffset::UTC));
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = Date::parse(s, &fmt)
        && let Some(next) = d.next_day()
    {
        return Ok(next.midnight().assume_utc());
    }
    Err(BadTime {
        input: input.to_string(),
    })
}

/// A start of a query window: an absolute time (`parse_until` forms, a bare date meaning its
/// start) or a span back from `now` such as `90m`, `12h`, `7d`.
pub fn parse_since(input: &str, now: UnixMillis) -> Result<UnixMillis, BadTime> {
    let s = input.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(from_offset(t));
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = Date::parse(s, &fmt) {
        return Ok(from_offset(d.midnight().assume_utc()));
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(now - d.as_millis() as i64);
    }
    Err(BadTime {
        input: input.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_a_date_covers_the_whole_day() {
        let t = parse_until("2027-03-31").unwrap();
        assert_eq!(t.format(&Rfc3339).unwrap(), "2027-04-01T00:00:00Z");
        let t = parse_until("2027-03-31T18:00:00+08:00").unwrap();
        assert_eq!(t.format(&Rfc3339).unwrap(), "2027-03-31T10:00:00Z");
        assert!(parse_until("next tuesday").is_err());
        assert!(parse_until("2027-02-30").is_err());
    }

    #[test]
    fn since_accepts_spans_and_dates() {
        let now = 10_000_000_000;
        assert_eq!(parse_since("90m", now).unwrap(), now - 90 * 60_000);
        assert_eq!(parse_since("1970-01-02", now).unwrap(), 86_400_000);
        let e = parse_since("yesterday-ish", now).unwrap_err();
        assert!(e.to_string().contains("yesterday-ish"));
    }

    #[test]
    fn rfc3339_round_trips() {
        assert_eq!(rfc3339(86_400_000), "1970-01-02T00:00:00Z");
    }
}

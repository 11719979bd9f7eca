//! Units for people: bytes in binary units, percents, durations, and the model's UTC
//! instants shown in the report's time zone. Presentation only: nothing here decides.

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::templates::Table;

/// `1536` → `1.5 KiB`; below 1 KiB in bytes.
pub fn bytes(v: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = v;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else if v.abs() >= 100.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `99.953` → `99.95%`: a share (availability, SLA met), two decimals.
pub fn percent(v: f64) -> String {
    if (99.0..100.0).contains(&v) {
        // Never round 99.996 up to 100.00%: a customer reads that as "no outage".
        format!("{:.2}%", (v * 100.0).floor() / 100.0)
    } else {
        format!("{v:.2}%")
    }
}

/// A trend's value in its unit (`percent` or `bytes/s`).
pub fn value(v: f64, unit: &str) -> String {
    match unit {
        // The agent's own CPU share is well below 1%: one decimal would read 0.2 or 0.0.
        "percent" if v.abs() < 1.0 => format!("{v:.2}%"),
        "percent" => format!("{v:.1}%"),
        "bytes/s" => format!("{}/s", bytes(v)),
        "bytes" => bytes(v),
        other => format!("{v:.2} {other}"),
    }
}

/// `8_100_000` → `2 h 15 min`, in the table's units; days beyond 48 hours.
pub fn duration(ms: i64, table: &Table) -> String {
    let unit = |key: &'static str| table.get(key).map_or(key, String::as_str);
    let minutes = ms.max(0) / 60_000;
    let (d, h, m) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    let mut parts = Vec::new();
    if minutes >= 2880 {
        parts.push(format!("{d} {}", unit("unit.d")));
        if h > 0 {
            parts.push(format!("{h} {}", unit("unit.h")));
        }
    } else {
        if minutes >= 60 {
            parts.push(format!("{} {}", minutes / 60, unit("unit.h")));
        }
        if m > 0 || minutes < 60 {
            parts.push(format!("{m} {}", unit("unit.min")));
        }
    }
    parts.join(" ")
}

/// An RFC 3339 instant as a local date and time in `tz`, e.g. `2026-07-01 08:00`.
pub fn datetime(s: &str, tz: &TimeZone) -> Result<String, jiff::Error> {
    Ok(s.parse::<Timestamp>()?
        .to_zoned_datetime(tz.clone())
        .strftime("%Y-%m-%d %H:%M")
        .to_string())
}

/// The local date of an RFC 3339 instant in `tz`; a bare date is shown as it is.
pub fn date(s: &str, tz: &TimeZone) -> Result<String, jiff::Error> {
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        return Ok(d.to_string());
    }
    Ok(s.parse::<Timestamp>()?
        .to_zoned_datetime(tz.clone())
        .date()
        .to_string())
}

/// The local date of a Unix millisecond instant, short (`07-01`), for chart axes.
pub fn axis_date(ms: i64, tz: &TimeZone) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| {
            t.to_zoned_datetime(tz.clone())
                .strftime("%m-%d")
                .to_string()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(8.0 * 1024.0 * 1024.0 * 1024.0), "8.0 GiB");
        assert_eq!(bytes(500.0 * 1024.0 * 1024.0), "500 MiB");
        assert_eq!(percent(99.996), "99.99%");
        assert_eq!(percent(100.0), "100.00%");
        assert_eq!(percent(84.62), "84.62%");
        assert_eq!(value(2048.0, "bytes/s"), "2.0 KiB/s");
    }

    #[test]
    fn durations_and_dates() {
        let mut t = Table::new();
        t.insert("unit.h".into(), "h".into());
        t.insert("unit.min".into(), "min".into());
        t.insert("unit.d".into(), "d".into());
        assert_eq!(duration(8_100_000, &t), "2 h 15 min");
        assert_eq!(duration(3_600_000, &t), "1 h");
        assert_eq!(duration(20 * 60_000, &t), "20 min");
        assert_eq!(duration(3 * 86_400_000 + 7_200_000, &t), "3 d 2 h");
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        assert_eq!(
            datetime("2026-06-30T16:30:00Z", &tz).unwrap(),
            "2026-07-01 00:30"
        );
        assert_eq!(date("2026-06-30T16:30:00Z", &tz).unwrap(), "2026-07-01");
        assert_eq!(date("2026-07-03", &tz).unwrap(), "2026-07-03");
        assert!(datetime("yesterday", &tz).is_err());
    }
}

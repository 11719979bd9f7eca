//! What a log line says about itself: its severity and its timestamp. Pure, no regex
//! (a regex engine would cost the agent ~0.3–0.5 MB of PSS): a few hand-written readers.
//!
//! Severity, first that applies:
//! 1. a syslog `<PRI>` at the start (RFC 3164 and 5424; also the kernel's `<3>`),
//! 2. a journal export field `PRIORITY=N`,
//! 3. a keyword among the first words (case-insensitive, whole words only, and not part
//!    of a name: `libgpg-error-dev`, `error_count`, `/var/log/error.log` are not levels):
//!    EMERG(ENCY) / ALERT / CRIT(ICAL) / FATAL / PANIC / ERROR / ERR / WARN(ING) / NOTICE /
//!    INFO / DEBUG / TRACE. Only the start of a line counts: a level sits there, while an
//!    INFO line may well mention an "error" further on.
//!
//! Timestamps, after an optional `<PRI>` (and RFC 5424's version digit):
//! - ISO 8601 / RFC 3339: `2026-11-22T03:50:11.123Z`, `2026-11-22 03:50:11,123`,
//!   `...+01:00`, `...+0100`; also nginx's error log `2026/11/22 03:50:11`;
//! - RFC 3164: `Nov 22 03:50:11`, which has no year (the one that puts it nearest before
//!   `now` is taken) and no zone (the caller's local offset is);
//! - journal export `__REALTIME_TIMESTAMP=<microseconds>`;
//! - a bracketed common-log time anywhere in the first bytes: `[22/Nov/2026:03:50:11 +0000]`.
//!
//! Times without a zone are taken in the `local` offset the caller gives.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// Syslog severities (RFC 5424 numbering: lower is worse); the wire's type.
pub use aftercare_shared::model::Severity;

/// What was found in one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    pub severity: Option<Severity>,
    pub timestamp: Option<OffsetDateTime>,
}

/// Severity and timestamp of `line`. `now` resolves the year of RFC 3164 times.
pub fn parse(line: &[u8], now: OffsetDateTime, local: UtcOffset) -> Parsed {
    let (pri, rest) = match syslog_pri(line) {
        Some((pri, rest)) => (Some(pri), rest),
        None => (None, line),
    };
    // RFC 5424: "<PRI>1 TIMESTAMP ...".
    let rest = match (pri, rest) {
        (Some(_), [b'1', b' ', tail @ ..]) => tail,
        _ => rest,
    };
    let severity = pri
        .and_then(|p| Severity::from_code(p & 7))
        .or_else(|| journal_priority(line))
        .or_else(|| keyword(line));
    let timestamp = iso8601(rest, local)
        .or_else(|| rfc3164(rest, now, local))
        .or_else(|| journal_realtime(line))
        .or_else(|| common_log(line));
    Parsed {
        severity,
        timestamp,
    }
}

/// Whether a line begins with a timestamp (after an optional `<PRI>`): the multiline
/// rule "a record starts with a timestamp" uses this.
pub fn starts_with_timestamp(line: &[u8]) -> bool {
    let rest = syslog_pri(line).map_or(line, |(_, r)| r);
    let rest = rest.strip_prefix(b"1 ").unwrap_or(rest);
    let rest = rest.strip_prefix(b"[").unwrap_or(rest);
    iso8601(rest, UtcOffset::UTC).is_some()
        // Any leap year will do as "now": only whether the date exists matters here.
        || rfc3164(rest, time::macros::datetime!(2024-12-31 00:00 UTC), UtcOffset::UTC).is_some()
}

/// `<PRI>` with 1–3 digits and a value of at most 191 (facility 23, severity 7).
fn syslog_pri(line: &[u8]) -> Option<(u8, &[u8])> {
    let rest = line.strip_prefix(b"<")?;
    let close = rest.iter().take(4).position(|&b| b == b'>')?;
    let digits = &rest[..close];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = num(digits)?;
    (v <= 191).then_some((v as u8, &rest[close + 1..]))
}

fn journal_priority(line: &[u8]) -> Option<Severity> {
    let v = line.strip_prefix(b"PRIORITY=")?;
    match v {
        [d] if d.is_ascii_digit() => Severity::from_code(d - b'0'),
        _ => None,
    }
}

fn journal_realtime(line: &[u8]) -> Option<OffsetDateTime> {
    let v = line.strip_prefix(b"__REALTIME_TIMESTAMP=")?;
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let micros: i128 = std::str::from_utf8(v).ok()?.parse().ok()?;
    OffsetDateTime::from_unix_timestamp_nanos(micros * 1000).ok()
}

/// How far into a line a level keyword is looked for.
const KEYWORD_SPAN: usize = 160;

/// A byte that joins a word into a name (`libgpg-error-dev`, `error_count`, `err.log`,
/// `/var/log/error`), where a level word is not a level.
fn joins_name(b: Option<&u8>) -> bool {
    b.is_some_and(|b| matches!(b, b'-' | b'_' | b'.' | b'/' | b'\\') || b.is_ascii_digit())
}

fn keyword(line: &[u8]) -> Option<Severity> {
    let span = &line[..line.len().min(KEYWORD_SPAN)];
    // A plain loop over the words (runs of ASCII letters): this runs on every line, and
    // the agent is built for size, where iterator adapters are not inlined.
    let mut i = 0;
    while i < span.len() {
        while i < span.len() && !span[i].is_ascii_alphabetic() {
            i += 1;
        }
        let s = i;
        while i < span.len() && span[i].is_ascii_alphabetic() {
            i += 1;
        }
        let w = &span[s..i];
        // Cheap tests first: every keyword has 3 to 9 letters and starts with one of these;
        // most words of a line fail here.
        if w.len() >= 3
            && w.len() <= 9
            && matches!(
                w[0] | 0x20,
                b'e' | b'a' | b'c' | b'f' | b'p' | b'w' | b'n' | b'i' | b'd' | b't'
            )
            && !joins_name(s.checked_sub(1).and_then(|j| span.get(j)))
            && !joins_name(span.get(i))
            && let Some(sev) = level_word(w)
        {
            return Some(sev);
        }
    }
    None
}

/// The severity a word names, in any case.
fn level_word(w: &[u8]) -> Option<Severity> {
    use Severity::*;
    let mut up = [0u8; 9];
    let up = &mut up[..w.len()];
    up.copy_from_slice(w);
    up.make_ascii_uppercase();
    Some(match &*up {
        b"EMERG" | b"EMERGENCY" => Emergency,
        b"ALERT" => Alert,
        b"CRIT" | b"CRITICAL" | b"FATAL" | b"PANIC" => Critical,
        b"ERROR" | b"ERR" => Error,
        b"WARN" | b"WARNING" => Warning,
        b"NOTICE" => Notice,
        b"INFO" => Info,
        b"DEBUG" | b"TRACE" => Debug,
        _ => return None,
    })
}

fn num(d: &[u8]) -> Option<u32> {
    if d.is_empty() || d.len() > 9 || !d.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(d.iter().fold(0, |n, &b| n * 10 + u32::from(b - b'0')))
}

fn field(s: &[u8], at: usize, len: usize) -> Option<u32> {
    num(s.get(at..at + len)?)
}

/// `HH:MM:SS` at `at`, then an optional fraction (`.` or `,`); returns the time and the
/// index just past it.
fn clock(s: &[u8], at: usize) -> Option<(Time, usize)> {
    let (h, m, sec) = (field(s, at, 2)?, field(s, at + 3, 2)?, field(s, at + 6, 2)?);
    if s[at + 2] != b':' || s[at + 5] != b':' {
        return None;
    }
    let mut end = at + 8;
    let mut nanos = 0u32;
    if matches!(s.get(end), Some(b'.' | b',')) {
        let digits = s[end + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        let kept = &s[end + 1..end + 1 + digits.min(9)];
        nanos = num(kept)? * 10u32.pow(9 - kept.len() as u32);
        end += 1 + digits;
    }
    let t = Time::from_hms_nano(h as u8, m as u8, sec.min(59) as u8, nanos).ok()?;
    Some((t, end))
}

fn iso8601(s: &[u8], local: UtcOffset) -> Option<OffsetDateTime> {
    let (y, mo, d) = (field(s, 0, 4)?, field(s, 5, 2)?, field(s, 8, 2)?);
    let sep = s[4];
    if !(sep == b'-' || sep == b'/') || s[7] != sep || !matches!(s.get(10), Some(b'T' | b' ')) {
        return None;
    }
    let date = Date::from_calendar_date(y as i32, Month::try_from(mo as u8).ok()?, d as u8).ok()?;
    let (t, end) = clock(s, 11)?;
    let offset = match s.get(end) {
        Some(b'Z') => UtcOffset::UTC,
        Some(&c @ (b'+' | b'-')) => {
            let h = field(s, end + 1, 2)?;
            let m = match s.get(end + 3) {
                Some(b':') => field(s, end + 4, 2)?,
                _ => field(s, end + 3, 2)?,
            };
            let sign = if c == b'-' { -1 } else { 1 };
            UtcOffset::from_hms(sign * h as i8, sign * m as i8, 0).ok()?
        }
        _ => local,
    };
    Some(PrimitiveDateTime::new(date, t).assume_offset(offset))
}

fn month(s: &[u8]) -> Option<Month> {
    use Month::*;
    let m = s.get(..3)?;
    const NAMES: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let i = NAMES.iter().position(|n| n.eq_ignore_ascii_case(m))?;
    [
        January, February, March, April, May, June, July, August, September, October, November,
        December,
    ]
    .get(i)
    .copied()
}

/// `Mmm dd HH:MM:SS` (day space-padded): the year is the one nearest before `now`
/// (a line stamped a day ahead is clock skew, not last year).
fn rfc3164(s: &[u8], now: OffsetDateTime, local: UtcOffset) -> Option<OffsetDateTime> {
    let m = month(s)?;
    if s.get(3) != Some(&b' ') {
        return None;
    }
    let day = match (s.get(4)?, s.get(5)?) {
        (b' ', d) if d.is_ascii_digit() => u32::from(d - b'0'),
        _ => field(s, 4, 2)?,
    };
    if s.get(6) != Some(&b' ') {
        return None;
    }
    let (t, _) = clock(s, 7)?;
    let now_local = now.to_offset(local);
    [now_local.year(), now_local.year() - 1]
        .into_iter()
        .filter_map(|y| Date::from_calendar_date(y, m, day as u8).ok())
        .map(|d| PrimitiveDateTime::new(d, t).assume_offset(local))
        .find(|ts| *ts <= now + time::Duration::days(1))
}

/// `[22/Nov/2026:03:50:11 +0000]` (nginx and Apache access logs) in the first bytes.
fn common_log(line: &[u8]) -> Option<OffsetDateTime> {
    let span = &line[..line.len().min(KEYWORD_SPAN)];
    let open = span.iter().position(|&b| b == b'[')?;
    let s = &span[open + 1..];
    let day = field(s, 0, 2)?;
    if s.get(2) != Some(&b'/') || s.get(6) != Some(&b'/') || s.get(11) != Some(&b':') {
        return None;
    }
    let m = month(&s[3..])?;
    let y = field(s, 7, 4)?;
    let (t, end) = clock(s, 12)?;
    let offset = match (s.get(end), s.get(end + 1)) {
        (Some(b' '), Some(&c @ (b'+' | b'-'))) => {
            let (h, mi) = (field(s, end + 2, 2)?, field(s, end + 4, 2)?);
            let sign = if c == b'-' { -1 } else { 1 };
            UtcOffset::from_hms(sign * h as i8, sign * mi as i8, 0).ok()?
        }
        _ => return None,
    };
    let date = Date::from_calendar_date(y as i32, m, day as u8).ok()?;
    Some(PrimitiveDateTime::new(date, t).assume_offset(offset))
}

#[cfg(test)]
mod tests {
    use super::Severity::*;
    use super::*;
    use time::macros::{datetime, offset};

    const NOW: OffsetDateTime = datetime!(2026-11-22 04:00:00 UTC);

    fn p(line: &str) -> Parsed {
        parse(line.as_bytes(), NOW, UtcOffset::UTC)
    }

    #[test]
    fn real_looking_lines() {
        let cases: &[(&str, Option<Severity>, Option<OffsetDateTime>)] = &[
            // sshd via rsyslog (RFC 3164 file format, no PRI)
            (
                "Nov 22 03:50:11 web1 sshd[812]: Failed password for root from 203.0.113.9 port 52144 ssh2",
                None,
                Some(datetime!(2026-11-22 03:50:11 UTC)),
            ),
            (
                "Nov  2 03:50:11 web1 sshd[812]: error: kex_exchange_identification: Connection closed by remote host",
                Some(Error),
                Some(datetime!(2026-11-02 03:50:11 UTC)),
            ),
            // December lines read in January belong to last year.
            (
                "Dec 31 23:59:59 web1 CRON[1]: (root) CMD (run-parts /etc/cron.hourly)",
                None,
                Some(datetime!(2025-12-31 23:59:59 UTC)),
            ),
            // syslog on the wire, RFC 3164 and RFC 5424
            (
                "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
                Some(Critical),
                Some(datetime!(2026-10-11 22:14:15 UTC)),
            ),
            (
                "<165>1 2026-11-22T03:50:11.003Z host app 1234 ID47 - INFO but pri says notice",
                Some(Notice),
                Some(datetime!(2026-11-22 03:50:11.003 UTC)),
            ),
            // kernel ring buffer
            (
                "<3>[   12.345678] EXT4-fs error (device sda1): htree_dirblock_to_tree",
                Some(Error),
                None,
            ),
            (
                "Nov 22 03:50:11 db1 kernel: [1234567.890] Out of memory: Killed process 4242 (postgres)",
                None,
                Some(datetime!(2026-11-22 03:50:11 UTC)),
            ),
            // nginx error and access logs
            (
                "2026/11/22 03:50:11 [error] 1234#1234: *5 connect() failed (111: Connection refused) while connecting to upstream",
                Some(Error),
                Some(datetime!(2026-11-22 03:50:11 UTC)),
            ),
            (
                "2026/11/22 03:50:12 [warn] 1234#1234: *7 an upstream response is buffered to a temporary file",
                Some(Warning),
                Some(datetime!(2026-11-22 03:50:12 UTC)),
            ),
            (
                "203.0.113.9 - - [22/Nov/2026:03:50:11 +0100] \"GET /index.html HTTP/1.1\" 500 512 \"-\" \"curl/8.5\"",
                None,
                Some(datetime!(2026-11-22 03:50:11 +01:00)),
            ),
            // Java (logback) and its stack trace
            (
                "2026-11-22 03:50:11,123 ERROR [main] c.e.OrderService - payment failed",
                Some(Error),
                Some(datetime!(2026-11-22 03:50:11.123 UTC)),
            ),
            (
                "java.lang.NullPointerException: Cannot invoke \"String.length()\"",
                None,
                None,
            ),
            (
                "\tat com.example.OrderService.pay(OrderService.java:42)",
                None,
                None,
            ),
            (
                "2026-11-22T03:50:11.123456789+05:30 WARN  pool exhausted",
                Some(Warning),
                Some(datetime!(2026-11-22 03:50:11.123456789 +05:30)),
            ),
            // journalctl -o short-iso, and export format fields
            (
                "2026-11-22T03:50:11+0000 web1 systemd[1]: nginx.service: Main process exited, code=exited, status=1/FAILURE",
                None,
                Some(datetime!(2026-11-22 03:50:11 UTC)),
            ),
            ("PRIORITY=2", Some(Critical), None),
            (
                "__REALTIME_TIMESTAMP=1763783411000000",
                None,
                Some(datetime!(2025-11-22 03:50:11 UTC)),
            ),
            // keywords: case, whole words only, near the start only
            ("level=debug msg=\"cache warm\"", Some(Debug), None),
            (
                "FATAL: the database system is shutting down",
                Some(Critical),
                None,
            ),
            ("kernel PANIC - not syncing", Some(Critical), None),
            (
                "Information superhighway; errors=0; terrorist=no",
                None,
                None,
            ),
            (
                "[notice] child pid 22 exit signal Segmentation fault",
                Some(Notice),
                None,
            ),
            // part of a name, not a level (dpkg.log, file names, counters)
            ("status unpacked libgpg-error-dev:amd64 1.46-1", None, None),
            ("rotated /var/log/error.log error_count=0", None, None),
            ("status=error after 3 tries", Some(Error), None),
            ("EXT4-fs error (device sda1): bad block", Some(Error), None),
        ];
        for (line, sev, ts) in cases {
            let got = p(line);
            assert_eq!(got.severity, *sev, "severity of {line}");
            assert_eq!(got.timestamp, *ts, "timestamp of {line}");
        }
        let far = format!("{} error", "x ".repeat(100));
        assert_eq!(p(&far).severity, None, "too far in to be a level");
    }

    #[test]
    fn local_offset_applies_to_zoneless_times_and_bad_fields_are_not_times() {
        let got = parse(b"2026-11-22 03:50:11 INFO up", NOW, offset!(+8));
        assert_eq!(got.timestamp, Some(datetime!(2026-11-22 03:50:11 +08:00)));
        for bad in [
            "2026-13-22 03:50:11 x",
            "2026-11-22 25:50:11 x",
            "2026-11-22T03:50 x",
            "Foo 22 03:50:11 x",
            "<999>Nov 22 03:50:11 x",
            "<>x",
        ] {
            assert_eq!(p(bad).timestamp, None, "{bad}");
        }
        assert_eq!(p("<999>x").severity, None);
        assert!(starts_with_timestamp(b"<13>Feb 29 03:50:11 host x"));
        assert!(starts_with_timestamp(b"[2026-11-22 03:50:11] x"));
        assert!(!starts_with_timestamp(b"\tat com.example.Main"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_bytes(line in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
                                     prefix in proptest::sample::select(vec!["", "<13>", "<13>1 ", "2026-11-22", "Nov 22 ", "[22/Nov/2026:"])) {
            let mut l = prefix.as_bytes().to_vec();
            l.extend(line);
            let _ = parse(&l, NOW, UtcOffset::UTC);
        }
    }
}

//! Table tests for calendars, clocks and `sla.toml`. Instants are written as local wall
//! times in the calendar's zone, or as RFC 3339 with an explicit offset where DST matters.

use super::config::CalendarSpec;
use super::*;
use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZoneDatabase;
use proptest::prelude::*;
use std::sync::LazyLock;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

fn cal(spec: &str) -> Calendar {
    let spec: CalendarSpec = toml::from_str(spec).expect("calendar spec parses");
    spec.build("test").expect("calendar is valid")
}

/// China, 2026 (subset of the State Council schedule): New Year off Jan 1–2 with Sunday
/// Jan 4 worked; Spring Festival Feb 15–23 with Saturdays Feb 14 and Feb 28 worked.
const CN: &str = r#"
zone = "Asia/Shanghai"
days = ["mon-fri"]
hours = ["09:00-18:00"]
holidays = ["2026-01-01", "2026-01-02"]
holiday_ranges = [{ name = "Spring Festival", from = "2026-02-15", to = "2026-02-23" }]
extra_workdays = ["2026-01-04", "2026-02-14", "2026-02-28"]
"#;

/// "2026-03-06 17:55" in `zone` as Unix ms.
fn local(zone: &str, text: &str) -> i64 {
    let dt: DateTime = text.parse().expect("local date-time");
    let tz = TimeZoneDatabase::bundled().get(zone).expect("zone");
    tz.to_ambiguous_timestamp(dt)
        .compatible()
        .expect("in range")
        .as_millisecond()
}

/// Unix ms as "2026-03-09 10:55" in `zone`.
fn show(zone: &str, ms: i64) -> String {
    let ts = Timestamp::from_millisecond(ms).expect("in range");
    let tz = TimeZoneDatabase::bundled().get(zone).expect("zone");
    tz.to_datetime(ts).strftime("%Y-%m-%d %H:%M").to_string()
}

/// "2026-03-29T10:00+02:00" as Unix ms.
fn instant(text: &str) -> i64 {
    text.parse::<Timestamp>()
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .as_millisecond()
}

#[test]
fn working_hours_deadlines() {
    let cn = cal(CN);
    let lunch = cal(r#"zone = "Asia/Shanghai"
        hours = ["09:00-12:00", "13:00-18:00"]"#);
    let sh = "Asia/Shanghai";
    // (calendar, start, covered, due, why)
    #[rustfmt::skip]
    let cases: &[(&Calendar, &str, i64, &str, &str)] = &[
        (&cn, "2026-03-06 17:55", 2 * HOUR, "2026-03-09 10:55", "the issue's L2 example: Friday 17:55, 2 h"),
        (&cn, "2026-03-10 10:00", 2 * HOUR, "2026-03-10 12:00", "inside hours"),
        (&cn, "2026-03-10 16:00", 2 * HOUR, "2026-03-10 18:00", "used up exactly at closing: due at closing"),
        (&cn, "2026-03-10 07:30", 30 * MIN, "2026-03-10 09:30", "before opening: clock starts at 09:00"),
        (&cn, "2026-03-10 19:00", 30 * MIN, "2026-03-11 09:30", "after closing: next morning"),
        (&cn, "2026-03-07 11:00", HOUR, "2026-03-09 10:00", "Saturday: Monday"),
        (&cn, "2026-03-07 11:00", 0, "2026-03-07 11:00", "zero: the start itself"),
        (&cn, "2026-01-01 10:00", HOUR, "2026-01-04 10:00", "on a holiday: next is the worked Sunday"),
        (&cn, "2026-01-04 17:00", 2 * HOUR, "2026-01-05 10:00", "on an extra working day (Sunday)"),
        (&cn, "2026-02-14 17:00", 3 * HOUR, "2026-02-24 11:00", "across the nine-day Spring Festival"),
        (&cn, "2026-02-13 17:00", 3 * HOUR, "2026-02-14 11:00", "into a worked Saturday"),
        (&cn, "2026-03-09 09:00", 45 * HOUR, "2026-03-13 18:00", "a working week"),
        (&cn, "2026-03-09 09:00", 100 * HOUR, "2026-03-24 10:00", "multi-week"),
        (&lunch, "2026-03-10 11:30", HOUR, "2026-03-10 13:30", "over the lunch break"),
        (&lunch, "2026-03-10 12:15", HOUR, "2026-03-10 14:00", "start in the lunch break"),
        (&lunch, "2026-03-06 17:00", 5 * HOUR, "2026-03-09 14:00", "two spans a day, over a weekend"),
    ];
    for &(calendar, start, covered, due, why) in cases {
        let s = local(sh, start);
        let got = calendar.deadline(s, covered);
        assert_eq!(show(sh, got), due, "{why}");
        let used = calendar.covered_between(s, got);
        assert_eq!(used, covered, "{why}: covered time back from the deadline");
    }
}

#[test]
fn covered_time_and_openness() {
    let cn = cal(CN);
    let sh = "Asia/Shanghai";
    #[rustfmt::skip]
    let cases = [
        ("2026-03-06 17:55", "2026-03-09 10:55", 2 * HOUR),
        ("2026-03-07 00:00", "2026-03-08 23:59", 0),
        ("2026-03-09 00:00", "2026-03-16 00:00", 45 * HOUR),
        ("2026-02-13 00:00", "2026-03-02 00:00", 9 * HOUR * 7),
        ("2026-03-10 12:00", "2026-03-10 11:00", 0),
    ];
    for (from, to, want) in cases {
        let got = cn.covered_between(local(sh, from), local(sh, to));
        assert_eq!(got, want, "{from} .. {to}");
    }
    assert!(cn.is_open(local(sh, "2026-03-10 09:00")));
    assert!(!cn.is_open(local(sh, "2026-03-10 18:00")));
    assert!(cn.is_open(local(sh, "2026-01-04 12:00")), "worked Sunday");
    assert!(
        !cn.is_open(local(sh, "2026-02-16 12:00")),
        "Spring Festival"
    );
    assert!(Calendar::always().is_open(0));
}

#[test]
fn dst_days() {
    let all_week = |zone: &str, hours: &str| {
        cal(&format!(
            "zone = \"{zone}\"\ndays = [\"mon-sun\"]\nhours = {hours}"
        ))
    };
    let always = Calendar::always();
    let berlin = all_week("Europe/Berlin", r#"["09:00-18:00"]"#);
    let new_york = all_week("America/New_York", r#"["09:00-18:00"]"#);
    let shanghai = all_week("Asia/Shanghai", r#"["09:00-18:00"]"#);
    // (calendar, start, covered, due, why); offsets show the DST change.
    #[rustfmt::skip]
    let cases: &[(&Calendar, &str, i64, &str, &str)] = &[
        // 24x7 counts real time: 4 h although the wall clock moves 5 h (or 3 h).
        (&always, "2026-03-28T23:00+01:00", 4 * HOUR, "2026-03-29T04:00+02:00", "Berlin spring forward, 24x7"),
        (&always, "2026-10-24T23:00+02:00", 4 * HOUR, "2026-10-25T02:00+01:00", "Berlin fall back, 24x7"),
        (&always, "2026-03-07T23:00-05:00", 4 * HOUR, "2026-03-08T04:00-04:00", "New York spring forward, 24x7"),
        (&always, "2026-10-31T23:00-04:00", 4 * HOUR, "2026-11-01T02:00-05:00", "New York fall back, 24x7"),
        // A 09:00-18:00 day is 9 covered hours on the change day too.
        (&berlin, "2026-03-29T09:00+02:00", 9 * HOUR, "2026-03-29T18:00+02:00", "Berlin spring-forward day"),
        (&berlin, "2026-10-25T09:00+01:00", 9 * HOUR, "2026-10-25T18:00+01:00", "Berlin fall-back day"),
        (&berlin, "2026-03-28T17:00+01:00", 2 * HOUR, "2026-03-29T10:00+02:00", "Berlin over spring forward"),
        (&berlin, "2026-10-24T17:00+02:00", 2 * HOUR, "2026-10-25T10:00+01:00", "Berlin over fall back"),
        (&new_york, "2026-03-07T17:00-05:00", 2 * HOUR, "2026-03-08T10:00-04:00", "New York over spring forward"),
        (&new_york, "2026-10-31T17:00-04:00", 2 * HOUR, "2026-11-01T10:00-05:00", "New York over fall back"),
        (&new_york, "2026-11-01T09:00-05:00", 9 * HOUR, "2026-11-01T18:00-05:00", "New York fall-back day"),
        (&shanghai, "2026-03-29T17:00+08:00", 2 * HOUR, "2026-03-30T10:00+08:00", "Shanghai has no DST"),
    ];
    for &(calendar, start, covered, due, why) in cases {
        let got = calendar.deadline(instant(start), covered);
        assert_eq!(got, instant(due), "{why}");
        assert_eq!(
            calendar.covered_between(instant(start), got),
            covered,
            "{why}"
        );
    }

    // A span that contains the change is as long as the clock really ran.
    // (zone, hours, day start, next day start, covered, why)
    #[rustfmt::skip]
    let spans = [
        ("Europe/Berlin", r#"["00:00-06:00"]"#, "2026-03-29T00:00+01:00", "2026-03-30T00:00+02:00", 5 * HOUR, "Berlin spring: an hour skipped"),
        ("Europe/Berlin", r#"["00:00-06:00"]"#, "2026-10-25T00:00+02:00", "2026-10-26T00:00+01:00", 7 * HOUR, "Berlin fall: an hour twice"),
        ("America/New_York", r#"["00:00-24:00"]"#, "2026-03-08T00:00-05:00", "2026-03-09T00:00-04:00", 23 * HOUR, "New York 23-hour day"),
        ("America/New_York", r#"["00:00-24:00"]"#, "2026-11-01T00:00-04:00", "2026-11-02T00:00-05:00", 25 * HOUR, "New York 25-hour day"),
        ("America/New_York", r#"["02:30-04:00"]"#, "2026-03-08T00:00-05:00", "2026-03-09T00:00-04:00", HOUR, "opens in the gap: at the jump, 03:00"),
        ("America/New_York", r#"["00:00-02:30"]"#, "2026-03-08T00:00-05:00", "2026-03-09T00:00-04:00", 2 * HOUR, "closes in the gap: at the jump"),
        ("America/New_York", r#"["02:15-02:45"]"#, "2026-03-08T00:00-05:00", "2026-03-09T00:00-04:00", 0, "wholly in the gap: never open"),
        ("America/New_York", r#"["01:30-03:00"]"#, "2026-11-01T00:00-04:00", "2026-11-02T00:00-05:00", 150 * MIN, "opens at the first 01:30"),
        ("America/New_York", r#"["00:00-01:30"]"#, "2026-11-01T00:00-04:00", "2026-11-02T00:00-05:00", 150 * MIN, "closes at the second 01:30"),
        ("America/Santiago", r#"["00:00-24:00"]"#, "2026-09-05T00:00-04:00", "2026-09-07T00:00-03:00", 47 * HOUR, "Santiago: midnight skipped, 24:00 at the jump"),
        ("America/Santiago", r#"["00:00-24:00"]"#, "2026-04-04T00:00-03:00", "2026-04-05T00:00-04:00", 25 * HOUR, "Santiago: 23:00-24:00 twice"),
        ("Asia/Shanghai", r#"["00:00-24:00"]"#, "2026-03-29T00:00+08:00", "2026-03-30T00:00+08:00", 24 * HOUR, "Shanghai: always 24 hours"),
    ];
    for (zone, hours, from, to, want, why) in spans {
        let c = all_week(zone, hours);
        assert_eq!(c.covered_between(instant(from), instant(to)), want, "{why}");
        let due = c.deadline(instant(from), want);
        assert_eq!(
            c.covered_between(instant(from), due),
            want,
            "{why}: deadline"
        );
    }
}

#[test]
fn clock_states() {
    let always = Calendar::always();
    let t = Target {
        within_ms: 10 * HOUR,
        at_risk_percent: 80,
    };
    let start = 1_000_000;
    // (now offset, stop offset, state, used, stopped)
    #[rustfmt::skip]
    let cases = [
        (0, None, SlaState::OnTime, 0, false),
        (8 * HOUR - 1, None, SlaState::OnTime, 8 * HOUR - 1, false),
        (8 * HOUR, None, SlaState::AtRisk, 8 * HOUR, false),
        (10 * HOUR, None, SlaState::AtRisk, 10 * HOUR, false),
        (10 * HOUR + 1, None, SlaState::Breached, 10 * HOUR + 1, false),
        (20 * HOUR, Some(9 * HOUR), SlaState::OnTime, 9 * HOUR, true),
        (20 * HOUR, Some(10 * HOUR), SlaState::OnTime, 10 * HOUR, true),
        (20 * HOUR, Some(11 * HOUR), SlaState::Breached, 11 * HOUR, true),
        (HOUR, Some(11 * HOUR), SlaState::OnTime, HOUR, false),
    ];
    for (now, stop, state, used, stopped) in cases {
        let c = always.clock(start, t, start + now, stop.map(|s| start + s));
        assert_eq!(
            (c.state, c.used_ms, c.stopped),
            (state, used, stopped),
            "now +{now}, stop {stop:?}"
        );
        assert_eq!(c.left_ms, 10 * HOUR - used);
        assert_eq!(
            (c.due, c.at_risk_from),
            (start + 10 * HOUR, start + 8 * HOUR)
        );
    }

    // On working hours: the Friday 17:55 L2, 2 h to respond, at risk after 96 min.
    let cn = cal(CN);
    let sh = "Asia/Shanghai";
    let raised = local(sh, "2026-03-06 17:55");
    let t = Target {
        within_ms: 2 * HOUR,
        at_risk_percent: 80,
    };
    #[rustfmt::skip]
    let cases = [
        ("2026-03-07 12:00", SlaState::OnTime, 5 * MIN),
        ("2026-03-09 10:30", SlaState::OnTime, 95 * MIN),
        ("2026-03-09 10:31", SlaState::AtRisk, 96 * MIN),
        ("2026-03-09 10:55", SlaState::AtRisk, 2 * HOUR),
        ("2026-03-09 10:56", SlaState::Breached, 121 * MIN),
    ];
    for (now, state, used) in cases {
        let c = cn.clock(raised, t, local(sh, now), None);
        assert_eq!((c.state, c.used_ms), (state, used), "{now}");
        assert_eq!(show(sh, c.due), "2026-03-09 10:55");
        assert_eq!(show(sh, c.at_risk_from), "2026-03-09 10:31");
    }

    // Due at closing on Friday: on Saturday it is breached with no covered time left over.
    let c = cn.clock(
        local(sh, "2026-03-06 17:00"),
        Target {
            within_ms: HOUR,
            at_risk_percent: 80,
        },
        local(sh, "2026-03-07 10:00"),
        None,
    );
    assert_eq!((c.state, c.left_ms), (SlaState::Breached, 0));
}

#[test]
fn finding_clocks_follow_the_contract() {
    let policy = SlaPolicy::parse(
        r#"
        default_contract = "standard"
        [customers]
        acme = "premium"
        [calendars.office]
        zone = "Asia/Shanghai"
        "#,
    )
    .unwrap();
    let sh = "Asia/Shanghai";
    let raised = local(sh, "2026-03-06 17:55");
    let times = FindingTimes {
        raised_at: raised,
        ..Default::default()
    };
    let now = local(sh, "2026-03-06 18:30");

    // Built-in standard on the redefined office calendar: L2 respond 2 h, restore 9 h.
    let s = policy.finding_sla("globex", Level::L2, times, now);
    assert_eq!(show(sh, s.respond.due), "2026-03-09 10:55");
    assert_eq!(show(sh, s.restore.due), "2026-03-09 17:55");
    assert_eq!(s.respond.state, SlaState::OnTime);

    // Premium is 24x7: L1 respond 15 min, restore 2 h.
    let s = policy.finding_sla("acme", Level::L1, times, now);
    assert_eq!(show(sh, s.respond.due), "2026-03-06 18:10");
    assert_eq!(show(sh, s.restore.due), "2026-03-06 19:55");
    assert_eq!(
        (s.respond.state, s.restore.state),
        (SlaState::Breached, SlaState::OnTime)
    );

    // Acknowledged in time stops the respond clock only; resolving stops both.
    let acked = FindingTimes {
        acknowledged_at: Some(raised + 10 * MIN),
        ..times
    };
    let s = policy.finding_sla("acme", Level::L1, acked, now);
    assert_eq!(
        (s.respond.state, s.respond.stopped),
        (SlaState::OnTime, true)
    );
    assert!(!s.restore.stopped);
    let resolved = FindingTimes {
        resolved_at: Some(raised + 12 * MIN),
        ..times
    };
    let s = policy.finding_sla("acme", Level::L1, resolved, now + 10 * HOUR);
    assert_eq!(
        (s.respond.state, s.respond.stopped),
        (SlaState::OnTime, true)
    );
    assert_eq!(
        (s.restore.state, s.restore.used_ms),
        (SlaState::OnTime, 12 * MIN)
    );
    assert_eq!(policy.contract_for("nobody").name, "standard");
}

#[test]
fn maintenance_windows_stop_the_clocks() {
    let always = Calendar::always();
    let t = 1_772_409_600_000; // 2026-03-02 00:00 UTC, a Monday
    // 60 minutes on 24x7 with a window from +10 to +40: due at +90, 20 used at +50.
    let pauses = merge_pauses(vec![
        (t + 25 * MIN, t + 40 * MIN),
        (t + 10 * MIN, t + 30 * MIN),
    ]);
    assert_eq!(pauses, [(t + 10 * MIN, t + 40 * MIN)], "merged");
    assert_eq!(always.deadline_outside(t, 60 * MIN, &pauses), t + 90 * MIN);
    assert_eq!(always.covered_outside(t, t + 50 * MIN, &pauses), 20 * MIN);
    // A window after the deadline changes nothing; one that the pushed deadline reaches does.
    let later = merge_pauses(vec![
        (t + 10 * MIN, t + 40 * MIN),
        (t + 80 * MIN, t + 100 * MIN),
    ]);
    assert_eq!(always.deadline_outside(t, 60 * MIN, &later), t + 110 * MIN);
    assert_eq!(
        always.deadline_outside(t, 60 * MIN, &[(t + 200 * MIN, t + 300 * MIN)]),
        t + 60 * MIN
    );
    // Working hours: a window outside them stops nothing.
    let office = cal("zone = \"UTC\"\n");
    let start = t + 17 * HOUR; // Monday 17:00
    let night = [(t + 20 * HOUR, t + 32 * HOUR)]; // Monday 20:00 to Tuesday 08:00
    assert_eq!(
        office.deadline_outside(start, 2 * HOUR, &night),
        office.deadline(start, 2 * HOUR)
    );
    // The clock at the policy level: at risk and breached come later by the window.
    let policy = SlaPolicy::default();
    let times = FindingTimes {
        raised_at: t,
        acknowledged_at: None,
        resolved_at: None,
    };
    let paused = policy.finding_sla_paused(
        "acme",
        Level::L1,
        times,
        t + 10 * MIN,
        &[(t + 9 * HOUR, t + 9 * HOUR + 30 * MIN)],
    );
    let plain = policy.finding_sla("acme", Level::L1, times, t + 10 * MIN);
    assert_eq!(paused.respond.due, plain.respond.due + 30 * MIN);
}

#[test]
fn builtin_policy() {
    let p = SlaPolicy::default();
    assert_eq!(p.at_risk_percent(), 80);
    let names: Vec<_> = p.contracts().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["premium", "standard"]);
    let l1 = p.contract("premium").unwrap().terms(Level::L1);
    assert_eq!(
        (l1.respond_within_ms, l1.restore_within_ms),
        (15 * MIN, 2 * HOUR)
    );
    assert!(l1.calendar().is_24x7());
    let l2 = p.contract_for("anyone").terms(Level::L2);
    assert_eq!(
        (l2.respond_within_ms, l2.calendar_name.as_str()),
        (2 * HOUR, "office")
    );
}

#[test]
fn example_file_is_valid() {
    let text = include_str!("../../../config/sla.toml");
    let p = SlaPolicy::parse(text).unwrap_or_else(|e| panic!("config/sla.toml: {e}"));
    let gold = p.contract("gold").expect("the example has a gold contract");
    assert!(gold.terms(Level::L1).calendar().is_24x7());
    // The example's China calendar: Friday 17:55 + 2 h is Monday 10:55.
    let l2 = p.contract("standard").unwrap().terms(Level::L2);
    let sh = "Asia/Shanghai";
    let due = l2
        .calendar()
        .deadline(local(sh, "2026-03-06 17:55"), l2.respond_within_ms);
    assert_eq!(show(sh, due), "2026-03-09 10:55");
    // Spring Festival 2026 is off; Saturday Feb 28 is worked.
    let due = l2
        .calendar()
        .deadline(local(sh, "2026-02-13 17:00"), 3 * HOUR);
    assert_eq!(show(sh, due), "2026-02-14 11:00");
    let due = l2
        .calendar()
        .deadline(local(sh, "2026-02-14 17:00"), 3 * HOUR);
    assert_eq!(show(sh, due), "2026-02-24 11:00");
}

#[test]
fn config_errors_name_the_key() {
    let levels = r#"
        L1 = { respond_within = "15m", restore_within = "2h" }
        L2 = { respond_within = "30m", restore_within = "4h" }
        L3 = { respond_within = "2h", restore_within = "1d" }
        L4 = { respond_within = "4h", restore_within = "3d" }
    "#;
    let gold = |calendar: &str, l2: &str| {
        let levels = levels.replace(
            r#"L2 = { respond_within = "30m", restore_within = "4h" }"#,
            l2,
        );
        format!("[contracts.gold]\ncalendar = \"{calendar}\"\n{levels}")
    };
    let cn = |extra: &str| format!("[calendars.cn]\nzone = \"Asia/Shanghai\"\n{extra}\n");
    #[rustfmt::skip]
    let cases = [
        (gold("24x7", r#"L2 = { respond_within = "2x", restore_within = "4h" }"#), r#"contract 'gold': level L2: respond_within "2x" is not a duration (use 15m, 2h, 1d)"#),
        (gold("24x7", r#"L2 = { respond_within = "0s", restore_within = "4h" }"#), r#"contract 'gold': level L2: respond_within "0s" is out of range"#),
        (gold("24x7", r#"L2 = { respond_within = "5h", restore_within = "4h" }"#), r#"contract 'gold': level L2: respond_within "5h" is longer than restore_within "4h""#),
        (gold("24x7", r#"L2 = { respond_within = "1h", restore_within = "4h", calendar = "moon" }"#), "contract 'gold': level L2: calendar 'moon' is not a calendar (known: 24x7, office)"),
        (gold("24x7", ""), "contract 'gold': level L2 is missing"),
        (gold("moon", ""), "contract 'gold': calendar 'moon' is not a calendar"),
        (gold("24x7", r#"L2 = { respnd_within = "1h", restore_within = "4h" }"#), "unknown field `respnd_within`"),
        ("[calendars.cn]\nzone = \"Asia/Shangai\"\n".into(), "calendar 'cn': zone \"Asia/Shangai\" is not an IANA time zone"),
        ("[calendars.cn]\ndays = [\"mon\"]\n".into(), "missing field `zone`"),
        (cn("days = [\"mon-fry\"]"), "calendar 'cn': days: \"mon-fry\" is not a day or a range of days"),
        (cn("days = [\"fri-mon\"]"), "calendar 'cn': days: \"fri-mon\""),
        (cn("days = []"), "calendar 'cn': days is empty"),
        (cn("hours = [\"18:00-09:00\"]"), "calendar 'cn': hours: \"18:00-09:00\" ends before it starts"),
        (cn("hours = [\"9-18\"]"), "calendar 'cn': hours: \"9-18\" is not a span"),
        (cn("hours = [\"09:00-24:30\"]"), "calendar 'cn': hours: \"09:00-24:30\" is not a span"),
        (cn("hours = [\"09:00-13:00\", \"12:00-18:00\"]"), "calendar 'cn': hours: \"12:00-18:00\" overlaps \"09:00-13:00\""),
        (cn("holidays = [\"2026-02-30\"]"), "calendar 'cn': holidays: \"2026-02-30\" is not a date (use YYYY-MM-DD)"),
        (cn("holiday_ranges = [{ name = \"Golden Week\", from = \"2026-10-07\", to = \"2026-10-01\" }]"), "calendar 'cn': holiday range 'Golden Week': from 2026-10-07 to 2026-10-01 must be a range"),
        (cn("holiday_ranges = [{ name = \"Golden Week\", from = \"2026-10-01\", to = \"2026-10-xx\" }]"), "calendar 'cn': holiday range 'Golden Week': to: \"2026-10-xx\" is not a date"),
        (cn("holidays = [\"2026-02-14\"]\nextra_workdays = [\"2026-02-14\"]"), "calendar 'cn': extra_workdays: 2026-02-14 is also a holiday"),
        ("[calendars.\"24x7\"]\nzone = \"UTC\"\n".into(), "calendar '24x7': is built in"),
        ("default_contract = \"gld\"\n".into(), "default_contract: 'gld' is not a contract (known: premium, standard)"),
        ("[customers]\nacme = \"gld\"\n".into(), "customers: 'acme': 'gld' is not a contract"),
        ("at_risk_percent = 0\n".into(), "at_risk_percent: 0 is out of range: use 1 to 100"),
        ("at_risk_percent = 300\n".into(), "at_risk_percent"),
        ("contracts = 3\n".into(), "contracts"),
    ];
    for (text, want) in cases {
        let err = SlaPolicy::parse(&text).expect_err(&text).to_string();
        assert!(err.contains(want), "{text}\nwant: {want}\ngot:  {err}");
    }
}

/// Calendars for the property test: 24x7, China with holidays, and calendars whose spans
/// contain DST changes (Santiago's happen at midnight).
static CALENDARS: LazyLock<Vec<Calendar>> = LazyLock::new(|| {
    vec![
        Calendar::always(),
        cal(CN),
        cal(r#"zone = "Europe/Berlin"
            days = ["mon-sun"]
            hours = ["00:00-06:00", "09:00-18:00"]"#),
        cal(r#"zone = "America/New_York"
            days = ["mon", "wed-sun"]
            hours = ["01:30-02:30", "09:00-12:00", "13:00-17:30", "22:00-24:00"]"#),
        cal(r#"zone = "America/Santiago"
            days = ["mon-sun"]
            hours = ["00:00-08:00", "20:00-24:00"]"#),
    ]
});

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The deadline uses up exactly the covered time, and no earlier instant does.
    #[test]
    fn paused_elapsed_inverts_paused_deadline(
        start in 0i64..(400 * 24 * HOUR),
        d in 1i64..(30 * HOUR),
        p1 in 0i64..(60 * HOUR), l1 in 0i64..(10 * HOUR),
        p2 in 0i64..(60 * HOUR), l2 in 0i64..(10 * HOUR),
    ) {
        let base = 1_767_225_600_000; // 2026-01-01
        let c = cal(CN);
        let s0 = base + start;
        let pauses = merge_pauses(vec![(s0 + p1, s0 + p1 + l1), (s0 + p2, s0 + p2 + l2)]);
        let due = c.deadline_outside(s0, d, &pauses);
        prop_assert_eq!(c.covered_outside(s0, due, &pauses), d);
    }

    #[test]
    fn elapsed_inverts_deadline(
        which in 0usize..5,
        // 2025-06 .. 2027-06, over several DST changes and the 2026 holidays; whole
        // hours and minutes often, to land on span edges.
        start in prop_oneof![
            1_748_736_000_000i64..1_811_808_000_000,
            (1_748_736i64..1_811_808).prop_map(|s| s * 1_000_000 / HOUR * HOUR),
        ],
        covered in prop_oneof![
            Just(0i64),
            1i64..200 * HOUR,
            (1i64..200).prop_map(|h| h * HOUR),
            (1i64..12_000).prop_map(|m| m * MIN),
        ],
    ) {
        let c = &CALENDARS[which];
        let due = c.deadline(start, covered);
        prop_assert!(due >= start);
        prop_assert_eq!(c.covered_between(start, due), covered);
        if covered > 0 {
            prop_assert_eq!(c.covered_between(start, due - 1), covered - 1);
            prop_assert!(c.is_open(due - 1));
        } else {
            prop_assert_eq!(due, start);
        }
    }
}

#[test]
fn contracts_assigned_over_the_api_take_precedence_over_the_file() {
    let mut p = SlaPolicy::parse("[customers]\nacme = \"premium\"\n").unwrap();
    assert_eq!(
        (
            p.contract_for("acme").name.as_str(),
            p.contract_source("acme")
        ),
        ("premium", "sla.toml")
    );
    assert_eq!(p.contract_source("globex"), "default");
    let default = p.contract_for("globex").name.clone();
    let unknown = p.set_assigned([
        ("acme".to_string(), "standard".to_string()),
        ("globex".to_string(), "gold".to_string()),
        ("initech".to_string(), "premium".to_string()),
    ]);
    assert_eq!(unknown, [("globex".to_string(), "gold".to_string())]);
    assert_eq!(
        (
            p.contract_for("acme").name.as_str(),
            p.contract_source("acme")
        ),
        ("standard", "api")
    );
    // An unknown name falls back to the file's choice.
    assert_eq!(
        (
            p.contract_for("globex").name.as_str(),
            p.contract_source("globex")
        ),
        (default.as_str(), "default")
    );
    assert_eq!(p.contract_for("initech").name, "premium");
    // Applying again replaces what was applied before.
    p.set_assigned([]);
    assert_eq!(p.contract_source("acme"), "sla.toml");
    assert_eq!(p.contract_for("acme").name, "premium");
}

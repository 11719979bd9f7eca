//! `sla.toml`: contracts, their calendars, and which customer has which. Parsed into plain
//! serde structs first (unknown keys refused), then checked and compiled into an
//! [`SlaPolicy`], so that every error names the contract, level or calendar and the key.
//!
//! The built-in policy (below, and the defaults in `config/sla.toml`) is always there: a file
//! adds calendars and contracts, and replaces a built-in one by using its name.

use super::calendar::{Calendar, DAY_MINUTES, WorkingHours};
use super::{Contract, Level, SlaPolicy, Terms};
use jiff::civil::Date;
use jiff::tz::TimeZoneDatabase;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The name of the built-in round-the-clock calendar.
pub const ALWAYS: &str = "24x7";

/// Longest target and longest holiday range: bounds the work of one deadline.
const MAX_DAYS: i64 = 366;

/// The built-in policy. Targets from DESIGN.md's examples (L1 respond 15 min, restore 2 h,
/// 7x24; general problems respond in 2–4 h); on working hours a target counts covered time,
/// so 9h is one 09:00–18:00 day and 45h a working week.
const BUILTIN: &str = r#"
default_contract = "standard"
at_risk_percent = 80

[calendars.office]
zone = "UTC"
days = ["mon-fri"]
hours = ["09:00-18:00"]

[contracts.premium]
calendar = "24x7"
L1 = { respond_within = "15m", restore_within = "2h" }
L2 = { respond_within = "30m", restore_within = "8h" }
L3 = { respond_within = "2h", restore_within = "24h" }
L4 = { respond_within = "4h", restore_within = "72h" }

[contracts.standard]
calendar = "office"
L1 = { respond_within = "30m", restore_within = "4h" }
L2 = { respond_within = "2h", restore_within = "9h" }
L3 = { respond_within = "4h", restore_within = "18h" }
L4 = { respond_within = "9h", restore_within = "45h" }
"#;

#[derive(Debug, thiserror::Error)]
pub enum SlaError {
    /// Not TOML, an unknown key, or a value of the wrong type; the message has the line.
    #[error(transparent)]
    Parse(#[from] toml::de::Error),
    #[error("{at}: {problem}")]
    Invalid { at: String, problem: String },
}

fn invalid(at: impl Into<String>, problem: impl Into<String>) -> SlaError {
    SlaError::Invalid {
        at: at.into(),
        problem: problem.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlaFile {
    /// The contract of customers not listed in `customers`.
    default_contract: Option<String>,
    /// A running clock is at risk once this share of its covered time is used.
    at_risk_percent: Option<u8>,
    /// Customer name (as in its agents' certificates) to contract name.
    #[serde(default)]
    customers: BTreeMap<String, String>,
    #[serde(default)]
    calendars: BTreeMap<String, CalendarSpec>,
    #[serde(default)]
    contracts: BTreeMap<String, ContractSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CalendarSpec {
    /// IANA time zone; required, since working hours mean nothing without one.
    zone: String,
    #[serde(default = "default_days")]
    days: Vec<String>,
    #[serde(default = "default_hours")]
    hours: Vec<String>,
    #[serde(default)]
    holidays: Vec<String>,
    #[serde(default)]
    holiday_ranges: Vec<HolidayRange>,
    /// Make-up working days on what would be a day off.
    #[serde(default)]
    extra_workdays: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HolidayRange {
    name: String,
    from: String,
    /// Inclusive.
    to: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContractSpec {
    calendar: String,
    #[serde(rename = "L1")]
    l1: Option<LevelSpec>,
    #[serde(rename = "L2")]
    l2: Option<LevelSpec>,
    #[serde(rename = "L3")]
    l3: Option<LevelSpec>,
    #[serde(rename = "L4")]
    l4: Option<LevelSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LevelSpec {
    respond_within: String,
    restore_within: String,
    /// Overrides the contract's calendar for this level (e.g. L1 around the clock).
    calendar: Option<String>,
}

fn default_days() -> Vec<String> {
    vec!["mon-fri".into()]
}
fn default_hours() -> Vec<String> {
    vec!["09:00-18:00".into()]
}

impl Default for SlaPolicy {
    /// The built-in policy: `premium` (24x7) and `standard` (09:00–18:00 UTC, Mon–Fri).
    fn default() -> Self {
        SlaPolicy::parse("").expect("the built-in policy is valid")
    }
}

impl SlaPolicy {
    /// Parse and check `sla.toml`, on top of the built-in policy.
    pub fn parse(text: &str) -> Result<SlaPolicy, SlaError> {
        let builtin: SlaFile = toml::from_str(BUILTIN).expect("the built-in policy parses");
        let file: SlaFile = toml::from_str(text)?;
        let mut specs = builtin.calendars;
        if file.calendars.contains_key(ALWAYS) {
            return Err(invalid(
                format!("calendar '{ALWAYS}'"),
                "is built in (real elapsed time) and cannot be redefined",
            ));
        }
        specs.extend(file.calendars);
        let mut calendars = BTreeMap::from([(ALWAYS.to_owned(), Arc::new(Calendar::always()))]);
        for (name, spec) in &specs {
            let at = format!("calendar '{name}'");
            calendars.insert(name.clone(), Arc::new(spec.build(&at)?));
        }

        let mut contract_specs = builtin.contracts;
        contract_specs.extend(file.contracts);
        let mut contracts = BTreeMap::new();
        for (name, spec) in &contract_specs {
            contracts.insert(name.clone(), spec.build(name, &calendars)?);
        }
        let known = || contracts.keys().cloned().collect::<Vec<_>>().join(", ");

        let default_contract = file
            .default_contract
            .or(builtin.default_contract)
            .expect("the built-in policy names a default");
        if !contracts.contains_key(&default_contract) {
            return Err(invalid(
                "default_contract",
                format!(
                    "'{default_contract}' is not a contract (known: {})",
                    known()
                ),
            ));
        }
        for (customer, contract) in &file.customers {
            if !contracts.contains_key(contract) {
                return Err(invalid(
                    format!("customers: '{customer}'"),
                    format!("'{contract}' is not a contract (known: {})", known()),
                ));
            }
        }
        let at_risk_percent = file
            .at_risk_percent
            .or(builtin.at_risk_percent)
            .expect("the built-in policy sets at_risk_percent");
        if !(1..=100).contains(&at_risk_percent) {
            return Err(invalid(
                "at_risk_percent",
                format!("{at_risk_percent} is out of range: use 1 to 100"),
            ));
        }
        Ok(SlaPolicy {
            contracts,
            customers: file.customers,
            assigned: BTreeMap::new(),
            default_contract,
            at_risk_percent,
        })
    }
}

impl ContractSpec {
    fn build(
        &self,
        name: &str,
        calendars: &BTreeMap<String, Arc<Calendar>>,
    ) -> Result<Contract, SlaError> {
        let at = format!("contract '{name}'");
        let lookup = |cal: &str, at: &str| {
            calendars.get(cal).cloned().ok_or_else(|| {
                let known = calendars.keys().cloned().collect::<Vec<_>>().join(", ");
                invalid(
                    at,
                    format!("calendar '{cal}' is not a calendar (known: {known})"),
                )
            })
        };
        lookup(&self.calendar, &at)?;
        let specs = [&self.l1, &self.l2, &self.l3, &self.l4];
        let mut levels = Vec::with_capacity(4);
        for (level, spec) in Level::ALL.into_iter().zip(specs) {
            let Some(spec) = spec else {
                return Err(invalid(
                    at,
                    format!("level {level} is missing (a contract sets L1, L2, L3 and L4)"),
                ));
            };
            let at = format!("{at}: level {level}");
            let respond_within_ms = duration_ms("respond_within", &spec.respond_within, &at)?;
            let restore_within_ms = duration_ms("restore_within", &spec.restore_within, &at)?;
            if respond_within_ms > restore_within_ms {
                return Err(invalid(
                    at,
                    format!(
                        "respond_within \"{}\" is longer than restore_within \"{}\"",
                        spec.respond_within, spec.restore_within
                    ),
                ));
            }
            let calendar_name = spec
                .calendar
                .clone()
                .unwrap_or_else(|| self.calendar.clone());
            let calendar = lookup(&calendar_name, &at)?;
            levels.push(Terms {
                respond_within_ms,
                restore_within_ms,
                calendar_name,
                calendar,
            });
        }
        Ok(Contract {
            name: name.to_owned(),
            levels: levels.try_into().expect("four levels"),
        })
    }
}

/// "15m", "2h", "1d", "1h30m" in milliseconds: more than zero, at most a year.
fn duration_ms(key: &str, text: &str, at: &str) -> Result<i64, SlaError> {
    let d = humantime::parse_duration(text).map_err(|_| {
        invalid(
            at,
            format!("{key} \"{text}\" is not a duration (use 15m, 2h, 1d)"),
        )
    })?;
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    if ms <= 0 || ms > MAX_DAYS * 86_400_000 {
        return Err(invalid(
            at,
            format!("{key} \"{text}\" is out of range: use more than 0 and at most {MAX_DAYS}d"),
        ));
    }
    Ok(ms)
}

impl CalendarSpec {
    pub(super) fn build(&self, at: &str) -> Result<Calendar, SlaError> {
        let zone = TimeZoneDatabase::bundled().get(&self.zone).map_err(|_| {
            invalid(
                at,
                format!(
                    "zone \"{}\" is not an IANA time zone (e.g. Asia/Shanghai, Europe/Berlin, UTC)",
                    self.zone
                ),
            )
        })?;

        let mut weekdays = [false; 7];
        for text in &self.days {
            let (a, b) = day_range(text).ok_or_else(|| {
                invalid(
                    at,
                    format!("days: \"{text}\" is not a day or a range of days (use mon..sun, e.g. \"mon-fri\")"),
                )
            })?;
            weekdays[a..=b].fill(true);
        }
        if !weekdays.contains(&true) {
            return Err(invalid(at, "days is empty: name at least one working day"));
        }

        let mut spans = Vec::with_capacity(self.hours.len());
        for text in &self.hours {
            spans.push(
                span(text)
                    .map_err(|problem| invalid(at, format!("hours: \"{text}\" {problem}")))?,
            );
        }
        if spans.is_empty() {
            return Err(invalid(
                at,
                "hours is empty: give at least one span, e.g. \"09:00-18:00\"",
            ));
        }
        spans.sort_unstable();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(invalid(
                    at,
                    format!("hours: \"{}\" overlaps \"{}\"", clock(w[1]), clock(w[0])),
                ));
            }
        }

        let mut holidays = BTreeSet::new();
        for text in &self.holidays {
            holidays.insert(date("holidays", text, at)?);
        }
        for range in &self.holiday_ranges {
            let at = format!("{at}: holiday range '{}'", range.name);
            let (from, to) = (date("from", &range.from, &at)?, date("to", &range.to, &at)?);
            let days = (to - from).get_days();
            if !(0..MAX_DAYS).contains(&i64::from(days)) {
                return Err(invalid(
                    at,
                    format!("from {from} to {to} must be a range of 1 to {MAX_DAYS} days"),
                ));
            }
            let mut d = from;
            while d <= to {
                holidays.insert(d);
                d = d.tomorrow().expect("a date before `to`");
            }
        }
        let mut extra_workdays = BTreeSet::new();
        for text in &self.extra_workdays {
            let d = date("extra_workdays", text, at)?;
            if holidays.contains(&d) {
                return Err(invalid(
                    at,
                    format!("extra_workdays: {d} is also a holiday"),
                ));
            }
            extra_workdays.insert(d);
        }
        Ok(Calendar::working_hours(WorkingHours {
            zone,
            weekdays,
            spans,
            holidays,
            extra_workdays,
        }))
    }
}

/// "mon" or "mon-fri" (any prefix of a day's English name from three letters on: "tues",
/// "thursday"), as Monday-based indices.
fn day_range(text: &str) -> Option<(usize, usize)> {
    const DAYS: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let day = |s: &str| {
        let s = s.trim().to_ascii_lowercase();
        DAYS.iter().position(|d| s.len() >= 3 && d.starts_with(&s))
    };
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (day(a)?, day(b)?);
            (a <= b).then_some((a, b))
        }
        None => day(text).map(|d| (d, d)),
    }
}

/// "09:00-18:00" as minutes after midnight; the end may be 24:00.
fn span(text: &str) -> Result<(u16, u16), String> {
    let form = "is not a span (use e.g. \"09:00-18:00\")";
    let (a, b) = text.split_once(['-', '–']).ok_or_else(|| form.to_owned())?;
    let (a, b) = (minute(a).ok_or(form)?, minute(b).ok_or(form)?);
    if a >= DAY_MINUTES {
        return Err(form.into());
    }
    if b <= a {
        return Err("ends before it starts (split a span over midnight, e.g. \"22:00-24:00\" and \"00:00-06:00\")".into());
    }
    Ok((a, b))
}

fn minute(text: &str) -> Option<u16> {
    let (h, m) = text.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    let total = h * 60 + m;
    (m < 60 && total <= DAY_MINUTES).then_some(total)
}

fn clock((a, b): (u16, u16)) -> String {
    format!("{:02}:{:02}-{:02}:{:02}", a / 60, a % 60, b / 60, b % 60)
}

fn date(key: &str, text: &str, at: &str) -> Result<Date, SlaError> {
    let bad = || {
        invalid(
            at,
            format!("{key}: \"{text}\" is not a date (use YYYY-MM-DD)"),
        )
    };
    if text.len() != 10 {
        return Err(bad());
    }
    text.parse::<Date>().map_err(|_| bad())
}

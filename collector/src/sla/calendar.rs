//! Coverage calendars: when a contract's clock runs, and how much covered time lies between
//! two instants.
//!
//! Covered time is real elapsed time while the calendar is open. A working-hours calendar
//! is open while the wall clock in its zone reads inside one of its spans on a working day,
//! so a 09:00–18:00 day is 9 hours even on a DST-change day (the change happens at night),
//! and a span that contains the change is as long as the clock really ran (00:00–06:00 is
//! 5 hours on a spring-forward day). Wall times that do not exist (a spring-forward gap) open
//! or close a span at the transition; wall times that occur twice open a span at the first
//! occurrence and close it at the second.
//!
//! Everything is computed day by day over the open spans: no minute stepping, so thousands
//! of deadlines per second cost little.

use aftercare_shared::model::UnixMillis;
use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};
use std::collections::BTreeSet;

/// Minutes in a day; a span may end at 24:00.
pub(crate) const DAY_MINUTES: u16 = 24 * 60;

/// When a clock runs: around the clock, or in working hours.
#[derive(Debug, Clone)]
pub struct Calendar {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Always,
    Hours(Box<WorkingHours>),
}

/// Working hours in one time zone: weekdays and spans, less holidays, plus extra working
/// days (make-up days on a weekend).
#[derive(Debug, Clone)]
pub(crate) struct WorkingHours {
    pub(crate) zone: TimeZone,
    /// Monday first.
    pub(crate) weekdays: [bool; 7],
    /// Local wall-clock spans in minutes after midnight: sorted, disjoint, `start < end`.
    pub(crate) spans: Vec<(u16, u16)>,
    pub(crate) holidays: BTreeSet<Date>,
    pub(crate) extra_workdays: BTreeSet<Date>,
}

impl Calendar {
    /// 24x7: covered time is real elapsed time.
    pub fn always() -> Calendar {
        Calendar { kind: Kind::Always }
    }

    pub(crate) fn working_hours(hours: WorkingHours) -> Calendar {
        Calendar {
            kind: Kind::Hours(Box::new(hours)),
        }
    }

    pub fn is_24x7(&self) -> bool {
        matches!(self.kind, Kind::Always)
    }

    /// The instant at which `covered_ms` of covered time, counted from `start`, is used up:
    /// the earliest `t >= start` with `covered_between(start, t) == covered_ms`. A start
    /// outside hours begins counting at the next opening; zero (or less) is `start` itself.
    /// Saturates at `UnixMillis::MAX` past the end of what the time zone library can
    /// represent (year 9999).
    pub fn deadline(&self, start: UnixMillis, covered_ms: i64) -> UnixMillis {
        if covered_ms <= 0 {
            return start;
        }
        match &self.kind {
            Kind::Always => start.saturating_add(covered_ms),
            Kind::Hours(h) => h.deadline(start, covered_ms),
        }
    }

    /// Covered time in `[from, to)`, in milliseconds; 0 when `to <= from`.
    pub fn covered_between(&self, from: UnixMillis, to: UnixMillis) -> i64 {
        if to <= from {
            return 0;
        }
        match &self.kind {
            Kind::Always => to.saturating_sub(from),
            Kind::Hours(h) => h.covered_between(from, to),
        }
    }

    /// Covered time in `[from, to)` outside `pauses` (sorted, not overlapping: see
    /// [`merge_pauses`]), as when maintenance windows stop a clock.
    pub fn covered_outside(&self, from: UnixMillis, to: UnixMillis, pauses: &[Pause]) -> i64 {
        let paused: i64 = pauses
            .iter()
            .map(|&(a, b)| self.covered_between(a.max(from), b.min(to)))
            .sum();
        self.covered_between(from, to) - paused
    }

    /// As [`Calendar::deadline`], with the clock stopped during `pauses` (sorted, merged):
    /// covered time is spent between the pauses, in order.
    pub fn deadline_outside(
        &self,
        start: UnixMillis,
        covered_ms: i64,
        pauses: &[Pause],
    ) -> UnixMillis {
        if covered_ms <= 0 {
            return start;
        }
        let (mut cursor, mut left) = (start, covered_ms);
        for &(a, b) in pauses {
            if b <= cursor {
                continue;
            }
            let open = self.covered_between(cursor, a);
            if open >= left {
                return self.deadline(cursor, left);
            }
            left -= open;
            cursor = cursor.max(b);
        }
        self.deadline(cursor, left)
    }

    /// Whether the clock runs at `at`.
    pub fn is_open(&self, at: UnixMillis) -> bool {
        self.covered_between(at, at.saturating_add(1)) == 1
    }
}

impl WorkingHours {
    fn is_workday(&self, day: Date) -> bool {
        if self.extra_workdays.contains(&day) {
            return true;
        }
        !self.holidays.contains(&day)
            && self.weekdays[day.weekday().to_monday_zero_offset() as usize]
    }

    /// The local date at `at` (clamped to the library's range, years -9999 to 9999).
    fn local_date(&self, at: UnixMillis) -> Date {
        self.zone.to_datetime(timestamp(at)).date()
    }

    /// The first day whose spans can reach past `at`: the day before its local date, since
    /// where the clock falls back over midnight the previous day's 24:00 comes after `at`.
    fn first_day(&self, at: UnixMillis) -> Date {
        let day = self.local_date(at);
        day.yesterday().unwrap_or(day)
    }

    /// The spans of `day` in local minutes: none on a day off.
    fn spans_of(&self, day: Date) -> &[(u16, u16)] {
        if self.is_workday(day) {
            &self.spans
        } else {
            &[]
        }
    }

    /// A span of `day` as instants; `None` past the library's range.
    fn span_instants(&self, day: Date, (a, b): (u16, u16)) -> Option<(UnixMillis, UnixMillis)> {
        Some((self.instant(day, a, false)?, self.instant(day, b, true)?))
    }

    /// The instant the wall clock reads `minute` on `day` (24:00 is the next midnight).
    /// A span opens at the first occurrence of a repeated wall time and closes at the last;
    /// a wall time skipped by a gap maps to the transition, when the clock jumps past it.
    fn instant(&self, day: Date, minute: u16, closes: bool) -> Option<UnixMillis> {
        let dt: DateTime = if minute >= DAY_MINUTES {
            day.tomorrow().ok()?.at(0, 0, 0, 0)
        } else {
            day.at((minute / 60) as i8, (minute % 60) as i8, 0, 0)
        };
        let ts = match self.zone.to_ambiguous_timestamp(dt).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).ok()?,
            AmbiguousOffset::Gap { after, .. } => {
                // Read with the later offset, the wall time lies just before the jump.
                let probe = after.to_timestamp(dt).ok()?;
                self.zone.following(probe).next()?.timestamp()
            }
            AmbiguousOffset::Fold { before, after } => {
                let offset = if closes { after } else { before };
                offset.to_timestamp(dt).ok()?
            }
        };
        Some(ts.as_millisecond())
    }

    fn deadline(&self, start: UnixMillis, mut left: i64) -> UnixMillis {
        let mut day = self.first_day(start);
        // Validation guarantees a working weekday and finitely many holidays, so this ends.
        loop {
            for &span in self.spans_of(day) {
                let Some((a, b)) = self.span_instants(day, span) else {
                    return UnixMillis::MAX;
                };
                // Empty inside a DST gap; over before `start` on its first day.
                if b <= a || b <= start {
                    continue;
                }
                let from = a.max(start);
                let available = b - from;
                if left <= available {
                    return from + left;
                }
                left -= available;
            }
            day = match day.tomorrow() {
                Ok(d) => d,
                Err(_) => return UnixMillis::MAX,
            };
        }
    }

    fn covered_between(&self, from: UnixMillis, to: UnixMillis) -> i64 {
        let (mut day, last) = (self.first_day(from), self.local_date(to));
        let mut total = 0i64;
        while day <= last {
            for &span in self.spans_of(day) {
                let Some((a, b)) = self.span_instants(day, span) else {
                    return total;
                };
                let (a, b) = (a.max(from), b.min(to));
                if a < b {
                    total += b - a;
                }
            }
            day = match day.tomorrow() {
                Ok(d) => d,
                Err(_) => break,
            };
        }
        total
    }
}

fn timestamp(at: UnixMillis) -> Timestamp {
    let (min, max) = (
        Timestamp::MIN.as_millisecond(),
        Timestamp::MAX.as_millisecond(),
    );
    Timestamp::from_millisecond(at.clamp(min, max)).expect("clamped to the supported range")
}

/// A span `[from, to)` during which clocks stop (a maintenance window).
pub type Pause = (UnixMillis, UnixMillis);

/// Pauses sorted and merged where they overlap or touch, empty ones dropped.
pub fn merge_pauses(mut pauses: Vec<Pause>) -> Vec<Pause> {
    pauses.retain(|p| p.0 < p.1);
    pauses.sort();
    let mut out: Vec<Pause> = Vec::with_capacity(pauses.len());
    for p in pauses {
        match out.last_mut() {
            Some(last) if p.0 <= last.1 => last.1 = last.1.max(p.1),
            _ => out.push(p),
        }
    }
    out
}

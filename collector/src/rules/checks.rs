//! What each kind of rule says about one host at one moment: per subject, a [`Verdict`]
//! (raise, hold, clear, or unknown) and the [`Detail`] its evidence is written from. No
//! state here: `for` durations and hysteresis memory live in `eval`.

use super::config::{
    Check, ClockSkew, ConsentExpiry, Direction, Forecast, Heartbeat, Line, LogPattern, LogSubject,
    Rule, RuleSet, SpoolDrops, Threshold,
};
use super::forecast::{self, Fit};
use super::input::{HostInfo, LossEvent, Observations, Series};
use super::{labels, series};
use crate::store::log_time;
use aftercare_shared::consent::Scope;
use aftercare_shared::model::{LogRecord, MetricKind, UnixMillis, labels as canonical};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// What a rule's condition says about one subject now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Not enough data to say: nothing changes.
    Unknown,
    /// The clear condition holds.
    Clear,
    /// Between the raise and the clear condition (hysteresis): a raised finding stays, a
    /// pending one is forgotten.
    Hold,
    /// The raise condition holds.
    Raise,
}

/// The facts behind a verdict, from which evidence is written when it is needed.
#[derive(Debug, Clone)]
pub enum Detail<'a> {
    Value {
        value: Option<f64>,
        kind: MetricKind,
    },
    Trend {
        fit: Option<Fit>,
        /// When the line reaches the limit (agent clock).
        reaches: Option<UnixMillis>,
    },
    Logs {
        count: u64,
        /// The earliest matching lines, sorted by time.
        lines: Vec<&'a LogRecord>,
    },
    Silent {
        last: Option<UnixMillis>,
        limit_ms: i64,
        consent_inactive: bool,
    },
    Drops {
        batches: u64,
        samples: u64,
    },
    Consent {
        until: Option<UnixMillis>,
        by: &'a str,
    },
    Skew {
        skew_ms: i64,
    },
    /// A subject the state knows that this evaluation did not see although the host sends.
    Gone,
}

/// A rule's verdicts for one host.
pub struct RuleResult<'a> {
    pub subjects: BTreeMap<String, (Verdict, Detail<'a>)>,
    /// Subjects known from before but not seen now: clear them, or hold them (the host is
    /// silent, or the data did not say).
    pub clear_absent: bool,
}

/// One host's data, read once for all rules.
pub struct Ctx<'o> {
    pub now: UnixMillis,
    /// `now` on the agent's clock.
    pub agent_now: UnixMillis,
    pub host: &'o HostInfo,
    /// By [`RuleSet::metrics`] position; `None` when it could not be read.
    metrics: Vec<Option<Vec<Series<'o>>>>,
    logs: Option<Cow<'o, [LogRecord]>>,
    losses: Option<Vec<LossEvent>>,
}

impl<'o> Ctx<'o> {
    pub fn fetch<O: Observations + ?Sized>(
        now: UnixMillis,
        rules: &RuleSet,
        host: &'o HostInfo,
        obs: &'o O,
        errors: &mut Vec<String>,
    ) -> Ctx<'o> {
        let agent_now = now.saturating_add(host.clock_skew_ms.unwrap_or(0));
        let mut note = |what: &str, e: &dyn std::fmt::Display| {
            errors.push(format!("{}: cannot read {what}: {e}", host.name));
        };
        let metrics = rules
            .metrics()
            .iter()
            .map(
                |(m, window)| match obs.series(&host.name, m, agent_now - window) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        note(m, &e);
                        None
                    }
                },
            )
            .collect();
        let logs = rules.logs_window().and_then(|w| {
            obs.logs(&host.name, agent_now - w)
                .map_err(|e| note("logs", &e))
                .ok()
        });
        let losses = rules.losses_window().and_then(|w| {
            obs.losses(&host.name, now - w)
                .map_err(|e| note("loss reports", &e))
                .ok()
        });
        Ctx {
            now,
            agent_now,
            host,
            metrics,
            logs,
            losses,
        }
    }

    /// Whether the host has sent anything within the window.
    fn fresh(&self, window_ms: i64) -> bool {
        self.host
            .last_seen
            .is_some_and(|t| t >= self.now - window_ms)
    }
}

/// The rule's verdicts, or `None` when the data it needs could not be read (or the host
/// lacks a fact it needs): then nothing about it changes.
pub fn check<'a>(rule: &Rule, ctx: &'a Ctx<'_>) -> Option<RuleResult<'a>> {
    match &rule.check {
        Check::Threshold(t) => threshold(t, ctx),
        Check::Forecast(f) => forecast(f, ctx),
        Check::LogPattern(l) => log_pattern(l, ctx),
        Check::Heartbeat(h) => Some(heartbeat(h, ctx)),
        Check::SpoolDrops(s) => spool_drops(s, ctx),
        Check::ConsentExpiry(c) => Some(consent_expiry(c, ctx)),
        Check::ClockSkew(c) => Some(clock_skew(c, ctx)),
    }
}

impl Line {
    pub fn verdict(&self, v: f64) -> Verdict {
        match *self {
            Line::Above { raise, .. } if v > raise => Verdict::Raise,
            Line::Above { clear, .. } if v <= clear => Verdict::Clear,
            Line::Below { raise, .. } if v < raise => Verdict::Raise,
            Line::Below { clear, .. } if v >= clear => Verdict::Clear,
            _ => Verdict::Hold,
        }
    }

    /// Larger is worse: how to pick one value when several series share a subject.
    fn badness(&self, v: f64) -> f64 {
        match self {
            Line::Above { .. } => v,
            Line::Below { .. } => -v,
        }
    }
}

/// Keep the worse of two candidates for one subject: the stronger verdict, then the larger
/// badness.
fn keep_worse<'a>(
    map: &mut BTreeMap<String, (Verdict, Detail<'a>, f64)>,
    subject: String,
    cand: (Verdict, Detail<'a>, f64),
) {
    match map.get_mut(&subject) {
        Some(cur) => {
            if (cand.0, cand.2) > (cur.0, cur.2) {
                *cur = cand;
            }
        }
        None => {
            map.insert(subject, cand);
        }
    }
}

fn strip<'a>(
    map: BTreeMap<String, (Verdict, Detail<'a>, f64)>,
) -> BTreeMap<String, (Verdict, Detail<'a>)> {
    map.into_iter().map(|(s, (v, d, _))| (s, (v, d))).collect()
}

/// The points a metric rule works on for one series: its values (a counter's rates), or
/// the percentage against the denominator series with the same labels.
fn derived<'s>(
    s: &'s Series<'_>,
    den: Option<&'s [Series<'_>]>,
    since: UnixMillis,
) -> Option<Cow<'s, [series::Point]>> {
    let pts = series::window(&s.points, since);
    match den {
        None => Some(Cow::Borrowed(pts)),
        Some(den) => {
            let d = den.iter().find(|d| d.labels == s.labels)?;
            let num = series::values(s.kind, pts);
            let den = series::values(d.kind, series::window(&d.points, since));
            Some(Cow::Owned(series::percent(&num, &den)))
        }
    }
}

/// What a selector reads: the metric's series, the `percent_of` series, the core count for
/// `per_core`; `None` when any of them is missing (the rule is held).
#[allow(clippy::type_complexity)]
fn selected<'a, 'o>(
    sel: &super::config::Selector,
    ctx: &'a Ctx<'o>,
) -> Option<(&'a [Series<'o>], Option<&'a [Series<'o>]>, Option<f64>)> {
    let all = ctx.metrics[sel.metric_ix].as_deref()?;
    let den = match sel.percent_ix {
        Some(i) => Some(ctx.metrics[i].as_deref()?),
        None => None,
    };
    let cores = match sel.per_core {
        true => Some(f64::from(ctx.host.cores.filter(|&c| c > 0)?)),
        false => None,
    };
    Some((all, den, cores))
}

fn threshold<'a>(t: &Threshold, ctx: &'a Ctx<'_>) -> Option<RuleResult<'a>> {
    let sel = &t.selector;
    let (all, den, cores) = selected(sel, ctx)?;
    let since = ctx.agent_now - t.window_ms;
    let mut subjects = BTreeMap::new();
    for s in all {
        let pts = series::window(&s.points, since);
        if pts.is_empty() {
            continue;
        }
        let pairs = labels::pairs(&s.labels);
        if !labels::selected(sel, &pairs) {
            continue;
        }
        let subject = labels::subject(sel, &s.labels, &pairs);
        let value = match derived(s, den, since) {
            Some(p) if den.is_some() => series::aggregate(t.aggregate, MetricKind::Gauge, &p),
            Some(p) => series::aggregate(t.aggregate, s.kind, &p),
            None => None,
        }
        .map(|v| cores.map_or(v, |c| v / c));
        let verdict = value.map_or(Verdict::Unknown, |v| t.line.verdict(v));
        let badness = value.map_or(f64::NEG_INFINITY, |v| t.line.badness(v));
        let detail = Detail::Value {
            value,
            kind: s.kind,
        };
        keep_worse(&mut subjects, subject, (verdict, detail, badness));
    }
    Some(RuleResult {
        subjects: strip(subjects),
        clear_absent: ctx.fresh(t.window_ms),
    })
}

fn forecast<'a>(f: &Forecast, ctx: &'a Ctx<'_>) -> Option<RuleResult<'a>> {
    let sel = &f.selector;
    let (all, den, cores) = selected(sel, ctx)?;
    let since = ctx.agent_now - f.window_ms;
    let mut subjects = BTreeMap::new();
    for s in all {
        if series::window(&s.points, since).is_empty() {
            continue;
        }
        let pairs = labels::pairs(&s.labels);
        if !labels::selected(sel, &pairs) {
            continue;
        }
        let subject = labels::subject(sel, &s.labels, &pairs);
        let values = match den {
            Some(_) => derived(s, den, since),
            None => Some(series::values(s.kind, series::window(&s.points, since))),
        };
        let fit = values.and_then(|p| match cores {
            Some(c) => forecast::fit(&p.iter().map(|&(t, v)| (t, v / c)).collect::<Vec<_>>()),
            None => forecast::fit(&p),
        });
        let (verdict, reaches) = trend_verdict(f, fit.as_ref(), ctx.agent_now);
        // Worse is sooner.
        let badness = reaches.map_or(f64::NEG_INFINITY, |t| -(t as f64));
        keep_worse(
            &mut subjects,
            subject,
            (verdict, Detail::Trend { fit, reaches }, badness),
        );
    }
    Some(RuleResult {
        subjects: strip(subjects),
        clear_absent: ctx.fresh(f.window_ms),
    })
}

/// The forecast's verdict and, when the line heads for the limit, when it reaches it.
pub fn trend_verdict(
    f: &Forecast,
    fit: Option<&Fit>,
    agent_now: UnixMillis,
) -> (Verdict, Option<UnixMillis>) {
    let Some(fit) = fit else {
        return (Verdict::Unknown, None);
    };
    if fit.points < f.min_points || fit.span_ms < f.window_ms / 2 {
        return (Verdict::Unknown, None);
    }
    let toward = match f.direction {
        Direction::Rising => fit.slope > 0.0,
        Direction::Falling => fit.slope < 0.0,
    };
    if !toward || fit.r2 < f.min_fit {
        return (Verdict::Clear, None);
    }
    let Some(t) = fit.reaches(f.limit) else {
        return (Verdict::Clear, None);
    };
    let left = t - agent_now;
    let verdict = if left <= f.horizon_ms {
        Verdict::Raise
    } else if left > f.clear_horizon_ms {
        Verdict::Clear
    } else {
        Verdict::Hold
    };
    (verdict, Some(t))
}

fn log_pattern<'a>(l: &LogPattern, ctx: &'a Ctx<'_>) -> Option<RuleResult<'a>> {
    let logs = ctx.logs.as_deref()?;
    let since = ctx.agent_now - l.window_ms;
    let mut groups: BTreeMap<String, (u64, Vec<&'a LogRecord>)> = BTreeMap::new();
    for r in logs {
        if log_time(r) < since
            || (!l.sources.is_empty() && !l.sources.contains(&r.source))
            || l.min_severity.is_some_and(|min| r.severity > min)
        {
            continue;
        }
        let subject = match (&l.pattern, &l.subject) {
            (Some(re), LogSubject::Group(g)) => {
                let Some(c) = re.captures(&r.line) else {
                    continue;
                };
                c.name(g)
                    .map(|m| canonical(&[(g.as_str(), m.as_str())]))
                    .unwrap_or_default()
            }
            (Some(re), _) if !re.is_match(&r.line) => continue,
            (_, LogSubject::Source) => canonical(&[("source", &r.source)]),
            (_, LogSubject::File) => canonical(&[("file", &r.file)]),
            _ => String::new(),
        };
        let (count, lines) = groups.entry(subject).or_default();
        *count += 1;
        keep_earliest(lines, r, l.lines);
    }
    let subjects = groups
        .into_iter()
        .map(|(s, (count, mut lines))| {
            lines.sort_by_key(|r| (log_time(r), r.offset));
            let verdict = if count > l.more_than {
                Verdict::Raise
            } else if count <= l.clear_at_most {
                Verdict::Clear
            } else {
                Verdict::Hold
            };
            (s, (verdict, Detail::Logs { count, lines }))
        })
        .collect();
    Some(RuleResult {
        subjects,
        clear_absent: ctx.fresh(l.window_ms),
    })
}

/// Keep the `n` earliest records (logs may come in any order).
fn keep_earliest<'a>(kept: &mut Vec<&'a LogRecord>, r: &'a LogRecord, n: usize) {
    if kept.len() < n {
        kept.push(r);
        return;
    }
    let key = |r: &LogRecord| (log_time(r), r.offset);
    if let Some((i, latest)) = kept.iter().enumerate().max_by_key(|(_, k)| key(k))
        && key(r) < key(latest)
    {
        kept[i] = r;
    }
}

fn heartbeat<'a>(h: &Heartbeat, ctx: &'a Ctx<'_>) -> RuleResult<'a> {
    let host = ctx.host;
    let limit_ms = (i64::from(h.intervals) * host.interval_ms as i64).max(h.at_least_ms);
    let (verdict, consent_inactive) = if !host.consent.allows(Scope::Metrics, ctx.now) {
        // The customer stopped the metrics: silence is expected, not a fault.
        (Verdict::Clear, true)
    } else {
        let reference = host.last_seen.unwrap_or(host.first_seen);
        match ctx.now - reference > limit_ms {
            true => (Verdict::Raise, false),
            false => (Verdict::Clear, false),
        }
    };
    let detail = Detail::Silent {
        last: host.last_seen,
        limit_ms,
        consent_inactive,
    };
    RuleResult {
        subjects: BTreeMap::from([(String::new(), (verdict, detail))]),
        clear_absent: false,
    }
}

fn spool_drops<'a>(s: &SpoolDrops, ctx: &'a Ctx<'_>) -> Option<RuleResult<'a>> {
    let losses = ctx.losses.as_ref()?;
    let since = ctx.now - s.window_ms;
    let mut by_scope: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for l in losses.iter().filter(|l| l.at >= since) {
        let e = by_scope.entry(&l.scope).or_default();
        e.0 += l.report.dropped_batches;
        e.1 += l.report.dropped_samples;
    }
    let subjects = by_scope
        .into_iter()
        .map(|(scope, (batches, samples))| {
            let verdict = match batches > s.more_than {
                true => Verdict::Raise,
                false => Verdict::Clear,
            };
            (
                canonical(&[("scope", scope)]),
                (verdict, Detail::Drops { batches, samples }),
            )
        })
        .collect();
    Some(RuleResult {
        subjects,
        clear_absent: ctx.fresh(s.window_ms),
    })
}

fn consent_expiry<'a>(c: &ConsentExpiry, ctx: &'a Ctx<'_>) -> RuleResult<'a> {
    let subjects = ctx
        .host
        .consent
        .grants
        .iter()
        .map(|g| {
            let verdict = match g.until {
                Some(u) if u - ctx.now <= c.within_ms => Verdict::Raise,
                _ => Verdict::Clear,
            };
            (
                canonical(&[("scope", g.scope.as_str())]),
                (
                    verdict,
                    Detail::Consent {
                        until: g.until,
                        by: &g.by,
                    },
                ),
            )
        })
        .collect();
    // A grant that is gone was revoked: nothing is expiring any more.
    RuleResult {
        subjects,
        clear_absent: true,
    }
}

fn clock_skew<'a>(c: &ClockSkew, ctx: &'a Ctx<'_>) -> RuleResult<'a> {
    let mut subjects = BTreeMap::new();
    if let Some(skew_ms) = ctx.host.clock_skew_ms {
        let verdict = if skew_ms.abs() > c.limit_ms {
            Verdict::Raise
        } else if skew_ms.abs() <= c.clear_ms {
            Verdict::Clear
        } else {
            Verdict::Hold
        };
        subjects.insert(String::new(), (verdict, Detail::Skew { skew_ms }));
    }
    RuleResult {
        subjects,
        clear_absent: false,
    }
}

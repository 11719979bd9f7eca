//! The evaluation core: `now`, the hosts, their observations and the previous [`State`] in;
//! the [`Transition`]s and the next state out. Pure: no clock, no sleeping, no I/O beyond
//! what the [`Observations`] given to it do.
//!
//! Per (host, rule, subject) a [`Track`] remembers since when the raise condition has held
//! (for the rule's `for`) and whether a finding is raised (so that the clear condition, not
//! the mere end of the raise condition, ends it: hysteresis). Per evaluation and subject:
//!
//! | verdict | not raised | raised |
//! |---|---|---|
//! | raise | pending; **Raised** once pending for `for` | **Updated** if the evidence changed materially |
//! | hold (between the lines) | pending forgotten | **Updated** if the evidence changed materially |
//! | clear | pending forgotten | **Cleared**, unless the raise condition held within `keep_for` |
//! | unknown (too little data) | unchanged | unchanged |
//!
//! A subject known from before but absent now clears when the host is sending (an unmounted
//! filesystem, a log that went quiet) and is held when it is not: a silent host is the
//! heartbeat's finding, not a reason to call its disks healthy. Data that cannot be read
//! holds every finding of the rules that need it. Raised findings of rules no longer in the
//! set clear. Hosts not passed in keep their state untouched.

use super::checks::{Ctx, Detail, Verdict, check};
use super::config::{Category, Level, Rule, RuleSet};
use super::evidence::{self, Evidence};
use super::input::{HostInfo, Observations};
use aftercare_shared::model::UnixMillis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a finding is about: one open finding at most per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FindingKey {
    /// `customer/host`.
    pub host: String,
    pub rule: String,
    /// Canonical labels naming the thing (`mount=/var`, `interface=eth0`,
    /// `source=syslog`), or "" for the host itself.
    pub subject: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// The condition held (for the rule's `for`): open a finding.
    Raised,
    /// Still raised; the evidence changed materially (see [`Evidence::differs_materially`]).
    Updated,
    /// The clear condition holds: the finding may auto-resolve.
    Cleared,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Raised => "raised",
            Change::Updated => "updated",
            Change::Cleared => "cleared",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub change: Change,
    pub key: FindingKey,
    /// The evaluation's `now`.
    pub at: UnixMillis,
    pub level: Level,
    pub category: Category,
    pub evidence: Evidence,
}

/// The memory of one (host, rule, subject).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Track {
    /// Since when the raise condition has held, while not yet raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_since: Option<UnixMillis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raised: Option<Raised>,
}

/// A raised finding as last reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Raised {
    pub at: UnixMillis,
    /// The last evaluation at which the raise condition held (for the rule's `keep_for`).
    pub last_held: UnixMillis,
    pub level: Level,
    pub category: Category,
    pub evidence: Evidence,
}

/// host -> rule -> subject -> track.
type HostState = BTreeMap<String, BTreeMap<String, Track>>;

/// Everything evaluation remembers between runs. Serializable, so that it can be kept
/// across restarts; an empty state only means raised conditions are raised again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    hosts: BTreeMap<String, HostState>,
}

impl State {
    pub fn track(&self, key: &FindingKey) -> Option<&Track> {
        self.hosts.get(&key.host)?.get(&key.rule)?.get(&key.subject)
    }

    /// The raised findings, sorted by key.
    pub fn raised(&self) -> Vec<(FindingKey, &Raised)> {
        let mut out = Vec::new();
        for (host, rules) in &self.hosts {
            for (rule, subjects) in rules {
                for (subject, t) in subjects {
                    if let Some(r) = &t.raised {
                        out.push((
                            FindingKey {
                                host: host.clone(),
                                rule: rule.clone(),
                                subject: subject.clone(),
                            },
                            r,
                        ));
                    }
                }
            }
        }
        out
    }

    /// Tracks kept (pending or raised).
    pub fn len(&self) -> usize {
        self.hosts
            .values()
            .flat_map(|r| r.values())
            .map(|s| s.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What one evaluation produced.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    /// In host order (as passed in), then rule order, then subject.
    pub transitions: Vec<Transition>,
    pub state: State,
    /// Data that could not be read (`customer/host: cannot read ...`); the findings that
    /// needed it were held.
    pub errors: Vec<String>,
}

/// Evaluate every rule for every host at `now`.
pub fn evaluate<O: Observations + ?Sized>(
    now: UnixMillis,
    rules: &RuleSet,
    hosts: &[HostInfo],
    obs: &O,
    mut state: State,
) -> Evaluation {
    let mut out = Evaluation::default();
    for host in hosts {
        let prev = state.hosts.remove(&host.name).unwrap_or_default();
        let ctx = Ctx::fetch(now, rules, host, obs, &mut out.errors);
        let next = evaluate_host(rules, &ctx, prev, &mut out.transitions);
        if !next.is_empty() {
            out.state.hosts.insert(host.name.clone(), next);
        }
    }
    out.state.hosts.append(&mut state.hosts);
    out
}

fn evaluate_host(
    rules: &RuleSet,
    ctx: &Ctx,
    mut prev: HostState,
    out: &mut Vec<Transition>,
) -> HostState {
    let mut next = HostState::new();
    for rule in rules.rules() {
        let mut before = prev.remove(&rule.name).unwrap_or_default();
        let Some(result) = check(rule, ctx) else {
            if !before.is_empty() {
                next.insert(rule.name.clone(), before);
            }
            continue;
        };
        let mut after = BTreeMap::new();
        let mut step_one = |subject: String, verdict: Verdict, detail: &Detail, track| {
            let f = Finding {
                rule,
                ctx,
                subject: &subject,
            };
            if let Some(t) = f.step(track, verdict, detail, out) {
                after.insert(subject, t);
            }
        };
        for (subject, (verdict, detail)) in result.subjects {
            let track = before.remove(&subject);
            step_one(subject, verdict, &detail, track);
        }
        let mut held = Vec::new();
        for (subject, track) in before {
            if result.clear_absent {
                step_one(subject, Verdict::Clear, &Detail::Gone, Some(track));
            } else {
                held.push((subject, track));
            }
        }
        after.extend(held);
        if !after.is_empty() {
            next.insert(rule.name.clone(), after);
        }
    }
    // Rules no longer in the set: their raised findings clear; pending ones are forgotten.
    for (rule, subjects) in prev {
        for (subject, t) in subjects {
            if let Some(r) = t.raised {
                out.push(Transition {
                    change: Change::Cleared,
                    key: key(ctx, &rule, &subject),
                    at: ctx.now,
                    level: r.level,
                    category: r.category,
                    evidence: Evidence {
                        summary: format!("rule '{rule}' is no longer configured"),
                        value: None,
                        limit: None,
                        from: ctx.now,
                        to: ctx.now,
                        predicted: None,
                        lines: Vec::new(),
                    },
                });
            }
        }
    }
    next
}

fn key(ctx: &Ctx, rule: &str, subject: &str) -> FindingKey {
    FindingKey {
        host: ctx.host.name.clone(),
        rule: rule.to_string(),
        subject: subject.to_string(),
    }
}

/// One (host, rule, subject) being stepped.
struct Finding<'a> {
    rule: &'a Rule,
    ctx: &'a Ctx<'a>,
    subject: &'a str,
}

impl Finding<'_> {
    fn evidence(&self, verdict: Verdict, detail: &Detail) -> Evidence {
        let c = evidence::Context {
            rule: self.rule,
            subject: self.subject,
            now: self.ctx.now,
            skew_ms: self.ctx.agent_now - self.ctx.now,
            interval_ms: self.ctx.host.interval_ms,
        };
        evidence::render(&c, verdict, detail)
    }

    fn emit(&self, change: Change, evidence: Evidence, out: &mut Vec<Transition>) {
        out.push(Transition {
            change,
            key: key(self.ctx, &self.rule.name, self.subject),
            at: self.ctx.now,
            level: self.rule.level,
            category: self.rule.category,
            evidence,
        });
    }

    /// The state machine of the module's table.
    fn step(
        &self,
        track: Option<Track>,
        verdict: Verdict,
        detail: &Detail,
        out: &mut Vec<Transition>,
    ) -> Option<Track> {
        let now = self.ctx.now;
        match verdict {
            Verdict::Unknown => track,
            Verdict::Raise => {
                let mut t = track.unwrap_or_default();
                if let Some(r) = &mut t.raised {
                    r.last_held = now;
                    self.update(r, verdict, detail, out);
                    return Some(t);
                }
                let since = *t.pending_since.get_or_insert(now);
                if now - since >= self.rule.for_ms {
                    let evidence = self.evidence(verdict, detail);
                    self.emit(Change::Raised, evidence.clone(), out);
                    t.pending_since = None;
                    t.raised = Some(Raised {
                        at: now,
                        last_held: now,
                        level: self.rule.level,
                        category: self.rule.category,
                        evidence,
                    });
                }
                Some(t)
            }
            Verdict::Hold => {
                let mut t = track?;
                let r = t.raised.as_mut()?;
                self.update(r, verdict, detail, out);
                Some(t)
            }
            Verdict::Clear => match track {
                Some(Track {
                    raised: Some(r), ..
                }) if now - r.last_held < self.rule.keep_for_ms => {
                    // Kept: nothing new to show, the evidence stays what raised it.
                    Some(Track {
                        pending_since: None,
                        raised: Some(r),
                    })
                }
                Some(Track {
                    raised: Some(_), ..
                }) => {
                    self.emit(Change::Cleared, self.evidence(verdict, detail), out);
                    None
                }
                _ => None,
            },
        }
    }

    fn update(&self, r: &mut Raised, verdict: Verdict, detail: &Detail, out: &mut Vec<Transition>) {
        let evidence = self.evidence(verdict, detail);
        let reclassified = r.level != self.rule.level || r.category != self.rule.category;
        if evidence.differs_materially(&r.evidence) || reclassified {
            self.emit(Change::Updated, evidence.clone(), out);
            r.evidence = evidence;
            r.level = self.rule.level;
            r.category = self.rule.category;
        }
    }
}

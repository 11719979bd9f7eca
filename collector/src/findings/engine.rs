//! The findings loop, one pass per `findings.evaluate_every`: evaluate the rules over what
//! the store holds, turn their transitions into findings (`lifecycle`), give new ones their
//! SLA deadlines on the customer's contract, escalate clocks at risk or breached, and
//! announce every change to the webhooks.
//!
//! It runs on a thread of its own with its own database handle: evaluation reads windows of
//! samples and logs, which must not hold up ingest's writer. The rules engine's memory
//! (pending `for` timers, what is raised) is saved after every pass, so a restarted
//! collector still clears what cleared while it was down.

use super::lifecycle::{self, Decision, Event, EventKind, Signal};
use super::record::{
    Change, Clocks, FindingFilter, FindingKey, FindingRow, Observed, Silence, clock_start, sla_flag,
};
use super::view::sla_of;
use crate::cluster::{Lease, Round};
use crate::notify::{Alert, AlertEvent, Clock, Notifier};
use crate::rules::{self, HostInfo, LossEvent, Observations, RuleSet, Series, Transition};
use crate::sla::{ClockStatus, SlaPolicy, SlaState};
use crate::store::{HostId, HostStatus, LogFilter, ROLLUP_STEP_MS, Resolution, Store, StoreError};
use aftercare_shared::model::{LogRecord, LossReport, MetricKind, UnixMillis};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;
use tracing::{info, warn};

/// How long loss reports stay visible to the rules (longer than any default window).
const LOSS_MEMORY_MS: i64 = 7 * 24 * 3_600_000;

pub struct Engine {
    rules: RuleSet,
    policy: SlaPolicy,
    reopen_within_ms: i64,
    state: rules::State,
    /// Per host and scope, the loss totals last seen, to turn totals into events.
    loss_totals: HashMap<(String, String), LossReport>,
    loss_events: HashMap<String, Vec<LossEvent>>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassStats {
    pub hosts: usize,
    pub opened: usize,
    pub reopened: usize,
    pub updated: usize,
    pub resolved: usize,
    pub escalated: usize,
    /// Findings open after the pass, by level (L1..L4).
    pub open_by_level: [u64; 4],
    /// Data the rules could not read (their findings were held).
    pub errors: Vec<String>,
}

impl Engine {
    /// An engine resuming from the state `st` saved last.
    pub fn new(
        rules: RuleSet,
        policy: SlaPolicy,
        reopen_within: Duration,
        st: &mut dyn Store,
    ) -> Engine {
        Engine {
            rules,
            policy,
            reopen_within_ms: reopen_within.as_millis() as i64,
            state: saved_state(st),
            loss_totals: HashMap::new(),
            loss_events: HashMap::new(),
        }
    }

    /// Take up the state as saved: after another collector ran the rules, what this one
    /// remembers is stale (pending timers, what is raised, loss totals seen).
    pub fn reload(&mut self, st: &mut dyn Store) {
        self.state = saved_state(st);
        self.loss_totals.clear();
        self.loss_events.clear();
    }

    /// One pass at `now`.
    pub fn pass(
        &mut self,
        st: &mut dyn Store,
        now: UnixMillis,
        notify: Option<&Notifier>,
    ) -> Result<PassStats, StoreError> {
        // Contracts an admin assigned over the API since the last pass count for the
        // deadlines given from now on.
        let assigned = st.contract_assignments()?;
        for (customer, contract) in self
            .policy
            .set_assigned(assigned.into_iter().map(|a| (a.customer, a.contract)))
        {
            warn!(
                "customer {customer}: assigned contract '{contract}' is not in sla.toml; using the file's choice"
            );
        }
        let statuses = st.hosts(now)?;
        self.track_losses(&statuses, now);
        let mut hosts = Vec::with_capacity(statuses.len());
        let mut ids: HashMap<String, (HostId, String)> = HashMap::new();
        for s in &statuses {
            let skew = clock_skew(st, s)?;
            hosts.push(HostInfo::from_status(s, skew));
            ids.insert(s.full_name(), (s.id, s.customer.clone()));
        }
        let eval = {
            let obs = StoreObservations {
                st: RefCell::new(&mut *st),
                losses: &self.loss_events,
                now,
            };
            rules::evaluate(
                now,
                &self.rules,
                &hosts,
                &obs,
                std::mem::take(&mut self.state),
            )
        };
        self.state = eval.state;
        // Every window, past ones too: they stopped clocks that still run.
        let silences = st.silences(i64::MIN)?;
        let mut stats = PassStats {
            hosts: hosts.len(),
            errors: eval.errors,
            ..Default::default()
        };
        for t in &eval.transitions {
            let Some((host, customer)) = ids.get(&t.key.host) else {
                continue;
            };
            let alert = self.apply(st, *host, customer, &silences, t, &mut stats)?;
            // In a maintenance window the finding records, but nobody is told.
            if let Some(alert) = alert
                && let Some(n) = notify
                && !silences
                    .iter()
                    .any(|s| s.covers(customer, &alert.host, t.at))
            {
                n.send(&alert);
            }
        }
        for alert in self.escalate(st, now, &silences, &mut stats)? {
            if let Some(n) = notify {
                n.send(&alert);
            }
        }
        match serde_json::to_string(&self.state) {
            Ok(json) => st.save_rules_state(&json)?,
            Err(e) => warn!("cannot save the rules' state: {e}"),
        }
        Ok(stats)
    }

    /// A transition into the store; the alert to send, if the change is news.
    fn apply(
        &self,
        st: &mut dyn Store,
        host: HostId,
        customer: &str,
        silences: &[Silence],
        t: &Transition,
        stats: &mut PassStats,
    ) -> Result<Option<Alert>, StoreError> {
        let key = FindingKey {
            host,
            rule: t.key.rule.clone(),
            subject: t.key.subject.clone(),
        };
        let level = t.level.number();
        let signal = match t.change {
            rules::Change::Raised | rules::Change::Updated => Signal::Firing { at: t.at, level },
            rules::Change::Cleared => Signal::Cleared { at: t.at },
        };
        let current = st.finding_for(&key)?;
        let decision = lifecycle::on_signal(
            current.as_ref().map(FindingRow::current).as_ref(),
            &signal,
            self.reopen_within_ms,
        );
        let rule = self.rules.get(&t.key.rule);
        let observed = || Observed {
            level,
            category: t.category.as_str().to_string(),
            title: rule.map_or_else(|| t.key.rule.clone(), |r| r.title.clone()),
            recommendation: rule.map(|r| r.recommendation.clone()).unwrap_or_default(),
            evidence: serde_json::to_string(&t.evidence).unwrap_or_else(|_| "{}".into()),
            at: t.at,
        };
        // The clocks start now, or when the maintenance windows covering the host end.
        let host_name = t.key.host.rsplit('/').next().unwrap_or(&t.key.host);
        let clocks = || {
            let from = clock_start(silences, customer, host_name, t.at);
            let sla = self.policy.finding_sla(
                customer,
                t.level,
                crate::sla::FindingTimes {
                    raised_at: from,
                    acknowledged_at: None,
                    resolved_at: None,
                },
                from,
            );
            Clocks {
                from,
                respond_by: Some(sla.respond.due),
                restore_by: Some(sla.restore.due),
            }
        };
        let (id, event) = match decision {
            Decision::Nothing => return Ok(None),
            Decision::Open => {
                let id = st.apply_finding(&Change::Open {
                    key,
                    observed: observed(),
                    clocks: clocks(),
                })?;
                stats.opened += 1;
                (id, AlertEvent::Opened)
            }
            Decision::Reopen { id } => {
                // The finding the store reopened: on PostgreSQL, if another engine already
                // holds the key unresolved, that one (updated) rather than `id`.
                let id = st.apply_finding(&Change::Reopen {
                    id,
                    observed: observed(),
                    clocks: clocks(),
                })?;
                stats.reopened += 1;
                (id, AlertEvent::Reopened)
            }
            Decision::Update { id, level_changed } => {
                st.apply_finding(&Change::Update {
                    id,
                    observed: observed(),
                    level_changed,
                })?;
                stats.updated += 1;
                return Ok(None);
            }
            Decision::AutoResolve { id } => {
                st.apply_finding(&Change::AutoResolve { id, at: t.at })?;
                stats.resolved += 1;
                (
                    id,
                    AlertEvent::Resolved {
                        by: None,
                        note: None,
                    },
                )
            }
        };
        let f = st.finding(id)?.map(|(f, _)| f);
        Ok(f.map(|f| alert(&f, event, t.at, &t.evidence.summary)))
    }

    /// Open findings whose respond or restore clock has just become at risk or breached:
    /// recorded once each on the timeline, and announced.
    fn escalate(
        &self,
        st: &mut dyn Store,
        now: UnixMillis,
        silences: &[Silence],
        stats: &mut PassStats,
    ) -> Result<Vec<Alert>, StoreError> {
        let open = st.findings(&FindingFilter {
            open_only: true,
            ..Default::default()
        })?;
        for f in &open {
            if let Some(n) = usize::from(f.level)
                .checked_sub(1)
                .and_then(|i| stats.open_by_level.get_mut(i))
            {
                *n += 1;
            }
        }
        let mut out = Vec::new();
        for f in open {
            // No clock runs in a maintenance window (and none started before it ends).
            if silences.iter().any(|s| s.covers(&f.customer, &f.host, now)) {
                continue;
            }
            let sla = sla_of(&f, &self.policy, silences, now);
            for (clock, c, risk_flag, breach_flag) in [
                (
                    Clock::Respond,
                    &sla.respond,
                    sla_flag::RESPOND_AT_RISK,
                    sla_flag::RESPOND_BREACHED,
                ),
                (
                    Clock::Restore,
                    &sla.restore,
                    sla_flag::RESTORE_AT_RISK,
                    sla_flag::RESTORE_BREACHED,
                ),
            ] {
                let Some((flag, kind, event)) = news(c, clock, f.sla_sent, risk_flag, breach_flag)
                else {
                    continue;
                };
                st.apply_finding(&Change::Escalate {
                    id: f.id,
                    flag,
                    event: Event {
                        at: now,
                        kind,
                        by: None,
                        note: Some(format!(
                            "{} due {}",
                            clock.as_str(),
                            aftercare_shared::time_fmt::rfc3339(c.due)
                        )),
                    },
                })?;
                stats.escalated += 1;
                out.push(alert(&f, event, now, ""));
            }
        }
        Ok(out)
    }

    /// Loss totals that grew since the last pass become events the rules can count.
    fn track_losses(&mut self, hosts: &[HostStatus], now: UnixMillis) {
        for h in hosts {
            let name = h.full_name();
            for (scope, total) in &h.loss {
                let before = self
                    .loss_totals
                    .insert((name.clone(), scope.clone()), *total);
                // The first sight of a total is the past, not news: a restarted collector
                // must not re-raise old drops.
                let Some(b) = before else { continue };
                let delta = LossReport {
                    dropped_batches: total.dropped_batches.saturating_sub(b.dropped_batches),
                    dropped_samples: total.dropped_samples.saturating_sub(b.dropped_samples),
                    discarded_by_revocation: total
                        .discarded_by_revocation
                        .saturating_sub(b.discarded_by_revocation),
                };
                if !delta.is_empty() {
                    self.loss_events
                        .entry(name.clone())
                        .or_default()
                        .push(LossEvent {
                            at: now,
                            scope: scope.clone(),
                            report: delta,
                        });
                }
            }
        }
        for events in self.loss_events.values_mut() {
            events.retain(|e| now - e.at <= LOSS_MEMORY_MS);
        }
    }
}

/// The escalation a clock owes, if any: (flags to set, timeline kind, alert).
fn news(
    c: &ClockStatus,
    clock: Clock,
    sent: u8,
    risk_flag: u8,
    breach_flag: u8,
) -> Option<(u8, EventKind, AlertEvent)> {
    if c.stopped {
        return None;
    }
    match c.state {
        SlaState::Breached if sent & breach_flag == 0 => Some((
            risk_flag | breach_flag,
            EventKind::Breached,
            AlertEvent::Breached { clock, due: c.due },
        )),
        SlaState::AtRisk if sent & (risk_flag | breach_flag) == 0 => Some((
            risk_flag,
            EventKind::AtRisk,
            AlertEvent::AtRisk { clock, due: c.due },
        )),
        _ => None,
    }
}

fn alert(f: &FindingRow, event: AlertEvent, at: UnixMillis, summary: &str) -> Alert {
    Alert {
        event,
        finding_id: f.id,
        customer: f.customer.clone(),
        host: f.host.clone(),
        rule: f.rule.clone(),
        subject: f.subject.clone(),
        level: f.level,
        category: f.category.clone(),
        title: f.title.clone(),
        summary: summary.to_string(),
        recommendation: f.recommendation.clone(),
        opened_at: f.opened_at,
        respond_by: f.respond_by,
        restore_by: f.restore_by,
        at,
    }
}

/// The agent's clock minus the collector's: the newest sample's time against when its
/// batch arrived (a batch leaves right after its collection). `None` for a host silent
/// for more than a few intervals.
fn clock_skew(st: &mut dyn Store, h: &HostStatus) -> Result<Option<i64>, StoreError> {
    let Some(seen) = h.last_seen else {
        return Ok(None);
    };
    let since = seen - 3 * h.interval_ms.max(1000) as i64 - 3_600_000;
    let series = st.query(&h.full_name(), Some("system.uptime"), since, i64::MAX)?;
    let newest = series
        .iter()
        .filter_map(|s| s.points.last().map(|p| p.0))
        .max();
    Ok(newest.map(|t| t - seen))
}

/// Windows longer than this read rollups for their older part (see `series`).
const LONG_WINDOW_MS: i64 = 2 * 3_600_000;

/// The store as the rules see it.
struct StoreObservations<'a> {
    st: RefCell<&'a mut dyn Store>,
    losses: &'a HashMap<String, Vec<LossEvent>>,
    now: UnixMillis,
}

impl Observations for StoreObservations<'_> {
    type Error = StoreError;

    fn series(
        &self,
        host: &str,
        metric: &str,
        since: UnixMillis,
    ) -> Result<Vec<Series<'_>>, StoreError> {
        let mut st = self.st.borrow_mut();
        // A gauge over a long window reads the 5-minute rollup means of its compacted hours
        // and raw points only after them: a day is 288 points instead of 8,640, and windows
        // longer than raw retention still see their whole span. Counters stay raw (rates
        // need the cumulative values); recent windows read raw points only.
        let mut rolled: HashMap<String, Vec<(UnixMillis, f64)>> = HashMap::new();
        if since < self.now - LONG_WINDOW_MS {
            for s in st.rollups(host, Some(metric), Resolution::FiveMinutes, since, self.now)? {
                if s.name == metric && s.kind == MetricKind::Gauge {
                    let points = s
                        .buckets
                        .iter()
                        .filter(|b| b.count > 0)
                        .map(|b| (b.start + ROLLUP_STEP_MS / 2, b.mean()))
                        .collect();
                    rolled.insert(s.labels, points);
                }
            }
        }
        // Raw points from where the rollups of the rolled series end (all of a metric's
        // series share its kind, so either all have rollups or none).
        let raw_since = rolled
            .values()
            .filter_map(|p| p.last().map(|l| l.0 + ROLLUP_STEP_MS / 2))
            .min()
            .map_or(since, |end| end.max(since));
        let mut out = Vec::new();
        let raw = st.query(host, Some(metric), raw_since, i64::MAX)?;
        for s in raw.into_iter().filter(|s| s.name == metric) {
            let points = match rolled.remove(&s.labels) {
                Some(mut p) => {
                    let end = p.last().map_or(since, |l| l.0 + ROLLUP_STEP_MS / 2);
                    p.extend(s.points.into_iter().filter(|q| q.0 >= end));
                    p
                }
                None => s.points,
            };
            out.push(Series {
                labels: Cow::Owned(s.labels),
                kind: s.kind,
                points: Cow::Owned(points),
            });
        }
        // Series with rollups but no raw points left (past raw retention).
        for (labels, points) in rolled {
            out.push(Series {
                labels: Cow::Owned(labels),
                kind: MetricKind::Gauge,
                points: Cow::Owned(points),
            });
        }
        Ok(out)
    }

    fn logs(&self, host: &str, since: UnixMillis) -> Result<Cow<'_, [LogRecord]>, StoreError> {
        let filter = LogFilter {
            since,
            until: i64::MAX,
            ..Default::default()
        };
        Ok(Cow::Owned(self.st.borrow_mut().logs(host, &filter)?))
    }

    fn losses(&self, host: &str, since: UnixMillis) -> Result<Vec<LossEvent>, StoreError> {
        Ok(self
            .losses
            .get(host)
            .map(|v| v.iter().filter(|e| e.at >= since).cloned().collect())
            .unwrap_or_default())
    }
}

/// The rules' state as last saved, or a fresh one.
fn saved_state(st: &mut dyn Store) -> rules::State {
    match st.rules_state() {
        Ok(Some(json)) => serde_json::from_str(&json).unwrap_or_else(|e| {
            warn!("the rules' saved state is unreadable, starting afresh: {e}");
            rules::State::default()
        }),
        Ok(None) => rules::State::default(),
        Err(e) => {
            warn!("cannot read the rules' saved state, starting afresh: {e}");
            rules::State::default()
        }
    }
}

/// The engine's thread in `serve`: a pass now and every `every`, until `stop` says so.
/// Of several collectors on one database, only the one holding the `rules` lease passes.
pub struct EngineThread {
    stop: mpsc::Sender<()>,
    join: std::thread::JoinHandle<()>,
}

impl EngineThread {
    pub fn spawn(
        mut engine: Engine,
        mut st: Box<dyn Store>,
        every: Duration,
        notifier: Option<Notifier>,
        holder: String,
        telemetry: std::sync::Arc<crate::telemetry::Telemetry>,
    ) -> std::io::Result<EngineThread> {
        if let Some(n) = &notifier {
            telemetry.watch_webhooks(n.stats());
        }
        let (tx, rx) = mpsc::channel::<()>();
        let join = std::thread::Builder::new()
            .name("findings".into())
            .spawn(move || {
                let mut lease = Lease::new("rules", &holder, crate::cluster::ttl_for(every));
                loop {
                    let now = aftercare_shared::time_fmt::now_millis();
                    match lease.round(&mut *st, now) {
                        Round::Skip => telemetry.findings_lease_elsewhere(),
                        round => {
                            if round == Round::TookOver {
                                engine.reload(&mut *st);
                            }
                            Self::pass_once(&mut engine, &mut *st, now, notifier.as_ref(), &telemetry);
                        }
                    }
                    match rx.recv_timeout(every) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => break,
                    }
                }
                if let Err(e) = lease.release(&mut *st) {
                    warn!("cannot give the rules lease up: {e}");
                }
                if let Some(n) = notifier {
                    for (name, c) in n.stop(Duration::from_secs(2)) {
                        if c.dead_letters > 0 {
                            warn!(webhook = %name, dead_letters = c.dead_letters, "notifications not delivered");
                        }
                    }
                }
            })?;
        Ok(EngineThread { stop: tx, join })
    }

    fn pass_once(
        engine: &mut Engine,
        st: &mut dyn Store,
        now: UnixMillis,
        notifier: Option<&Notifier>,
        telemetry: &crate::telemetry::Telemetry,
    ) {
        let started = std::time::Instant::now();
        let pass = engine.pass(st, now, notifier);
        telemetry.findings_pass(
            started.elapsed(),
            pass.as_ref().ok().map(|s| s.open_by_level),
        );
        match pass {
            Ok(s) => {
                for e in &s.errors {
                    warn!("rules: {e}");
                }
                if s.opened + s.reopened + s.resolved + s.escalated > 0 {
                    info!(
                        hosts = s.hosts,
                        opened = s.opened,
                        reopened = s.reopened,
                        resolved = s.resolved,
                        escalated = s.escalated,
                        "findings updated"
                    );
                }
            }
            Err(e) => warn!("findings pass failed, tried again next time: {e}"),
        }
    }

    /// Stop after the pass in progress.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.join.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BatchData, HOUR_MS, HostHello, PendingBatch, open_sqlite};
    use aftercare_shared::consent::ConsentRecord;
    use aftercare_shared::model::{HostFacts, MetricSnapshot, Sample};
    use aftercare_shared::protocol::{Identity, StreamId};

    /// A long window reads 5-minute means of compacted hours, then raw points; counters and
    /// short windows read raw points only.
    #[test]
    fn long_windows_read_rollups_for_their_compacted_hours() {
        let d = tempfile::tempdir().unwrap();
        let mut st = open_sqlite(&d.path().join("a.db")).unwrap();
        let host = st
            .register_host(
                &HostHello {
                    identity: &Identity {
                        customer: "acme".into(),
                        host: "db1".into(),
                    },
                    facts: &HostFacts::default(),
                    agent_version: "t",
                    consent: &ConsentRecord::default(),
                    interval_ms: 10_000,
                    cert_expires: None,
                },
                0,
            )
            .unwrap();
        let t0 = 1_772_409_600_000; // an hour boundary
        let now = t0 + 4 * HOUR_MS;
        // Every 10 s for 4 hours: a gauge rising by 1 a tick, a counter rising by 10.
        let batches: Vec<PendingBatch> = (0..4 * 360)
            .map(|k| PendingBatch {
                host,
                stream: StreamId::Metrics,
                seq: k as u64 + 1,
                received_at: t0 + k * 10_000,
                data: BatchData::Metrics(MetricSnapshot {
                    ts: t0 + k * 10_000,
                    samples: vec![
                        Sample {
                            name: "g".into(),
                            labels: "x=1".into(),
                            kind: MetricKind::Gauge,
                            value: k as f64,
                        },
                        Sample {
                            name: "c".into(),
                            labels: String::new(),
                            kind: MetricKind::Counter,
                            value: 10.0 * k as f64,
                        },
                    ],
                }),
                loss: LossReport::default(),
            })
            .collect();
        st.commit(&batches).unwrap();
        // The first three hours are closed past their grace: compacted, with rollups.
        st.compact(now).unwrap();
        let losses = HashMap::new();
        let obs = StoreObservations {
            st: RefCell::new(&mut st),
            losses: &losses,
            now,
        };
        let g = obs.series("acme/db1", "g", t0).unwrap();
        assert_eq!(g.len(), 1);
        let p = &g[0].points;
        // 3 hours x 12 means, then the 4th hour's 360 raw points.
        assert_eq!(p.len(), 36 + 360, "{:?}", &p[..3]);
        // The first bucket holds ticks 0..29: its mean is 14.5, at its middle.
        assert_eq!(p[0], (t0 + ROLLUP_STEP_MS / 2, 14.5));
        assert_eq!(p[36], (t0 + 3 * HOUR_MS, 1080.0));
        assert!(p.windows(2).all(|w| w[0].0 < w[1].0), "in time order");
        // Counters stay raw and cumulative.
        let c = obs.series("acme/db1", "c", t0).unwrap();
        assert_eq!(c[0].points.len(), 4 * 360);
        // A short window reads raw points.
        let recent = obs.series("acme/db1", "g", now - HOUR_MS).unwrap();
        assert_eq!(recent[0].points.len(), 360);
    }
}

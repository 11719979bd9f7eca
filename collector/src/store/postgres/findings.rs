//! Findings, their timelines, maintenance windows and the rules' state in PostgreSQL (what
//! `../sqlite/findings.rs` does for SQLite). Each change is one transaction: the finding's
//! row and its timeline entry are written together or not at all.
//!
//! The partial unique index `findings_one_unresolved` allows one unresolved finding per
//! key. The lifecycle never asks for a second one; two rules engines racing (a lease
//! handed over mid-pass) can. Then the change that comes second, an open or a reopen,
//! updates the unresolved finding instead, as the lifecycle's update would (a level
//! change is on its timeline), and answers with that finding's id: the engine's pass goes
//! on, and the key keeps one finding with the newest observation.

use super::PgStore;
use crate::findings::lifecycle::{Event, EventKind};
use crate::findings::record::{Change, FindingFilter, FindingKey, FindingRow, Observed, Silence};
use crate::store::StoreError;
use crate::store::rows::{
    self, FINDING_COLUMNS as COLUMNS, SILENCE_COLUMNS, act_refused, event, no_silence,
    not_an_action,
};
use aftercare_shared::model::UnixMillis;
use postgres::GenericClient;
use postgres::error::SqlState;

/// Tries at opening before giving up, when the unresolved finding that stood in the way is
/// resolved again before it can be updated (each try waits for the other transaction).
const OPEN_TRIES: usize = 3;

fn add_event(tx: &mut impl GenericClient, id: i64, e: &Event) -> Result<(), postgres::Error> {
    // The finding's row is locked by the change that precedes this (an insert or an
    // update), so two transactions never number one finding's entries at once.
    tx.execute(
        "INSERT INTO finding_events (finding_id, seq, at, kind, by, note)
         VALUES ($1, (SELECT coalesce(max(seq), 0) + 1 FROM finding_events WHERE finding_id = $1),
                 $2, $3, $4, $5)",
        &[&id, &e.at, &e.kind.as_str(), &e.by, &e.note],
    )?;
    Ok(())
}

fn set_observed(
    tx: &mut impl GenericClient,
    id: i64,
    o: &Observed,
) -> Result<u64, postgres::Error> {
    tx.execute(
        "UPDATE findings SET level = $2, category = $3, title = $4, recommendation = $5,
                evidence = $6, last_seen = GREATEST(last_seen, $7)
         WHERE id = $1",
        &[
            &id,
            &i32::from(o.level),
            &o.category,
            &o.title,
            &o.recommendation,
            &o.evidence,
            &o.at,
        ],
    )
}

/// The id and level of the unresolved finding of (`host`, `rule`, `subject`), locked.
fn unresolved(
    tx: &mut impl GenericClient,
    host: i64,
    rule: &str,
    subject: &str,
) -> Result<Option<(i64, i32)>, postgres::Error> {
    Ok(tx
        .query_opt(
            "SELECT id, level FROM findings
             WHERE host_id = $1 AND rule = $2 AND subject = $3 AND state <> 'resolved'
             FOR UPDATE",
            &[&host, &rule, &subject],
        )?
        .map(|r| (r.get(0), r.get(1))))
}

/// What a change that would have made a second unresolved finding does instead: `o`
/// refreshes the one there is. Its id.
fn update_instead(
    tx: &mut impl GenericClient,
    (id, level): (i64, i32),
    o: &Observed,
) -> Result<i64, postgres::Error> {
    set_observed(tx, id, o)?;
    if level != i32::from(o.level) {
        add_event(tx, id, &rows::level_changed(o))?;
    }
    Ok(id)
}

fn is_unique_violation(e: &postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

impl PgStore {
    /// The key's finding that is not resolved, else its most recently resolved one.
    pub(in crate::store) fn finding_for_key(
        &mut self,
        key: &FindingKey,
    ) -> Result<Option<FindingRow>, StoreError> {
        let err = self.cx.sql("reading a finding");
        self.conn
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM findings f JOIN hosts h ON h.id = f.host_id
                     WHERE f.host_id = $1 AND f.rule = $2 AND f.subject = $3
                     ORDER BY (f.state <> 'resolved') DESC, f.id DESC LIMIT 1"
                ),
                &[&key.host, &key.rule, &key.subject],
            )
            .map_err(&err)?
            .map(|r| rows::finding(&r))
            .transpose()
            .map_err(err)
    }

    pub(in crate::store) fn apply_finding_change(
        &mut self,
        change: &Change,
    ) -> Result<i64, StoreError> {
        self.writable("recording a finding")?;
        let err = self.cx.sql("recording a finding");
        let mut tx = self.conn.transaction().map_err(&err)?;
        let missing = |id: i64| StoreError::NoSuchFinding(id);
        let id = match change {
            Change::Open {
                key,
                observed: o,
                clocks,
            } => 'open: {
                for _ in 0..OPEN_TRIES {
                    // Waits for a transaction that is inserting the key's finding, then
                    // does nothing if that one committed.
                    let inserted = tx
                        .query_opt(
                            "INSERT INTO findings (host_id, rule, subject, level, category, title,
                                recommendation, state, opened_at, last_seen, sla_from, respond_by,
                                restore_by, evidence)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', $8, $8, $9, $10, $11, $12)
                             ON CONFLICT (host_id, rule, subject) WHERE state <> 'resolved'
                             DO NOTHING
                             RETURNING id",
                            &[
                                &key.host,
                                &key.rule,
                                &key.subject,
                                &i32::from(o.level),
                                &o.category,
                                &o.title,
                                &o.recommendation,
                                &o.at,
                                &clocks.from,
                                &clocks.respond_by,
                                &clocks.restore_by,
                                &o.evidence,
                            ],
                        )
                        .map_err(&err)?;
                    if let Some(r) = inserted {
                        let id: i64 = r.get(0);
                        add_event(&mut tx, id, &event(o.at, EventKind::Opened)).map_err(&err)?;
                        break 'open id;
                    }
                    // Another engine opened it first; unless it is resolved already.
                    if let Some(found) =
                        unresolved(&mut tx, key.host, &key.rule, &key.subject).map_err(&err)?
                    {
                        break 'open update_instead(&mut tx, found, o).map_err(&err)?;
                    }
                }
                return Err(StoreError::Invalid(format!(
                    "cannot open a finding of rule {} on host {} ({}): another collector \
                     keeps changing it; the next pass tries again",
                    key.rule, key.host, key.subject
                )));
            }
            Change::Reopen {
                id,
                observed: o,
                clocks,
            } => {
                // In a savepoint: a finding of the key that another engine opened meanwhile
                // makes this update fail at the unique index, and the transaction goes on.
                let mut sp = tx.transaction().map_err(&err)?;
                let reopened = sp.execute(
                    "UPDATE findings SET state = 'open', acked_at = NULL, acked_by = NULL,
                        resolved_at = NULL, resolved_by = NULL, resolution = NULL,
                        sla_from = $2, respond_by = $3, restore_by = $4, sla_sent = 0
                     WHERE id = $1 AND state = 'resolved'",
                    &[id, &clocks.from, &clocks.respond_by, &clocks.restore_by],
                );
                match reopened {
                    Ok(1) => {
                        sp.commit().map_err(&err)?;
                        set_observed(&mut tx, *id, o).map_err(&err)?;
                        add_event(&mut tx, *id, &event(o.at, EventKind::Reopened)).map_err(&err)?;
                        *id
                    }
                    Ok(_) => {
                        sp.commit().map_err(&err)?;
                        // Not resolved (another engine reopened it first), or gone.
                        let level: Option<i32> = tx
                            .query_opt("SELECT level FROM findings WHERE id = $1 FOR UPDATE", &[id])
                            .map_err(&err)?
                            .map(|r| r.get(0));
                        let Some(level) = level else {
                            return Err(missing(*id));
                        };
                        update_instead(&mut tx, (*id, level), o).map_err(&err)?
                    }
                    Err(e) if is_unique_violation(&e) => {
                        sp.rollback().map_err(&err)?;
                        let key = tx
                            .query_one(
                                "SELECT host_id, rule, subject FROM findings WHERE id = $1",
                                &[id],
                            )
                            .map_err(&err)?;
                        let (host, rule, subject): (i64, String, String) =
                            (key.get(0), key.get(1), key.get(2));
                        let Some(found) =
                            unresolved(&mut tx, host, &rule, &subject).map_err(&err)?
                        else {
                            // Resolved again in between: the next pass decides afresh.
                            return Err(err(e));
                        };
                        update_instead(&mut tx, found, o).map_err(&err)?
                    }
                    Err(e) => return Err(err(e)),
                }
            }
            Change::Update {
                id,
                observed: o,
                level_changed,
            } => {
                if set_observed(&mut tx, *id, o).map_err(&err)? == 0 {
                    return Err(missing(*id));
                }
                if *level_changed {
                    add_event(&mut tx, *id, &rows::level_changed(o)).map_err(&err)?;
                }
                *id
            }
            Change::AutoResolve { id, at } => {
                let n = tx
                    .execute(
                        "UPDATE findings SET state = 'resolved', resolved_at = $2,
                            resolved_by = NULL, resolution = NULL
                         WHERE id = $1 AND state <> 'resolved'",
                        &[id, at],
                    )
                    .map_err(&err)?;
                if n > 0 {
                    add_event(&mut tx, *id, &event(*at, EventKind::AutoResolved)).map_err(&err)?;
                }
                *id
            }
            Change::Act { id, event: e } => {
                let n = match e.kind {
                    EventKind::Acknowledged => tx.execute(
                        "UPDATE findings SET state = 'acknowledged', acked_at = $2, acked_by = $3
                         WHERE id = $1 AND state = 'open'",
                        &[id, &e.at, &e.by],
                    ),
                    EventKind::Resolved => tx.execute(
                        "UPDATE findings SET state = 'resolved', resolved_at = $2,
                            resolved_by = $3, resolution = $4
                         WHERE id = $1 AND state <> 'resolved'",
                        &[id, &e.at, &e.by, &e.note],
                    ),
                    other => return Err(not_an_action(other)),
                }
                .map_err(&err)?;
                if n == 0 {
                    // Gone, or changed by someone else since the caller looked.
                    let state: Option<String> = tx
                        .query_opt("SELECT state FROM findings WHERE id = $1", &[id])
                        .map_err(&err)?
                        .map(|r| r.get(0));
                    return Err(act_refused(*id, state, e.kind));
                }
                add_event(&mut tx, *id, e).map_err(&err)?;
                *id
            }
            Change::Escalate { id, flag, event: e } => {
                let n = tx
                    .execute(
                        "UPDATE findings SET sla_sent = sla_sent | $2 WHERE id = $1",
                        &[id, &i32::from(*flag)],
                    )
                    .map_err(&err)?;
                if n == 0 {
                    return Err(missing(*id));
                }
                add_event(&mut tx, *id, e).map_err(&err)?;
                *id
            }
        };
        tx.commit().map_err(&err)?;
        Ok(id)
    }

    pub(in crate::store) fn insert_silence(&mut self, s: &Silence) -> Result<i64, StoreError> {
        self.writable("adding a maintenance window")?;
        self.conn
            .query_one(
                "INSERT INTO silences (customer, host, starts, ends, reason, created_by, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 RETURNING id",
                &[
                    &s.customer,
                    &s.host,
                    &s.starts,
                    &s.ends,
                    &s.reason,
                    &s.created_by,
                    &s.created_at,
                ],
            )
            .map(|r| r.get(0))
            .map_err(self.cx.sql("adding a maintenance window"))
    }

    /// Windows that end after `after`, by start.
    pub(in crate::store) fn select_silences(
        &mut self,
        after: UnixMillis,
    ) -> Result<Vec<Silence>, StoreError> {
        let err = self.cx.sql("listing maintenance windows");
        self.conn
            .query(
                &format!(
                    "SELECT {SILENCE_COLUMNS} FROM silences WHERE ends > $1 ORDER BY starts, id"
                ),
                &[&after],
            )
            .map_err(&err)?
            .iter()
            .map(rows::silence)
            .collect::<Result<_, _>>()
            .map_err(err)
    }

    /// End a window at `at` (no earlier than its start).
    pub(in crate::store) fn close_silence(
        &mut self,
        id: i64,
        at: UnixMillis,
    ) -> Result<(), StoreError> {
        self.writable("ending a maintenance window")?;
        let n = self
            .conn
            .execute(
                "UPDATE silences SET ends = GREATEST(starts, LEAST(ends, $2)) WHERE id = $1",
                &[&id, &at],
            )
            .map_err(self.cx.sql("ending a maintenance window"))?;
        if n == 0 {
            return Err(no_silence(id));
        }
        Ok(())
    }

    pub(in crate::store) fn load_rules_state(&mut self) -> Result<Option<String>, StoreError> {
        self.conn
            .query_opt("SELECT state FROM rules_state WHERE id = 1", &[])
            .map(|r| r.map(|r| r.get(0)))
            .map_err(self.cx.sql("reading the rules' state"))
    }

    pub(in crate::store) fn store_rules_state(&mut self, json: &str) -> Result<(), StoreError> {
        self.writable("saving the rules' state")?;
        self.conn
            .execute(
                "INSERT INTO rules_state (id, state) VALUES (1, $1)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state",
                &[&json],
            )
            .map(|_| ())
            .map_err(self.cx.sql("saving the rules' state"))
    }

    /// Findings by level, then the nearest deadline, then when they opened.
    pub(in crate::store) fn list_findings(
        &mut self,
        f: &FindingFilter,
    ) -> Result<Vec<FindingRow>, StoreError> {
        let err = self.cx.sql("listing findings");
        let host = match &f.host {
            Some(h) => Some(Self::resolve_host(&mut *self.conn, &self.cx, h)?),
            None => None,
        };
        self.conn
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM findings f JOIN hosts h ON h.id = f.host_id
                     WHERE (NOT $1 OR f.state <> 'resolved')
                       AND ($2::text IS NULL OR h.customer = $2)
                       AND ($3::bigint IS NULL OR f.host_id = $3)
                       AND GREATEST(f.opened_at, f.last_seen, coalesce(f.resolved_at, 0)) >= $4
                     ORDER BY f.level, coalesce(f.restore_by, f.respond_by, 9223372036854775807),
                              f.opened_at, f.id"
                ),
                &[&f.open_only, &f.customer, &host, &f.since],
            )
            .map_err(&err)?
            .iter()
            .map(rows::finding)
            .collect::<Result<_, _>>()
            .map_err(err)
    }

    /// One finding and its timeline, read in one snapshot.
    pub(in crate::store) fn finding_with_timeline(
        &mut self,
        id: i64,
    ) -> Result<Option<(FindingRow, Vec<Event>)>, StoreError> {
        let err = self.cx.sql("reading a finding");
        let path = self.cx.0.clone();
        let mut tx = self.snapshot().map_err(&err)?;
        let Some(row) = tx
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM findings f JOIN hosts h ON h.id = f.host_id WHERE f.id = $1"
                ),
                &[&id],
            )
            .map_err(&err)?
        else {
            return Ok(None);
        };
        let f = rows::finding(&row).map_err(&err)?;
        let mut events = Vec::new();
        for r in tx
            .query(
                "SELECT at, kind, by, note FROM finding_events WHERE finding_id = $1 ORDER BY seq",
                &[&id],
            )
            .map_err(&err)?
        {
            let kind: String = r.try_get(1).map_err(&err)?;
            // As SQLite reports it: a failure of the read, naming what it could not take.
            let kind = rows::event_kind(&kind).map_err(|e| StoreError::Backend {
                path: path.to_string(),
                doing: "reading a finding",
                source: e.into(),
            })?;
            events.push(Event {
                at: r.try_get(0).map_err(&err)?,
                kind,
                by: r.try_get(2).map_err(&err)?,
                note: r.try_get(3).map_err(&err)?,
            });
        }
        tx.commit().map_err(&err)?;
        Ok(Some((f, events)))
    }
}

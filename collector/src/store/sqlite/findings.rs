//! Findings and their timelines in SQLite (schema 4). Each change is one transaction: the
//! finding's row and its timeline entry are written together or not at all.

use super::SqliteStore;
use crate::findings::lifecycle::{Event, EventKind};
use crate::findings::record::{Change, FindingFilter, FindingKey, FindingRow, Observed, Silence};
use crate::store::StoreError;
use crate::store::rows::{
    self, FINDING_COLUMNS as COLUMNS, SILENCE_COLUMNS, act_refused, event, no_silence,
    not_an_action,
};
use aftercare_shared::model::UnixMillis;
use rusqlite::{OptionalExtension, Transaction, params};

/// Findings (one row per finding; at most one not resolved per key), their timeline, and
/// maintenance windows.
pub(super) const SCHEMA_V4: &str = "
CREATE TABLE findings (
    id             INTEGER PRIMARY KEY,
    host_id        INTEGER NOT NULL REFERENCES hosts(id),
    rule           TEXT NOT NULL,
    subject        TEXT NOT NULL,              -- '' for the host as a whole
    level          INTEGER NOT NULL,           -- 1 (L1) .. 4 (L4)
    category       TEXT NOT NULL,
    title          TEXT NOT NULL,
    recommendation TEXT NOT NULL,
    state          TEXT NOT NULL,              -- open, acknowledged, resolved
    opened_at      INTEGER NOT NULL,
    last_seen      INTEGER NOT NULL,
    acked_at       INTEGER,
    acked_by       TEXT,
    resolved_at    INTEGER,
    resolved_by    TEXT,                       -- NULL when resolved: auto-resolved
    resolution     TEXT,
    sla_from       INTEGER NOT NULL,           -- when the SLA clocks started: opened_at, or
                                               -- the end of a maintenance window it opened in
    respond_by     INTEGER,                    -- SLA deadlines; NULL: no clock runs
    restore_by     INTEGER,
    sla_sent       INTEGER NOT NULL DEFAULT 0, -- findings::record::sla_flag bits
    evidence       TEXT NOT NULL               -- JSON
);
CREATE INDEX findings_key ON findings (host_id, rule, subject, id);
CREATE INDEX findings_state ON findings (state, level);

CREATE TABLE finding_events (
    finding_id INTEGER NOT NULL REFERENCES findings(id),
    seq        INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    by         TEXT,
    note       TEXT,
    PRIMARY KEY (finding_id, seq)
) WITHOUT ROWID;

-- Maintenance windows: findings still record, but notify nobody and their SLA clocks do
-- not run until the window ends.
CREATE TABLE silences (
    id         INTEGER PRIMARY KEY,
    customer   TEXT NOT NULL,
    host       TEXT,                             -- NULL: every host of the customer
    starts     INTEGER NOT NULL,
    ends       INTEGER NOT NULL,
    reason     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- The rules engine's memory between evaluations (pending `for` timers, what is raised), so
-- that a restarted collector still clears what cleared while it was down.
CREATE TABLE rules_state (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL                        -- JSON of rules::State
);
";

fn add_event(tx: &Transaction<'_>, id: i64, e: &Event) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO finding_events (finding_id, seq, at, kind, by, note)
         VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM finding_events WHERE finding_id = ?1),
                 ?2, ?3, ?4, ?5)",
    )?
    .execute(params![id, e.at, e.kind.as_str(), e.by, e.note])?;
    Ok(())
}

fn set_observed(tx: &Transaction<'_>, id: i64, o: &Observed) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "UPDATE findings SET level = ?2, category = ?3, title = ?4, recommendation = ?5,
                evidence = ?6, last_seen = max(last_seen, ?7)
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        o.level,
        o.category,
        o.title,
        o.recommendation,
        o.evidence,
        o.at
    ])
}

impl SqliteStore {
    /// The key's finding that is not resolved, else its most recently resolved one.
    pub(in crate::store) fn finding_for_key(
        &self,
        key: &FindingKey,
    ) -> Result<Option<FindingRow>, StoreError> {
        let err = self.cx.sql("reading a finding");
        self.conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM findings f JOIN hosts h ON h.id = f.host_id
                 WHERE f.host_id = ?1 AND f.rule = ?2 AND f.subject = ?3
                 ORDER BY (f.state != 'resolved') DESC, f.id DESC LIMIT 1"
            ))
            .and_then(|mut s| {
                s.query_row(params![key.host, key.rule, key.subject], |r| {
                    rows::finding(r)
                })
                .optional()
            })
            .map_err(err)
    }

    pub(in crate::store) fn apply_finding_change(
        &mut self,
        change: &Change,
    ) -> Result<i64, StoreError> {
        self.writable("recording a finding")?;
        let err = self.cx.sql("recording a finding");
        let tx = self.conn.transaction().map_err(&err)?;
        let missing = |id: i64| StoreError::NoSuchFinding(id);
        let id = match change {
            Change::Open {
                key,
                observed: o,
                clocks,
            } => {
                tx.prepare_cached(
                    "INSERT INTO findings (host_id, rule, subject, level, category, title,
                        recommendation, state, opened_at, last_seen, sla_from, respond_by,
                        restore_by, evidence)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open', ?8, ?8, ?9, ?10, ?11, ?12)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        key.host,
                        key.rule,
                        key.subject,
                        o.level,
                        o.category,
                        o.title,
                        o.recommendation,
                        o.at,
                        clocks.from,
                        clocks.respond_by,
                        clocks.restore_by,
                        o.evidence
                    ])
                })
                .map_err(&err)?;
                let id = tx.last_insert_rowid();
                add_event(&tx, id, &event(o.at, EventKind::Opened)).map_err(&err)?;
                id
            }
            Change::Reopen {
                id,
                observed: o,
                clocks,
            } => {
                let n = tx
                    .prepare_cached(
                        "UPDATE findings SET state = 'open', acked_at = NULL, acked_by = NULL,
                            resolved_at = NULL, resolved_by = NULL, resolution = NULL,
                            sla_from = ?2, respond_by = ?3, restore_by = ?4, sla_sent = 0
                         WHERE id = ?1",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            id,
                            clocks.from,
                            clocks.respond_by,
                            clocks.restore_by
                        ])
                    })
                    .map_err(&err)?;
                if n == 0 {
                    return Err(missing(*id));
                }
                set_observed(&tx, *id, o).map_err(&err)?;
                add_event(&tx, *id, &event(o.at, EventKind::Reopened)).map_err(&err)?;
                *id
            }
            Change::Update {
                id,
                observed: o,
                level_changed,
            } => {
                if set_observed(&tx, *id, o).map_err(&err)? == 0 {
                    return Err(missing(*id));
                }
                if *level_changed {
                    add_event(&tx, *id, &rows::level_changed(o)).map_err(&err)?;
                }
                *id
            }
            Change::AutoResolve { id, at } => {
                let n = tx
                    .prepare_cached(
                        "UPDATE findings SET state = 'resolved', resolved_at = ?2,
                            resolved_by = NULL, resolution = NULL
                         WHERE id = ?1 AND state != 'resolved'",
                    )
                    .and_then(|mut s| s.execute(params![id, at]))
                    .map_err(&err)?;
                if n > 0 {
                    add_event(&tx, *id, &event(*at, EventKind::AutoResolved)).map_err(&err)?;
                }
                *id
            }
            Change::Act { id, event: e } => {
                let sql = match e.kind {
                    EventKind::Acknowledged => {
                        "UPDATE findings SET state = 'acknowledged', acked_at = ?2, acked_by = ?3
                         WHERE id = ?1 AND state = 'open'"
                    }
                    EventKind::Resolved => {
                        "UPDATE findings SET state = 'resolved', resolved_at = ?2,
                            resolved_by = ?3, resolution = ?4
                         WHERE id = ?1 AND state != 'resolved'"
                    }
                    other => return Err(not_an_action(other)),
                };
                let mut stmt = tx.prepare_cached(sql).map_err(&err)?;
                let n = if e.kind == EventKind::Resolved {
                    stmt.execute(params![id, e.at, e.by, e.note])
                } else {
                    stmt.execute(params![id, e.at, e.by])
                }
                .map_err(&err)?;
                drop(stmt);
                if n == 0 {
                    // Gone, or changed by someone else since the caller looked.
                    let state: Option<String> = tx
                        .query_row("SELECT state FROM findings WHERE id = ?1", [id], |r| {
                            r.get(0)
                        })
                        .optional()
                        .map_err(&err)?;
                    return Err(act_refused(*id, state, e.kind));
                }
                add_event(&tx, *id, e).map_err(&err)?;
                *id
            }
            Change::Escalate { id, flag, event: e } => {
                let n = tx
                    .prepare_cached("UPDATE findings SET sla_sent = sla_sent | ?2 WHERE id = ?1")
                    .and_then(|mut s| s.execute(params![id, flag]))
                    .map_err(&err)?;
                if n == 0 {
                    return Err(missing(*id));
                }
                add_event(&tx, *id, e).map_err(&err)?;
                *id
            }
        };
        tx.commit().map_err(&err)?;
        Ok(id)
    }

    pub(in crate::store) fn insert_silence(&mut self, s: &Silence) -> Result<i64, StoreError> {
        self.writable("adding a maintenance window")?;
        self.conn
            .prepare_cached(
                "INSERT INTO silences (customer, host, starts, ends, reason, created_by, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    s.customer,
                    s.host,
                    s.starts,
                    s.ends,
                    s.reason,
                    s.created_by,
                    s.created_at
                ])
            })
            .map_err(self.cx.sql("adding a maintenance window"))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Windows that end after `after`, by start.
    pub(in crate::store) fn select_silences(
        &self,
        after: UnixMillis,
    ) -> Result<Vec<Silence>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {SILENCE_COLUMNS} FROM silences WHERE ends > ?1 ORDER BY starts, id"
            ))
            .and_then(|mut st| st.query_map([after], |r| rows::silence(r))?.collect())
            .map_err(self.cx.sql("listing maintenance windows"))
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
            .prepare_cached("UPDATE silences SET ends = max(starts, min(ends, ?2)) WHERE id = ?1")
            .and_then(|mut st| st.execute(params![id, at]))
            .map_err(self.cx.sql("ending a maintenance window"))?;
        if n == 0 {
            return Err(no_silence(id));
        }
        Ok(())
    }

    pub(in crate::store) fn load_rules_state(&self) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT state FROM rules_state WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.cx.sql("reading the rules' state"))
    }

    pub(in crate::store) fn store_rules_state(&mut self, json: &str) -> Result<(), StoreError> {
        self.writable("saving the rules' state")?;
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO rules_state (id, state) VALUES (1, ?1)")
            .and_then(|mut s| s.execute([json]))
            .map(|_| ())
            .map_err(self.cx.sql("saving the rules' state"))
    }

    pub(in crate::store) fn list_findings(
        &self,
        f: &FindingFilter,
    ) -> Result<Vec<FindingRow>, StoreError> {
        let err = self.cx.sql("listing findings");
        let host = match &f.host {
            Some(h) => Some(self.resolve_host(h)?),
            None => None,
        };
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM findings f JOIN hosts h ON h.id = f.host_id
                 WHERE (?1 = 0 OR f.state != 'resolved')
                   AND (?2 IS NULL OR h.customer = ?2)
                   AND (?3 IS NULL OR f.host_id = ?3)
                   AND max(f.opened_at, f.last_seen, coalesce(f.resolved_at, 0)) >= ?4
                 ORDER BY f.level, coalesce(f.restore_by, f.respond_by, 9223372036854775807),
                          f.opened_at, f.id"
            ))
            .map_err(&err)?;
        stmt.query_map(
            params![f.open_only as i64, f.customer, host, f.since],
            |r| rows::finding(r),
        )
        .and_then(|rows| rows.collect())
        .map_err(err)
    }

    pub(in crate::store) fn finding_with_timeline(
        &self,
        id: i64,
    ) -> Result<Option<(FindingRow, Vec<Event>)>, StoreError> {
        let err = self.cx.sql("reading a finding");
        let _snapshot = self.snapshot().map_err(&err)?;
        let Some(f) = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM findings f JOIN hosts h ON h.id = f.host_id WHERE f.id = ?1"
            ))
            .and_then(|mut s| s.query_row(params![id], |r| rows::finding(r)).optional())
            .map_err(&err)?
        else {
            return Ok(None);
        };
        let events = self
            .conn
            .prepare_cached(
                "SELECT at, kind, by, note FROM finding_events WHERE finding_id = ?1 ORDER BY seq",
            )
            .and_then(|mut s| {
                s.query_map(params![id], |r| {
                    let kind: String = r.get(1)?;
                    let kind = rows::event_kind(&kind).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            1,
                            rusqlite::types::Type::Text,
                            e.into(),
                        )
                    })?;
                    Ok(Event {
                        at: r.get(0)?,
                        kind,
                        by: r.get(2)?,
                        note: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(&err)?;
        Ok(Some((f, events)))
    }
}

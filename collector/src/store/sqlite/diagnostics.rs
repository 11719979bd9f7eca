//! Remote diagnostics in SQLite (the `diagnostics` table of schema 7): a row per request,
//! written `pending` when asked and finished once, when the agent answered or could not.

use super::SqliteStore;
use crate::diagnose::record::{DiagnosticResult, DiagnosticRow, NewDiagnostic, Sender, args_json};
use crate::store::rows::{
    self, DIAGNOSTIC_COLUMNS as COLUMNS, EXPIRED_DIAGNOSTIC, UNCLAIMED_DIAGNOSTICS,
    diagnostic as row,
};
use crate::store::{HostId, StoreError};
use rusqlite::{OptionalExtension, params};

impl SqliteStore {
    /// One collector has the file, so "this collector" is recorded as '' (no name needed).
    pub(super) fn insert_diagnostic(
        &mut self,
        d: &NewDiagnostic,
        sender: Sender,
        deadline: i64,
    ) -> Result<i64, StoreError> {
        self.writable("recording a diagnostic")?;
        let claimed_by = match sender {
            Sender::ThisCollector => Some(""),
            Sender::Holder => None,
        };
        self.conn
            .execute(
                "INSERT INTO diagnostics (host, probe, args, finding, requested_by, requested_at,
                    status, claimed_by, deadline)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8)",
                params![
                    d.host,
                    d.probe,
                    args_json(&d.args),
                    d.finding,
                    d.requested_by,
                    d.requested_at,
                    claimed_by,
                    deadline
                ],
            )
            .map_err(self.cx.sql("recording a diagnostic"))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub(super) fn select_unclaimed_diagnostics(
        &mut self,
    ) -> Result<Vec<(i64, NewDiagnostic)>, StoreError> {
        let err = self.cx.sql("listing handed-over diagnostics");
        let mut stmt = self
            .conn
            .prepare_cached(UNCLAIMED_DIAGNOSTICS)
            .map_err(&err)?;
        stmt.query_map([], |r| rows::unclaimed_diagnostic(r))
            .map_err(&err)?
            .collect::<Result<_, _>>()
            .map_err(err)
    }

    pub(super) fn claim_pending_diagnostic(
        &mut self,
        id: i64,
        deadline: i64,
    ) -> Result<bool, StoreError> {
        self.writable("taking a diagnostic")?;
        let n = self
            .conn
            .execute(
                "UPDATE diagnostics SET claimed_by = '', deadline = ?2
                 WHERE id = ?1 AND status = 'pending' AND claimed_by IS NULL",
                params![id, deadline],
            )
            .map_err(self.cx.sql("taking a diagnostic"))?;
        Ok(n == 1)
    }

    pub(super) fn end_expired_diagnostics(&mut self, now: i64) -> Result<u64, StoreError> {
        self.writable("ending diagnostics past their deadline")?;
        let n = self
            .conn
            .execute(
                &format!(
                    "UPDATE diagnostics SET {EXPIRED_DIAGNOSTIC}, finished_at = ?1
                     WHERE status = 'pending' AND deadline < ?1"
                ),
                params![now],
            )
            .map_err(self.cx.sql("ending diagnostics past their deadline"))?;
        Ok(n as u64)
    }

    /// Only a pending row is finished: a result never overwrites another.
    pub(super) fn update_diagnostic(
        &mut self,
        id: i64,
        r: &DiagnosticResult,
    ) -> Result<bool, StoreError> {
        self.writable("storing a diagnostic's result")?;
        let (output, truncated) = r.stored_output();
        let n = self
            .conn
            .execute(
                "UPDATE diagnostics SET status = ?2, finished_at = ?3, exit_code = ?4,
                    truncated = ?5, output = ?6, message = ?7
                 WHERE id = ?1 AND status = 'pending'",
                params![
                    id,
                    r.status.as_str(),
                    r.finished_at,
                    r.exit_code,
                    truncated,
                    output,
                    r.message
                ],
            )
            .map_err(self.cx.sql("storing a diagnostic's result"))?;
        Ok(n == 1)
    }

    pub(super) fn select_diagnostic(
        &mut self,
        id: i64,
    ) -> Result<Option<DiagnosticRow>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS}, d.output FROM diagnostics d JOIN hosts h ON h.id = d.host WHERE d.id = ?1"
            ))
            .and_then(|mut st| st.query_row([id], |r| row(r, true)).optional())
            .map_err(self.cx.sql("reading a diagnostic"))
    }

    pub(super) fn select_diagnostics(
        &mut self,
        host: HostId,
        limit: usize,
        before_id: Option<i64>,
    ) -> Result<Vec<DiagnosticRow>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM diagnostics d JOIN hosts h ON h.id = d.host
                 WHERE d.host = ?1 AND d.id < ?2 ORDER BY d.id DESC LIMIT ?3"
            ))
            .and_then(|mut st| {
                st.query_map(
                    params![
                        host,
                        before_id.unwrap_or(i64::MAX),
                        limit.min(i64::MAX as usize) as i64
                    ],
                    |r| row(r, false),
                )?
                .collect()
            })
            .map_err(self.cx.sql("listing diagnostics"))
    }

    pub(super) fn select_finding_diagnostics(
        &mut self,
        finding: i64,
    ) -> Result<Vec<DiagnosticRow>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM diagnostics d JOIN hosts h ON h.id = d.host
                 WHERE d.finding = ?1 ORDER BY d.id"
            ))
            .and_then(|mut st| st.query_map([finding], |r| row(r, false))?.collect())
            .map_err(self.cx.sql("listing a finding's diagnostics"))
    }

    pub(super) fn fail_pending_diagnostics(
        &mut self,
        now: i64,
        message: &str,
    ) -> Result<u64, StoreError> {
        self.writable("ending pending diagnostics")?;
        let n = self
            .conn
            .execute(
                "UPDATE diagnostics SET status = 'failed', finished_at = ?1, message = ?2
                 WHERE status = 'pending'",
                params![now, message],
            )
            .map_err(self.cx.sql("ending pending diagnostics"))?;
        Ok(n as u64)
    }

    pub(super) fn count_done_diagnostics(
        &self,
        host: HostId,
        since: i64,
        until: i64,
    ) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM diagnostics
                 WHERE host = ?1 AND requested_at >= ?2 AND requested_at < ?3 AND status = 'done'",
            )
            .and_then(|mut s| s.query_row(params![host, since, until], |r| r.get(0)))
            .map_err(self.cx.sql("counting diagnostics"))?;
        Ok(n.max(0) as u64)
    }

    pub(super) fn host_id_by_name(&self, name: &str) -> Result<HostId, StoreError> {
        self.resolve_host(name)
    }
}

//! Remote diagnostics in PostgreSQL (what `../sqlite/diagnostics.rs` does for SQLite): a
//! row per request, written `pending` when asked and finished once, when the agent
//! answered or could not.

use super::PgStore;
use crate::diagnose::record::{
    DiagnosticResult, DiagnosticRow, Elsewhere, NewDiagnostic, Sender, args_json,
};
use crate::store::rows::{
    self, DIAGNOSTIC_COLUMNS as COLUMNS, EXPIRED_DIAGNOSTIC, UNCLAIMED_DIAGNOSTICS,
};
use crate::store::{HostId, StoreError};
use aftercare_shared::diag::ProbeInfo;

impl PgStore {
    pub(in crate::store) fn insert_diagnostic(
        &mut self,
        d: &NewDiagnostic,
        sender: Sender,
        deadline: i64,
    ) -> Result<i64, StoreError> {
        self.writable("recording a diagnostic")?;
        let claimed_by = match sender {
            Sender::ThisCollector => Some(self.node.as_str()),
            Sender::Holder => None,
        };
        self.conn
            .query_one(
                "INSERT INTO diagnostics (host, probe, args, finding, requested_by, requested_at,
                    status, claimed_by, deadline)
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8)
                 RETURNING id",
                &[
                    &d.host,
                    &d.probe,
                    &args_json(&d.args),
                    &d.finding,
                    &d.requested_by,
                    &d.requested_at,
                    &claimed_by,
                    &deadline,
                ],
            )
            .map(|r| r.get(0))
            .map_err(self.cx.sql("recording a diagnostic"))
    }

    pub(in crate::store) fn select_unclaimed_diagnostics(
        &mut self,
    ) -> Result<Vec<(i64, NewDiagnostic)>, StoreError> {
        let err = self.cx.sql("listing handed-over diagnostics");
        self.conn
            .query(UNCLAIMED_DIAGNOSTICS, &[])
            .map_err(&err)?
            .iter()
            .map(rows::unclaimed_diagnostic)
            .collect::<Result<_, _>>()
            .map_err(err)
    }

    pub(in crate::store) fn claim_pending_diagnostic(
        &mut self,
        id: i64,
        deadline: i64,
    ) -> Result<bool, StoreError> {
        self.writable("taking a diagnostic")?;
        let n = self
            .conn
            .execute(
                "UPDATE diagnostics SET claimed_by = $3, deadline = $2
                 WHERE id = $1 AND status = 'pending' AND claimed_by IS NULL",
                &[&id, &deadline, &self.node],
            )
            .map_err(self.cx.sql("taking a diagnostic"))?;
        Ok(n == 1)
    }

    pub(in crate::store) fn end_expired_diagnostics(
        &mut self,
        now: i64,
    ) -> Result<u64, StoreError> {
        self.writable("ending diagnostics past their deadline")?;
        self.conn
            .execute(
                &format!(
                    "UPDATE diagnostics SET {EXPIRED_DIAGNOSTIC}, finished_at = $1
                     WHERE status = 'pending' AND deadline < $1"
                ),
                &[&now],
            )
            .map_err(self.cx.sql("ending diagnostics past their deadline"))
    }

    /// Written only while this collector holds the connection, and only when it changed.
    pub(in crate::store) fn update_probes(
        &mut self,
        host: HostId,
        probes: &[ProbeInfo],
    ) -> Result<(), StoreError> {
        self.writable("keeping a host's probes")?;
        let json = serde_json::to_string(probes).map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.conn
            .execute(
                "UPDATE hosts SET probes = $2
                 WHERE id = $1 AND connected_via = $3 AND probes IS DISTINCT FROM $2",
                &[&host, &json, &self.node],
            )
            .map_err(self.cx.sql("keeping a host's probes"))?;
        Ok(())
    }

    pub(in crate::store) fn select_elsewhere(
        &mut self,
        host: HostId,
    ) -> Result<Option<Elsewhere>, StoreError> {
        let row = self
            .conn
            .query_opt(
                "SELECT connected_via, probes FROM hosts
                 WHERE id = $1 AND connected AND connected_via <> $2",
                &[&host, &self.node],
            )
            .map_err(self.cx.sql("finding a host's collector"))?;
        let Some(row) = row else { return Ok(None) };
        let probes: Option<String> = row.get(1);
        let probes = match probes {
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| self.cx.corrupt(format!("host {host}'s probes"), e))?,
            None => Vec::new(),
        };
        Ok(Some(Elsewhere {
            via: row.get(0),
            probes,
        }))
    }

    /// Only a pending row is finished: a result never overwrites another.
    pub(in crate::store) fn update_diagnostic(
        &mut self,
        id: i64,
        r: &DiagnosticResult,
    ) -> Result<bool, StoreError> {
        self.writable("storing a diagnostic's result")?;
        let (output, truncated) = r.stored_output();
        let n = self
            .conn
            .execute(
                "UPDATE diagnostics SET status = $2, finished_at = $3, exit_code = $4,
                    truncated = $5, output = $6, message = $7
                 WHERE id = $1 AND status = 'pending'",
                &[
                    &id,
                    &r.status.as_str(),
                    &r.finished_at,
                    &r.exit_code,
                    &truncated,
                    &output,
                    &r.message,
                ],
            )
            .map_err(self.cx.sql("storing a diagnostic's result"))?;
        Ok(n == 1)
    }

    pub(in crate::store) fn select_diagnostic(
        &mut self,
        id: i64,
    ) -> Result<Option<DiagnosticRow>, StoreError> {
        let err = self.cx.sql("reading a diagnostic");
        self.conn
            .query_opt(
                &format!(
                    "SELECT {COLUMNS}, d.output FROM diagnostics d JOIN hosts h ON h.id = d.host
                     WHERE d.id = $1"
                ),
                &[&id],
            )
            .map_err(&err)?
            .map(|r| rows::diagnostic(&r, true))
            .transpose()
            .map_err(err)
    }

    /// A host's diagnostics, newest first, without output.
    pub(in crate::store) fn select_diagnostics(
        &mut self,
        host: HostId,
        limit: usize,
        before_id: Option<i64>,
    ) -> Result<Vec<DiagnosticRow>, StoreError> {
        let err = self.cx.sql("listing diagnostics");
        self.conn
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM diagnostics d JOIN hosts h ON h.id = d.host
                     WHERE d.host = $1 AND d.id < $2 ORDER BY d.id DESC LIMIT $3"
                ),
                &[
                    &host,
                    &before_id.unwrap_or(i64::MAX),
                    &(limit.min(i64::MAX as usize) as i64),
                ],
            )
            .map_err(&err)?
            .iter()
            .map(|r| rows::diagnostic(r, false))
            .collect::<Result<_, _>>()
            .map_err(err)
    }

    /// The diagnostics run from a finding, oldest first, without output.
    pub(in crate::store) fn select_finding_diagnostics(
        &mut self,
        finding: i64,
    ) -> Result<Vec<DiagnosticRow>, StoreError> {
        let err = self.cx.sql("listing a finding's diagnostics");
        self.conn
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM diagnostics d JOIN hosts h ON h.id = d.host
                     WHERE d.finding = $1 ORDER BY d.id"
                ),
                &[&finding],
            )
            .map_err(&err)?
            .iter()
            .map(|r| rows::diagnostic(r, false))
            .collect::<Result<_, _>>()
            .map_err(err)
    }

    pub(in crate::store) fn fail_pending_diagnostics(
        &mut self,
        now: i64,
        message: &str,
    ) -> Result<u64, StoreError> {
        self.writable("ending pending diagnostics")?;
        self.conn
            .execute(
                // Only what this collector sent: the rest waits for, or was taken by,
                // another collector sharing the database.
                "UPDATE diagnostics SET status = 'failed', finished_at = $1, message = $2
                 WHERE status = 'pending' AND claimed_by = $3",
                &[&now, &message, &self.node],
            )
            .map_err(self.cx.sql("ending pending diagnostics"))
    }

    pub(in crate::store) fn count_done_diagnostics(
        &mut self,
        host: HostId,
        since: i64,
        until: i64,
    ) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_one(
                "SELECT count(*) FROM diagnostics
                 WHERE host = $1 AND requested_at >= $2 AND requested_at < $3 AND status = 'done'",
                &[&host, &since, &until],
            )
            .map(|r| r.get(0))
            .map_err(self.cx.sql("counting diagnostics"))?;
        Ok(n.max(0) as u64)
    }

    pub(in crate::store) fn host_id_by_name(&mut self, name: &str) -> Result<HostId, StoreError> {
        Self::resolve_host(&mut *self.conn, &self.cx, name)
    }
}

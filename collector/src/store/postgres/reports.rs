//! Reports in PostgreSQL (what `../sqlite/reports.rs` does for SQLite). A scheduled
//! report is unique per customer and period by the partial index
//! `reports_once_per_period`, so a quarter's report is made once even when several
//! collectors, or one that restarts, ask for it.

use super::PgStore;
use crate::report::record::{NewReport, ReportRow};
use crate::store::StoreError;
use crate::store::rows::{self, REPORT_COLUMNS as COLUMNS, report_data, report_outcome};
use aftercare_shared::model::UnixMillis;

impl PgStore {
    /// The new report's id; for a scheduled one that exists already, `None`, unless it
    /// failed: then that row is taken again.
    pub(in crate::store) fn insert_report(
        &mut self,
        n: &NewReport,
    ) -> Result<Option<i64>, StoreError> {
        self.writable("recording a report")?;
        let err = self.cx.sql("recording a report");
        let mut tx = self.conn.transaction().map_err(&err)?;
        // A collector inserting the same period at this moment is waited for; once it has
        // committed, this inserts nothing.
        let inserted = tx
            .query_opt(
                "INSERT INTO reports (customer, period_from, period_to, label, lang, time_zone,
                    scheduled, status, requested_by, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'running', $8, $9)
                 ON CONFLICT (customer, period_from, period_to) WHERE scheduled DO NOTHING
                 RETURNING id",
                &[
                    &n.customer,
                    &n.from,
                    &n.to,
                    &n.label,
                    &n.lang,
                    &n.time_zone,
                    &n.scheduled,
                    &n.requested_by,
                    &n.created_at,
                ],
            )
            .map_err(&err)?;
        let id = match inserted {
            Some(r) => Some(r.get(0)),
            // The quarter's report exists: try again only if it failed. The row lock makes
            // one of two collectors claiming it at once take it.
            None => tx
                .query_opt(
                    "UPDATE reports SET status = 'running', progress = 0, message = '',
                        requested_by = $4, created_at = $5, finished_at = NULL, data = NULL
                     WHERE customer = $1 AND period_from = $2 AND period_to = $3 AND scheduled
                       AND status = 'failed'
                     RETURNING id",
                    &[&n.customer, &n.from, &n.to, &n.requested_by, &n.created_at],
                )
                .map_err(&err)?
                .map(|r| r.get(0)),
        };
        tx.commit().map_err(&err)?;
        Ok(id)
    }

    pub(in crate::store) fn update_report_progress(
        &mut self,
        id: i64,
        pct: u8,
    ) -> Result<(), StoreError> {
        self.writable("noting a report's progress")?;
        self.conn
            .execute(
                "UPDATE reports SET progress = $2 WHERE id = $1 AND status = 'running'",
                &[&id, &i32::from(pct.min(100))],
            )
            .map_err(self.cx.sql("noting a report's progress"))?;
        Ok(())
    }

    /// End a running report: its JSON, or why it failed. A finished one stays as it is.
    pub(in crate::store) fn complete_report(
        &mut self,
        id: i64,
        outcome: Result<&[u8], &str>,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        self.writable("storing a report")?;
        let (status, message, data) = report_outcome(outcome)?;
        self.conn
            .execute(
                "UPDATE reports SET status = $2, message = $3, data = $4, finished_at = $5,
                    progress = CASE WHEN $2 = 'done' THEN 100 ELSE progress END
                 WHERE id = $1 AND status = 'running'",
                &[&id, &status.as_str(), &message, &data, &now],
            )
            .map_err(self.cx.sql("storing a report"))?;
        Ok(())
    }

    pub(in crate::store) fn select_report(
        &mut self,
        id: i64,
    ) -> Result<Option<ReportRow>, StoreError> {
        let err = self.cx.sql("reading a report");
        let Some(r) = self
            .conn
            .query_opt(
                &format!("SELECT {COLUMNS}, data FROM reports WHERE id = $1"),
                &[&id],
            )
            .map_err(&err)?
        else {
            return Ok(None);
        };
        let mut report = rows::report(&r).map_err(&err)?;
        let blob: Option<&[u8]> = r.try_get(14).map_err(&err)?;
        if let Some(b) = blob {
            report.data =
                Some(report_data(b).map_err(|e| self.cx.corrupt(format!("report {id}"), e))?);
        }
        Ok(Some(report))
    }

    /// Newest first, without their data; `limit` 0: all.
    pub(in crate::store) fn select_reports(
        &mut self,
        customer: Option<&str>,
        limit: usize,
        before_id: Option<i64>,
    ) -> Result<Vec<ReportRow>, StoreError> {
        let err = self.cx.sql("listing reports");
        // LIMIT NULL: all of them.
        let limit = (limit != 0).then(|| i64::try_from(limit).unwrap_or(i64::MAX));
        self.conn
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM reports
                     WHERE ($1::text IS NULL OR customer = $1) AND ($2::bigint IS NULL OR id < $2)
                     ORDER BY id DESC LIMIT $3"
                ),
                &[&customer, &before_id, &limit],
            )
            .map_err(&err)?
            .iter()
            .map(rows::report)
            .collect::<Result<_, _>>()
            .map_err(err)
    }

    pub(in crate::store) fn fail_running_reports(
        &mut self,
        now: UnixMillis,
        message: &str,
    ) -> Result<u64, StoreError> {
        self.writable("ending unfinished reports")?;
        self.conn
            .execute(
                // Scheduled reports belong to the scheduler, whose lease the caller has just
                // taken. One asked for over the API may be in the making on another
                // collector sharing the database: it is ended only once it has run far
                // longer than any report takes.
                "UPDATE reports SET status = 'failed', message = $2, finished_at = $1
                 WHERE status = 'running' AND (scheduled OR created_at < $3)",
                &[
                    &now,
                    &message,
                    &(now - crate::store::UNSCHEDULED_REPORT_STALE_MS),
                ],
            )
            .map_err(self.cx.sql("ending unfinished reports"))
    }
}

//! Reports in SQLite (the `reports` table of schema 8). A scheduled report is unique per
//! customer and period by a partial index, so a quarter's report is made once even when
//! several collectors, or one that restarts, ask for it.

use super::SqliteStore;
use crate::report::record::{NewReport, ReportRow};
use crate::store::StoreError;
use crate::store::rows::{REPORT_COLUMNS as COLUMNS, report as row, report_data, report_outcome};
use aftercare_shared::model::UnixMillis;
use rusqlite::{OptionalExtension, params};

impl SqliteStore {
    pub(super) fn insert_report(&mut self, n: &NewReport) -> Result<Option<i64>, StoreError> {
        self.writable("recording a report")?;
        let tx = self
            .conn
            .transaction()
            .map_err(self.cx.sql("recording a report"))?;
        let inserted = tx
            .execute(
                "INSERT INTO reports (customer, period_from, period_to, label, lang, time_zone,
                    scheduled, status, requested_by, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'running', ?8, ?9)
                 ON CONFLICT DO NOTHING",
                params![
                    n.customer,
                    n.from,
                    n.to,
                    n.label,
                    n.lang,
                    n.time_zone,
                    n.scheduled as i64,
                    n.requested_by,
                    n.created_at
                ],
            )
            .map_err(self.cx.sql("recording a report"))?;
        let id = if inserted == 1 {
            Some(tx.last_insert_rowid())
        } else {
            // The quarter's report exists: try again only if it failed.
            tx.query_row(
                "UPDATE reports SET status = 'running', progress = 0, message = '',
                    requested_by = ?4, created_at = ?5, finished_at = NULL, data = NULL
                 WHERE customer = ?1 AND period_from = ?2 AND period_to = ?3 AND scheduled = 1
                   AND status = 'failed'
                 RETURNING id",
                params![n.customer, n.from, n.to, n.requested_by, n.created_at],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.cx.sql("recording a report"))?
        };
        tx.commit().map_err(self.cx.sql("recording a report"))?;
        Ok(id)
    }

    pub(super) fn update_report_progress(&mut self, id: i64, pct: u8) -> Result<(), StoreError> {
        self.writable("noting a report's progress")?;
        self.conn
            .execute(
                "UPDATE reports SET progress = ?2 WHERE id = ?1 AND status = 'running'",
                params![id, i64::from(pct.min(100))],
            )
            .map_err(self.cx.sql("noting a report's progress"))?;
        Ok(())
    }

    pub(super) fn complete_report(
        &mut self,
        id: i64,
        outcome: Result<&[u8], &str>,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        self.writable("storing a report")?;
        let (status, message, data) = report_outcome(outcome)?;
        self.conn
            .execute(
                "UPDATE reports SET status = ?2, message = ?3, data = ?4, finished_at = ?5,
                    progress = CASE WHEN ?2 = 'done' THEN 100 ELSE progress END
                 WHERE id = ?1 AND status = 'running'",
                params![id, status.as_str(), message, data, now],
            )
            .map_err(self.cx.sql("storing a report"))?;
        Ok(())
    }

    pub(super) fn select_report(&mut self, id: i64) -> Result<Option<ReportRow>, StoreError> {
        let cx = self.cx.clone();
        let found = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS}, data FROM reports WHERE id = ?1"
            ))
            .and_then(|mut st| {
                st.query_row([id], |r| {
                    let blob: Option<Vec<u8>> = r.get(14)?;
                    Ok((row(r)?, blob))
                })
                .optional()
            })
            .map_err(cx.sql("reading a report"))?;
        let Some((mut report, blob)) = found else {
            return Ok(None);
        };
        if let Some(b) = blob {
            report.data = Some(report_data(&b).map_err(|e| cx.corrupt(format!("report {id}"), e))?);
        }
        Ok(Some(report))
    }

    pub(super) fn select_reports(
        &mut self,
        customer: Option<&str>,
        limit: usize,
        before_id: Option<i64>,
    ) -> Result<Vec<ReportRow>, StoreError> {
        let limit = if limit == 0 { -1 } else { limit as i64 };
        self.conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM reports
                 WHERE (?1 IS NULL OR customer = ?1) AND (?2 IS NULL OR id < ?2)
                 ORDER BY id DESC LIMIT ?3"
            ))
            .and_then(|mut st| {
                st.query_map(params![customer, before_id, limit], |r| row(r))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(self.cx.sql("listing reports"))
    }

    pub(super) fn fail_running_reports(
        &mut self,
        now: UnixMillis,
        message: &str,
    ) -> Result<u64, StoreError> {
        self.writable("ending unfinished reports")?;
        let n = self
            .conn
            .execute(
                // See `Store::abandon_reports`: one asked for over the API or made by the
                // CLI may be in the making in another process.
                "UPDATE reports SET status = 'failed', message = ?2, finished_at = ?1
                 WHERE status = 'running' AND (scheduled OR created_at < ?3)",
                params![
                    now,
                    message,
                    now - crate::store::UNSCHEDULED_REPORT_STALE_MS
                ],
            )
            .map_err(self.cx.sql("ending unfinished reports"))?;
        Ok(n as u64)
    }
}

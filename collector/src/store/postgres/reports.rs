//! PostgreSQL: what `../sqlite/reports.rs` does for SQLite. (STUBS: being written.)
#![allow(unused)]
use super::PgStore;
use crate::report::record::{NewReport, ReportRow, Status};
use crate::store::StoreError;
use crate::store::TokenRow;
use aftercare_shared::model::UnixMillis;

impl PgStore {
    pub(in crate::store) fn insert_report(
        &mut self,
        n: &NewReport,
    ) -> Result<Option<i64>, StoreError> {
        todo!()
    }

    pub(in crate::store) fn update_report_progress(
        &mut self,
        id: i64,
        pct: u8,
    ) -> Result<(), StoreError> {
        todo!()
    }

    pub(in crate::store) fn complete_report(
        &mut self,
        id: i64,
        outcome: Result<&[u8], &str>,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        todo!()
    }

    pub(in crate::store) fn select_report(
        &mut self,
        id: i64,
    ) -> Result<Option<ReportRow>, StoreError> {
        todo!()
    }

    pub(in crate::store) fn select_reports(
        &mut self,
        customer: Option<&str>,
        limit: usize,
        before_id: Option<i64>,
    ) -> Result<Vec<ReportRow>, StoreError> {
        todo!()
    }

    pub(in crate::store) fn fail_running_reports(
        &mut self,
        now: UnixMillis,
        message: &str,
    ) -> Result<u64, StoreError> {
        todo!()
    }
}

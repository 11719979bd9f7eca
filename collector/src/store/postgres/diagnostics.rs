//! PostgreSQL: what `../sqlite/diagnostics.rs` does for SQLite. (STUBS: being written.)
#![allow(unused)]
use super::PgStore;
use crate::diagnose::record::{DiagnosticResult, DiagnosticRow, MAX_STORED_OUTPUT, NewDiagnostic};
use crate::store::TokenRow;
use crate::store::{HostId, StoreError};
use aftercare_shared::model::UnixMillis;

impl PgStore {
    pub(in crate::store) fn insert_diagnostic(
        &mut self,
        d: &NewDiagnostic,
    ) -> Result<i64, StoreError> {
        todo!()
    }

    pub(in crate::store) fn update_diagnostic(
        &mut self,
        id: i64,
        r: &DiagnosticResult,
    ) -> Result<bool, StoreError> {
        todo!()
    }

    pub(in crate::store) fn select_diagnostic(
        &mut self,
        id: i64,
    ) -> Result<Option<DiagnosticRow>, StoreError> {
        todo!()
    }

    pub(in crate::store) fn select_diagnostics(
        &mut self,
        host: HostId,
        limit: usize,
        before_id: Option<i64>,
    ) -> Result<Vec<DiagnosticRow>, StoreError> {
        todo!()
    }

    pub(in crate::store) fn select_finding_diagnostics(
        &mut self,
        finding: i64,
    ) -> Result<Vec<DiagnosticRow>, StoreError> {
        todo!()
    }

    pub(in crate::store) fn fail_pending_diagnostics(
        &mut self,
        now: i64,
        message: &str,
    ) -> Result<u64, StoreError> {
        todo!()
    }

    pub(in crate::store) fn count_done_diagnostics(
        &self,
        host: HostId,
        since: i64,
        until: i64,
    ) -> Result<u64, StoreError> {
        todo!()
    }

    pub(in crate::store) fn host_id_by_name(&self, name: &str) -> Result<HostId, StoreError> {
        todo!()
    }
}

//! PostgreSQL: what `../sqlite/desk.rs` does for SQLite. (STUBS: being written.)
#![allow(unused)]
use super::PgStore;
use crate::store::TokenRow;
use crate::store::{AuditFilter, AuditRow, ContractAssignment, StoreError};
use aftercare_shared::model::UnixMillis;

impl PgStore {
    pub(in crate::store) fn insert_audit(&mut self, a: &AuditRow) -> Result<i64, StoreError> {
        todo!()
    }

    pub(in crate::store) fn select_audit(
        &self,
        f: &AuditFilter,
    ) -> Result<Vec<AuditRow>, StoreError> {
        todo!()
    }

    pub(in crate::store) fn upsert_contract(
        &mut self,
        c: &ContractAssignment,
    ) -> Result<(), StoreError> {
        todo!()
    }

    pub(in crate::store) fn select_contracts(&self) -> Result<Vec<ContractAssignment>, StoreError> {
        todo!()
    }

    pub(in crate::store) fn insert_token(
        &mut self,
        t: &TokenRow,
        hash: &str,
    ) -> Result<(), StoreError> {
        todo!()
    }
    pub(in crate::store) fn select_tokens(&mut self) -> Result<Vec<TokenRow>, StoreError> {
        todo!()
    }
    pub(in crate::store) fn select_token_by_hash(
        &mut self,
        hash: &str,
    ) -> Result<Option<TokenRow>, StoreError> {
        todo!()
    }
    pub(in crate::store) fn update_revoke_token(
        &mut self,
        name: &str,
        at: UnixMillis,
    ) -> Result<(), StoreError> {
        todo!()
    }
}

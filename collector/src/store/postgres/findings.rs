//! PostgreSQL: what `../sqlite/findings.rs` does for SQLite. (STUBS: being written.)
#![allow(unused)]
use super::PgStore;
use crate::findings::lifecycle::{Event, EventKind, State};
use crate::findings::record::{Change, FindingFilter, FindingKey, FindingRow, Observed, Silence};
use crate::store::StoreError;
use crate::store::TokenRow;
use aftercare_shared::model::UnixMillis;

impl PgStore {
    pub(in crate::store) fn finding_for_key(
        &self,
        key: &FindingKey,
    ) -> Result<Option<FindingRow>, StoreError> {
        todo!()
    }

    pub(in crate::store) fn apply_finding_change(
        &mut self,
        change: &Change,
    ) -> Result<i64, StoreError> {
        todo!()
    }

    pub(in crate::store) fn insert_silence(&mut self, s: &Silence) -> Result<i64, StoreError> {
        todo!()
    }

    pub(in crate::store) fn select_silences(
        &self,
        after: UnixMillis,
    ) -> Result<Vec<Silence>, StoreError> {
        todo!()
    }

    pub(in crate::store) fn close_silence(
        &mut self,
        id: i64,
        at: UnixMillis,
    ) -> Result<(), StoreError> {
        todo!()
    }

    pub(in crate::store) fn load_rules_state(&self) -> Result<Option<String>, StoreError> {
        todo!()
    }

    pub(in crate::store) fn store_rules_state(&mut self, json: &str) -> Result<(), StoreError> {
        todo!()
    }

    pub(in crate::store) fn list_findings(
        &self,
        f: &FindingFilter,
    ) -> Result<Vec<FindingRow>, StoreError> {
        todo!()
    }

    pub(in crate::store) fn finding_with_timeline(
        &self,
        id: i64,
    ) -> Result<Option<(FindingRow, Vec<Event>)>, StoreError> {
        todo!()
    }
}

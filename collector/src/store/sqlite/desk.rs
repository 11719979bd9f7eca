//! The engineer's desk in SQLite (schema 7): the audit trail and contracts assigned over the
//! API.

use super::SqliteStore;
use crate::store::rows::{self, AUDIT_COLUMNS, CONTRACT_COLUMNS};
use crate::store::{AuditFilter, AuditRow, ContractAssignment, StoreError};
use rusqlite::params;

impl SqliteStore {
    pub(in crate::store) fn insert_audit(&mut self, a: &AuditRow) -> Result<i64, StoreError> {
        self.writable("writing the audit trail")?;
        self.conn
            .execute(
                "INSERT INTO audit (at, actor, role, action, target, outcome, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    a.at, a.actor, a.role, a.action, a.target, a.outcome, a.detail
                ],
            )
            .map_err(self.cx.sql("writing the audit trail"))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub(in crate::store) fn select_audit(
        &self,
        f: &AuditFilter,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let limit = if f.limit == 0 { -1 } else { f.limit as i64 };
        self.conn
            .prepare_cached(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit
                 WHERE at >= ?1 AND id < ?2
                   AND (?3 IS NULL OR actor = ?3) AND (?4 IS NULL OR action = ?4)
                 ORDER BY id DESC LIMIT ?5"
            ))
            .and_then(|mut st| {
                st.query_map(
                    params![
                        f.since,
                        f.before_id.unwrap_or(i64::MAX),
                        f.actor,
                        f.action,
                        limit
                    ],
                    |r| rows::audit(r),
                )?
                .collect()
            })
            .map_err(self.cx.sql("reading the audit trail"))
    }

    pub(in crate::store) fn upsert_contract(
        &mut self,
        c: &ContractAssignment,
    ) -> Result<(), StoreError> {
        self.writable("assigning a contract")?;
        self.conn
            .execute(
                "INSERT INTO customer_contracts (customer, contract, set_at, set_by)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (customer) DO UPDATE
                 SET contract = excluded.contract, set_at = excluded.set_at, set_by = excluded.set_by",
                params![c.customer, c.contract, c.set_at, c.set_by],
            )
            .map_err(self.cx.sql("assigning a contract"))?;
        Ok(())
    }

    pub(in crate::store) fn select_contracts(&self) -> Result<Vec<ContractAssignment>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {CONTRACT_COLUMNS} FROM customer_contracts ORDER BY customer"
            ))
            .and_then(|mut st| st.query_map([], |r| rows::contract(r))?.collect())
            .map_err(self.cx.sql("reading contract assignments"))
    }
}

//! The engineer's desk in SQLite (schema 7): the audit trail and contracts assigned over the
//! API.

use super::SqliteStore;
use crate::store::{AuditFilter, AuditRow, ContractAssignment, StoreError};
use rusqlite::{Row, params};

fn audit_row(r: &Row) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        id: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        role: r.get(3)?,
        action: r.get(4)?,
        target: r.get(5)?,
        outcome: r.get(6)?,
        detail: r.get(7)?,
    })
}

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
            .prepare_cached(
                "SELECT id, at, actor, role, action, target, outcome, detail FROM audit
                 WHERE at >= ?1 AND id < ?2
                   AND (?3 IS NULL OR actor = ?3) AND (?4 IS NULL OR action = ?4)
                 ORDER BY id DESC LIMIT ?5",
            )
            .and_then(|mut st| {
                st.query_map(
                    params![
                        f.since,
                        f.before_id.unwrap_or(i64::MAX),
                        f.actor,
                        f.action,
                        limit
                    ],
                    audit_row,
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
            .prepare_cached(
                "SELECT customer, contract, set_at, set_by FROM customer_contracts ORDER BY customer",
            )
            .and_then(|mut st| {
                st.query_map([], |r| {
                    Ok(ContractAssignment {
                        customer: r.get(0)?,
                        contract: r.get(1)?,
                        set_at: r.get(2)?,
                        set_by: r.get(3)?,
                    })
                })?
                .collect()
            })
            .map_err(self.cx.sql("reading contract assignments"))
    }
}

//! The engineer's desk in PostgreSQL (what `../sqlite/desk.rs` and the token methods of
//! `../sqlite/mod.rs` do for SQLite): API tokens, the audit trail and contracts assigned
//! over the API.

use super::PgStore;
use crate::store::rows::{self, AUDIT_COLUMNS, CONTRACT_COLUMNS, TOKEN_COLUMNS};
use crate::store::{AuditFilter, AuditRow, ContractAssignment, StoreError, TokenRow};
use aftercare_shared::model::UnixMillis;
use postgres::error::SqlState;

impl PgStore {
    pub(in crate::store) fn insert_audit(&mut self, a: &AuditRow) -> Result<i64, StoreError> {
        self.writable("writing the audit trail")?;
        self.conn
            .query_one(
                "INSERT INTO audit (at, actor, role, action, target, outcome, detail)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 RETURNING id",
                &[
                    &a.at, &a.actor, &a.role, &a.action, &a.target, &a.outcome, &a.detail,
                ],
            )
            .map(|r| r.get(0))
            .map_err(self.cx.sql("writing the audit trail"))
    }

    /// Entries matching `f`, newest first.
    pub(in crate::store) fn select_audit(
        &mut self,
        f: &AuditFilter,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let err = self.cx.sql("reading the audit trail");
        // LIMIT NULL: all of them.
        let limit = (f.limit != 0).then(|| i64::try_from(f.limit).unwrap_or(i64::MAX));
        self.conn
            .query(
                &format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit
                     WHERE at >= $1 AND id < $2
                       AND ($3::text IS NULL OR actor = $3) AND ($4::text IS NULL OR action = $4)
                     ORDER BY id DESC LIMIT $5"
                ),
                &[
                    &f.since,
                    &f.before_id.unwrap_or(i64::MAX),
                    &f.actor,
                    &f.action,
                    &limit,
                ],
            )
            .map_err(&err)?
            .iter()
            .map(rows::audit)
            .collect::<Result<_, _>>()
            .map_err(err)
    }

    pub(in crate::store) fn upsert_contract(
        &mut self,
        c: &ContractAssignment,
    ) -> Result<(), StoreError> {
        self.writable("assigning a contract")?;
        self.conn
            .execute(
                "INSERT INTO customer_contracts (customer, contract, set_at, set_by)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (customer) DO UPDATE
                 SET contract = excluded.contract, set_at = excluded.set_at, set_by = excluded.set_by",
                &[&c.customer, &c.contract, &c.set_at, &c.set_by],
            )
            .map_err(self.cx.sql("assigning a contract"))?;
        Ok(())
    }

    /// By customer, in byte order as SQLite sorts.
    pub(in crate::store) fn select_contracts(
        &mut self,
    ) -> Result<Vec<ContractAssignment>, StoreError> {
        let err = self.cx.sql("reading contract assignments");
        self.conn
            .query(
                &format!(
                    "SELECT {CONTRACT_COLUMNS} FROM customer_contracts ORDER BY customer COLLATE \"C\""
                ),
                &[],
            )
            .map_err(&err)?
            .iter()
            .map(rows::contract)
            .collect::<Result<_, _>>()
            .map_err(err)
    }

    /// A name (or hash) in use is refused, as SQLite's constraint refuses it.
    pub(in crate::store) fn insert_token(
        &mut self,
        t: &TokenRow,
        hash: &str,
    ) -> Result<(), StoreError> {
        self.writable("adding a token")?;
        let r = self.conn.execute(
            "INSERT INTO tokens (name, role, hash, created_at, created_by)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &t.name,
                &t.role.as_str(),
                &hash,
                &t.created_at,
                &t.created_by,
            ],
        );
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                Err(rows::token_taken(&t.name))
            }
            Err(e) => Err(self.cx.sql("adding a token")(e)),
        }
    }

    /// Every token, revoked ones too, by name in byte order.
    pub(in crate::store) fn select_tokens(&mut self) -> Result<Vec<TokenRow>, StoreError> {
        let err = self.cx.sql("listing tokens");
        self.conn
            .query(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY name COLLATE \"C\""),
                &[],
            )
            .map_err(&err)?
            .iter()
            .map(rows::token)
            .collect::<Result<_, _>>()
            .map_err(err)
    }

    pub(in crate::store) fn select_token_by_hash(
        &mut self,
        hash: &str,
    ) -> Result<Option<TokenRow>, StoreError> {
        let err = self.cx.sql("checking a token");
        self.conn
            .query_opt(
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1 AND revoked_at IS NULL"
                ),
                &[&hash],
            )
            .map_err(&err)?
            .map(|r| rows::token(&r))
            .transpose()
            .map_err(err)
    }

    pub(in crate::store) fn update_revoke_token(
        &mut self,
        name: &str,
        at: UnixMillis,
    ) -> Result<(), StoreError> {
        self.writable("revoking a token")?;
        let n = self
            .conn
            .execute(
                "UPDATE tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
                &[&name, &at],
            )
            .map_err(self.cx.sql("revoking a token"))?;
        if n == 0 {
            return Err(rows::no_active_token(name));
        }
        Ok(())
    }
}

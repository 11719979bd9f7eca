//! What admins manage (silences, tokens, customers' contracts) and the audit trail; viewers
//! read silences, customers and contracts.

use super::findings::duration_field;
use super::hosts::worst_level;
use super::page;
use super::server::{
    ApiError, ApiState, AuditTarget, body, page_json, policy, query, require, time_param,
    with_store,
};
use super::token::{self, Role};
use crate::findings::record::{FindingFilter, Silence};
use crate::sla::Level;
use crate::store::{AuditFilter, ContractAssignment, TokenRow};
use aftercare_shared::time_fmt::{now_millis, rfc3339};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use std::collections::BTreeMap;

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;
type BodyResult<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

pub fn silence_json(s: &Silence, now: i64) -> serde_json::Value {
    let state = if s.starts <= now && now < s.ends {
        "active"
    } else if now < s.starts {
        "planned"
    } else {
        "over"
    };
    serde_json::json!({
        "id": s.id,
        "customer": s.customer,
        "host": s.host,
        "starts": rfc3339(s.starts),
        "ends": rfc3339(s.ends),
        "reason": s.reason,
        "created_by": s.created_by,
        "created_at": rfc3339(s.created_at),
        "state": state,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilencesQuery {
    /// `all`: also windows that ended in the last 30 days.
    state: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub async fn silences(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    q: QueryResult<SilencesQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require(&caller, Role::Viewer)?;
    let q = query(q)?;
    let limit = page::limit(q.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let now = now_millis();
    let after = match q.state.as_deref().unwrap_or("current") {
        "current" => now,
        "all" => now - 30 * 86_400_000,
        other => {
            return Err(ApiError::bad(
                "bad_state",
                "state",
                format!("'{other}' is not current or all"),
            ));
        }
    };
    let list = with_store(&state, false, move |st| Ok(st.silences(after)?)).await?;
    let (list, next) = page::take("silences", list, q.cursor.as_deref(), limit, |s| {
        (s.starts, s.id)
    })?;
    Ok(Json(page_json(
        list.iter().map(|s| silence_json(s, now)).collect(),
        next,
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceBody {
    customer: String,
    host: Option<String>,
    r#for: Option<String>,
    until: Option<String>,
    reason: String,
}

pub async fn add_silence(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    b: BodyResult<SilenceBody>,
) -> Result<Response, ApiError> {
    require(&caller, Role::Admin)?;
    let b = body(b)?;
    let now = now_millis();
    let ends = match (&b.r#for, &b.until) {
        (Some(f), None) => now.saturating_add(duration_field("for", f)?),
        (None, Some(u)) => aftercare_shared::time_fmt::parse_until(u)
            .map(aftercare_shared::time_fmt::from_offset)
            .map_err(|e| ApiError::bad("bad_time", "until", e))?,
        _ => {
            return Err(ApiError::bad(
                "bad_body",
                "for",
                "give either `for` (a length such as 2h) or `until` (a time), not both",
            ));
        }
    };
    if ends <= now {
        return Err(ApiError::bad("bad_time", "until", "is not in the future"));
    }
    if b.customer.trim().is_empty() {
        return Err(ApiError::bad("bad_body", "customer", "must not be empty"));
    }
    if b.reason.trim().is_empty() {
        return Err(ApiError::bad(
            "bad_body",
            "reason",
            "must say what the maintenance is",
        ));
    }
    let mut s = Silence {
        id: 0,
        customer: b.customer.trim().into(),
        host: b
            .host
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty()),
        starts: now,
        ends,
        reason: b.reason.trim().into(),
        created_by: caller.name.clone(),
        created_at: now,
    };
    let s = with_store(&state, true, move |st| {
        s.id = st.add_silence(&s)?;
        Ok(s)
    })
    .await?;
    let mut resp = (StatusCode::CREATED, Json(silence_json(&s, now))).into_response();
    resp.extensions_mut()
        .insert(AuditTarget(format!("silence/{}", s.id)));
    Ok(resp)
}

pub async fn end_silence(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require(&caller, Role::Admin)?;
    let now = now_millis();
    let s = with_store(&state, true, move |st| {
        let found = st.silences(i64::MIN)?.into_iter().find(|s| s.id == id);
        let Some(mut s) = found else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_silence",
                format!("no maintenance window {id}"),
            ));
        };
        st.end_silence(id, now)?;
        s.ends = s.ends.min(now);
        Ok(s)
    })
    .await?;
    Ok(Json(silence_json(&s, now)))
}

fn token_json(t: &TokenRow) -> serde_json::Value {
    serde_json::json!({
        "name": t.name,
        "role": t.role.as_str(),
        "created_at": rfc3339(t.created_at),
        "created_by": t.created_by,
        "revoked_at": t.revoked_at.map(rfc3339),
    })
}

pub async fn tokens(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    q: QueryResult<PageQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require(&caller, Role::Admin)?;
    let q = query(q)?;
    let limit = page::limit(q.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let list = with_store(&state, false, |st| Ok(st.tokens()?)).await?;
    let (list, next) = page::take("tokens", list, q.cursor.as_deref(), limit, |t| {
        t.name.clone()
    })?;
    Ok(Json(page_json(list.iter().map(token_json).collect(), next)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    name: String,
    role: String,
}

pub async fn create_token(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    b: BodyResult<TokenBody>,
) -> Result<Response, ApiError> {
    require(&caller, Role::Admin)?;
    let b = body(b)?;
    let name = b.name.trim().to_string();
    token::valid_name(&name).map_err(|m| ApiError::bad("bad_body", "name", m))?;
    let role = Role::parse(&b.role).ok_or_else(|| {
        ApiError::bad(
            "bad_body",
            "role",
            format!("'{}' is not viewer, engineer or admin", b.role),
        )
    })?;
    let n = name.clone();
    let secret = with_store(&state, true, move |st| {
        token::issue(st, &n, role, &caller.name, now_millis()).map_err(|e| match e {
            token::IssueError::Store(e) => e.into(),
            token::IssueError::Random => ApiError::internal(),
        })
    })
    .await?;
    let mut resp = (
        StatusCode::CREATED,
        Json(serde_json::json!({ "name": name, "role": role.as_str(), "token": secret })),
    )
        .into_response();
    resp.extensions_mut()
        .insert(AuditTarget(format!("token/{name}")));
    Ok(resp)
}

pub async fn revoke_token(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    require(&caller, Role::Admin)?;
    with_store(&state, true, move |st| {
        if !st
            .tokens()?
            .iter()
            .any(|t| t.name == name && t.revoked_at.is_none())
        {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_token",
                format!("no active token named '{name}'"),
            ));
        }
        st.revoke_token(&name, now_millis())?;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn contracts(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require(&caller, Role::Viewer)?;
    let items = state
        .sla
        .contracts()
        .map(|c| {
            let levels: serde_json::Map<String, serde_json::Value> = Level::ALL
                .iter()
                .map(|&l| {
                    let t = c.terms(l);
                    (
                        l.as_str().to_string(),
                        serde_json::json!({
                            "calendar": t.calendar_name,
                            "respond_ms": t.respond_within_ms,
                            "restore_ms": t.restore_within_ms,
                        }),
                    )
                })
                .collect();
            serde_json::json!({
                "name": c.name,
                "calendar": c.terms(Level::ALL[0]).calendar_name,
                "levels": levels,
            })
        })
        .collect();
    Ok(Json(page_json(items, None)))
}

pub async fn customers(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    q: QueryResult<PageQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require(&caller, Role::Viewer)?;
    let q = query(q)?;
    let limit = page::limit(q.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let sla = state.sla.clone();
    let out = with_store(&state, false, move |st| {
        let policy = policy(&sla, st)?;
        // (hosts, online, open findings, worst level) by customer.
        let mut by: BTreeMap<String, (usize, usize, usize, u8)> = BTreeMap::new();
        for h in st.hosts(now_millis())? {
            let e = by.entry(h.customer).or_insert((0, 0, 0, u8::MAX));
            e.0 += 1;
            e.1 += usize::from(h.online);
        }
        for a in st.contract_assignments()? {
            by.entry(a.customer).or_insert((0, 0, 0, u8::MAX));
        }
        for f in st.findings(&FindingFilter {
            open_only: true,
            since: i64::MIN,
            ..Default::default()
        })? {
            let e = by.entry(f.customer).or_insert((0, 0, 0, u8::MAX));
            e.2 += 1;
            e.3 = e.3.min(f.level);
        }
        let list: Vec<_> = by.into_iter().collect();
        let (list, next) = page::take("customers", list, q.cursor.as_deref(), limit, |c| {
            c.0.clone()
        })?;
        let items = list
            .iter()
            .map(|(name, (hosts, online, open, worst))| {
                serde_json::json!({
                    "name": name,
                    "contract": policy.contract_for(name).name,
                    "contract_source": policy.contract_source(name),
                    "hosts": hosts,
                    "online": online,
                    "open_findings": open,
                    "worst_open_level": worst_level(*worst),
                })
            })
            .collect();
        Ok(page_json(items, next))
    })
    .await?;
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractBody {
    contract: String,
}

pub async fn set_contract(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    Path(customer): Path<String>,
    b: BodyResult<ContractBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require(&caller, Role::Admin)?;
    let b = body(b)?;
    let contract = b.contract.trim().to_string();
    if state.sla.contract(&contract).is_none() {
        let known: Vec<_> = state.sla.contracts().map(|c| c.name.as_str()).collect();
        return Err(ApiError::bad(
            "unknown_contract",
            "contract",
            format!(
                "no contract '{contract}'; sla.toml has {}",
                known.join(", ")
            ),
        ));
    }
    let a = ContractAssignment {
        customer: customer.trim().into(),
        contract,
        set_at: now_millis(),
        set_by: caller.name.clone(),
    };
    let out = serde_json::json!({
        "customer": a.customer,
        "contract": a.contract,
        "contract_source": "api",
        "set_at": rfc3339(a.set_at),
        "set_by": a.set_by,
    });
    with_store(&state, true, move |st| Ok(st.set_contract(&a)?)).await?;
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    since: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub fn audit_json(a: &crate::store::AuditRow) -> serde_json::Value {
    serde_json::json!({
        "id": a.id,
        "at": rfc3339(a.at),
        "actor": a.actor,
        "role": a.role,
        "action": a.action,
        "target": a.target,
        "outcome": a.outcome,
        "detail": serde_json::from_str::<serde_json::Value>(&a.detail)
            .unwrap_or(serde_json::Value::String(a.detail.clone())),
    })
}

pub async fn audit(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    q: QueryResult<AuditQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require(&caller, Role::Admin)?;
    let q = query(q)?;
    let limit = page::limit(q.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let since = match q.since.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => time_param("since", s, now_millis())?,
        None => i64::MIN,
    };
    let before_id = q
        .cursor
        .as_deref()
        .map(|c| {
            page::decode("audit", c)?
                .parse::<i64>()
                .map_err(|_| page::PageError::Cursor)
        })
        .transpose()?;
    let rows = with_store(&state, false, move |st| {
        Ok(st.audit(&AuditFilter {
            since,
            actor: q.actor.filter(|a| !a.is_empty()),
            action: q.action.filter(|a| !a.is_empty()),
            before_id,
            limit: limit + 1,
        })?)
    })
    .await?;
    let more = rows.len() > limit;
    let rows = &rows[..rows.len().min(limit)];
    let next = match rows.last() {
        Some(last) if more => Some(page::encode("audit", &last.id.to_string())),
        _ => None,
    };
    Ok(Json(page_json(rows.iter().map(audit_json).collect(), next)))
}

//! Remote diagnosis over `/api/v1`: an engineer asks a host's agent to run a named probe,
//! anyone with a token reads the results.
//!
//! - `POST /api/v1/hosts/{customer}/{host}/diagnostics` (engineer) `{"probe", "args", "finding"}`
//!   → 202 `{"id", "status": "pending"}`; the agent decides whether it runs.
//! - `GET /api/v1/diagnostics/{id}` (viewer) → the request, its status and output.
//! - `GET /api/v1/hosts/{customer}/{host}/diagnostics?limit=N&before=ID` (viewer) → newest
//!   first, without output.
//! - `GET /api/v1/hosts/{customer}/{host}/probes` (viewer) → what the connected agent offers.

use super::page;
use super::server::{ApiError, ApiState, require, with_store};
use super::token::Role;
use crate::diagnose::record::{DiagnosticRow, NewDiagnostic};
use crate::store::{Store, TokenRow};
use aftercare_shared::consent::Scope;
use aftercare_shared::diag::{ArgKind, ProbeInfo};
use aftercare_shared::time_fmt::{now_millis, rfc3339};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestBody {
    probe: String,
    #[serde(default)]
    args: BTreeMap<String, Value>,
    #[serde(default)]
    finding: Option<i64>,
}

fn bad_body(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_body", message)
}

pub async fn request(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    Path((customer, host)): Path<(String, String)>,
    body: Result<Json<RequestBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require(&caller, Role::Engineer)?;
    let Json(body) = body.map_err(|e| bad_body(e.body_text()))?;
    if body.probe.is_empty() || body.probe.len() > 64 {
        return Err(bad_body(
            "probe: give the name of a probe (1 to 64 characters)",
        ));
    }
    // Values travel as text; the agent checks them against what the probe declares.
    let mut args = Vec::with_capacity(body.args.len());
    for (k, v) in body.args {
        let v = match v {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            _ => return Err(bad_body(format!("args.{k}: give a string or a number"))),
        };
        args.push((k, v));
    }
    let name = format!("{customer}/{host}");
    let finding = body.finding;
    let n = name.clone();
    let host_id = with_store(&state, false, move |st| {
        let id = st.host_id(&n)?;
        if let Some(f) = finding {
            match st.finding(f)? {
                Some((row, _)) if row.host_id == id => {}
                _ => {
                    return Err(bad_body(format!("finding: {f} is not a finding of {n}")));
                }
            }
        }
        Ok(id)
    })
    .await?;
    let id = state
        .diagnose
        .request(
            NewDiagnostic {
                host: host_id,
                probe: body.probe,
                args,
                finding,
                requested_by: caller.name.clone(),
                requested_at: now_millis(),
            },
            name,
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "status": "pending" })),
    ))
}

pub async fn one(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    require(&caller, Role::Viewer)?;
    let row = with_store(&state, false, move |st| Ok(st.diagnostic(id)?)).await?;
    let row = row.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_diagnostic",
            format!("no diagnostic {id}"),
        )
    })?;
    Ok(Json(row_json(&row)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

/// A host's diagnostics, newest first, a page at a time (the cursor names the last id).
pub async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    Path((customer, host)): Path<(String, String)>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    require(&caller, Role::Viewer)?;
    let q = super::server::query(query)?;
    let limit = page::limit(q.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let before = match q.cursor.as_deref() {
        Some(c) => Some(
            page::decode("diagnostics", c)?
                .parse::<i64>()
                .map_err(|_| page::PageError::Cursor)?,
        ),
        None => None,
    };
    let mut rows = with_store(&state, false, move |st| {
        let id = st.host_id(&format!("{customer}/{host}"))?;
        // One more than asked: whether another page follows.
        Ok(st.diagnostics(id, limit + 1, before)?)
    })
    .await?;
    let next = (rows.len() > limit).then(|| {
        rows.truncate(limit);
        page::encode("diagnostics", &rows[limit - 1].id.to_string())
    });
    Ok(Json(json!({
        "items": rows.iter().map(row_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

pub async fn probes(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    Path((customer, host)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    require(&caller, Role::Viewer)?;
    let (id, consent) = with_store(&state, false, move |st| {
        let id = st.host_id(&format!("{customer}/{host}"))?;
        let now = now_millis();
        let consent = st
            .hosts(now)?
            .into_iter()
            .find(|h| h.id == id)
            .is_some_and(|h| h.consent.allows(Scope::Diagnostics, now));
        Ok((id, consent))
    })
    .await?;
    // Connected here, or through another collector sharing the database.
    let probes = match state.diagnose.links().get(id) {
        Some(link) => Some(link.probes),
        None => state.diagnose.elsewhere(id).await?.map(|e| e.probes),
    };
    Ok(Json(json!({
        "online": probes.is_some(),
        "diagnostics_consent": consent,
        "probes": probes.iter().flatten().map(probe_json).collect::<Vec<_>>(),
    })))
}

/// The diagnostics run from finding `id`, for its detail.
pub(crate) fn for_finding(st: &mut dyn Store, id: i64) -> Result<Value, ApiError> {
    let rows = st.diagnostics_for_finding(id).map_err(ApiError::from)?;
    Ok(Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "probe": r.probe,
                    "status": r.status,
                    "requested_at": rfc3339(r.requested_at),
                    "requested_by": r.requested_by,
                })
            })
            .collect(),
    ))
}

/// A diagnostic as the API shows it; `output` only when the row carries it.
pub fn row_json(r: &DiagnosticRow) -> Value {
    let args: serde_json::Map<String, Value> = r
        .args
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut v = json!({
        "id": r.id,
        "host": format!("{}/{}", r.customer, r.host),
        "probe": r.probe,
        "args": args,
        "finding": r.finding,
        "requested_by": r.requested_by,
        "requested_at": rfc3339(r.requested_at),
        "status": r.status,
        "finished_at": r.finished_at.map(rfc3339),
        "exit_code": r.exit_code,
        "truncated": r.truncated,
        "message": r.message,
    });
    if let Some(out) = &r.output {
        v["output"] = Value::String(String::from_utf8_lossy(out).into_owned());
    }
    v
}

pub fn probe_json(p: &ProbeInfo) -> Value {
    let args: Vec<Value> = p
        .args
        .iter()
        .map(|a| {
            let mut v = match &a.kind {
                ArgKind::Integer { min, max } => {
                    json!({ "kind": "integer", "min": min, "max": max })
                }
                ArgKind::Choice(c) => json!({ "kind": "choice", "choices": c }),
                ArgKind::Name => json!({ "kind": "name" }),
            };
            v["name"] = json!(a.name);
            v["default"] = json!(a.default);
            v
        })
        .collect();
    json!({
        "name": p.name,
        "description": p.description,
        "args": args,
        "timeout_ms": p.timeout_ms,
        "max_output": p.max_output,
    })
}

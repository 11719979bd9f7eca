//! Findings: the list (by level, then SLA deadline), one with its timeline, and what an
//! engineer does with them (acknowledge, resolve) or an admin (silence its host).

use super::admin::silence_json;
use super::page;
use super::server::{ApiError, ApiState, body, page_json, policy, query, require, with_store};
use super::token::Role;
use crate::findings::lifecycle;
use crate::findings::record::{Change, FindingFilter, Silence};
use crate::findings::view::finding_json;
use crate::store::{StoreError, TokenRow};
use aftercare_shared::time_fmt::now_millis;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

pub const FINDINGS_DEFAULT_LIMIT: usize = 100;
pub const FINDINGS_MAX_LIMIT: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingsQuery {
    customer: Option<String>,
    host: Option<String>,
    level: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    q: Result<Query<FindingsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require(&caller, Role::Viewer)?;
    let q = query(q)?;
    let limit = page::limit(q.limit, FINDINGS_DEFAULT_LIMIT, FINDINGS_MAX_LIMIT)?;
    let open_only = match q.state.as_deref().unwrap_or("open") {
        "open" => true,
        "all" => false,
        other => {
            return Err(ApiError::bad(
                "bad_state",
                "state",
                format!("'{other}' is not open or all"),
            ));
        }
    };
    let level = q
        .level
        .as_deref()
        .map(|l| {
            crate::sla::Level::parse(l)
                .map(|l| l.number())
                .ok_or_else(|| {
                    ApiError::bad(
                        "bad_level",
                        "level",
                        format!("'{l}' is not L1, L2, L3 or L4"),
                    )
                })
        })
        .transpose()?;
    let sla = state.sla.clone();
    let out = with_store(&state, false, move |st| {
        let mut rows = st.findings(&FindingFilter {
            open_only,
            customer: q.customer,
            host: q.host,
            since: i64::MIN,
        })?;
        rows.retain(|f| level.is_none_or(|l| l == f.level));
        // The store's order (level, nearest deadline, opened) with the id to break ties:
        // a page's position is the last item's place in it.
        let key = |f: &crate::findings::record::FindingRow| {
            (
                f.level,
                f.restore_by.or(f.respond_by).unwrap_or(i64::MAX),
                f.opened_at,
                f.id,
            )
        };
        rows.sort_by_key(key);
        let (rows, next) = page::take("findings", rows, q.cursor.as_deref(), limit, key)?;
        let policy = policy(&sla, st)?;
        let silences = st.silences(i64::MIN)?;
        let now = now_millis();
        Ok(page_json(
            rows.iter()
                .map(|f| finding_json(f, &policy, &silences, now, None))
                .collect(),
            next,
        ))
    })
    .await?;
    Ok(Json(out))
}

pub async fn show(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require(&caller, Role::Viewer)?;
    let sla = state.sla.clone();
    let v = with_store(&state, false, move |st| {
        let (f, timeline) = st.finding(id)?.ok_or(StoreError::NoSuchFinding(id))?;
        let policy = policy(&sla, st)?;
        let silences = st.silences(i64::MIN)?;
        let mut v = finding_json(&f, &policy, &silences, now_millis(), Some(&timeline));
        // The diagnostics an engineer ran from this finding.
        v["diagnostics"] = super::diagnostics::for_finding(st, id)?;
        Ok(v)
    })
    .await?;
    Ok(Json(v))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    note: Option<String>,
}

pub async fn ack(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    require(&caller, Role::Engineer)?;
    with_store(&state, true, move |st| {
        let (f, _) = st.finding(id)?.ok_or(StoreError::NoSuchFinding(id))?;
        let acked_by = f.acknowledged.as_ref().map(|a| a.1.as_str());
        // The token's name is who did it, on the finding's timeline.
        let event = lifecycle::acknowledge(&f.current(), acked_by, &caller.name, now_millis())?;
        st.apply_finding(&Change::Act { id, event })?;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn resolve(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    Path(id): Path<i64>,
    b: Result<Json<ResolveBody>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    require(&caller, Role::Engineer)?;
    let b = body(b)?;
    with_store(&state, true, move |st| {
        let (f, _) = st.finding(id)?.ok_or(StoreError::NoSuchFinding(id))?;
        let event =
            lifecycle::resolve(&f.current(), &caller.name, b.note.as_deref(), now_millis())?;
        st.apply_finding(&Change::Act { id, event })?;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceFindingBody {
    r#for: String,
    reason: String,
}

/// A length such as `2h`, or 400 naming `field`.
pub(super) fn duration_field(field: &'static str, v: &str) -> Result<i64, ApiError> {
    let d = humantime::parse_duration(v.trim()).map_err(|_| {
        ApiError::bad(
            "bad_body",
            field,
            format!("'{v}' is not a length such as 90m, 2h, 1d"),
        )
    })?;
    match i64::try_from(d.as_millis()) {
        Ok(ms) if ms > 0 => Ok(ms),
        _ => Err(ApiError::bad("bad_body", field, "must be longer than zero")),
    }
}

/// A maintenance window on the finding's host, from now.
pub async fn silence(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    Path(id): Path<i64>,
    b: Result<Json<SilenceFindingBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    require(&caller, Role::Admin)?;
    let b = body(b)?;
    let len = duration_field("for", &b.r#for)?;
    if b.reason.trim().is_empty() {
        return Err(ApiError::bad(
            "bad_body",
            "reason",
            "must say what the maintenance is",
        ));
    }
    let s = with_store(&state, true, move |st| {
        let (f, _) = st.finding(id)?.ok_or(StoreError::NoSuchFinding(id))?;
        let now = now_millis();
        let mut s = Silence {
            id: 0,
            customer: f.customer,
            host: Some(f.host),
            starts: now,
            ends: now.saturating_add(len),
            reason: b.reason.trim().into(),
            created_by: caller.name.clone(),
            created_at: now,
        };
        s.id = st.add_silence(&s)?;
        Ok(s)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(silence_json(&s, now_millis()))).into_response())
}

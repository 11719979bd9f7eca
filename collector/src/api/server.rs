//! `/api/v1` over HTTP (axum): hosts and findings for now, behind bearer tokens.
//!
//! Every request names its token (`Authorization: Bearer act_...`); the token's role decides
//! what it may do. Errors are JSON `{"code": "...", "message": "..."}` with a stable code;
//! store internals are logged, never sent. Each request opens its own read handle, and
//! writes (an engineer's acknowledgement or resolution) their own: the API never holds up
//! ingest's writer.

use super::token::{self, Role};
use crate::findings::lifecycle;
use crate::findings::record::{Change, FindingFilter};
use crate::findings::view::finding_json;
use crate::sla::SlaPolicy;
use crate::store::{SqliteStore, Store, StoreError, TokenRow};
use aftercare_shared::time_fmt::now_millis;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::warn;

#[derive(Clone)]
pub struct ApiState {
    pub database: PathBuf,
    pub sla: Arc<SlaPolicy>,
    /// Remote diagnosis: the live agent connections and the requests to them.
    pub diagnose: crate::diagnose::Diagnose,
}

/// An error as the API sends it.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::UnknownHost(m) | StoreError::AmbiguousHost(m) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_host", m)
            }
            StoreError::NoSuchFinding(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_finding",
                format!("no finding {id}"),
            ),
            StoreError::Invalid(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            other => {
                // Paths and SQL stay in the collector's log.
                warn!("api: {other}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the collector could not answer; its log says why",
                )
            }
        }
    }
}

impl From<lifecycle::ActionError> for ApiError {
    fn from(e: lifecycle::ActionError) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
    }
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/hosts", get(hosts))
        .route("/api/v1/findings", get(findings))
        .route("/api/v1/findings/{id}", get(finding))
        .route("/api/v1/findings/{id}/ack", post(ack))
        .route("/api/v1/findings/{id}/resolve", post(resolve))
        .merge(super::diagnostics::routes())
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such resource under /api/v1",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// The caller, from its bearer token.
async fn authenticate(
    State(state): State<ApiState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(secret) = header.strip_prefix("Bearer ") else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send `Authorization: Bearer <token>` (aftercare-collector token create)",
        ));
    };
    let hash = token::hash(secret);
    let db = state.database.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<Option<TokenRow>, StoreError> {
        crate::store::open_sqlite_readonly(&db)?.token_by_hash(&hash)
    })
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "lookup failed",
        )
    })??;
    let Some(caller) = found else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "unknown or revoked token",
        ));
    };
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

pub(crate) fn require(caller: &TokenRow, needed: Role) -> Result<(), ApiError> {
    if caller.role.allows(needed) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token '{}' is a {}; this needs {}",
                caller.name,
                caller.role.as_str(),
                needed.as_str()
            ),
        ))
    }
}

/// Run store work off the async threads.
pub(crate) async fn with_store<T: Send + 'static>(
    state: &ApiState,
    write: bool,
    f: impl FnOnce(&mut SqliteStore) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let db = state.database.clone();
    tokio::task::spawn_blocking(move || {
        let mut st = if write {
            crate::store::open_sqlite(&db)?
        } else {
            crate::store::open_sqlite_readonly(&db)?
        };
        f(&mut st)
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "task failed"))?
}

async fn hosts(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require(&caller, Role::Viewer)?;
    let hosts = with_store(&state, false, |st| Ok(st.hosts(now_millis())?)).await?;
    Ok(Json(serde_json::to_value(hosts).unwrap_or_default()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FindingsQuery {
    #[serde(default)]
    all: bool,
    customer: Option<String>,
    host: Option<String>,
}

async fn findings(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    query: Result<Query<FindingsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require(&caller, Role::Viewer)?;
    let Query(q) =
        query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let sla = state.sla.clone();
    let out = with_store(&state, false, move |st| {
        let rows = st.findings(&FindingFilter {
            open_only: !q.all,
            customer: q.customer,
            host: q.host,
            since: i64::MIN,
        })?;
        let silences = st.silences(i64::MIN)?;
        Ok(rows
            .iter()
            .map(|f| finding_json(f, &sla, &silences, now_millis(), None))
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(serde_json::Value::Array(out)))
}

async fn finding(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require(&caller, Role::Viewer)?;
    let sla = state.sla.clone();
    let v = with_store(&state, false, move |st| {
        let (f, timeline) = st.finding(id)?.ok_or(StoreError::NoSuchFinding(id))?;
        let silences = st.silences(i64::MIN)?;
        let mut v = finding_json(&f, &sla, &silences, now_millis(), Some(&timeline));
        v["diagnostics"] = super::diagnostics::for_finding(st, id)?;
        Ok(v)
    })
    .await?;
    Ok(Json(v))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    note: Option<String>,
}

async fn ack(
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

async fn resolve(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    Path(id): Path<i64>,
    body: Result<Json<ResolveBody>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    require(&caller, Role::Engineer)?;
    let Json(body) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.body_text()))?;
    with_store(&state, true, move |st| {
        let (f, _) = st.finding(id)?.ok_or(StoreError::NoSuchFinding(id))?;
        let event = lifecycle::resolve(
            &f.current(),
            &caller.name,
            body.note.as_deref(),
            now_millis(),
        )?;
        st.apply_finding(&Change::Act { id, event })?;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

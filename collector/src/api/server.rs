//! `/api/v1` over HTTP (axum): the router, bearer-token authentication, the audit trail of
//! mutating calls, and JSON errors.
//!
//! Every request names its token (`Authorization: Bearer act_...`); the token's role decides
//! what it may do. Errors are JSON `{"code": "...", "message": "...", "field"?: "..."}` with
//! a stable code; store internals are logged, never sent. Each request opens its own read
//! handle, and writes their own: the API never holds up ingest's writer.
//!
//! [`ROUTES`] is the one list of routes: the router is built from it, the audit trail names
//! actions and targets from it, and a test holds the OpenAPI document to it.

use super::token::{self, Role};
use crate::findings::lifecycle;
use crate::sla::SlaPolicy;
use crate::store::{AuditRow, Retention, Store, StoreError, TokenRow};
use aftercare_shared::time_fmt::now_millis;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use axum::{Json, Router};
use std::path::PathBuf;
use std::sync::Arc;
use tracing::warn;

#[derive(Clone)]
pub struct ApiState {
    pub database: crate::store::Database,
    /// `sla.toml`'s policy; contracts assigned over the API are applied per request.
    pub sla: Arc<SlaPolicy>,
    /// Which tier of metrics answers a range.
    pub retention: Retention,
    /// Remote diagnosis: the live agent connections and the requests to them.
    pub diagnose: crate::diagnose::Diagnose,
    /// Report languages and zones per customer.
    pub reports: Arc<crate::config::ReportsConfig>,
    /// The operator's report templates, if any.
    pub templates: Option<PathBuf>,
}

/// An error as the API sends it.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
    /// The query parameter or body field at fault.
    pub(super) field: Option<&'static str>,
}

/// The error code of a response, for the audit trail.
#[derive(Clone)]
struct ErrorCode(&'static str);

/// What a mutating call acted on, when the route's path does not say (a new silence's id).
#[derive(Clone)]
pub(super) struct AuditTarget(pub String);

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// 400 about one parameter or field; the message starts with its name.
    pub(super) fn bad(
        code: &'static str,
        field: &'static str,
        message: impl std::fmt::Display,
    ) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: format!("{field}: {message}"),
            field: Some(field),
        }
    }

    pub(super) fn internal() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the collector could not answer; its log says why",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(f) = self.field {
            body["field"] = f.into();
        }
        let mut resp = (self.status, Json(body)).into_response();
        resp.extensions_mut().insert(ErrorCode(self.code));
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::UnknownHost(m) | StoreError::AmbiguousHost(m) => ApiError {
                status: StatusCode::NOT_FOUND,
                code: "unknown_host",
                message: m,
                field: Some("host"),
            },
            StoreError::NoSuchFinding(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_finding",
                format!("no finding {id}"),
            ),
            StoreError::Invalid(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            other => {
                // Paths and SQL stay in the collector's log.
                warn!("api: {other}");
                ApiError::internal()
            }
        }
    }
}

impl From<lifecycle::ActionError> for ApiError {
    fn from(e: lifecycle::ActionError) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
    }
}

impl From<super::page::PageError> for ApiError {
    fn from(e: super::page::PageError) -> ApiError {
        match e {
            super::page::PageError::Limit(_) => ApiError::bad(
                "bad_limit",
                "limit",
                e.to_string().trim_start_matches("limit: "),
            ),
            super::page::PageError::Cursor => ApiError::bad(
                "bad_cursor",
                "cursor",
                e.to_string().trim_start_matches("cursor: "),
            ),
        }
    }
}

/// One route: what the router serves, and how the audit trail names a call to it.
pub struct Route {
    pub method: &'static str,
    /// axum's pattern, `{name}` for a segment.
    pub path: &'static str,
    /// For mutating routes: the audit action and its target (`{name}` from the path).
    pub audit: Option<(&'static str, &'static str)>,
}

const fn route(method: &'static str, path: &'static str) -> Route {
    Route {
        method,
        path,
        audit: None,
    }
}

const fn audited(
    method: &'static str,
    path: &'static str,
    action: &'static str,
    target: &'static str,
) -> Route {
    Route {
        method,
        path,
        audit: Some((action, target)),
    }
}

/// Every route this module serves.
pub const ROUTES: &[Route] = &[
    route("GET", "/api/v1/openapi.json"),
    route("GET", "/api/v1/me"),
    route("GET", "/api/v1/hosts"),
    route("GET", "/api/v1/hosts/{customer}/{host}"),
    route("GET", "/api/v1/hosts/{customer}/{host}/metrics"),
    route("GET", "/api/v1/hosts/{customer}/{host}/logs"),
    route("GET", "/api/v1/findings"),
    route("GET", "/api/v1/findings/{id}"),
    audited(
        "POST",
        "/api/v1/findings/{id}/ack",
        "finding.ack",
        "finding/{id}",
    ),
    audited(
        "POST",
        "/api/v1/findings/{id}/resolve",
        "finding.resolve",
        "finding/{id}",
    ),
    audited(
        "POST",
        "/api/v1/findings/{id}/silence",
        "finding.silence",
        "finding/{id}",
    ),
    route("GET", "/api/v1/silences"),
    audited("POST", "/api/v1/silences", "silence.add", "silences"),
    audited(
        "POST",
        "/api/v1/silences/{id}/end",
        "silence.end",
        "silence/{id}",
    ),
    route("GET", "/api/v1/tokens"),
    audited("POST", "/api/v1/tokens", "token.create", "tokens"),
    audited(
        "DELETE",
        "/api/v1/tokens/{name}",
        "token.revoke",
        "token/{name}",
    ),
    route("GET", "/api/v1/contracts"),
    route("GET", "/api/v1/customers"),
    audited(
        "PUT",
        "/api/v1/customers/{customer}/contract",
        "contract.set",
        "customer/{customer}",
    ),
    route("GET", "/api/v1/audit"),
    route("GET", "/api/v1/hosts/{customer}/{host}/probes"),
    route("GET", "/api/v1/hosts/{customer}/{host}/diagnostics"),
    audited(
        "POST",
        "/api/v1/hosts/{customer}/{host}/diagnostics",
        "diagnostic.request",
        "host/{customer}/{host}",
    ),
    route("GET", "/api/v1/diagnostics/{id}"),
    route("GET", "/api/v1/reports"),
    audited("POST", "/api/v1/reports", "report.generate", "reports"),
    route("GET", "/api/v1/reports/{id}"),
    route("GET", "/api/v1/reports/{id}/download"),
];

fn handler(r: &Route) -> MethodRouter<ApiState> {
    use super::{admin, diagnostics, findings, hosts, reports};
    match (r.method, r.path) {
        ("GET", "/api/v1/openapi.json") => get(super::openapi::document),
        ("GET", "/api/v1/me") => get(whoami),
        ("GET", "/api/v1/hosts") => get(hosts::list),
        ("GET", "/api/v1/hosts/{customer}/{host}") => get(hosts::show),
        ("GET", "/api/v1/hosts/{customer}/{host}/metrics") => get(hosts::metrics),
        ("GET", "/api/v1/hosts/{customer}/{host}/logs") => get(hosts::logs),
        ("GET", "/api/v1/findings") => get(findings::list),
        ("GET", "/api/v1/findings/{id}") => get(findings::show),
        ("POST", "/api/v1/findings/{id}/ack") => post(findings::ack),
        ("POST", "/api/v1/findings/{id}/resolve") => post(findings::resolve),
        ("POST", "/api/v1/findings/{id}/silence") => post(findings::silence),
        ("GET", "/api/v1/silences") => get(admin::silences),
        ("POST", "/api/v1/silences") => post(admin::add_silence),
        ("POST", "/api/v1/silences/{id}/end") => post(admin::end_silence),
        ("GET", "/api/v1/tokens") => get(admin::tokens),
        ("POST", "/api/v1/tokens") => post(admin::create_token),
        ("DELETE", "/api/v1/tokens/{name}") => delete(admin::revoke_token),
        ("GET", "/api/v1/contracts") => get(admin::contracts),
        ("GET", "/api/v1/customers") => get(admin::customers),
        ("PUT", "/api/v1/customers/{customer}/contract") => put(admin::set_contract),
        ("GET", "/api/v1/audit") => get(admin::audit),
        ("GET", "/api/v1/hosts/{customer}/{host}/probes") => get(diagnostics::probes),
        ("GET", "/api/v1/hosts/{customer}/{host}/diagnostics") => get(diagnostics::list),
        ("POST", "/api/v1/hosts/{customer}/{host}/diagnostics") => post(diagnostics::request),
        ("GET", "/api/v1/diagnostics/{id}") => get(diagnostics::one),
        ("GET", "/api/v1/reports") => get(reports::list),
        ("POST", "/api/v1/reports") => post(reports::generate),
        ("GET", "/api/v1/reports/{id}") => get(reports::show),
        ("GET", "/api/v1/reports/{id}/download") => get(reports::download),
        (m, p) => unreachable!("ROUTES lists {m} {p} without a handler"),
    }
}

/// Who the token is: the web desk shows it and hides what the role may not do.
async fn whoami(axum::Extension(caller): axum::Extension<TokenRow>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "name": caller.name, "role": caller.role.as_str() }))
}

pub fn router(state: ApiState) -> Router {
    let mut r = Router::new();
    for route in ROUTES {
        // Routes of one path with different methods merge.
        r = r.route(route.path, handler(route));
    }
    r.fallback(|| async {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such resource under /api/v1",
        )
    })
    .layer(middleware::from_fn_with_state(state.clone(), authenticate))
    .with_state(state)
}

/// The route `method path` matches, and its path parameters.
pub fn match_route<'a>(
    routes: &'a [Route],
    method: &str,
    path: &str,
) -> Option<(&'a Route, Vec<(&'a str, String)>)> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    'routes: for r in routes.iter().filter(|r| r.method == method) {
        let pat: Vec<&str> = r.path.split('/').collect();
        if pat.len() != segs.len() {
            continue;
        }
        let mut params = Vec::new();
        for (p, s) in pat.iter().zip(&segs) {
            match p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) if !s.is_empty() => params.push((name, (*s).to_string())),
                _ if p == s => {}
                _ => continue 'routes,
            }
        }
        return Some((r, params));
    }
    None
}

/// `finding/{id}` with the path's values.
fn fill(template: &str, params: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (name, value) in params {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// The audit trail's detail: the request body (JSON) without secrets, at most 1 KiB.
pub fn audit_detail(body: &[u8]) -> String {
    const MAX: usize = 1024;
    let mut text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut v) => {
            if let Some(o) = v.as_object_mut() {
                for k in ["token", "secret", "password"] {
                    if o.contains_key(k) {
                        o.insert(k.into(), "(hidden)".into());
                    }
                }
            }
            v.to_string()
        }
        Err(_) if body.is_empty() => String::new(),
        Err(_) => serde_json::json!({ "unreadable_body_bytes": body.len() }).to_string(),
    };
    if text.len() > MAX {
        let mut cut = MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// The caller, from its bearer token; mutating calls, answered or refused, go to the audit
/// trail with the token's name.
async fn authenticate(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    // The document describing the API is public: a client reads it before it has a token.
    if req.uri().path() == "/api/v1/openapi.json" {
        return Ok(next.run(req).await);
    }
    let mutating = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let matched = match_route(ROUTES, req.method().as_str(), req.uri().path());
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let caller = match header.strip_prefix("Bearer ") {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send `Authorization: Bearer <token>` (aftercare-collector token create)",
        )),
        Some(secret) => {
            let hash = token::hash(secret);
            let found = with_store(&state, false, move |st| Ok(st.token_by_hash(&hash)?)).await;
            match found {
                Ok(Some(c)) => Ok(c),
                Ok(None) => Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "unknown or revoked token",
                )),
                Err(e) => Err(e),
            }
        }
    };
    if !mutating {
        let mut req = req;
        req.extensions_mut().insert(caller?);
        return Ok(next.run(req).await);
    }
    // Mutating: keep the body for the audit trail, then hand it on.
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the request body is over 1 MiB",
        )
    });
    let (action, mut target) = match &matched {
        Some((r, params)) => match r.audit {
            Some((action, t)) => (action.to_string(), fill(t, params)),
            None => (format!("{} {}", parts.method, r.path), String::new()),
        },
        None => (
            format!("{} (no such route)", parts.method),
            parts.uri.path().to_string(),
        ),
    };
    let detail = bytes.as_ref().map(|b| audit_detail(b)).unwrap_or_default();
    let (actor, role) = match &caller {
        Ok(c) => (c.name.clone(), c.role.as_str().to_string()),
        Err(_) => ("(none)".to_string(), "none".to_string()),
    };
    let resp = match (caller, bytes) {
        (Ok(c), Ok(b)) => {
            let mut req = Request::from_parts(parts, axum::body::Body::from(b));
            req.extensions_mut().insert(c);
            next.run(req).await
        }
        (Err(e), _) | (_, Err(e)) => e.into_response(),
    };
    let outcome = resp
        .extensions()
        .get::<ErrorCode>()
        .map_or_else(
            || {
                if resp.status().is_success() {
                    "ok"
                } else {
                    "error"
                }
            },
            |c| c.0,
        )
        .to_string();
    if let Some(t) = resp.extensions().get::<AuditTarget>() {
        target = t.0.clone();
    }
    let row = AuditRow {
        id: 0,
        at: now_millis(),
        actor,
        role,
        action,
        target,
        outcome,
        detail,
    };
    if let Err(e) = with_store(&state, true, move |st| Ok(st.add_audit(&row)?)).await {
        // The change happened; losing its audit entry is logged loudly, not hidden.
        warn!("api: cannot write the audit trail: {}", e.message);
        return Ok(ApiError::internal().into_response());
    }
    Ok(resp)
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
    f: impl FnOnce(&mut dyn Store) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let db = state.database.clone();
    tokio::task::spawn_blocking(move || {
        let mut st = if write {
            db.open()?
        } else {
            db.open_readonly()?
        };
        f(&mut *st)
    })
    .await
    .map_err(|_| ApiError::internal())?
}

/// `sla.toml`'s policy with the contracts assigned over the API applied.
pub(super) fn policy(sla: &SlaPolicy, st: &mut dyn Store) -> Result<SlaPolicy, ApiError> {
    Ok(crate::store::sla_in_force(sla, st)?.0)
}

/// Query parameters, or 400 `bad_query` naming the one at fault.
pub(super) fn query<T>(
    q: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    q.map(|axum::extract::Query(v)| v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))
}

/// A JSON body, or 400 `bad_body` saying what is wrong with it.
pub(super) fn body<T>(
    b: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    b.map(|Json(v)| v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.body_text()))
}

/// A time parameter (`15m`, `24h`, `7d`, a date, RFC 3339), or 400 `bad_time` naming it.
pub(super) fn time_param(field: &'static str, value: &str, now: i64) -> Result<i64, ApiError> {
    if value.trim() == "now" {
        return Ok(now);
    }
    aftercare_shared::time_fmt::parse_since(value, now)
        .map_err(|e| ApiError::bad("bad_time", field, e))
}

/// `{"items": [...], "next_cursor": ...}`
pub(super) fn page_json(items: Vec<serde_json::Value>, next: Option<String>) -> serde_json::Value {
    serde_json::json!({ "items": items, "next_cursor": next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_with_their_parameters_and_audit_names() {
        let (r, p) = match_route(ROUTES, "POST", "/api/v1/findings/12/ack").unwrap();
        assert_eq!(r.audit, Some(("finding.ack", "finding/{id}")));
        assert_eq!(fill(r.audit.unwrap().1, &p), "finding/12");
        let (r, p) = match_route(ROUTES, "PUT", "/api/v1/customers/acme/contract").unwrap();
        assert_eq!(fill(r.audit.unwrap().1, &p), "customer/acme");
        assert!(match_route(ROUTES, "GET", "/api/v1/findings/12/ack").is_none());
        assert!(match_route(ROUTES, "GET", "/api/v1/hosts/acme").is_none());
        // Each (method, path) once.
        let mut seen = std::collections::BTreeSet::new();
        for r in ROUTES {
            assert!(
                seen.insert((r.method, r.path)),
                "{} {} twice",
                r.method,
                r.path
            );
            assert_eq!(
                r.audit.is_some(),
                r.method != "GET",
                "{} {}",
                r.method,
                r.path
            );
        }
    }

    #[test]
    fn audit_detail_hides_secrets_and_stays_small() {
        assert_eq!(
            audit_detail(br#"{"name":"ann","token":"act_x"}"#),
            r#"{"name":"ann","token":"(hidden)"}"#
        );
        let big = format!(r#"{{"reason":"{}"}}"#, "é".repeat(2000));
        let d = audit_detail(big.as_bytes());
        assert!(d.len() <= 1024 + '…'.len_utf8(), "{}", d.len());
        assert_eq!(audit_detail(b""), "");
        assert_eq!(audit_detail(b"{x"), r#"{"unreadable_body_bytes":2}"#);
    }
}

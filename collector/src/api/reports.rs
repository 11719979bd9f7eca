//! Inspection reports over the API: list them, make one (engineers), follow its progress,
//! download it as HTML, PDF, Markdown or JSON. A report is stored as data and rendered on
//! download, so every format says the same thing.

use super::page;
use super::server::{ApiError, ApiState, AuditTarget, body, page_json, query, require, with_store};
use super::token::Role;
use crate::report::period::{self, Period};
use crate::report::record::{NewReport, ReportRow, Status};
use crate::report::{job, render};
use crate::store::TokenRow;
use aftercare_shared::time_fmt::{now_millis, rfc3339};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;
type BodyResult<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

pub fn report_json(r: &ReportRow) -> Value {
    let link = |f: &str| format!("/api/v1/reports/{}/download?format={f}", r.id);
    json!({
        "id": r.id,
        "customer": r.customer,
        "period": { "from": rfc3339(r.from), "to": rfc3339(r.to), "label": r.label },
        "lang": r.lang,
        "time_zone": r.time_zone,
        "scheduled": r.scheduled,
        "status": r.status.as_str(),
        "progress": r.progress,
        "message": r.message,
        "requested_by": r.requested_by,
        "created_at": rfc3339(r.created_at),
        "finished_at": r.finished_at.map(rfc3339),
        "downloads": if r.status == Status::Done {
            json!({ "html": link("html"), "pdf": link("pdf"), "md": link("md"), "json": link("json") })
        } else {
            Value::Null
        },
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    customer: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// Reports newest first.
pub async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    q: QueryResult<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    require(&caller, Role::Viewer)?;
    let q = query(q)?;
    let limit = page::limit(q.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let before = q
        .cursor
        .as_deref()
        .map(|c| {
            page::decode("reports", c)?
                .parse::<i64>()
                .map_err(|_| page::PageError::Cursor)
        })
        .transpose()?;
    let customer = q.customer.filter(|c| !c.is_empty());
    let rows = with_store(&state, false, move |st| {
        Ok(st.reports(customer.as_deref(), limit + 1, before)?)
    })
    .await?;
    let more = rows.len() > limit;
    let rows = &rows[..rows.len().min(limit)];
    let next = match rows.last() {
        Some(last) if more => Some(page::encode("reports", &last.id.to_string())),
        _ => None,
    };
    Ok(Json(page_json(
        rows.iter().map(report_json).collect(),
        next,
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateBody {
    customer: String,
    /// `2026-Q3`; or `from` and `to`; neither: the last quarter that has ended.
    quarter: Option<String>,
    from: Option<String>,
    to: Option<String>,
    lang: Option<String>,
}

/// The period a request names, read in the customer's zone.
fn period_of(b: &GenerateBody, tz_name: &str) -> Result<Period, ApiError> {
    let tz =
        period::zone(tz_name).map_err(|e| ApiError::bad("bad_body", "time_zone", e.to_string()))?;
    match (&b.quarter, &b.from, &b.to) {
        (Some(q), None, None) => period::parse_quarter(q, &tz)
            .map_err(|e| ApiError::bad("bad_body", "quarter", e.to_string())),
        (None, Some(f), Some(t)) => period::between(f, t, &tz).map_err(|e| {
            let field = match &e {
                period::PeriodError::Time { field, .. } => field,
                _ => "to",
            };
            ApiError::bad("bad_body", field, e.to_string())
        }),
        (None, None, None) => Ok(period::last_ended_quarter(now_millis(), &tz)),
        (Some(_), _, _) => Err(ApiError::bad(
            "bad_body",
            "quarter",
            "give a quarter, or from and to, not both",
        )),
        (None, Some(_), None) => Err(ApiError::bad("bad_body", "to", "from needs a to")),
        (None, None, Some(_)) => Err(ApiError::bad("bad_body", "from", "to needs a from")),
    }
}

/// Make a report: 202 with its id; follow it at `/reports/{id}`.
pub async fn generate(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    b: BodyResult<GenerateBody>,
) -> Result<Response, ApiError> {
    require(&caller, Role::Engineer)?;
    let b = body(b)?;
    let customer = b.customer.trim().to_string();
    let (default_lang, tz_name) = state.reports.for_customer(&customer);
    let lang = b.lang.clone().unwrap_or(default_lang);
    if !crate::report::LANGS.contains(&lang.as_str()) {
        return Err(ApiError::bad(
            "bad_body",
            "lang",
            format!("'{lang}': reports are written in en or zh-CN"),
        ));
    }
    let period = period_of(&b, &tz_name)?;
    let row = NewReport {
        customer: customer.clone(),
        from: period.from,
        to: period.to,
        label: period.label,
        lang,
        time_zone: tz_name,
        scheduled: false,
        requested_by: caller.name.clone(),
        created_at: now_millis(),
    };
    let r = row.clone();
    let id = with_store(&state, true, move |st| {
        let now = now_millis();
        if !st.hosts(now)?.iter().any(|h| h.customer == r.customer) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_customer",
                format!("customer: no host of '{}' has connected", r.customer),
            ));
        }
        st.add_report(&r)?
            .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "conflict", "report exists"))
    })
    .await?;
    // Made off the async threads; its row shows the progress.
    let (db, sla) = (state.database.clone(), state.sla.clone());
    tokio::task::spawn_blocking(move || {
        if let Err(e) = job::make(&db, &sla, id, &row) {
            tracing::warn!(report = id, "cannot store the report: {e}");
        }
    });
    let mut resp = (
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "status": "running", "progress": 0 })),
    )
        .into_response();
    resp.extensions_mut()
        .insert(AuditTarget(format!("report/{id}")));
    Ok(resp)
}

fn unknown(id: i64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_report",
        format!("no report {id}"),
    )
}

pub async fn show(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    require(&caller, Role::Viewer)?;
    let row = with_store(&state, false, move |st| {
        Ok(st
            .reports(None, 1, Some(id.saturating_add(1)))?
            .into_iter()
            .find(|r| r.id == id))
    })
    .await?
    .ok_or_else(|| unknown(id))?;
    Ok(Json(report_json(&row)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadQuery {
    format: Option<String>,
}

/// The report as a file: `format` html (default), pdf, md or json.
pub async fn download(
    State(state): State<ApiState>,
    Extension(caller): Extension<TokenRow>,
    Path(id): Path<i64>,
    q: QueryResult<DownloadQuery>,
) -> Result<Response, ApiError> {
    require(&caller, Role::Viewer)?;
    let format = query(q)?.format.unwrap_or_else(|| "html".into());
    if !["html", "pdf", "md", "json"].contains(&format.as_str()) {
        return Err(ApiError::bad(
            "bad_format",
            "format",
            format!("'{format}': use html, pdf, md or json"),
        ));
    }
    let row = with_store(&state, false, move |st| Ok(st.report(id)?))
        .await?
        .ok_or_else(|| unknown(id))?;
    let data = match (row.status, row.data.as_deref()) {
        (Status::Done, Some(d)) => d.to_vec(),
        (Status::Running, _) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_ready",
                format!("report {id} is still being made ({} %)", row.progress),
            ));
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "failed",
                format!("report {id} failed: {}", row.message),
            ));
        }
    };
    let templates = state.templates.clone();
    let (bytes, mime) =
        tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, &str), ApiError> {
            let report = job::decode(&data).map_err(|m| {
                tracing::warn!(report = id, "{m}");
                ApiError::internal()
            })?;
            let t = render::load_templates(templates.as_deref()).map_err(|e| {
                tracing::warn!("report templates: {e}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "templates",
                    "the operator's report templates do not load; the collector's log says why",
                )
            })?;
            let failed = |e: render::RenderError| {
                tracing::warn!(report = id, "rendering: {e}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "render", e.to_string())
            };
            Ok(match format.as_str() {
                "json" => (
                    render::render_json(&report).map_err(failed)?.into_bytes(),
                    "application/json",
                ),
                "md" => (
                    render::render_markdown(&report, &t)
                        .map_err(failed)?
                        .into_bytes(),
                    "text/markdown; charset=utf-8",
                ),
                "pdf" => {
                    let html = render::render_html(&report, &t).map_err(failed)?;
                    (
                        render::render_pdf(&html, None).map_err(failed)?,
                        "application/pdf",
                    )
                }
                _ => (
                    render::render_html(&report, &t)
                        .map_err(failed)?
                        .into_bytes(),
                    "text/html; charset=utf-8",
                ),
            })
        })
        .await
        .map_err(|_| ApiError::internal())??;
    let ext = match mime {
        "application/json" => "json",
        "application/pdf" => "pdf",
        m if m.starts_with("text/markdown") => "md",
        _ => "html",
    };
    let name = file_name(&row.customer, &row.label, ext);
    let mut resp = bytes.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// `aftercare-acme-2026-Q3.html`: customer and period, safe in a header and on any disk.
pub fn file_name(customer: &str, label: &str, ext: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("aftercare-{}-{}.{ext}", clean(customer), clean(label))
}

//! An inspection report laid out for people: HTML (one self-contained file with inline CSS
//! and SVG charts, printable to A4), Markdown, and JSON (the model itself). Renderers are
//! pure, a `Report` and the templates in and a string out; reading an operator's template
//! folder (`Templates::load`) and printing with Chromium (`pdf`) are the edges.
//!
//! Labels come from the language's table (`config/templates/en.toml`, `zh-CN.toml`):
//! templates call `t("key")` for their own labels (a missing one is an error) and
//! `tr("group", value)` for keys the model carries (`inspected`, grading `rules`, grade
//! `reasons` as `key=value`, timeline kinds...), which fall back to the key itself so a
//! new key from the model still renders, untranslated.

mod charts;
mod format;
mod pdf;
mod templates;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::tz::TimeZone;
use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior, Value};
use serde::Serialize;

#[cfg(test)]
use crate::report::model;
use crate::report::model::Report;
pub use pdf::{find_chromium, render_pdf};
use templates::Table;
pub use templates::Templates;

/// The languages a report is written in (`meta.lang`, the CLI's `--lang`).
pub const LANGUAGES: [&str; 2] = super::LANGS;

/// The operator's templates from `dir` over the built-in ones, or the built-in ones.
pub fn load_templates(dir: Option<&Path>) -> Result<Templates, RenderError> {
    match dir {
        Some(d) => Templates::load(d),
        None => Ok(Templates::builtin()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("unknown report language `{0}`: reports are written in en or zh-CN")]
    UnknownLang(String),
    #[error("unknown time zone `{zone}` in the report: {source}")]
    TimeZone { zone: String, source: jiff::Error },
    #[error("the report's period `{value}` is not an RFC 3339 time: {source}")]
    Period { value: String, source: jiff::Error },
    #[error("drawing a chart: {0}")]
    Chart(String),
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Template {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Table {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    #[error("{}: `{key}` is not a label the report uses (see the built-in table)", path.display())]
    UnknownLabel { path: PathBuf, key: String },
    #[error("template folder {} does not exist", .0.display())]
    TemplateDir(PathBuf),
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("serializing the report: {0}")]
    Json(#[from] serde_json::Error),
    /// Where it looked.
    #[error(
        "PDF needs Chromium and none was found (looked at {0}): install it with \
         `apt-get install chromium` (Debian; Ubuntu: `chromium-browser`; RHEL, Fedora: \
         `dnf install chromium`), or set CHROME to its path; Chinese reports also need a CJK \
         font (`apt-get install fonts-noto-cjk`)"
    )]
    NoChromium(String),
    #[error("printing to PDF with {}: {message}", chromium.display())]
    Chromium { chromium: PathBuf, message: String },
}

/// The report as one self-contained HTML file.
pub fn render_html(report: &Report, templates: &Templates) -> Result<String, RenderError> {
    let charts = draw_charts(report)?;
    render(report, templates, templates::HTML, Some(charts))
}

/// The same content as Markdown tables (trends as their p50, p95 and max, no charts).
pub fn render_markdown(report: &Report, templates: &Templates) -> Result<String, RenderError> {
    render(report, templates, templates::MARKDOWN, None)
}

/// The data the other formats are rendered from.
pub fn render_json(report: &Report) -> Result<String, RenderError> {
    Ok(serde_json::to_string_pretty(report)?)
}

#[derive(Serialize)]
struct Charts {
    /// Per host, one SVG per trend, in the trends' order.
    trends: BTreeMap<String, Vec<String>>,
    availability: BTreeMap<String, String>,
    by_level: String,
}

fn draw_charts(report: &Report) -> Result<Charts, RenderError> {
    let tz = zone(report)?;
    let (from, to) = (instant(&report.meta.from)?, instant(&report.meta.to)?);
    let mut charts = Charts {
        trends: BTreeMap::new(),
        availability: BTreeMap::new(),
        by_level: charts::by_level(&report.inspection.findings.by_level)
            .map_err(RenderError::Chart)?,
    };
    for host in &report.inspection.hosts {
        let trends = host
            .trends
            .iter()
            .map(|t| charts::trend(t, from, to, &tz))
            .collect::<Result<Vec<_>, _>>()
            .map_err(RenderError::Chart)?;
        charts.trends.insert(host.host.clone(), trends);
        let outages = charts::outage_spans(&host.availability.outages)
            .map_err(|e| RenderError::Chart(format!("an outage of {}: {e}", host.host)))?;
        let strip = charts::availability(&outages, from, to, &tz).map_err(RenderError::Chart)?;
        charts.availability.insert(host.host.clone(), strip);
    }
    Ok(charts)
}

fn render(
    report: &Report,
    templates: &Templates,
    name: &str,
    charts: Option<Charts>,
) -> Result<String, RenderError> {
    let table = Arc::new(templates.table(&report.meta.lang)?.clone());
    let tz = zone(report)?;
    let env = environment(templates, table, tz)?;
    let template = env.get_template(name).map_err(|e| error_in(name, &e))?;
    template
        .render(minijinja::context! { report => Serde(report), charts => Serde(charts) })
        .map_err(|e| error_in(name, &e))
}

fn error_in(name: &str, e: &minijinja::Error) -> RenderError {
    // The innermost error names the template it happened in (an include, a macro).
    let mut at = e;
    while let Some(inner) =
        std::error::Error::source(at).and_then(|s| s.downcast_ref::<minijinja::Error>())
    {
        at = inner;
    }
    let in_template = at.name().or(e.name()).unwrap_or(name);
    let mut err = templates::template_error(std::path::Path::new(in_template), at);
    if let RenderError::Template { line, .. } = &mut err {
        *line = at.line().or(e.line());
    }
    err
}

fn zone(report: &Report) -> Result<TimeZone, RenderError> {
    TimeZone::get(&report.meta.time_zone).map_err(|source| RenderError::TimeZone {
        zone: report.meta.time_zone.clone(),
        source,
    })
}

fn instant(s: &str) -> Result<i64, RenderError> {
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|source| RenderError::Period {
            value: s.to_owned(),
            source,
        })
}

fn environment(
    templates: &Templates,
    table: Arc<Table>,
    tz: TimeZone,
) -> Result<Environment<'_>, RenderError> {
    let mut env = Environment::new();
    // A misspelt field must fail the render, not leave a blank in a customer's report.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Block tags on their own lines leave no blank lines (Markdown tables need that).
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .expect("the default delimiters are valid");
    env.set_syntax(syntax);
    for (name, source) in &templates.sources {
        env.add_template(name, source)
            .map_err(|e| templates::template_error(std::path::Path::new(name), &e))?;
    }
    let none = table
        .get("label.none")
        .cloned()
        .unwrap_or_else(|| "-".to_owned());

    let t = Arc::clone(&table);
    env.add_function("t", move |key: &str| -> Result<String, minijinja::Error> {
        t.get(key).cloned().ok_or_else(|| {
            minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("no label `{key}` in the language's table"),
            )
        })
    });
    let t = Arc::clone(&table);
    env.add_function("tr", move |group: &str, raw: &str| -> String {
        translate(&t, group, raw)
    });
    let (t, z) = (Arc::clone(&table), tz.clone());
    env.add_function(
        "advise",
        move |kind: &str, text: &str, evidence: &str| -> String {
            advise(&t, &z, kind, text, evidence)
        },
    );

    let z = tz.clone();
    env.add_filter("evidence", move |ev: &str| evidence(ev, &z));
    let (z, n) = (tz.clone(), none.clone());
    env.add_filter(
        "dt",
        move |v: Option<String>| -> Result<String, minijinja::Error> {
            v.map_or(Ok(n.clone()), |s| {
                format::datetime(&s, &z).map_err(|e| time_error(&s, e))
            })
        },
    );
    let (z, n) = (tz, none.clone());
    env.add_filter(
        "date",
        move |v: Option<String>| -> Result<String, minijinja::Error> {
            v.map_or(Ok(n.clone()), |s| {
                format::date(&s, &z).map_err(|e| time_error(&s, e))
            })
        },
    );
    let n = none.clone();
    env.add_filter("pct", move |v: Option<f64>| {
        v.map_or(n.clone(), format::percent)
    });
    let n = none.clone();
    env.add_filter("bytes", move |v: Option<f64>| {
        v.map_or(n.clone(), format::bytes)
    });
    let n = none.clone();
    env.add_filter("value", move |v: Option<f64>, unit: &str| {
        v.map_or(n.clone(), |v| format::value(v, unit))
    });
    let n = none;
    env.add_filter("num", move |v: Option<f64>, digits: Option<usize>| {
        v.map_or(n.clone(), |v| format!("{v:.*}", digits.unwrap_or(1)))
    });
    let t = table;
    env.add_filter("dur", move |ms: i64| format::duration(ms, &t));
    // Markdown table cells: a `|` or a line break in a value would end the cell.
    env.add_filter("cell", |s: Value| {
        s.to_string().replace('|', "\\|").replace(['\n', '\r'], " ")
    });
    Ok(env)
}

/// `group.key` from the table; `key=value` fills the label's `{value}`; unknown keys show
/// as they are. A grading rule (`rule`, `grade:key`) shows as `grade — sentence`, the
/// customer's rule as its sentence.
fn translate(table: &Table, group: &str, raw: &str) -> String {
    if group == "rule"
        && let Some((grade, key)) = raw.split_once(':')
    {
        return match table.get(&format!("rule.{key}")) {
            Some(label) if grade == "customer" => label.clone(),
            Some(label) => format!("{grade} — {label}"),
            None => raw.to_owned(),
        };
    }
    let (key, value) = raw.split_once('=').unwrap_or((raw, ""));
    match table.get(&format!("{group}.{key}")) {
        Some(label) => label.replace("{value}", value),
        None => raw.to_owned(),
    }
}

/// A recommendation's sentence in the report's language: a finding's own text as it is;
/// for the other kinds, `advice.<kind>` with `{1}`, `{2}` filled from the evidence's parts
/// after its prefix (a time as a date, a clock or scope translated). Evidence of another
/// shape, or a kind the table lacks, leaves compute's (English) text.
fn advise(table: &Table, tz: &TimeZone, kind: &str, text: &str, evidence: &str) -> String {
    let prefix = match kind {
        "sla_breach" => "breach",
        "fs_full" => "forecast",
        "availability" => "availability",
        "outdated_agent" => "agent",
        "outdated_kernel" => "kernel",
        "consent_expiring" => "consent",
        "certificate_expiring" => "certificate",
        _ => return text.to_owned(),
    };
    let Some(label) = table.get(&format!("advice.{kind}")) else {
        return text.to_owned();
    };
    let mut parts = evidence.splitn(3, ':');
    if parts.next() != Some(prefix) {
        return text.to_owned();
    }
    let values: Vec<String> = parts
        .map(|p| {
            format::date(p, tz).unwrap_or_else(|_| {
                ["clock", "scope"]
                    .iter()
                    .find_map(|g| table.get(&format!("{g}.{p}")))
                    .cloned()
                    .unwrap_or_else(|| p.to_owned())
            })
        })
        .collect();
    let mut out = label.clone();
    for (i, placeholder) in ["{1}", "{2}"].iter().enumerate() {
        if out.contains(placeholder) {
            match values.get(i) {
                Some(v) if !v.is_empty() && v != "-" => out = out.replace(placeholder, v),
                _ => return text.to_owned(),
            }
        }
    }
    out
}

/// A recommendation's evidence with a trailing time (`forecast:/var:<time>`) shown in the
/// report's zone.
fn evidence(ev: &str, tz: &TimeZone) -> String {
    for (i, _) in ev.match_indices(':') {
        if let Ok(local) = format::datetime(&ev[i + 1..], tz) {
            return format!("{}{local}", &ev[..=i]);
        }
    }
    ev.to_owned()
}

fn time_error(s: &str, e: jiff::Error) -> minijinja::Error {
    minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        format!("`{s}` is not an RFC 3339 time: {e}"),
    )
}

#[cfg(test)]
mod sample;
#[cfg(test)]
mod tests;

//! Inspection reports through a running collector: the scheduler makes the quarter's report
//! once (also across a restart), engineers make one on demand over the API and follow its
//! progress, every format downloads, bad requests name their field, viewers only read, and
//! the CLI does the same locally and over `--url`.

use aftercare_collector::api::token::{self, Role};
use aftercare_collector::report::period;
use aftercare_collector::store::{BatchData, HostHello, HostId, PendingBatch, Store};
use aftercare_shared::consent::ConsentRecord;
use aftercare_shared::model::{HostFacts, LossReport, MetricKind, MetricSnapshot, Sample};
use aftercare_shared::protocol::{Identity, StreamId};
use aftercare_shared::time_fmt::now_millis;
use aftercare_tests::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const MIN: i64 = 60_000;
const DAY: i64 = 86_400_000;

fn register(st: &mut dyn Store, customer: &str, host: &str, at: i64) -> HostId {
    st.register_host(
        &HostHello {
            identity: &Identity {
                customer: customer.into(),
                host: host.into(),
            },
            facts: &HostFacts {
                hostname: host.into(),
                os_name: "Debian GNU/Linux".into(),
                os_version: "12".into(),
                kernel: "6.1.0-28-amd64".into(),
                ..HostFacts::default()
            },
            agent_version: aftercare_shared::VERSION,
            consent: &ConsentRecord::default(),
            interval_ms: 10_000,
            cert_expires: None,
        },
        at,
    )
    .unwrap()
}

/// A host reporting every 5 minutes from `from` to `to`: CPU, memory and a filesystem.
fn history(st: &mut dyn Store, host: HostId, from: i64, to: i64) {
    let mut batches = Vec::new();
    let mut ts = from;
    let mut seq = 1;
    while ts < to {
        let s = |name: &str, labels: &str, value: f64| Sample {
            name: name.into(),
            labels: labels.into(),
            kind: MetricKind::Gauge,
            value,
        };
        batches.push(PendingBatch {
            host,
            stream: StreamId::Metrics,
            seq,
            received_at: ts,
            data: BatchData::Metrics(MetricSnapshot {
                ts,
                samples: vec![
                    s("cpu.usage", "", 20.0 + (seq % 10) as f64),
                    s("mem.used", "", 2e9),
                    s("mem.total", "", 8e9),
                    s("fs.bytes.used", "mount=/", 40e9),
                    s("fs.bytes.total", "mount=/", 100e9),
                ],
            }),
            loss: LossReport::default(),
        });
        seq += 1;
        ts += 5 * MIN;
    }
    for chunk in batches.chunks(2000) {
        st.commit(chunk).unwrap();
    }
    st.compact(to + DAY).unwrap();
}

struct Desk {
    f: Fixture,
    c: Running,
    engineer: String,
    viewer: String,
    base: String,
}

/// A collector whose store has acme/db1 reporting over the last quarter that has ended
/// (UTC) and the days since.
async fn desk() -> Desk {
    let f = Fixture::new();
    let now = now_millis();
    let q = period::last_ended_quarter(now, &period::zone("UTC").unwrap());
    let (engineer, viewer) = {
        let mut st = f.collector.database.open().unwrap();
        let h = register(&mut *st, "acme", "db1", q.from - DAY);
        // The last three weeks of the quarter and what followed: enough to report on.
        history(&mut *st, h, q.to - 21 * DAY, now - 10 * MIN);
        (
            token::issue(&mut *st, "ann", Role::Engineer, "test", now).unwrap(),
            token::issue(&mut *st, "vic", Role::Viewer, "test", now).unwrap(),
        )
    };
    let c = f.start().await;
    let base = format!("http://{}/api/v1", c.api);
    Desk {
        f,
        c,
        engineer,
        viewer,
        base,
    }
}

async fn call(method: &str, url: String, token: &str, body: Option<&str>) -> (u16, Value) {
    let (m, t, b) = (
        method.to_string(),
        token.to_string(),
        body.map(str::to_owned),
    );
    tokio::task::spawn_blocking(move || api_call(&m, &url, Some(&t), b.as_deref()))
        .await
        .unwrap()
}

/// Poll a report until it is no longer running; the progress values seen on the way.
async fn finished(d: &Desk, id: i64) -> (Value, Vec<u64>) {
    let end = Instant::now() + PATIENCE * 3;
    let mut seen = Vec::new();
    loop {
        let (s, v) = call("GET", format!("{}/reports/{id}", d.base), &d.viewer, None).await;
        assert_eq!(s, 200, "{v}");
        seen.push(v["progress"].as_u64().unwrap());
        if v["status"] != "running" {
            return (v, seen);
        }
        assert!(Instant::now() < end, "report {id} still running: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_makes_the_quarters_report_once_even_across_a_restart() {
    let d = desk().await;
    let q = period::last_ended_quarter(now_millis(), &period::zone("UTC").unwrap());
    let list = eventually("the scheduler's report", PATIENCE * 3, || {
        let rows = d.f.store().reports(Some("acme"), 0, None).ok()?;
        (rows.len() == 1 && rows[0].status != aftercare_collector::report::record::Status::Running)
            .then_some(rows)
    })
    .await;
    assert!(list[0].scheduled);
    assert_eq!(list[0].label, q.label);
    assert_eq!(
        list[0].status,
        aftercare_collector::report::record::Status::Done,
        "{}",
        list[0].message
    );
    assert_eq!((list[0].from, list[0].to), (q.from, q.to));
    // Restart: the scheduler looks again at start, and makes nothing new.
    let Desk { f, c, .. } = d;
    c.shutdown().await;
    let c = f.start().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(f.store().reports(Some("acme"), 0, None).unwrap().len(), 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engineers_make_reports_follow_them_and_download_every_format() {
    let d = desk().await;
    let url = |p: &str| format!("{}{p}", d.base);
    let now = now_millis();
    let day = |t: i64| aftercare_shared::time_fmt::rfc3339(t)[..10].to_string();
    let (today, week_ago) = (day(now), day(now - 7 * DAY));
    let body =
        format!(r#"{{"customer":"acme","from":"{week_ago}","to":"{today}","lang":"zh-CN"}}"#);
    // A viewer reads but does not make reports.
    let (s, v) = call("POST", url("/reports"), &d.viewer, Some(&body)).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("forbidden")), "{v}");

    let (s, v) = call("POST", url("/reports"), &d.engineer, Some(&body)).await;
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_i64().unwrap();
    let (r, progress) = finished(&d, id).await;
    assert_eq!(r["status"], "done", "{r}");
    assert_eq!(r["progress"], 100);
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!(r["lang"], "zh-CN");
    assert_eq!(r["requested_by"], "ann");
    assert_eq!(r["period"]["label"], format!("{week_ago}..{today}"));
    assert!(!r["scheduled"].as_bool().unwrap());

    // Every format, each what it says it is.
    let get = |fmt: &str| {
        let (u, t) = (
            url(&format!("/reports/{id}/download?format={fmt}")),
            d.viewer.clone(),
        );
        async move {
            tokio::task::spawn_blocking(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(90)))
                    .build()
                    .into();
                let mut resp = agent
                    .get(&u)
                    .header("Authorization", &format!("Bearer {t}"))
                    .call()
                    .unwrap();
                let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
                let cd = resp
                    .headers()
                    .get("content-disposition")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                let body = resp
                    .body_mut()
                    .with_config()
                    .limit(64 << 20)
                    .read_to_vec()
                    .unwrap();
                (resp.status().as_u16(), ct, cd, body)
            })
            .await
            .unwrap()
        }
    };
    let (s, ct, cd, html) = get("html").await;
    assert_eq!(s, 200);
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(cd.contains("aftercare-acme-"), "{cd}");
    let html = String::from_utf8(html).unwrap();
    assert!(html.contains("<svg"), "charts are inline SVG");
    assert!(html.contains("db1"));
    let (s, _, _, md) = get("md").await;
    assert_eq!(s, 200);
    assert!(String::from_utf8(md).unwrap().contains("db1"));
    let (s, ct, _, json) = get("json").await;
    assert_eq!((s, ct.as_str()), (200, "application/json"));
    let data: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(data["meta"]["customer"], "acme");
    assert_eq!(data["meta"]["lang"], "zh-CN");
    let (s, ct, _, pdf) = get("pdf").await;
    assert_eq!((s, ct.as_str()), (200, "application/pdf"));
    assert!(pdf.starts_with(b"%PDF"), "a PDF");

    // Bad requests name their field.
    for (body, field) in [
        (r#"{"customer":"acme","quarter":"2026-Q7"}"#, "quarter"),
        (r#"{"customer":"acme","lang":"fr"}"#, "lang"),
        (
            r#"{"customer":"acme","from":"2026-08-01","to":"2026-07-01"}"#,
            "to",
        ),
        (r#"{"customer":"acme","from":"2026-08-01"}"#, "to"),
        (
            r#"{"customer":"acme","quarter":"2026-Q1","from":"2026-01-01","to":"2026-02-01"}"#,
            "quarter",
        ),
    ] {
        let (s, v) = call("POST", url("/reports"), &d.engineer, Some(body)).await;
        assert_eq!((s, v["field"].as_str()), (400, Some(field)), "{body}: {v}");
    }
    let (s, v) = call(
        "POST",
        url("/reports"),
        &d.engineer,
        Some(r#"{"customer":"nobody"}"#),
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (404, Some("unknown_customer")),
        "{v}"
    );
    let (s, v) = call(
        "GET",
        url(&format!("/reports/{id}/download?format=docx")),
        &d.viewer,
        None,
    )
    .await;
    assert_eq!((s, v["field"].as_str()), (400, Some("format")), "{v}");
    let (s, v) = call("GET", url("/reports/99999"), &d.viewer, None).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (404, Some("unknown_report")),
        "{v}"
    );

    // Listed, newest first, with download links when done; the request is audited.
    let (s, v) = call("GET", url("/reports?customer=acme"), &d.viewer, None).await;
    assert_eq!(s, 200);
    let items = v["items"].as_array().unwrap();
    // The scheduler's report of the quarter may come before or after this one.
    let ids: Vec<i64> = items.iter().map(|i| i["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {v}");
    let mine = items.iter().find(|i| i["id"] == id).expect("listed");
    assert!(mine["downloads"]["pdf"].is_string(), "{v}");
    let audit =
        d.f.store()
            .audit(&aftercare_collector::store::AuditFilter {
                since: 0,
                actor: Some("ann".into()),
                action: Some("report.generate".into()),
                before_id: None,
                limit: 0,
            })
            .unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.target == format!("report/{id}") && a.outcome == "ok"),
        "{audit:?}"
    );
    d.c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_makes_a_report_locally_and_over_the_api() {
    let d = desk().await;
    let out = d.f.dir.path().join("q.md");
    let cfg = d.f.config_path();
    let (o, c) = (out.clone(), cfg.clone());
    let local = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin("aftercare-collector"))
            .args(["--config", c.to_str().unwrap(), "report", "generate"])
            .args(["--customer", "acme", "--format", "md", "--by", "ann"])
            .args(["--out", o.to_str().unwrap()])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&local.stderr);
    assert!(local.status.success(), "{err}");
    assert!(err.contains("100 %"), "progress shown: {err}");
    let md = std::fs::read_to_string(&out).unwrap();
    assert!(md.contains("db1"), "{md}");

    let root = d.base.trim_end_matches("/api/v1").to_string();
    let out2 = d.f.dir.path().join("q.json");
    let (o, t) = (out2.clone(), d.engineer.clone());
    let remote = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin("aftercare-collector"))
            .args(["report", "generate", "--url", &root, "--customer", "acme"])
            .args(["--format", "json", "--out", o.to_str().unwrap()])
            .env("AFTERCARE_TOKEN", t)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        remote.status.success(),
        "{}",
        String::from_utf8_lossy(&remote.stderr)
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out2).unwrap()).unwrap();
    assert_eq!(v["meta"]["customer"], "acme");

    // The list has them all: the scheduler's, the local one, the remote one.
    let c = cfg.clone();
    let list = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin("aftercare-collector"))
            .args(["--config", c.to_str().unwrap(), "report", "list"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("cli:ann"), "{text}");
    assert!(text.contains("ann"), "{text}");
    d.c.shutdown().await;
}

//! The engineer's desk over real HTTP on 127.0.0.1: pages, hosts, metrics from raw points
//! or rollups, logs, findings, silences, tokens, contracts, the audit trail and the
//! OpenAPI document.

use aftercare_collector::api::token::{self, Role};
use aftercare_collector::findings::record::{Change, Clocks, FindingKey, Observed};
use aftercare_collector::store::{BatchData, HOUR_MS, HostHello, HostId, PendingBatch, Store};
use aftercare_shared::consent::ConsentRecord;
use aftercare_shared::model::{
    HostFacts, LogRecord, LossReport, MetricKind, MetricSnapshot, Sample, Severity,
};
use aftercare_shared::protocol::{Identity, StreamId};
use aftercare_shared::time_fmt::now_millis;
use aftercare_tests::*;
use serde_json::Value;
use std::collections::BTreeSet;

fn register(st: &mut dyn Store, customer: &str, host: &str, now: i64) -> HostId {
    st.register_host(
        &HostHello {
            identity: &Identity {
                customer: customer.into(),
                host: host.into(),
            },
            facts: &HostFacts {
                hostname: host.into(),
                os_name: "Debian".into(),
                kernel: "6.1".into(),
                ..HostFacts::default()
            },
            agent_version: "t",
            consent: &ConsentRecord::default(),
            interval_ms: 10_000,
            cert_expires: None,
        },
        now,
    )
    .unwrap()
}

fn open_finding(st: &mut dyn Store, host: HostId, rule: &str, level: u8, now: i64) -> i64 {
    st.apply_finding(&Change::Open {
        key: FindingKey {
            host,
            rule: rule.into(),
            subject: String::new(),
        },
        observed: Observed {
            level,
            category: "capacity".into(),
            title: format!("{rule} on the host"),
            recommendation: "Look.".into(),
            evidence: r#"{"summary":"x"}"#.into(),
            at: now,
        },
        clocks: Clocks {
            from: now,
            respond_by: None,
            restore_by: None,
        },
    })
    .unwrap()
}

fn make_token(st: &mut dyn Store, name: &str, role: Role) -> String {
    token::issue(st, name, role, "test", now_millis()).unwrap()
}

/// Run blocking HTTP calls off the test's runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::time::timeout(PATIENCE * 3, tokio::task::spawn_blocking(f))
        .await
        .expect("the calls finish in time")
        .unwrap()
}

fn code(v: &Value) -> (&str, &str) {
    (
        v["code"].as_str().unwrap_or(""),
        v["field"].as_str().unwrap_or(""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_without_gaps_or_duplicates_and_bad_input_names_its_field() {
    let f = Fixture::new();
    let now = now_millis();
    let viewer = {
        let mut st = f.collector.database.open().unwrap();
        let mut ids = Vec::new();
        for (c, h) in [
            ("acme", "db1"),
            ("acme", "db2"),
            ("acme", "web1"),
            ("globex", "a"),
            ("globex", "b"),
            ("initech", "x"),
            ("initech", "y"),
        ] {
            ids.push(register(&mut *st, c, h, now));
        }
        for (i, level) in [3u8, 1, 2, 1, 4, 2].into_iter().enumerate() {
            open_finding(
                &mut *st,
                ids[i],
                &format!("rule-{i}"),
                level,
                now - i as i64,
            );
        }
        make_token(&mut *st, "view", Role::Viewer)
    };
    let c = f.start().await;
    let base = format!("http://{}/api/v1", c.api);
    blocking(move || {
        let url = |p: &str| format!("{base}{p}");
        // Hosts, three at a time: every host once, in order.
        let hosts = api_pages(&url("/hosts"), &viewer, 3);
        let names: Vec<&str> = hosts.iter().map(|h| h["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "acme/db1",
                "acme/db2",
                "acme/web1",
                "globex/a",
                "globex/b",
                "initech/x",
                "initech/y"
            ]
        );
        let db1 = &hosts[0];
        assert_eq!(db1["open_findings"], 1, "{db1}");
        assert_eq!(db1["worst_open_level"], "L3");
        assert_eq!(db1["os"], "Debian");
        assert_eq!(db1["kernel"], "6.1");
        assert_eq!(
            db1["online"], false,
            "a starting collector has no connections"
        );
        assert!(db1["first_seen"].as_str().unwrap().ends_with('Z'));
        assert!(db1["consent"]["scopes_in_force"].is_array());
        assert_eq!(hosts[6]["worst_open_level"], Value::Null);
        let (_, v) = api_call("GET", &url("/hosts?customer=globex"), Some(&viewer), None);
        assert_eq!(v["items"].as_array().unwrap().len(), 2, "{v}");
        let (_, v) = api_call("GET", &url("/hosts?online=true"), Some(&viewer), None);
        assert_eq!(v["items"].as_array().unwrap().len(), 0, "{v}");

        // One host: its facts and open findings.
        let (s, v) = api_call("GET", &url("/hosts/acme/db2"), Some(&viewer), None);
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["facts"]["hostname"], "db2");
        assert_eq!(v["findings"][0]["rule"], "rule-1");
        let (s, v) = api_call("GET", &url("/hosts/acme/nosuch"), Some(&viewer), None);
        assert_eq!((s, code(&v)), (404, ("unknown_host", "host")), "{v}");
        assert!(
            v["message"].as_str().unwrap().contains("acme/nosuch"),
            "{v}"
        );

        // Findings two at a time: by level, every one once.
        let found = api_pages(&url("/findings"), &viewer, 2);
        let levels: Vec<&str> = found.iter().map(|f| f["level"].as_str().unwrap()).collect();
        assert_eq!(levels, ["L1", "L1", "L2", "L2", "L3", "L4"]);
        let ids: BTreeSet<i64> = found.iter().map(|f| f["id"].as_i64().unwrap()).collect();
        assert_eq!(ids.len(), 6);
        let (_, v) = api_call("GET", &url("/findings?level=L2"), Some(&viewer), None);
        assert_eq!(v["items"].as_array().unwrap().len(), 2, "{v}");
        let (_, v) = api_call(
            "GET",
            &url("/findings?customer=globex&state=all"),
            Some(&viewer),
            None,
        );
        assert_eq!(v["items"].as_array().unwrap().len(), 2, "{v}");

        // Bad limits and cursors: 400 naming the parameter.
        for q in ["limit=0", "limit=100000"] {
            let (s, v) = api_call("GET", &url(&format!("/hosts?{q}")), Some(&viewer), None);
            assert_eq!((s, code(&v)), (400, ("bad_limit", "limit")), "{q}: {v}");
            assert!(v["message"].as_str().unwrap().starts_with("limit"), "{v}");
        }
        let (_, v) = api_call("GET", &url("/hosts?limit=3"), Some(&viewer), None);
        let good = v["next_cursor"].as_str().unwrap().to_string();
        let mut tampered = good.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        for bad in ["!!!", "bm90IGEgY3Vyc29y", tampered.as_str()] {
            let (s, v) = api_call(
                "GET",
                &url(&format!("/hosts?cursor={bad}")),
                Some(&viewer),
                None,
            );
            assert_eq!((s, code(&v)), (400, ("bad_cursor", "cursor")), "{bad}: {v}");
        }
        // A cursor of one list is not one of another.
        let (s, v) = api_call(
            "GET",
            &url(&format!("/findings?cursor={good}")),
            Some(&viewer),
            None,
        );
        assert_eq!((s, code(&v)), (400, ("bad_cursor", "cursor")), "{v}");
        let (s, v) = api_call("GET", &url("/findings?state=maybe"), Some(&viewer), None);
        assert_eq!((s, code(&v)), (400, ("bad_state", "state")), "{v}");
        let (s, v) = api_call("GET", &url("/findings?level=L9"), Some(&viewer), None);
        assert_eq!((s, code(&v)), (400, ("bad_level", "level")), "{v}");
    })
    .await;
    c.shutdown().await;
}

fn metrics_batch(host: HostId, seq: u64, ts: i64, i: u64) -> PendingBatch {
    let s = |name: &str, labels: &str, kind, value| Sample {
        name: name.into(),
        labels: labels.into(),
        kind,
        value,
    };
    PendingBatch {
        host,
        stream: StreamId::Metrics,
        seq,
        received_at: ts,
        data: BatchData::Metrics(MetricSnapshot {
            ts,
            samples: vec![
                s("cpu.usage", "", MetricKind::Gauge, 40.0),
                s("mem.used", "", MetricKind::Gauge, 1e9),
                // 600 bytes a minute: 10 bytes/s.
                s(
                    "net.rx.bytes",
                    "if=eth0",
                    MetricKind::Counter,
                    600.0 * i as f64,
                ),
            ],
        }),
        loss: LossReport::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_come_from_raw_points_for_hours_and_rollups_for_weeks() {
    let mut f = Fixture::new();
    // Raw points are kept two days here: older ranges must come from rollups.
    f.collector.retention.raw = std::time::Duration::from_secs(2 * 86_400);
    let retention = f.collector.retention.to_store();
    let now = now_millis();
    let day = 24 * HOUR_MS;
    let viewer = {
        let mut st = f.collector.database.open().unwrap();
        let h = register(&mut *st, "acme", "db1", now - 20 * day);
        // A sample a minute for twenty days, through the store's own write path.
        let start = now - 20 * day;
        let batches: Vec<PendingBatch> = (0..20 * 24 * 60)
            .map(|i| metrics_batch(h, i + 1, start + i as i64 * 60_000, i))
            .collect();
        for chunk in batches.chunks(2000) {
            st.commit(chunk).unwrap();
        }
        st.compact(now).unwrap();
        // Raw points older than two days go; rollups stay.
        while st.retain_some(now, &retention, 10_000).unwrap().more {}
        make_token(&mut *st, "view", Role::Viewer)
    };
    let c = f.start().await;
    let base = format!("http://{}/api/v1/hosts/acme/db1/metrics", c.api);
    blocking(move || {
        let get = |q: &str| api_call("GET", &format!("{base}?{q}"), Some(&viewer), None);
        // An hour: raw points, counters as per-second rates.
        let (s, v) = get("from=1h");
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["source"], "raw", "{v}");
        assert_eq!(v["step_ms"], 10_000);
        let names: BTreeSet<&str> = v["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            BTreeSet::from(["cpu.usage", "mem.used", "net.rx.bytes"])
        );
        let (_, v) = get("metric=net.&from=1h&step=5m");
        let net = &v["series"][0];
        assert_eq!(
            (net["kind"].as_str(), net["unit"].as_str()),
            (Some("counter"), Some("bytes/s"))
        );
        let pts = net["points"].as_array().unwrap();
        assert!((11..=13).contains(&pts.len()), "{}", pts.len());
        for p in pts {
            assert!((p[1].as_f64().unwrap() - 10.0).abs() < 1e-6, "{p}");
            assert_eq!(
                p[0].as_i64().unwrap() % 300_000,
                0,
                "buckets are aligned to the step"
            );
        }
        // Thirty days: 5-minute rollups (raw is gone past two days, yet the whole span is
        // there), about 500 points at most.
        let (s, v) = get("metric=cpu.usage&from=30d");
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["source"], "5m", "{v}");
        let pts = v["series"][0]["points"].as_array().unwrap();
        assert!(pts.len() <= 500 && pts.len() > 50, "{}", pts.len());
        let first = pts[0][0].as_i64().unwrap();
        assert!(first < now - 15 * day, "the rollups reach back: {first}");
        assert!(
            pts.iter()
                .all(|p| (p[1].as_f64().unwrap() - 40.0).abs() < 1e-9)
        );
        let (_, v) = get("metric=net.rx.bytes&from=30d&step=1h");
        let pts = v["series"][0]["points"].as_array().unwrap();
        assert!(
            pts.iter()
                .all(|p| (p[1].as_f64().unwrap() - 10.0).abs() < 1e-6),
            "{v}"
        );
        // Eight hours: rollups for the compacted hours, then raw points for the newest
        // one, not compacted yet.
        let (_, v) = get("metric=cpu.usage&from=8h&step=5m");
        assert_eq!(v["source"], "5m", "{v}");
        let pts = v["series"][0]["points"].as_array().unwrap();
        let last = pts.last().unwrap()[0].as_i64().unwrap();
        assert!(
            last >= now - 15 * 60_000,
            "the newest minutes are there: {last} {now}"
        );
        assert!(pts.len() >= 90, "{}", pts.len());
        // A week back, one hour long: past raw retention, so rollups.
        let (_, v) = get("metric=cpu.usage&from=7d&to=167h");
        assert_eq!(v["source"], "5m", "{v}");
        assert!(
            !v["series"][0]["points"].as_array().unwrap().is_empty(),
            "{v}"
        );
        // A year: hourly rollups.
        let (_, v) = get("metric=cpu.usage&from=365d");
        assert_eq!(v["source"], "1h", "{v}");
        assert!(
            !v["series"][0]["points"].as_array().unwrap().is_empty(),
            "{v}"
        );

        // Bad input names its parameter.
        let (s, v) = get("from=yesterdayish");
        assert_eq!((s, code(&v)), (400, ("bad_time", "from")), "{v}");
        let (s, v) = get("from=1h&to=soon");
        assert_eq!((s, code(&v)), (400, ("bad_time", "to")), "{v}");
        let (s, v) = get("from=1h&to=2h");
        assert_eq!((s, code(&v)), (400, ("bad_time", "from")), "{v}");
        let (s, v) = get("from=30d&step=10s");
        assert_eq!((s, code(&v)), (400, ("bad_step", "step")), "{v}");
        let (s, v) = get("from=1h&step=often");
        assert_eq!((s, code(&v)), (400, ("bad_step", "step")), "{v}");
        let (s, v) = api_call("GET", &base.replace("db1", "db9"), Some(&viewer), None);
        assert_eq!((s, code(&v)), (404, ("unknown_host", "host")), "{v}");
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_filter_and_page_newest_first() {
    let f = Fixture::new();
    let now = now_millis();
    let viewer = {
        let mut st = f.collector.database.open().unwrap();
        let h = register(&mut *st, "acme", "db1", now - HOUR_MS);
        // 30 lines, two to a second, alternating sources; every third an error.
        let records: Vec<LogRecord> = (0..30u64)
            .map(|i| LogRecord {
                source: if i % 2 == 0 { "app" } else { "sys" }.into(),
                file: "/var/log/x.log".into(),
                offset: i * 100,
                read_at: now - 60_000,
                ts: Some(now - 60_000 + (i / 2) as i64 * 1000),
                severity: if i % 3 == 0 {
                    Severity::Error
                } else {
                    Severity::Info
                },
                line: format!("line {i:02}"),
                part: 0,
            })
            .collect();
        for (n, chunk) in records.chunks(7).enumerate() {
            st.commit(&[PendingBatch {
                host: h,
                stream: StreamId::Logs,
                seq: n as u64 + 1,
                received_at: now - 30_000,
                data: BatchData::Logs(chunk.to_vec()),
                loss: LossReport::default(),
            }])
            .unwrap();
        }
        make_token(&mut *st, "view", Role::Viewer)
    };
    let c = f.start().await;
    let base = format!("http://{}/api/v1/hosts/acme/db1/logs", c.api);
    blocking(move || {
        let lines = |items: &[Value]| -> Vec<String> {
            items
                .iter()
                .map(|r| r["message"].as_str().unwrap().to_string())
                .collect()
        };
        // Three at a time (pages end between two lines of the same second): all 30, newest
        // first, none twice.
        let all = api_pages(&format!("{base}?since=1h"), &viewer, 3);
        let expect: Vec<String> = (0..30).rev().map(|i| format!("line {i:02}")).collect();
        assert_eq!(lines(&all), expect);
        assert_eq!(all[0]["source"], "sys");
        assert_eq!(all[0]["file"], "/var/log/x.log");
        assert!(all[0]["ts"].as_str().unwrap().ends_with('Z'));
        let errors = api_pages(&format!("{base}?severity=error"), &viewer, 4);
        let expect: Vec<String> = (0..30)
            .rev()
            .filter(|i| i % 3 == 0)
            .map(|i| format!("line {i:02}"))
            .collect();
        assert_eq!(lines(&errors), expect);
        assert!(errors.iter().all(|r| r["severity"] == "error"));
        let app = api_pages(&format!("{base}?source=app"), &viewer, 4);
        assert_eq!(app.len(), 15);
        assert!(app.iter().all(|r| r["source"] == "app"));
        let re = api_pages(&format!("{base}?regex=line%202%5B05%5D"), &viewer, 10);
        assert_eq!(lines(&re), ["line 25", "line 20"]);
        let (_, v) = api_call("GET", &format!("{base}?limit=5"), Some(&viewer), None);
        assert_eq!(lines(v["items"].as_array().unwrap()).len(), 5);

        let get = |q: &str| api_call("GET", &format!("{base}?{q}"), Some(&viewer), None);
        let (s, v) = get("severity=loud");
        assert_eq!((s, code(&v)), (400, ("bad_severity", "severity")), "{v}");
        let (s, v) = get("regex=%28unclosed");
        assert_eq!((s, code(&v)), (400, ("bad_regex", "regex")), "{v}");
        let (s, v) = get(&format!("regex={}", "a".repeat(1025)));
        assert_eq!((s, code(&v)), (400, ("bad_regex", "regex")), "{v}");
        assert!(v["message"].as_str().unwrap().contains("1024"), "{v}");
        let (s, v) = get("since=whenever");
        assert_eq!((s, code(&v)), (400, ("bad_time", "since")), "{v}");
        let (s, v) = get("cursor=abc");
        assert_eq!((s, code(&v)), (400, ("bad_cursor", "cursor")), "{v}");
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_silences_tokens_and_contracts_and_every_change_is_audited() {
    let f = Fixture::new();
    let now = now_millis();
    let (viewer, engineer, admin, finding) = {
        let mut st = f.collector.database.open().unwrap();
        let h = register(&mut *st, "acme", "db1", now);
        register(&mut *st, "acme", "db2", now);
        let id = open_finding(&mut *st, h, "fs-full", 2, now);
        (
            make_token(&mut *st, "vera", Role::Viewer),
            make_token(&mut *st, "eng", Role::Engineer),
            make_token(&mut *st, "boss", Role::Admin),
            id,
        )
    };
    let c = f.start().await;
    let base = format!("http://{}/api/v1", c.api);
    let db = f.collector.database.clone();
    blocking(move || {
        let url = |p: &str| format!("{base}{p}");
        let call = |m: &str, p: &str, t: &str, b: Option<&str>| api_call(m, &url(p), Some(t), b);

        // The OpenAPI document is served without a token.
        let (s, doc) = api_call("GET", &url("/openapi.json"), None, None);
        assert_eq!(s, 200);
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"]["/api/v1/audit"]["get"].is_object());

        // Silences: admins write, viewers read.
        let body = r#"{"customer":"acme","host":"db2","for":"2h","reason":"disk swap"}"#;
        for t in [&viewer, &engineer] {
            let (s, v) = call("POST", "/silences", t, Some(body));
            assert_eq!((s, code(&v).0), (403, "forbidden"), "{v}");
        }
        let (s, v) = call("POST", "/silences", &admin, Some(body));
        assert_eq!(s, 201, "{v}");
        assert_eq!(
            (v["host"].as_str(), v["state"].as_str()),
            (Some("db2"), Some("active"))
        );
        assert_eq!(v["created_by"], "boss");
        let sid = v["id"].as_i64().unwrap();
        let (s, v) = call(
            "POST",
            "/silences",
            &admin,
            Some(r#"{"customer":"acme","for":"often","reason":"x"}"#),
        );
        assert_eq!((s, code(&v)), (400, ("bad_body", "for")), "{v}");
        let (_, v) = call("GET", "/silences", &viewer, None);
        assert_eq!(v["items"][0]["id"], sid, "{v}");
        let (s, v) = call("POST", &format!("/silences/{sid}/end"), &admin, None);
        assert_eq!((s, v["state"].as_str()), (200, Some("over")), "{v}");
        let (s, v) = call("POST", "/silences/999/end", &admin, None);
        assert_eq!((s, code(&v).0), (404, "unknown_silence"), "{v}");
        // A finding's host, silenced from the finding.
        let (s, v) = call(
            "POST",
            &format!("/findings/{finding}/silence"),
            &admin,
            Some(r#"{"for":"30m","reason":"reboot"}"#),
        );
        assert_eq!(s, 201, "{v}");
        assert_eq!(
            (v["customer"].as_str(), v["host"].as_str()),
            (Some("acme"), Some("db1"))
        );

        // Tokens: admins only; the secret once, never a hash.
        let (s, _) = call(
            "POST",
            "/tokens",
            &engineer,
            Some(r#"{"name":"ann","role":"viewer"}"#),
        );
        assert_eq!(s, 403);
        let (s, v) = call(
            "POST",
            "/tokens",
            &admin,
            Some(r#"{"name":"ann","role":"engineer"}"#),
        );
        assert_eq!(s, 201, "{v}");
        let ann = v["token"].as_str().unwrap().to_string();
        assert!(ann.starts_with("act_"));
        let (s, v) = call(
            "POST",
            "/tokens",
            &admin,
            Some(r#"{"name":"bo","role":"root"}"#),
        );
        assert_eq!((s, code(&v)), (400, ("bad_body", "role")), "{v}");
        let (s, _) = call("GET", "/hosts", &ann, None);
        assert_eq!(s, 200);
        let (s, v) = call("GET", "/tokens", &admin, None);
        assert_eq!(s, 200);
        let text = v.to_string();
        assert!(text.contains("\"ann\"") && !text.contains("hash") && !text.contains(&ann));
        let (s, _) = call("GET", "/tokens", &engineer, None);
        assert_eq!(s, 403);
        let (s, _) = call("DELETE", "/tokens/ann", &admin, None);
        assert_eq!(s, 204);
        let (s, _) = call("GET", "/hosts", &ann, None);
        assert_eq!(s, 401);
        let (s, v) = call("DELETE", "/tokens/ann", &admin, None);
        assert_eq!((s, code(&v).0), (404, "unknown_token"), "{v}");

        // Contracts: an assignment over the API takes precedence over sla.toml, for the
        // SLA shown with the finding.
        let (_, v) = call("GET", "/contracts", &viewer, None);
        let names: BTreeSet<&str> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains("premium") && names.contains("standard"),
            "{v}"
        );
        assert!(v["items"][0]["levels"]["L1"]["respond_ms"].is_i64(), "{v}");
        let (_, v) = call("GET", "/customers", &viewer, None);
        let acme = &v["items"][0];
        assert_eq!(acme["name"], "acme");
        assert_eq!(
            (acme["hosts"].as_i64(), acme["open_findings"].as_i64()),
            (Some(2), Some(1))
        );
        assert_eq!(acme["worst_open_level"], "L2");
        assert_eq!(acme["contract_source"], "default");
        let before = acme["contract"].as_str().unwrap().to_string();
        let other = if before == "premium" {
            "standard"
        } else {
            "premium"
        };
        let (_, f0) = call("GET", &format!("/findings/{finding}"), &viewer, None);
        assert_eq!(f0["contract"], before.as_str());
        let (s, v) = call(
            "PUT",
            "/customers/acme/contract",
            &admin,
            Some(r#"{"contract":"platinum"}"#),
        );
        assert_eq!(
            (s, code(&v)),
            (400, ("unknown_contract", "contract")),
            "{v}"
        );
        let put = format!(r#"{{"contract":"{other}"}}"#);
        let (s, _) = call("PUT", "/customers/acme/contract", &engineer, Some(&put));
        assert_eq!(s, 403);
        let (s, v) = call("PUT", "/customers/acme/contract", &admin, Some(&put));
        assert_eq!(s, 200, "{v}");
        let (_, v) = call("GET", "/customers", &viewer, None);
        assert_eq!(v["items"][0]["contract"], other);
        assert_eq!(v["items"][0]["contract_source"], "api");
        let (_, f1) = call("GET", &format!("/findings/{finding}"), &viewer, None);
        assert_eq!(f1["contract"], other);
        assert_ne!(
            f0["sla"]["restore"]["due"], f1["sla"]["restore"]["due"],
            "the deadline follows the contract: {f0} {f1}"
        );

        // An unauthenticated change is refused and recorded too.
        let (s, _) = api_call(
            "POST",
            &url(&format!("/findings/{finding}/ack")),
            None,
            None,
        );
        assert_eq!(s, 401);
        let (s, _) = call("POST", &format!("/findings/{finding}/ack"), &engineer, None);
        assert_eq!(s, 204);

        // The audit trail: admins only, newest first, each change with its token's name.
        let (s, _) = call("GET", "/audit", &engineer, None);
        assert_eq!(s, 403);
        let trail = api_pages(&url("/audit"), &admin, 4);
        let ids: Vec<i64> = trail.iter().map(|a| a["id"].as_i64().unwrap()).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        sorted.dedup();
        assert_eq!(ids, sorted, "newest first, each once");
        let rows: Vec<(String, String, String, String)> = trail
            .iter()
            .rev()
            .map(|a| {
                (
                    a["actor"].as_str().unwrap().to_string(),
                    a["action"].as_str().unwrap().to_string(),
                    a["target"].as_str().unwrap().to_string(),
                    a["outcome"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let r = |a: &str, b: &str, c: &str, d: &str| (a.into(), b.into(), c.into(), d.into());
        let fid = format!("finding/{finding}");
        let expect: Vec<(String, String, String, String)> = vec![
            // Refused, a new silence has no id: its target is the list.
            r("vera", "silence.add", "silences", "forbidden"),
            r("eng", "silence.add", "silences", "forbidden"),
            r("boss", "silence.add", &format!("silence/{sid}"), "ok"),
            r("boss", "silence.add", "silences", "bad_body"),
            r("boss", "silence.end", &format!("silence/{sid}"), "ok"),
            r("boss", "silence.end", "silence/999", "unknown_silence"),
            r("boss", "finding.silence", &fid, "ok"),
            r("eng", "token.create", "tokens", "forbidden"),
            r("boss", "token.create", "token/ann", "ok"),
            r("boss", "token.create", "tokens", "bad_body"),
            r("boss", "token.revoke", "token/ann", "ok"),
            r("boss", "token.revoke", "token/ann", "unknown_token"),
            r("boss", "contract.set", "customer/acme", "unknown_contract"),
            r("eng", "contract.set", "customer/acme", "forbidden"),
            r("boss", "contract.set", "customer/acme", "ok"),
            r("(none)", "finding.ack", &fid, "unauthenticated"),
            r("eng", "finding.ack", &fid, "ok"),
        ];
        assert_eq!(rows, expect);
        let created = trail
            .iter()
            .find(|a| a["action"] == "token.create" && a["outcome"] == "ok")
            .unwrap();
        assert_eq!(created["role"], "admin");
        assert_eq!(created["detail"]["name"], "ann");
        assert!(
            !trail.iter().any(|a| a.to_string().contains(&ann)),
            "no secret in the trail"
        );
        let (_, v) = call("GET", "/audit?actor=eng&action=finding.ack", &admin, None);
        assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
        let (s, v) = call("GET", "/audit?since=later", &admin, None);
        assert_eq!((s, code(&v)), (400, ("bad_time", "since")), "{v}");
    })
    .await;
    // The store holds the trail the API showed.
    let rows = db.open().unwrap().audit(&Default::default()).unwrap();
    assert_eq!(rows.len(), 17);
    c.shutdown().await;
}

/// The router itself, walked over HTTP: every (method, path) the OpenAPI document lists is
/// served (answers other than the fallback's `not_found` or 405).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served() {
    let f = Fixture::new();
    let admin = make_token(
        &mut *f.collector.database.open().unwrap(),
        "boss",
        Role::Admin,
    );
    let c = f.start().await;
    let root = format!("http://{}", c.api);
    blocking(move || {
        let (s, doc) = api_call("GET", &format!("{root}/api/v1/openapi.json"), None, None);
        assert_eq!(s, 200);
        let mut served = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                let method = method.to_uppercase();
                let concrete = path
                    .replace("{customer}", "acme")
                    .replace("{host}", "db1")
                    .replace("{id}", "999999")
                    .replace("{name}", "nosuch");
                let (s, v) = api_call(
                    &method,
                    &format!("{root}{concrete}"),
                    Some(&admin),
                    Some("{}"),
                );
                let unrouted = s == 405 || v["code"] == "not_found";
                assert!(
                    !unrouted,
                    "{method} {path} is documented but not served: {s} {v}"
                );
                served += 1;
            }
        }
        assert_eq!(served, aftercare_collector::api::server::ROUTES.len());
        // The check can tell: an undocumented path is the fallback's.
        let (s, v) = api_call("GET", &format!("{root}/api/v1/no-such"), Some(&admin), None);
        assert_eq!((s, v["code"].as_str()), (404, Some("not_found")));
    })
    .await;
    c.shutdown().await;
}

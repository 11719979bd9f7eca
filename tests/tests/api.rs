//! The HTTP API on 127.0.0.1 with real bearer tokens: who may read, who may act, and errors
//! that say what is wrong without showing internals.

use aftercare_collector::api::token::{self, Role};
use aftercare_collector::findings::record::{Change, Clocks, FindingKey, Observed};
use aftercare_collector::store::HostHello;
use aftercare_shared::consent::ConsentRecord;
use aftercare_shared::model::HostFacts;
use aftercare_shared::protocol::Identity;
use aftercare_shared::time_fmt::now_millis;
use aftercare_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_decide_who_reads_and_who_acts_and_errors_name_what_is_wrong() {
    let f = Fixture::new();
    let c = f.start().await;
    let now = now_millis();
    // A host with one finding, and a token of each role.
    let (viewer, engineer, id) = {
        let mut st = f.collector.database.open().unwrap();
        let host = st
            .register_host(
                &HostHello {
                    identity: &Identity {
                        customer: "acme".into(),
                        host: "db1".into(),
                    },
                    facts: &HostFacts::default(),
                    agent_version: "t",
                    consent: &ConsentRecord::default(),
                    interval_ms: 10_000,
                    cert_expires: None,
                },
                now,
            )
            .unwrap();
        let id = st
            .apply_finding(&Change::Open {
                key: FindingKey {
                    host,
                    rule: "fs-full".into(),
                    subject: "mount=/var".into(),
                },
                observed: Observed {
                    level: 1,
                    category: "capacity".into(),
                    title: "Filesystem full".into(),
                    recommendation: "Free space.".into(),
                    evidence: r#"{"summary":"/var 99% used"}"#.into(),
                    at: now,
                },
                clocks: Clocks {
                    from: now,
                    respond_by: None,
                    restore_by: None,
                },
            })
            .unwrap();
        let mut make =
            |name: &str, role: Role| token::issue(&mut *st, name, role, "test", now).unwrap();
        (make("view", Role::Viewer), make("eng", Role::Engineer), id)
    };
    let base = format!("http://{}/api/v1", c.api);
    let (b, v2) = (base.clone(), viewer.clone());
    tokio::task::spawn_blocking(move || {
        let (base, viewer) = (b, v2);
        let url = |p: &str| format!("{base}{p}");
        // Without a token, or with a wrong one: 401, with a code and a way forward.
        let (s, v) = api_call("GET", &url("/hosts"), None, None);
        assert_eq!(
            (s, v["code"].as_str()),
            (401, Some("unauthenticated")),
            "{v}"
        );
        assert!(v["message"].as_str().unwrap().contains("Bearer"), "{v}");
        let (s, _) = api_call("GET", &url("/hosts"), Some("act_wrong"), None);
        assert_eq!(s, 401);

        // A viewer reads.
        let (s, v) = api_call("GET", &url("/hosts"), Some(&viewer), None);
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["items"][0]["customer"], "acme");
        assert_eq!(v["next_cursor"], serde_json::Value::Null);
        let (s, v) = api_call("GET", &url("/findings"), Some(&viewer), None);
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["items"][0]["rule"], "fs-full");
        assert_eq!(v["items"][0]["level"], "L1");
        let due = v["items"][0]["sla"]["respond"]["due"].as_str().unwrap();
        assert!(due.ends_with('Z') && due.contains('T'), "{v}");
        // ... but does not act.
        let (s, v) = api_call(
            "POST",
            &url(&format!("/findings/{id}/ack")),
            Some(&viewer),
            None,
        );
        assert_eq!((s, v["code"].as_str()), (403, Some("forbidden")), "{v}");
        assert!(
            v["message"].as_str().unwrap().contains("needs engineer"),
            "{v}"
        );

        // An engineer acknowledges; the token's name is on the timeline.
        let (s, _) = api_call(
            "POST",
            &url(&format!("/findings/{id}/ack")),
            Some(&engineer),
            None,
        );
        assert_eq!(s, 204);
        let (s, v) = api_call(
            "POST",
            &url(&format!("/findings/{id}/ack")),
            Some(&engineer),
            None,
        );
        assert_eq!((s, v["code"].as_str()), (409, Some("conflict")), "{v}");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("already acknowledged by eng")
        );
        let (s, _) = api_call(
            "POST",
            &url(&format!("/findings/{id}/resolve")),
            Some(&engineer),
            Some(r#"{"note": "rotated the logs"}"#),
        );
        assert_eq!(s, 204);
        let (s, v) = api_call("GET", &url(&format!("/findings/{id}")), Some(&viewer), None);
        assert_eq!(s, 200);
        assert_eq!(v["state"], "resolved");
        let timeline: Vec<(String, String)> = v["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().to_string(),
                    e["by"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert_eq!(
            timeline,
            [
                ("opened".to_string(), String::new()),
                ("acknowledged".to_string(), "eng".to_string()),
                ("resolved".to_string(), "eng".to_string())
            ]
        );

        // Bad input: 4xx naming what is wrong; nothing internal.
        let (s, v) = api_call("GET", &url("/findings/999"), Some(&viewer), None);
        assert_eq!(
            (s, v["code"].as_str()),
            (404, Some("unknown_finding")),
            "{v}"
        );
        let (s, v) = api_call("GET", &url("/findings?colour=red"), Some(&viewer), None);
        assert_eq!((s, v["code"].as_str()), (400, Some("bad_query")), "{v}");
        assert!(v["message"].as_str().unwrap().contains("colour"), "{v}");
        let (s, v) = api_call("GET", &url("/findings?host=nosuch"), Some(&viewer), None);
        assert_eq!((s, v["code"].as_str()), (404, Some("unknown_host")), "{v}");
        let (s, v) = api_call(
            "POST",
            &url(&format!("/findings/{id}/resolve")),
            Some(&engineer),
            Some("{not json"),
        );
        assert_eq!((s, v["code"].as_str()), (400, Some("bad_body")), "{v}");
        let (s, v) = api_call("GET", &url("/nothing/here"), Some(&viewer), None);
        assert_eq!((s, v["code"].as_str()), (404, Some("not_found")), "{v}");
    })
    .await
    .unwrap();

    // A revoked token stops working at once.
    f.collector
        .database
        .open()
        .unwrap()
        .revoke_token("view", now)
        .unwrap();
    let hosts = format!("{base}/hosts");
    let (s, _) = tokio::task::spawn_blocking(move || {
        let v = viewer;
        api_call("GET", &hosts, Some(&v), None)
    })
    .await
    .unwrap();
    assert_eq!(s, 401);
    c.shutdown().await;
}

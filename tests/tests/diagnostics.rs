//! Remote diagnosis end to end: a real collector, the real agent binary over QUIC and mutual
//! TLS on 127.0.0.1, real bearer tokens. The agent decides (consent, allow-list, argument
//! checks), both sides keep the record, and the engineer sees exactly what happened.

use aftercare_collector::api::token::{self, Role};
use aftercare_collector::findings::record::{Change, Clocks, FindingKey, Observed};

use aftercare_shared::consent::Scope;
use aftercare_shared::time_fmt::now_millis;
use aftercare_tests::*;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// An engineer's and a viewer's token (secrets).
fn tokens(f: &Fixture) -> (String, String) {
    let mut st = f.collector.database.open().unwrap();
    let mut make =
        |name: &str, role: Role| token::issue(&mut *st, name, role, "test", now_millis()).unwrap();
    (
        make("eng.wang", Role::Engineer),
        make("view.li", Role::Viewer),
    )
}

/// A collector, one agent process (acme/db1) and two tokens.
struct Setup {
    f: Fixture,
    c: Option<Running>,
    agent: Proc,
    agent_cfg: PathBuf,
    /// The agent's working directory: what a probe creates by a relative name lands here.
    cwd: PathBuf,
    base: String,
    engineer: String,
    viewer: String,
}

impl Setup {
    async fn new(scopes: &[Scope], diagnostics: &str) -> Setup {
        let f = Fixture::new();
        let c = f.start().await;
        let certs = f.issue("a1", "acme", "db1");
        let cfg = f.agent_config("a1", &certs, c.addr);
        let agent_cfg = f.agent_config_path("a1");
        let mut text = std::fs::read_to_string(&agent_cfg).unwrap();
        text.push_str(diagnostics);
        std::fs::write(&agent_cfg, text).unwrap();
        grant(&cfg, scopes);
        let (engineer, viewer) = tokens(&f);
        let cwd = f.dir.path().join("agent-cwd");
        std::fs::create_dir(&cwd).unwrap();
        let log = std::fs::File::create(f.dir.path().join("agent.log")).unwrap();
        let child = std::process::Command::new(bin("aftercare-agent"))
            .args(["--config", agent_cfg.to_str().unwrap(), "run"])
            .current_dir(&cwd)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the agent");
        let base = format!("http://{}/api/v1", c.api);
        let s = Setup {
            f,
            c: Some(c),
            agent: Proc(Some(child)),
            agent_cfg,
            cwd,
            base,
            engineer,
            viewer,
        };
        // Connected, and its probes advertised.
        let end = Instant::now() + PATIENCE;
        loop {
            let (st, v) = s.get("/hosts/acme/db1/probes", &s.viewer).await;
            if st == 200 && v["online"] == true && !v["probes"].as_array().unwrap().is_empty() {
                break;
            }
            assert!(
                Instant::now() < end,
                "agent never came online: {st} {v}\n{}",
                s.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        s
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let (url, t) = (format!("{}{path}", self.base), token.to_string());
        tokio::task::spawn_blocking(move || api_call("GET", &url, Some(&t), None))
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, token: &str, body: &str) -> (u16, Value) {
        let (url, t, b) = (
            format!("{}{path}", self.base),
            token.to_string(),
            body.to_string(),
        );
        tokio::task::spawn_blocking(move || api_call("POST", &url, Some(&t), Some(&b)))
            .await
            .unwrap()
    }

    /// Ask as the engineer; the new diagnostic's id.
    async fn run(&self, body: &str) -> i64 {
        let (st, v) = self
            .post("/hosts/acme/db1/diagnostics", &self.engineer, body)
            .await;
        assert_eq!(st, 202, "{v}");
        assert_eq!(v["status"], "pending", "{v}");
        v["id"].as_i64().expect("an id")
    }

    /// Poll until the diagnostic is no longer pending (at most 20 s).
    async fn finished(&self, id: i64) -> Value {
        let end = Instant::now() + PATIENCE;
        loop {
            let (st, v) = self.get(&format!("/diagnostics/{id}"), &self.viewer).await;
            assert_eq!(st, 200, "{v}");
            if v["status"] != "pending" {
                return v;
            }
            assert!(Instant::now() < end, "diagnostic {id} still pending: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The agent's audit log entries of kind `diagnostic`, as `audit --json` prints them.
    fn audit(&self) -> Vec<Value> {
        let out = std::process::Command::new(bin("aftercare-agent"))
            .args([
                "--config",
                self.agent_cfg.to_str().unwrap(),
                "audit",
                "--json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "diagnostic")
            .map(|e| e["fields"].clone())
            .collect()
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.f.dir.path().join("agent.log")).unwrap_or_default()
    }

    async fn stop(mut self) {
        assert!(
            self.agent.terminate(),
            "agent exits cleanly\n{}",
            self.agent_log()
        );
        self.c.take().unwrap().shutdown().await;
    }
}

const BOTH: &[Scope] = &[Scope::Metrics, Scope::Diagnostics];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_builtin_probe_runs_is_audited_on_the_host_and_linked_from_its_finding() {
    let s = Setup::new(BOTH, "").await;
    let (st, v) = s.get("/hosts/acme/db1/probes", &s.viewer).await;
    assert_eq!(
        (st, &v["diagnostics_consent"]),
        (200, &Value::Bool(true)),
        "{v}"
    );
    let fs = v["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "filesystems")
        .expect("filesystems offered");
    assert!(fs["timeout_ms"].as_u64().unwrap() > 0, "{fs}");
    // A finding of this host to run it from.
    let finding = {
        let mut st = s.f.collector.database.open().unwrap();
        let host = st.host_id("acme/db1").unwrap();
        st.apply_finding(&Change::Open {
            key: FindingKey {
                host,
                rule: "fs-full".into(),
                subject: "mount=/".into(),
            },
            observed: Observed {
                level: 1,
                category: "capacity".into(),
                title: "Filesystem full".into(),
                recommendation: "Free space.".into(),
                evidence: r#"{"summary":"/ 99% used"}"#.into(),
                at: now_millis(),
            },
            clocks: Clocks {
                from: now_millis(),
                respond_by: None,
                restore_by: None,
            },
        })
        .unwrap()
    };

    let id = s
        .run(&format!(
            r#"{{"probe": "filesystems", "finding": {finding}}}"#
        ))
        .await;
    let v = s.finished(id).await;
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(v["host"], "acme/db1");
    assert_eq!(v["requested_by"], "eng.wang");
    assert_eq!(v["finding"], finding);
    assert_eq!(v["truncated"], false);
    assert!(
        v["finished_at"].is_string() && v["requested_at"].is_string(),
        "{v}"
    );
    let output = v["output"].as_str().unwrap();
    assert!(
        output
            .lines()
            .any(|l| l.starts_with("/ ") || l.starts_with("/")),
        "names a mount point: {output}"
    );

    // The customer's audit log says who asked, which probe, and how many bytes left.
    let audit = s.audit();
    let e = audit
        .iter()
        .find(|e| e["probe"] == "filesystems")
        .unwrap_or_else(|| panic!("audited: {audit:?}"));
    assert_eq!(e["requested_by"], "eng.wang", "{e}");
    assert_eq!(e["output_bytes"], output.len() as u64, "{e}");
    assert_eq!(e["finding"], finding, "{e}");
    assert_eq!(e["outcome"], "done", "{e}");

    // The finding links it; the host's list shows it without its output.
    let (st, f) = s.get(&format!("/findings/{finding}"), &s.viewer).await;
    assert_eq!(st, 200, "{f}");
    let linked = f["diagnostics"].as_array().expect("diagnostics listed");
    assert_eq!(linked.len(), 1, "{f}");
    assert_eq!(linked[0]["id"], id);
    assert_eq!(linked[0]["status"], "done");
    assert_eq!(linked[0]["requested_by"], "eng.wang");
    let (st, l) = s
        .get("/hosts/acme/db1/diagnostics?limit=10", &s.viewer)
        .await;
    assert_eq!(st, 200, "{l}");
    let items = l["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], id);
    assert!(items[0].get("output").is_none(), "{l}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnostics_consent_alone_keeps_the_host_reachable() {
    // No metrics, no logs: the agent still connects, sends no data, and answers probes.
    let s = Setup::new(&[Scope::Diagnostics], "").await;
    let id = s.run(r#"{"probe": "clock"}"#).await;
    let v = s.finished(id).await;
    assert_eq!(v["status"], "done", "{v}");
    assert!(
        v["output"].as_str().unwrap().contains("system time: "),
        "{v}"
    );
    let samples = s.f.store().latest("acme/db1").unwrap_or_default();
    assert!(
        samples.is_empty(),
        "no metrics without their scope: {samples:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_without_the_diagnostics_consent_scope() {
    let s = Setup::new(&[Scope::Metrics], "").await;
    let (_, v) = s.get("/hosts/acme/db1/probes", &s.viewer).await;
    assert_eq!(v["diagnostics_consent"], false, "{v}");
    let id = s.run(r#"{"probe": "filesystems"}"#).await;
    let v = s.finished(id).await;
    assert_eq!(v["status"], "refused", "{v}");
    assert_eq!(v["message"], "refused: no consent", "{v}");
    assert_eq!(v["output"], "", "{v}");
    let audit = s.audit();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["outcome"], "refused: no consent");
    assert_eq!(audit[0]["output_bytes"], 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_outside_the_allow_list() {
    let s = Setup::new(BOTH, "\n[diagnostics]\nallow = [\"filesystems\"]\n").await;
    let id = s.run(r#"{"probe": "top-processes"}"#).await;
    let v = s.finished(id).await;
    assert_eq!(v["status"], "refused", "{v}");
    assert_eq!(v["message"], "refused: not allowed", "{v}");
    // Not offered either.
    let (_, p) = s.get("/hosts/acme/db1/probes", &s.viewer).await;
    let names: Vec<&str> = p["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["filesystems"]);
    let id = s.run(r#"{"probe": "no-such-probe"}"#).await;
    assert_eq!(s.finished(id).await["message"], "refused: unknown probe");
    s.stop().await;
}

/// `aftercare-collector diagnose` against the running collector's API, as an engineer on a
/// laptop: (exit success, stdout, stderr).
async fn cli(s: &Setup, args: &[&str]) -> (bool, String, String) {
    let url = s.base.trim_end_matches("/api/v1").to_string();
    let token = s.engineer.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::time::timeout(
        PATIENCE,
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(bin("aftercare-collector"))
                .arg("diagnose")
                .args(["--url", &url, "--host", "acme/db1"])
                .args(&args)
                .env("AFTERCARE_TOKEN", token)
                .output()
                .unwrap()
        }),
    )
    .await
    .expect("the CLI finishes in time")
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_a_probe_waits_for_it_and_says_when_it_is_refused() {
    let s = Setup::new(BOTH, "\n[diagnostics]\nallow = [\"filesystems\"]\n").await;
    let (ok, out, err) = cli(&s, &["--list"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("diagnostics consent given"), "{out}");
    assert!(out.contains("filesystems"), "{out}");
    assert!(!out.contains("top-processes"), "{out}");

    let (ok, out, err) = cli(&s, &["filesystems"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("filesystems on acme/db1: done"), "{out}");
    assert!(out.contains("asked by eng.wang"), "{out}");
    assert!(
        out.contains("MOUNT"),
        "the probe's own output follows:\n{out}"
    );

    let (ok, out, err) = cli(&s, &["top-processes"]).await;
    assert!(!ok, "a refusal exits non-zero:\n{out}");
    assert!(out.contains("refused: not allowed"), "{out}");
    assert!(err.contains("refused: not allowed"), "{err}");

    // A viewer's token is turned away with the API's code.
    let url = s.base.trim_end_matches("/api/v1").to_string();
    let viewer = s.viewer.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin("aftercare-collector"))
            .args([
                "diagnose",
                "--url",
                &url,
                "--host",
                "acme/db1",
                "filesystems",
            ])
            .env("AFTERCARE_TOKEN", viewer)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.stop().await;
}

/// Processes whose command line is exactly `argv`.
fn processes_running(argv: &[&str]) -> usize {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_that_hangs_is_killed_at_its_limit() {
    // 4242 s: a number no other process here sleeps.
    let s = Setup::new(
        BOTH,
        "\n[[diagnostics.probe]]\nname = \"hang\"\nargv = [\"/bin/sleep\", \"4242\"]\ntimeout = \"1s\"\n",
    )
    .await;
    let t = Instant::now();
    let id = s.run(r#"{"probe": "hang"}"#).await;
    let v = s.finished(id).await;
    assert_eq!(v["status"], "timeout", "{v}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(v["message"].as_str().unwrap().contains("time limit"), "{v}");
    assert_eq!(
        processes_running(&["/bin/sleep", "4242"]),
        0,
        "the probe is gone"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_beyond_the_cap_is_cut_and_says_so() {
    let s = Setup::new(
        BOTH,
        "\n[[diagnostics.probe]]\nname = \"flood\"\nargv = [\"/usr/bin/yes\", \"aftercare\"]\nmax_output = \"1KiB\"\n",
    )
    .await;
    let id = s.run(r#"{"probe": "flood"}"#).await;
    let v = s.finished(id).await;
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(v["truncated"], true, "{v}");
    let out = v["output"].as_str().unwrap();
    assert!(out.starts_with("aftercare\naftercare\n"), "{out}");
    assert!(out.contains("output cut at 1024 bytes"), "{out}");
    assert!(out.len() < 1024 + 100, "{}", out.len());
    assert_eq!(processes_running(&["/usr/bin/yes", "aftercare"]), 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_arguments_are_rejected_and_nothing_runs() {
    // `touch {name}` in the agent's working directory: whatever ran leaves a file there.
    let s = Setup::new(
        BOTH,
        "\n[[diagnostics.probe]]\nname = \"touch\"\nargv = [\"/usr/bin/touch\", \"{name}\"]\n\
         args = [{ name = \"name\", kind = \"name\" }]\n",
    )
    .await;
    for evil in ["; rm -rf /", "$(id)", "../../etc/passwd", "a/b", "x\ny"] {
        let body = serde_json::json!({ "probe": "touch", "args": { "name": evil } }).to_string();
        let id = s.run(&body).await;
        let v = s.finished(id).await;
        assert_eq!(v["status"], "refused", "{evil:?}: {v}");
        let m = v["message"].as_str().unwrap();
        assert!(
            m.starts_with("refused: bad argument name: "),
            "{evil:?}: {m}"
        );
    }
    // An argument the probe does not declare is named too.
    let id = s
        .run(r#"{"probe": "touch", "args": {"name": "ok", "--exec": "x"}}"#)
        .await;
    let v = s.finished(id).await;
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("refused: bad argument --exec: "),
        "{v}"
    );
    let left: Vec<_> = std::fs::read_dir(&s.cwd).unwrap().flatten().collect();
    assert!(left.is_empty(), "nothing ran: {left:?}");
    // The same probe with a good value does run (so the refusals above were not luck).
    let id = s
        .run(r#"{"probe": "touch", "args": {"name": "ran-ok"}}"#)
        .await;
    assert_eq!(s.finished(id).await["status"], "done");
    assert!(s.cwd.join("ran-ok").exists());
    let audit = s.audit();
    assert_eq!(audit.len(), 7, "every request is audited: {audit:?}");
    assert!(
        audit[0]["outcome"]
            .as_str()
            .unwrap()
            .starts_with("refused: bad argument name")
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_token_cannot_run_a_probe() {
    let s = Setup::new(BOTH, "").await;
    let (st, v) = s
        .post(
            "/hosts/acme/db1/diagnostics",
            &s.viewer,
            r#"{"probe": "filesystems"}"#,
        )
        .await;
    assert_eq!((st, v["code"].as_str()), (403, Some("forbidden")), "{v}");
    // Other mistakes are named.
    let (st, v) = s
        .post(
            "/hosts/acme/nope/diagnostics",
            &s.engineer,
            r#"{"probe": "filesystems"}"#,
        )
        .await;
    assert_eq!((st, v["code"].as_str()), (404, Some("unknown_host")), "{v}");
    let (st, v) = s
        .post(
            "/hosts/acme/db1/diagnostics",
            &s.engineer,
            r#"{"probe": "filesystems", "finding": 999}"#,
        )
        .await;
    assert_eq!(st, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("finding"), "{v}");
    let (st, v) = s.get("/diagnostics/12345", &s.viewer).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (404, Some("unknown_diagnostic")),
        "{v}"
    );
    // Nothing was asked of the agent.
    let (_, l) = s.get("/hosts/acme/db1/diagnostics", &s.viewer).await;
    assert_eq!(l["items"], serde_json::json!([]), "{l}");
    assert!(s.audit().is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_agent_is_never_asked_and_an_offline_host_says_so() {
    use aftercare_agent::transport;
    use aftercare_shared::protocol::Hello;
    let f = Fixture::new();
    let c = f.start().await;
    let (engineer, viewer) = tokens(&f);
    let certs = f.issue("old", "acme", "db1");
    // A version 2 agent (it streams data, it knows nothing of diagnostics) with every scope.
    let mut consent = aftercare_shared::consent::ConsentRecord::default();
    consent
        .grant_scopes(BOTH, "T", time::OffsetDateTime::now_utc(), None)
        .unwrap();
    let hello = Hello {
        protocol_version: 2,
        agent_version: "0.0.2".into(),
        facts: Default::default(),
        consent,
        claimed: None,
        interval_ms: 1000,
    };
    let ep = agent_endpoint(&certs);
    let cfg = f.agent_config("old", &certs, c.addr).collector;
    let link = tokio::time::timeout(PATIENCE, transport::connect(&ep, &cfg, c.addr, &hello))
        .await
        .expect("connects in time")
        .expect("welcomed");
    let base = format!("http://{}/api/v1", c.api);
    let api = |method: &'static str, path: &str, token: &str, body: Option<&str>| {
        let (url, t, b) = (
            format!("{base}{path}"),
            token.to_string(),
            body.map(str::to_string),
        );
        tokio::task::spawn_blocking(move || api_call(method, &url, Some(&t), b.as_deref()))
    };
    let finished = |id: i64| {
        let api = &api;
        let viewer = viewer.clone();
        async move {
            let end = Instant::now() + PATIENCE;
            loop {
                let (_, v) = api("GET", &format!("/diagnostics/{id}"), &viewer, None)
                    .await
                    .unwrap();
                if v["status"] != "pending" {
                    return v;
                }
                assert!(Instant::now() < end, "still pending: {v}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let (st, v) = api("GET", "/hosts/acme/db1/probes", &viewer, None)
        .await
        .unwrap();
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (&v["online"], &v["probes"]),
        (&Value::Bool(true), &serde_json::json!([])),
        "{v}"
    );
    let body = r#"{"probe": "filesystems"}"#;
    let (st, v) = api("POST", "/hosts/acme/db1/diagnostics", &engineer, Some(body))
        .await
        .unwrap();
    assert_eq!(st, 202, "{v}");
    let v = finished(v["id"].as_i64().unwrap()).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("agent too old for diagnostics"),
        "{v}"
    );
    // No stream was opened to it.
    let opened = tokio::time::timeout(Duration::from_millis(300), link.conn.accept_bi()).await;
    assert!(
        opened.is_err(),
        "the collector opened a stream to an old agent"
    );

    // Gone: the collector says so rather than waiting.
    link.conn.close(0u32.into(), b"bye");
    let end = Instant::now() + PATIENCE;
    loop {
        let (_, v) = api("GET", "/hosts/acme/db1/probes", &viewer, None)
            .await
            .unwrap();
        if v["online"] == false {
            break;
        }
        assert!(Instant::now() < end, "still online: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (st, v) = api("POST", "/hosts/acme/db1/diagnostics", &engineer, Some(body))
        .await
        .unwrap();
    assert_eq!(st, 202, "{v}");
    let v = finished(v["id"].as_i64().unwrap()).await;
    assert_eq!(v["status"], "offline", "{v}");
    assert_eq!(v["message"], "the host is not connected", "{v}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_withdrawn_while_a_probe_runs_stops_it_and_sends_nothing() {
    let s = Setup::new(
        BOTH,
        "\n[[diagnostics.probe]]\nname = \"slow\"\nargv = [\"/bin/sleep\", \"4444\"]\ntimeout = \"60s\"\n",
    )
    .await;
    let id = s.run(r#"{"probe": "slow"}"#).await;
    let end = Instant::now() + PATIENCE;
    while processes_running(&["/bin/sleep", "4444"]) == 0 {
        assert!(Instant::now() < end, "the probe never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = Instant::now();
    let cfg = aftercare_agent::config::AgentConfig::load(&s.agent_cfg).unwrap();
    revoke(&cfg, &[Scope::Diagnostics]);
    let v = s.finished(id).await;
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(v["status"], "refused", "{v}");
    assert_eq!(v["message"], "refused: no consent", "{v}");
    assert_eq!(v["output"], "", "{v}");
    assert_eq!(processes_running(&["/bin/sleep", "4444"]), 0, "stopped");
    let audit = s.audit();
    assert!(
        audit[0]["outcome"]
            .as_str()
            .unwrap()
            .contains("withdrawn while it ran"),
        "{audit:?}"
    );
    s.stop().await;
}

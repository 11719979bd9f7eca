//! Three collector processes on one PostgreSQL database, agents on two of them: the rules
//! run once (one finding, one webhook per event), the leader killed hands them to another
//! collector that neither forgets nor repeats what was raised, and an agent moved to
//! another collector after its own was killed has each batch stored once.

use aftercare_collector::findings::record::FindingFilter;
use aftercare_shared::consent::Scope;
use aftercare_tests::*;
use std::time::{Duration, Instant};

const RULES: &str = r#"
[[rule]]
name = "host-silent"
kind = "heartbeat"
level = "L1"
category = "availability"
intervals = 3
at_least = "3s"
recommendation = "Check the host and the agent."
"#;

fn wait(what: &str, logs: &std::path::Path, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > PATIENCE {
            let mut all = String::new();
            for i in 0..3 {
                let p = logs.join(format!("collector-{i}.log"));
                all += &format!(
                    "--- {}\n{}\n",
                    p.display(),
                    std::fs::read_to_string(&p).unwrap_or_default()
                );
            }
            panic!("timed out waiting for {what}\n{all}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The states of the findings of `rule` for `host`.
fn findings(db: &aftercare_pgtest::TestDb, rule: &str, host: &str) -> Vec<String> {
    let database = aftercare_collector::store::Database::parse(db.url());
    let Ok(mut st) = database.open_readonly() else {
        return Vec::new();
    };
    st.findings(&FindingFilter::default())
        .map(|v| {
            v.into_iter()
                .filter(|r| r.rule == rule && r.host == host)
                .map(|r| r.state.as_str().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// What the webhook heard about `host`'s findings of `rule`, in order.
fn heard(hooks: &Receiver, rule: &str, host: &str) -> Vec<String> {
    hooks
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|v| v["finding"]["rule"] == rule && v["finding"]["host"] == host)
        .map(|v| v["event"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The port of the collector holding the rules lease, if any.
fn leader(db: &aftercare_pgtest::TestDb) -> Option<u16> {
    let mut c = postgres::Client::connect(db.url(), postgres::NoTls).ok()?;
    let row = c
        .query_opt(
            "SELECT holder FROM leases WHERE name = 'rules' AND expires_at > clock_timestamp()",
            &[],
        )
        .ok()??;
    let holder: String = row.get(0);
    holder.rsplit(':').next()?.parse().ok()
}

/// Each of the host's staged batches once: as many rows as timestamps.
fn staged_once(db: &aftercare_pgtest::TestDb, host: &str) -> (i64, i64) {
    let mut c = postgres::Client::connect(db.url(), postgres::NoTls).unwrap();
    let r = c
        .query_one(
            "SELECT count(*), count(DISTINCT s.ts) FROM staging s JOIN hosts h ON h.id = s.host_id
             WHERE h.host = $1",
            &[&host],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

#[test]
fn collectors_on_one_database_run_the_rules_once_and_take_over_from_a_dead_leader() {
    let db = aftercare_pgtest::database();
    let f = Fixture::new();
    let hooks = Receiver::start();
    std::fs::write(f.dir.path().join("rules.toml"), RULES).unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_udp_port()).collect();
    // One config per collector: the same CA (data_dir) and database, its own ports.
    let configs: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let p = f.dir.path().join(format!("collector-{i}.toml"));
            std::fs::write(
                &p,
                format!(
                    "data_dir = \"collector\"\ndatabase = \"{url}\"\nrules_file = \"rules.toml\"\n\
                     listen = \"127.0.0.1:{port}\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
                     [ingest]\ncompact_every = \"1s\"\n[findings]\nevaluate_every = \"1s\"\n\
                     [[webhooks]]\nname = \"test\"\nurl = \"{hook}\"\nretry_base = \"50ms\"\n",
                    url = db.url(),
                    hook = hooks.url,
                ),
            )
            .unwrap();
            p.to_str().unwrap().to_string()
        })
        .collect();
    let logs = f.dir.path().to_path_buf();
    let spawn = |i: usize| {
        Proc::spawn(
            "aftercare-collector",
            &["--config", &configs[i], "serve"],
            &logs.join(format!("collector-{i}.log")),
        )
    };
    // Collector 0 first, so that it leads; the others find the lease held.
    let mut collectors = vec![spawn(0)];
    wait("collector 0 to lead", &logs, || {
        leader(&db) == Some(ports[0])
    });
    collectors.push(spawn(1));
    collectors.push(spawn(2));

    // Agent db1 on collector 0, agent db2 on collector 1.
    let mut agents = Vec::new();
    for (name, host, port) in [("a1", "db1", ports[0]), ("a2", "db2", ports[1])] {
        let certs = f.issue(name, "acme", host);
        let cfg = f.agent_config(name, &certs, format!("127.0.0.1:{port}").parse().unwrap());
        grant(&cfg, &[Scope::Metrics]);
        let path = f.agent_config_path(name).to_str().unwrap().to_string();
        agents.push(Proc::spawn(
            "aftercare-agent",
            &["--config", &path, "run"],
            &logs.join(format!("{name}-1.log")),
        ));
    }
    wait("both hosts' metrics", &logs, || {
        staged_once(&db, "db1").0 > 2 && staged_once(&db, "db2").0 > 2
    });

    // db2 goes silent: one finding and one webhook, though three collectors watch.
    agents[1].kill9();
    wait("db2 silent", &logs, || {
        findings(&db, "host-silent", "db2") == ["open"]
    });
    wait("the webhook to hear it", &logs, || {
        heard(&hooks, "host-silent", "db2") == ["opened"]
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(findings(&db, "host-silent", "db2"), ["open"]);
    assert_eq!(heard(&hooks, "host-silent", "db2"), ["opened"]);

    // The leader dies, with db1's connection: another collector takes the rules over.
    collectors[0].kill9();
    let died = Instant::now();
    wait("a new leader", &logs, || {
        leader(&db).is_some_and(|p| p != ports[0])
    });
    eprintln!("leader taken over {:?} after the kill", died.elapsed());

    // db1's agent, moved to collector 2, sends what collector 0 never acknowledged again:
    // every batch is stored once.
    agents[0].kill9();
    let cfg = f.agent_config(
        "a1",
        &f.dir.path().join("a1"),
        format!("127.0.0.1:{}", ports[2]).parse().unwrap(),
    );
    grant(&cfg, &[Scope::Metrics]);
    let before = staged_once(&db, "db1").0;
    let path = f.agent_config_path("a1").to_str().unwrap().to_string();
    agents[0] = Proc::spawn(
        "aftercare-agent",
        &["--config", &path, "run"],
        &logs.join("a1-2.log"),
    );
    wait("db1's batches through collector 2", &logs, || {
        staged_once(&db, "db1").0 > before + 3
    });
    let (rows, times) = staged_once(&db, "db1");
    assert_eq!(rows, times, "a batch of db1 was stored twice");

    // The new leader remembers db2's finding (no second one, no second webhook) and
    // raises what happens now: db1 goes silent. (Its move may have been long enough to
    // open and resolve it once already: then it reopens, the same finding.)
    wait("db1 healthy again", &logs, || {
        findings(&db, "host-silent", "db1")
            .iter()
            .all(|s| s == "resolved")
    });
    agents[0].kill9();
    wait("db1 silent", &logs, || {
        findings(&db, "host-silent", "db1") == ["open"]
    });
    wait("the webhook to hear db1", &logs, || {
        matches!(
            heard(&hooks, "host-silent", "db1")
                .last()
                .map(String::as_str),
            Some("opened" | "reopened")
        )
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(findings(&db, "host-silent", "db1"), ["open"]);
    assert_eq!(findings(&db, "host-silent", "db2"), ["open"]);
    assert_eq!(heard(&hooks, "host-silent", "db2"), ["opened"]);
    let db1 = heard(&hooks, "host-silent", "db1");
    assert!(
        db1 == ["opened"] || db1 == ["opened", "resolved", "reopened"],
        "db1's finding was announced {db1:?}"
    );

    for mut c in collectors.drain(1..) {
        assert!(c.terminate(), "a collector stops cleanly");
    }
    // Stopped cleanly, the last leader gave the lease up.
    assert_eq!(leader(&db), None);
}

/// An engineer asks for a diagnostic on a collector that does not hold the agent's
/// connection (the API behind a load balancer lands anywhere): the request waits in the
/// database, the collector holding the connection takes it and sends it, and the answer is
/// read back where it was asked.
#[test]
fn a_diagnostic_asked_on_another_collector_runs_through_the_one_holding_the_agent() {
    let db = aftercare_pgtest::database();
    let f = Fixture::new();
    let ports: Vec<(u16, u16)> = (0..2).map(|_| (free_udp_port(), free_tcp_port())).collect();
    let configs: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (quic, api))| {
            let p = f.dir.path().join(format!("collector-{i}.toml"));
            std::fs::write(
                &p,
                format!(
                    "data_dir = \"collector\"\ndatabase = \"{url}\"\n\
                     listen = \"127.0.0.1:{quic}\"\n[api]\nlisten = \"127.0.0.1:{api}\"\n",
                    url = db.url(),
                ),
            )
            .unwrap();
            p.to_str().unwrap().to_string()
        })
        .collect();
    let logs = f.dir.path().to_path_buf();
    let mut collectors: Vec<Proc> = (0..2)
        .map(|i| {
            Proc::spawn(
                "aftercare-collector",
                &["--config", &configs[i], "serve"],
                &logs.join(format!("collector-{i}.log")),
            )
        })
        .collect();
    for (i, (_, api)) in ports.iter().enumerate() {
        wait(&format!("collector {i}'s API"), &logs, || {
            std::net::TcpStream::connect(("127.0.0.1", *api)).is_ok()
        });
    }
    let engineer = {
        let database = aftercare_collector::store::Database::parse(db.url());
        let mut st = None;
        wait("the schema", &logs, || {
            st = database.open_existing().ok();
            st.is_some()
        });
        aftercare_collector::api::token::issue(
            &mut *st.unwrap(),
            "eng.wang",
            aftercare_collector::api::token::Role::Engineer,
            "test",
            aftercare_shared::time_fmt::now_millis(),
        )
        .unwrap()
    };
    // The agent reaches collector 0; the engineer uses collector 1's API.
    let certs = f.issue("a1", "acme", "db1");
    let cfg = f.agent_config(
        "a1",
        &certs,
        format!("127.0.0.1:{}", ports[0].0).parse().unwrap(),
    );
    grant(&cfg, &[Scope::Metrics, Scope::Diagnostics]);
    let path = f.agent_config_path("a1").to_str().unwrap().to_string();
    let mut agent = Proc::spawn(
        "aftercare-agent",
        &["--config", &path, "run"],
        &logs.join("a1.log"),
    );
    let api = format!("http://127.0.0.1:{}/api/v1", ports[1].1);
    let call = |method: &str, path: &str, body: Option<&str>| {
        api_call(method, &format!("{api}{path}"), Some(&engineer), body)
    };

    // Collector 1 shows the host online, with what its agent offers on collector 0.
    wait("the probes seen from collector 1", &logs, || {
        let (st, v) = call("GET", "/hosts/acme/db1/probes", None);
        st == 200
            && v["online"] == true
            && v["probes"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["name"] == "filesystems"))
    });
    let (st, v) = call(
        "POST",
        "/hosts/acme/db1/diagnostics",
        Some(r#"{"probe": "filesystems"}"#),
    );
    assert_eq!(
        (st, &v["status"]),
        (202, &serde_json::json!("pending")),
        "{v}"
    );
    let id = v["id"].as_i64().unwrap();
    let mut row = serde_json::Value::Null;
    wait("the diagnostic's answer", &logs, || {
        let (st, v) = call("GET", &format!("/diagnostics/{id}"), None);
        row = v;
        st == 200 && row["status"] != "pending"
    });
    assert_eq!(row["status"], "done", "{row}");
    assert!(
        row["output"].as_str().is_some_and(|o| !o.is_empty()),
        "{row}"
    );
    let log1 = std::fs::read_to_string(logs.join("collector-1.log")).unwrap();
    assert!(
        log1.contains(&format!(
            ":{}, which holds the host's connection",
            ports[0].0
        )),
        "collector 1 handed it to collector 0:\n{log1}"
    );
    let log0 = std::fs::read_to_string(logs.join("collector-0.log")).unwrap();
    assert!(
        log0.contains("taken over from another collector"),
        "collector 0 sent it:\n{log0}"
    );

    assert!(agent.terminate(), "the agent stops cleanly");
    for c in &mut collectors {
        assert!(c.terminate(), "a collector stops cleanly");
    }
}

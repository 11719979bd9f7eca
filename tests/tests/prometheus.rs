//! The collector's own health at `/metrics`, scraped over HTTP on 127.0.0.1 as Prometheus
//! does (no token), while a real agent streams to it: every line is one Prometheus reads,
//! the counts follow what happened, and no customer or host is named.

use aftercare_agent::transport::{self, Link, LinkError};
use aftercare_collector::api::token::{self, Role};
use aftercare_shared::codec;
use aftercare_shared::consent::{ConsentRecord, Scope};
use aftercare_shared::model::{HostFacts, LossReport, MetricKind, MetricSnapshot, Sample};
use aftercare_shared::protocol::*;
use aftercare_shared::time_fmt::now_millis;
use aftercare_tests::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Names no line of `/metrics` may carry.
const CUSTOMER: &str = "umbrellaqx";
const HOST: &str = "labdbqx7";
const OTHER_HOST: &str = "probeqx9";

// ---- The exposition format (text 0.0.4), read strictly --------------------------------

#[derive(Debug, Clone, PartialEq)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    /// Family name -> type.
    types: BTreeMap<String, String>,
    series: Vec<Series>,
}

fn valid_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    chars.next().is_some_and(ok_first) && chars.all(|c| ok_first(c) || c.is_ascii_digit())
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if s.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+' || c == '.') => {
            s.parse().ok()
        }
        _ => None,
    }
}

/// `{a="x",b="y"}` at the start of `s`; the labels and what follows.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let Some(mut rest) = s.strip_prefix('{') else {
        return Ok((labels, s));
    };
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("a label without =")?;
        let name = &rest[..eq];
        if !valid_name(name, false) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next().map(|c| c.1) != Some('"') {
            return Err(format!("label {name}'s value is not quoted"));
        }
        let mut value = String::new();
        let end = loop {
            match chars.next() {
                None => return Err(format!("label {name}'s value is not closed")),
                Some((i, '"')) => break eq + 1 + i + 1,
                Some((_, '\\')) => match chars.next().map(|c| c.1) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err("a newline in a label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("labels not separated by commas".into());
        }
    }
}

/// The family a sample belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
    })
}

/// Every line must be `# HELP`, `# TYPE` or a sample of a family already typed.
fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let Some(body) = text.strip_suffix('\n') else {
        return Err("the text does not end with a newline".into());
    };
    for (n, line) in body.split('\n').enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            if !valid_name(name, true) {
                return Err(at("bad name in HELP".into()));
            }
            let mut it = help.chars();
            while let Some(c) = it.next() {
                if c == '\\' && !matches!(it.next(), Some('\\' | 'n')) {
                    return Err(at("bad escape in HELP".into()));
                }
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| at("TYPE without a type".into()))?;
            if !valid_name(name, true) {
                return Err(at("bad name in TYPE".into()));
            }
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at(format!("unknown type {kind}")));
            }
            if out.types.insert(name.into(), kind.into()).is_some() {
                return Err(at("a second TYPE for one name".into()));
            }
        } else {
            let end = line
                .find(['{', ' '])
                .ok_or_else(|| at("not a sample".into()))?;
            let name = &line[..end];
            if !valid_name(name, true) {
                return Err(at("bad metric name".into()));
            }
            if family_of(name, &out.types).is_none() {
                return Err(at("a sample before its TYPE".into()));
            }
            let (labels, rest) = parse_labels(&line[end..]).map_err(at)?;
            let mut fields = rest
                .strip_prefix(' ')
                .ok_or_else(|| at("no space before the value".into()))?
                .split(' ');
            let value = fields
                .next()
                .and_then(parse_value)
                .ok_or_else(|| at("bad value".into()))?;
            if let Some(ts) = fields.next()
                && ts.parse::<i64>().is_err()
            {
                return Err(at("bad timestamp".into()));
            }
            if fields.next().is_some() {
                return Err(at("more after the timestamp".into()));
            }
            if name.ends_with("_bucket") && !labels.contains_key("le") {
                return Err(at("a bucket without le".into()));
            }
            out.series.push(Series {
                name: name.into(),
                labels,
                value,
            });
        }
    }
    Ok(out)
}

impl Exposition {
    /// The value of `name` with exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.series
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {name} {labels:?}"))
    }

    /// Each histogram's buckets grow with `le`, and the `+Inf` one is its count.
    fn check_histograms(&self) -> Result<(), String> {
        for (family, _) in self.types.iter().filter(|(_, t)| *t == "histogram") {
            let mut buckets: Vec<(f64, f64)> = self
                .series
                .iter()
                .filter(|s| s.name == format!("{family}_bucket"))
                .map(|s| {
                    (
                        parse_value(&s.labels["le"]).expect("le is a number"),
                        s.value,
                    )
                })
                .collect();
            if buckets.is_empty() {
                return Err(format!("{family} has no buckets"));
            }
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if let Some(w) = buckets.windows(2).find(|w| w[1].1 < w[0].1) {
                return Err(format!("{family}: buckets not cumulative at {w:?}"));
            }
            let last = buckets.last().unwrap();
            let count = self
                .get(&format!("{family}_count"), &[])
                .ok_or(format!("{family} has no count"))?;
            if last.0 != f64::INFINITY || last.1 != count {
                return Err(format!("{family}: +Inf bucket {last:?} but count {count}"));
            }
        }
        Ok(())
    }
}

#[test]
fn the_reader_refuses_what_prometheus_would_not_read() {
    let good = "# HELP a_total Things, with \\\\ and \\n.\n# TYPE a_total counter\n\
                a_total{x=\"1\",y=\"q\\\"\\\\\"} 3\n# TYPE h histogram\n\
                h_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.7\nh_count 2\n\
                # TYPE g gauge\ng -1.5e3 1700000000000\n";
    let e = parse(good).unwrap();
    assert_eq!(e.value("a_total", &[("x", "1"), ("y", "q\"\\")]), 3.0);
    assert_eq!(e.value("g", &[]), -1500.0);
    e.check_histograms().unwrap();

    for bad in [
        "# TYPE m gauge\nm 1",                   // no final newline
        "m 1\n",                                 // no TYPE before it
        "# TYPE m gaug\nm 1\n",                  // no such type
        "# TYPE m gauge\n\nm 1\n",               // a blank line
        "# TYPE m gauge\nm\n",                   // no value
        "# TYPE m gauge\nm one\n",               // not a number
        "# TYPE m gauge\nm 1 2 3\n",             // more than a timestamp
        "# TYPE m gauge\nm 1 x\n",               // a timestamp that is not one
        "# TYPE m gauge\nm{a=1} 1\n",            // unquoted
        "# TYPE m gauge\nm{a=\"1} 1\n",          // not closed
        "# TYPE m gauge\nm{1a=\"1\"} 1\n",       // a bad label name
        "# TYPE m gauge\nm{a=\"1\"b=\"2\"} 1\n", // no comma
        "# TYPE m gauge\nm{a=\"\\t\"} 1\n",      // a bad escape
        "# TYPE 9m gauge\n",
        "# TYPE m gauge\n# TYPE m gauge\n",
        "# HELP m bad \\t escape\n",
        "# TYPE h histogram\nh_bucket 1\n", // a bucket without le
        "# a comment Prometheus skips, but we do not write\n",
        "# EOF\n",
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
    let not_cumulative = "# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\n\
                          h_count 2\n";
    assert!(parse(not_cumulative).unwrap().check_histograms().is_err());
    let inf_is_not_count = "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n";
    assert!(parse(inf_is_not_count).unwrap().check_histograms().is_err());
}

// ---- Over HTTP ------------------------------------------------------------------------

/// (status, content type, body) of a GET, with a bearer token if given; bounded in time.
fn get(url: &str, token: Option<&str>) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut req = agent.get(url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let mut resp = req.call().expect("the collector answers");
    let kind = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    (resp.status().as_u16(), kind, body)
}

/// Scrape `/metrics` (off the runtime's threads) and read it strictly.
async fn scrape(api: std::net::SocketAddr) -> Exposition {
    let url = format!("http://{api}/metrics");
    let (status, kind, text) = tokio::task::spawn_blocking(move || get(&url, None))
        .await
        .unwrap();
    assert_eq!(status, 200, "{text}");
    assert_eq!(kind, "text/plain; version=0.0.4; charset=utf-8");
    for name in [CUSTOMER, HOST, OTHER_HOST] {
        assert!(!text.contains(name), "/metrics names {name}:\n{text}");
    }
    let e = parse(&text).unwrap_or_else(|err| panic!("{err}\nin\n{text}"));
    for s in &e.series {
        assert!(s.name.starts_with("aftercare_collector_"), "{}", s.name);
    }
    e.check_histograms()
        .unwrap_or_else(|err| panic!("{err}\nin\n{text}"));
    e
}

/// Scrape until `ok` holds, or panic after `PATIENCE`.
async fn scrape_until(
    api: std::net::SocketAddr,
    what: &str,
    ok: impl Fn(&Exposition) -> bool,
) -> Exposition {
    let end = tokio::time::Instant::now() + PATIENCE;
    loop {
        let e = scrape(api).await;
        if ok(&e) {
            return e;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}: {e:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const CONNECTED: &str = "aftercare_collector_agents_connected";
const CONNECTING: &str = "aftercare_collector_connecting";
const QUEUED: &str = "aftercare_collector_connecting_queued";
const REFUSED: &str = "aftercare_collector_connections_refused_total";
const HANDSHAKES: &str = "aftercare_collector_handshake_duration_seconds_count";
const STORED: &str = "aftercare_collector_batches_stored_total";
const METRICS: [(&str, &str); 1] = [("stream", "metrics")];

// A hand-made agent, for what a real one does not do: lie, speak another version, resend.

fn hello(claimed: Option<Identity>, scopes: &[Scope]) -> Hello {
    let mut consent = ConsentRecord::default();
    consent
        .grant_scopes(scopes, "T", time::OffsetDateTime::now_utc(), None)
        .unwrap();
    Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: "test".into(),
        facts: HostFacts {
            hostname: OTHER_HOST.into(),
            ..Default::default()
        },
        consent,
        claimed,
        interval_ms: 1000,
    }
}

async fn connect(
    f: &Fixture,
    certs: &Path,
    addr: std::net::SocketAddr,
    h: &Hello,
) -> Result<Link, LinkError> {
    let ep = agent_endpoint(certs);
    let cfg = f.agent_config("probe", certs, addr).collector;
    tokio::time::timeout(PATIENCE, transport::connect(&ep, &cfg, addr, h))
        .await
        .expect("connect finishes in time")
}

async fn exchange(link: &mut Link, msg: &AgentMsg) -> CollectorMsg {
    let frame = codec::to_frame(msg, codec::DEFAULT_MAX_FRAME).unwrap();
    link.send.write_all(&frame).await.unwrap();
    tokio::time::timeout(
        PATIENCE,
        transport::read_msg(&mut link.recv, codec::DEFAULT_MAX_FRAME),
    )
    .await
    .expect("an answer in time")
    .unwrap()
    .expect("an answer")
}

fn batch(seq: u64, loss: LossReport) -> AgentMsg {
    AgentMsg::Batch(Batch {
        seq,
        claimed_host: None,
        payload: Payload::Metrics {
            snapshot: MetricSnapshot {
                ts: now_millis(),
                samples: vec![Sample {
                    name: "test.value".into(),
                    labels: String::new(),
                    kind: MetricKind::Gauge,
                    value: 1.0,
                }],
            },
            loss,
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_follows_ingest_without_a_token_or_a_name() {
    let f = Fixture::new();
    let viewer = token::issue(
        &mut *f.collector.database.open().unwrap(),
        "grafana-person",
        Role::Viewer,
        "test",
        now_millis(),
    )
    .unwrap();
    let c = f.start().await;

    // Before any agent: served, parsable, zero.
    let e = scrape(c.api).await;
    assert_eq!(e.value(CONNECTED, &[]), 0.0);
    assert_eq!(e.value(STORED, &METRICS), 0.0);
    assert_eq!(
        e.value(
            "aftercare_collector_build_info",
            &[
                ("version", aftercare_shared::VERSION),
                ("protocol", &PROTOCOL_VERSION.to_string())
            ]
        ),
        1.0
    );
    assert!(e.value("aftercare_collector_process_resident_memory_bytes", &[]) > 1e6);
    assert!(e.value("aftercare_collector_process_open_fds", &[]) >= 3.0);

    // /metrics needs no token; the API still does.
    let root = format!("http://{}", c.api);
    tokio::task::spawn_blocking(move || {
        let (s, _, _) = get(&format!("{root}/api/v1/hosts"), None);
        assert_eq!(s, 401, "the API without a token");
        let (s, _, _) = get(&format!("{root}/api/v1/hosts"), Some(&viewer));
        assert_eq!(s, 200, "the API with one");
        let (s, _, _) = get(&format!("{root}/metrics"), Some("act_not-a-token"));
        assert_eq!(s, 200, "a token is not even looked at");
    })
    .await
    .unwrap();

    // A real agent streams metrics.
    let certs = f.issue("a1", CUSTOMER, HOST);
    let cfg = f.agent_config("a1", &certs, c.addr);
    grant(&cfg, &[Scope::Metrics]);
    let agent = start_agent(cfg);
    let e = scrape_until(c.api, "two batches stored", |e| {
        e.value(STORED, &METRICS) >= 2.0
    })
    .await;
    assert_eq!(e.value(CONNECTED, &[]), 1.0);
    assert_eq!(
        e.value("aftercare_collector_connections_accepted_total", &[]),
        1.0
    );
    assert!(
        e.value("aftercare_collector_batches_received_total", &METRICS)
            >= e.value(STORED, &METRICS)
    );
    assert!(e.value("aftercare_collector_samples_stored_total", &[]) > 20.0);
    let acks = e.value("aftercare_collector_ack_latency_seconds_count", &[]);
    assert!(acks >= 2.0, "{acks} acknowledgements timed");
    assert!(e.value("aftercare_collector_ack_latency_seconds_sum", &[]) > 0.0);
    assert!(
        e.value(
            "aftercare_collector_store_commit_duration_seconds_count",
            &[]
        ) >= 1.0
    );
    assert!(e.value("aftercare_collector_store_commit_batches_sum", &[]) >= 2.0);
    // The findings thread made its first pass at start.
    assert!(
        e.value(
            "aftercare_collector_findings_pass_duration_seconds_count",
            &[]
        ) >= 1.0
    );
    assert_eq!(
        e.value("aftercare_collector_findings_rules_lease_held", &[]),
        1.0
    );

    // What a real agent does not do: each shows in its own counter.
    let probe = f.issue("p", CUSTOMER, OTHER_HOST);
    let lie = hello(
        Some(Identity {
            customer: CUSTOMER.into(),
            host: HOST.into(),
        }),
        &[Scope::Metrics],
    );
    assert!(connect(&f, &probe, c.addr, &lie).await.is_err());
    let mut newer = hello(None, &[Scope::Metrics]);
    newer.protocol_version = PROTOCOL_VERSION + 1;
    assert!(connect(&f, &probe, c.addr, &newer).await.is_err());
    // Logs consent only: a metrics batch is rejected; once granted, one that reports loss
    // is stored, and sent again is a duplicate whose loss is not counted twice.
    let mut link = connect(&f, &probe, c.addr, &hello(None, &[Scope::Logs]))
        .await
        .unwrap();
    let loss = LossReport {
        dropped_batches: 2,
        dropped_samples: 50,
        discarded_by_revocation: 1,
    };
    let answer = exchange(&mut link, &batch(seq(1, 0), loss)).await;
    assert!(
        matches!(answer, CollectorMsg::Rejected { .. }),
        "{answer:?}"
    );
    let mut consent = ConsentRecord::default();
    consent
        .grant_scopes(
            &[Scope::Metrics],
            "T",
            time::OffsetDateTime::now_utc(),
            None,
        )
        .unwrap();
    let frame =
        codec::to_frame(&AgentMsg::ConsentUpdate(consent), codec::DEFAULT_MAX_FRAME).unwrap();
    link.send.write_all(&frame).await.unwrap();
    for duplicate in [false, true] {
        match exchange(&mut link, &batch(seq(1, 1), loss)).await {
            CollectorMsg::Ack { duplicate: d, .. } => assert_eq!(d, duplicate),
            other => panic!("expected an Ack, got {other:?}"),
        }
    }
    let e = scrape_until(c.api, "the hand-made agent's counts", |e| {
        e.value("aftercare_collector_batches_duplicate_total", &METRICS) >= 1.0
    })
    .await;
    let refused = |why| {
        e.value(
            "aftercare_collector_connections_refused_total",
            &[("reason", why)],
        )
    };
    assert_eq!(refused("claim"), 1.0);
    assert_eq!(refused("version"), 1.0);
    assert_eq!(refused("tls"), 0.0);
    assert_eq!(e.value(CONNECTED, &[]), 2.0);
    assert_eq!(
        e.value("aftercare_collector_connections_accepted_total", &[]),
        2.0
    );
    assert_eq!(
        e.value("aftercare_collector_batches_rejected_total", &METRICS),
        1.0
    );
    for (name, want) in [
        ("aftercare_collector_agent_spool_dropped_batches_total", 2.0),
        (
            "aftercare_collector_agent_spool_dropped_records_total",
            50.0,
        ),
        (
            "aftercare_collector_agent_revoked_batches_discarded_total",
            1.0,
        ),
    ] {
        assert_eq!(e.value(name, &METRICS), want, "{name}");
        assert_eq!(e.value(name, &[("stream", "logs")]), 0.0, "{name}");
    }

    // Both gone: nobody connected.
    drop(link);
    agent.shutdown().await;
    scrape_until(c.api, "no agent connected", |e| {
        e.value(CONNECTED, &[]) == 0.0
    })
    .await;
    c.shutdown().await;
}

/// A collector restarted (same key files) lets an agent resume the TLS session it had with
/// the first run, from the ticket that run gave it: no full handshake, counted at
/// `/metrics`. A resumed session skips the certificate checks of a full handshake, so one
/// whose certificate has expired since is refused by ingest all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_agents_resume_their_tls_session_but_not_past_their_certificate() {
    const RESUMED: &str = "aftercare_collector_tls_resumed_handshakes_total";
    const ISSUED: &str = "aftercare_collector_tls_tickets_issued_total";
    let f = Fixture::new();
    // Valid for a few seconds: long enough for two connections, then it expires.
    let certs = f.dir.path().join("short-lived");
    let now = time::OffsetDateTime::now_utc();
    let expires = now + time::Duration::seconds(8);
    aftercare_collector::ca::issue_agent_cert(
        &f.collector.ca_dir(),
        CUSTOMER,
        HOST,
        &certs,
        aftercare_collector::ca::Validity {
            not_before: now - time::Duration::minutes(1),
            not_after: expires,
        },
    )
    .unwrap();
    // One agent process: one TLS configuration, so one ticket store, across reconnects.
    let ep = agent_endpoint(&certs);
    let h = hello(None, &[Scope::Metrics]);
    let connect = |addr| {
        let cfg = f.agent_config("probe", &certs, addr).collector;
        let ep = ep.clone();
        let h = h.clone();
        async move {
            tokio::time::timeout(PATIENCE, transport::connect(&ep, &cfg, addr, &h))
                .await
                .expect("connect finishes in time")
        }
    };

    let first = f.start().await;
    let mut link = connect(first.addr).await.expect("a full handshake");
    // An exchange after the handshake: the session tickets came before this answer.
    assert!(matches!(
        exchange(&mut link, &batch(1, LossReport::default())).await,
        CollectorMsg::Ack { .. }
    ));
    let e = scrape(first.api).await;
    assert_eq!(e.value(RESUMED, &[]), 0.0);
    assert!(e.value(ISSUED, &[]) >= 1.0, "tickets were given");
    drop(link);
    first.shutdown().await;

    let second = f.start().await;
    let mut link = connect(second.addr).await.expect("a resumed handshake");
    assert!(matches!(
        exchange(&mut link, &batch(2, LossReport::default())).await,
        CollectorMsg::Ack { .. }
    ));
    assert_eq!(scrape(second.api).await.value(RESUMED, &[]), 1.0);
    drop(link);

    // Past the certificate's end (its seconds are whole): the ticket from the connection
    // above still opens, the certificate it carries does not pass.
    let wait = expires - time::OffsetDateTime::now_utc() + time::Duration::milliseconds(1500);
    tokio::time::sleep(wait.try_into().unwrap_or_default()).await;
    let err = connect(second.addr)
        .await
        .err()
        .expect("an expired certificate is refused even resumed");
    assert!(err.to_string().contains("certificate expired"), "{err}");
    let e = scrape(second.api).await;
    assert_eq!(e.value(RESUMED, &[]), 2.0);
    assert_eq!(e.value(REFUSED, &[("reason", "certificate")]), 1.0);
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_past_max_connecting_wait_their_turn_then_are_refused_and_counted() {
    let mut f = Fixture::new();
    f.collector.ingest.max_connecting = 1;
    let c = f.start().await;

    // A peer that finishes its handshake and says nothing holds the only place.
    let certs = f.issue("a", "acme", "db1");
    let ep = agent_endpoint(&certs);
    let silent = tokio::time::timeout(PATIENCE, ep.connect(c.addr, "localhost").unwrap())
        .await
        .expect("handshake in time")
        .expect("handshake");
    scrape_until(c.api, "the silent peer connecting", |e| {
        e.value(CONNECTING, &[]) == 1.0
    })
    .await;

    // An agent arriving now waits for that place, without a handshake, then is refused.
    let h = hello(None, &[Scope::Metrics]);
    let certs_b = f.issue("b", "acme", "db2");
    let attempt = connect_seen_waiting(&f, &certs_b, &c, &h).await;
    let err = attempt.err().expect("no place came free: refused");
    assert_refused_attempt(&err);
    let e = scrape(c.api).await;
    assert_eq!(e.value(REFUSED, &[("reason", "busy")]), 1.0);
    assert_eq!(e.value(QUEUED, &[]), 0.0);
    assert_eq!(e.value(CONNECTING, &[]), 1.0);

    // The place comes free: the agent's next attempt is welcomed.
    silent.close(0u32.into(), b"bye");
    let mut link = connect(&f, &certs_b, c.addr, &h)
        .await
        .expect("welcomed once the place is free");
    let e = acked_and_connected(&c, &mut link).await;
    assert_eq!(e.value(CONNECTING, &[]), 0.0);
    drop(link);
    c.shutdown().await;
}

/// An agent's connection attempt, made while `/metrics` shows it waiting for a place.
async fn connect_seen_waiting(
    f: &Fixture,
    certs: &Path,
    c: &Running,
    h: &Hello,
) -> Result<Link, LinkError> {
    let (attempt, _) = tokio::join!(
        connect(f, certs, c.addr, h),
        scrape_until(c.api, "the agent waiting its turn", |e| {
            e.value(QUEUED, &[]) == 1.0
        })
    );
    attempt
}

/// A first batch on `link` acknowledged, then `/metrics` once it counts the agent connected.
async fn acked_and_connected(c: &Running, link: &mut Link) -> Exposition {
    assert!(matches!(
        exchange(link, &batch(seq(1, 0), LossReport::default())).await,
        CollectorMsg::Ack { .. }
    ));
    scrape_until(c.api, "the agent connected", |e| {
        e.value(CONNECTED, &[]) == 1.0
    })
    .await
}

/// A handshake whose peer has gone quiet (an attempt its agent gave up while the first
/// packet was on its way: seen after restarts) gives its place up after a second. The
/// attempts behind it are not stalled for the handshake's whole 5 s timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_whose_peer_went_quiet_gives_its_place_up() {
    let mut f = Fixture::new();
    f.collector.ingest.max_connecting = 1;
    let c = f.start().await;

    // Its first packets reach the collector, which starts the handshake and takes the only
    // place; its answers never come back. The attempt is kept open (dropped, the client
    // would say so, and the collector would end the handshake at once).
    let relay = Relay::start(c.addr).await;
    relay.drop_answers();
    let certs = f.issue("a", "acme", "db1");
    let ep = agent_endpoint(&certs);
    let quiet = ep.connect(relay.addr, "localhost").unwrap();
    scrape_until(c.api, "the quiet attempt holding the place", |e| {
        e.value(CONNECTING, &[]) == 1.0
    })
    .await;

    // An agent arriving now waits its turn (3 s at most), gets the place when the quiet
    // handshake gives it up, and is welcomed. Without that it would wait out its patience
    // and be refused: the quiet handshake would hold the place for 5 s.
    let h = hello(None, &[Scope::Metrics]);
    let certs_b = f.issue("b", "acme", "db2");
    let attempt = connect_seen_waiting(&f, &certs_b, &c, &h).await;
    let mut link = attempt.expect("welcomed once the quiet handshake gave its place up");
    let e = acked_and_connected(&c, &mut link).await;
    assert_eq!(e.value(REFUSED, &[("reason", "busy")]), 0.0);
    assert_eq!(e.value(HANDSHAKES, &[]), 1.0, "only the agent's finished");
    assert_eq!(e.value(CONNECTING, &[]), 0.0);
    drop(quiet);
    drop(link);
    c.shutdown().await;
}

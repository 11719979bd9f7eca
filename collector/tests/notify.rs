//! Webhook notifications against real HTTP servers on 127.0.0.1: retries and order, dead
//! letters, timeouts, the robots' signed message forms, routing, and what stopping does.

use aftercare_collector::notify::config::WebhookConfig;
use aftercare_collector::notify::{Alert, AlertEvent, Clock, Counts, Notifier};
use base64::Engine as _;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the server answers, in turn; after the script runs out, `then`.
#[derive(Clone)]
enum Answer {
    Status(u16, &'static str),
    /// Read the request, answer nothing, keep the connection open for this long.
    Hang(Duration),
}

struct Server {
    url: String,
    got: Arc<Mutex<Vec<(String, String)>>>,
}

impl Server {
    fn start(script: Vec<Answer>, then: Answer) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let g = got.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { return };
                let (g, script, then) = (g.clone(), script.clone(), then.clone());
                std::thread::spawn(move || serve(conn, &g, &script, &then));
            }
        });
        Server { url, got }
    }

    fn requests(&self) -> Vec<(String, String)> {
        self.got.lock().unwrap().clone()
    }
}

/// One request per connection (answers close it), which is all a webhook needs.
fn serve(
    conn: TcpStream,
    got: &Mutex<Vec<(String, String)>>,
    script: &Mutex<VecDeque<Answer>>,
    then: &Answer,
) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut first = String::new();
    if r.read_line(&mut first).is_err() || first.is_empty() {
        return;
    }
    let target = first.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    got.lock()
        .unwrap()
        .push((target, String::from_utf8_lossy(&body).into_owned()));
    let answer = script.lock().unwrap().pop_front().unwrap_or(then.clone());
    let mut w = conn;
    match answer {
        Answer::Status(code, text) => {
            let _ = write!(
                w,
                "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
        Answer::Hang(d) => std::thread::sleep(d),
    }
}

/// A webhook with quick retries and a short timeout unless `extra` sets them.
fn hook(name: &str, url: &str, extra: &str) -> WebhookConfig {
    let mut text = format!("name = \"{name}\"\nurl = \"{url}\"\n{extra}\n");
    for (key, quick) in [("retry_base", "\"20ms\""), ("timeout", "\"500ms\"")] {
        if !extra.contains(key) {
            text.push_str(&format!("{key} = {quick}\n"));
        }
    }
    let w: WebhookConfig = toml::from_str(&text).unwrap();
    w.validate(name).unwrap();
    w
}

fn alert(customer: &str, level: u8, event: AlertEvent) -> Alert {
    Alert {
        event,
        finding_id: 7,
        customer: customer.into(),
        host: "db1".into(),
        rule: "fs-full".into(),
        subject: "/var".into(),
        level,
        category: "capacity".into(),
        title: "filesystem full".into(),
        summary: "/var 99.2% used".into(),
        recommendation: "free space or grow the volume".into(),
        opened_at: 1_764_000_000_000,
        respond_by: Some(1_764_000_900_000),
        restore_by: Some(1_764_007_200_000),
        at: 1_764_000_000_000,
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn counts(n: &Notifier, name: &str) -> Counts {
    n.counts().into_iter().find(|(k, _)| k == name).unwrap().1
}

#[test]
fn failures_are_retried_and_messages_keep_their_order() {
    let s = Server::start(
        vec![
            Answer::Status(500, "down"),
            Answer::Status(503, "still down"),
        ],
        Answer::Status(200, "{}"),
    );
    let n = Notifier::start(&[hook("ops", &s.url, "attempts = 5")]).unwrap();
    n.send(&alert("acme", 1, AlertEvent::Opened));
    n.send(&alert(
        "acme",
        1,
        AlertEvent::Resolved {
            by: Some("ann".into()),
            note: Some("cleaned /var/log".into()),
        },
    ));
    wait_for("both delivered", || counts(&n, "ops").delivered == 2);
    let c = counts(&n, "ops");
    assert_eq!((c.failed_attempts, c.dead_letters), (2, 0));
    let got = s.requests();
    assert_eq!(got.len(), 4, "three tries of the first, one of the second");
    let events: Vec<String> = got
        .iter()
        .map(|(_, b)| {
            let v: serde_json::Value = serde_json::from_str(b).unwrap();
            v["event"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(events, ["opened", "opened", "opened", "resolved"]);
    let v: serde_json::Value = serde_json::from_str(&got[3].1).unwrap();
    assert_eq!(v["finding"]["event"]["by"], "ann");
    assert_eq!(v["finding"]["customer"], "acme");
    n.stop(Duration::from_secs(1));
}

#[test]
fn a_receiver_that_keeps_refusing_makes_a_dead_letter() {
    // A robot answers 200 with an error code: that is a failure too.
    let s = Server::start(
        vec![],
        Answer::Status(
            200,
            r#"{"errcode":310000,"errmsg":"keywords not in content"}"#,
        ),
    );
    let n = Notifier::start(&[hook(
        "ding",
        &format!("{}/robot/send?access_token=t", s.url),
        "format = \"dingtalk\"\nattempts = 3",
    )])
    .unwrap();
    n.send(&alert("acme", 2, AlertEvent::Opened));
    wait_for("a dead letter", || counts(&n, "ding").dead_letters == 1);
    assert_eq!(counts(&n, "ding").failed_attempts, 3);
    assert_eq!(s.requests().len(), 3);
    // The next message is still tried: one dead letter does not stop the webhook.
    n.send(&alert("acme", 2, AlertEvent::Opened));
    wait_for("a second dead letter", || {
        counts(&n, "ding").dead_letters == 2
    });
    n.stop(Duration::ZERO);
}

#[test]
fn a_hanging_receiver_is_left_after_the_timeout() {
    let s = Server::start(vec![], Answer::Hang(Duration::from_secs(5)));
    let n = Notifier::start(&[hook("slow", &s.url, "attempts = 2\ntimeout = \"200ms\"")]).unwrap();
    let t = Instant::now();
    n.send(&alert("acme", 1, AlertEvent::Opened));
    wait_for("a dead letter", || counts(&n, "slow").dead_letters == 1);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "two 200 ms attempts took {:?}",
        t.elapsed()
    );
    n.stop(Duration::ZERO);
}

fn hmac_b64(key: &[u8], msg: &[u8]) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&k, msg).as_ref())
}

#[test]
fn robots_get_signed_messages_in_their_forms() {
    let ding = Server::start(
        vec![],
        Answer::Status(200, r#"{"errcode":0,"errmsg":"ok"}"#),
    );
    let wecom = Server::start(
        vec![],
        Answer::Status(200, r#"{"errcode":0,"errmsg":"ok"}"#),
    );
    let feishu = Server::start(vec![], Answer::Status(200, r#"{"code":0,"msg":"success"}"#));
    let n = Notifier::start(&[
        hook(
            "ding",
            &format!("{}/robot/send?access_token=abc", ding.url),
            "format = \"dingtalk\"\nsecret = \"SEC123\"",
        ),
        hook(
            "wecom",
            &format!("{}/cgi-bin/webhook/send?key=k1", wecom.url),
            "format = \"wecom\"",
        ),
        hook(
            "feishu",
            &format!("{}/open-apis/bot/v2/hook/h1", feishu.url),
            "format = \"feishu\"\nsecret = \"fs-secret\"",
        ),
    ])
    .unwrap();
    let breached = AlertEvent::Breached {
        clock: Clock::Respond,
        due: 1_764_000_900_000,
    };
    n.send(&alert("acme", 1, breached));
    wait_for("all three delivered", || {
        n.counts().iter().all(|(_, c)| c.delivered == 1)
    });

    let (target, body) = ding.requests().remove(0);
    let (path, query) = target.split_once('?').unwrap();
    assert_eq!(path, "/robot/send");
    let q: Vec<(&str, &str)> = query.split('&').filter_map(|p| p.split_once('=')).collect();
    assert_eq!(q[0], ("access_token", "abc"));
    let ts = q.iter().find(|(k, _)| *k == "timestamp").unwrap().1;
    let sign = q.iter().find(|(k, _)| *k == "sign").unwrap().1;
    let want = hmac_b64(b"SEC123", format!("{ts}\nSEC123").as_bytes())
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    assert_eq!(sign, want, "DingTalk's sign over timestamp\\nsecret");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["msgtype"], "markdown");
    assert!(
        v["markdown"]["title"]
            .as_str()
            .unwrap()
            .contains("SLA BREACHED")
    );

    let (target, body) = wecom.requests().remove(0);
    assert_eq!(target, "/cgi-bin/webhook/send?key=k1");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let md = v["markdown"]["content"].as_str().unwrap();
    assert!(
        md.contains("acme/db1") && md.contains("respond due"),
        "{md}"
    );

    let (target, body) = feishu.requests().remove(0);
    assert_eq!(target, "/open-apis/bot/v2/hook/h1");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["msg_type"], "text");
    let ts = v["timestamp"].as_str().unwrap();
    assert_eq!(
        v["sign"].as_str().unwrap(),
        hmac_b64(format!("{ts}\nfs-secret").as_bytes(), b""),
        "Feishu's sign keyed by timestamp\\nsecret"
    );
    n.stop(Duration::from_secs(1));
}

#[test]
fn routing_by_customer_level_and_event() {
    let oncall = Server::start(vec![], Answer::Status(200, "{}"));
    let acme = Server::start(vec![], Answer::Status(200, "{}"));
    let n = Notifier::start(&[
        hook(
            "oncall",
            &oncall.url,
            "levels = [\"L1\", \"L2\"]\nevents = [\"opened\", \"breached\"]",
        ),
        hook("acme", &acme.url, "customers = [\"acme\"]"),
    ])
    .unwrap();
    n.send(&alert("acme", 1, AlertEvent::Opened)); // both
    n.send(&alert("globex", 2, AlertEvent::Opened)); // oncall
    n.send(&alert("globex", 3, AlertEvent::Opened)); // neither
    n.send(&alert(
        "acme",
        1,
        AlertEvent::Resolved {
            by: None,
            note: None,
        },
    )); // acme
    wait_for("deliveries", || {
        counts(&n, "oncall").delivered == 2 && counts(&n, "acme").delivered == 2
    });
    let customers = |s: &Server| -> Vec<String> {
        s.requests()
            .iter()
            .map(|(_, b)| {
                let v: serde_json::Value = serde_json::from_str(b).unwrap();
                format!(
                    "{}:{}",
                    v["finding"]["customer"].as_str().unwrap(),
                    v["event"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(customers(&oncall), ["acme:opened", "globex:opened"]);
    assert_eq!(customers(&acme), ["acme:opened", "acme:resolved"]);
    n.stop(Duration::from_secs(1));
}

#[test]
fn stopping_counts_what_could_not_be_sent() {
    // A port nobody listens on: every attempt is refused at once.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let n = Notifier::start(&[hook(
        "gone",
        &format!("http://127.0.0.1:{port}"),
        "attempts = 20\nretry_base = \"1m\"\nqueue = 2",
    )])
    .unwrap();
    for _ in 0..3 {
        n.send(&alert("acme", 1, AlertEvent::Opened));
    }
    // The first is waiting a minute for its second attempt, the second is queued, the third
    // found the queue full (2) or was taken in: either way nothing is lost silently.
    let c = n.stop(Duration::ZERO);
    let c = c[0].1;
    assert_eq!(c.delivered, 0);
    assert_eq!(c.dead_letters, 3, "{c:?}");
}

//! What a webhook receives: the generic JSON form, and the group-robot messages of
//! DingTalk, WeCom (企业微信) and Feishu (飞书), with the robots' request signing. Pure: an
//! alert and the time in, a URL and a body out; and a robot's answer judged.

use super::config::Format;
use super::{Alert, AlertEvent};
use aftercare_shared::model::UnixMillis;
use base64::Engine as _;
use serde::Serialize;

/// One request to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub url: String,
    pub body: String,
}

/// The request for `a` in `format`; `secret` signs DingTalk and Feishu robot messages.
pub fn render(
    format: Format,
    url: &str,
    secret: Option<&str>,
    a: &Alert,
    now: UnixMillis,
) -> Request {
    let title = title(a);
    let text = lines(a);
    let (url, body) = match format {
        Format::Json => (url.to_string(), generic(a)),
        Format::Dingtalk => {
            let body = serde_json::json!({
                "msgtype": "markdown",
                "markdown": { "title": title, "text": markdown(&title, &text) },
            });
            let url = match secret {
                // DingTalk "加签": timestamp (ms) and HMAC-SHA256 of "timestamp\nsecret".
                Some(s) => format!(
                    "{url}{}timestamp={now}&sign={}",
                    if url.contains('?') { '&' } else { '?' },
                    percent_encode(&hmac_b64(s.as_bytes(), format!("{now}\n{s}").as_bytes()))
                ),
                None => url.to_string(),
            };
            (url, body.to_string())
        }
        Format::Wecom => {
            let body = serde_json::json!({
                "msgtype": "markdown",
                "markdown": { "content": markdown(&title, &text) },
            });
            (url.to_string(), body.to_string())
        }
        Format::Feishu => {
            let mut body = serde_json::json!({
                "msg_type": "text",
                "content": { "text": format!("{title}\n{}", text.join("\n")) },
            });
            if let Some(s) = secret {
                // Feishu: timestamp (s); the key is "timestamp\nsecret", the message empty.
                let ts = now.div_euclid(1000);
                body["timestamp"] = ts.to_string().into();
                body["sign"] = hmac_b64(format!("{ts}\n{s}").as_bytes(), b"").into();
            }
            (url.to_string(), body.to_string())
        }
    };
    Request { url, body }
}

/// Did the receiver take it? Robots answer HTTP 200 with an error code in the body.
pub fn accepted(format: Format, status: u16, body: &str) -> Result<(), String> {
    if !(200..300).contains(&status) {
        let excerpt: String = body.chars().take(200).collect();
        return Err(format!("HTTP {status}: {excerpt}"));
    }
    let key = match format {
        Format::Json => return Ok(()),
        Format::Dingtalk | Format::Wecom => "errcode",
        Format::Feishu => "code",
    };
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|_| format!("answer is not JSON: {body:.200}"))?;
    match v.get(key).and_then(serde_json::Value::as_i64) {
        Some(0) => Ok(()),
        // Feishu's newer answers carry StatusCode instead.
        None if format == Format::Feishu
            && v.get("StatusCode").and_then(serde_json::Value::as_i64) == Some(0) =>
        {
            Ok(())
        }
        Some(code) => {
            let msg = v
                .get("errmsg")
                .or_else(|| v.get("msg"))
                .and_then(serde_json::Value::as_str)
                .unwrap_or("");
            Err(format!("{key} {code}: {msg}"))
        }
        None => Err(format!("answer has no {key}: {body:.200}")),
    }
}

fn hmac_b64(key: &[u8], msg: &[u8]) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&k, msg).as_ref())
}

/// Percent-encoding of a base64 signature for a query string.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn event_word(e: &AlertEvent) -> &'static str {
    match e {
        AlertEvent::Opened => "OPEN",
        AlertEvent::Reopened => "REOPENED",
        AlertEvent::AtRisk { .. } => "SLA AT RISK",
        AlertEvent::Breached { .. } => "SLA BREACHED",
        AlertEvent::Resolved { .. } => "RESOLVED",
    }
}

fn title(a: &Alert) -> String {
    format!(
        "[L{} {}] {}/{}: {}",
        a.level,
        event_word(&a.event),
        a.customer,
        a.host,
        a.title
    )
}

fn time(t: UnixMillis) -> String {
    aftercare_shared::time_fmt::rfc3339(t)
}

fn lines(a: &Alert) -> Vec<String> {
    let mut v = Vec::new();
    match &a.event {
        AlertEvent::AtRisk { clock, due } | AlertEvent::Breached { clock, due } => {
            v.push(format!("{} due {}", clock.as_str(), time(*due)))
        }
        AlertEvent::Resolved { by: Some(by), note } => v.push(format!(
            "resolved by {by}{}",
            note.as_deref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default()
        )),
        AlertEvent::Resolved { by: None, .. } => {
            v.push("resolved: the condition cleared".to_string())
        }
        AlertEvent::Opened | AlertEvent::Reopened => {}
    }
    v.push(format!(
        "level L{}, {}, rule {}{}",
        a.level,
        a.category,
        a.rule,
        if a.subject.is_empty() {
            String::new()
        } else {
            format!(" on {}", a.subject)
        }
    ));
    if !a.summary.is_empty() {
        v.push(a.summary.clone());
    }
    if !a.recommendation.is_empty() {
        v.push(format!("recommendation: {}", a.recommendation));
    }
    if let Some(t) = a.respond_by {
        v.push(format!("respond by {}", time(t)));
    }
    if let Some(t) = a.restore_by {
        v.push(format!("restore by {}", time(t)));
    }
    v.push(format!(
        "finding {} (aftercare-collector findings show {})",
        a.finding_id, a.finding_id
    ));
    v
}

fn markdown(title: &str, lines: &[String]) -> String {
    let mut s = format!("### {title}\n");
    for l in lines {
        s.push_str("\n- ");
        s.push_str(l);
    }
    s
}

#[derive(Serialize)]
struct Generic<'a> {
    event: &'static str,
    at: String,
    finding: &'a Alert,
}

fn generic(a: &Alert) -> String {
    let event = match &a.event {
        AlertEvent::Opened => "opened",
        AlertEvent::Reopened => "reopened",
        AlertEvent::AtRisk { .. } => "at_risk",
        AlertEvent::Breached { .. } => "breached",
        AlertEvent::Resolved { .. } => "resolved",
    };
    serde_json::to_string(&Generic {
        event,
        at: time(a.at),
        finding: a,
    })
    .expect("an alert always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Clock;

    fn alert(event: AlertEvent) -> Alert {
        Alert {
            event,
            finding_id: 42,
            customer: "acme".into(),
            host: "db1".into(),
            rule: "disk-io-errors".into(),
            subject: "sda".into(),
            level: 2,
            category: "hardware".into(),
            title: "disk I/O errors".into(),
            summary: "12 lines matched in 10m".into(),
            recommendation: "check the disk's SMART data".into(),
            opened_at: 1_764_000_000_000,
            respond_by: Some(1_764_007_200_000),
            restore_by: None,
            at: 1_764_000_000_000,
        }
    }

    #[test]
    fn generic_json_carries_the_finding() {
        let r = render(
            Format::Json,
            "http://h/x",
            None,
            &alert(AlertEvent::Opened),
            0,
        );
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["event"], "opened");
        assert_eq!(v["finding"]["finding_id"], 42);
        assert_eq!(v["finding"]["level"], 2);
        assert_eq!(v["finding"]["respond_by"], 1_764_007_200_000i64);
        assert_eq!(r.url, "http://h/x");
    }

    #[test]
    fn robots_get_their_own_shapes() {
        let a = alert(AlertEvent::Breached {
            clock: Clock::Respond,
            due: 1_764_007_200_000,
        });
        let d = render(
            Format::Dingtalk,
            "http://h/robot/send?access_token=t",
            None,
            &a,
            5,
        );
        let v: serde_json::Value = serde_json::from_str(&d.body).unwrap();
        assert_eq!(v["msgtype"], "markdown");
        let text = v["markdown"]["text"].as_str().unwrap();
        assert!(
            text.starts_with("### [L2 SLA BREACHED] acme/db1: disk I/O errors"),
            "{text}"
        );
        assert!(text.contains("respond due 2025-11-24T18:00:00Z"), "{text}");
        let w = render(Format::Wecom, "http://h/x?key=k", None, &a, 5);
        let v: serde_json::Value = serde_json::from_str(&w.body).unwrap();
        assert!(
            v["markdown"]["content"]
                .as_str()
                .unwrap()
                .contains("finding 42")
        );
        let f = render(Format::Feishu, "http://h/x", None, &a, 5);
        let v: serde_json::Value = serde_json::from_str(&f.body).unwrap();
        assert_eq!(v["msg_type"], "text");
        assert!(v["content"]["text"].as_str().unwrap().contains("hardware"));
        assert!(v.get("sign").is_none());
    }

    #[test]
    fn robot_signatures_follow_their_documented_recipes() {
        let a = alert(AlertEvent::Opened);
        let now = 1_700_000_000_123;
        let d = render(
            Format::Dingtalk,
            "http://h/send?access_token=t",
            Some("SECxyz"),
            &a,
            now,
        );
        let (base, q) = d.url.split_once("&timestamp=").unwrap();
        assert_eq!(base, "http://h/send?access_token=t");
        let (ts, sign) = q.split_once("&sign=").unwrap();
        assert_eq!(ts, now.to_string());
        let want = hmac_b64(b"SECxyz", format!("{now}\nSECxyz").as_bytes());
        assert_eq!(sign, percent_encode(&want));
        assert!(!sign.contains('+') && !sign.contains('/') && !sign.contains('='));

        let f = render(Format::Feishu, "http://h/hook", Some("s3"), &a, now);
        let v: serde_json::Value = serde_json::from_str(&f.body).unwrap();
        assert_eq!(v["timestamp"], "1700000000");
        assert_eq!(v["sign"], hmac_b64(b"1700000000\ns3", b""));
    }

    #[test]
    fn answers_are_judged_per_receiver() {
        assert!(accepted(Format::Json, 204, "").is_ok());
        assert!(
            accepted(Format::Json, 500, "boom")
                .unwrap_err()
                .contains("HTTP 500")
        );
        assert!(accepted(Format::Dingtalk, 200, r#"{"errcode":0,"errmsg":"ok"}"#).is_ok());
        let e = accepted(
            Format::Wecom,
            200,
            r#"{"errcode":45009,"errmsg":"freq limit"}"#,
        );
        assert_eq!(e.unwrap_err(), "errcode 45009: freq limit");
        assert!(accepted(Format::Feishu, 200, r#"{"code":0,"msg":"success"}"#).is_ok());
        assert!(accepted(Format::Feishu, 200, r#"{"StatusCode":0}"#).is_ok());
        assert!(
            accepted(
                Format::Feishu,
                200,
                r#"{"code":19021,"msg":"sign match fail"}"#
            )
            .is_err()
        );
        assert!(accepted(Format::Dingtalk, 200, "<html>").is_err());
    }
}

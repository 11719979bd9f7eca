//! Findings for a person at a terminal: the list sorted by level and deadline with the time
//! left on each SLA clock, and one finding with its evidence and timeline. Pure.

use super::lifecycle::{Event, State};
use super::record::{FindingRow, Silence, pauses_for};
use crate::sla::{ClockStatus, FindingSla, FindingTimes, Level, SlaPolicy, SlaState};
use crate::view::{ago, table};
use aftercare_shared::model::UnixMillis;
use aftercare_shared::time_fmt::rfc3339;

/// Both SLA clocks of a finding at `now`, stopped during the maintenance windows of its
/// host.
pub fn sla_of(
    f: &FindingRow,
    policy: &SlaPolicy,
    silences: &[Silence],
    now: UnixMillis,
) -> FindingSla {
    policy.finding_sla_paused(
        &f.customer,
        Level::from_number(f.level),
        FindingTimes {
            raised_at: f.sla_from,
            acknowledged_at: f.acknowledged.as_ref().map(|a| a.0),
            resolved_at: f.resolved.as_ref().map(|r| r.0),
        },
        now,
        &pauses_for(silences, &f.customer, &f.host),
    )
}

/// `5m`, `2h10m`, `3d4h`: a span for a column.
pub fn span(ms: i64) -> String {
    let m = ms.max(0) / 60_000;
    match m {
        0..60 => format!("{m}m"),
        60..1440 if m % 60 == 0 => format!("{}h", m / 60),
        60..1440 => format!("{}h{}m", m / 60, m % 60),
        _ if (m / 60) % 24 == 0 => format!("{}d", m / 1440),
        _ => format!("{}d{}h", m / 1440, (m / 60) % 24),
    }
}

/// A clock in a cell: `met`, `missed`, `12m left`, `AT RISK 5m left`, `BREACHED 20m`.
pub fn clock_cell(c: &ClockStatus, now: UnixMillis) -> String {
    match (c.stopped, c.state) {
        (true, SlaState::Breached) => "missed".into(),
        (true, _) => "met".into(),
        (false, SlaState::Breached) => format!("BREACHED {}", span(now - c.due)),
        (false, SlaState::AtRisk) => format!("AT RISK {} left", span(c.due - now)),
        (false, SlaState::OnTime) => format!("{} left", span(c.due - now)),
    }
}

pub fn findings_table(
    rows: &[FindingRow],
    policy: &SlaPolicy,
    silences: &[Silence],
    now: UnixMillis,
) -> String {
    if rows.is_empty() {
        return "no findings: nothing the rules flag on any host\n".into();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|f| {
            let sla = sla_of(f, policy, silences, now);
            vec![
                f.id.to_string(),
                format!("L{}", f.level),
                format!("{}/{}", f.customer, f.host),
                if f.subject.is_empty() {
                    f.rule.clone()
                } else {
                    format!("{} {}", f.rule, f.subject)
                },
                f.state.as_str().into(),
                ago(f.opened_at, now),
                clock_cell(&sla.respond, now),
                clock_cell(&sla.restore, now),
                f.title.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "LEVEL", "HOST", "RULE", "STATE", "OPENED", "RESPOND", "RESTORE", "TITLE",
        ],
        &cells,
    )
}

/// One finding: what, where, the clocks with their deadlines, evidence, timeline.
pub fn finding_detail(
    f: &FindingRow,
    timeline: &[Event],
    policy: &SlaPolicy,
    silences: &[Silence],
    now: UnixMillis,
) -> String {
    let sla = sla_of(f, policy, silences, now);
    let contract = policy.contract_for(&f.customer);
    let mut s = format!(
        "finding {}: L{} {} — {}\nhost      {}/{}\nrule      {}{}\ncategory  {}\nstate     {}\nopened    {} ({})\nlast seen {} ({})\n",
        f.id,
        f.level,
        f.state.as_str(),
        f.title,
        f.customer,
        f.host,
        f.rule,
        if f.subject.is_empty() {
            String::new()
        } else {
            format!(" on {}", f.subject)
        },
        f.category,
        f.state.as_str(),
        rfc3339(f.opened_at),
        ago(f.opened_at, now),
        rfc3339(f.last_seen),
        ago(f.last_seen, now),
    );
    for (name, c) in [("respond", &sla.respond), ("restore", &sla.restore)] {
        s.push_str(&format!(
            "{name:<9} by {} ({}; contract {})\n",
            rfc3339(c.due),
            clock_cell(c, now),
            contract.name
        ));
    }
    if !f.recommendation.is_empty() {
        s.push_str(&format!("recommendation: {}\n", f.recommendation));
    }
    if let Some((at, by, note)) = &f.resolved {
        s.push_str(&format!(
            "resolution: {} by {}{}\n",
            rfc3339(*at),
            by.as_deref().unwrap_or("the rules (the condition cleared)"),
            note.as_deref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default()
        ));
    }
    s.push_str(&format!("evidence: {}\n\ntimeline:\n", f.evidence));
    for e in timeline {
        s.push_str(&format!(
            "  {}  {}{}{}\n",
            rfc3339(e.at),
            e.kind.as_str(),
            e.by.as_deref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default(),
            e.note
                .as_deref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default()
        ));
    }
    if f.state != State::Resolved {
        s.push_str(&format!(
            "\nacknowledge: aftercare-collector findings ack {} --by NAME\nresolve:     aftercare-collector findings resolve {} --by NAME --note WHAT-WAS-DONE\n",
            f.id, f.id
        ));
    }
    s
}

/// One SLA clock as JSON: its instants as RFC 3339 like every time the API sends.
pub fn clock_json(c: &ClockStatus) -> serde_json::Value {
    serde_json::json!({
        "state": c.state,
        "due": rfc3339(c.due),
        "at_risk_from": rfc3339(c.at_risk_from),
        "used_ms": c.used_ms,
        "left_ms": c.left_ms,
        "stopped": c.stopped,
    })
}

/// A clock read back from [`clock_json`].
pub fn clock_from_json(v: &serde_json::Value) -> Option<ClockStatus> {
    let time = |k: &str| {
        v[k].as_str()
            .and_then(|s| aftercare_shared::time_fmt::parse_until(s).ok())
            .map(aftercare_shared::time_fmt::from_offset)
    };
    Some(ClockStatus {
        state: serde_json::from_value(v["state"].clone()).ok()?,
        due: time("due")?,
        at_risk_from: time("at_risk_from")?,
        used_ms: v["used_ms"].as_i64()?,
        left_ms: v["left_ms"].as_i64()?,
        stopped: v["stopped"].as_bool()?,
    })
}

/// A finding as JSON (the CLI's `--json` and the HTTP API), with its SLA clocks at `now`
/// and, for one finding, its timeline.
pub fn finding_json(
    f: &FindingRow,
    policy: &SlaPolicy,
    silences: &[Silence],
    now: UnixMillis,
    timeline: Option<&[Event]>,
) -> serde_json::Value {
    let sla = sla_of(f, policy, silences, now);
    let mut v = serde_json::json!({
        "id": f.id,
        "customer": f.customer,
        "host": f.host,
        "rule": f.rule,
        "subject": f.subject,
        "level": format!("L{}", f.level),
        "category": f.category,
        "title": f.title,
        "recommendation": f.recommendation,
        "state": f.state.as_str(),
        "opened_at": rfc3339(f.opened_at),
        "last_seen": rfc3339(f.last_seen),
        "acknowledged": f.acknowledged.as_ref().map(|(at, by)| serde_json::json!({"at": rfc3339(*at), "by": by})),
        "resolved": f.resolved.as_ref().map(|(at, by, note)| serde_json::json!({"at": rfc3339(*at), "by": by, "note": note})),
        "contract": policy.contract_for(&f.customer).name,
        "sla": {"respond": clock_json(&sla.respond), "restore": clock_json(&sla.restore)},
        "evidence": serde_json::from_str::<serde_json::Value>(&f.evidence).unwrap_or(serde_json::Value::String(f.evidence.clone())),
    });
    if let Some(t) = timeline {
        v["timeline"] = t
            .iter()
            .map(|e| serde_json::json!({"at": rfc3339(e.at), "kind": e.kind.as_str(), "by": e.by, "note": e.note}))
            .collect();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::lifecycle::EventKind;

    const T0: i64 = 1_772_409_600_000; // 2026-03-02 00:00 UTC, a Monday
    const MIN: i64 = 60_000;

    fn row(level: u8, opened_at: i64) -> FindingRow {
        FindingRow {
            id: 3,
            host_id: 1,
            customer: "acme".into(),
            host: "db1".into(),
            rule: "fs-full".into(),
            subject: "/var".into(),
            level,
            category: "capacity".into(),
            title: "filesystem /var full".into(),
            recommendation: "grow it".into(),
            state: State::Open,
            opened_at,
            last_seen: opened_at,
            acknowledged: None,
            resolved: None,
            respond_by: None,
            restore_by: None,
            sla_from: opened_at,
            sla_sent: 0,
            evidence: "{}".into(),
        }
    }

    #[test]
    fn clocks_travel_as_rfc3339_and_read_back() {
        let c = ClockStatus {
            state: SlaState::AtRisk,
            due: T0 + 90 * MIN,
            at_risk_from: T0 + 72 * MIN,
            used_ms: 80 * MIN,
            left_ms: 10 * MIN,
            stopped: false,
        };
        let v = clock_json(&c);
        assert_eq!(v["due"], "2026-03-02T01:30:00Z");
        assert_eq!(v["state"], "at_risk");
        assert_eq!(clock_from_json(&v), Some(c));
        assert_eq!(clock_from_json(&serde_json::json!({"due": 5})), None);
    }

    #[test]
    fn spans_and_clock_cells() {
        assert_eq!(span(5 * MIN), "5m");
        assert_eq!(span(120 * MIN), "2h");
        assert_eq!(span(130 * MIN), "2h10m");
        assert_eq!(span(3 * 1440 * MIN + 4 * 60 * MIN), "3d4h");
        assert_eq!(span(-5), "0m");
    }

    #[test]
    fn the_list_shows_time_left_and_breaches_on_the_contract() {
        // The built-in policy: `standard` (Mon-Fri 09:00-18:00 UTC), L1 respond in 30m.
        let policy = SlaPolicy::default();
        let f = row(1, T0 + 9 * 60 * MIN); // Monday 09:00
        let t = findings_table(
            std::slice::from_ref(&f),
            &policy,
            &[],
            T0 + 9 * 60 * MIN + 10 * MIN,
        );
        assert!(t.contains("20m left"), "{t}");
        assert!(
            t.contains("acme/db1") && t.contains("fs-full /var") && t.contains("L1"),
            "{t}"
        );
        let t = findings_table(
            std::slice::from_ref(&f),
            &policy,
            &[],
            T0 + 9 * 60 * MIN + 26 * MIN,
        );
        assert!(t.contains("AT RISK 4m left"), "{t}");
        let t = findings_table(
            std::slice::from_ref(&f),
            &policy,
            &[],
            T0 + 9 * 60 * MIN + 50 * MIN,
        );
        assert!(t.contains("BREACHED 20m"), "{t}");
        let mut acked = f.clone();
        acked.state = State::Acknowledged;
        acked.acknowledged = Some((T0 + 9 * 60 * MIN + 5 * MIN, "ann".into()));
        let t = findings_table(&[acked], &policy, &[], T0 + 9 * 60 * MIN + 50 * MIN);
        assert!(t.contains("met"), "{t}");
        assert!(findings_table(&[], &policy, &[], T0).contains("no findings"));
    }

    #[test]
    fn the_detail_has_deadlines_evidence_and_the_timeline() {
        let policy = SlaPolicy::default();
        let f = row(2, T0 + 9 * 60 * MIN);
        let timeline = vec![Event {
            at: T0 + 9 * 60 * MIN,
            kind: EventKind::Opened,
            by: None,
            note: None,
        }];
        let d = finding_detail(&f, &timeline, &policy, &[], T0 + 9 * 60 * MIN + MIN);
        assert!(d.contains("respond   by 2026-03-02T11:00:00Z"), "{d}");
        assert!(d.contains("contract standard"), "{d}");
        assert!(d.contains("2026-03-02T09:00:00Z  opened"), "{d}");
        assert!(d.contains("findings ack 3 --by NAME"), "{d}");
    }

    #[test]
    fn a_maintenance_window_stops_a_running_clock() {
        let policy = SlaPolicy::default(); // standard: L1 respond in 30m, office hours
        let opened = T0 + 9 * 60 * MIN; // Monday 09:00
        let f = row(1, opened);
        let window = |host: Option<&str>| Silence {
            id: 1,
            customer: "acme".into(),
            host: host.map(String::from),
            starts: opened + 10 * MIN,
            ends: opened + 40 * MIN,
            reason: "disk swap".into(),
            created_by: "ann".into(),
            created_at: opened,
        };
        let at = opened + 45 * MIN;
        let sla = sla_of(&f, &policy, &[window(Some("db1"))], at);
        assert_eq!(
            sla.respond.due,
            opened + 60 * MIN,
            "30 minutes plus the window"
        );
        assert_eq!(sla.respond.used_ms, 15 * MIN);
        assert_eq!(sla.respond.state, SlaState::OnTime);
        // A window of every host of the customer counts; another host's does not.
        let all = sla_of(&f, &policy, &[window(None)], at);
        assert_eq!(all.respond.due, opened + 60 * MIN);
        let other = sla_of(&f, &policy, &[window(Some("db2"))], at);
        assert_eq!(other.respond.due, opened + 30 * MIN);
        assert_eq!(other.respond.state, SlaState::Breached);
    }
}

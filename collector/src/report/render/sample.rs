//! A realistic report built by hand, for the renderers' tests (also included by
//! `collector/tests/report_render.rs`): two hosts over 2026-Q3 in Asia/Shanghai, trends of
//! a few hundred points, outages, forecasts, findings at each level with timelines, SLA
//! breaches, security items, grades, recommendations and a previous period.

use super::model::*;

pub const FROM_MS: i64 = 1_782_835_200_000; // 2026-06-30T16:00:00Z
pub const TO_MS: i64 = 1_790_784_000_000; // 2026-09-30T16:00:00Z
const STEP_MS: i64 = 6 * 3_600_000;

fn rfc(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).unwrap().to_string()
}

fn at(day: i64, hour: i64) -> String {
    rfc(FROM_MS + day * 86_400_000 + hour * 3_600_000)
}

/// A wavy series: daily rhythm, a slow drift, and a gap of two days at `gap_day`.
fn points(base: f64, swing: f64, drift: f64, gap_day: Option<i64>) -> Vec<(i64, f64)> {
    let mut out = Vec::new();
    let mut t = FROM_MS;
    let mut i = 0.0f64;
    while t < TO_MS {
        let day = (t - FROM_MS) / 86_400_000;
        if gap_day.is_none_or(|g| day < g || day >= g + 2) {
            let v = base + swing * (i * 0.9).sin() + swing * 0.4 * (i * 0.23).cos() + drift * i;
            out.push((t, v.max(0.0)));
        }
        t += STEP_MS;
        i += 1.0;
    }
    out
}

fn trend(resource: &str, subject: &str, unit: &str, p: [f64; 3], points: Vec<(i64, f64)>) -> Trend {
    Trend {
        resource: resource.into(),
        subject: subject.into(),
        unit: unit.into(),
        p50: Some(p[0]),
        p95: Some(p[1]),
        max: Some(p[2]),
        points,
    }
}

/// `what`: host, level, category, rule, title; `outcome`: respond, restore.
fn finding(
    id: i64,
    what: [&str; 5],
    day: i64,
    resolved: Option<i64>,
    outcome: [&str; 2],
) -> FindingItem {
    let [host, level, category, rule, title] = what;
    let [respond, restore] = outcome;
    let mut timeline = vec![TimelineEvent {
        at: at(day, 2),
        kind: "opened".into(),
        by: None,
        note: None,
    }];
    timeline.push(TimelineEvent {
        at: at(day, 3),
        kind: "acknowledged".into(),
        by: Some("li.wei".into()),
        note: Some("on it".into()),
    });
    if restore == "breached" {
        timeline.push(TimelineEvent {
            at: at(day, 5),
            kind: "SLA breached".into(),
            by: None,
            note: None,
        });
    }
    if let Some(r) = resolved {
        timeline.push(TimelineEvent {
            at: at(r, 6),
            kind: "resolved".into(),
            by: Some("zhang.min".into()),
            note: Some("replaced the failed disk".into()),
        });
    }
    FindingItem {
        id,
        host: host.into(),
        level: level.into(),
        category: category.into(),
        rule: rule.into(),
        title: title.into(),
        recommendation: format!("Follow the runbook for {rule}."),
        opened_at: at(day, 2),
        resolved_at: resolved.map(|r| at(r, 6)),
        state: if resolved.is_some() {
            "resolved"
        } else {
            "acknowledged"
        }
        .into(),
        respond: respond.into(),
        restore: restore.into(),
        timeline,
    }
}

pub fn report(lang: &str) -> Report {
    let web_cpu = points(35.0, 18.0, 0.0, Some(40));
    let web_mem = points(48.0, 6.0, 0.02, Some(40));
    let web_root = points(52.0, 0.5, 0.065, Some(40));
    let web_rx = points(4.0e6, 2.5e6, 0.0, Some(40));
    let web_tx = points(1.2e6, 0.8e6, 0.0, Some(40));
    let db_cpu = points(62.0, 20.0, 0.01, None);
    let db_mem = points(81.0, 4.0, 0.0, None);
    let db_data = points(70.0, 0.3, 0.04, None);
    let db_rx = points(9.0e6, 5.0e6, 0.0, None);
    assert!(web_cpu.len() > 300 && db_cpu.len() > 300);

    let security_finding = finding(
        108,
        [
            "db-01",
            "L4",
            "security",
            "auth_failures",
            "Repeated SSH authentication failures",
        ],
        50,
        Some(51),
        ["met", "met"],
    );
    let items = vec![
        finding(
            101,
            [
                "web-01",
                "L1",
                "availability",
                "heartbeat_lost",
                "Host silent past its heartbeat",
            ],
            40,
            Some(42),
            ["met", "breached"],
        ),
        finding(
            102,
            [
                "web-01",
                "L2",
                "capacity",
                "disk_forecast_full",
                "Filesystem / forecast full within 7 days",
            ],
            70,
            None,
            ["met", "running"],
        ),
        finding(
            103,
            [
                "db-01",
                "L2",
                "hardware",
                "disk_io_errors",
                "Disk I/O errors on sdb",
            ],
            20,
            Some(21),
            ["breached", "met"],
        ),
        finding(
            104,
            [
                "db-01",
                "L3",
                "performance",
                "cpu_saturation",
                "Sustained CPU saturation",
            ],
            30,
            Some(30),
            ["met", "met"],
        ),
        finding(
            105,
            [
                "db-01",
                "L3",
                "performance",
                "swap_thrashing",
                "Swap thrashing",
            ],
            33,
            Some(34),
            ["met", "met"],
        ),
        finding(
            106,
            [
                "web-01",
                "L3",
                "performance",
                "high_load",
                "High load average",
            ],
            60,
            Some(60),
            ["met", "met"],
        ),
        finding(
            107,
            [
                "web-01",
                "L4",
                "software",
                "cert_expiring",
                "Certificate expiring in 30 days",
            ],
            80,
            None,
            ["met", "running"],
        ),
        security_finding.clone(),
    ];

    Report {
        format: REPORT_FORMAT,
        meta: Meta {
            customer: "Huaxin Logistics Co., Ltd.".into(),
            from: rfc(FROM_MS),
            to: rfc(TO_MS),
            period_label: "2026-Q3".into(),
            time_zone: "Asia/Shanghai".into(),
            lang: lang.into(),
            contract: "Gold 7x24 (L1 respond 15 min, restore 2 h)".into(),
            generated_at: rfc(TO_MS + 3_600_000),
            generator: "aftercare-collector 0.1.0".into(),
        },
        purpose: Purpose {
            hosts: vec![
                HostInfo {
                    host: "web-01".into(),
                    os: "Debian GNU/Linux 12".into(),
                    kernel: "6.1.0-18-amd64".into(),
                    agent_version: "0.1.0".into(),
                    first_seen: "2026-03-02T08:00:00Z".into(),
                    last_seen: Some(rfc(TO_MS - 60_000)),
                },
                HostInfo {
                    host: "db-01".into(),
                    os: "Rocky Linux 9.4".into(),
                    kernel: "5.14.0-427".into(),
                    agent_version: "0.0.9".into(),
                    first_seen: "2026-03-02T08:30:00Z".into(),
                    last_seen: Some(rfc(TO_MS - 60_000)),
                },
            ],
            inspected: [
                "availability",
                "cpu",
                "memory",
                "filesystems",
                "network",
                "logs",
                "findings",
                "sla",
                "security",
            ]
            .map(String::from)
            .to_vec(),
            consent: vec![
                HostConsent {
                    host: "web-01".into(),
                    scopes_in_force: vec!["metrics".into(), "logs".into(), "diagnostics".into()],
                    expires_at: Some("2026-10-20T16:00:00Z".into()),
                    changes: vec![ConsentChange {
                        at: at(12, 1),
                        scope: "diagnostics".into(),
                        change: "granted".into(),
                        by: "ops@huaxin".into(),
                    }],
                },
                HostConsent {
                    host: "db-01".into(),
                    scopes_in_force: vec!["metrics".into(), "logs".into()],
                    expires_at: None,
                    changes: vec![ConsentChange {
                        at: at(55, 9),
                        scope: "diagnostics".into(),
                        change: "revoked".into(),
                        by: "dba@huaxin".into(),
                    }],
                },
            ],
        },
        impact: Impact {
            hosts: vec![
                AgentFootprint {
                    host: "web-01".into(),
                    cpu_percent_mean: Some(0.21),
                    cpu_percent_p95: Some(0.48),
                    memory_bytes_mean: Some(14.2 * 1024.0 * 1024.0),
                    memory_bytes_max: Some(19.8 * 1024.0 * 1024.0),
                    bytes_sent_per_day: Some(36.5 * 1024.0 * 1024.0),
                    diagnostics_run: 4,
                },
                AgentFootprint {
                    host: "db-01".into(),
                    cpu_percent_mean: Some(0.25),
                    cpu_percent_p95: None,
                    memory_bytes_mean: Some(15.1 * 1024.0 * 1024.0),
                    memory_bytes_max: Some(21.0 * 1024.0 * 1024.0),
                    bytes_sent_per_day: Some(52.0 * 1024.0 * 1024.0),
                    diagnostics_run: 0,
                },
            ],
        },
        inspection: Inspection {
            hosts: vec![
                HostInspection {
                    host: "web-01".into(),
                    availability: Availability {
                        expected_ms: TO_MS - FROM_MS,
                        online_ms: 7_773_300_000,
                        percent: Some(97.79),
                        outages: vec![
                            Outage {
                                from: at(40, 0),
                                to: at(42, 0),
                                duration_ms: 172_800_000,
                            },
                            Outage {
                                from: at(75, 3),
                                to: at(75, 4),
                                duration_ms: 2_700_000,
                            },
                        ],
                    },
                    trends: vec![
                        trend("cpu", "", "percent", [35.2, 61.8, 74.0], web_cpu),
                        trend("memory", "", "percent", [49.5, 57.3, 60.1], web_mem),
                        trend("filesystem", "/", "percent", [58.9, 64.6, 66.1], web_root),
                        trend(
                            "network_rx",
                            "eth0",
                            "bytes/s",
                            [4.0e6, 7.6e6, 8.9e6],
                            web_rx,
                        ),
                        trend(
                            "network_tx",
                            "eth0",
                            "bytes/s",
                            [1.2e6, 2.4e6, 2.9e6],
                            web_tx,
                        ),
                    ],
                    forecasts: vec![Forecast {
                        host: "web-01".into(),
                        mount: "/".into(),
                        used_percent: 66.1,
                        growth_percent_per_day: 0.26,
                        full_at: Some("2026-11-14T02:00:00Z".into()),
                        days_left: Some(44.4),
                    }],
                    log_errors: vec![
                        LogErrorCount {
                            source: "/var/log/nginx/error.log".into(),
                            severity: "error".into(),
                            count: 1_284,
                        },
                        LogErrorCount {
                            source: "journal".into(),
                            severity: "crit".into(),
                            count: 3,
                        },
                    ],
                },
                HostInspection {
                    host: "db-01".into(),
                    availability: Availability {
                        expected_ms: TO_MS - FROM_MS,
                        online_ms: TO_MS - FROM_MS,
                        percent: Some(100.0),
                        outages: vec![],
                    },
                    trends: vec![
                        trend("cpu", "", "percent", [62.4, 88.9, 97.2], db_cpu),
                        trend("memory", "", "percent", [81.0, 86.1, 88.0], db_mem),
                        trend(
                            "filesystem",
                            "/var/lib/pgsql",
                            "percent",
                            [71.9, 73.5, 74.0],
                            db_data,
                        ),
                        trend(
                            "network_rx",
                            "ens192",
                            "bytes/s",
                            [9.0e6, 15.9e6, 18.2e6],
                            db_rx,
                        ),
                    ],
                    forecasts: vec![Forecast {
                        host: "db-01".into(),
                        mount: "/var/lib/pgsql".into(),
                        used_percent: 74.0,
                        growth_percent_per_day: -0.01,
                        full_at: None,
                        days_left: None,
                    }],
                    log_errors: vec![LogErrorCount {
                        source: "/var/log/postgresql.log".into(),
                        severity: "warning".into(),
                        count: 411,
                    }],
                },
            ],
            findings: FindingsSummary {
                by_level: vec![
                    ("L1".into(), 1),
                    ("L2".into(), 2),
                    ("L3".into(), 3),
                    ("L4".into(), 2),
                ],
                by_category: vec![
                    ("performance".into(), 3),
                    ("availability".into(), 1),
                    ("capacity".into(), 1),
                    ("hardware".into(), 1),
                    ("security".into(), 1),
                    ("software".into(), 1),
                ],
                items,
            },
            sla: SlaOutcome {
                met: 11,
                breached: 2,
                running: 3,
                met_percent: Some(84.62),
                breaches: vec![
                    Breach {
                        finding: 101,
                        host: "web-01".into(),
                        level: "L1".into(),
                        clock: "restore".into(),
                        due: at(40, 4),
                        stopped_at: Some(at(42, 6)),
                        late_ms: 2 * 86_400_000 + 2 * 3_600_000,
                    },
                    Breach {
                        finding: 103,
                        host: "db-01".into(),
                        level: "L2".into(),
                        clock: "respond".into(),
                        due: at(20, 2),
                        stopped_at: Some(at(20, 3)),
                        late_ms: 1_800_000,
                    },
                ],
            },
        },
        security: Security {
            findings: vec![security_finding],
            auth_failures: vec![AuthFailures {
                host: "db-01".into(),
                count: 2_317,
                peak_day: "2026-08-20".into(),
                peak_count: 1_902,
            }],
            consent_expiring: vec![Expiring {
                host: "web-01".into(),
                what: "consent:diagnostics".into(),
                at: "2026-10-20T16:00:00Z".into(),
            }],
            outdated: vec![Outdated {
                host: "db-01".into(),
                what: "agent".into(),
                running: "0.0.9".into(),
                current: "0.1.0".into(),
            }],
        },
        conclusion: Conclusion {
            grade: "C".into(),
            hosts: vec![
                HostGrade {
                    host: "web-01".into(),
                    grade: "C".into(),
                    reasons: vec![
                        "sla_breach=1".into(),
                        "open_l2=1".into(),
                        "fs_full_within_30d=/".into(),
                        "availability_below_99.9=97.79".into(),
                    ],
                },
                HostGrade {
                    host: "db-01".into(),
                    grade: "B".into(),
                    reasons: vec!["sla_breach=1".into()],
                },
            ],
            // As `compute::GRADE_RULES` (this file is also compiled into an integration test).
            rules: [
                "D:open_l1",
                "D:availability_below_95",
                "C:sla_breach",
                "C:open_l2",
                "C:fs_full_within_30d",
                "B:finding_in_period",
                "B:availability_below_99.9",
                "A:none_of_the_above",
                "customer:worst_host",
            ]
            .map(String::from)
            .to_vec(),
            recommendations: vec![
                Recommendation {
                    priority: 1,
                    host: "web-01".into(),
                    kind: "sla_breach".into(),
                    text: "Review why the restore clock of finding 102 (Root filesystem \
                           filling) ran past its deadline."
                        .into(),
                    evidence: "breach:102:restore".into(),
                },
                Recommendation {
                    priority: 2,
                    host: "web-01".into(),
                    kind: "fs_full".into(),
                    text: "Extend or clean up /: at 0.45 % a day it is full by \
                           2026-11-14T06:00:00Z."
                        .into(),
                    evidence: "forecast:/:2026-11-14T06:00:00Z".into(),
                },
                Recommendation {
                    priority: 3,
                    host: "web-01".into(),
                    kind: "finding".into(),
                    text: "Rotate and compress the application logs.".into(),
                    evidence: "finding:102".into(),
                },
                Recommendation {
                    priority: 4,
                    host: "web-01".into(),
                    kind: "availability".into(),
                    text: "Find the cause of the 2 outage(s): the host reported 97.79 % of \
                           the expected time."
                        .into(),
                    evidence: "availability:97.79".into(),
                },
                Recommendation {
                    priority: 5,
                    host: "db-01".into(),
                    kind: "outdated_agent".into(),
                    text: "Upgrade the agent from 0.0.9 to 0.1.0.".into(),
                    evidence: "agent:0.0.9".into(),
                },
                Recommendation {
                    priority: 6,
                    host: "web-01".into(),
                    kind: "consent_expiring".into(),
                    text: "Ask the customer whether to renew consent:diagnostics before \
                           2026-10-20T16:00:00Z."
                        .into(),
                    evidence: "consent:diagnostics:2026-10-20T16:00:00Z".into(),
                },
            ],
            previous: Some(Comparison {
                period_label: "2026-Q2".into(),
                grade: "B".into(),
                findings: 5,
                availability_percent: Some(99.93),
                sla_met_percent: Some(100.0),
            }),
        },
    }
}

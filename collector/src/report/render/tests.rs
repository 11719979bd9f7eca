use super::*;
use crate::report::model::Report;

fn both() -> Vec<(Report, String, String)> {
    let templates = Templates::builtin();
    ["en", "zh-CN"]
        .into_iter()
        .map(|lang| {
            let report = sample::report(lang);
            let html = render_html(&report, &templates).unwrap();
            let md = render_markdown(&report, &templates).unwrap();
            (report, html, md)
        })
        .collect()
}

/// `needles` appear in `hay` in this order.
fn in_order(hay: &str, needles: &[String]) {
    let mut from = 0;
    for n in needles {
        match hay[from..].find(n.as_str()) {
            Some(i) => from += i + n.len(),
            None => panic!("`{n}` missing or out of order"),
        }
    }
}

fn label(lang: &str, key: &str) -> String {
    Templates::builtin().table(lang).unwrap()[key].clone()
}

#[test]
fn sections_one_to_five_in_order_in_both_languages_and_formats() {
    for (report, html, md) in both() {
        if let Some(dir) = std::env::var_os("REPORT_RENDER_OUT") {
            let dir = std::path::Path::new(&dir);
            std::fs::write(dir.join(format!("{}.html", report.meta.lang)), &html).unwrap();
            std::fs::write(dir.join(format!("{}.md", report.meta.lang)), &md).unwrap();
        }
        let lang = report.meta.lang.as_str();
        let keys = ["purpose", "impact", "inspection", "security", "conclusion"];
        let html_heads: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                format!(
                    r#"<span class="num">{}</span>{}</h2>"#,
                    i + 1,
                    label(lang, &format!("section.{k}"))
                )
            })
            .collect();
        in_order(&html, &html_heads);
        let md_heads: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| format!("\n## {} {}\n", i + 1, label(lang, &format!("section.{k}"))))
            .collect();
        in_order(&md, &md_heads);
        for sub in [
            "3.1", "3.2", "3.3", "3.4", "3.5", "3.6", "4.1", "4.4", "5.1", "5.2", "5.3",
        ] {
            assert!(
                html.contains(&format!("<h3>{sub} ")),
                "{lang} html lacks {sub}"
            );
            assert!(md.contains(&format!("### {sub} ")), "{lang} md lacks {sub}");
        }
    }
}

#[test]
fn chinese_report_speaks_chinese() {
    let (_, html, md) = both().remove(1);
    for zh in [
        "巡检报告",
        "巡检目的与重点",
        "巡检对运行系统的影响",
        "巡检内容",
        "安全隐患",
        "结论与建议",
        "可用率",
        "服务级别（SLA）达成情况",
        "预计写满",
        "与上一周期对比",
    ] {
        assert!(html.contains(zh), "html lacks {zh}");
        assert!(md.contains(zh), "md lacks {zh}");
    }
    // Keys the model carries, translated: inspected items, rules, reasons, timeline, consent.
    for zh in [
        "文件系统",
        "D — 周期结束时存在未处理的 L1 问题",
        "客户的等级取其最差主机的等级。",
        "1 个未处理的 L2 问题",
        "可用率 97.79%，低于 99.9%",
        "预计 30 天内写满：",
        "文件系统即将写满",
        "复核问题 #102 的恢复时钟为何超过期限。",
        "请与客户确认是否在 2026-10-21 前续签远程诊断授权。",
        "升级巡检代理（当前版本 0.0.9）。",
        "SLA 超时",
        "撤销",
        "授权：远程诊断",
        "需要关注",
    ] {
        assert!(html.contains(zh), "html lacks {zh}");
        assert!(md.contains(zh), "md lacks {zh}");
    }
    assert!(html.contains(r#"<html lang="zh-CN">"#));
    // No English label leaked into the Chinese report.
    for en in [
        "Purpose and focus",
        "Availability",
        "Recommendations",
        "open L2 finding",
        "Upgrade the",
        "Review why",
    ] {
        assert!(!html.contains(en), "html has English `{en}`");
    }
}

#[test]
fn numbers_from_the_model_appear_in_html_and_markdown() {
    for (report, html, md) in both() {
        let lang = report.meta.lang.as_str();
        // minijinja escapes `/` in HTML.
        let html = html.replace("&#x2f;", "/");
        for doc in [&html, &md] {
            // Availability, forecast date (local), SLA met share and the breach's lateness.
            for n in [
                "97.79%",
                "100.00%",
                "2026-11-14",
                "84.62%",
                "99.93%",
                "1284",
                "2317",
                "2026-Q2",
                "#103",
            ] {
                assert!(doc.contains(n), "{lang} lacks {n}");
            }
            // Times are shown in the report's zone: the period starts at local midnight.
            assert!(
                doc.contains("2026-07-01 00:00"),
                "{lang} lacks the local start"
            );
            assert!(!doc.contains("T16:00:00Z"), "{lang} shows a raw UTC time");
            // Trend percentiles and network in binary units.
            for n in ["61.8%", "97.2%", "7.2 MiB/s"] {
                assert!(doc.contains(n), "{lang} lacks {n}");
            }
        }
        let met = label(lang, "label.met");
        let breached = label(lang, "label.breached");
        assert!(md.contains(&format!("| {met} | {breached} |")));
        assert!(md.contains("| 11 | 2 | 3 | 84.62% |"), "{lang}: SLA row");
        assert!(html.contains(
            r#"<td class="n met">11</td><td class="n breached">2</td><td class="n">3</td>"#
        ));
        // Findings per level, in both.
        for (level, count) in &report.inspection.findings.by_level {
            let name = label(lang, &format!("level.{level}"));
            assert!(
                md.contains(&format!("| {name} | {count} |")),
                "{lang} md {level}"
            );
            assert!(
                html.contains(&format!("<td>{name}</td><td class=\"n\">{count}</td>")),
                "{lang} html {level}"
            );
        }
        // Each finding and each timeline event is listed.
        for f in &report.inspection.findings.items {
            assert!(html.contains(&format!("#{}", f.id)) && md.contains(&format!("#{}", f.id)));
        }
        let resolved_note = "replaced the failed disk";
        assert_eq!(
            html.matches(resolved_note).count(),
            md.matches(resolved_note).count()
        );
        assert!(html.matches(resolved_note).count() >= 6);
    }
}

#[test]
fn html_is_self_contained_with_a_drawn_svg_per_chart() {
    let (report, html, _) = both().remove(0);
    for external in [
        "src=\"http",
        "href=\"http",
        "@import",
        "src='http",
        "url(http",
        "<script",
        "<link",
    ] {
        assert!(!html.contains(external), "found {external}");
    }
    let trends: usize = report.inspection.hosts.iter().map(|h| h.trends.len()).sum();
    let charts = trends + report.inspection.hosts.len() + 1;
    // The letterhead's mark is an SVG too.
    assert_eq!(html.matches("<svg").count(), charts + 1);
    let figures: Vec<&str> = html.split("<figure class=\"chart\">").skip(1).collect();
    assert_eq!(figures.len(), trends);
    for fig in figures {
        let svg = &fig[fig.find("<svg").unwrap()..fig.find("</svg>").unwrap()];
        // The trend itself: a filled area and its line, with many points each.
        let long_paths = svg
            .split("<polyline")
            .chain(svg.split("<path"))
            .skip(1)
            .filter(|p| p.split_once("/>").map_or(p.len(), |(a, _)| a.len()) > 1000)
            .count();
        assert!(long_paths >= 1, "a trend chart without a drawn series");
        assert!(fig.contains("<dt>p95</dt>"));
    }
    // Availability strips: one red mark per outage. Bars: heights in the counts' ratio.
    let figure = |start: &str| {
        let at = html.find(start).unwrap();
        html[at..at + html[at..].find("</figure>").unwrap()].to_owned()
    };
    let outage_marks = |host: &str| {
        figure(&format!(
            "<figure class=\"strip\">\n    <figcaption>{host} "
        ))
        .matches("fill=\"#C53030\"")
        .count()
    };
    assert_eq!(outage_marks("web-01"), 2);
    assert_eq!(outage_marks("db-01"), 0);
    let bars = figure("<figure class=\"bars\">");
    let heights: Vec<f64> = ["#C53030", "#DD6B20", "#D69E2E", "#3182CE"]
        .iter()
        .map(|fill| {
            let rect = bars
                .split("<rect")
                .find(|r| r.contains(&format!("fill=\"{fill}\"")))
                .unwrap();
            let h = rect
                .split("height=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            h.parse().unwrap()
        })
        .collect();
    for (h, (_, count)) in heights.iter().zip(&report.inspection.findings.by_level) {
        assert!(
            (h / heights[0] - *count as f64).abs() < 0.1,
            "bar heights {heights:?}"
        );
    }
    assert!(html.contains("@page { size: A4;"));
    assert!(html.contains("section { break-before: page; }"));
}

#[test]
fn unknown_language_is_named() {
    assert_eq!(LANGUAGES, ["en", "zh-CN"]);
    let report = sample::report("fr");
    let err = render_html(&report, &Templates::builtin()).unwrap_err();
    assert!(err.to_string().contains("`fr`"), "{err}");
    assert!(render_markdown(&report, &Templates::builtin()).is_err());
}

#[test]
fn operator_override_carries_their_letterhead_and_wording() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("letterhead.html.j2"),
        "<div class=\"letterhead\"><b>Northwind Support GmbH</b> · {{ t(\"letterhead.tagline\") }}</div>\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("en.toml"),
        "[doc]\ntitle = \"Quarterly health check\"\n",
    )
    .unwrap();
    let templates = Templates::load(dir.path()).unwrap();
    let html = render_html(&sample::report("en"), &templates).unwrap();
    assert!(html.contains("Northwind Support GmbH"));
    assert!(!html.contains("After-sales Technical Support"));
    assert!(html.contains("<h1>Quarterly health check</h1>"));
    // Labels it did not override are the built-in ones; the other language is untouched.
    assert!(html.contains("Purpose and focus"));
    let zh = render_html(&sample::report("zh-CN"), &templates).unwrap();
    assert!(zh.contains("<h1>巡检报告</h1>") && zh.contains("Northwind Support GmbH"));
}

#[test]
fn broken_overrides_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("letterhead.html.j2"),
        "<div>\n<b>ok</b>\n{% if %}\n</div>\n",
    )
    .unwrap();
    let err = Templates::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("letterhead.html.j2:3:"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("zh-CN.toml"),
        "[doc]\ntitle = \"巡检\"\nsubtitle = \n",
    )
    .unwrap();
    let err = Templates::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("zh-CN.toml:3"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("en.toml"), "[doc]\ntitel = \"typo\"\n").unwrap();
    let err = Templates::load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("en.toml") && err.contains("doc.titel"),
        "{err}"
    );

    // Compiles, but asks for a field the report does not have: found when rendering.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("report.md.j2"),
        "# {{ report.meta.customer }}\n\n{{ report.meta.costumer }}\n",
    )
    .unwrap();
    let templates = Templates::load(dir.path()).unwrap();
    let err = render_markdown(&sample::report("en"), &templates)
        .unwrap_err()
        .to_string();
    assert!(err.contains("report.md.j2:3"), "{err}");

    let err = Templates::load(&dir.path().join("absent"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent"), "{err}");
}

#[test]
fn json_is_the_model() {
    let report = sample::report("en");
    let json = render_json(&report).unwrap();
    assert!(
        json.starts_with("{\n  \"format\": 1,\n  \"meta\": {"),
        "{}",
        &json[..40]
    );
    // Read back, it says the same (the trends' floats may move by an ulp in serde_json).
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back.meta, report.meta);
    assert_eq!(back.inspection.findings, report.inspection.findings);
    assert_eq!(back.inspection.sla, report.inspection.sla);
    assert_eq!(
        (back.security, back.conclusion),
        (report.security, report.conclusion)
    );
}

#[test]
fn every_label_is_translated() {
    let t = Templates::builtin();
    let (en, zh) = (t.table("en").unwrap(), t.table("zh-CN").unwrap());
    assert_eq!(en.keys().collect::<Vec<_>>(), zh.keys().collect::<Vec<_>>());
    for (k, v) in zh {
        if v == &en[k] {
            // Only symbols, units and abbreviations may read the same.
            assert!(
                v.chars()
                    .all(|c| !c.is_ascii_lowercase() || k.starts_with("col.p")),
                "{k} not translated: {v}"
            );
        }
    }
}

#[test]
fn a_quiet_period_renders_with_its_gaps_said() {
    let mut r = sample::report("en");
    r.purpose.consent.clear();
    r.impact.hosts.clear();
    let host = &mut r.inspection.hosts[0];
    host.availability = crate::report::model::Availability {
        expected_ms: 0,
        online_ms: 0,
        percent: None,
        outages: vec![],
    };
    for t in &mut host.trends {
        (t.p50, t.p95, t.max) = (None, None, None);
        t.points.clear();
    }
    host.forecasts.clear();
    r.inspection.hosts.truncate(1);
    r.inspection.findings.items.clear();
    r.inspection.findings.by_category.clear();
    r.inspection
        .findings
        .by_level
        .iter_mut()
        .for_each(|l| l.1 = 0);
    r.inspection.sla = crate::report::model::SlaOutcome {
        met: 0,
        breached: 0,
        running: 0,
        met_percent: None,
        breaches: vec![],
    };
    r.security.findings.clear();
    r.security.auth_failures.clear();
    r.security.consent_expiring.clear();
    r.security.outdated.clear();
    r.conclusion.rules.clear();
    r.conclusion.recommendations.clear();
    r.conclusion.previous = None;
    let t = Templates::builtin();
    let html = render_html(&r, &t).unwrap();
    let md = render_markdown(&r, &t).unwrap();
    for doc in [&html, &md] {
        for key in [
            "label.no_findings",
            "label.previous_none",
            "label.nothing",
            "intro.rules_none",
        ] {
            assert!(doc.contains(&label("en", key)), "lacks {key}");
        }
    }
    // Nothing measured reads as a dash, never as 0%.
    assert!(
        md.contains("| web-01 | CPU utilisation | — | — | — |"),
        "{md}"
    );
    assert!(html.contains("<dt>p95</dt><dd>—</dd>"));
    assert_eq!(html.matches("<svg").count(), 1 + 5 + 1 + 1);
}

/// The text a reader sees: styles and charts dropped, tags (with their attributes) too.
fn visible_text(html: &str) -> String {
    let mut rest = html.to_owned();
    for (open, close) in [("<style>", "</style>"), ("<svg", "</svg>")] {
        while let Some(a) = rest.find(open) {
            let b = rest[a..]
                .find(close)
                .map_or(rest.len(), |b| a + b + close.len());
            rest.replace_range(a..b, " ");
        }
    }
    let mut text = String::new();
    let mut in_tag = false;
    for c in rest.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                text.push(' ');
            }
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    text
}

/// A report computed from inputs (not built by hand) renders in Chinese with every key the
/// data side emits translated: grading rules, reasons, recommendation kinds, severities,
/// consent changes... The sample covers the kinds this small input does not raise.
#[test]
fn a_computed_report_leaks_no_untranslated_keys_in_chinese() {
    use crate::report::compute::{self, DAY_MS, GradeFacts, HostInput, Inputs};
    use crate::store::{Bucket, HostStatus, LogCount, ROLLUP_STEP_MS, SeriesRollups};
    use aftercare_shared::consent::{Grant, Scope};

    let from = sample::FROM_MS;
    let to = from + 2 * DAY_MS;
    // CPU reported for the first half only: an outage, availability below 95%.
    let cpu = SeriesRollups {
        name: "cpu.usage".into(),
        labels: String::new(),
        kind: aftercare_shared::model::MetricKind::Gauge,
        buckets: (0..DAY_MS / ROLLUP_STEP_MS)
            .map(|k| Bucket {
                start: from + k * ROLLUP_STEP_MS,
                count: 1,
                min: 20.0,
                max: 20.0,
                sum: 20.0,
            })
            .collect(),
    };
    let mut status = HostStatus {
        // Expires within the month after the period: listed, and translated.
        cert_expires: Some(to + 10 * DAY_MS),
        id: 1,
        customer: "acme".into(),
        host: "db1".into(),
        first_seen: from - DAY_MS,
        last_seen: None,
        agent_version: "0.0.9".into(),
        consent: Default::default(),
        facts: Default::default(),
        connected: false,
        interval_ms: ROLLUP_STEP_MS as u64,
        online: false,
        dropped_batches: 0,
        dropped_samples: 0,
        discarded_by_revocation: 0,
        loss: Default::default(),
    };
    status.facts.kernel = "5.4.0-150-generic".into();
    status.consent.grants = vec![
        Grant {
            scope: Scope::Metrics,
            by: "ops".into(),
            at: from + DAY_MS / 2,
            until: None,
        },
        Grant {
            scope: Scope::Logs,
            by: "ops".into(),
            at: from - DAY_MS,
            until: Some(to + 10 * DAY_MS),
        },
    ];
    use aftercare_shared::model::Severity;
    let log_counts = [
        Severity::Emergency,
        Severity::Alert,
        Severity::Critical,
        Severity::Error,
        Severity::Warning,
    ]
    .into_iter()
    .map(|severity| LogCount {
        source: "kernel".into(),
        severity,
        count: 3,
    })
    .collect();
    let inputs = Inputs {
        customer: "acme".into(),
        from,
        to,
        metrics_to: to,
        judged_at: to,
        days: vec![from, from + DAY_MS, to],
        day_labels: vec![
            "2026-07-01".into(),
            "2026-07-02".into(),
            "2026-07-03".into(),
        ],
        hosts: vec![HostInput {
            status,
            series: vec![cpu],
            fine_from: from - DAY_MS,
            log_counts,
            auth_failures: vec![from + 3_600_000],
            diagnostics_run: 0,
        }],
        findings: Vec::new(),
        silences: Vec::new(),
        collector_version: "0.1.0".into(),
    };
    let policy = crate::sla::SlaPolicy::default();
    let (purpose, impact, inspection, security, mut conclusion) =
        compute::sections(&inputs, &policy, None);
    // The certificate that expires ten days after the period is listed.
    assert!(
        security
            .consent_expiring
            .iter()
            .any(|e| e.what == "certificate" && e.host == "db1"),
        "{:?}",
        security.consent_expiring
    );
    // Every reason the grader gives, from compute's own grader.
    let (grade, reasons) = compute::grade(&GradeFacts {
        open_l1: 1,
        open_l2: 1,
        findings: 3,
        breaches: 1,
        availability: Some(99.5),
        filling: vec!["/var".into(), "/data".into()],
    });
    conclusion.hosts.push(crate::report::model::HostGrade {
        host: "db2".into(),
        grade,
        reasons,
    });
    let mut report = sample::report("zh-CN");
    (
        report.purpose,
        report.impact,
        report.inspection,
        report.security,
        report.conclusion,
    ) = (purpose, impact, inspection, security, conclusion);
    let kinds: Vec<&str> = report
        .conclusion
        .recommendations
        .iter()
        .map(|r| r.kind.as_str())
        .collect();
    for k in [
        "availability",
        "outdated_agent",
        "outdated_kernel",
        "consent_expiring",
        "certificate_expiring",
    ] {
        assert!(kinds.contains(&k), "the input raises {k}: {kinds:?}");
    }
    assert!(report.conclusion.hosts[0].reasons[0].starts_with("availability_below_95="));

    let templates = Templates::builtin();
    let keys = [
        "open_l1",
        "open_l2",
        "availability_below",
        "sla_breach",
        "fs_full",
        "finding_in_period",
        "none_of_the_above",
        "worst_host",
        "outdated_",
        "consent_expiring",
        "certificate_expiring",
        "customer:",
        "D:",
        "C:",
        "B:",
        "A:",
        "emerg",
        "crit",
        "warning",
        "granted",
        "Upgrade",
        "Ask the customer",
        "Find the cause",
        "Review why",
        "Extend or clean",
    ];
    for r in [report, sample::report("zh-CN")] {
        let html = visible_text(&render_html(&r, &templates).unwrap());
        let md = render_markdown(&r, &templates).unwrap();
        for key in keys {
            assert!(!html.contains(key), "html shows `{key}`");
            assert!(!md.contains(key), "markdown shows `{key}`");
        }
        for zh in ["可用率低于 95%", "代理版本过旧", "D — "] {
            assert!(html.contains(zh) && md.contains(zh), "lacks {zh}");
        }
    }
}

/// Every grading rule compute states, and every recommendation kind, has a label in both
/// languages (the computed report above raises only some of the kinds).
#[test]
fn every_rule_and_recommendation_kind_has_a_label_in_both_languages() {
    let t = Templates::builtin();
    for lang in LANGUAGES {
        let table = t.table(lang).unwrap();
        for rule in crate::report::compute::GRADE_RULES {
            let key = rule.split_once(':').unwrap().1;
            assert!(
                table.contains_key(&format!("rule.{key}")),
                "{lang}: rule {key}"
            );
            if !rule.starts_with("A:") && !rule.starts_with("customer:") {
                assert!(
                    table.contains_key(&format!("reason.{key}")),
                    "{lang}: {key}"
                );
            }
        }
        for kind in [
            "finding",
            "sla_breach",
            "fs_full",
            "availability",
            "outdated_agent",
            "outdated_kernel",
            "consent_expiring",
            "certificate_expiring",
        ] {
            assert!(
                table.contains_key(&format!("kind.{kind}")),
                "{lang}: {kind}"
            );
            assert!(
                kind == "finding" || table.contains_key(&format!("advice.{kind}")),
                "{lang}: advice {kind}"
            );
        }
    }
}

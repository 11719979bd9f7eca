//! The web desk in a real headless Chromium (Debian's `chromium`): sign in with a token, see
//! the hosts, open a host and its charts drawn from a real agent's metrics, acknowledge a
//! finding, run a diagnostic on the agent, make a report; a screenshot of each step,
//! checked non-empty.

use aftercare_collector::api::token::{self, Role};
use aftercare_collector::findings::record::{Change, Clocks, FindingKey, Observed};
use aftercare_collector::store::AuditFilter;
use aftercare_shared::consent::Scope;
use aftercare_shared::time_fmt::now_millis;
use aftercare_tests::*;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Debian's chromium, or the one `CHROME` names.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROME") {
        return PathBuf::from(p);
    }
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "no Chromium found: the web desk is tested in a real headless Chromium. \
         Install Debian's package (`apt-get install chromium`; `.ci/run` does) or set CHROME"
    );
}

/// Poll a JavaScript expression until it is true (bounded); its last value on failure.
fn wait_js(tab: &Tab, what: &str, expr: &str, within: Duration) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < within {
        match tab.evaluate(expr, false) {
            Ok(r) if r.value == Some(serde_json::Value::Bool(true)) => return,
            Ok(r) => last = format!("{:?}", r.value),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let page = tab
        .evaluate("document.getElementById('view').innerText", false)
        .ok()
        .and_then(|r| r.value)
        .unwrap_or_default();
    panic!("{what}: not within {within:?} (last: {last}); the page shows:\n{page}");
}

fn text(tab: &Tab, expr: &str) -> String {
    tab.evaluate(expr, false)
        .ok()
        .and_then(|r| r.value)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A PNG of the page, saved for a person to look at and checked to be a real picture:
/// a PNG of the window's size with more than a few colours in it.
fn screenshot(tab: &Tab, dir: &Path, name: &str) {
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("screenshot");
    assert!(
        png.len() > 10_000,
        "{name}: screenshot of {} bytes",
        png.len()
    );
    let decoder = png::Decoder::new(std::io::Cursor::new(&png));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    assert!(info.width >= 1000 && info.height >= 600, "{name}: {info:?}");
    let px = info.color_type.samples();
    let colours: std::collections::HashSet<&[u8]> =
        buf[..info.buffer_size()].chunks(px).step_by(7).collect();
    assert!(
        colours.len() > 20,
        "{name}: only {} colours: a blank page",
        colours.len()
    );
    std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engineer_signs_in_reads_a_host_acknowledges_a_finding_runs_a_diagnostic_and_makes_a_report()
 {
    let chrome = chromium();
    let f = Fixture::new();
    let c = f.start().await;
    let certs = f.issue("a1", "acme", "db1");
    let cfg = f.agent_config("a1", &certs, c.addr);
    grant(&cfg, &[Scope::Metrics, Scope::Diagnostics]);
    let agent = start_agent(cfg);
    // Metrics for the charts: a few snapshots.
    eventually("metrics stored", PATIENCE, || {
        let mut st = f.store();
        let s = st.query("acme/db1", Some("cpu.usage"), 0, i64::MAX).ok()?;
        (s.iter().map(|s| s.points.len()).max().unwrap_or(0) >= 3).then_some(())
    })
    .await;
    let now = now_millis();
    let (secret, finding) = {
        let mut st = f.collector.database.open().unwrap();
        let host = st.hosts(now).unwrap()[0].id;
        let id = st
            .apply_finding(&Change::Open {
                key: FindingKey {
                    host,
                    rule: "fs-full".into(),
                    subject: "mount=/var".into(),
                },
                observed: Observed {
                    level: 2,
                    category: "capacity".into(),
                    title: "Filesystem /var nearly full".into(),
                    recommendation: "Free space or grow /var.".into(),
                    evidence: r#"{"summary":"/var 93% used"}"#.into(),
                    at: now,
                },
                clocks: Clocks {
                    from: now,
                    respond_by: None,
                    restore_by: None,
                },
            })
            .unwrap();
        let secret = token::issue(&mut *st, "ann", Role::Engineer, "test", now).unwrap();
        (secret, id)
    };
    let base = format!("http://{}", c.api);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-ui");
    std::fs::create_dir_all(&shots).unwrap();

    let browser_run = tokio::task::spawn_blocking(move || {
        let browser = Browser::new(
            LaunchOptions::default_builder()
                .path(Some(chrome))
                .headless(true)
                // Root in CI: Chromium's sandbox needs user namespaces it may not have.
                .sandbox(false)
                .window_size(Some((1280, 900)))
                .idle_browser_timeout(Duration::from_secs(90))
                .build()
                .unwrap(),
        )
        .expect("start headless Chromium");
        let tab: Arc<Tab> = browser.new_tab().expect("a tab");
        tab.set_default_timeout(Duration::from_secs(20));
        let wait = Duration::from_secs(20);

        // Sign in.
        tab.navigate_to(&base)
            .unwrap()
            .wait_until_navigated()
            .unwrap();
        tab.wait_for_element("#token").unwrap().click().unwrap();
        tab.type_str(&secret).unwrap();
        screenshot(&tab, &shots, "1-sign-in");
        tab.wait_for_element("#login-form button")
            .unwrap()
            .click()
            .unwrap();
        wait_js(
            &tab,
            "the hosts overview lists acme/db1 as online with its L2",
            "!!document.querySelector('#hosts-table tr[data-host=\"acme/db1\"] .lvl-L2') && \
             document.querySelector('#hosts-table').innerText.includes('online')",
            wait,
        );
        assert_eq!(
            text(&tab, "document.getElementById('who').innerText"),
            "ann (engineer)"
        );
        screenshot(&tab, &shots, "2-hosts");

        // Open the host: its CPU chart has a drawn line.
        tab.wait_for_element("#hosts-table a[href^='#/host/']")
            .unwrap()
            .click()
            .unwrap();
        // The last quarter of an hour, in 5-second steps: the agent (every second) has
        // drawn a line by now.
        tab.wait_for_element("a[href$='?range=15m']")
            .unwrap()
            .click()
            .unwrap();
        wait_js(
            &tab,
            "the host page draws its CPU chart",
            "(() => { const p = document.querySelector('.chart[data-chart=\"CPU busy\"] svg path'); \
               return !!p && p.getAttribute('d').split('L').length >= 2; })()",
            wait,
        );
        wait_js(
            &tab,
            "the memory and filesystem charts have lines",
            "['Memory used', 'Filesystems used'].every(t => \
               !!document.querySelector(`.chart[data-chart=\"${t}\"] svg path`))",
            wait,
        );
        screenshot(&tab, &shots, "3-host");

        // The finding: acknowledge it.
        tab.navigate_to(&format!("{base}/#/finding/{finding}"))
            .unwrap();
        tab.wait_for_element("#ack").unwrap().click().unwrap();
        wait_js(
            &tab,
            "the timeline shows the acknowledgement by ann",
            "document.getElementById('timeline')?.innerText.includes('ann') && \
             document.getElementById('ack')?.disabled === true",
            wait,
        );
        screenshot(&tab, &shots, "4-finding");

        // A diagnostic from the finding: filesystem usage on the agent.
        tab.navigate_to(&format!(
            "{base}/#/diagnostics?host=acme%2Fdb1&finding={finding}"
        ))
        .unwrap();
        wait_js(
            &tab,
            "the console lists the agent's probes",
            "[...document.querySelectorAll('#diag-probe option')].some(o => o.value === 'filesystems')",
            wait,
        );
        tab.evaluate(
            "(() => { const s = document.getElementById('diag-probe'); s.value = 'filesystems'; \
               s.dispatchEvent(new Event('change')); })()",
            false,
        )
        .unwrap();
        tab.wait_for_element("#diag-run").unwrap().click().unwrap();
        wait_js(
            &tab,
            "the diagnostic finishes and shows the root filesystem",
            "document.getElementById('diag-status')?.innerText === 'done' && \
             document.getElementById('diag-output')?.innerText.includes('/')",
            Duration::from_secs(30),
        );
        screenshot(&tab, &shots, "5-diagnostic");

        // A report of the last day, made from the desk, listed with its downloads.
        tab.navigate_to(&format!("{base}/#/reports")).unwrap();
        tab.wait_for_element("#report-form").unwrap();
        tab.evaluate(
            "(() => { const d = (t) => new Date(t).toISOString().slice(0, 10); \
               document.getElementById('report-from').value = d(Date.now() - 86400000); \
               document.getElementById('report-to').value = d(Date.now()); })()",
            false,
        )
        .unwrap();
        tab.wait_for_element("#report-form button")
            .unwrap()
            .click()
            .unwrap();
        wait_js(
            &tab,
            "the report is made and offers its downloads",
            "!!document.querySelector('#reports-table [data-download=\"pdf\"]')",
            Duration::from_secs(40),
        );
        screenshot(&tab, &shots, "6-reports");
    });
    tokio::time::timeout(Duration::from_secs(180), browser_run)
        .await
        .expect("the browser session ends in time")
        .expect("the browser session");

    // What the browser did is what the store holds.
    let mut st = f.store();
    let (row, timeline) = st.finding(finding).unwrap().unwrap();
    assert_eq!(row.acknowledged.as_ref().map(|a| a.1.as_str()), Some("ann"));
    assert!(timeline.iter().any(|e| e.by.as_deref() == Some("ann")));
    let runs = st.diagnostics_for_finding(finding).unwrap();
    assert_eq!(
        runs.iter()
            .map(|d| (d.probe.as_str(), d.requested_by.as_str()))
            .collect::<Vec<_>>(),
        [("filesystems", "ann")]
    );
    // The collector's audit trail has each of ann's actions.
    let audit = st
        .audit(&AuditFilter {
            since: 0,
            actor: Some("ann".into()),
            action: None,
            before_id: None,
            limit: 0,
        })
        .unwrap();
    let mut actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    actions.sort();
    assert_eq!(
        actions,
        ["diagnostic.request", "finding.ack", "report.generate"],
        "{audit:?}"
    );
    agent.shutdown().await;
    c.shutdown().await;
}

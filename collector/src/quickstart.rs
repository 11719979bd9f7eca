//! `quickstart`: a whole aftercare on this machine, in one local folder.
//!
//! It writes configs, creates the CA and an agent certificate, records demo consent through
//! the agent's own CLI, starts a collector here and the agent as a child process, and prints
//! this host's status, latest metrics and most recent error lines of the system log until
//! Ctrl-C (or `--duration`).

use crate::config::CollectorConfig;
use crate::findings::record::FindingFilter;
use crate::server::Collector;
use crate::store::Store;
use crate::{ca, store, view};
use aftercare_shared::time_fmt::now_millis;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The folder that holds everything (configs, CA, database, agent state, logs).
    #[arg(long, default_value = "demo")]
    pub dir: PathBuf,
    /// The agent binary (default: aftercare-agent next to this binary).
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// Stop by itself after this long (e.g. `45s`); default: run until Ctrl-C.
    #[arg(long)]
    pub duration: Option<humantime::Duration>,
    /// Collection interval of the demo agent.
    #[arg(long, default_value = "5s")]
    pub interval: humantime::Duration,
    /// Log files for the demo agent to follow (absolute paths or globs; repeatable).
    /// Default: this machine's system log (/var/log/syslog or /var/log/messages) and
    /// /var/log/*.log, those that exist.
    #[arg(long = "log", value_name = "PATH")]
    pub logs: Vec<String>,
}

/// The system logs a demo follows when none are named: the classic syslog files, and the
/// top-level logs of /var/log (on a journald-only machine, whichever packages write).
fn default_logs() -> Vec<String> {
    let mut v: Vec<String> = ["/var/log/syslog", "/var/log/messages"]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .map(String::from)
        .collect();
    v.push("/var/log/*.log".into());
    v
}

/// A TOML string literal (paths may hold quotes or backslashes).
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Kills the agent child however quickstart ends.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn stop(&mut self) {
        if let Some(mut c) = self.0.take() {
            // SIGTERM first: the agent closes its link cleanly.
            // SAFETY: kill(2) with a pid we spawned and have not reaped; no memory involved.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
            for _ in 0..50 {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn run(args: Args) -> Result<()> {
    let dir = absolute(&args.dir)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let agent_bin = match &args.agent {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary has no folder")?
            .join("aftercare-agent"),
    };
    if !agent_bin.exists() {
        bail!(
            "agent binary {} not found: build it with `cargo build --release -p aftercare-agent` or pass --agent",
            agent_bin.display()
        );
    }
    let host = hostname();
    let logs = if args.logs.is_empty() {
        default_logs()
    } else {
        args.logs.clone()
    };
    if let Some(bad) = logs.iter().find(|p| !p.starts_with('/')) {
        bail!("--log {bad}: log paths must be absolute (e.g. /var/log/syslog)");
    }
    let coll_cfg_path = dir.join("collector.toml");
    // The web desk at the usual address when it is free, so a bookmark keeps working;
    // any free port otherwise.
    let api_listen = if std::net::TcpListener::bind("127.0.0.1:7480").is_ok() {
        "127.0.0.1:7480"
    } else {
        "127.0.0.1:0"
    };
    std::fs::write(
        &coll_cfg_path,
        format!(
            "# Written by `aftercare-collector quickstart`.\n\
             data_dir = \"collector\"\n\
             listen = \"127.0.0.1:0\"\n\
             log_level = \"warn\"\n\
             [api]\n\
             listen = \"{api_listen}\"\n\
             [ingest]\n\
             compact_every = \"60s\"\n\
             [findings]\n\
             # Often, for a demo; the default is 30s.\n\
             evaluate_every = \"5s\"\n"
        ),
    )?;
    let cfg = CollectorConfig::load(&coll_cfg_path)?;
    crate::logging::init_to_file(&dir.join("collector.log"), "info")?;

    if !cfg.ca_dir().join("ca.crt").exists() {
        println!(
            "{}",
            ca::init_ca(
                &cfg.ca_dir(),
                &cfg.server_names,
                &ca::InitOptions::default()
            )?
        );
    }
    let cert_dir = dir.join("agent-cert");
    if !cert_dir.join("agent.crt").exists() {
        println!(
            "{}",
            ca::issue_agent_cert(
                &cfg.ca_dir(),
                "demo",
                &host,
                &cert_dir,
                ca::Validity::days_from_now(365)
            )?
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let collector = Collector::bind(&cfg)?;
        let addr = collector.local_addr();
        let web = collector.api_addr();
        let admin = demo_admin_token(&cfg)?;
        let agent_cfg = dir.join("agent.toml");
        std::fs::write(
            &agent_cfg,
            format!(
                "# Written by `aftercare-collector quickstart`.\n\
                 state_dir = \"agent-state\"\n\
                 interval = \"{}\"\n\
                 [collector]\n\
                 address = \"{addr}\"\n\
                 server_name = \"localhost\"\n\
                 ca = \"agent-cert/ca.crt\"\n\
                 cert = \"agent-cert/agent.crt\"\n\
                 key = \"agent-cert/agent.key\"\n\
                 \n\
                 [[logs]]\n\
                 name = \"system\"\n\
                 paths = [{}]\n\
                 start_at = \"beginning\"\n",
                args.interval,
                logs.iter().map(|p| toml_str(p)).collect::<Vec<_>>().join(", ")
            ),
        )?;
        // Consent through the agent's own CLI, as a customer's administrator would.
        let who = std::env::var("USER").unwrap_or_else(|_| "root".into());
        let out = Command::new(&agent_bin)
            .arg("--config")
            .arg(&agent_cfg)
            .args(["consent", "grant", "--scope", "metrics,logs,diagnostics", "--by"])
            .arg(format!("{who} (quickstart demo)"))
            .output()
            .with_context(|| format!("cannot run {}", agent_bin.display()))?;
        if !out.status.success() {
            bail!(
                "consent grant failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        print!("{}", String::from_utf8_lossy(&out.stdout));

        let shutdown = CancellationToken::new();
        let server = tokio::spawn(collector.run(shutdown.clone()));
        let log = std::fs::File::create(dir.join("agent.log"))?;
        let child = Command::new(&agent_bin)
            .arg("--config")
            .arg(&agent_cfg)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", agent_bin.display()))?;
        let mut guard = ChildGuard(Some(child));
        println!(
            "collector on udp {addr}, agent pid {}; everything is in {}\n\
             following: {}\n\
             logs: {}/collector.log, {}/agent.log — Ctrl-C stops both\n\n\
             web desk: http://{web}/  sign in with this admin token (shown once):\n  {admin}\n\
             API:      curl -H 'Authorization: Bearer {admin}' http://{web}/api/v1/hosts\n",
            guard.0.as_ref().map(|c| c.id()).unwrap_or(0),
            dir.display(),
            logs.join(" "),
            dir.display(),
            dir.display()
        );

        let deadline = args
            .duration
            .map(|d| tokio::time::Instant::now() + Duration::from(d));
        let mut tick = tokio::time::interval(Duration::from(args.interval).max(Duration::from_secs(2)));
        tick.tick().await;
        let mut shown_data = false;
        loop {
            tokio::select! {
                _ = wait_for_signal() => break,
                _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => break,
                _ = tick.tick() => {
                    if let Some(c) = guard.0.as_mut()
                        && let Ok(Some(status)) = c.try_wait()
                    {
                        guard.0 = None;
                        bail!("the agent exited ({status}); see {}/agent.log", dir.display());
                    }
                    shown_data |= print_status(&cfg, &host);
                }
            }
        }
        println!("\nstopping the agent and the collector…");
        guard.stop();
        shutdown.cancel();
        server.await??;
        if !shown_data {
            bail!("no metrics arrived; see {}/agent.log and collector.log", dir.display());
        }
        let report = demo_report(&cfg, &dir)?;
        println!(
            "inspection report of the demo period: {}\n  (also {} and {}; `aftercare-collector --config {} report list` shows every report)\n",
            report.display(),
            report.with_extension("md").display(),
            report.with_extension("json").display(),
            coll_cfg_path.display(),
        );
        println!(
            "stopped. Look again any time:\n  aftercare-collector --config {c} hosts\n  \
             aftercare-collector --config {c} metrics --host {host}\n  \
             aftercare-collector --config {c} logs --host {host} --severity warning --since 1h\n  \
             aftercare-collector --config {c} findings --all",
            c = coll_cfg_path.display(),
        );
        Ok(())
    })
}

/// Print hosts and this host's headline; true once its metrics are in the store.
fn print_status(cfg: &CollectorConfig, host: &str) -> bool {
    let Ok(mut st) = cfg.database.open_readonly() else {
        return false;
    };
    let now = now_millis();
    let Ok(hosts) = st.hosts(now) else {
        return false;
    };
    println!("── {} ──", aftercare_shared::time_fmt::rfc3339(now));
    print!("{}", view::hosts_table(&hosts, now));
    let series = st
        .query(&format!("demo/{host}"), None, now - 120_000, now + 1)
        .unwrap_or_default();
    let summary = view::host_summary(&series);
    if summary.is_empty() {
        println!("(waiting for the first metrics…)\n");
        return false;
    }
    println!("\n{summary}");
    let mut headline: Vec<_> = series
        .into_iter()
        .filter(|s| {
            s.labels.is_empty()
                && ["cpu.usage", "load.1", "mem.total", "mem.available"].contains(&s.name.as_str())
        })
        .collect();
    headline.sort_by(|a, b| a.name.cmp(&b.name));
    print!("{}", view::metrics_table(&headline));
    println!();
    print_errors(&mut *st, host);
    print_findings(&mut *st, cfg, host);
    true
}

/// The rules' open findings for this host, by level and SLA deadline.
fn print_findings(st: &mut dyn Store, cfg: &CollectorConfig, host: &str) {
    let filter = FindingFilter {
        open_only: true,
        host: Some(format!("demo/{host}")),
        ..Default::default()
    };
    let (Ok(rows), Ok(policy), Ok(silences)) = (
        st.findings(&filter),
        cfg.sla_policy(),
        st.silences(i64::MIN),
    ) else {
        return;
    };
    if rows.is_empty() {
        println!("findings: none open (the rules found nothing to flag on this host)\n");
    } else {
        println!("findings: {} open", rows.len());
        print!(
            "{}",
            crate::findings::view::findings_table(&rows, &policy, &silences, now_millis())
        );
        println!();
    }
}

/// The newest error lines of the followed logs (error or worse), and how many lines came.
fn print_errors(st: &mut dyn Store, host: &str) {
    const SHOWN: usize = 5;
    let id = format!("demo/{host}");
    let all = store::LogFilter {
        since: 0,
        until: i64::MAX,
        min_severity: None,
        grep: None,
        limit: usize::MAX,
    };
    let lines = st.count_logs(&id, &all).unwrap_or(0);
    let errors = st
        .logs(
            &id,
            &store::LogFilter {
                min_severity: Some(aftercare_shared::model::Severity::Error),
                limit: SHOWN,
                ..all
            },
        )
        .unwrap_or_default();
    if errors.is_empty() {
        println!("system log: {lines} lines stored, no error lines among them\n");
    } else {
        println!("system log: {lines} lines stored; the newest error lines:");
        print!("{}", view::logs_table(&errors));
        println!();
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A fresh admin token for this run of the demo; the previous runs' ones are revoked, so
/// only the token just printed works.
fn demo_admin_token(cfg: &CollectorConfig) -> Result<String> {
    use crate::api::token::{self, Role};
    use crate::store::TokenRow;
    let mut st = cfg.database.open()?;
    let now = now_millis();
    let old: Vec<TokenRow> = st
        .tokens()?
        .into_iter()
        .filter(|t| t.name.starts_with("demo-admin-"))
        .collect();
    for t in old.iter().filter(|t| t.revoked_at.is_none()) {
        st.revoke_token(&t.name, now)?;
    }
    let name = format!("demo-admin-{}", old.len() + 1);
    let secret = token::issue(&mut *st, &name, Role::Admin, "quickstart", now)?;
    Ok(secret)
}

/// The inspection report of everything the demo has seen, as the scheduler would make a
/// quarter's: recorded in the store, then written as HTML, Markdown and JSON beside the rest.
fn demo_report(cfg: &CollectorConfig, dir: &Path) -> Result<PathBuf> {
    use crate::report::record::{NewReport, Status};
    use crate::report::{job, period, render};
    let now = now_millis();
    let mut st = cfg.database.open()?;
    let first = st
        .hosts(now)?
        .iter()
        .filter(|h| h.customer == "demo")
        .map(|h| h.first_seen)
        .min()
        .context("no demo host in the store")?;
    let (lang, tz_name) = cfg.reports.for_customer("demo");
    let tz = period::zone(&tz_name)?;
    let label = |t: i64| {
        tz.to_datetime(jiff::Timestamp::from_millisecond(t).unwrap_or_default())
            .strftime("%Y-%m-%d %H:%M")
            .to_string()
    };
    let row = NewReport {
        customer: "demo".into(),
        from: first,
        to: now,
        label: format!("{}..{}", label(first), label(now)),
        lang,
        time_zone: tz_name,
        scheduled: false,
        requested_by: "quickstart".into(),
        created_at: now,
    };
    let id = st
        .add_report(&row)?
        .context("the report was not recorded")?;
    drop(st);
    let status = job::make(&cfg.database, &cfg.sla_policy()?, id, &row)?;
    let r = cfg
        .database
        .open_readonly()?
        .report(id)?
        .context("the report vanished")?;
    if status != Status::Done {
        bail!("the demo report failed: {}", r.message);
    }
    let report = job::decode(&r.data.unwrap_or_default()).map_err(anyhow::Error::msg)?;
    let t = render::load_templates(cfg.report_templates().as_deref())?;
    let html = dir.join("report.html");
    std::fs::write(&html, render::render_html(&report, &t)?)?;
    std::fs::write(dir.join("report.md"), render::render_markdown(&report, &t)?)?;
    std::fs::write(dir.join("report.json"), render::render_json(&report)?)?;
    Ok(html)
}

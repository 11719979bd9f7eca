//! `aftercare-agent`: the command line.

use aftercare_agent::audit::{AuditLog, Event};
use aftercare_agent::config::{AgentConfig, DEFAULT_CONFIG};
use aftercare_agent::consent::{self, scopes_str};
use aftercare_shared::consent::{Scope, parse_scopes};
use aftercare_shared::time_fmt::{self, now_millis};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// aftercare-agent gathers this server's health and, only with the consent recorded here by
/// the customer's administrator, streams it to the support company's collector over
/// mutual-TLS QUIC.
#[derive(Parser)]
#[command(
    version,
    about,
    long_about = None,
    after_help = "Examples:\n  \
      aftercare-agent consent grant --scope metrics --by \"Ann Li\" --until 2027-03-31\n  \
      aftercare-agent consent show\n  \
      aftercare-agent run --config /etc/aftercare/agent.toml\n  \
      aftercare-agent consent revoke            (stops sending within a second)\n  \
      aftercare-agent audit --since 24h\n  \
      aftercare-agent audit verify"
)]
struct Cli {
    /// Agent configuration file.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG, env = "AFTERCARE_AGENT_CONFIG")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent in the foreground (as the systemd service does).
    Run,
    /// Show, grant or revoke what this agent may send.
    #[command(subcommand)]
    Consent(ConsentCmd),
    /// What left this host, per scope and hour, consent changes and redaction counts;
    /// `audit verify` checks that no entry was edited, removed or reordered.
    Audit(AuditArgs),
    /// Inspect the on-disk spool of batches awaiting acknowledgement.
    #[command(subcommand)]
    Spool(SpoolCmd),
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct AuditArgs {
    #[command(subcommand)]
    command: Option<AuditCmd>,
    /// Only entries from this time on: a span back from now (90m, 24h, 7d), a date or an
    /// RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the hash chain: exits 0 when every entry verifies, otherwise names the first
    /// bad line and why (edited, missing or reordered, torn by a crash).
    Verify,
}

#[derive(Subcommand)]
enum SpoolCmd {
    /// Check every record of the spool offline (CRC, torn writes); per segment and stream:
    /// records, bytes, acknowledged or not. Exits non-zero if anything is damaged. Changes
    /// nothing.
    Verify,
}

#[derive(Subcommand)]
enum ConsentCmd {
    /// Allow scopes to leave this host, e.g. `consent grant --scope metrics,logs --by "Ann Li"`.
    Grant {
        /// Comma-separated: metrics, logs, diagnostics.
        #[arg(long)]
        scope: String,
        /// Who grants it (recorded, shown to the support company).
        #[arg(long)]
        by: String,
        /// End of consent: a date (through that day, UTC) or an RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
    },
    /// Withdraw scopes (all when --scope is not given). Takes effect within a second; data of
    /// those scopes not yet sent is deleted.
    Revoke {
        #[arg(long)]
        scope: Option<String>,
    },
    /// Print the consent record.
    Show {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = dispatch(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    let cfg = AgentConfig::load(&cli.config)?;
    match cli.command {
        Command::Run => run(cfg),
        Command::Consent(c) => consent_cmd(&cfg, c),
        Command::Audit(a) => audit_cmd(&cfg, a),
        Command::Spool(SpoolCmd::Verify) => spool_verify(&cfg),
    }
}

fn spool_verify(cfg: &AgentConfig) -> Result<()> {
    let dir = cfg.spool_dir();
    let rep = aftercare_agent::spool::verify::verify(&dir)
        .with_context(|| format!("cannot read the spool in {}", dir.display()))?;
    print!("{}", rep.render());
    match rep.damaged_segments() {
        0 => Ok(()),
        n => anyhow::bail!("{n} spool segment(s) damaged; their intact records are still sent"),
    }
}

fn run(cfg: AgentConfig) -> Result<()> {
    init_logging(&cfg.log_level);
    // One thread: the agent's work is a few milliseconds every interval (PROBES.md: the
    // multi-threaded runtime costs memory and a thread for nothing here).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            s.cancel();
        });
        aftercare_agent::run::run(cfg, shutdown).await
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn init_logging(level: &str) {
    let level = std::env::var("AFTERCARE_LOG").unwrap_or_else(|_| level.to_string());
    let level = level
        .parse::<tracing::Level>()
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
}

/// The customer's decision goes into the audit log too; the consent file stays the
/// authority, so a failure to record it is reported, not fatal.
fn record_audit(cfg: &AgentConfig, events: &[Event]) {
    if events.is_empty() {
        return;
    }
    if let Err(e) = AuditLog::new(&cfg.state_dir).append(now_millis(), events) {
        eprintln!("warning: not recorded in the audit log: {e}");
    }
}

fn consent_cmd(cfg: &AgentConfig, cmd: ConsentCmd) -> Result<()> {
    let path = cfg.consent_path();
    match cmd {
        ConsentCmd::Grant { scope, by, until } => {
            let scopes = parse_scopes(&scope)?;
            let until = until.as_deref().map(time_fmt::parse_until).transpose()?;
            let mut rec = consent::load(&path)?;
            rec.grant_scopes(&scopes, &by, time::OffsetDateTime::now_utc(), until)?;
            consent::store(&path, &rec)?;
            let events: Vec<Event> = scopes
                .iter()
                .map(|&scope| Event::ConsentGranted {
                    scope,
                    by: by.clone(),
                    until: until.map(time_fmt::from_offset),
                })
                .collect();
            record_audit(cfg, &events);
            println!(
                "granted {} by {by}{}; recorded in {}",
                scopes_str(&scopes),
                until
                    .map(|u| format!(" until {}", time_fmt::rfc3339(time_fmt::from_offset(u))))
                    .unwrap_or_default(),
                path.display()
            );
        }
        ConsentCmd::Revoke { scope } => {
            let scopes: Vec<Scope> = match scope {
                Some(s) => parse_scopes(&s)?,
                None => Vec::new(),
            };
            let mut rec = consent::load(&path)?;
            let removed = rec.revoke(&scopes);
            consent::store(&path, &rec)?;
            let events: Vec<Event> = removed
                .iter()
                .map(|&scope| Event::ConsentRevoked { scope })
                .collect();
            record_audit(cfg, &events);
            if removed.is_empty() {
                println!("nothing to revoke: {} was not granted", scopes_str(&scopes));
            } else {
                println!(
                    "revoked {}; a running agent stops sending it within a second and deletes its unsent data",
                    scopes_str(&removed)
                );
            }
        }
        ConsentCmd::Show { json } => {
            let rec = consent::load(&path)?;
            let now = now_millis();
            if json {
                let grants: Vec<String> = rec
                    .grants
                    .iter()
                    .map(|g| {
                        format!(
                            "{{\"scope\":\"{}\",\"by\":{},\"at\":\"{}\",\"until\":{},\"active\":{}}}",
                            g.scope,
                            json_str(&g.by),
                            time_fmt::rfc3339(g.at),
                            g.until
                                .map(|u| format!("\"{}\"", time_fmt::rfc3339(u)))
                                .unwrap_or_else(|| "null".into()),
                            g.active_at(now)
                        )
                    })
                    .collect();
                println!(
                    "{{\"file\":{},\"grants\":[{}]}}",
                    json_str(&path.display().to_string()),
                    grants.join(",")
                );
            } else {
                println!("consent file: {}", path.display());
                if rec.grants.is_empty() {
                    println!("nothing granted: this agent sends nothing");
                    return Ok(());
                }
                println!(
                    "{:<12} {:<8} {:<24} {:<21} until",
                    "scope", "state", "granted by", "at"
                );
                for g in &rec.grants {
                    println!(
                        "{:<12} {:<8} {:<24} {:<21} {}",
                        g.scope.as_str(),
                        if g.active_at(now) {
                            "active"
                        } else {
                            "expired"
                        },
                        g.by,
                        time_fmt::rfc3339(g.at),
                        g.until.map(time_fmt::rfc3339).unwrap_or_else(|| "-".into())
                    );
                }
            }
        }
    }
    Ok(())
}

fn audit_cmd(cfg: &AgentConfig, args: AuditArgs) -> Result<()> {
    let log = AuditLog::new(&cfg.state_dir);
    let path = log.path().display().to_string();
    if let Some(AuditCmd::Verify) = args.command {
        let v = log.verify()?;
        for line in &v.torn {
            println!(
                "line {line}: fragment of a write cut short by a crash; later entries chain past it"
            );
        }
        return match v.problem {
            None => {
                println!("{path}: {} entries verified", v.entries);
                Ok(())
            }
            Some(p) => anyhow::bail!("{path}: {p} ({} entries before it verified)", v.entries),
        };
    }
    let since = args
        .since
        .as_deref()
        .map(|s| time_fmt::parse_since(s, now_millis()))
        .transpose()?;
    let entries = log.read(since)?;
    if args.json {
        let items: Vec<String> = entries
            .iter()
            .map(|e| {
                let fields: Vec<String> = e
                    .fields
                    .iter()
                    .map(|(k, v)| {
                        let is_number = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
                        let v = if is_number { v.clone() } else { json_str(v) };
                        format!("{}:{v}", json_str(k))
                    })
                    .collect();
                format!(
                    "{{\"line\":{},\"at\":\"{}\",\"event\":{},\"fields\":{{{}}},\"hash\":\"{}\"}}",
                    e.line,
                    time_fmt::rfc3339(e.at),
                    json_str(&e.kind),
                    fields.join(","),
                    e.hash
                )
            })
            .collect();
        println!(
            "{{\"file\":{},\"entries\":[{}]}}",
            json_str(&path),
            items.join(",")
        );
        return Ok(());
    }
    println!("audit log: {path}");
    if entries.is_empty() {
        println!(
            "no entries{}",
            if since.is_some() {
                " in that period"
            } else {
                ""
            }
        );
        return Ok(());
    }
    println!("{:<21} {:<16} details", "time", "event");
    for e in &entries {
        println!(
            "{:<21} {:<16} {}",
            time_fmt::rfc3339(e.at),
            e.kind,
            e.details()
        );
    }
    Ok(())
}

/// A JSON string literal. (serde_json would cost the agent binary size for this one use.)
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

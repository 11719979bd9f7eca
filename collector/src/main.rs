//! `aftercare-collector`: the command line.

use aftercare_collector::config::{CollectorConfig, DEFAULT_CONFIG};
use aftercare_collector::findings::{self, lifecycle, record::Change, record::FindingFilter};
use aftercare_collector::store::Store;
use aftercare_collector::{ca, client, quickstart, server, store, view};
use aftercare_shared::model::Severity;
use aftercare_shared::time_fmt::{self, now_millis};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// glibc's malloc took a quarter of the collector's CPU while it took back thousands of
/// agents at once: TLS and QUIC allocate per handshake and per packet. (The agent keeps
/// glibc's, which is smaller on a host; see PROBES.md.)
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// aftercare-collector is the support company's central service: it receives consented
/// health data from aftercare agents over mutual-TLS QUIC, stores it, and shows it to
/// support engineers.
#[derive(Parser)]
#[command(
    version,
    about,
    long_about = None,
    after_help = "Examples:\n  \
      aftercare-collector ca init\n  \
      aftercare-collector cert issue --customer acme --host db1 --out ./db1\n  \
      aftercare-collector serve\n  \
      aftercare-collector hosts\n  \
      aftercare-collector metrics --host acme/db1 --metric cpu. --since 1h\n  \
      aftercare-collector logs --host acme/db1 --severity error --since 24h\n  \
      aftercare-collector logs --host acme/db1 --grep '(?i)oom' --since 7d --count\n  \
      aftercare-collector findings\n  \
      aftercare-collector findings ack 12 --by ann\n  \
      AFTERCARE_TOKEN=act_... aftercare-collector findings --url http://collector:8443\n  \
      aftercare-collector audit --since 7d\n  \
      aftercare-collector silence add --customer acme --host db1 --for 2h --reason 'disk swap' --by ann\n  \
      aftercare-collector token create --name ann --role engineer --by admin\n  \
      aftercare-collector diagnose --host acme/db1 filesystems --finding 12\n  \
      aftercare-collector report generate --customer acme --quarter 2026-Q3 --format pdf\n  \
      aftercare-collector quickstart --dir ./demo     (everything on this machine)"
)]
struct Cli {
    /// Collector configuration file (all keys have defaults).
    #[arg(long, global = true, default_value = DEFAULT_CONFIG, env = "AFTERCARE_COLLECTOR_CONFIG")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector in the foreground (as the systemd service does).
    Serve,
    /// The support company's certificate authority.
    #[command(subcommand)]
    Ca(CaCmd),
    /// Agent certificates.
    #[command(subcommand)]
    Cert(CertCmd),
    /// List hosts: customer, host, online or not, last seen, agent version, consent, and
    /// the loss its agent reported by scope (batches dropped because the agent's buffer was
    /// full, batches discarded when consent was revoked).
    Hosts {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a host's metrics: per series the latest value and min/avg/max over the window
    /// (rates per second for counters).
    Metrics {
        /// `host` or `customer/host`.
        #[arg(long)]
        host: String,
        /// A metric name, or a prefix such as `cpu.` or `fs.*`.
        #[arg(long)]
        metric: Option<String>,
        /// Start of the window: a span back from now (`15m`, `24h`, `7d`), a date or an
        /// RFC 3339 time.
        #[arg(long, default_value = "15m")]
        since: String,
        /// Print every point as JSON instead of the summary table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a host's log lines, oldest first: the newest `--limit` that match.
    Logs {
        /// `host` or `customer/host`.
        #[arg(long)]
        host: String,
        /// Only lines matching this regular expression (e.g. `(?i)ext4|xfs`).
        #[arg(long)]
        grep: Option<String>,
        /// Only lines at least this severe: emerg, alert, crit, error, warning, notice,
        /// info, debug.
        #[arg(long)]
        severity: Option<String>,
        /// Start of the window: a span back from now (`15m`, `24h`, `7d`), a date or an
        /// RFC 3339 time.
        #[arg(long, default_value = "1h")]
        since: String,
        /// At most this many lines (the newest).
        #[arg(long, default_value_t = 200)]
        limit: usize,
        /// Print only how many lines match (all of them: no limit).
        #[arg(long, conflicts_with = "limit")]
        count: bool,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Preventive-maintenance findings: open ones by level and SLA deadline (default), one
    /// with its timeline (`show ID`), or an engineer's acknowledgement or resolution.
    Findings {
        #[command(subcommand)]
        action: Option<FindingsCmd>,
        /// Resolved findings too (of the last `--since`).
        #[arg(long)]
        all: bool,
        /// Only this customer's.
        #[arg(long)]
        customer: Option<String>,
        /// Only this host's (`host` or `customer/host`).
        #[arg(long)]
        host: Option<String>,
        /// With `--all`: how far back resolved findings go (`7d`, a date...).
        #[arg(long, default_value = "30d")]
        since: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// The audit trail of changes (API calls and this command line's), newest first.
    Audit {
        /// How far back (`24h`, `7d`, a date...).
        #[arg(long, default_value = "7d")]
        since: String,
        #[arg(long)]
        json: bool,
    },
    /// API tokens for engineers' tools: shown once at creation, kept only as a hash.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Maintenance windows: findings of a customer's hosts (or one host) still record, but
    /// notify nobody, and their SLA clocks start when the window ends.
    #[command(subcommand)]
    Silence(SilenceCmd),
    /// Everything on this machine in one folder: CA, certificates, consent, a collector and
    /// an agent, then this host's live status. Ctrl-C stops both.
    Quickstart(quickstart::Args),
    /// Run a probe on a host's agent and print what it returned. The agent runs it only
    /// with its customer's `diagnostics` consent and if the probe is in its own allow-list;
    /// both sides record it. Asks the collector's API (`--url`, or `[api] listen` of the
    /// config on the collector itself) with an engineer's token.
    /// Inspection reports: list them, write one out, or make one now (with progress).
    /// Without --url they are read from and made in this collector's database.
    Report {
        #[command(subcommand)]
        cmd: ReportCmd,
        #[command(flatten)]
        remote: Remote,
    },
    Diagnose {
        /// `customer/host`.
        #[arg(long)]
        host: Option<String>,
        /// The probe (`--list` shows the ones the host offers).
        probe: Option<String>,
        /// A value the probe declares, `NAME=VALUE` (repeat for more).
        #[arg(long = "arg", value_name = "NAME=VALUE")]
        args: Vec<String>,
        /// Link the result to this finding.
        #[arg(long)]
        finding: Option<i64>,
        /// List the probes the host's agent offers, and whether its consent allows them.
        #[arg(long)]
        list: bool,
        /// Show an earlier diagnostic by its id.
        #[arg(long, value_name = "ID")]
        show: Option<i64>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum ReportCmd {
    /// Reports, newest first: period, status (progress while made), who asked.
    List {
        #[arg(long)]
        customer: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Write a made report: Markdown to the terminal by default, or a file.
    Show {
        id: i64,
        /// html, pdf, md or json.
        #[arg(long, default_value = "md")]
        format: String,
        /// Write here instead of to standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Make a report now and write it out: the last ended quarter by default.
    Generate {
        #[arg(long)]
        customer: String,
        /// `2026-Q3`, in the customer's zone.
        #[arg(long, conflicts_with_all = ["from", "to"])]
        quarter: Option<String>,
        /// First day (2026-07-01) or RFC 3339 time; with --to.
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// Last day included, or an RFC 3339 end; with --from.
        #[arg(long, requires = "from")]
        to: Option<String>,
        /// en or zh-CN (default: the customer's, from [reports]).
        #[arg(long)]
        lang: Option<String>,
        /// html, pdf, md or json.
        #[arg(long, default_value = "html")]
        format: String,
        /// Where to write it (default: aftercare-<customer>-<period>.<format> here).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Who asks (recorded on the report; with --url the token's name is).
        #[arg(long)]
        by: Option<String>,
    },
}

/// Ask a running collector's API instead of reading the local database.
#[derive(clap::Args, Clone, Default)]
struct Remote {
    /// A running collector's API, e.g. `http://collector:8443`: ask it instead of reading
    /// the local database (the token comes from AFTERCARE_TOKEN or --token-file).
    #[arg(long, env = "AFTERCARE_URL", global = true)]
    url: Option<String>,
    /// A file holding the API token (instead of the AFTERCARE_TOKEN variable).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
}

impl Remote {
    /// A client when `--url` is given.
    fn client(&self) -> Result<Option<client::Client>> {
        self.client_or("")
    }

    /// A client of `--url`, or of `default` when that is not empty.
    fn client_or(&self, default: &str) -> Result<Option<client::Client>> {
        let url = self
            .url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or(default);
        if url.is_empty() {
            return Ok(None);
        }
        let token = client::token(
            self.token_file.as_deref(),
            std::env::var(client::TOKEN_ENV).ok(),
        )?;
        Ok(Some(client::Client::new(url.trim(), token)))
    }
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token and print it (once: only its hash is kept).
    Create {
        /// Who or what uses it; recorded with every change it makes.
        #[arg(long)]
        name: String,
        /// viewer (reads), engineer (also acknowledges, resolves, diagnoses), admin (also
        /// manages tokens, silences and contracts).
        #[arg(long)]
        role: String,
        /// Who creates it.
        #[arg(long)]
        by: String,
    },
    /// Every token with its role, and when it was revoked.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Stop a token working at once.
    Revoke {
        name: String,
        /// Who revokes it (for the audit trail; default $USER).
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Subcommand)]
enum SilenceCmd {
    /// Open a window: now (or `--from`) for `--for`, or until `--until`.
    Add {
        #[arg(long)]
        customer: String,
        /// One host of the customer; default every host.
        #[arg(long)]
        host: Option<String>,
        /// Start: an RFC 3339 time or a date; default now.
        #[arg(long)]
        from: Option<String>,
        /// Length, e.g. `2h`, `90m`.
        #[arg(long, conflicts_with = "until", required_unless_present = "until")]
        r#for: Option<humantime::Duration>,
        /// End: an RFC 3339 time, or a date (through its end, UTC).
        #[arg(long)]
        until: Option<String>,
        /// What the maintenance is (shown with the window).
        #[arg(long)]
        reason: String,
        #[arg(long)]
        by: String,
    },
    /// Windows not yet over (`--all`: also those that ended in the last 30 days).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// End a window now.
    End {
        id: i64,
        /// Who ends it (for the audit trail; default $USER).
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Subcommand)]
enum FindingsCmd {
    /// One finding: evidence, SLA deadlines on its contract's calendar, and its timeline.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Take a finding on: stops its respond clock.
    Ack {
        id: i64,
        /// Who (recorded on the timeline; with --url the token's name is).
        #[arg(long)]
        by: Option<String>,
    },
    /// Close a finding, saying what was done: stops its restore clock.
    Resolve {
        id: i64,
        /// Who (with --url the token's name is).
        #[arg(long)]
        by: Option<String>,
        /// What was done (the resolution note the contract asks for).
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(Subcommand)]
enum CaCmd {
    /// Create the CA and the collector's server certificate in `<data_dir>/ca`.
    Init {
        /// Replace an existing CA (every agent certificate it issued stops working).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum CertCmd {
    /// Issue a key and certificate for one agent, naming its customer and host.
    Issue {
        #[arg(long)]
        customer: String,
        #[arg(long)]
        host: String,
        /// Folder to write agent.crt, agent.key and ca.crt into.
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
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
    if let Command::Quickstart(args) = cli.command {
        return quickstart::run(args);
    }
    // With --url the command asks a collector's API: no local configuration is read.
    if let Some(remote) = remote_of(&cli.command)
        && let Some(c) = remote.client()?
    {
        return over_api(&c, cli.command);
    }
    let cfg = CollectorConfig::load(&cli.config)?;
    match cli.command {
        cmd @ Command::Diagnose { .. } => {
            // On the collector itself: its own API.
            let remote = remote_of(&cmd).cloned().unwrap_or_default();
            let c = remote
                .client_or(&format!("http://{}", cfg.api.listen))?
                .context("no API address")?;
            over_api(&c, cmd)
        }
        Command::Serve => serve(cfg),
        Command::Report { cmd, .. } => report_local(&cfg, cmd),
        Command::Ca(CaCmd::Init { force }) => {
            let s = ca::init_ca(
                &cfg.ca_dir(),
                &cfg.server_names,
                &ca::InitOptions {
                    force,
                    ..Default::default()
                },
            )?;
            println!("{s}");
            Ok(())
        }
        Command::Cert(CertCmd::Issue {
            customer,
            host,
            out,
            days,
        }) => {
            let issued = ca::issue_agent_cert(
                &cfg.ca_dir(),
                &customer,
                &host,
                &out,
                ca::Validity::days_from_now(i64::from(days)),
            )?;
            println!("{issued}");
            Ok(())
        }
        Command::Hosts { json, .. } => {
            let mut st = cfg.database.open_readonly()?;
            let now = now_millis();
            let hosts = st.hosts(now)?;
            if json {
                // The API's form of a host, so scripts read the same with or without --url.
                let open = aftercare_collector::api::hosts::open_by_host(&st.findings(
                    &FindingFilter {
                        open_only: true,
                        since: i64::MIN,
                        ..Default::default()
                    },
                )?);
                let v: Vec<_> = hosts
                    .iter()
                    .map(|h| {
                        aftercare_collector::api::hosts::host_json(h, open.get(&h.full_name()), now)
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", view::hosts_table(&hosts, now));
            }
            Ok(())
        }
        Command::Metrics {
            host,
            metric,
            since,
            json,
            ..
        } => {
            let now = now_millis();
            let since = time_fmt::parse_since(&since, now)?;
            let mut st = cfg.database.open_readonly()?;
            let series = st.query(&host, metric.as_deref(), since, now + 1)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&series)?);
            } else {
                print!("{}", view::metrics_table(&series));
            }
            Ok(())
        }
        Command::Logs {
            host,
            grep,
            severity,
            since,
            limit,
            count,
            json,
            ..
        } => {
            let now = now_millis();
            let grep = grep
                .map(|g| {
                    regex::Regex::new(&g)
                        .with_context(|| format!("--grep '{g}' is not a valid regular expression"))
                })
                .transpose()?;
            let min_severity = severity
                .map(|s| {
                    Severity::parse(&s).with_context(|| {
                        format!(
                            "unknown severity '{s}': use emerg, alert, crit, error, warning, notice, info or debug"
                        )
                    })
                })
                .transpose()?;
            let filter = store::LogFilter {
                since: time_fmt::parse_since(&since, now)?,
                until: i64::MAX,
                min_severity,
                grep,
                limit,
            };
            let mut st = cfg.database.open_readonly()?;
            if count {
                let n = st.count_logs(&host, &filter)?;
                if json {
                    println!("{}", serde_json::json!({ "count": n }));
                } else {
                    println!("{n}");
                }
                return Ok(());
            }
            let records = st.logs(&host, &filter)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else {
                print!("{}", view::logs_table(&records));
            }
            Ok(())
        }
        Command::Findings {
            action,
            all,
            customer,
            host,
            since,
            json,
            ..
        } => {
            let now = now_millis();
            let mut policy = cfg.sla_policy()?;
            match action {
                None => {
                    let filter = FindingFilter {
                        open_only: !all,
                        customer,
                        host,
                        since: if all {
                            time_fmt::parse_since(&since, now)?
                        } else {
                            i64::MIN
                        },
                    };
                    let mut st = cfg.database.open_readonly()?;
                    policy = store::sla_in_force(&policy, &mut *st)?.0;
                    let rows = st.findings(&filter)?;
                    let silences = st.silences(i64::MIN)?;
                    if json {
                        let out: Vec<_> = rows
                            .iter()
                            .map(|f| findings::view::finding_json(f, &policy, &silences, now, None))
                            .collect();
                        println!("{}", serde_json::to_string_pretty(&out)?);
                    } else {
                        print!(
                            "{}",
                            findings::view::findings_table(&rows, &policy, &silences, now)
                        );
                    }
                }
                Some(FindingsCmd::Show { id, json }) => {
                    let mut st = cfg.database.open_readonly()?;
                    policy = store::sla_in_force(&policy, &mut *st)?.0;
                    let (f, timeline) = st
                        .finding(id)?
                        .ok_or(store::StoreError::NoSuchFinding(id))?;
                    let silences = st.silences(i64::MIN)?;
                    if json {
                        let v = findings::view::finding_json(
                            &f,
                            &policy,
                            &silences,
                            now,
                            Some(&timeline),
                        );
                        println!("{}", serde_json::to_string_pretty(&v)?);
                    } else {
                        print!(
                            "{}",
                            findings::view::finding_detail(&f, &timeline, &policy, &silences, now)
                        );
                    }
                }
                Some(FindingsCmd::Ack { id, by }) => {
                    let by = by.context("say who you are: --by NAME")?;
                    let mut st = open_for_writing(&cfg)?;
                    audited(
                        &mut *st,
                        &by,
                        "finding.ack",
                        &format!("finding/{id}"),
                        serde_json::json!({}),
                        |st| {
                            let (f, _) = st
                                .finding(id)?
                                .ok_or(store::StoreError::NoSuchFinding(id))?;
                            let acked_by = f.acknowledged.as_ref().map(|a| a.1.as_str());
                            let event = lifecycle::acknowledge(&f.current(), acked_by, &by, now)?;
                            st.apply_finding(&Change::Act { id, event })?;
                            Ok(())
                        },
                    )?;
                    println!(
                        "finding {id} acknowledged by {}: its respond clock stopped",
                        by.trim()
                    );
                }
                Some(FindingsCmd::Resolve { id, by, note }) => {
                    let by = by.context("say who you are: --by NAME")?;
                    let mut st = open_for_writing(&cfg)?;
                    audited(
                        &mut *st,
                        &by,
                        "finding.resolve",
                        &format!("finding/{id}"),
                        serde_json::json!({ "note": note }),
                        |st| {
                            let (f, _) = st
                                .finding(id)?
                                .ok_or(store::StoreError::NoSuchFinding(id))?;
                            let event =
                                lifecycle::resolve(&f.current(), &by, note.as_deref(), now)?;
                            st.apply_finding(&Change::Act { id, event })?;
                            Ok(())
                        },
                    )?;
                    println!("finding {id} resolved by {}: its clocks stopped", by.trim());
                }
            }
            Ok(())
        }
        Command::Audit { since, json } => audit(&cfg, &since, json),
        Command::Silence(cmd) => silence(&cfg, cmd),
        Command::Token(cmd) => token(&cfg, cmd),
        Command::Quickstart(_) => unreachable!("handled above"),
    }
}

fn token(cfg: &CollectorConfig, cmd: TokenCmd) -> Result<()> {
    use aftercare_collector::api::token::{self, Role};
    let now = now_millis();
    match cmd {
        TokenCmd::Create { name, role, by } => {
            token::valid_name(name.trim()).map_err(anyhow::Error::msg)?;
            let role = Role::parse(&role).with_context(|| {
                format!("--role '{role}' is not a role: use viewer, engineer or admin")
            })?;
            anyhow::ensure!(!by.trim().is_empty(), "say who you are: --by NAME");
            let mut st = open_for_writing(cfg)?;
            let secret = audited(
                &mut *st,
                &by,
                "token.create",
                &format!("token/{}", name.trim()),
                serde_json::json!({ "name": name.trim(), "role": role.as_str() }),
                |st| Ok(token::issue(st, name.trim(), role, by.trim(), now)?),
            )?;
            println!("{secret}");
            eprintln!(
                "token '{}' ({}) created: the line above is shown this once; keep it in a file only its user can read",
                name.trim(),
                role.as_str()
            );
        }
        TokenCmd::List { json } => {
            let mut st = cfg.database.open_readonly()?;
            let list = st.tokens()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!(
                    "no tokens: `aftercare-collector token create --name N --role viewer --by YOU`"
                );
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            t.role.as_str().into(),
                            time_fmt::rfc3339(t.created_at),
                            t.created_by.clone(),
                            t.revoked_at.map_or_else(
                                || "active".into(),
                                |r| format!("revoked {}", time_fmt::rfc3339(r)),
                            ),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    view::table(&["NAME", "ROLE", "CREATED", "BY", "STATE"], &rows)
                );
            }
        }
        TokenCmd::Revoke { name, by } => {
            let mut st = open_for_writing(cfg)?;
            audited(
                &mut *st,
                &who(by),
                "token.revoke",
                &format!("token/{}", name.trim()),
                serde_json::json!({}),
                |st| Ok(st.revoke_token(name.trim(), now)?),
            )?;
            println!("token '{}' revoked", name.trim());
        }
    }
    Ok(())
}

fn silence(cfg: &CollectorConfig, cmd: SilenceCmd) -> Result<()> {
    let now = now_millis();
    match cmd {
        SilenceCmd::Add {
            customer,
            host,
            from,
            r#for,
            until,
            reason,
            by,
        } => {
            let starts = match from {
                Some(f) => time_fmt::parse_since(&f, now)?,
                None => now,
            };
            let ends = match (r#for, until) {
                (Some(d), _) => starts + std::time::Duration::from(d).as_millis() as i64,
                (None, Some(u)) => time_fmt::from_offset(time_fmt::parse_until(&u)?),
                (None, None) => anyhow::bail!("say how long: --for 2h or --until TIME"),
            };
            anyhow::ensure!(ends > starts, "the window ends before it starts");
            anyhow::ensure!(!customer.trim().is_empty(), "--customer must not be empty");
            anyhow::ensure!(
                !reason.trim().is_empty(),
                "--reason must say what the maintenance is"
            );
            anyhow::ensure!(!by.trim().is_empty(), "say who you are: --by NAME");
            let mut st = open_for_writing(cfg)?;
            let detail = serde_json::json!({
                "customer": customer.trim(), "host": host, "from": time_fmt::rfc3339(starts),
                "until": time_fmt::rfc3339(ends), "reason": reason.trim(),
            });
            let target = match &host {
                Some(h) => format!("host/{}/{}", customer.trim(), h.trim()),
                None => format!("customer/{}", customer.trim()),
            };
            let id = audited(&mut *st, &by, "silence.add", &target, detail, |st| {
                Ok(st.add_silence(&findings::record::Silence {
                    id: 0,
                    customer: customer.trim().into(),
                    host: host.map(|h| h.trim().to_string()),
                    starts,
                    ends,
                    reason: reason.trim().into(),
                    created_by: by.trim().into(),
                    created_at: now,
                })?)
            })?;
            println!(
                "maintenance window {id}: {} to {}; findings record, nobody is notified, SLA clocks wait",
                time_fmt::rfc3339(starts),
                time_fmt::rfc3339(ends)
            );
        }
        SilenceCmd::List { all, json } => {
            let mut st = cfg.database.open_readonly()?;
            let after = if all { now - 30 * 86_400_000 } else { now };
            let list = st.silences(after)?;
            if json {
                let v: Vec<_> = list
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "id": s.id, "customer": s.customer, "host": s.host,
                            "starts": time_fmt::rfc3339(s.starts), "ends": time_fmt::rfc3339(s.ends),
                            "reason": s.reason, "by": s.created_by,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if list.is_empty() {
                println!("no maintenance windows");
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|s| {
                        vec![
                            s.id.to_string(),
                            s.customer.clone(),
                            s.host.clone().unwrap_or_else(|| "(all hosts)".into()),
                            time_fmt::rfc3339(s.starts),
                            time_fmt::rfc3339(s.ends),
                            if s.starts <= now && now < s.ends {
                                "active"
                            } else if now < s.starts {
                                "planned"
                            } else {
                                "over"
                            }
                            .into(),
                            s.created_by.clone(),
                            s.reason.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    view::table(
                        &[
                            "ID", "CUSTOMER", "HOST", "FROM", "UNTIL", "NOW", "BY", "REASON"
                        ],
                        &rows
                    )
                );
            }
        }
        SilenceCmd::End { id, by } => {
            let mut st = open_for_writing(cfg)?;
            audited(
                &mut *st,
                &who(by),
                "silence.end",
                &format!("silence/{id}"),
                serde_json::json!({}),
                |st| Ok(st.end_silence(id, now)?),
            )?;
            println!("maintenance window {id} ended");
        }
    }
    Ok(())
}

/// Who runs this command, when not said: the login name.
fn who(by: Option<String>) -> String {
    by.filter(|b| !b.trim().is_empty())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Do `change` and write it to the audit trail as `cli:<by>` (role `local`), whether it
/// worked or not.
fn audited<T>(
    st: &mut dyn Store,
    by: &str,
    action: &str,
    target: &str,
    detail: serde_json::Value,
    change: impl FnOnce(&mut dyn Store) -> Result<T>,
) -> Result<T> {
    let out = change(st);
    let outcome = match &out {
        Ok(_) => "ok".to_string(),
        Err(e) => match e.downcast_ref::<store::StoreError>() {
            Some(store::StoreError::NoSuchFinding(_)) => "unknown_finding".into(),
            Some(store::StoreError::Invalid(_)) => "conflict".into(),
            _ if e.downcast_ref::<lifecycle::ActionError>().is_some() => "conflict".into(),
            _ => "error".into(),
        },
    };
    st.add_audit(&store::AuditRow {
        id: 0,
        at: now_millis(),
        actor: format!("cli:{}", by.trim()),
        role: "local".into(),
        action: action.into(),
        target: target.into(),
        outcome,
        detail: aftercare_collector::api::server::audit_detail(detail.to_string().as_bytes()),
    })
    .context("cannot write the audit trail")?;
    out
}

fn audit(cfg: &CollectorConfig, since: &str, json: bool) -> Result<()> {
    let now = now_millis();
    let since = time_fmt::parse_since(since, now)?;
    let mut st = cfg.database.open_readonly()?;
    let rows = st.audit(&store::AuditFilter {
        since,
        ..Default::default()
    })?;
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(aftercare_collector::api::admin::audit_json)
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", view::audit_table(&rows));
    }
    Ok(())
}

/// The `--url` of commands that can ask a collector's API.
fn remote_of(c: &Command) -> Option<&Remote> {
    match c {
        Command::Hosts { remote, .. }
        | Command::Metrics { remote, .. }
        | Command::Logs { remote, .. }
        | Command::Findings { remote, .. }
        | Command::Diagnose { remote, .. }
        | Command::Report { remote, .. } => Some(remote),
        _ => None,
    }
}

/// `customer/host` as the API's path: `/hosts/customer/host`.
fn host_path(host: &str) -> Result<String> {
    match host.split_once('/') {
        Some((c, h)) if !c.is_empty() && !h.is_empty() && !h.contains('/') => {
            Ok(format!("/hosts/{c}/{h}"))
        }
        _ => anyhow::bail!("with --url, name the host as customer/host (got '{host}')"),
    }
}

/// A command answered by a collector's API.
fn over_api(c: &client::Client, cmd: Command) -> Result<()> {
    let now = now_millis();
    let pretty = |v: &serde_json::Value| -> Result<()> {
        println!("{}", serde_json::to_string_pretty(v)?);
        Ok(())
    };
    match cmd {
        Command::Hosts { json, .. } => {
            let items = c.get_all("/hosts", &[])?;
            if json {
                pretty(&serde_json::Value::Array(items))?;
            } else {
                print!("{}", view::api_hosts_table(&items, now));
            }
        }
        Command::Metrics {
            host,
            metric,
            since,
            json,
            ..
        } => {
            let mut q = vec![("from", since)];
            if let Some(m) = metric {
                q.push(("metric", m));
            }
            let v = c.get(&format!("{}/metrics", host_path(&host)?), &q)?;
            if json {
                pretty(&v)?;
            } else {
                print!("{}", view::api_metrics_table(&v));
            }
        }
        Command::Logs {
            host,
            grep,
            severity,
            since,
            limit,
            count,
            json,
            ..
        } => {
            anyhow::ensure!(
                !count,
                "--count reads the collector's database; without --url on the collector, or page with --limit"
            );
            let mut q = vec![("since", since)];
            if let Some(g) = grep {
                q.push(("regex", g));
            }
            if let Some(s) = severity {
                q.push(("severity", s));
            }
            let path = format!("{}/logs", host_path(&host)?);
            // Newest first, page by page, until `limit` lines.
            let mut items: Vec<serde_json::Value> = Vec::new();
            let mut cursor: Option<String> = None;
            while items.len() < limit {
                let mut q = q.clone();
                q.push(("limit", (limit - items.len()).min(1000).to_string()));
                if let Some(cur) = &cursor {
                    q.push(("cursor", cur.clone()));
                }
                let page = c.get(&path, &q)?;
                items.extend(page["items"].as_array().cloned().unwrap_or_default());
                match page["next_cursor"].as_str() {
                    Some(n) => cursor = Some(n.to_string()),
                    None => break,
                }
            }
            // Oldest first, as without --url.
            items.reverse();
            if json {
                pretty(&serde_json::Value::Array(items))?;
            } else {
                print!("{}", view::logs_table(&view::api_log_records(&items)));
            }
        }
        Command::Findings {
            action,
            all,
            customer,
            host,
            json,
            ..
        } => match action {
            None => {
                let mut q = vec![("state", if all { "all" } else { "open" }.to_string())];
                if let Some(cu) = customer {
                    q.push(("customer", cu));
                }
                if let Some(h) = host {
                    q.push(("host", h));
                }
                let items = c.get_all("/findings", &q)?;
                if json {
                    pretty(&serde_json::Value::Array(items))?;
                } else {
                    print!("{}", view::api_findings_table(&items, now));
                }
            }
            Some(FindingsCmd::Show { id, json }) => {
                let v = c.get(&format!("/findings/{id}"), &[])?;
                if json {
                    pretty(&v)?;
                } else {
                    print!("{}", view::api_finding_detail(&v, now));
                }
            }
            Some(FindingsCmd::Ack { id, .. }) => {
                c.post(&format!("/findings/{id}/ack"), &serde_json::json!({}))?;
                println!("finding {id} acknowledged: its respond clock stopped");
            }
            Some(FindingsCmd::Resolve { id, note, .. }) => {
                c.post(
                    &format!("/findings/{id}/resolve"),
                    &serde_json::json!({ "note": note }),
                )?;
                println!("finding {id} resolved: its clocks stopped");
            }
        },
        Command::Diagnose {
            host,
            probe,
            args,
            finding,
            list,
            show,
            json,
            ..
        } => diagnose(c, host, probe, args, finding, list, show, json)?,
        Command::Report { cmd, .. } => report_over_api(c, cmd)?,
        _ => unreachable!("only commands with --url come here"),
    }
    Ok(())
}

/// `diagnose`: list a host's probes, show an earlier run, or run one and wait for it.
#[allow(clippy::too_many_arguments)] // the subcommand's flags, as clap gives them
fn diagnose(
    c: &client::Client,
    host: Option<String>,
    probe: Option<String>,
    args: Vec<String>,
    finding: Option<i64>,
    list: bool,
    show: Option<i64>,
    json: bool,
) -> Result<()> {
    let print = |v: &serde_json::Value| -> Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(v)?);
        } else {
            print!("{}", view::api_diagnostic(v));
        }
        Ok(())
    };
    if let Some(id) = show {
        return print(&c.get(&format!("/diagnostics/{id}"), &[])?);
    }
    let host = host.context("name the host: --host customer/host")?;
    let path = host_path(&host)?;
    if list {
        let v = c.get(&format!("{path}/probes"), &[])?;
        if json {
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            print!("{}", view::api_probes(&host, &v));
        }
        return Ok(());
    }
    let probe = probe.context("name a probe (`--list` shows the ones the host offers)")?;
    let mut values = serde_json::Map::new();
    for a in &args {
        let (k, v) = a
            .split_once('=')
            .with_context(|| format!("--arg {a}: write it as NAME=VALUE"))?;
        values.insert(k.to_string(), serde_json::Value::String(v.to_string()));
    }
    let mut body = serde_json::json!({ "probe": probe, "args": values });
    if let Some(f) = finding {
        body["finding"] = f.into();
    }
    let started = c.post(&format!("{path}/diagnostics"), &body)?;
    let id = started["id"]
        .as_i64()
        .context("the collector did not say which diagnostic it started")?;
    // The collector bounds every run by the probe's own limit; this only guards against a
    // collector that stops answering.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15 * 60);
    let done = loop {
        let v = c.get(&format!("/diagnostics/{id}"), &[])?;
        if v["status"] != "pending" {
            break v;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "diagnostic {id} is still pending; `diagnose --show {id}` shows it later"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    print(&done)?;
    match done["status"].as_str() {
        Some("done") => Ok(()),
        _ => anyhow::bail!(
            "diagnostic {id}: {}",
            done["message"].as_str().unwrap_or("did not run")
        ),
    }
}

/// The database for an engineer's action: it must exist (`serve` creates it).
fn open_for_writing(cfg: &CollectorConfig) -> Result<Box<dyn Store>> {
    Ok(cfg.database.open_existing()?)
}

fn serve(cfg: CollectorConfig) -> Result<()> {
    aftercare_collector::logging::init(&cfg.log_level);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let collector = server::Collector::bind(&cfg)?;
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        tokio::spawn(async move {
            quickstart::wait_for_signal().await;
            s.cancel();
        });
        collector.run(shutdown).await
    })
}

const REPORT_FORMATS: [&str; 4] = ["html", "pdf", "md", "json"];

fn check_format(format: &str) -> Result<()> {
    anyhow::ensure!(
        REPORT_FORMATS.contains(&format),
        "--format {format}: use html, pdf, md or json"
    );
    Ok(())
}

/// Write `bytes` to `out`, or to standard output when there is none.
fn write_out(bytes: &[u8], out: Option<&std::path::Path>) -> Result<()> {
    use std::io::Write as _;
    match out {
        Some(p) => {
            std::fs::write(p, bytes).with_context(|| format!("cannot write {}", p.display()))?;
            eprintln!("wrote {}", p.display());
        }
        None => std::io::stdout().write_all(bytes)?,
    }
    Ok(())
}

/// A stored report rendered as `format`.
fn render_report(cfg: &CollectorConfig, data: &[u8], format: &str) -> Result<Vec<u8>> {
    use aftercare_collector::report::{job, render};
    let report = job::decode(data).map_err(anyhow::Error::msg)?;
    if format == "json" {
        return Ok(render::render_json(&report)?.into_bytes());
    }
    let t = render::load_templates(cfg.report_templates().as_deref())?;
    Ok(match format {
        "md" => render::render_markdown(&report, &t)?.into_bytes(),
        "pdf" => render::render_pdf(&render::render_html(&report, &t)?, None)?,
        _ => render::render_html(&report, &t)?.into_bytes(),
    })
}

/// Progress on the terminal while a report is made: `making report 7: 45 %`.
fn show_progress(id: i64, pct: u8) {
    use std::io::Write as _;
    eprint!("\rmaking report {id}: {pct:>3} %");
    let _ = std::io::stderr().flush();
}

fn report_local(cfg: &CollectorConfig, cmd: ReportCmd) -> Result<()> {
    use aftercare_collector::report::record::{NewReport, Status};
    use aftercare_collector::report::{job, period};
    match cmd {
        ReportCmd::List { customer, json } => {
            let mut st = cfg.database.open_readonly()?;
            let rows = st.reports(customer.as_deref(), 0, None)?;
            let items: Vec<serde_json::Value> = rows
                .iter()
                .map(aftercare_collector::api::reports::report_json)
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                print!("{}", view::api_reports_table(&items));
            }
        }
        ReportCmd::Show { id, format, out } => {
            check_format(&format)?;
            let mut st = cfg.database.open_readonly()?;
            let r = st.report(id)?.with_context(|| format!("no report {id}"))?;
            let data = match (r.status, r.data) {
                (Status::Done, Some(d)) => d,
                (Status::Running, _) => {
                    anyhow::bail!("report {id} is still being made ({} %)", r.progress)
                }
                _ => anyhow::bail!("report {id} failed: {}", r.message),
            };
            write_out(&render_report(cfg, &data, &format)?, out.as_deref())?;
        }
        ReportCmd::Generate {
            customer,
            quarter,
            from,
            to,
            lang,
            format,
            out,
            by,
        } => {
            check_format(&format)?;
            let (default_lang, tz_name) = cfg.reports.for_customer(&customer);
            let lang = lang.unwrap_or(default_lang);
            anyhow::ensure!(
                aftercare_collector::report::LANGS.contains(&lang.as_str()),
                "--lang {lang}: reports are written in en or zh-CN"
            );
            let tz = period::zone(&tz_name)?;
            let p = match (quarter, from, to) {
                (Some(q), _, _) => period::parse_quarter(&q, &tz)?,
                (None, Some(f), Some(t)) => period::between(&f, &t, &tz)?,
                _ => period::last_ended_quarter(now_millis(), &tz),
            };
            let by = by
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "cli".into());
            let row = NewReport {
                customer: customer.clone(),
                from: p.from,
                to: p.to,
                label: p.label,
                lang,
                time_zone: tz_name,
                scheduled: false,
                requested_by: format!("cli:{by}"),
                created_at: now_millis(),
            };
            let mut st = open_for_writing(cfg)?;
            anyhow::ensure!(
                st.hosts(now_millis())?
                    .iter()
                    .any(|h| h.customer == customer),
                "customer '{customer}': no host of it has connected (`aftercare-collector hosts` lists them)"
            );
            let id = st
                .add_report(&row)?
                .context("the report was not recorded")?;
            // Made on this thread's side; the terminal follows its row.
            let policy = cfg.sla_policy()?;
            let db = cfg.database.clone();
            let r = row.clone();
            let maker = std::thread::spawn(move || job::make(&db, &policy, id, &r));
            let mut watch = cfg.database.open_readonly()?;
            while !maker.is_finished() {
                if let Some(r) = watch.reports(None, 1, Some(id + 1))?.first() {
                    show_progress(id, r.progress);
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            let status = maker
                .join()
                .map_err(|_| anyhow::anyhow!("the report maker panicked"))??;
            show_progress(id, 100);
            eprintln!();
            let r = watch.report(id)?.context("the report vanished")?;
            anyhow::ensure!(status == Status::Done, "report {id} failed: {}", r.message);
            let out = out.unwrap_or_else(|| {
                PathBuf::from(aftercare_collector::api::reports::file_name(
                    &r.customer,
                    &r.label,
                    &format,
                ))
            });
            write_out(
                &render_report(cfg, &r.data.unwrap_or_default(), &format)?,
                Some(&out),
            )?;
        }
    }
    Ok(())
}

fn report_over_api(c: &client::Client, cmd: ReportCmd) -> Result<()> {
    match cmd {
        ReportCmd::List { customer, json } => {
            let mut q = Vec::new();
            if let Some(cu) = customer {
                q.push(("customer", cu));
            }
            let items = c.get_all("/reports", &q)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                print!("{}", view::api_reports_table(&items));
            }
        }
        ReportCmd::Show { id, format, out } => {
            check_format(&format)?;
            let bytes = c.get_bytes(
                &format!("/reports/{id}/download"),
                &[("format", format.clone())],
            )?;
            write_out(&bytes, out.as_deref())?;
        }
        ReportCmd::Generate {
            customer,
            quarter,
            from,
            to,
            lang,
            format,
            out,
            ..
        } => {
            check_format(&format)?;
            let mut body = serde_json::json!({ "customer": customer });
            for (k, v) in [
                ("quarter", quarter),
                ("from", from),
                ("to", to),
                ("lang", lang),
            ] {
                if let Some(v) = v {
                    body[k] = v.into();
                }
            }
            let id = c.post("/reports", &body)?["id"]
                .as_i64()
                .context("the collector did not say which report it started")?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30 * 60);
            let done = loop {
                let v = c.get(&format!("/reports/{id}"), &[])?;
                show_progress(id, v["progress"].as_u64().unwrap_or(0).min(100) as u8);
                if v["status"] != "running" {
                    eprintln!();
                    break v;
                }
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "report {id} is still being made; `report show {id}` fetches it later"
                );
                std::thread::sleep(std::time::Duration::from_millis(300));
            };
            anyhow::ensure!(
                done["status"] == "done",
                "report {id} failed: {}",
                done["message"].as_str().unwrap_or("")
            );
            // The same name the local command and the API's download give.
            let name = aftercare_collector::api::reports::file_name(
                done["customer"].as_str().unwrap_or("customer"),
                done["period"]["label"].as_str().unwrap_or("period"),
                &format,
            );
            let bytes = c.get_bytes(&format!("/reports/{id}/download"), &[("format", format)])?;
            write_out(&bytes, Some(&out.unwrap_or_else(|| PathBuf::from(name))))?;
        }
    }
    Ok(())
}

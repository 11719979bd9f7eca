//! `serve`: open the store, start the writer, bind the QUIC endpoint, run ingest until told
//! to stop, then shut down in order (stop accepting, drain acknowledgements, stop the writer).

use crate::config::CollectorConfig;
use crate::findings::engine::{Engine, EngineThread};
use crate::ingest::{self, IngestOptions};
use crate::notify::Notifier;
use crate::store::Store;
use crate::writer::{self, Request, WriterOptions};
use anyhow::{Context, Result};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// A bound, not yet running collector. Binding first lets callers (tests, quickstart) learn
/// the port before anything connects.
pub struct Collector {
    pub endpoint: quinn::Endpoint,
    api: tokio::net::TcpListener,
    store: Box<dyn Store>,
    /// Session tickets made and used, for `/metrics`.
    tickets: std::sync::Arc<crate::tls::tickets::TicketCounts>,
    cfg: CollectorConfig,
    rules: crate::rules::RuleSet,
    sla: crate::sla::SlaPolicy,
}

impl Collector {
    pub fn bind(cfg: &CollectorConfig) -> Result<Self> {
        // The database first: once `bind` returns, it exists at the current schema, so
        // readers (CLI, tests) can open it at once.
        let mut store = crate::store::off_runtime(|| cfg.database.open())
            .with_context(|| format!("cannot open database {}", cfg.database))?;
        // A bad rule or contract stops the start, naming it.
        let rules = cfg.rule_set()?;
        let sla = cfg.sla_policy()?;
        let (server, tickets) = crate::tls::load_quinn_server_config(
            &crate::tls::ServerTlsFiles::in_dir(&cfg.ca_dir()),
        )
        .with_context(|| {
            format!(
                "cannot load the collector's TLS identity from {}",
                cfg.ca_dir().display()
            )
        })?;
        let files = crate::tls::ServerTlsFiles::in_dir(&cfg.ca_dir());
        let secret = std::fs::read(&files.key)
            .with_context(|| format!("cannot read {}", files.key.display()))?;
        let endpoint = crate::net::server_endpoint(cfg.listen, server, &secret)
            .with_context(|| format!("cannot listen on udp {}", cfg.listen))?;
        let api = std::net::TcpListener::bind(cfg.api.listen)
            .and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            })
            .with_context(|| {
                format!(
                    "cannot listen for the API on tcp {} (api.listen in the config)",
                    cfg.api.listen
                )
            })?;
        // This collector, among others sharing the database: named by where it listens.
        let holder = crate::cluster::holder_id(endpoint.local_addr()?);
        store.set_node(&holder);
        crate::store::off_runtime(|| -> Result<()> {
            // Connections of a previous run here (perhaps one that crashed) are gone.
            store.disconnect_all(aftercare_shared::time_fmt::now_millis())?;
            // So are the diagnostics they were running: their answers can no longer arrive.
            store.abandon_diagnostics(
                aftercare_shared::time_fmt::now_millis(),
                "the collector restarted before the agent answered",
            )?;
            Ok(())
        })?;
        Ok(Collector {
            tickets,
            endpoint,
            api,
            store,
            cfg: cfg.clone(),
            rules,
            sla,
        })
    }

    /// Where the HTTP API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.api
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .expect("bound endpoint has an address")
    }

    /// Run until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let listen = self.local_addr();
        let ing = &self.cfg.ingest;
        // This collector's own health, served at /metrics.
        let telemetry = std::sync::Arc::new(crate::telemetry::Telemetry::new());
        telemetry.watch_tickets(self.tickets.clone());
        let (writer, join) = writer::spawn(
            self.store,
            WriterOptions {
                max_batches_per_commit: ing.max_batches_per_commit,
                queue_depth: ing.queue_depth,
                compact_every: ing.compact_every,
                retention: self.cfg.retention.to_store(),
                telemetry: telemetry.clone(),
            },
        );
        telemetry.watch_writer_queue(writer.queue_probe());
        // Findings: their own thread and database handle, so evaluation never holds up
        // ingest's writer.
        let (rules, sla, reopen_within) = (self.rules, self.sla, self.cfg.findings.reopen_within);
        let (findings_store, engine) = crate::store::off_runtime(|| -> Result<_> {
            let mut st = self.cfg.database.open()?;
            let engine = Engine::new(rules, sla, reopen_within, &mut *st);
            Ok((st, engine))
        })?;
        let notifier = if self.cfg.webhooks.is_empty() {
            None
        } else {
            Some(Notifier::start(&self.cfg.webhooks).context("cannot start the webhooks")?)
        };
        let findings = EngineThread::spawn(
            engine,
            findings_store,
            self.cfg.findings.evaluate_every,
            notifier,
            crate::cluster::holder_id(listen),
            telemetry.clone(),
        )
        .context("cannot start the findings thread")?;
        // Quarterly reports: their own thread; each customer's quarter made once.
        let reports = if self.cfg.reports.schedule {
            let holder = crate::cluster::holder_id(listen);
            let (db, sla, cfg, stop) = (
                self.cfg.database.clone(),
                self.cfg.sla_policy()?,
                self.cfg.reports.clone(),
                shutdown.clone(),
            );
            Some(
                std::thread::Builder::new()
                    .name("reports".into())
                    .spawn(move || {
                        crate::report::job::run_scheduler(&db, &sla, &cfg, &stop, &holder)
                    })
                    .context("cannot start the reports thread")?,
            )
        } else {
            None
        };
        let api_addr = self.api.local_addr().ok();
        // Live agent connections: ingest registers them, diagnostics reach agents through them.
        let links = crate::diagnose::Links::new();
        let diagnose = crate::diagnose::Diagnose::new(
            links.clone(),
            self.cfg.database.clone(),
            crate::cluster::holder_id(listen),
            self.cfg.max_frame_bytes,
            shutdown.clone(),
        );
        // Requests made on another collector sharing the database, for hosts connected here.
        let shared = self.cfg.database.sqlite_path().is_none();
        let pick_up = shared.then(|| tokio::spawn(diagnose.clone().pick_up()));
        let api = {
            let router = crate::api::server::router(crate::api::server::ApiState {
                database: self.cfg.database.clone(),
                sla: std::sync::Arc::new(self.cfg.sla_policy()?),
                retention: self.cfg.retention.to_store(),
                diagnose: diagnose.clone(),
                reports: std::sync::Arc::new(self.cfg.reports.clone()),
                templates: self.cfg.report_templates(),
            })
            .merge(crate::web::router())
            .merge(crate::telemetry::router(telemetry.clone()));
            let stop = shutdown.clone();
            let listener = self.api;
            tokio::spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!("the HTTP API stopped: {e}");
                }
            })
        };
        info!(
            listen = %listen,
            api = ?api_addr,
            database = %self.cfg.database,
            "aftercare-collector {} serving", aftercare_shared::VERSION
        );
        // Compaction also runs when no batch arrives to wake the writer.
        let ticker = {
            let writer = writer.clone();
            let every = ing.compact_every;
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let mut t = tokio::time::interval(every);
                t.tick().await;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = t.tick() => if writer.send(Request::Compact).await.is_err() { break },
                    }
                }
            })
        };
        ingest::serve(
            self.endpoint,
            writer,
            IngestOptions {
                max_frame: self.cfg.max_frame_bytes,
                admission: ingest::Admission::new(ing.max_connecting),
                links,
                telemetry,
                share_probes: shared,
                going_away: ingest::GoingAway::new(ing.return_rate),
            },
            shutdown,
        )
        .await;
        let _ = ticker.await;
        let _ = api.await;
        if let Some(p) = pick_up {
            let _ = p.await;
        }
        diagnose.drain(std::time::Duration::from_secs(2)).await;
        tokio::task::spawn_blocking(move || findings.stop())
            .await
            .ok();
        if let Some(r) = reports {
            // It stops between reports; one being made is finished and stored first.
            tokio::task::spawn_blocking(move || r.join()).await.ok();
        }
        // Every writer handle is gone now; the writer commits what is queued and stops.
        tokio::task::spawn_blocking(move || join.join()).await.ok();
        info!("aftercare-collector stopped");
        Ok(())
    }
}

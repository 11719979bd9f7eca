//! `serve`: open the store, start the writer, bind the QUIC endpoint, run ingest until told
//! to stop, then shut down in order (stop accepting, drain acknowledgements, stop the writer).

use crate::config::CollectorConfig;
use crate::ingest::{self, IngestOptions};
use crate::writer::{self, Request, WriterOptions};
use anyhow::{Context, Result};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// A bound, not yet running collector. Binding first lets callers (tests, quickstart) learn
/// the port before anything connects.
pub struct Collector {
    pub endpoint: quinn::Endpoint,
    cfg: CollectorConfig,
}

impl Collector {
    pub fn bind(cfg: &CollectorConfig) -> Result<Self> {
        let server = crate::tls::load_quinn_server_config(&crate::tls::ServerTlsFiles::in_dir(&cfg.ca_dir())).with_context(|| {
            format!(
                "cannot load the collector's TLS identity from {}",
                cfg.ca_dir().display()
            )
        })?;
        let endpoint = crate::net::server_endpoint(cfg.listen, server)
            .with_context(|| format!("cannot listen on udp {}", cfg.listen))?;
        Ok(Collector {
            endpoint,
            cfg: cfg.clone(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr().expect("bound endpoint has an address")
    }

    /// Run until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let store = crate::store::open_sqlite(&self.cfg.database)
            .with_context(|| format!("cannot open database {}", self.cfg.database.display()))?;
        let ing = &self.cfg.ingest;
        let (writer, join) = writer::spawn(
            Box::new(store),
            WriterOptions {
                max_batches_per_commit: ing.max_batches_per_commit,
                queue_depth: ing.queue_depth,
                compact_every: ing.compact_every,
            },
        );
        info!(
            listen = %self.local_addr(),
            database = %self.cfg.database.display(),
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
            },
            shutdown,
        )
        .await;
        let _ = ticker.await;
        // Every writer handle is gone now; the writer commits what is queued and stops.
        tokio::task::spawn_blocking(move || join.join())
            .await
            .ok();
        info!("aftercare-collector stopped");
        Ok(())
    }
}

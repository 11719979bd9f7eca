//! The log side of the agent, on a thread of its own: the driver reads, the pipeline makes
//! records, and each chunk of records goes to the run loop with the note it must be spooled
//! with (the tailer's positions just past the chunk's lines).
//!
//! A thread, not a task: reading, parsing and redacting a busy log costs a core's worth of
//! microseconds per line, and on the run loop's thread it would delay acknowledgements
//! and sends. The channel is bounded, so a slow spool or a full link slows reading rather
//! than growing memory. Lines are handed over (acknowledged to the tailer) chunk by chunk,
//! in order; the run loop appends a chunk with its note in one spool record, so after a
//! kill -9 the newest record tells exactly where to resume, whatever was on the way.

use super::checkpoint;
use super::config::LogSource;
use super::driver::{DriverConfig, LogDriver};
use super::pipeline::{Out, Pipeline};
use super::redact::RuleSet;
use super::tailer::FilePosition;
use aftercare_shared::model::LogRecord;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info_span, warn};

/// Records for one batch and the checkpoint note that goes with them.
#[derive(Debug)]
pub struct Chunk {
    pub records: Vec<LogRecord>,
    /// Checkpoint text (`logs::checkpoint` format) of the positions past these records.
    pub note: Vec<u8>,
    /// Redaction counts per rule since the previous chunk.
    pub redacted: Vec<(String, u64)>,
    /// Encoded size estimate, bytes.
    pub bytes: usize,
}

pub struct ReaderConfig {
    pub sources: Vec<LogSource>,
    pub rules: Arc<RuleSet>,
    pub driver: DriverConfig,
    /// Where to resume; `None`: each source's `start_at`.
    pub checkpoint: Option<Vec<FilePosition>>,
    /// A chunk closes at about this many encoded bytes (under the frame limit).
    pub chunk_bytes: usize,
    pub local: time::UtcOffset,
}

pub struct Reader {
    pub chunks: mpsc::Receiver<Chunk>,
    cancel: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reader {
    /// Start reading. Errors in the sources' patterns or starting the watcher are returned
    /// here, before the thread starts.
    pub fn start(cfg: ReaderConfig) -> Result<Reader, super::driver::DriverError> {
        let driver = LogDriver::new(&cfg.sources, cfg.driver.clone(), cfg.checkpoint.clone())?;
        let (tx, rx) = mpsc::channel(2);
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("aftercare-logs".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        error!("cannot start the log reader's runtime: {e}");
                        return;
                    }
                };
                rt.block_on(read_loop(cfg, driver, tx, c).instrument(info_span!("logs")));
            })
            .map_err(|e| super::driver::DriverError::Thread(e.to_string()))?;
        Ok(Reader {
            chunks: rx,
            cancel,
            thread: Some(thread),
        })
    }

    /// Stop reading and wait for the thread (it stops within one bounded read).
    pub fn stop(mut self) {
        self.cancel.cancel();
        self.chunks.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn read_loop(
    cfg: ReaderConfig,
    mut driver: LogDriver,
    tx: mpsc::Sender<Chunk>,
    cancel: CancellationToken,
) {
    let mut pipeline = Pipeline::new(&cfg.sources, cfg.rules.clone(), cfg.local);
    let mut out: Vec<Out> = Vec::new();
    let mut housekeeping = tokio::time::interval(Duration::from_secs(60));
    loop {
        let deadline = pipeline.deadline();
        tokio::select! {
            _ = cancel.cancelled() => return,
            lines = driver.next_lines() => {
                pipeline.push(std::time::Instant::now(), time::OffsetDateTime::now_utc(), lines, &mut out);
            }
            _ = async { tokio::time::sleep_until(tokio::time::Instant::from_std(deadline.expect("guarded"))).await }, if deadline.is_some() => {
                pipeline.poll_timeouts(std::time::Instant::now(), time::OffsetDateTime::now_utc(), &mut out);
            }
            _ = housekeeping.tick() => {
                pipeline.forget_idle(std::time::Instant::now(), Duration::from_secs(600));
            }
        }
        if out.is_empty() {
            continue;
        }
        // Chunks under the size limit, each acknowledged to the tailer before its note is
        // taken, so the note covers exactly the chunk's lines and those before.
        let mut rest = std::mem::take(&mut out).into_iter().peekable();
        while rest.peek().is_some() {
            let mut records = Vec::new();
            let mut bytes = 0;
            while let Some(o) = rest.next_if(|_| bytes < cfg.chunk_bytes) {
                bytes += estimate(&o.record);
                driver.ack(o.source, o.file, o.end);
                records.push(o.record);
            }
            let note = checkpoint::encode(&driver.positions()).into_bytes();
            let chunk = Chunk {
                records,
                note,
                redacted: pipeline.take_redaction_counts(),
                bytes,
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                sent = tx.send(chunk) => if sent.is_err() {
                    warn!("log reader: the run loop is gone; stopping");
                    return;
                }
            }
        }
    }
}

/// About what a record takes in a frame (bincode: lengths are varints).
pub fn estimate(r: &LogRecord) -> usize {
    r.line.len() + r.source.len() + r.file.len() + 32
}

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
use super::pipeline::{Emit, Emitted, Pipeline};
use super::redact::RuleSet;
use super::tailer::FilePosition;
use aftercare_shared::logblock::{self, BlockWriter, RecordRef};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info_span, warn};

/// Records for one batch, as a log block, and the checkpoint note that goes with them.
#[derive(Debug)]
pub struct Chunk {
    /// `aftercare_shared::logblock`, compressed if `compressed`. Compression is a third of
    /// the agent's work per line; whichever of the two threads has time does it: the
    /// reader when the run loop is behind (it would only wait), else the run loop.
    pub block: Vec<u8>,
    pub compressed: bool,
    pub records: u32,
    /// Checkpoint text (`logs::checkpoint` format) of the positions past these records.
    pub note: Vec<u8>,
    /// Redaction counts per rule since the previous chunk.
    pub redacted: Vec<(String, u64)>,
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
    let mut housekeeping = tokio::time::interval(Duration::from_secs(60));
    let mut block = BlockWriter::new();
    loop {
        let deadline = pipeline.deadline();
        let woke = tokio::select! {
            _ = cancel.cancelled() => return,
            lines = driver.next_lines() => Woke::Lines(lines),
            _ = async { tokio::time::sleep_until(tokio::time::Instant::from_std(deadline.expect("guarded"))).await }, if deadline.is_some() => Woke::Timeout,
            _ = housekeeping.tick() => Woke::Housekeeping,
        };
        let mut batcher = Batcher {
            driver: &mut driver,
            block: &mut block,
            chunk_bytes: cfg.chunk_bytes,
            done: Vec::new(),
        };
        let now = std::time::Instant::now();
        match woke {
            Woke::Lines(lines) => {
                pipeline.push(now, time::OffsetDateTime::now_utc(), lines, &mut batcher)
            }
            Woke::Timeout => {
                pipeline.poll_timeouts(now, time::OffsetDateTime::now_utc(), &mut batcher)
            }
            Woke::Housekeeping => pipeline.forget_idle(now, Duration::from_secs(600)),
        }
        // What was read goes out now, the last chunk under the size too.
        batcher.close();
        let mut chunks = batcher.done;
        if let Some(last) = chunks.last_mut() {
            last.redacted = pipeline.take_redaction_counts();
        }
        for mut chunk in chunks {
            if tx.capacity() == 0 {
                // The run loop is behind: compress here rather than wait for it. On failure
                // the run loop tries again, and counts the records lost if it fails too.
                if let Ok(b) = logblock::compress(&chunk.block) {
                    chunk.block = b;
                    chunk.compressed = true;
                }
            }
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

enum Woke {
    Lines(Vec<super::driver::SourceLine>),
    Timeout,
    Housekeeping,
}

/// Puts records into blocks as the pipeline emits them, acknowledging each to the tailer as
/// it goes in, and closes a block at about `chunk_bytes`, so that a chunk's note covers
/// exactly its records and those before.
struct Batcher<'a> {
    driver: &'a mut LogDriver,
    block: &'a mut BlockWriter,
    chunk_bytes: usize,
    done: Vec<Chunk>,
}

impl Batcher<'_> {
    fn close(&mut self) {
        if self.block.is_empty() {
            return;
        }
        let records = self.block.len();
        let plain = self.block.finish_plain();
        let note = checkpoint::encode(&self.driver.positions()).into_bytes();
        self.done.push(Chunk {
            block: plain,
            compressed: false,
            records,
            note,
            redacted: Vec::new(),
        });
    }
}

impl Emit for Batcher<'_> {
    fn emit(&mut self, r: Emitted<'_>) {
        let file = self.block.file(r.source_name, r.path);
        self.block.push(&RecordRef {
            file,
            offset: r.offset,
            read_at: r.read_at,
            ts: r.ts,
            severity: r.severity,
            part: r.part,
            line: r.line,
        });
        self.driver.ack(r.source, r.file, r.end);
        if self.block.plain_bytes() >= self.chunk_bytes {
            self.close();
        }
    }
}

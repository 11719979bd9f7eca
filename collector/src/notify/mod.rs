//! Notifications: a finding opened, reopened, at risk of or past its SLA deadline, or
//! resolved, posted to webhooks (generic JSON, or the DingTalk, WeCom and Feishu group
//! robots support teams live in), routed by customer, level and event.
//!
//! Each webhook has a thread of its own and a bounded queue, so a receiver that is slow or
//! down delays only its own messages. Messages to one receiver go in order (an "opened"
//! never arrives after its "resolved"); a failed attempt is retried after a doubling wait,
//! and a message that used all its attempts, or found the queue full, is a dead letter:
//! counted and logged, never silently gone. `config.rs` is the configuration, `format.rs`
//! the bodies and signatures (pure).

pub mod config;
pub mod format;

use aftercare_shared::model::UnixMillis;
use config::{EventKind, WebhookConfig};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Which SLA clock an escalation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Clock {
    Respond,
    Restore,
}

impl Clock {
    pub fn as_str(self) -> &'static str {
        match self {
            Clock::Respond => "respond",
            Clock::Restore => "restore",
        }
    }
}

/// What happened to the finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AlertEvent {
    Opened,
    Reopened,
    AtRisk {
        clock: Clock,
        due: UnixMillis,
    },
    Breached {
        clock: Clock,
        due: UnixMillis,
    },
    /// `by: None`: auto-resolved, the condition cleared.
    Resolved {
        by: Option<String>,
        note: Option<String>,
    },
}

impl AlertEvent {
    pub fn kind(&self) -> EventKind {
        match self {
            AlertEvent::Opened => EventKind::Opened,
            AlertEvent::Reopened => EventKind::Reopened,
            AlertEvent::AtRisk { .. } => EventKind::AtRisk,
            AlertEvent::Breached { .. } => EventKind::Breached,
            AlertEvent::Resolved { .. } => EventKind::Resolved,
        }
    }
}

/// A finding's change as notifications carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub event: AlertEvent,
    pub finding_id: i64,
    pub customer: String,
    pub host: String,
    pub rule: String,
    /// The mount, interface, device or log source; empty for the host as a whole.
    pub subject: String,
    /// Fault level 1..=4.
    pub level: u8,
    pub category: String,
    pub title: String,
    /// What was seen, in a line.
    pub summary: String,
    pub recommendation: String,
    pub opened_at: UnixMillis,
    pub respond_by: Option<UnixMillis>,
    pub restore_by: Option<UnixMillis>,
    /// When this change happened.
    pub at: UnixMillis,
}

/// One webhook's counts since start.
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub delivered: AtomicU64,
    /// Attempts that failed (each retried one counts).
    pub failed_attempts: AtomicU64,
    pub dead_letters: AtomicU64,
}

/// A snapshot of [`WebhookStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub delivered: u64,
    pub failed_attempts: u64,
    pub dead_letters: u64,
}

struct Hook {
    name: String,
    tx: Option<SyncSender<Alert>>,
    cfg: WebhookConfig,
    stats: Arc<WebhookStats>,
    thread: Option<JoinHandle<()>>,
}

/// The webhooks and their threads.
pub struct Notifier {
    hooks: Vec<Hook>,
    /// Set when stopping: until when queued messages may still be tried.
    stop: Arc<Mutex<Option<Instant>>>,
}

impl Notifier {
    /// Start a thread per webhook (the list was validated with the configuration).
    pub fn start(hooks: &[WebhookConfig]) -> std::io::Result<Notifier> {
        let stop = Arc::new(Mutex::new(None));
        let mut out = Vec::with_capacity(hooks.len());
        for cfg in hooks {
            let (tx, rx) = mpsc::sync_channel(cfg.queue);
            let stats = Arc::new(WebhookStats::default());
            let http: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(cfg.timeout))
                .http_status_as_error(false)
                .build()
                .into();
            let worker = Worker {
                cfg: cfg.clone(),
                http,
                stats: stats.clone(),
                stop: stop.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("webhook-{}", cfg.name))
                .spawn(move || worker.run(rx))?;
            out.push(Hook {
                name: cfg.name.clone(),
                tx: Some(tx),
                cfg: cfg.clone(),
                stats,
                thread: Some(thread),
            });
        }
        Ok(Notifier { hooks: out, stop })
    }

    /// Queue `a` for every webhook that wants it; never blocks. A full queue makes it a dead
    /// letter for that webhook.
    pub fn send(&self, a: &Alert) {
        for h in &self.hooks {
            if !h.cfg.wants(&a.customer, a.level, a.event.kind()) {
                continue;
            }
            let Some(tx) = &h.tx else { continue };
            if let Err(e) = tx.try_send(a.clone()) {
                h.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
                if matches!(e, TrySendError::Full(_)) {
                    warn!(webhook = %h.name, finding = a.finding_id,
                        "webhook queue full: notification dropped (dead letter)");
                }
            }
        }
    }

    /// Each webhook's live counts, for the collector's `/metrics` (summed there: webhook
    /// names are the operator's and may name customers).
    pub fn stats(&self) -> Vec<Arc<WebhookStats>> {
        self.hooks.iter().map(|h| h.stats.clone()).collect()
    }

    /// Counts per webhook, by name.
    pub fn counts(&self) -> Vec<(String, Counts)> {
        self.hooks
            .iter()
            .map(|h| {
                let s = &h.stats;
                (
                    h.name.clone(),
                    Counts {
                        delivered: s.delivered.load(Ordering::Relaxed),
                        failed_attempts: s.failed_attempts.load(Ordering::Relaxed),
                        dead_letters: s.dead_letters.load(Ordering::Relaxed),
                    },
                )
            })
            .collect()
    }

    /// Stop the threads: messages still queued get one attempt each within `grace`; what
    /// is left is counted as dead letters. Returns the final counts.
    pub fn stop(mut self, grace: Duration) -> Vec<(String, Counts)> {
        self.shut(grace);
        self.counts()
    }

    fn shut(&mut self, grace: Duration) {
        *self.stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + grace);
        for h in &mut self.hooks {
            // The last sender gone wakes the thread, which sees the deadline.
            h.tx = None;
        }
        for h in &mut self.hooks {
            if let Some(t) = h.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.shut(Duration::ZERO);
    }
}

struct Worker {
    cfg: WebhookConfig,
    http: ureq::Agent,
    stats: Arc<WebhookStats>,
    stop: Arc<Mutex<Option<Instant>>>,
}

impl Worker {
    fn run(self, rx: mpsc::Receiver<Alert>) {
        // In order: the head is retried until delivered or dead, then the next.
        let mut queue: VecDeque<(Alert, u32)> = VecDeque::new();
        let mut next_try = Instant::now();
        loop {
            let wait = if queue.is_empty() {
                Duration::from_secs(3600)
            } else {
                next_try.saturating_duration_since(Instant::now())
            };
            match rx.recv_timeout(wait) {
                Ok(a) => {
                    queue.push_back((a, 0));
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // Only `Notifier::shut` drops the sender, after setting the deadline.
                    let until = self
                        .stop
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .unwrap_or_else(Instant::now);
                    self.drain(queue, until);
                    return;
                }
            }
            let Some((a, failed)) = queue.front_mut() else {
                continue;
            };
            match self.attempt(a) {
                Ok(()) => {
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    queue.pop_front();
                }
                Err(e) => {
                    *failed += 1;
                    self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    if *failed >= self.cfg.attempts {
                        self.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
                        warn!(webhook = %self.cfg.name, finding = a.finding_id, attempts = *failed,
                            "notification not delivered, a dead letter: {e}");
                        queue.pop_front();
                    } else {
                        let wait = self.cfg.backoff(*failed);
                        info!(webhook = %self.cfg.name, finding = a.finding_id,
                            "notification attempt {} failed, next in {wait:?}: {e}", *failed);
                        next_try = Instant::now() + wait;
                    }
                }
            }
        }
    }

    /// At stop: one attempt each while the grace period lasts; the rest are dead letters.
    fn drain(&self, queue: VecDeque<(Alert, u32)>, until: Instant) {
        for (a, _) in queue {
            if Instant::now() < until && self.attempt(&a).is_ok() {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
            } else {
                self.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
                warn!(webhook = %self.cfg.name, finding = a.finding_id,
                    "notification not delivered before shutdown (dead letter)");
            }
        }
    }

    fn attempt(&self, a: &Alert) -> Result<(), String> {
        let now = aftercare_shared::time_fmt::now_millis();
        let req = format::render(
            self.cfg.format,
            &self.cfg.url,
            self.cfg.secret.as_deref(),
            a,
            now,
        );
        let mut resp = self
            .http
            .post(&req.url)
            .header("Content-Type", "application/json; charset=utf-8")
            .send(req.body.as_str())
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        format::accepted(self.cfg.format, status, &body)
    }
}

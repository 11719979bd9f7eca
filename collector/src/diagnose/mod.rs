//! Remote diagnosis, the collector's side: an engineer's request is stored `pending`, sent to
//! the host's agent on a new stream of its live connection, and its answer stored with the
//! host (and the finding it was run from). The agent decides whether it runs (consent, its
//! allow-list, argument checks); the collector only carries the request and keeps the
//! record.
//!
//! `links` the live connections by host (ingest registers them), `record` the rows.

pub mod links;
pub mod record;

use crate::store::StoreError;
use aftercare_shared::codec;
use aftercare_shared::diag::{DiagOutcome, DiagRequest, DiagResponse};
use aftercare_shared::protocol::DIAGNOSTICS_PROTOCOL;
use aftercare_shared::time_fmt::now_millis;
pub use links::{Link, Links};
use record::{DiagnosticResult, NewDiagnostic, Status};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

/// Beyond the probe's own time limit: the agent's start-up, the audit write, the transfer.
const MARGIN: Duration = Duration::from_secs(15);
/// The wait for a probe the agent did not advertise (it is refused at once if unknown).
const UNADVERTISED: Duration = Duration::from_secs(300);

/// The service the API calls.
#[derive(Clone)]
pub struct Diagnose {
    links: Links,
    database: crate::store::Database,
    max_frame: usize,
    stop: CancellationToken,
    /// The requests under way, so shutdown can wait for them to store their end.
    tasks: TaskTracker,
}

impl Diagnose {
    pub fn new(
        links: Links,
        database: crate::store::Database,
        max_frame: usize,
        stop: CancellationToken,
    ) -> Self {
        Diagnose {
            links,
            database,
            max_frame,
            stop,
            tasks: TaskTracker::new(),
        }
    }

    /// After `stop`: wait (at most `within`) until every request has stored how it ended.
    pub async fn drain(&self, within: Duration) {
        self.tasks.close();
        if tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                "diagnostics still storing their results after {within:?}; the next start ends them"
            );
        }
    }

    pub fn links(&self) -> &Links {
        &self.links
    }

    /// Store the request as pending and send it; returns its id at once. The row says how
    /// it ended: done, refused, failed, timeout or offline.
    pub async fn request(&self, new: NewDiagnostic, span_host: String) -> Result<i64, StoreError> {
        let db = self.database.clone();
        let n = new.clone();
        let id = tokio::task::spawn_blocking(move || db.open()?.add_diagnostic(&n))
            .await
            .map_err(|e| StoreError::Invalid(format!("task failed: {e}")))??;
        let me = self.clone();
        self.tasks.spawn(
            async move {
                let result = tokio::select! {
                    r = me.exchange(id, &new) => r,
                    _ = me.stop.cancelled() => failed(Status::Failed, "the collector shut down before the agent answered"),
                };
                info!(id, status = result.status.as_str(), "diagnostic {}: {}", new.probe, result.message);
                let db = me.database.clone();
                let stored = tokio::task::spawn_blocking(move || {
                    db.open()?.finish_diagnostic(id, &result)
                })
                .await;
                match stored {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => warn!(id, "diagnostic result not stored: {e}"),
                    Err(e) => warn!(id, "diagnostic result not stored: {e}"),
                }
            }
            .instrument(info_span!("diagnostic", id, host = %span_host)),
        );
        Ok(id)
    }

    /// Send the request to the agent and wait (bounded) for its answer.
    async fn exchange(&self, id: i64, new: &NewDiagnostic) -> DiagnosticResult {
        let Some(link) = self.links.get(new.host) else {
            return failed(Status::Offline, "the host is not connected");
        };
        if link.protocol < DIAGNOSTICS_PROTOCOL {
            return failed(
                Status::Failed,
                &format!(
                    "agent too old for diagnostics (protocol {}, needs {DIAGNOSTICS_PROTOCOL})",
                    link.protocol
                ),
            );
        }
        let limit = link
            .probes
            .iter()
            .find(|p| p.name == new.probe)
            .map(|p| Duration::from_millis(p.timeout_ms))
            .unwrap_or(UNADVERTISED)
            + MARGIN;
        let req = DiagRequest {
            id,
            probe: new.probe.clone(),
            args: new.args.clone(),
            requested_by: new.requested_by.clone(),
            finding: new.finding,
        };
        match tokio::time::timeout(limit, self.send(&link.conn, &req)).await {
            Err(_) => failed(
                Status::Timeout,
                &format!("no answer from the agent within {limit:?}"),
            ),
            Ok(Err(e)) => failed(Status::Failed, &e),
            Ok(Ok(resp)) if resp.id != id => failed(
                Status::Failed,
                &format!("the agent answered diagnostic {} instead of {id}", resp.id),
            ),
            Ok(Ok(resp)) => result_of(resp),
        }
    }

    async fn send(
        &self,
        conn: &quinn::Connection,
        req: &DiagRequest,
    ) -> Result<DiagResponse, String> {
        let lost = |e: &dyn std::fmt::Display| format!("the agent's connection failed: {e}");
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| lost(&e))?;
        let frame = codec::to_frame(req, self.max_frame).map_err(|e| e.to_string())?;
        send.write_all(&frame).await.map_err(|e| lost(&e))?;
        let _ = send.finish();
        let mut hdr = [0u8; 4];
        recv.read_exact(&mut hdr).await.map_err(|e| lost(&e))?;
        let total = codec::frame_len(&hdr, self.max_frame)
            .map_err(|e| e.to_string())?
            .expect("4 header bytes present");
        let mut body = vec![0u8; total - 4];
        recv.read_exact(&mut body).await.map_err(|e| lost(&e))?;
        codec::decode_body(&body).map_err(|e| format!("the agent's answer is malformed: {e}"))
    }
}

fn failed(status: Status, message: &str) -> DiagnosticResult {
    DiagnosticResult {
        status,
        finished_at: now_millis(),
        exit_code: None,
        truncated: false,
        output: Vec::new(),
        message: message.to_string(),
    }
}

/// The row's result from the agent's answer. Pure.
pub fn result_of(resp: DiagResponse) -> DiagnosticResult {
    let (status, exit_code, message) = match resp.outcome {
        DiagOutcome::Done { exit_code } => (
            Status::Done,
            exit_code,
            match exit_code {
                Some(c) => format!("exit code {c}"),
                None => String::new(),
            },
        ),
        DiagOutcome::Refused(r) => (Status::Refused, None, r.message()),
        DiagOutcome::TimedOut { after_ms } => (
            Status::Timeout,
            None,
            format!("killed at its time limit after {after_ms} ms"),
        ),
        DiagOutcome::Failed(m) => (Status::Failed, None, m),
    };
    DiagnosticResult {
        status,
        finished_at: now_millis(),
        exit_code,
        truncated: resp.truncated,
        output: resp.output.into_vec(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aftercare_shared::diag::Refusal;

    fn resp(outcome: DiagOutcome) -> DiagResponse {
        DiagResponse {
            id: 1,
            outcome,
            output: serde_bytes::ByteBuf::from(b"x".to_vec()),
            truncated: false,
            elapsed_ms: 1,
        }
    }

    #[test]
    fn answers_become_rows() {
        let r = result_of(resp(DiagOutcome::Refused(Refusal::NoConsent)));
        assert_eq!(
            (r.status, r.message.as_str()),
            (Status::Refused, "refused: no consent")
        );
        let r = result_of(resp(DiagOutcome::Refused(Refusal::NotAllowed)));
        assert_eq!(r.message, "refused: not allowed");
        let r = result_of(resp(DiagOutcome::Done { exit_code: Some(2) }));
        assert_eq!(
            (r.status, r.exit_code, r.output.as_slice()),
            (Status::Done, Some(2), &b"x"[..])
        );
        let r = result_of(resp(DiagOutcome::TimedOut { after_ms: 1000 }));
        assert_eq!(r.status, Status::Timeout);
        let r = result_of(resp(DiagOutcome::Failed("no tool".into())));
        assert_eq!((r.status, r.message.as_str()), (Status::Failed, "no tool"));
    }
}

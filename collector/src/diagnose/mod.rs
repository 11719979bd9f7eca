//! Remote diagnosis, the collector's side: an engineer's request is stored `pending`, sent to
//! the host's agent on a new stream of its live connection, and its answer stored with the
//! host (and the finding it was run from). The agent decides whether it runs (consent, its
//! allow-list, argument checks); the collector only carries the request and keeps the
//! record.
//!
//! With several collectors on one database, the API may be asked on a collector that does
//! not hold the host's connection. The request is then stored unclaimed; the collector
//! holding the connection takes it within [`PICKUP_EVERY`] and sends it. A request nobody
//! takes or answers in time is ended by whichever collector looks next.
//!
//! `links` the live connections by host (ingest registers them), `record` the rows.

pub mod links;
pub mod record;

use crate::store::{HostId, StoreError};
use aftercare_shared::codec;
use aftercare_shared::diag::{DiagOutcome, DiagRequest, DiagResponse};
use aftercare_shared::model::UnixMillis;
use aftercare_shared::protocol::DIAGNOSTICS_PROTOCOL;
use aftercare_shared::time_fmt::now_millis;
pub use links::{Link, Links};
use record::{DiagnosticResult, Elsewhere, NewDiagnostic, Sender, Status};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

/// Beyond the probe's own time limit: the agent's start-up, the audit write, the transfer.
const MARGIN: Duration = Duration::from_secs(15);
/// The wait for a probe the agent did not advertise (it is refused at once if unknown).
const UNADVERTISED: Duration = Duration::from_secs(300);
/// How long a request handed over waits for the collector holding the host's connection
/// (which looks every [`PICKUP_EVERY`]) before it ends as `offline`.
const HANDOVER_WAIT: Duration = Duration::from_secs(30);
/// How often a collector on a shared database looks for requests handed to it.
pub const PICKUP_EVERY: Duration = Duration::from_secs(1);
/// Past the exchange's own limit, before another collector ends a request its sender left
/// pending (that sender died).
const SWEEP_GRACE: Duration = Duration::from_secs(60);

/// The service the API calls.
#[derive(Clone)]
pub struct Diagnose {
    links: Links,
    database: crate::store::Database,
    /// This collector, as the database names it among others sharing it.
    node: String,
    max_frame: usize,
    stop: CancellationToken,
    /// The requests under way, so shutdown can wait for them to store their end.
    tasks: TaskTracker,
}

/// Where a new request goes.
enum Route {
    /// Through this collector's connection to the agent.
    Here(Link),
    /// To the collector holding the host's connection (named), through the database.
    HandedOver(String),
    /// Nowhere: no collector holds the host's connection.
    Offline,
}

impl Diagnose {
    pub fn new(
        links: Links,
        database: crate::store::Database,
        node: String,
        max_frame: usize,
        stop: CancellationToken,
    ) -> Self {
        Diagnose {
            links,
            database,
            node,
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

    /// The host's connection if another collector sharing the database holds it.
    pub async fn elsewhere(&self, host: HostId) -> Result<Option<Elsewhere>, StoreError> {
        let (db, node) = (self.database.clone(), self.node.clone());
        tokio::task::spawn_blocking(move || open_as(&db, &node)?.connected_elsewhere(host))
            .await
            .map_err(|e| StoreError::Invalid(format!("task failed: {e}")))?
    }

    /// Store the request as pending and send it; returns its id at once. The row says how
    /// it ended: done, refused, failed, timeout or offline. When another collector sharing
    /// the database holds the host's connection, the request waits for it there.
    pub async fn request(&self, new: NewDiagnostic, span_host: String) -> Result<i64, StoreError> {
        let (db, node, n) = (self.database.clone(), self.node.clone(), new.clone());
        let link = self.links.get(new.host);
        let (id, route) = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            let mut st = open_as(&db, &node)?;
            let now = now_millis();
            let route = match link {
                Some(link) => Route::Here(link),
                None => match st.connected_elsewhere(n.host)? {
                    Some(e) => Route::HandedOver(e.via),
                    None => Route::Offline,
                },
            };
            let (sender, deadline) = match &route {
                Route::Here(link) => (Sender::ThisCollector, deadline(now, link, &n.probe)),
                Route::HandedOver(_) => (Sender::Holder, now + millis(HANDOVER_WAIT)),
                Route::Offline => (Sender::ThisCollector, now + millis(SWEEP_GRACE)),
            };
            Ok((st.add_diagnostic(&n, sender, deadline)?, route))
        })
        .await
        .map_err(|e| StoreError::Invalid(format!("task failed: {e}")))??;
        match route {
            Route::Here(link) => self.dispatch(id, new, Some(link), span_host),
            Route::HandedOver(via) => {
                info!(id, host = %span_host, probe = %new.probe, "diagnostic handed over to {via}, which holds the host's connection");
            }
            Route::Offline => self.dispatch(id, new, None, span_host),
        }
        Ok(id)
    }

    /// Until `stop`, every [`PICKUP_EVERY`]: take the requests other collectors handed over
    /// for hosts connected here and send them, and end those past their deadline. Run
    /// where several collectors may share the database.
    pub async fn pick_up(self) {
        let mut tick = tokio::time::interval(PICKUP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let (db, node, links) = (self.database.clone(), self.node.clone(), self.links.clone());
            let taken = tokio::task::spawn_blocking(move || take_handed_over(&db, &node, &links))
                .await
                .map_err(|e| StoreError::Invalid(format!("task failed: {e}")))
                .and_then(|r| r);
            match taken {
                Ok(taken) => {
                    for (id, new, link) in taken {
                        let name = link.name.clone();
                        info!(id, host = %name, probe = %new.probe, "diagnostic taken over from another collector");
                        self.dispatch(id, new, Some(link), name);
                    }
                }
                Err(e) => warn!("looking for diagnostics handed over: {e}"),
            }
        }
    }

    /// Send the request (or, without a link, end it as offline) and store how it ended.
    fn dispatch(&self, id: i64, new: NewDiagnostic, link: Option<Link>, span_host: String) {
        let me = self.clone();
        self.tasks.spawn(
            async move {
                let result = match link {
                    None => failed(Status::Offline, "the host is not connected"),
                    Some(link) => tokio::select! {
                        r = me.exchange(id, &new, &link) => r,
                        _ = me.stop.cancelled() => failed(Status::Failed, "the collector shut down before the agent answered"),
                    },
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
    }

    /// Send the request to the agent and wait (bounded) for its answer.
    async fn exchange(&self, id: i64, new: &NewDiagnostic, link: &Link) -> DiagnosticResult {
        if link.protocol < DIAGNOSTICS_PROTOCOL {
            return failed(
                Status::Failed,
                &format!(
                    "agent too old for diagnostics (protocol {}, needs {DIAGNOSTICS_PROTOCOL})",
                    link.protocol
                ),
            );
        }
        let limit = limit(link, &new.probe);
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

/// The requests handed over for hosts connected here, each taken for this collector (a
/// request another collector took first is left to it); ends those past their deadline.
fn take_handed_over(
    db: &crate::store::Database,
    node: &str,
    links: &Links,
) -> Result<Vec<(i64, NewDiagnostic, Link)>, StoreError> {
    let mut st = open_as(db, node)?;
    let now = now_millis();
    let ended = st.expire_diagnostics(now)?;
    if ended > 0 {
        info!(ended, "diagnostics ended past their deadline");
    }
    let mut taken = Vec::new();
    for (id, new) in st.unclaimed_diagnostics()? {
        let Some(link) = links.get(new.host) else {
            continue;
        };
        if st.claim_diagnostic(id, deadline(now, &link, &new.probe))? {
            taken.push((id, new, link));
        }
    }
    Ok(taken)
}

/// A store handle writing for collector `node` (claims and handovers name it).
fn open_as(
    db: &crate::store::Database,
    node: &str,
) -> Result<Box<dyn crate::store::Store>, StoreError> {
    let mut st = db.open()?;
    st.set_node(node);
    Ok(st)
}

/// How long the agent has to answer `probe`: its advertised limit and a margin.
fn limit(link: &Link, probe: &str) -> Duration {
    link.probes
        .iter()
        .find(|p| p.name == probe)
        .map(|p| Duration::from_millis(p.timeout_ms))
        .unwrap_or(UNADVERTISED)
        + MARGIN
}

/// When a request sent now over `link` may be ended by any collector: its sender would
/// have stored an answer or a timeout well before.
fn deadline(now: UnixMillis, link: &Link, probe: &str) -> UnixMillis {
    now + millis(limit(link, probe) + SWEEP_GRACE)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
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

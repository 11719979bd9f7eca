//! Remote diagnosis, the agent's side: the collector opens a stream per diagnostic on the
//! live connection; the agent decides, runs, records and answers.
//!
//! The decision is the agent's alone, in this order: the `diagnostics` scope in force now
//! (else `refused: no consent`), a probe this agent knows (else `refused: unknown probe`),
//! on the customer's allow-list (else `refused: not allowed`), arguments as the probe
//! declares them (else `refused: bad argument <name>: <why>`). Every request, run or not,
//! goes into the customer's audit log with who asked, which probe and arguments, the
//! outcome and how many bytes left the host.
//!
//! `config` the `[diagnostics]` section, `builtin` the built-in probes, `exec` running a
//! customer probe's program (no shell, time limit, output cap, process group killed).

pub mod builtin;
pub mod config;
pub mod exec;

use crate::audit::{AuditLog, Event};
use crate::consent::ConsentState;
use aftercare_shared::codec;
use aftercare_shared::consent::Scope;
use aftercare_shared::diag::{self, DiagOutcome, DiagRequest, DiagResponse, ProbeInfo, Refusal};
use aftercare_shared::time_fmt::now_millis;
use config::Catalog;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

/// How long the collector has to send its request once it opened a stream.
const REQUEST_WAIT: Duration = Duration::from_secs(10);
/// A request is small; anything larger is not one.
const MAX_REQUEST: usize = 64 << 10;

/// What a request may run, once allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Builtin {
        name: String,
        args: Vec<(String, String)>,
        timeout: Duration,
        cap: usize,
    },
    Command {
        argv: Vec<String>,
        timeout: Duration,
        cap: usize,
    },
}

/// The agent's diagnostic service: its probes, the consent it follows, its audit log.
pub struct Diagnostics {
    catalog: Catalog,
    builtin: builtin::Context,
    consent: watch::Receiver<ConsentState>,
    audit: AuditLog,
    max_frame: usize,
}

impl Diagnostics {
    pub fn new(
        catalog: Catalog,
        builtin: builtin::Context,
        consent: watch::Receiver<ConsentState>,
        audit: AuditLog,
        max_frame: usize,
    ) -> Diagnostics {
        Diagnostics {
            catalog,
            builtin,
            consent,
            audit,
            max_frame,
        }
    }

    /// What this agent offers (sent to the collector after Welcome).
    pub fn advertised(&self) -> Vec<ProbeInfo> {
        self.catalog.advertised()
    }

    /// Whether and how to run `req`, with consent as it is `now`.
    pub fn decide(&self, req: &DiagRequest, now: i64) -> Result<Plan, Refusal> {
        let consent = self.consent.borrow();
        // The watch's scopes and the record's own clock: an `until` just passed counts even
        // before the watch noticed.
        if !(consent.allows(Scope::Diagnostics) && consent.record.allows(Scope::Diagnostics, now)) {
            return Err(Refusal::NoConsent);
        }
        drop(consent);
        decide(&self.catalog, req, self.max_frame)
    }

    /// Decide, run, record, answer.
    pub async fn answer(&self, req: &DiagRequest) -> DiagResponse {
        let started = Instant::now();
        let mut withdrawn_while_running = false;
        let (outcome, output, truncated) = match self.decide(req, now_millis()) {
            Err(r) => (DiagOutcome::Refused(r), Vec::new(), false),
            Ok(plan) => {
                info!(probe = %req.probe, requested_by = %req.requested_by, "running a diagnostic");
                // Consent withdrawn while the probe runs stops it (its process group is
                // killed when the run is dropped) and nothing of its output leaves.
                let mut consent = self.consent.clone();
                let withdrawn = async move {
                    if consent
                        .wait_for(|s| !s.allows(Scope::Diagnostics))
                        .await
                        .is_err()
                    {
                        // The watch ended: the agent is stopping; the run ends with it.
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    ran = self.run_plan(plan) => (ran.outcome, ran.output, ran.truncated),
                    _ = withdrawn => {
                        withdrawn_while_running = true;
                        (DiagOutcome::Refused(Refusal::NoConsent), Vec::new(), false)
                    }
                }
            }
        };
        let event = Event::Diagnostic {
            probe: req.probe.clone(),
            args: args_text(&req.args),
            requested_by: req.requested_by.clone(),
            finding: req.finding,
            outcome: if withdrawn_while_running {
                format!(
                    "{} (withdrawn while it ran; stopped, output discarded)",
                    outcome_text(&outcome)
                )
            } else {
                outcome_text(&outcome)
            },
            output_bytes: output.len() as u64,
        };
        match &outcome {
            DiagOutcome::Refused(r) => {
                warn!(probe = %req.probe, requested_by = %req.requested_by, "{}", r.message())
            }
            o => {
                info!(probe = %req.probe, bytes = output.len(), "diagnostic ended: {}", outcome_text(o))
            }
        }
        let audit = self.audit.clone();
        let written =
            tokio::task::spawn_blocking(move || audit.append(now_millis(), &[event])).await;
        if let Ok(Err(e)) = written {
            warn!("diagnostic not recorded in the audit log: {e}");
        }
        DiagResponse {
            id: req.id,
            outcome,
            output: serde_bytes::ByteBuf::from(output),
            truncated,
            elapsed_ms: started.elapsed().as_millis() as u64,
        }
    }
}

impl Diagnostics {
    async fn run_plan(&self, plan: Plan) -> exec::Ran {
        match plan {
            Plan::Builtin {
                name,
                args,
                timeout,
                cap,
            } => {
                // Built-ins bound their own waits; this bounds a read that hangs (a log file
                // on a dead NFS server). The blocked thread is left behind.
                let run = builtin::run(&name, &args, &self.builtin, cap);
                match tokio::time::timeout(timeout, run).await {
                    Ok(ran) => ran,
                    Err(_) => exec::Ran {
                        outcome: DiagOutcome::TimedOut {
                            after_ms: timeout.as_millis() as u64,
                        },
                        output: Vec::new(),
                        truncated: false,
                    },
                }
            }
            Plan::Command { argv, timeout, cap } => exec::run(&argv, timeout, cap).await,
        }
    }
}

/// The decision after consent: known, allowed, arguments valid. Pure.
pub fn decide(catalog: &Catalog, req: &DiagRequest, max_frame: usize) -> Result<Plan, Refusal> {
    let info = catalog.info(&req.probe).ok_or(Refusal::UnknownProbe)?;
    if !catalog.allows(&req.probe) {
        return Err(Refusal::NotAllowed);
    }
    let values = diag::validate_args(&info.args, &req.args)?;
    // The answer travels in one frame.
    let cap = (info.max_output as usize).min(max_frame / 2);
    match catalog.custom(&req.probe) {
        Some(c) => Ok(Plan::Command {
            argv: diag::substitute(&c.argv, &values).map_err(|why| Refusal::BadArgument {
                name: "argv".into(),
                why,
            })?,
            timeout: Duration::from_millis(c.info.timeout_ms),
            cap,
        }),
        None => Ok(Plan::Builtin {
            name: req.probe.clone(),
            args: values,
            timeout: Duration::from_millis(info.timeout_ms),
            cap,
        }),
    }
}

fn args_text(args: &[(String, String)]) -> String {
    if args.is_empty() {
        return "-".into();
    }
    args.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The outcome as the audit log and the agent's log say it.
pub fn outcome_text(o: &DiagOutcome) -> String {
    match o {
        DiagOutcome::Done { exit_code: Some(c) } => format!("done exit={c}"),
        DiagOutcome::Done { exit_code: None } => "done".into(),
        DiagOutcome::Refused(r) => r.message(),
        DiagOutcome::TimedOut { after_ms } => format!("timeout after {after_ms} ms"),
        DiagOutcome::Failed(m) => format!("failed: {m}"),
    }
}

/// Answer the diagnostic streams the collector opens on `conn` until it closes or
/// `shutdown`. One task while idle (waiting in `accept_bi`), one more per request.
pub async fn serve(conn: quinn::Connection, svc: Arc<Diagnostics>, shutdown: CancellationToken) {
    loop {
        let (send, recv) = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(_) => return, // the connection ended; the main loop hears why
            },
        };
        let svc = svc.clone();
        tokio::spawn(
            async move {
                if let Err(e) = one_stream(send, recv, &svc).await {
                    warn!("diagnostic stream: {e}");
                }
            }
            .instrument(info_span!(
                "diagnostic",
                id = tracing::field::Empty,
                probe = tracing::field::Empty,
                requested_by = tracing::field::Empty
            )),
        );
    }
}

async fn one_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    svc: &Diagnostics,
) -> Result<(), String> {
    let body = tokio::time::timeout(REQUEST_WAIT, read_frame(&mut recv, MAX_REQUEST))
        .await
        .map_err(|_| format!("no request within {REQUEST_WAIT:?}"))??;
    let req: DiagRequest = codec::decode_body(&body).map_err(|e| e.to_string())?;
    let span = tracing::Span::current();
    span.record("id", req.id);
    span.record("probe", req.probe.as_str());
    span.record("requested_by", req.requested_by.as_str());
    let resp = svc.answer(&req).await;
    let frame = codec::to_frame(&resp, svc.max_frame).map_err(|e| e.to_string())?;
    send.write_all(&frame).await.map_err(|e| e.to_string())?;
    crate::transport::count_sent(frame.len());
    let _ = send.finish();
    // Wait until the collector has it; leaving earlier could drop the tail.
    let _ = tokio::time::timeout(Duration::from_secs(10), send.stopped()).await;
    Ok(())
}

async fn read_frame(recv: &mut quinn::RecvStream, max: usize) -> Result<Vec<u8>, String> {
    let mut hdr = [0u8; 4];
    recv.read_exact(&mut hdr).await.map_err(|e| e.to_string())?;
    let total = codec::frame_len(&hdr, max)
        .map_err(|e| e.to_string())?
        .expect("4 header bytes present");
    let mut body = vec![0u8; total - 4];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aftercare_shared::diag::ArgKind;

    fn catalog(text: &str) -> Catalog {
        let c: config::DiagnosticsConfig = toml::from_str(text).unwrap();
        c.catalog().unwrap()
    }

    fn req(probe: &str, args: &[(&str, &str)]) -> DiagRequest {
        DiagRequest {
            id: 1,
            probe: probe.into(),
            args: args
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            requested_by: "eng".into(),
            finding: None,
        }
    }

    #[test]
    fn decisions_follow_the_catalog_and_arguments() {
        let c = catalog(
            "allow = [\"filesystems\", \"unit\"]\n\
             [[probe]]\nname = \"unit\"\nargv = [\"/usr/bin/systemctl\", \"status\", \"{u}\"]\n\
             timeout = \"2s\"\nargs = [{ name = \"u\", kind = \"name\" }]\n",
        );
        assert!(matches!(
            decide(&c, &req("filesystems", &[]), 1 << 20),
            Ok(Plan::Builtin { .. })
        ));
        assert_eq!(
            decide(&c, &req("top-processes", &[]), 1 << 20),
            Err(Refusal::NotAllowed)
        );
        assert_eq!(
            decide(&c, &req("rm", &[]), 1 << 20),
            Err(Refusal::UnknownProbe)
        );
        assert_eq!(
            decide(&c, &req("unit", &[("u", "nginx")]), 1 << 20),
            Ok(Plan::Command {
                argv: vec!["/usr/bin/systemctl".into(), "status".into(), "nginx".into()],
                timeout: Duration::from_secs(2),
                cap: 64 << 10,
            })
        );
        for evil in ["; rm -rf /", "$(id)", "../../etc/passwd"] {
            match decide(&c, &req("unit", &[("u", evil)]), 1 << 20) {
                Err(Refusal::BadArgument { name, .. }) => assert_eq!(name, "u"),
                other => panic!("{evil}: {other:?}"),
            }
        }
        // The output cap never outgrows the frame that carries it.
        let Ok(Plan::Builtin { cap, .. }) = decide(&c, &req("filesystems", &[]), 4096) else {
            panic!()
        };
        assert_eq!(cap, 2048);
        assert_eq!(c.info("unit").unwrap().args[0].kind, ArgKind::Name);
    }

    #[test]
    fn outcomes_read_plainly() {
        assert_eq!(
            outcome_text(&DiagOutcome::Done { exit_code: Some(0) }),
            "done exit=0"
        );
        assert_eq!(
            outcome_text(&DiagOutcome::Refused(Refusal::NoConsent)),
            "refused: no consent"
        );
        assert_eq!(args_text(&[]), "-");
    }
}

//! The desk's rows (findings and their timelines, maintenance windows, tokens, the audit
//! trail, contracts, diagnostics, reports) as both backends read them: the columns they
//! select, how a row becomes a value, and the refusals they word the same way. A backend
//! only says, through [`Cols`], how it reads one column of its own row type.

use super::{AuditRow, ContractAssignment, StoreError, TokenRow};
use crate::api::token::Role;
use crate::diagnose::record::{DiagnosticRow, NewDiagnostic, args_from_json};
use crate::findings::lifecycle::{Event, EventKind, State};
use crate::findings::record::{FindingRow, Observed, Silence};
use crate::report::record::{ReportRow, Status};
use aftercare_shared::model::UnixMillis;

/// One column of a result row, by index, as a backend stores it.
pub(super) trait Cols {
    type Error;
    /// An id or time (`BIGINT`; SQLite `INTEGER`).
    fn big(&self, i: usize) -> Result<i64, Self::Error>;
    fn opt_big(&self, i: usize) -> Result<Option<i64>, Self::Error>;
    /// A small number (PostgreSQL `INTEGER`, an `i32`), widened.
    fn int(&self, i: usize) -> Result<i64, Self::Error>;
    fn opt_int(&self, i: usize) -> Result<Option<i32>, Self::Error>;
    /// PostgreSQL `BOOLEAN`; SQLite keeps 0 or 1.
    fn flag(&self, i: usize) -> Result<bool, Self::Error>;
    fn text(&self, i: usize) -> Result<String, Self::Error>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, Self::Error>;
    fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, Self::Error>;
}

impl Cols for rusqlite::Row<'_> {
    type Error = rusqlite::Error;
    fn big(&self, i: usize) -> rusqlite::Result<i64> {
        self.get(i)
    }
    fn opt_big(&self, i: usize) -> rusqlite::Result<Option<i64>> {
        self.get(i)
    }
    fn int(&self, i: usize) -> rusqlite::Result<i64> {
        self.get(i)
    }
    fn opt_int(&self, i: usize) -> rusqlite::Result<Option<i32>> {
        self.get(i)
    }
    fn flag(&self, i: usize) -> rusqlite::Result<bool> {
        self.get::<_, i64>(i).map(|v| v != 0)
    }
    fn text(&self, i: usize) -> rusqlite::Result<String> {
        self.get(i)
    }
    fn opt_text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }
    fn opt_blob(&self, i: usize) -> rusqlite::Result<Option<Vec<u8>>> {
        self.get(i)
    }
}

/// `try_get`: a column of an unexpected type is an error, not a panic.
impl Cols for postgres::Row {
    type Error = postgres::Error;
    fn big(&self, i: usize) -> Result<i64, postgres::Error> {
        self.try_get(i)
    }
    fn opt_big(&self, i: usize) -> Result<Option<i64>, postgres::Error> {
        self.try_get(i)
    }
    fn int(&self, i: usize) -> Result<i64, postgres::Error> {
        self.try_get::<_, i32>(i).map(i64::from)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i32>, postgres::Error> {
        self.try_get(i)
    }
    fn flag(&self, i: usize) -> Result<bool, postgres::Error> {
        self.try_get(i)
    }
    fn text(&self, i: usize) -> Result<String, postgres::Error> {
        self.try_get(i)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, postgres::Error> {
        self.try_get(i)
    }
    fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, postgres::Error> {
        self.try_get(i)
    }
}

/// What [`finding`] reads: `findings f JOIN hosts h ON h.id = f.host_id`.
pub(super) const FINDING_COLUMNS: &str =
    "f.id, f.host_id, h.customer, h.host, f.rule, f.subject, f.level, f.category,
    f.title, f.recommendation, f.state, f.opened_at, f.last_seen, f.acked_at, f.acked_by,
    f.resolved_at, f.resolved_by, f.resolution, f.respond_by, f.restore_by, f.sla_sent,
    f.evidence, f.sla_from";

pub(super) fn finding<R: Cols + ?Sized>(r: &R) -> Result<FindingRow, R::Error> {
    let state = r.text(10)?;
    let acked_at = r.opt_big(13)?;
    let resolved_at = r.opt_big(15)?;
    Ok(FindingRow {
        id: r.big(0)?,
        host_id: r.big(1)?,
        customer: r.text(2)?,
        host: r.text(3)?,
        rule: r.text(4)?,
        subject: r.text(5)?,
        level: r.int(6)?.clamp(1, 4) as u8,
        category: r.text(7)?,
        title: r.text(8)?,
        recommendation: r.text(9)?,
        state: State::parse(&state).unwrap_or(State::Open),
        opened_at: r.big(11)?,
        last_seen: r.big(12)?,
        acknowledged: match acked_at {
            Some(at) => Some((at, r.opt_text(14)?.unwrap_or_default())),
            None => None,
        },
        resolved: match resolved_at {
            Some(at) => Some((at, r.opt_text(16)?, r.opt_text(17)?)),
            None => None,
        },
        respond_by: r.opt_big(18)?,
        restore_by: r.opt_big(19)?,
        sla_sent: r.int(20)? as u8,
        evidence: r.text(21)?,
        sla_from: r.big(22)?,
    })
}

/// A timeline entry's kind as stored; an unknown one is damage.
pub(super) fn event_kind(kind: &str) -> Result<EventKind, String> {
    EventKind::parse(kind).ok_or_else(|| format!("unknown timeline event '{kind}'"))
}

/// A timeline entry of the store's own making: no one's, without a note.
pub(super) fn event(at: UnixMillis, kind: EventKind) -> Event {
    Event {
        at,
        kind,
        by: None,
        note: None,
    }
}

/// The timeline entry of an update that changed the level.
pub(super) fn level_changed(o: &Observed) -> Event {
    Event {
        note: Some(format!("now L{}", o.level)),
        ..event(o.at, EventKind::LevelChanged)
    }
}

pub(super) fn not_an_action(kind: EventKind) -> StoreError {
    StoreError::Invalid(format!("'{}' is not an engineer's action", kind.as_str()))
}

/// An acknowledgement or resolution that changed nothing: the finding is gone (`state`
/// `None`), or someone else changed it since the caller looked.
pub(super) fn act_refused(id: i64, state: Option<String>, kind: EventKind) -> StoreError {
    match state {
        Some(s) => StoreError::Invalid(format!(
            "finding {id} is {s} now: nothing to {}",
            if kind == EventKind::Resolved {
                "resolve"
            } else {
                "acknowledge"
            }
        )),
        None => StoreError::NoSuchFinding(id),
    }
}

pub(super) const SILENCE_COLUMNS: &str =
    "id, customer, host, starts, ends, reason, created_by, created_at";

pub(super) fn silence<R: Cols + ?Sized>(r: &R) -> Result<Silence, R::Error> {
    Ok(Silence {
        id: r.big(0)?,
        customer: r.text(1)?,
        host: r.opt_text(2)?,
        starts: r.big(3)?,
        ends: r.big(4)?,
        reason: r.text(5)?,
        created_by: r.text(6)?,
        created_at: r.big(7)?,
    })
}

pub(super) fn no_silence(id: i64) -> StoreError {
    StoreError::Invalid(format!(
        "no maintenance window {id}: `aftercare-collector silence list` shows them"
    ))
}

pub(super) const TOKEN_COLUMNS: &str = "name, role, created_at, created_by, revoked_at";

pub(super) fn token<R: Cols + ?Sized>(r: &R) -> Result<TokenRow, R::Error> {
    let role = r.text(1)?;
    Ok(TokenRow {
        name: r.text(0)?,
        // Only the CLI writes roles; an unknown one reads as the least privileged.
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        created_at: r.big(2)?,
        created_by: r.text(3)?,
        revoked_at: r.opt_big(4)?,
    })
}

pub(super) fn token_taken(name: &str) -> StoreError {
    StoreError::Invalid(format!(
        "a token named '{name}' exists: revoke it first or choose another name"
    ))
}

pub(super) fn no_active_token(name: &str) -> StoreError {
    StoreError::Invalid(format!(
        "no active token named '{name}': `aftercare-collector token list` shows them"
    ))
}

pub(super) const AUDIT_COLUMNS: &str = "id, at, actor, role, action, target, outcome, detail";

pub(super) fn audit<R: Cols + ?Sized>(r: &R) -> Result<AuditRow, R::Error> {
    Ok(AuditRow {
        id: r.big(0)?,
        at: r.big(1)?,
        actor: r.text(2)?,
        role: r.text(3)?,
        action: r.text(4)?,
        target: r.text(5)?,
        outcome: r.text(6)?,
        detail: r.text(7)?,
    })
}

pub(super) const CONTRACT_COLUMNS: &str = "customer, contract, set_at, set_by";

pub(super) fn contract<R: Cols + ?Sized>(r: &R) -> Result<ContractAssignment, R::Error> {
    Ok(ContractAssignment {
        customer: r.text(0)?,
        contract: r.text(1)?,
        set_at: r.big(2)?,
        set_by: r.text(3)?,
    })
}

/// What [`diagnostic`] reads: `diagnostics d JOIN hosts h ON h.id = d.host`, then
/// `d.output` when the output is wanted.
pub(super) const DIAGNOSTIC_COLUMNS: &str =
    "d.id, d.host, h.customer, h.host, d.probe, d.args, d.finding, d.requested_by,
    d.requested_at, d.status, d.finished_at, d.exit_code, d.truncated, d.message";

pub(super) fn diagnostic<R: Cols + ?Sized>(
    r: &R,
    with_output: bool,
) -> Result<DiagnosticRow, R::Error> {
    Ok(DiagnosticRow {
        id: r.big(0)?,
        host_id: r.big(1)?,
        customer: r.text(2)?,
        host: r.text(3)?,
        probe: r.text(4)?,
        args: args_from_json(&r.text(5)?),
        finding: r.opt_big(6)?,
        requested_by: r.text(7)?,
        requested_at: r.big(8)?,
        status: r.text(9)?,
        finished_at: r.opt_big(10)?,
        exit_code: r.opt_int(11)?,
        truncated: r.flag(12)?,
        message: r.text(13)?,
        output: if with_output {
            Some(r.opt_blob(14)?.unwrap_or_default())
        } else {
            None
        },
    })
}

/// The handed-over requests no collector has taken, oldest first, as
/// [`unclaimed_diagnostic`] reads them (no parameters: the same text on both backends).
pub(super) const UNCLAIMED_DIAGNOSTICS: &str =
    "SELECT id, host, probe, args, finding, requested_by, requested_at FROM diagnostics
     WHERE status = 'pending' AND claimed_by IS NULL ORDER BY id";

/// A handed-over request waiting for the collector holding its host's connection.
pub(super) fn unclaimed_diagnostic<R: Cols + ?Sized>(
    r: &R,
) -> Result<(i64, NewDiagnostic), R::Error> {
    Ok((
        r.big(0)?,
        NewDiagnostic {
            host: r.big(1)?,
            probe: r.text(2)?,
            args: args_from_json(&r.text(3)?),
            finding: r.opt_big(4)?,
            requested_by: r.text(5)?,
            requested_at: r.big(6)?,
        },
    ))
}

/// How a request still pending past its deadline ends, by whether a collector took it:
/// the status and the message (SQL, shared by both backends' `expire_diagnostics`).
pub(super) const EXPIRED_DIAGNOSTIC: &str = "
    status = CASE WHEN claimed_by IS NULL THEN 'offline' ELSE 'failed' END,
    message = CASE WHEN claimed_by IS NULL
        THEN 'no collector holding the host''s connection took the request in time; the host disconnected'
        ELSE 'the collector that sent it to the agent stopped before storing the answer'
    END";

/// What [`report`] reads, then `data` when the report's JSON is wanted.
pub(super) const REPORT_COLUMNS: &str =
    "id, customer, period_from, period_to, label, lang, time_zone, scheduled,
    status, progress, message, requested_by, created_at, finished_at";

/// A report's row without its data.
pub(super) fn report<R: Cols + ?Sized>(r: &R) -> Result<ReportRow, R::Error> {
    let status = r.text(8)?;
    Ok(ReportRow {
        id: r.big(0)?,
        customer: r.text(1)?,
        from: r.big(2)?,
        to: r.big(3)?,
        label: r.text(4)?,
        lang: r.text(5)?,
        time_zone: r.text(6)?,
        scheduled: r.flag(7)?,
        // Written only by us; an unknown word reads as failed rather than breaking lists.
        status: Status::parse(&status).unwrap_or(Status::Failed),
        progress: r.int(9)?.clamp(0, 100) as u8,
        message: r.text(10)?,
        requested_by: r.text(11)?,
        created_at: r.big(12)?,
        finished_at: r.opt_big(13)?,
        data: None,
    })
}

/// The stored JSON is compressed: a quarter's trends for many hosts is mostly numbers.
const REPORT_ZSTD_LEVEL: i32 = 3;

/// How a finished report is stored: its status, message and compressed data.
pub(super) fn report_outcome(
    outcome: Result<&[u8], &str>,
) -> Result<(Status, String, Option<Vec<u8>>), StoreError> {
    Ok(match outcome {
        Ok(json) => (
            Status::Done,
            String::new(),
            Some(
                zstd::bulk::compress(json, REPORT_ZSTD_LEVEL)
                    .map_err(|e| StoreError::Invalid(format!("cannot compress the report: {e}")))?,
            ),
        ),
        Err(why) => (Status::Failed, why.to_string(), None),
    })
}

/// A stored report's JSON. A report is at most a few MB of JSON; the cap guards against a
/// damaged row.
pub(super) fn report_data(blob: &[u8]) -> std::io::Result<Vec<u8>> {
    zstd::bulk::decompress(blob, 256 << 20)
}

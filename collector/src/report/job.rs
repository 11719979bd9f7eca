//! Making a recorded report (I/O: the store): gather it, keep its progress on its row as it
//! goes, and store its data, or why it failed. The scheduler, the API and the CLI all make
//! reports here, in a blocking thread.

use super::model::{REPORT_FORMAT, Report};
use super::record::{NewReport, Status};
use super::{Request, generate};
use crate::sla::SlaPolicy;
use crate::store::{Database, Store, StoreError};
use aftercare_shared::time_fmt::now_millis;
use tracing::{info, warn};

/// Make report `id`, recorded as `row`, against the database at `database`. A failure of
/// the report itself is stored on its row (and returned as `Ok(Status::Failed)`); only a
/// store that cannot be written is an error.
pub fn make(
    database: &Database,
    file_policy: &SlaPolicy,
    id: i64,
    row: &NewReport,
) -> Result<Status, StoreError> {
    let mut st = database.open()?;
    // Progress goes through its own handle: the gathering borrows the first.
    let mut progress_st = database.open()?;
    let (policy, _) = crate::store::sla_in_force(file_policy, &mut *st)?;
    let previous = previous(&mut *st, &row.customer, row.from)?;
    let req = Request {
        customer: row.customer.clone(),
        from: row.from,
        to: row.to,
        period_label: row.label.clone(),
        time_zone: row.time_zone.clone(),
        lang: row.lang.clone(),
        previous,
    };
    let mut shown = 0u8;
    let started = std::time::Instant::now();
    let made = generate(&mut *st, &policy, &req, now_millis(), &mut |pct| {
        // A write per 5 %: enough for a progress bar, few enough not to slow the work.
        if pct >= shown.saturating_add(5) || (pct == 100 && shown < 100) {
            shown = pct;
            if let Err(e) = progress_st.report_progress(id, pct) {
                warn!(report = id, "cannot note progress: {e}");
            }
        }
    });
    let now = now_millis();
    match made {
        Ok(report) => {
            let json = serde_json::to_vec(&report).expect("a report serializes");
            st.finish_report(id, Ok(&json), now)?;
            info!(
                report = id,
                customer = %row.customer,
                period = %row.label,
                secs = started.elapsed().as_secs_f64(),
                "report made"
            );
            Ok(Status::Done)
        }
        Err(e) => {
            warn!(report = id, customer = %row.customer, "report failed: {e}");
            st.finish_report(id, Err(&e.to_string()), now)?;
            Ok(Status::Failed)
        }
    }
}

/// The newest finished report of `customer` whose period ends where this one starts: the
/// previous quarter's, for the comparison.
fn previous<S: Store + ?Sized>(
    st: &mut S,
    customer: &str,
    from: i64,
) -> Result<Option<Report>, StoreError> {
    let Some(prev) = st
        .reports(Some(customer), 0, None)?
        .into_iter()
        .find(|r| r.to == from && r.status == Status::Done)
    else {
        return Ok(None);
    };
    Ok(st
        .report(prev.id)?
        .and_then(|r| r.data)
        .and_then(|d| serde_json::from_slice::<Report>(&d).ok())
        // A report of an older format is not compared against.
        .filter(|r| r.format == REPORT_FORMAT))
}

/// The report stored as `data`, or why it cannot be read.
pub fn decode(data: &[u8]) -> Result<Report, String> {
    let r: Report = serde_json::from_slice(data)
        .map_err(|e| format!("the stored report does not read: {e}"))?;
    if r.format != REPORT_FORMAT {
        return Err(format!(
            "the stored report is of format {}, this collector reads {REPORT_FORMAT}: make it again",
            r.format
        ));
    }
    Ok(r)
}

/// How long the scheduler's lease lasts, renewed a third of that apart while it waits.
const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// The quarterly scheduler, on its own thread until `stop`: every `check_every` it makes the
/// reports that are due. Of several collectors on one database only the holder of the
/// `reports` lease does; when it takes the lease, it first ends what a gone run left half
/// made.
pub fn run_scheduler(
    database: &Database,
    file_policy: &SlaPolicy,
    cfg: &crate::config::ReportsConfig,
    stop: &tokio_util::sync::CancellationToken,
    holder: &str,
) {
    let mut st = match database.open() {
        Ok(st) => st,
        Err(e) => {
            warn!("report scheduler not started: {e}");
            return;
        }
    };
    let mut lease = crate::cluster::Lease::new("reports", holder, LEASE_TTL);
    let renew_every = LEASE_TTL / 3;
    let mut next_pass = std::time::Instant::now();
    let mut renewed = std::time::Instant::now() - renew_every;
    while !stop.is_cancelled() {
        if renewed.elapsed() >= renew_every || std::time::Instant::now() >= next_pass {
            renewed = std::time::Instant::now();
            if lease.round(&mut *st, now_millis()) == crate::cluster::Round::TookOver {
                match st
                    .abandon_reports(now_millis(), "the collector stopped before it was finished")
                {
                    Ok(0) => {}
                    Ok(n) => warn!("{n} report(s) left unfinished by the last run marked failed"),
                    Err(e) => warn!("reports: {e}"),
                }
            }
        }
        if std::time::Instant::now() >= next_pass {
            next_pass = std::time::Instant::now() + cfg.check_every;
            if lease.held()
                && let Err(e) = scheduler_pass(database, file_policy, cfg, stop)
            {
                warn!("report scheduler: {e}");
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    if let Err(e) = lease.release(&mut *st) {
        warn!("cannot give the reports lease up: {e}");
    }
}

/// One look: how many reports it made.
pub fn scheduler_pass(
    database: &Database,
    file_policy: &SlaPolicy,
    cfg: &crate::config::ReportsConfig,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<usize, StoreError> {
    let now = now_millis();
    let mut st = database.open()?;
    let mut first_seen = std::collections::BTreeMap::<String, i64>::new();
    for h in st.hosts(now)? {
        let e = first_seen.entry(h.customer).or_insert(h.first_seen);
        *e = (*e).min(h.first_seen);
    }
    let mut made = 0;
    for r in super::schedule::due(now, &first_seen, cfg) {
        if stop.is_cancelled() {
            break;
        }
        if let Some(id) = st.add_report(&r)? {
            make(database, file_policy, id, &r)?;
            made += 1;
        }
    }
    Ok(made)
}

//! Which quarterly reports are due (pure): per customer, the last quarter that has ended in
//! its zone, if one of its hosts was known before that quarter's end. The store makes each
//! once ([`crate::store::Store::add_report`]), so asking again, after a restart or from a
//! second collector, is harmless; a collector that was down on the first day catches up
//! when it next looks.

use super::period::{self, last_ended_quarter};
use super::record::NewReport;
use crate::config::ReportsConfig;
use aftercare_shared::model::UnixMillis;
use std::collections::BTreeMap;

/// Who the scheduler says asked for a report.
pub const SCHEDULER: &str = "scheduler";

/// The reports due at `now`, given each customer's earliest first sighting of a host.
pub fn due(
    now: UnixMillis,
    first_seen: &BTreeMap<String, UnixMillis>,
    cfg: &ReportsConfig,
) -> Vec<NewReport> {
    first_seen
        .iter()
        .filter_map(|(customer, &seen)| {
            let (lang, tz_name) = cfg.for_customer(customer);
            // Validated with the config; a zone that vanished from the database skips the
            // customer rather than stopping everyone's reports.
            let tz = period::zone(&tz_name).ok()?;
            let q = last_ended_quarter(now, &tz);
            (seen < q.to).then(|| NewReport {
                customer: customer.clone(),
                from: q.from,
                to: q.to,
                label: q.label,
                lang,
                time_zone: tz_name,
                scheduled: true,
                requested_by: SCHEDULER.into(),
                created_at: now,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CustomerReports;

    fn ms(s: &str) -> UnixMillis {
        s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn each_customer_gets_the_last_ended_quarter_in_its_zone_once_it_had_a_host() {
        let mut cfg = ReportsConfig::default();
        cfg.customers.insert(
            "acme".into(),
            CustomerReports {
                lang: Some("zh-CN".into()),
                time_zone: Some("Asia/Shanghai".into()),
            },
        );
        let seen = BTreeMap::from([
            ("acme".to_string(), ms("2026-05-01T00:00:00Z")),
            ("globex".to_string(), ms("2026-05-01T00:00:00Z")),
            // Came after Q2 ended: nothing to report on yet.
            ("initech".to_string(), ms("2026-07-15T00:00:00Z")),
        ]);
        // 2026-07-01 02:00 in Shanghai, still June 30 in UTC.
        let now = ms("2026-06-30T18:00:00Z");
        let due = due(now, &seen, &cfg);
        assert_eq!(due.len(), 1, "{due:?}");
        let acme = &due[0];
        assert_eq!(acme.customer, "acme");
        assert_eq!(acme.label, "2026-Q2");
        assert_eq!(acme.from, ms("2026-03-31T16:00:00Z"));
        assert_eq!(acme.to, ms("2026-06-30T16:00:00Z"));
        assert_eq!(
            (acme.lang.as_str(), acme.time_zone.as_str()),
            ("zh-CN", "Asia/Shanghai")
        );
        assert!(acme.scheduled);
        assert_eq!(acme.requested_by, SCHEDULER);

        // A day later UTC's quarter has ended too; initech still has nothing before it.
        let due = super::due(ms("2026-07-01T06:00:00Z"), &seen, &cfg);
        let names: Vec<(&str, &str)> = due
            .iter()
            .map(|r| (r.customer.as_str(), r.label.as_str()))
            .collect();
        assert_eq!(names, [("acme", "2026-Q2"), ("globex", "2026-Q2")]);
        assert_eq!(due[1].lang, "en");
        assert_eq!(due[1].from, ms("2026-04-01T00:00:00Z"));
    }
}

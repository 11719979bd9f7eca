//! Hosts for store tests on both backends.

#![allow(dead_code)]

use super::backends::Backend;
use aftercare_collector::store::{HostHello, HostId, Store};
use aftercare_shared::consent::ConsentRecord;
use aftercare_shared::model::HostFacts;
use aftercare_shared::protocol::Identity;

/// `customer/host` registered as its agent's Hello would, at `now`; its id.
///
/// PostgreSQL's `register_host` is still being written (with the rest of the sample and
/// host methods), so there the row goes in by SQL, with what a Hello stores; switch to
/// `register_host` for both once it lands.
pub fn register(b: &Backend, st: &mut dyn Store, customer: &str, host: &str, now: i64) -> HostId {
    let identity = Identity {
        customer: customer.into(),
        host: host.into(),
    };
    let hello = HostHello {
        identity: &identity,
        facts: &HostFacts::default(),
        agent_version: "0.1.0",
        consent: &ConsentRecord::default(),
        interval_ms: 10_000,
    };
    if !b.is_postgres() {
        return st.register_host(&hello, now).unwrap();
    }
    let mut c = ::postgres::Client::connect(&b.config_value(), ::postgres::NoTls).unwrap();
    c.query_one(
        "INSERT INTO hosts (customer, host, first_seen, agent_version, facts, consent,
                            interval_ms, connected)
         VALUES ($1, $2, $3, $4, $5, $6, $7, true)
         RETURNING id",
        &[
            &customer,
            &host,
            &now,
            &hello.agent_version,
            &serde_json::to_string(hello.facts).unwrap(),
            &serde_json::to_string(hello.consent).unwrap(),
            &(hello.interval_ms as i64),
        ],
    )
    .unwrap()
    .get(0)
}

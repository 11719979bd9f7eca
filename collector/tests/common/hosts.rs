//! Hosts for store tests on both backends.

#![allow(dead_code)]

use aftercare_collector::store::{HostHello, HostId, Store};
use aftercare_shared::consent::ConsentRecord;
use aftercare_shared::model::HostFacts;
use aftercare_shared::protocol::Identity;

/// `customer/host` registered as its agent's Hello would, at `now`; its id.
pub fn register(st: &mut dyn Store, customer: &str, host: &str, now: i64) -> HostId {
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
        cert_expires: None,
    };
    st.register_host(&hello, now).unwrap()
}

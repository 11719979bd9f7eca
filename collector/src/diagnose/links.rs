//! The live agent connections, by host: where a diagnostic can be sent. Ingest registers a
//! connection after Welcome and removes it when the connection ends, but only if it is
//! still the one registered (an agent that reconnected quickly has replaced it).

use crate::store::HostId;
use aftercare_shared::diag::ProbeInfo;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One agent's live connection.
#[derive(Clone)]
pub struct Link {
    pub conn: quinn::Connection,
    /// `customer/host`, for the diagnostic's log lines.
    pub name: String,
    /// The agent's protocol version, from its Hello.
    pub protocol: u16,
    /// What it advertised after Welcome (empty until then, or for old agents).
    pub probes: Vec<ProbeInfo>,
}

#[derive(Clone, Default)]
pub struct Links(Arc<Mutex<HashMap<HostId, Link>>>);

impl Links {
    pub fn new() -> Links {
        Links::default()
    }

    pub fn register(&self, host: HostId, name: String, conn: quinn::Connection, protocol: u16) {
        self.lock().insert(
            host,
            Link {
                conn,
                name,
                protocol,
                probes: Vec::new(),
            },
        );
    }

    /// The probes `host` advertised on connection `conn`.
    pub fn set_probes(&self, host: HostId, conn: &quinn::Connection, probes: Vec<ProbeInfo>) {
        if let Some(l) = self.lock().get_mut(&host)
            && l.conn.stable_id() == conn.stable_id()
        {
            l.probes = probes;
        }
    }

    /// Forget `host`'s link if it is still `conn`.
    pub fn unregister(&self, host: HostId, conn: &quinn::Connection) {
        let mut map = self.lock();
        if map
            .get(&host)
            .is_some_and(|l| l.conn.stable_id() == conn.stable_id())
        {
            map.remove(&host);
        }
    }

    pub fn get(&self, host: HostId) -> Option<Link> {
        self.lock().get(&host).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<HostId, Link>> {
        // A panic elsewhere while holding it leaves a map that is still consistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

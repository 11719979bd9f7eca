//! Several collectors on one database: who runs the jobs that must run once.
//!
//! Collectors do not know each other; they share the database, and a lease row in it
//! names the one running each singleton job (the rules engine, the report scheduler). The
//! holder renews it on every round of its job; when it dies, its lease lapses after `ttl`
//! and another collector's next round takes it over. See [`crate::store::Store::lease`].

use crate::store::{Store, StoreError};
use aftercare_shared::model::UnixMillis;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;
use tracing::{info, warn};

/// This collector, as lease rows name it: its machine's name and its QUIC port. Two live
/// collectors never share both, and a collector restarted in the same place takes its
/// own lease back at once instead of waiting for it to lapse.
pub fn holder_id(listen: SocketAddr) -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    let host = HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "collector".into())
    });
    format!("{host}:{}", listen.port())
}

/// A job's lease as its loop sees it: whether this collector runs the job now.
pub struct Lease {
    name: &'static str,
    holder: String,
    ttl: Duration,
    held: bool,
}

/// What [`Lease::round`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Run the job: the lease was held already.
    Run,
    /// Run the job, and reload what another holder may have changed: just taken over.
    TookOver,
    /// Another collector runs it.
    Skip,
}

impl Lease {
    /// The lease of job `name`, lapsing `ttl` after its last renewal: a few of the job's
    /// rounds, so one slow round does not hand it over.
    pub fn new(name: &'static str, holder: &str, ttl: Duration) -> Self {
        Lease {
            name,
            holder: holder.to_string(),
            ttl,
            held: false,
        }
    }

    /// Renew or take the lease at the start of a round. A database error counts as not
    /// holding it: better a round skipped than a job run twice.
    pub fn round(&mut self, st: &mut dyn Store, now: UnixMillis) -> Round {
        let ttl = self.ttl.as_millis() as i64;
        let got = match st.lease(self.name, &self.holder, ttl, now) {
            Ok(got) => got,
            Err(e) => {
                warn!(
                    job = self.name,
                    "cannot renew the lease, skipping this round: {e}"
                );
                false
            }
        };
        let was = std::mem::replace(&mut self.held, got);
        match (was, got) {
            (false, true) => {
                info!(job = self.name, holder = %self.holder, "this collector runs the job now");
                Round::TookOver
            }
            (true, false) => {
                warn!(job = self.name, "another collector took the job over");
                Round::Skip
            }
            (true, true) => Round::Run,
            (false, false) => Round::Skip,
        }
    }

    pub fn held(&self) -> bool {
        self.held
    }

    /// Give the lease up at shutdown, so another collector takes over at once.
    pub fn release(&mut self, st: &mut dyn Store) -> Result<(), StoreError> {
        if std::mem::take(&mut self.held) {
            st.release_lease(self.name, &self.holder)?;
        }
        Ok(())
    }
}

/// How long a job's lease lasts: three of its rounds, and at least three seconds.
pub fn ttl_for(every: Duration) -> Duration {
    (every * 3).max(Duration::from_secs(3))
}

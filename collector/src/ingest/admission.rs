//! How many connection attempts the collector works on at once, and which it turns away.
//!
//! Started all at once, a reconnect storm's handshakes share the CPU so thinly that few
//! finish before their agents' connect timeout, and the collector spends its time on
//! attempts already given up. So at most `max` attempts are between their first packet and
//! their Welcome (a slow handshake gives its place up early: see `HANDSHAKE_PLACE`); the
//! rest wait their turn in arrival order, without any TLS work, for up to [`QUEUE_WAIT`].
//! One that waits longer is refused (cheap: no TLS) and its agent retries after its
//! jittered backoff.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long an attempt waits for a place before it is refused: well within the agent's
/// default connect timeout (5 s), so its handshake still has time to finish.
pub const QUEUE_WAIT: Duration = Duration::from_secs(3);

/// How long a refused attempt is remembered: at least this, at most twice it. An agent
/// resends its first packet for at most its connect timeout (5 s by default).
const REFUSED_MEMORY: Duration = Duration::from_secs(5);

/// The places for connection attempts, shared by the accept loop and the attempts.
#[derive(Clone, Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    max: usize,
    waiting: Arc<AtomicUsize>,
    refused: Arc<Mutex<RecentlyRefused<quinn::ConnectionId>>>,
}

/// An admitted attempt's place; dropping it (at the Welcome, or when the attempt fails)
/// gives the place to the next waiting attempt.
pub type Admitted = OwnedSemaphorePermit;

impl Admission {
    pub fn new(max: usize) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(max)),
            max,
            waiting: Arc::new(AtomicUsize::new(0)),
            refused: Arc::default(),
        }
    }

    /// Wait for a place, at most `patience`. `None` when none came: the caller refuses the
    /// attempt, and copies of its first packet arriving later are [`refused_before`].
    ///
    /// [`refused_before`]: Admission::refused_before
    pub async fn admit(
        &self,
        first_cid: quinn::ConnectionId,
        patience: Duration,
    ) -> Option<Admitted> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        // Counted out however the wait ends, also when the caller drops it (a shutdown).
        let waited = Waiting(&self.waiting);
        let got = tokio::time::timeout(patience, self.slots.clone().acquire_owned()).await;
        drop(waited);
        match got {
            Ok(Ok(place)) => Some(place),
            // Timed out (the semaphore is never closed).
            _ => {
                self.refused
                    .lock()
                    .expect("not poisoned")
                    .insert(first_cid, Instant::now());
                None
            }
        }
    }

    /// Whether an attempt with this first connection id was refused lately. A refused agent
    /// starts a new attempt, but copies of the old one's first packet (resent while it
    /// waited) may still arrive. Each would be taken for a new attempt, wait its turn, and
    /// hold a place with a handshake nobody finishes; they are refused again at once.
    pub fn refused_before(&self, first_cid: &quinn::ConnectionId) -> bool {
        self.refused
            .lock()
            .expect("not poisoned")
            .contains(first_cid, Instant::now())
    }

    /// Attempts admitted and not yet welcomed or failed.
    pub fn in_progress(&self) -> usize {
        self.max.saturating_sub(self.slots.available_permits())
    }

    /// Attempts waiting for a place.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// One attempt counted among those waiting, until dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Keys remembered for [`REFUSED_MEMORY`] to twice that: two generations, the older dropped
/// whole, so memory follows the refusals of the last few seconds only.
#[derive(Debug)]
struct RecentlyRefused<K> {
    current: HashSet<K>,
    previous: HashSet<K>,
    since: Option<Instant>,
}

impl<K> Default for RecentlyRefused<K> {
    fn default() -> Self {
        RecentlyRefused {
            current: HashSet::new(),
            previous: HashSet::new(),
            since: None,
        }
    }
}

impl<K: Hash + Eq> RecentlyRefused<K> {
    fn rotate(&mut self, now: Instant) {
        let since = *self.since.get_or_insert(now);
        let age = now.saturating_duration_since(since);
        if age >= REFUSED_MEMORY {
            self.previous = if age >= 2 * REFUSED_MEMORY {
                HashSet::new()
            } else {
                std::mem::take(&mut self.current)
            };
            self.current.clear();
            self.since = Some(now);
        }
    }

    fn insert(&mut self, key: K, now: Instant) {
        self.rotate(now);
        self.current.insert(key);
    }

    fn contains(&mut self, key: &K, now: Instant) -> bool {
        self.rotate(now);
        self.current.contains(key) || self.previous.contains(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_remembered_for_the_memory_and_forgotten_after_twice_it() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut r = RecentlyRefused::default();
        r.insert(1u32, at(0));
        assert!(r.contains(&1, at(10)));
        assert!(!r.contains(&2, at(10)));
        // Past one memory the first generation is the older one, still remembered.
        r.insert(2, at(5_000));
        assert!(r.contains(&1, at(5_001)));
        assert!(r.contains(&2, at(5_001)));
        // Past the next, the first is gone and the second is the older one.
        assert!(!r.contains(&1, at(10_000)));
        assert!(r.contains(&2, at(10_000)));
        // A long quiet spell forgets everything at once.
        assert!(!r.contains(&2, at(30_000)));
    }

    fn cid(n: u8) -> quinn::ConnectionId {
        quinn::ConnectionId::new(&[n; 8])
    }

    #[tokio::test]
    async fn attempts_past_max_wait_their_turn_and_are_refused_past_their_patience() {
        let a = Admission::new(2);
        let first = a.admit(cid(1), QUEUE_WAIT).await.expect("a free place");
        let _second = a.admit(cid(2), QUEUE_WAIT).await.expect("a free place");
        assert_eq!((a.in_progress(), a.waiting()), (2, 0));

        // The third waits; a place freed meanwhile is its.
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { a.admit(cid(3), Duration::from_secs(60)).await }
        });
        while a.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(a.in_progress(), 2);
        drop(first);
        let third = waiting.await.unwrap().expect("the freed place");
        assert_eq!((a.in_progress(), a.waiting()), (2, 0));
        assert!(!a.refused_before(&cid(3)));

        // A fourth gets none within its patience: refused, and remembered as refused.
        assert!(a.admit(cid(4), Duration::from_millis(20)).await.is_none());
        assert_eq!(a.waiting(), 0);
        assert!(a.refused_before(&cid(4)));
        assert!(!a.refused_before(&cid(5)));
        // One given up by its caller (a shutdown) is no longer counted as waiting.
        let abandoned = tokio::spawn({
            let a = a.clone();
            async move { a.admit(cid(6), Duration::from_secs(60)).await }
        });
        while a.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        abandoned.abort();
        assert!(abandoned.await.unwrap_err().is_cancelled());
        assert_eq!(a.waiting(), 0);
        drop(third);
        assert_eq!(a.in_progress(), 1);
    }
}

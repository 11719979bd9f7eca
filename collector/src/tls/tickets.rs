//! Stateless TLS 1.3 session tickets whose keys survive a restart, so agents that lost
//! their connection to a restarted collector (or to another collector sharing its key)
//! resume with the ticket they hold instead of a full handshake: no certificate chain
//! to verify, no signatures on either side, about half the handshake CPU.
//!
//! Keys are derived (HKDF-SHA256) from the server's private key and the CA certificate,
//! one per [`PERIOD`]: no key file to keep or share, collectors behind one load balancer
//! (same server key) accept each other's tickets, and a new CA or server key ends every
//! ticket. A ticket is accepted in the period it was made and the next; resumption still
//! runs an ephemeral key exchange (rustls only offers `psk_dhe_ke`), so traffic keys keep
//! forward secrecy. What a ticket cannot do is re-check the client certificate: ingest
//! therefore checks the expiry of the certificate a resumed session carries itself.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How long one ticket key is used for making tickets; tickets stay good one period more.
/// TLS 1.3 allows a ticket lifetime of at most 7 days.
pub const PERIOD_SECS: u64 = 7 * 24 * 3600;

const PERIOD_BYTES: usize = 8;
/// Keys kept derived: this period's and the one before (a ticket lives in both).
const KEPT_KEYS: usize = 2;
const OVERHEAD: usize = PERIOD_BYTES + NONCE_LEN + 16;

/// Tickets made and tickets accepted, for `/metrics` and the load generator.
#[derive(Debug, Default)]
pub struct TicketCounts {
    pub issued: AtomicU64,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketTally {
    pub issued: u64,
    pub accepted: u64,
    pub refused: u64,
}

impl TicketCounts {
    pub fn tally(&self) -> TicketTally {
        TicketTally {
            issued: self.issued.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

pub struct Ticketer {
    prk: hkdf::Prk,
    /// The keys of the last periods used, newest first: a handshake seals 8 tickets, and
    /// deriving the key for each showed in a reconnect storm's profile.
    keys: Mutex<Vec<(u64, Arc<LessSafeKey>)>>,
    rng: SystemRandom,
    clock: fn() -> u64,
    counts: Arc<TicketCounts>,
}

impl std::fmt::Debug for Ticketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Ticketer")
            .field("counts", &self.counts)
            .finish()
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Ticketer {
    /// Keys from `server_key` (DER or PEM bytes: any stable secret) and `ca_cert`.
    pub fn new(server_key: &[u8], ca_cert: &[u8]) -> Ticketer {
        Self::with_clock(server_key, ca_cert, unix_secs)
    }

    fn with_clock(server_key: &[u8], ca_cert: &[u8], clock: fn() -> u64) -> Ticketer {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"aftercare session tickets v1");
        let ikm = [server_key, b"\0", ca_cert].concat();
        Ticketer {
            prk: salt.extract(&ikm),
            keys: Mutex::new(Vec::with_capacity(KEPT_KEYS + 1)),
            rng: SystemRandom::new(),
            clock,
            counts: Arc::default(),
        }
    }

    pub fn counts(&self) -> Arc<TicketCounts> {
        self.counts.clone()
    }

    /// The key of `period`, derived once and kept while its period is among the last
    /// [`KEPT_KEYS`] used.
    fn key(&self, period: u64) -> Arc<LessSafeKey> {
        // A panic elsewhere while holding it leaves a list that is still consistent.
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, k)) = keys.iter().find(|(p, _)| *p == period) {
            return k.clone();
        }
        let k = Arc::new(self.derive(period));
        keys.push((period, k.clone()));
        keys.sort_by_key(|k| std::cmp::Reverse(k.0));
        keys.truncate(KEPT_KEYS);
        k
    }

    fn derive(&self, period: u64) -> LessSafeKey {
        let info = period.to_be_bytes();
        let info = [info.as_slice()];
        let okm = self
            .prk
            .expand(&info, &CHACHA20_POLY1305)
            .expect("the key length is the AEAD's own");
        let mut key = [0u8; 32];
        okm.fill(&mut key).expect("32 bytes for ChaCha20-Poly1305");
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key).expect("32-byte key"))
    }

    fn period_now(&self) -> u64 {
        (self.clock)() / PERIOD_SECS
    }

    fn seal(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let period = self.period_now();
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(OVERHEAD + plain.len());
        out.extend_from_slice(&period.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .key(period)
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(period.to_be_bytes()),
                &mut out[PERIOD_BYTES + NONCE_LEN..],
            )
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    fn open(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() < OVERHEAD {
            return None;
        }
        let (period, rest) = ticket.split_at(PERIOD_BYTES);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let period_bytes: [u8; PERIOD_BYTES] = period.try_into().ok()?;
        let period = u64::from_be_bytes(period_bytes);
        let now = self.period_now();
        // This period's key or the one before; never a key from the future.
        if period != now && period.checked_add(1) != Some(now) {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain_len = self
            .key(period)
            .open_in_place(nonce, Aad::from(period_bytes), &mut buf)
            .ok()?
            .len();
        buf.truncate(plain_len);
        Some(buf)
    }
}

impl rustls::server::ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        PERIOD_SECS as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let t = self.seal(plain);
        if t.is_some() {
            self.counts.issued.fetch_add(1, Ordering::Relaxed);
        }
        t
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let p = self.open(cipher);
        let counter = if p.is_some() {
            &self.counts.accepted
        } else {
            &self.counts.refused
        };
        counter.fetch_add(1, Ordering::Relaxed);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::ProducesTickets;

    const T0: u64 = 1_780_000_000;

    fn at(secs: u64) -> fn() -> u64 {
        // fn pointers cannot capture: a small table of the instants the tests use.
        match secs {
            0 => || T0,
            1 => || T0 + PERIOD_SECS,
            2 => || T0 + 2 * PERIOD_SECS,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_ticket_opens_under_the_same_key_after_a_restart() {
        let made = Ticketer::with_clock(b"server key", b"ca", at(0));
        let ticket = made.encrypt(b"session state").unwrap();
        assert_ne!(&ticket[OVERHEAD - 16..OVERHEAD - 16 + 13], b"session state");
        // A new process: a new Ticketer from the same files.
        let restarted = Ticketer::with_clock(b"server key", b"ca", at(0));
        assert_eq!(restarted.decrypt(&ticket).unwrap(), b"session state");
        assert_eq!(restarted.counts().tally().accepted, 1);
        assert_eq!(made.counts().tally().issued, 1);
    }

    #[test]
    fn another_key_or_ca_or_a_changed_byte_is_refused() {
        let made = Ticketer::with_clock(b"server key", b"ca", at(0));
        let ticket = made.encrypt(b"session state").unwrap();
        for other in [
            Ticketer::with_clock(b"other key", b"ca", at(0)),
            Ticketer::with_clock(b"server key", b"other ca", at(0)),
        ] {
            assert_eq!(other.decrypt(&ticket), None);
            assert_eq!(other.counts().tally().refused, 1);
        }
        for i in 0..ticket.len() {
            let mut bad = ticket.clone();
            bad[i] ^= 0x40;
            assert_eq!(made.decrypt(&bad), None, "byte {i} changed");
        }
        for len in 0..ticket.len() {
            assert_eq!(made.decrypt(&ticket[..len]), None, "cut to {len}");
        }
        assert_eq!(made.decrypt(&[]), None);
    }

    #[test]
    fn a_ticket_lives_its_period_and_the_next_only() {
        let made = Ticketer::with_clock(b"k", b"ca", at(0));
        let ticket = made.encrypt(b"s").unwrap();
        assert!(
            Ticketer::with_clock(b"k", b"ca", at(1))
                .decrypt(&ticket)
                .is_some()
        );
        assert!(
            Ticketer::with_clock(b"k", b"ca", at(2))
                .decrypt(&ticket)
                .is_none()
        );
        // Made "in the future" (a clock set back): refused, not trusted.
        let later = Ticketer::with_clock(b"k", b"ca", at(1))
            .encrypt(b"s")
            .unwrap();
        assert!(made.decrypt(&later).is_none());
    }

    /// One collector running across period boundaries: its kept keys follow the clock, and
    /// a ticket still lives its period and the next only.
    #[test]
    fn kept_keys_follow_the_periods() {
        static NOW: AtomicU64 = AtomicU64::new(T0);
        let t = Ticketer::with_clock(b"k", b"ca", || NOW.load(Ordering::Relaxed));
        let first = t.encrypt(b"s").unwrap();
        NOW.store(T0 + PERIOD_SECS, Ordering::Relaxed);
        let second = t.encrypt(b"s").unwrap();
        assert!(t.decrypt(&first).is_some());
        NOW.store(T0 + 2 * PERIOD_SECS, Ordering::Relaxed);
        assert!(t.decrypt(&first).is_none());
        assert!(t.decrypt(&second).is_some());
        assert!(t.encrypt(b"s").is_some());
        let periods: Vec<u64> = t.keys.lock().unwrap().iter().map(|(p, _)| *p).collect();
        let now = (T0 + 2 * PERIOD_SECS) / PERIOD_SECS;
        assert_eq!(periods, [now, now - 1]);
    }

    #[test]
    fn two_tickets_for_the_same_state_differ() {
        let t = Ticketer::with_clock(b"k", b"ca", at(0));
        assert_ne!(t.encrypt(b"s").unwrap(), t.encrypt(b"s").unwrap());
    }
}

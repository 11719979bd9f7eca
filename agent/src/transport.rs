//! The QUIC link to the collector: endpoint, handshake (Hello → Welcome), framed I/O, and the
//! reconnect backoff.

use crate::config::CollectorConfig;
use aftercare_shared::codec::{self, CodecError};
use aftercare_shared::protocol::{self, AgentMsg, CollectorMsg, Hello, Welcome};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Frame bytes this agent process wrote to its collector links, all streams together (the
/// `agent.sent.bytes` counter, so the inspection report can show what monitoring costs the
/// customer's network). One atomic add per frame: nothing else to keep or run.
static SENT_BYTES: AtomicU64 = AtomicU64::new(0);

/// Count `n` bytes written to the link.
pub fn count_sent(n: usize) {
    SENT_BYTES.fetch_add(n as u64, Ordering::Relaxed);
}

/// Bytes written to the link since the process started.
pub fn sent_bytes() -> u64 {
    SENT_BYTES.load(Ordering::Relaxed)
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot resolve collector address '{addr}': {reason}")]
    Resolve { addr: String, reason: String },
    #[error("cannot start a connection to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: quinn::ConnectError,
    },
    #[error("connection to {addr} failed: {source}")]
    Connection {
        addr: SocketAddr,
        source: quinn::ConnectionError,
    },
    #[error("collector refused this agent: {0}")]
    Refused(String),
    #[error("collector broke protocol: {0}")]
    Protocol(String),
    #[error("{0}")]
    Codec(#[from] CodecError),
    #[error("stream closed: {0}")]
    Stream(String),
    #[error("no answer from the collector within {0:?}")]
    Timeout(Duration),
    #[error(
        "no handshake with the collector within {0:?} (collector.connect_timeout); trying again"
    )]
    Handshake(Duration),
}

impl LinkError {
    /// Whether the collector turned the attempt away before any handshake (QUIC's
    /// CONNECTION_REFUSED): it is up, but busy with other attempts, or stopping.
    pub fn is_refused_attempt(&self) -> bool {
        matches!(
            self,
            LinkError::Connection {
                source: quinn::ConnectionError::ConnectionClosed(close),
                ..
            } if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED
        )
    }
}

/// The longest wait before retrying an attempt the collector refused
/// ([`LinkError::is_refused_attempt`]), whatever `reconnect_max` says. The refusal cost the
/// collector no TLS work, so trying again soon is cheap for it; waiting the minute that an
/// unreachable collector earns would only delay the data. After a restart, a collector
/// turns away what it cannot take yet, and its agents come back within seconds.
pub const REFUSED_RETRY_MAX: Duration = Duration::from_secs(4);

/// Wait before reconnect attempt `attempt` (0-based) after a failed one: [`backoff`] from
/// `min` to `max`, capped at [`REFUSED_RETRY_MAX`] when the attempt was `refused` (but never
/// below `min`).
pub fn retry_wait(
    attempt: u32,
    min: Duration,
    max: Duration,
    refused: bool,
    rand01: f64,
) -> Duration {
    let max = if refused {
        max.min(REFUSED_RETRY_MAX).max(min)
    } else {
        max
    };
    backoff(attempt, min, max, rand01)
}

/// The window a stopping collector asked its agents to spread their return over
/// ([`protocol::shutdown_reason`]), from how the connection ended.
pub fn return_window(e: &quinn::ConnectionError) -> Option<Duration> {
    match e {
        quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code == quinn::VarInt::from_u32(protocol::CLOSE_SHUTDOWN) =>
        {
            protocol::return_window(&c.reason)
        }
        _ => None,
    }
}

/// The wait before the first attempt after a link was lost: a random moment within the
/// `window` a stopping collector gave (even past `max`: the collector knows how many agents
/// it sends away, and at most [`protocol::MAX_RETURN_WINDOW`]), else the first step of
/// [`backoff`].
pub fn first_wait(window: Option<Duration>, min: Duration, max: Duration, rand01: f64) -> Duration {
    let step = backoff(0, min, max, rand01);
    match window {
        Some(w) => step.max(w.mul_f64(rand01.clamp(0.0, 1.0))),
        None => step,
    }
}

/// An established, welcomed link.
pub struct Link {
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    pub welcome: Welcome,
}

/// A client endpoint on an ephemeral UDP port of the right address family.
pub fn endpoint(
    client: quinn::ClientConfig,
    for_addr_v6: bool,
) -> std::io::Result<quinn::Endpoint> {
    let bind: SocketAddr = if for_addr_v6 {
        "[::]:0".parse().expect("literal")
    } else {
        "0.0.0.0:0".parse().expect("literal")
    };
    let mut ep = quinn::Endpoint::client(bind)?;
    ep.set_default_client_config(client);
    Ok(ep)
}

pub async fn resolve(addr: &str) -> Result<SocketAddr, LinkError> {
    let mut it = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| LinkError::Resolve {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
    it.next().ok_or_else(|| LinkError::Resolve {
        addr: addr.to_string(),
        reason: "no addresses".into(),
    })
}

/// Connect, send Hello, wait for Welcome.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    cfg: &CollectorConfig,
    addr: SocketAddr,
    hello: &Hello,
) -> Result<Link, LinkError> {
    let connecting = endpoint
        .connect(addr, &cfg.server_name)
        .map_err(|source| LinkError::Connect { addr, source })?;
    welcomed(connecting, cfg, addr, hello).await
}

/// [`connect`] with a TLS identity of the connection's own rather than the endpoint's: for
/// many agents sharing one UDP socket (the load generator's).
pub async fn connect_with(
    endpoint: &quinn::Endpoint,
    client: quinn::ClientConfig,
    cfg: &CollectorConfig,
    addr: SocketAddr,
    hello: &Hello,
) -> Result<Link, LinkError> {
    let connecting = endpoint
        .connect_with(client, addr, &cfg.server_name)
        .map_err(|source| LinkError::Connect { addr, source })?;
    welcomed(connecting, cfg, addr, hello).await
}

/// The handshake of `connecting`, then Hello and Welcome.
async fn welcomed(
    connecting: quinn::Connecting,
    cfg: &CollectorConfig,
    addr: SocketAddr,
    hello: &Hello,
) -> Result<Link, LinkError> {
    let max = cfg.max_frame_bytes;
    // Dropping the attempt abandons it; the caller tries again with backoff.
    let conn = tokio::time::timeout(cfg.connect_timeout, connecting)
        .await
        .map_err(|_| LinkError::Handshake(cfg.connect_timeout))?
        .map_err(|source| LinkError::Connection { addr, source })?;
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|source| LinkError::Connection { addr, source })?;
    // A collector that refuses the connection may close it before answering: say its
    // reason (for example an expired certificate) rather than "connection lost".
    let closed = |e: LinkError| match conn.close_reason() {
        Some(source) => LinkError::Connection { addr, source },
        None => e,
    };
    let frame = codec::to_frame(&AgentMsg::Hello(hello.clone()), max)?;
    send.write_all(&frame)
        .await
        .map_err(|e| closed(LinkError::Stream(e.to_string())))?;
    count_sent(frame.len());
    let wait = Duration::from_secs(15);
    let answer = tokio::time::timeout(wait, read_msg(&mut recv, max))
        .await
        .map_err(|_| LinkError::Timeout(wait))?
        .map_err(closed)?;
    match answer {
        Some(CollectorMsg::Welcome(welcome)) => Ok(Link {
            conn,
            send,
            recv,
            welcome,
        }),
        Some(CollectorMsg::Refused { reason }) => Err(LinkError::Refused(reason)),
        Some(other) => Err(LinkError::Protocol(format!(
            "expected Welcome, got {other:?}"
        ))),
        None => Err(LinkError::Stream("closed before Welcome".into())),
    }
}

/// Read one message; `None` at a clean end of stream.
pub async fn read_msg(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<Option<CollectorMsg>, LinkError> {
    let mut hdr = [0u8; 4];
    match recv.read_exact(&mut hdr).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(LinkError::Stream(e.to_string())),
    }
    let total = codec::frame_len(&hdr, max)?.expect("4 header bytes present");
    let mut body = vec![0u8; total - 4];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| LinkError::Stream(e.to_string()))?;
    Ok(Some(codec::decode_body(&body)?))
}

/// Wait before reconnect attempt `attempt` (0-based): exponential from `min` to `max`, with
/// "equal jitter" (half fixed, half random) so that many agents restarted together spread
/// out but none retries at once. `rand01` is a number in [0, 1).
pub fn backoff(attempt: u32, min: Duration, max: Duration, rand01: f64) -> Duration {
    let base = min
        .saturating_mul(1u32 << attempt.min(20))
        .min(max)
        .as_secs_f64();
    Duration::from_secs_f64(base / 2.0 + base / 2.0 * rand01.clamp(0.0, 1.0))
}

/// A small xorshift generator: jitter needs no cryptographic randomness, and a crate for it
/// would cost the agent binary size.
pub struct Jitter(u64);

impl Jitter {
    /// Seeded from the system's randomness. Not from the clock: agents started together
    /// (a fleet booting after a power cut, or a load generator's thousands in one process)
    /// read nearly the same nanoseconds, and xorshift's first outputs from nearby seeds are
    /// nearly equal, so they would all retry at the same moment, which is what jitter is
    /// for preventing.
    pub fn seeded() -> Self {
        let mut b = [0u8; 8];
        let seed = match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b) {
            Ok(()) => u64::from_le_bytes(b),
            Err(_) => {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1);
                t ^ (u64::from(std::process::id()) << 32)
            }
        };
        Self::from_seed(seed)
    }

    /// Nearby seeds give unrelated sequences: the seed is scrambled (splitmix64's finaliser).
    pub fn from_seed(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Jitter((z ^ (z >> 31)) | 1)
    }

    pub fn next01(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopping_collectors_window_spreads_the_first_attempt_and_nothing_else_does() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let window = Duration::from_secs(10);
        assert_eq!(first_wait(None, min, max, 1.0), min);
        assert_eq!(first_wait(Some(window), min, max, 0.0), min / 2);
        assert_eq!(first_wait(Some(window), min, max, 0.5), window / 2);
        assert_eq!(first_wait(Some(window), min, max, 1.0), window, "past max");
        assert_eq!(first_wait(Some(Duration::ZERO), min, max, 1.0), min);

        let closed = |code: u32, reason: String| {
            quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
                error_code: quinn::VarInt::from_u32(code),
                reason: reason.into_bytes().into(),
            })
        };
        let told = protocol::shutdown_reason(window);
        assert_eq!(
            return_window(&closed(protocol::CLOSE_SHUTDOWN, told.clone())),
            Some(window)
        );
        assert_eq!(return_window(&closed(0, told)), None, "not a shutdown");
        assert_eq!(
            return_window(&closed(
                protocol::CLOSE_SHUTDOWN,
                "collector shutting down".into()
            )),
            None,
            "an older collector"
        );
        assert_eq!(return_window(&quinn::ConnectionError::TimedOut), None);
    }

    #[test]
    fn agents_seeded_together_do_not_draw_alike() {
        // Seeds a nanosecond apart (a clock read by agents started together): their first
        // draws must spread over [0, 1) as independent ones would.
        let mut tenths = [0u32; 10];
        for i in 0..10_000u64 {
            let v = Jitter::from_seed(1_764_600_000_000_000_000 + i).next01();
            assert!((0.0..1.0).contains(&v));
            tenths[(v * 10.0) as usize] += 1;
        }
        for (k, n) in tenths.iter().enumerate() {
            assert!(
                (850..1150).contains(n),
                "tenth {k} drew {n} of 10,000: {tenths:?}"
            );
        }
        let mut seen = [0u32; 10];
        for _ in 0..2000 {
            seen[(Jitter::seeded().next01() * 10.0) as usize] += 1;
        }
        assert!(
            seen.iter().all(|&n| n > 100),
            "system-seeded draws: {seen:?}"
        );
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let min = Duration::from_millis(500);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(0, min, max, 0.0), Duration::from_millis(250));
        assert_eq!(backoff(0, min, max, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(3, min, max, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(30, min, max, 1.0), max);
        assert!(backoff(30, min, max, 0.0) >= max / 2);
        let mut j = Jitter::seeded();
        for _ in 0..1000 {
            let v = j.next01();
            assert!((0.0..1.0).contains(&v));
        }
    }

    #[test]
    fn a_refused_attempt_is_retried_within_seconds_an_unanswered_one_backs_off_further() {
        let (min, max) = (Duration::from_millis(500), Duration::from_secs(60));
        assert_eq!(retry_wait(10, min, max, false, 1.0), max);
        assert_eq!(retry_wait(10, min, max, true, 1.0), REFUSED_RETRY_MAX);
        assert!(retry_wait(10, min, max, true, 0.0) >= REFUSED_RETRY_MAX / 2);
        // Early attempts grow as usual either way.
        assert_eq!(retry_wait(1, min, max, true, 1.0), Duration::from_secs(1));
        assert_eq!(retry_wait(1, min, max, false, 1.0), Duration::from_secs(1));
        // A configured maximum below the cap, or a minimum above it, is kept.
        let two = Duration::from_secs(2);
        assert_eq!(retry_wait(10, min, two, true, 1.0), two);
        let ten = Duration::from_secs(10);
        assert_eq!(retry_wait(0, ten, max, true, 1.0), ten);
    }
}

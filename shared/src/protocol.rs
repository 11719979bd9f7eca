//! The messages of protocol `aftercare/1`.
//!
//! One connection per agent, one bidirectional QUIC stream on it. The agent speaks first:
//!
//! ```text
//! agent                                   collector
//!   Hello{version, facts, consent} ----->
//!                                  <----- Welcome{identity from cert, high-water marks}
//!                                         | Refused{reason}            (then close)
//!   Batch{stream, seq, payload} -------->   (committed durably, then)
//!                                  <----- Ack{stream, seq}   | Rejected{stream, seq, reason}
//!   ConsentUpdate{record} -------------->   (stored; applies to later batches)
//!   Probes{what this host offers} ------>   (version 3 agents, after Welcome from a
//!                                            version 3 collector)
//! ```
//!
//! Version 3 adds remote diagnosis: the collector opens a further bidirectional stream per
//! diagnostic on the same connection (see `crate::diag`); an agent of an older version is
//! never asked.
//!
//! A stopping collector finishes the stream and closes with [`CLOSE_SHUTDOWN`] and a reason
//! naming the window its agents should spread their return over ([`shutdown_reason`]);
//! the reason is plain text, so agents that do not read it only log it.
//!
//! Batches of one stream are sent in sequence order and acknowledged in that order. The
//! collector keeps, per (host, stream), the highest sequence committed, in the same
//! transaction as the data: a batch at or below it is a redelivery, acknowledged again and
//! not stored twice. Sequence numbers are `epoch << 32 | counter`, where the agent's epoch
//! grows at every start (and jumps past the collector's high-water mark if the agent lost
//! its state), so they only ever grow.

use crate::consent::{ConsentRecord, Scope};
use crate::model::{HostFacts, LogRecord, LossReport, MetricSnapshot};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// ALPN of this protocol version; the TLS handshake fails for any other.
pub const ALPN: &[u8] = b"aftercare/1";
/// Carried in Hello and Welcome, so a mismatch is refused with a message naming both.
/// Version 2 added [`Payload::LogBlock`]; a version 2 collector still takes version 1
/// agents, whose log batches are [`Payload::Logs`]. Version 3 added remote diagnosis
/// ([`AgentMsg::Probes`] and diagnostic streams); older agents still stream data.
pub const PROTOCOL_VERSION: u16 = 3;
/// The first version that answers diagnostic streams.
pub const DIAGNOSTICS_PROTOCOL: u16 = 3;
/// The oldest agent protocol a collector of this build accepts.
pub const MIN_AGENT_PROTOCOL: u16 = 1;

/// Who a peer is: the customer and host named by its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    pub customer: String,
    pub host: String,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.customer, self.host)
    }
}

/// A data stream of one host. Each has its own sequence numbers and consent scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StreamId {
    Metrics,
    Logs,
}

impl StreamId {
    pub const ALL: [StreamId; 2] = [StreamId::Metrics, StreamId::Logs];

    pub fn scope(self) -> Scope {
        match self {
            StreamId::Metrics => Scope::Metrics,
            StreamId::Logs => Scope::Logs,
        }
    }

    /// Stable number for storage.
    pub fn code(self) -> u8 {
        match self {
            StreamId::Metrics => 1,
            StreamId::Logs => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<StreamId> {
        StreamId::ALL.into_iter().find(|s| s.code() == code)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StreamId::Metrics => "metrics",
            StreamId::Logs => "logs",
        }
    }
}

/// The first message on a connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Must stay the first field: a collector reads it even from a Hello it cannot decode.
    pub protocol_version: u16,
    pub agent_version: String,
    pub facts: HostFacts,
    pub consent: ConsentRecord,
    /// Who the agent believes it is. Optional; when present it must match the certificate.
    pub claimed: Option<Identity>,
    /// The agent's collection interval, so the collector can tell when a host went silent.
    pub interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    Metrics {
        snapshot: MetricSnapshot,
        loss: LossReport,
    },
    /// Log records in the order they were read, already redacted on the host. What
    /// version 1 agents send; this build's agents send `LogBlock`.
    Logs {
        records: Vec<LogRecord>,
        loss: LossReport,
    },
    /// The same records as one compressed block (`crate::logblock`), as version 2 agents
    /// send them. Added last so that version 1 frames keep their encoding.
    LogBlock {
        block: serde_bytes::ByteBuf,
        loss: LossReport,
    },
}

impl Payload {
    /// A `LogBlock` of a compressed block (`crate::logblock::compress`).
    pub fn log_block(block: Vec<u8>, loss: LossReport) -> Payload {
        Payload::LogBlock {
            block: serde_bytes::ByteBuf::from(block),
            loss,
        }
    }

    pub fn stream(&self) -> StreamId {
        match self {
            Payload::Metrics { .. } => StreamId::Metrics,
            Payload::Logs { .. } | Payload::LogBlock { .. } => StreamId::Logs,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub seq: u64,
    /// A host name the batch claims to come from; when present it must match the certificate.
    pub claimed_host: Option<String>,
    pub payload: Payload,
}

impl Batch {
    pub fn stream(&self) -> StreamId {
        self.payload.stream()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // one Hello per connection; boxing buys nothing
pub enum AgentMsg {
    Hello(Hello),
    Batch(Batch),
    ConsentUpdate(ConsentRecord),
    /// The probes this agent would run (its allow-list), sent once after Welcome by version
    /// 3 agents to version 3 collectors. Added last so earlier variants keep their encoding.
    Probes(Vec<crate::diag::ProbeInfo>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol_version: u16,
    pub collector_version: String,
    /// The identity the collector took from the agent's certificate.
    pub identity: Identity,
    /// Per stream, the highest sequence number already committed for this host.
    pub high_water: Vec<(StreamId, u64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CollectorMsg {
    Welcome(Welcome),
    /// The connection is refused; the collector closes it after this message.
    Refused {
        reason: String,
    },
    /// The batch is durably committed (or was already: `duplicate`).
    Ack {
        stream: StreamId,
        seq: u64,
        duplicate: bool,
    },
    /// The batch will never be accepted (e.g. outside the recorded consent); do not resend.
    Rejected {
        stream: StreamId,
        seq: u64,
        reason: String,
    },
}

/// Sequence numbers: the epoch in the high 32 bits, a counter in the low 32.
pub fn seq(epoch: u32, counter: u32) -> u64 {
    (u64::from(epoch) << 32) | u64::from(counter)
}

pub fn seq_epoch(seq: u64) -> u32 {
    (seq >> 32) as u32
}

/// The QUIC application close code of a collector that is stopping.
pub const CLOSE_SHUTDOWN: u32 = 4;

/// The longest return window a stopping collector gives: past it, agents fall back on their
/// own backoff anyway, and a longer wait would only keep data back.
pub const MAX_RETURN_WINDOW: Duration = Duration::from_secs(600);

const RETURN_PREFIX: &str = "collector shutting down; come back within ";

/// The close reason of a stopping collector, with the window its agents should spread
/// their return over (each at a random moment within it), so that a restart is not met by
/// every agent at once. Plain text: an agent that does not know it just logs it.
pub fn shutdown_reason(window: Duration) -> String {
    let ms = window.min(MAX_RETURN_WINDOW).as_millis();
    format!("{RETURN_PREFIX}{ms} ms")
}

/// The return window in a stopping collector's close reason ([`shutdown_reason`]), if it
/// gives one; capped at [`MAX_RETURN_WINDOW`].
pub fn return_window(reason: &[u8]) -> Option<Duration> {
    let text = std::str::from_utf8(reason).ok()?;
    let ms: u64 = text
        .strip_prefix(RETURN_PREFIX)?
        .strip_suffix(" ms")?
        .parse()
        .ok()?;
    Some(Duration::from_millis(ms).min(MAX_RETURN_WINDOW))
}

#[cfg(test)]
mod return_tests {
    use super::*;

    #[test]
    fn a_return_window_is_read_back_from_the_close_reason_and_capped() {
        for w in [0, 1, 9_500, 600_000] {
            let w = Duration::from_millis(w);
            assert_eq!(return_window(shutdown_reason(w).as_bytes()), Some(w));
        }
        let long = shutdown_reason(Duration::from_secs(3600));
        assert_eq!(return_window(long.as_bytes()), Some(MAX_RETURN_WINDOW));
        assert_eq!(
            return_window(b"collector shutting down; come back within 99999999 ms"),
            Some(MAX_RETURN_WINDOW)
        );
        for other in [
            b"collector shutting down".as_slice(),
            b"collector shutting down; come back within soon ms",
            b"collector shutting down; come back within -5 ms",
            b"collector shutting down; come back within 5",
            b"\xff\xfe",
            b"",
        ] {
            assert_eq!(return_window(other), None, "{other:?}");
        }
    }
}

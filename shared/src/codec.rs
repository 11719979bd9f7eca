//! Framing: each message is `[length: u32 big-endian][flags: u8][body]`, where `length`
//! counts the flags byte and the body, and the body is the message in bincode 2 (standard
//! config, via serde).
//!
//! Decoding is pure: it looks at a byte buffer and answers a message and how many bytes it
//! used, "need more bytes", or an error. The frame length is checked against the cap before
//! anything is allocated, and bincode itself runs under a byte limit, so no input can make
//! the decoder allocate more than the cap or panic.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Default cap on one frame.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;
/// The largest cap a configuration may set.
pub const MAX_FRAME_LIMIT: usize = 64 * 1024 * 1024;
const HEADER: usize = 5;
/// Flag bits; none is defined yet in aftercare/1, so any set bit is refused.
const KNOWN_FLAGS: u8 = 0;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_FRAME_LIMIT>,
>;

fn config() -> Config {
    bincode::config::standard().with_limit::<MAX_FRAME_LIMIT>()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("frame of {len} bytes is over the {max}-byte cap")]
    TooLarge { len: usize, max: usize },
    #[error("frame has an empty body")]
    Empty,
    #[error("frame uses flags {0:#04x} that this version does not know")]
    UnknownFlags(u8),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("message could not be encoded: {0}")]
    Encode(String),
}

/// The outcome of looking at a buffer.
#[derive(Debug, PartialEq)]
pub enum Decoded<T> {
    /// A whole message, and how many bytes of the buffer it took.
    Frame(T, usize),
    /// The buffer holds only part of a frame; at least this many more bytes are needed.
    NeedMore(usize),
}

/// Append one framed message to `out`.
pub fn encode<T: Serialize>(msg: &T, max: usize, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    if let Err(e) = bincode::serde::encode_into_std_write(msg, out, config()) {
        out.truncate(start);
        return Err(CodecError::Encode(e.to_string()));
    }
    let len = out.len() - start - 4;
    if len > max {
        out.truncate(start);
        return Err(CodecError::TooLarge { len, max });
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    out[start + 4] = 0;
    Ok(())
}

/// Encode into a fresh buffer.
pub fn to_frame<T: Serialize>(msg: &T, max: usize) -> Result<Vec<u8>, CodecError> {
    let mut v = Vec::new();
    encode(msg, max, &mut v)?;
    Ok(v)
}

/// Read the header only: the total size of the frame at the start of `buf` (header included),
/// or `None` if fewer than the header's bytes are there. Fails if the frame is over the cap,
/// so a reader can refuse before buffering it.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, CodecError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max {
        return Err(CodecError::TooLarge { len, max });
    }
    if len == 0 {
        return Err(CodecError::Empty);
    }
    Ok(Some(4 + len))
}

/// Decode the first message in `buf`.
pub fn decode<T: DeserializeOwned>(buf: &[u8], max: usize) -> Result<Decoded<T>, CodecError> {
    let Some(total) = frame_len(buf, max)? else {
        return Ok(Decoded::NeedMore(4 - buf.len()));
    };
    if buf.len() < total {
        return Ok(Decoded::NeedMore(total - buf.len()));
    }
    let msg = decode_body(&buf[4..total])?;
    Ok(Decoded::Frame(msg, total))
}

/// Decode a frame's flags and body (the bytes after the length).
pub fn decode_body<T: DeserializeOwned>(frame: &[u8]) -> Result<T, CodecError> {
    let (&flags, body) = frame.split_first().ok_or(CodecError::Empty)?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(CodecError::UnknownFlags(flags));
    }
    let (msg, used) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Malformed(format!(
            "{} trailing bytes after the message",
            body.len() - used
        )));
    }
    Ok(msg)
}

/// The protocol version a Hello frame body announces, read even when the rest of the Hello
/// does not decode (a newer agent's Hello may carry fields this version does not know).
pub fn peek_hello_version(frame: &[u8]) -> Option<u16> {
    let (_, body) = frame.split_first()?;
    // Body: enum variant index (varint, 0 = Hello), then the u16 version (varint).
    let (variant, used): (u32, usize) = bincode::decode_from_slice(body, config()).ok()?;
    if variant != 0 {
        return None;
    }
    let (v, _): (u16, usize) = bincode::decode_from_slice(&body[used..], config()).ok()?;
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consent::{ConsentRecord, Scope};
    use crate::model::{HostFacts, LossReport, MetricKind, MetricSnapshot, Sample};
    use crate::protocol::*;
    use proptest::prelude::*;

    fn hello() -> AgentMsg {
        let mut consent = ConsentRecord::default();
        consent
            .grant_scopes(
                &[Scope::Metrics],
                "Ann",
                time::macros::datetime!(2026-11-01 00:00 UTC),
                None,
            )
            .unwrap();
        AgentMsg::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: "0.1.0".into(),
            facts: HostFacts {
                hostname: "db1".into(),
                cpu_count: 8,
                memory_bytes: 1 << 34,
                ..Default::default()
            },
            consent,
            claimed: Some(Identity {
                customer: "acme".into(),
                host: "db1".into(),
            }),
            interval_ms: 10_000,
        })
    }

    fn batch(n: usize) -> AgentMsg {
        AgentMsg::Batch(Batch {
            seq: seq(3, 7),
            claimed_host: None,
            payload: Payload::Metrics {
                snapshot: MetricSnapshot {
                    ts: 1_700_000_000_000,
                    samples: (0..n)
                        .map(|i| Sample {
                            name: "cpu.usage".into(),
                            labels: format!("core={i}"),
                            kind: MetricKind::Gauge,
                            value: i as f64 * 1.5,
                        })
                        .collect(),
                },
                loss: LossReport {
                    dropped_batches: 2,
                    ..Default::default()
                },
            },
        })
    }

    fn every_message() -> (Vec<AgentMsg>, Vec<CollectorMsg>) {
        let agent = vec![
            hello(),
            batch(0),
            batch(100),
            AgentMsg::Batch(Batch {
                seq: seq(1, 2),
                claimed_host: None,
                payload: Payload::Logs {
                    records: vec![crate::model::LogRecord {
                        source: "syslog".into(),
                        file: "/var/log/syslog".into(),
                        offset: 4096,
                        read_at: 1_700_000_000_000,
                        ts: Some(1_699_999_999_000),
                        severity: crate::model::Severity::Error,
                        line: "kernel: EXT4-fs error (device sda1): 数据".into(),
                        part: 0,
                    }],
                    loss: LossReport::default(),
                },
            }),
            AgentMsg::ConsentUpdate(ConsentRecord::default()),
        ];
        let collector = vec![
            CollectorMsg::Welcome(Welcome {
                protocol_version: 1,
                collector_version: "0.1.0".into(),
                identity: Identity {
                    customer: "acme".into(),
                    host: "db1".into(),
                },
                high_water: vec![(StreamId::Metrics, seq(2, 99))],
            }),
            CollectorMsg::Refused {
                reason: "no".into(),
            },
            CollectorMsg::Ack {
                stream: StreamId::Metrics,
                seq: 5,
                duplicate: true,
            },
            CollectorMsg::Rejected {
                stream: StreamId::Metrics,
                seq: 6,
                reason: "consent".into(),
            },
        ];
        (agent, collector)
    }

    #[test]
    fn every_message_round_trips() {
        let (agent, collector) = every_message();
        for m in agent {
            let f = to_frame(&m, DEFAULT_MAX_FRAME).unwrap();
            assert_eq!(
                decode::<AgentMsg>(&f, DEFAULT_MAX_FRAME).unwrap(),
                Decoded::Frame(m, f.len())
            );
        }
        for m in collector {
            let f = to_frame(&m, DEFAULT_MAX_FRAME).unwrap();
            assert_eq!(
                decode::<CollectorMsg>(&f, DEFAULT_MAX_FRAME).unwrap(),
                Decoded::Frame(m, f.len())
            );
        }
    }

    #[test]
    fn partial_frames_ask_for_more() {
        let f = to_frame(&batch(10), DEFAULT_MAX_FRAME).unwrap();
        for cut in 0..f.len() {
            match decode::<AgentMsg>(&f[..cut], DEFAULT_MAX_FRAME).unwrap() {
                Decoded::NeedMore(n) => assert!(n >= 1 && cut + n <= f.len()),
                Decoded::Frame(..) => panic!("decoded a frame from {cut} of {} bytes", f.len()),
            }
        }
        // Two frames back to back decode one at a time.
        let mut two = f.clone();
        two.extend_from_slice(&f);
        let Decoded::Frame(_, used) = decode::<AgentMsg>(&two, DEFAULT_MAX_FRAME).unwrap() else {
            panic!()
        };
        assert_eq!(used, f.len());
    }

    #[test]
    fn cap_is_checked_before_the_body_arrives() {
        let mut hdr = (100_000_000u32).to_be_bytes().to_vec();
        hdr.push(0);
        assert_eq!(
            decode::<AgentMsg>(&hdr, DEFAULT_MAX_FRAME),
            Err(CodecError::TooLarge {
                len: 100_000_000,
                max: DEFAULT_MAX_FRAME
            })
        );
        let big = batch(10_000);
        assert!(matches!(
            to_frame(&big, 1024),
            Err(CodecError::TooLarge { max: 1024, .. })
        ));
    }

    #[test]
    fn unknown_flags_and_trailing_bytes_are_refused() {
        let mut f = to_frame(&hello(), DEFAULT_MAX_FRAME).unwrap();
        f[4] = 0x80;
        assert_eq!(
            decode::<AgentMsg>(&f, DEFAULT_MAX_FRAME),
            Err(CodecError::UnknownFlags(0x80))
        );
        let mut f = to_frame(&hello(), DEFAULT_MAX_FRAME).unwrap();
        f.push(0);
        let len = (f.len() - 4) as u32;
        f[..4].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(
            decode::<AgentMsg>(&f, DEFAULT_MAX_FRAME),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn hello_version_is_readable_from_a_future_hello() {
        let f = to_frame(&hello(), DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(peek_hello_version(&f[4..]), Some(PROTOCOL_VERSION));
        // A version-2 Hello with a body this version cannot parse.
        let mut body = vec![0u8, 0u8, 2u8, 0xff, 0xff, 0xff];
        let (_, _) = (body.remove(0), ());
        let frame = [vec![0u8], body].concat();
        assert_eq!(peek_hello_version(&frame), Some(2));
        let b = to_frame(&batch(1), DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(peek_hello_version(&b[4..]), None);
    }

    #[test]
    fn a_huge_length_prefix_inside_the_body_is_an_error_not_an_allocation() {
        // Hello variant, version 1, then a string length of 2^60.
        let mut body = vec![0u8, 0u8, 1u8, 0xfd];
        body.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(matches!(
            decode_body::<AgentMsg>(&body),
            Err(CodecError::Malformed(_))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_bytes_decode_to_a_value_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<AgentMsg>(&bytes, DEFAULT_MAX_FRAME);
            let _ = decode::<CollectorMsg>(&bytes, DEFAULT_MAX_FRAME);
            let _ = peek_hello_version(&bytes);
        }

        #[test]
        fn any_body_behind_a_valid_header_is_handled(body in proptest::collection::vec(any::<u8>(), 1..512)) {
            let mut f = ((body.len()) as u32).to_be_bytes().to_vec();
            f.extend_from_slice(&body);
            match decode::<AgentMsg>(&f, DEFAULT_MAX_FRAME) {
                Ok(Decoded::Frame(m, used)) => {
                    prop_assert_eq!(used, f.len());
                    // What decodes re-encodes to the same value.
                    let again = to_frame(&m, DEFAULT_MAX_FRAME).unwrap();
                    prop_assert_eq!(decode::<AgentMsg>(&again, DEFAULT_MAX_FRAME).unwrap(), Decoded::Frame(m, again.len()));
                }
                Ok(Decoded::NeedMore(_)) => prop_assert!(false, "whole frame reported as partial"),
                Err(_) => {}
            }
        }

        #[test]
        fn random_batches_round_trip(
            seqn in any::<u64>(),
            ts in any::<i64>(),
            vals in proptest::collection::vec((any::<f64>().prop_filter("nan", |v| !v.is_nan()), "[a-z.]{1,12}", "[a-z=0-9,]{0,16}", any::<bool>()), 0..50),
            host in proptest::option::of("[a-z0-9-]{1,20}"),
        ) {
            let m = AgentMsg::Batch(Batch {
                seq: seqn,
                claimed_host: host,
                payload: Payload::Metrics {
                    snapshot: MetricSnapshot {
                        ts,
                        samples: vals.into_iter().map(|(value, name, labels, c)| Sample {
                            name, labels, value,
                            kind: if c { MetricKind::Counter } else { MetricKind::Gauge },
                        }).collect(),
                    },
                    loss: LossReport::default(),
                },
            });
            let f = to_frame(&m, DEFAULT_MAX_FRAME).unwrap();
            prop_assert_eq!(decode::<AgentMsg>(&f, DEFAULT_MAX_FRAME).unwrap(), Decoded::Frame(m, f.len()));
        }
    }
}

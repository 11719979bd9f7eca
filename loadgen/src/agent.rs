//! One simulated agent: its own certificate and QUIC connection, on a UDP socket of its own
//! or shared with others (see [`AGENTS_PER_SOCKET`]), the real agent's transport (Hello,
//! Welcome, framing), and batches written pipelined in
//! batches of up to [`WRITE_BYTES`] per `write_all` (one write per message is ~4x slower,
//! see ../shared/PROBES.md). Every acknowledgement is checked: once, in order, not a
//! duplicate. An ack's latency runs from the `write_all` that carried its batch to the Ack.

use crate::sim::{AgentSim, EPOCH, INTERVAL_MS, LogBursts, hello, host_name};
use aftercare_agent::config::CollectorConfig as AgentLinkConfig;
use aftercare_agent::transport::{self, Jitter, Link};
use aftercare_shared::codec;
use aftercare_shared::protocol::{CollectorMsg, StreamId, seq};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};

/// Frames are concatenated up to this many bytes per `write_all`.
pub const WRITE_BYTES: usize = 64 * 1024;
/// An agent that waits this long for an acknowledgement gives up (and the run fails).
pub const ACK_PATIENCE: Duration = Duration::from_secs(60);
/// A connection attempt that takes longer is abandoned and retried after a backoff.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(5);
/// An agent that cannot connect for this long fails the run.
const GIVE_UP: Duration = Duration::from_secs(60);
/// See [`Plan::connecting`].
const FIRST_CONNECTS: usize = 128;

/// How a connection attempt failed.
enum Failed {
    /// Nothing came back within [`CONNECT_PATIENCE`]: the attempt went unheard.
    Unanswered(String),
    /// Turned away before its handshake (busy or stopping): retried as the agent does.
    Refused(String),
    /// Reset, closed, or refused later: the agent heard at once.
    Other(String),
}

/// The connection attempts of one [`Agent::reconnect`].
#[derive(Clone, Debug, Default)]
pub struct Attempts {
    /// Including the one that was welcomed.
    pub made: u32,
    /// Those that got no answer and were given up after [`CONNECT_PATIENCE`].
    pub unanswered: u32,
    /// Each attempt: when it started, how long it took, and how it ended; for the report
    /// of the slowest agents.
    pub history: Vec<(Instant, Duration, String)>,
}

/// What every agent of a run shares.
pub struct Plan {
    pub addr: SocketAddr,
    pub link: AgentLinkConfig,
    /// Batches in flight (written, not yet acknowledged) per connection.
    pub window: usize,
    /// Timestamp of tick 0 (before each agent's phase).
    pub start: i64,
    /// First connections in progress at once: a fleet comes online at a rate the collector
    /// can take (10,000 handshakes at the same instant mostly time out and retry), while a
    /// reconnect after a restart is the storm it is, bounded only by the agents' backoff.
    pub connecting: Semaphore,
    /// One batch per this, each written at once (an agent's tick, with time compressed);
    /// `None`: as fast as the window allows.
    pub pace: Option<Duration>,
    /// Send these log bursts (stream logs) instead of metrics.
    pub logs: Option<Arc<LogBursts>>,
    /// Agents per UDP socket (see [`AGENTS_PER_SOCKET`]).
    pub per_socket: usize,
}

impl Plan {
    pub fn new(
        addr: SocketAddr,
        window: usize,
        per_socket: usize,
        start: i64,
        pace: Option<Duration>,
    ) -> Plan {
        Plan {
            addr,
            link: AgentLinkConfig {
                address: addr.to_string(),
                server_name: "localhost".into(),
                ca: Default::default(),
                cert: Default::default(),
                key: Default::default(),
                reconnect_min: Duration::from_millis(100),
                reconnect_max: Duration::from_secs(2),
                max_frame_bytes: codec::DEFAULT_MAX_FRAME,
                ack_timeout: ACK_PATIENCE,
                connect_timeout: CONNECT_PATIENCE,
            },
            window,
            start,
            pace,
            logs: None,
            per_socket: per_socket.max(1),
            connecting: Semaphore::new(FIRST_CONNECTS),
        }
    }
}

/// When [`Agent::reconnect`] makes its first attempt.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    Now,
    /// As the agent does after its link was lost: [`transport::first_wait`], spread over the
    /// window a stopping collector gave, if it gave one.
    AfterLoss(Option<Duration>),
}

/// What an agent saw while sending.
#[derive(Default)]
pub struct Sent {
    pub acked: u64,
    /// Microseconds from the write that carried a batch to its Ack.
    pub latencies_us: Vec<u32>,
    pub frame_bytes: u64,
    pub writes: u64,
    /// When the first Ack came back.
    pub first_ack: Option<Instant>,
}

/// How a run starts its agents together: each says it is connected, then waits for go.
pub struct Gate {
    pub ready: mpsc::Sender<()>,
    pub go: watch::Receiver<bool>,
}

impl Gate {
    async fn pass(self, name: &str) -> Result<(), String> {
        let Gate { ready, mut go } = self;
        let _ = ready.send(()).await;
        drop(ready);
        go.wait_for(|g| *g)
            .await
            .map(|_| ())
            .map_err(|_| format!("{name}: no start signal"))
    }
}

pub struct Agent {
    pub index: usize,
    pub name: String,
    sim: AgentSim,
    /// Shared with other agents; each connection has its own TLS identity, `client`.
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    plan: Arc<Plan>,
}

impl Agent {
    pub fn new(
        index: usize,
        endpoint: quinn::Endpoint,
        client: quinn::ClientConfig,
        plan: Arc<Plan>,
    ) -> Agent {
        Agent {
            index,
            sim: AgentSim::new(index as u64, plan.start),
            name: host_name(index),
            endpoint,
            client,
            plan,
        }
    }

    /// One connection attempt: QUIC handshake, Hello, Welcome.
    async fn connect(&self) -> Result<Link, Failed> {
        let p = &self.plan;
        tokio::time::timeout(
            CONNECT_PATIENCE,
            transport::connect_with(
                &self.endpoint,
                self.client.clone(),
                &p.link,
                p.addr,
                &hello(&self.name),
            ),
        )
        .await
        .map_err(|_| {
            Failed::Unanswered(format!(
                "{}: no Welcome within {CONNECT_PATIENCE:?}",
                self.name
            ))
        })?
        .map_err(|e| {
            let said = format!("{}: connect: {e}", self.name);
            // The agent's own connect timeout: its handshake went unanswered too.
            if matches!(e, transport::LinkError::Handshake(_)) {
                Failed::Unanswered(said)
            } else if e.is_refused_attempt() {
                Failed::Refused(said)
            } else {
                Failed::Other(said)
            }
        })
    }

    /// Connect on a fresh database (it must know nothing of this host) and pass the gate.
    pub async fn connect_fresh(&self, gate: Gate) -> Result<Link, String> {
        let (link, _) = {
            let _turn = self
                .plan
                .connecting
                .acquire()
                .await
                .map_err(|_| format!("{}: connecting closed", self.name))?;
            self.reconnect(Start::Now).await?
        };
        if !link.welcome.high_water.is_empty() {
            return Err(format!(
                "{}: a fresh database already holds data for it: {:?}",
                self.name, link.welcome.high_water
            ));
        }
        gate.pass(&self.name).await?;
        Ok(link)
    }

    /// Connect as the agent does: attempts spaced by the agent's own jittered backoff, the
    /// first as `start` says, until one is welcomed or [`GIVE_UP`] passes. Also what the
    /// attempts before it met.
    pub async fn reconnect(&self, start: Start) -> Result<(Link, Attempts), String> {
        let t = Instant::now();
        let mut jitter = Jitter::seeded();
        let link = &self.plan.link;
        let mut attempt = 0u32;
        let mut unanswered = 0u32;
        let mut refused = false;
        let mut history = Vec::new();
        loop {
            if attempt == 0 {
                if let Start::AfterLoss(window) = start {
                    let wait = transport::first_wait(
                        window,
                        link.reconnect_min,
                        link.reconnect_max,
                        jitter.next01(),
                    );
                    tokio::time::sleep(wait).await;
                }
            } else {
                let wait = transport::retry_wait(
                    attempt,
                    link.reconnect_min,
                    link.reconnect_max,
                    refused,
                    jitter.next01(),
                );
                tokio::time::sleep(wait).await;
            }
            attempt += 1;
            refused = false;
            let began = Instant::now();
            let outcome = self.connect().await;
            let took = began.elapsed();
            let e = match outcome {
                Ok(l) => {
                    history.push((began, took, "welcomed".to_string()));
                    let made = Attempts {
                        made: attempt,
                        unanswered,
                        history,
                    };
                    return Ok((l, made));
                }
                Err(Failed::Unanswered(e)) => {
                    unanswered += 1;
                    e
                }
                Err(Failed::Refused(e)) => {
                    refused = true;
                    e
                }
                Err(Failed::Other(e)) => e,
            };
            history.push((began, took, e.clone()));
            if t.elapsed() > GIVE_UP {
                return Err(format!("{e} (gave up after {attempt} attempts)"));
            }
        }
    }

    /// Send batches `first..last` (0-based ticks; batch `i` has sequence `i + 1`) on
    /// `link` pipelined within the window, and read their acknowledgements.
    pub async fn send(&mut self, link: &mut Link, first: u32, last: u32) -> Result<Sent, String> {
        let name = &self.name;
        let sim = &mut self.sim;
        let max = self.plan.link.max_frame_bytes;
        let (send, recv) = (&mut link.send, &mut link.recv);
        // Agents tick at different moments within the interval.
        let phase = (self.index as i64 * 7919) % INTERVAL_MS;
        let start = self.plan.start;
        let window = Semaphore::new(self.plan.window);
        // (seq, written at) of every batch written and not yet acknowledged, oldest first;
        // the writer and reader below share it (the lock is never held across an await).
        let in_flight: Mutex<VecDeque<(u64, Instant)>> = Mutex::new(VecDeque::new());
        let total = u64::from(last - first);
        let pace = self.plan.pace;
        let logs = self.plan.logs.clone();
        let (index, want_stream) = (
            self.index,
            if logs.is_some() {
                StreamId::Logs
            } else {
                StreamId::Metrics
            },
        );
        // Paced agents start spread over one pace, as real ones tick at different moments.
        let t0 = tokio::time::Instant::now()
            + pace.map_or(Duration::ZERO, |p| {
                p.mul_f64(phase as f64 / INTERVAL_MS as f64)
            });

        let writer = async {
            let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BYTES + 16 * 1024);
            let mut seqs: Vec<u64> = Vec::with_capacity(self.plan.window);
            let (mut frame_bytes, mut writes) = (0u64, 0u64);
            let mut i = first;
            loop {
                // Flush when the buffer is full, when the window is, or at the end.
                let room = i < last && window.available_permits() > 0;
                if !buf.is_empty() && (buf.len() >= WRITE_BYTES || !room || pace.is_some()) {
                    let now = Instant::now();
                    in_flight
                        .lock()
                        .expect("in-flight list")
                        .extend(seqs.drain(..).map(|s| (s, now)));
                    send.write_all(&buf)
                        .await
                        .map_err(|e| format!("{name}: write: {e}"))?;
                    frame_bytes += buf.len() as u64;
                    writes += 1;
                    buf.clear();
                }
                if i == last {
                    break;
                }
                if let Some(p) = pace {
                    tokio::time::sleep_until(t0 + p * (i - first)).await;
                }
                window
                    .acquire()
                    .await
                    .map_err(|_| format!("{name}: window closed"))?
                    .forget();
                let ts = start + i64::from(i) * INTERVAL_MS + phase + (sim.rng.next() % 6) as i64;
                let burst;
                let msg = match &logs {
                    Some(l) => {
                        burst = AgentSim::log_burst(i, l.block(index + i as usize));
                        &burst
                    }
                    None => sim.tick(i, ts),
                };
                seqs.push(seq(EPOCH, i + 1));
                codec::encode(msg, max, &mut buf).map_err(|e| format!("{name}: encode: {e}"))?;
                i += 1;
            }
            Ok::<_, String>((frame_bytes, writes))
        };

        let reader = async {
            let mut latencies_us = Vec::with_capacity(total as usize);
            let mut acked = 0u64;
            let mut first_ack = None;
            while acked < total {
                let msg = tokio::time::timeout(ACK_PATIENCE, transport::read_msg(recv, max))
                    .await
                    .map_err(|_| format!("{name}: no acknowledgement within {ACK_PATIENCE:?}"))?
                    .map_err(|e| format!("{name}: read: {e}"))?;
                match msg {
                    Some(CollectorMsg::Ack {
                        stream,
                        seq,
                        duplicate,
                    }) => {
                        let front = in_flight.lock().expect("in-flight list").pop_front();
                        let Some((want, at)) = front else {
                            return Err(format!("{name}: Ack of {seq:#x} for no batch in flight"));
                        };
                        if seq != want || stream != want_stream || duplicate {
                            return Err(format!(
                                "{name}: expected Ack of {want_stream:?} {want:#x}, got {stream:?} \
                                 {seq:#x} (duplicate: {duplicate})"
                            ));
                        }
                        latencies_us.push(at.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        first_ack.get_or_insert_with(Instant::now);
                        acked += 1;
                        window.add_permits(1);
                    }
                    Some(other) => return Err(format!("{name}: unexpected answer {other:?}")),
                    None => {
                        return Err(format!(
                            "{name}: the collector closed the stream after {acked} acks"
                        ));
                    }
                }
            }
            Ok::<_, String>((acked, latencies_us, first_ack))
        };

        let ((frame_bytes, writes), (acked, latencies_us, first_ack)) =
            tokio::try_join!(writer, reader)?;
        if !in_flight.lock().expect("in-flight list").is_empty() {
            return Err(format!("{name}: batches left without an Ack"));
        }
        Ok(Sent {
            acked,
            latencies_us,
            frame_bytes,
            writes,
            first_ack,
        })
    }

    /// Finish our end of the stream and close. Only once every Ack is in: the collector
    /// closes the connection as soon as it has read to the end and answered what it read,
    /// and a close discards whatever stream data is still unsent.
    pub async fn finish(&self, mut link: Link) -> Result<(), String> {
        link.send
            .finish()
            .map_err(|e| format!("{}: finish: {e}", self.name))?;
        let _ = tokio::time::timeout(Duration::from_secs(10), link.conn.closed()).await;
        link.conn.close(0u32.into(), b"done");
        Ok(())
    }
}

/// Simulated agents per UDP socket where agents mostly wait (`idle`, `reconnect`). Each
/// real agent has a socket of its own on its own host; here they share the collector's
/// machine, and 10,000 sockets (with a quinn endpoint, its driver task and its 3 MiB
/// receive buffer each) cost the harness a wakeup and a system call per datagram where a
/// shared socket reads them in batches: in a restart of 10,000 agents the simulated agents
/// ran up to about 0.6 s late with a socket each, 0.1 to 0.5 s with 64 to a socket. The
/// collector sees the same: a connection per agent, told apart by connection ID (as
/// behind a NAT), each with its own handshake, packets and certificate. Where every agent
/// streams (`ingest`, `logs`) each has its own socket: one socket's driver task then
/// carries 64 agents' traffic, and 10,000 paced agents delivered a fifth less.
pub const AGENTS_PER_SOCKET: usize = 64;

/// A client endpoint for agents sharing one socket, with the collector's large buffers:
/// a socket carries the handshakes of many agents at once.
pub fn shared_endpoint() -> std::io::Result<quinn::Endpoint> {
    let socket =
        aftercare_collector::net::bind_udp(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)))?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
}

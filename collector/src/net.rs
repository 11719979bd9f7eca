//! The collector's UDP socket for QUIC.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;

/// Socket buffer asked for, each way. Thousands of agents share one socket: the default
/// (~200 KiB on Linux) overflows under bursts and every dropped datagram costs a
/// retransmission.
pub const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// A quinn server endpoint bound to `addr` with [`SOCKET_BUFFER_BYTES`] buffers. Must run
/// inside a tokio runtime. Bind to port 0 in tests and read `local_addr()`.
///
/// `reset_secret` should be stable across restarts (we derive it from the server key): the
/// stateless-reset key comes from it, so after a crash the restarted collector answers the
/// agents' packets for connections it no longer knows with a reset they can verify, and they
/// reconnect at once instead of waiting for their idle timeout.
///
/// The kernel caps buffers at `net.core.rmem_max`/`wmem_max`; a smaller result is logged
/// with the sysctl to raise, not treated as an error.
pub fn server_endpoint(
    addr: SocketAddr,
    config: quinn::ServerConfig,
    reset_secret: &[u8],
) -> io::Result<quinn::Endpoint> {
    let socket = bind_udp(addr)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| io::Error::other("no async runtime for the QUIC endpoint"))?;
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        &[b"aftercare stateless reset\0".as_slice(), reset_secret].concat(),
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, digest.as_ref());
    let mut endpoint_config = quinn::EndpointConfig::new(std::sync::Arc::new(key));
    // Connection ids carry a keyed hash that the endpoint checks before it answers with a
    // reset; the key must survive a restart too, or the new process drops the agents'
    // packets as garbage instead of resetting their connections.
    let cid_key = u64::from_le_bytes(digest.as_ref()[..8].try_into().expect("8 bytes"));
    endpoint_config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    quinn::Endpoint::new(endpoint_config, Some(config), socket, runtime)
}

/// A UDP socket bound to `addr` with large buffers; errors name the address.
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let context =
        |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what} {addr}: {e}"));
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| context("cannot create a UDP socket for", e))?;
    if addr.is_ipv6() {
        // [::] should also take IPv4 agents, whatever the system default is.
        let _ = socket.set_only_v6(false);
    }
    // Failing to grow a buffer only costs throughput; keep going and say so.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    check_buffer("receive", "rmem_max", socket.recv_buffer_size());
    check_buffer("send", "wmem_max", socket.send_buffer_size());
    socket
        .bind(&addr.into())
        .map_err(|e| context("cannot bind UDP", e))?;
    Ok(socket.into())
}

fn check_buffer(which: &str, sysctl: &str, got: io::Result<usize>) {
    // Linux reports twice what it grants (the doubling covers bookkeeping overhead).
    let granted = |reported: usize| {
        if cfg!(target_os = "linux") {
            reported / 2
        } else {
            reported
        }
    };
    match got {
        Ok(size) if granted(size) < SOCKET_BUFFER_BYTES => {
            tracing::warn!(
                "UDP {which} buffer is {} bytes, asked for {SOCKET_BUFFER_BYTES}: raise \
                 net.core.{sysctl} (sysctl -w net.core.{sysctl}={SOCKET_BUFFER_BYTES}) to \
                 avoid drops under load",
                granted(size)
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the UDP {which} buffer size: {e}"),
    }
}

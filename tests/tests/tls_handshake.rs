//! Mutual TLS over QUIC, for real: the collector's server configuration on a real
//! endpoint on 127.0.0.1, the agent's client configuration connecting to it, and each way
//! a handshake must fail failing, with an error that says why on the side that sees it.

use aftercare_collector::ca::{self, InitOptions, Validity};
use aftercare_collector::{net, tls};
use aftercare_shared::protocol::{ALPN, Identity};
use quinn::{ConnectionError, TransportErrorCode};
use rustls::AlertDescription;
use rustls::pki_types::pem::PemObject;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Every case finishes in well under a second; this only stops a hang.
const CASE_TIMEOUT: Duration = Duration::from_secs(10);

/// A CA with its server certificate (for "localhost" and 127.0.0.1), in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        ca::init_ca(&dir.path().join("ca"), &[], &InitOptions::default()).unwrap();
        Pki { dir }
    }

    fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    /// Issues an agent certificate into `<tmp>/<name>`; returns that directory.
    fn agent(&self, name: &str, customer: &str, host: &str, validity: Validity) -> PathBuf {
        let out = self.dir.path().join(name);
        ca::issue_agent_cert(&self.ca_dir(), customer, host, &out, validity).unwrap();
        out
    }
}

fn agent_config(dir: &Path) -> quinn::ClientConfig {
    aftercare_agent::tls::client_config(
        &dir.join(ca::CA_CERT),
        &dir.join(ca::AGENT_CERT),
        &dir.join(ca::AGENT_KEY),
    )
    .unwrap()
}

/// The socket setup: the collector's endpoint on 127.0.0.1:0, as `serve` makes it, and
/// its count of session tickets.
fn server(pki: &Pki) -> (quinn::Endpoint, SocketAddr, Arc<tls::tickets::TicketCounts>) {
    let (config, tickets) =
        tls::load_quinn_server_config(&tls::ServerTlsFiles::in_dir(&pki.ca_dir())).unwrap();
    let endpoint = net::server_endpoint("127.0.0.1:0".parse().unwrap(), config, b"test").unwrap();
    let addr = endpoint.local_addr().unwrap();
    (endpoint, addr, tickets)
}

/// What each side saw.
struct Outcome {
    /// `incoming.await` then the peer's identity; the error is what the collector logs.
    server: Result<Identity, ConnectionError>,
    /// The identity the server echoed on a stream, or the connection's error.
    client: Result<String, ConnectionError>,
}

/// One connection attempt: the server accepts one connection and echoes the identity it
/// read from the client's certificate; the client sends a hello and reads the answer.
async fn attempt(pki: &Pki, client: quinn::ClientConfig, server_name: &str) -> Outcome {
    let (server_ep, addr, _) = server(pki);
    let server_task = tokio::spawn(async move {
        let incoming = server_ep.accept().await.expect("endpoint open");
        let conn = incoming.await?;
        let identity = tls::peer_identity(&conn).expect("verified peer has an identity");
        let (mut send, mut recv) = conn.accept_bi().await?;
        recv.read_to_end(64).await.expect("hello");
        send.write_all(identity.to_string().as_bytes())
            .await
            .expect("reply");
        send.finish().expect("finish");
        // The client closes once it has the answer.
        let _ = conn.closed().await;
        server_ep.wait_idle().await;
        Ok::<_, ConnectionError>(identity)
    });

    let client_ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let client_result: Result<String, ConnectionError> = async {
        let conn = client_ep
            .connect_with(client, addr, server_name)
            .expect("connect parameters")
            .await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(b"hello").await.map_err(|e| match e {
            quinn::WriteError::ConnectionLost(e) => e,
            other => panic!("write: {other}"),
        })?;
        send.finish().expect("finish");
        let reply = recv.read_to_end(1024).await.map_err(|e| match e {
            quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(e)) => e,
            other => panic!("read: {other}"),
        })?;
        conn.close(0u32.into(), b"done");
        Ok(String::from_utf8(reply).unwrap())
    }
    .await;
    client_ep.wait_idle().await;
    let server_result = server_task.await.unwrap();
    eprintln!(
        "server: {:?}",
        server_result.as_ref().map_err(|e| (e, e.to_string()))
    );
    eprintln!(
        "client: {:?}",
        client_result.as_ref().map_err(|e| (e, e.to_string()))
    );
    Outcome {
        server: server_result,
        client: client_result,
    }
}

async fn bounded(pki: &Pki, client: quinn::ClientConfig, server_name: &str) -> Outcome {
    tokio::time::timeout(CASE_TIMEOUT, attempt(pki, client, server_name))
        .await
        .expect("handshake case finished in time")
}

fn alert(description: AlertDescription) -> TransportErrorCode {
    TransportErrorCode::crypto(u8::from(description))
}

/// The side that refused the handshake: a local TLS error with `alert` and a reason that
/// contains `why`.
fn assert_refused_here(err: &ConnectionError, description: AlertDescription, why: &str) {
    match err {
        ConnectionError::TransportError(e) => {
            assert_eq!(e.code, alert(description), "{err}");
            assert!(e.reason.contains(why), "{err}");
        }
        other => panic!("expected a local handshake failure, got {other:?}"),
    }
}

/// The other side: closed by its peer with the same alert, and (quinn carries rustls'
/// reason in CONNECTION_CLOSE) the same reason, so it can log why too.
fn assert_refused_by_peer(err: &ConnectionError, description: AlertDescription, why: &str) {
    match err {
        ConnectionError::ConnectionClosed(close) => {
            assert_eq!(close.error_code, alert(description), "{err}");
            assert!(
                String::from_utf8_lossy(&close.reason).contains(why),
                "{err}"
            );
        }
        other => panic!("expected the peer to close the handshake, got {other:?}"),
    }
}

fn assert_refused_by_server(outcome: Outcome, description: AlertDescription, why: &str) {
    assert_refused_here(&outcome.server.unwrap_err(), description, why);
    assert_refused_by_peer(&outcome.client.unwrap_err(), description, why);
}

#[tokio::test]
async fn good_agent_connects_and_server_reads_its_identity() {
    let pki = Pki::new();
    let agent = pki.agent("agent", "ACME Corp.", "db-01", Validity::default());
    let outcome = bounded(&pki, agent_config(&agent), "localhost").await;
    let want = Identity {
        customer: "ACME Corp.".into(),
        host: "db-01".into(),
    };
    assert_eq!(outcome.server.unwrap(), want);
    assert_eq!(outcome.client.unwrap(), "ACME Corp./db-01");
}

#[tokio::test]
async fn good_agent_connects_by_ip_address() {
    let pki = Pki::new();
    let agent = pki.agent("agent", "acme", "db-01", Validity::default());
    let outcome = bounded(&pki, agent_config(&agent), "127.0.0.1").await;
    assert_eq!(outcome.client.unwrap(), "acme/db-01");
}

#[tokio::test]
async fn agent_of_another_ca_is_refused() {
    let pki = Pki::new();
    let other = Pki::new();
    let agent = other.agent("agent", "acme", "db-01", Validity::default());
    // It trusts our CA (so it accepts our server) but its certificate is the other CA's.
    std::fs::copy(pki.ca_dir().join(ca::CA_CERT), agent.join(ca::CA_CERT)).unwrap();
    let outcome = bounded(&pki, agent_config(&agent), "localhost").await;
    assert_refused_by_server(
        outcome,
        AlertDescription::UnknownCA,
        "invalid peer certificate: UnknownIssuer",
    );
}

#[tokio::test]
async fn expired_agent_certificate_is_refused() {
    let pki = Pki::new();
    let now = OffsetDateTime::now_utc();
    let expired = Validity {
        not_before: now - time::Duration::days(30),
        not_after: now - time::Duration::days(1),
    };
    let agent = pki.agent("agent", "acme", "db-01", expired);
    let outcome = bounded(&pki, agent_config(&agent), "localhost").await;
    assert_refused_by_server(
        outcome,
        AlertDescription::CertificateExpired,
        "invalid peer certificate: certificate expired",
    );
}

#[tokio::test]
async fn wrong_server_name_is_refused_by_the_agent() {
    let pki = Pki::new();
    let agent = pki.agent("agent", "acme", "db-01", Validity::default());
    let outcome = bounded(&pki, agent_config(&agent), "evil.example").await;
    // Here the agent refuses the collector, and the collector learns it from the close.
    let why = "invalid peer certificate: certificate not valid for name \"evil.example\"";
    assert_refused_here(
        &outcome.client.unwrap_err(),
        AlertDescription::BadCertificate,
        why,
    );
    assert_refused_by_peer(
        &outcome.server.unwrap_err(),
        AlertDescription::BadCertificate,
        why,
    );
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let pki = Pki::new();
    let mut roots = rustls::RootCertStore::empty();
    let ca_pem = std::fs::read(pki.ca_dir().join(ca::CA_CERT)).unwrap();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(&ca_pem).unwrap())
        .unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls)).unwrap();
    let outcome = bounded(
        &pki,
        quinn::ClientConfig::new(Arc::new(crypto)),
        "localhost",
    )
    .await;
    assert_refused_by_server(
        outcome,
        AlertDescription::CertificateRequired,
        "peer sent no certificates",
    );
}

#[tokio::test]
async fn server_certificate_is_not_an_agent_certificate() {
    // Signed by our CA, but for serverAuth only: it must not pass as an agent.
    let pki = Pki::new();
    let ca_dir = pki.ca_dir();
    let config = aftercare_agent::tls::client_config(
        &ca_dir.join(ca::CA_CERT),
        &ca_dir.join(ca::SERVER_CERT),
        &ca_dir.join(ca::SERVER_KEY),
    )
    .unwrap();
    let outcome = bounded(&pki, config, "localhost").await;
    assert_refused_by_server(
        outcome,
        AlertDescription::UnsupportedCertificate,
        "does not allow extended key usage for client authentication",
    );
}

/// What a handshake costs beyond itself, which a collector taking back thousands of agents
/// at once pays thousands of times: the agent probes the path's MTU once, at the full
/// Ethernet size, and gets it on a path that carries it (quinn's own search sends about
/// five probes, mostly padding); the collector does not probe at all; and the collector
/// gives [`tls::TICKETS_PER_HANDSHAKE`] session tickets, no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_probes_the_path_once_the_collector_never_and_tickets_are_few() {
    use aftercare_agent::tls::PROBED_MTU;
    tokio::time::timeout(CASE_TIMEOUT, async {
        let pki = Pki::new();
        let certs = pki.agent("a", "acme", "db1", Validity::days_from_now(1));
        let (server_ep, addr, tickets) = server(&pki);
        let client_ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let connecting = client_ep
            .connect_with(agent_config(&certs), addr, "localhost")
            .unwrap();
        let incoming = server_ep.accept().await.expect("endpoint open");
        let (client, server) = tokio::join!(connecting, incoming);
        let (client, server) = (client.expect("agent side"), server.expect("collector side"));
        // The probe leaves once the handshake is confirmed; its acknowledgement raises the MTU.
        while client.stats().path.current_mtu < PROBED_MTU {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Long enough for a search to go on (each probe waits only for the last one's ack).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (agent, collector) = (client.stats().path, server.stats().path);
        assert_eq!(agent.sent_plpmtud_probes, 1, "{agent:?}");
        assert_eq!(agent.current_mtu, PROBED_MTU, "{agent:?}");
        assert_eq!(collector.sent_plpmtud_probes, 0, "{collector:?}");
        assert_eq!(collector.current_mtu, 1200, "{collector:?}");
        assert_eq!(
            tickets.tally().issued,
            tls::TICKETS_PER_HANDSHAKE as u64,
            "tickets given for one full handshake"
        );
        client.close(0u32.into(), b"done");
        server.close(0u32.into(), b"done");
        client_ep.wait_idle().await;
        server_ep.wait_idle().await;
    })
    .await
    .expect("finished in time");
}

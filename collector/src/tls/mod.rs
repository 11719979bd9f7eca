//! The collector's side of mutual TLS over QUIC: TLS 1.3 only (QUIC requires it), ALPN
//! `aftercare/1`, and a client certificate signed by our CA required of every agent, so a
//! connection that completes its handshake has a verified [`Identity`].

use crate::ca::{self, CaError};
use aftercare_shared::pem::{self, PemError};
use aftercare_shared::protocol::{ALPN, Identity};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub mod tickets;

/// Session tickets given with every handshake (see [`server_config`] for why four).
pub const TICKETS_PER_HANDSHAKE: usize = 4;

/// A connection silent this long is dropped. Agents send keep-alives well within it, so
/// only a vanished agent (host down, network cut) reaches it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the server's TLS material is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// Client certificates must chain to this CA (and only this one).
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ServerTlsFiles {
    /// The files `ca init` wrote in `dir`.
    pub fn in_dir(dir: &Path) -> ServerTlsFiles {
        ServerTlsFiles {
            ca_cert: dir.join(ca::CA_CERT),
            cert: dir.join(ca::SERVER_CERT),
            key: dir.join(ca::SERVER_KEY),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    File(#[from] PemError),
    #[error("cannot use {what} {}: {source}", path.display())]
    Rejected {
        what: &'static str,
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
    #[error("cannot build the client certificate verifier: {0}")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    #[error("peer certificate: {0}")]
    Identity(#[source] CaError),
}

/// The one crypto provider we build with (ring; the workspace has no aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's TLS configuration, and how many of its session tickets were made and used.
pub struct ServerTls {
    pub config: rustls::ServerConfig,
    pub tickets: Arc<tickets::TicketCounts>,
}

/// TLS 1.3 with ALPN `aftercare/1`; the server certificate and key from `files`; client
/// certificates required and verified against `files.ca_cert`; session tickets keyed from
/// the server key and the CA (see [`tickets`]), so agents resume after a restart.
pub fn server_config(files: &ServerTlsFiles) -> Result<ServerTls, TlsError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    let ca_certs = read_certs("CA certificate", &files.ca_cert)?;
    let ticket_ca: Vec<u8> = ca_certs.iter().flat_map(|c| c.as_ref().to_vec()).collect();
    for cert in ca_certs {
        roots.add(cert).map_err(|source| TlsError::Rejected {
            what: "CA certificate",
            path: files.ca_cert.clone(),
            source,
        })?;
    }
    // Client auth is mandatory by default: an agent without a certificate from our CA
    // never completes the handshake.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(TlsError::Verifier)?;
    let chain = read_certs("server certificate", &files.cert)?;
    let key = read_key("server key", &files.key)?;
    let ticketer = tickets::Ticketer::new(key.secret_der(), &ticket_ca);
    let counts = ticketer.counts();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Rejected {
            what: "server certificate and key",
            path: files.key.clone(),
            source,
        })?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.ticketer = Arc::new(ticketer);
    // An agent uses up a ticket on every attempt, failed ones included. Four cover the
    // attempt at its moment in a stopping collector's window and three retries after it
    // (with the agent's default backoff, a restart that runs about 4 s past its window);
    // after that one full handshake, which brings new tickets. Each ticket carries the
    // agent's certificate, so each is a few more packets: in a restart of 10,000 agents,
    // four took back about a fifth more agents a second than eight (two, no more than four).
    config.send_tls13_tickets = TICKETS_PER_HANDSHAKE;
    Ok(ServerTls {
        config,
        tickets: counts,
    })
}

/// Wraps a rustls configuration for quinn, with the transport settings for agents:
/// idle timeout [`IDLE_TIMEOUT`]; one bidirectional stream is the session (a few more
/// allowed for what comes later), no unidirectional streams, which the protocol never uses;
/// no MTU discovery: what the collector sends (acknowledgements, welcomes, requests) fits
/// QUIC's 1200 bytes, and probing thousands of returning agents at once would cost them
/// and it several large datagrams each.
pub fn quinn_server_config(tls: rustls::ServerConfig) -> Result<quinn::ServerConfig, TlsError> {
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(tls)).map_err(TlsError::Quic)?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(
            IDLE_TIMEOUT.try_into().expect("60 s fits a QUIC varint"),
        ))
        .max_concurrent_bidi_streams(4u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .mtu_discovery_config(None);
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// [`server_config`] then [`quinn_server_config`]: what `serve` needs, and the tickets'
/// counts.
pub fn load_quinn_server_config(
    files: &ServerTlsFiles,
) -> Result<(quinn::ServerConfig, Arc<tickets::TicketCounts>), TlsError> {
    let tls = server_config(files)?;
    Ok((quinn_server_config(tls.config)?, tls.tickets))
}

/// The identity in the certificate the peer proved it holds during the handshake.
pub fn peer_identity(connection: &quinn::Connection) -> Result<Identity, TlsError> {
    let certs = connection
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(TlsError::NoPeerCertificate)?;
    let leaf = certs.first().ok_or(TlsError::NoPeerCertificate)?;
    ca::identity_from_cert(leaf).map_err(TlsError::Identity)
}

/// When the peer's (verified) certificate expires.
pub fn peer_cert_not_after(connection: &quinn::Connection) -> Option<i64> {
    let certs = connection
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    ca::cert_not_after(certs.first()?).ok()
}

fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, PemError> {
    pem::certs(what, path, std::fs::read(path))
}

fn read_key(
    what: &'static str,
    path: &Path,
) -> Result<rustls::pki_types::PrivateKeyDer<'static>, PemError> {
    pem::key(what, path, std::fs::read(path))
}

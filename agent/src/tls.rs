//! The agent's side of mutual TLS over QUIC: TLS 1.3 only (QUIC requires it), ALPN
//! `aftercare/1`, the support company's CA as the only trusted root, and the agent's own
//! certificate, which is where the collector reads this host's identity from.
//!
//! Kept small on purpose: the agent ships to customer servers, so certificate parsing and
//! issuing (x509-parser, rcgen) live in the collector only.

use aftercare_shared::pem::{self, PemError};
use aftercare_shared::protocol::ALPN;
use rustls::RootCertStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Keep-alive interval: well inside the collector's 60 s idle timeout, and frequent
/// enough to hold a NAT or firewall mapping open (UDP mappings often expire after 30 s).
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// Matches the collector's: a collector silent this long is treated as gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Diagnostics the collector may run on this host at once (one stream each).
pub const MAX_DIAGNOSTICS: u32 = 4;
/// The one datagram size probed for (UDP payload): what fits Ethernet's 1500-byte MTU
/// under IPv6 and IPv4, quinn's default upper bound. Below it QUIC's 1200 bytes is used.
pub const PROBED_MTU: u16 = 1452;
/// What every QUIC path carries.
const QUIC_MIN_MTU: u16 = 1200;

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
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// A QUIC client configuration that trusts only the CA in `ca_pem` and presents the
/// certificate `cert` with its key `key` (PEM files, as `cert issue` writes them).
pub fn client_config(
    ca_pem: &Path,
    cert: &Path,
    key: &Path,
) -> Result<quinn::ClientConfig, TlsError> {
    // AES-128-GCM with SHA-256 first (all TLS 1.3 suites stay allowed): its key schedule
    // uses SHA-256, which CPUs accelerate, where SHA-384 costs a collector taking thousands
    // of handshakes at once measurably more.
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let provider = Arc::new(provider);
    let mut roots = RootCertStore::empty();
    for ca in read_certs("CA certificate", ca_pem)? {
        roots.add(ca).map_err(|source| TlsError::Rejected {
            what: "CA certificate",
            path: ca_pem.to_owned(),
            source,
        })?;
    }
    let chain = read_certs("agent certificate", cert)?;
    let key_der = read_key("agent key", key)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        // Also checks that the key belongs to the certificate, so a mixed-up pair fails
        // here, naming the files, rather than as a handshake failure at the collector.
        .with_client_auth_cert(chain, key_der)
        .map_err(|source| TlsError::Rejected {
            what: "agent certificate and key",
            path: key.to_owned(),
            source,
        })?;
    tls.alpn_protocols = vec![ALPN.to_vec()];

    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls)).map_err(TlsError::Quic)?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
        .max_idle_timeout(Some(
            IDLE_TIMEOUT.try_into().expect("60 s fits a QUIC varint"),
        ))
        // Diagnostic streams the collector may have open at once: more wait their turn.
        .max_concurrent_bidi_streams(MAX_DIAGNOSTICS.into())
        .max_concurrent_uni_streams(0u32.into())
        .mtu_discovery_config(Some(one_mtu_probe()));
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// MTU discovery with a single probe, at [`PROBED_MTU`], instead of quinn's binary search
/// (four probes between 1200 and 1452 bytes, mostly padding: 4 of an agent's first 10
/// packets). A collector taking back thousands of agents at once receives every probe and
/// parses its padding a byte at a time; with the search its socket overflowed. Log
/// bursts still get full-size datagrams on the usual path; a path that drops the probe
/// (a tunnel) keeps 1200 bytes, re-probed every 10 minutes as before.
fn one_mtu_probe() -> quinn::MtuDiscoveryConfig {
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(PROBED_MTU)
        .minimum_change(PROBED_MTU - QUIC_MIN_MTU);
    mtu
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_malformed_files_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("ca.crt");
        let err = client_config(&missing, &missing, &missing).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("cannot read CA certificate "), "{msg}");
        assert!(msg.contains(&missing.display().to_string()), "{msg}");

        let empty = tmp.path().join("empty.crt");
        std::fs::write(&empty, "no pem here\n").unwrap();
        let err = client_config(&empty, &empty, &empty).unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::File(PemError::NoCertificate {
                    what: "CA certificate",
                    ..
                })
            ),
            "{err}"
        );
    }
}

//! TLS to PostgreSQL, with libpq's meaning of `sslmode` and `sslrootcert`, on rustls (ring).
//!
//! The postgres crate knows `sslmode` `disable`, `prefer` and `require`, encrypts without
//! checking the server's certificate, and refuses parameters it does not know. So
//! [`split_url`] takes `sslmode` and `sslrootcert` off the URL, hands the crate the mode it
//! knows (`verify-ca` and `verify-full` are `require` to it), and [`connector`] checks the
//! certificate as libpq would:
//!
//! | `sslmode`          | encrypted            | server certificate checked                 |
//! |--------------------|----------------------|--------------------------------------------|
//! | `disable`          | never                | -                                          |
//! | `prefer` (default) | if the server offers | signed by `sslrootcert` if given, else not |
//! | `require`          | always               | signed by `sslrootcert` if given, else not |
//! | `verify-ca`        | always               | signed by `sslrootcert`                    |
//! | `verify-full`      | always               | signed by `sslrootcert`, naming the host   |
//!
//! libpq also reads `~/.postgresql/root.crt` when `sslrootcert` is absent; a service should
//! not depend on its home directory, so here `verify-*` without `sslrootcert` is refused.

use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode` values that the collector supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// What the URL asks of TLS.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct TlsParams {
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

/// A URL's TLS settings that cannot work; the message says what to change.
#[derive(Debug, thiserror::Error)]
pub(super) enum TlsError {
    #[error(
        "sslmode={0} is not one of disable, prefer (the default), require, verify-ca, verify-full"
    )]
    UnknownMode(String),
    #[error(
        "sslmode=allow is not supported: use prefer (TLS when the server offers it) or disable"
    )]
    Allow,
    #[error(
        "sslmode={0} checks the server's certificate and needs sslrootcert=/path/ca.pem, the CA \
         that signed it (or the system's bundle, e.g. /etc/ssl/certs/ca-certificates.crt, for a \
         publicly trusted certificate)"
    )]
    NoRootCert(&'static str),
    #[error(
        "sslrootcert=system is not supported: give the system's bundle by its path (e.g. \
         /etc/ssl/certs/ca-certificates.crt) with sslmode=verify-full"
    )]
    System,
    #[error("{0} in the URL is not valid percent-encoded UTF-8")]
    Encoding(&'static str),
    #[error("cannot read sslrootcert {path}: {source}; give the CA certificate's PEM file")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "sslrootcert {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the CA \
         certificate's PEM file"
    )]
    NoCertificate { path: PathBuf },
    #[error("sslrootcert {path}: {detail}; give the CA certificate's PEM file")]
    BadCertificate { path: PathBuf, detail: String },
}

/// Takes `sslmode` and `sslrootcert` off `url`: returns the URL for `postgres::Config`
/// (`sslmode` as the postgres crate knows it) and what the URL asks of TLS.
pub(super) fn split_url(url: &str) -> Result<(String, TlsParams), TlsError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let mut mode = None;
    let mut root_cert = None;
    // As libpq and the postgres crate, the last of a repeated parameter counts.
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", v)) => mode = Some(decode(v, "sslmode")?),
            Some(("sslrootcert", v)) => root_cert = Some(decode(v, "sslrootcert")?),
            _ => kept.push(pair),
        }
    }
    let mode = match mode.as_deref() {
        None | Some("prefer") => SslMode::Prefer,
        Some("disable") => SslMode::Disable,
        Some("require") => SslMode::Require,
        Some("verify-ca") => SslMode::VerifyCa,
        Some("verify-full") => SslMode::VerifyFull,
        Some("allow") => return Err(TlsError::Allow),
        Some(other) => return Err(TlsError::UnknownMode(other.to_string())),
    };
    let root_cert = match root_cert.as_deref() {
        Some("system") => return Err(TlsError::System),
        Some("") | None => None,
        Some(path) => Some(PathBuf::from(path)),
    };
    if root_cert.is_none() && matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) {
        return Err(TlsError::NoRootCert(mode.name()));
    }
    kept.push(match mode {
        SslMode::Disable => "sslmode=disable",
        SslMode::Prefer => "sslmode=prefer",
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "sslmode=require",
    });
    Ok((
        format!("{base}?{}", kept.join("&")),
        TlsParams { mode, root_cert },
    ))
}

fn decode(value: &str, name: &'static str) -> Result<String, TlsError> {
    percent_decode_str(value)
        .decode_utf8()
        .map(|v| v.into_owned())
        .map_err(|_| TlsError::Encoding(name))
}

/// The connector for the pool: checks the server's certificate as `params` say.
pub(super) fn connector(params: &TlsParams) -> Result<MakeRustlsConnect, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Without TLS the certificate is never looked at; neither is the CA file read.
    let roots = match (&params.root_cert, params.mode) {
        (_, SslMode::Disable) | (None, _) => None,
        (Some(path), _) => Some(Arc::new(read_roots(path)?)),
    };
    let verifier = Verifier {
        roots,
        check_name: params.mode == SslMode::VerifyFull,
        provider: provider.clone(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // PostgreSQL 17 insists on it for `sslnegotiation=direct`; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(MakeRustlsConnect::new(config))
}

fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |detail: String| TlsError::BadCertificate {
        path: path.to_path_buf(),
        detail,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not readable as PEM ({e})")))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| bad(format!("a certificate is not usable as a CA ({e})")))?;
    }
    Ok(roots)
}

/// Checks the server's certificate as much as `sslmode` asks. rustls's own verifier always
/// checks the name, and libpq's `verify-ca` (and `require` with a root certificate) does not.
#[derive(Debug)]
struct Verifier {
    /// The CAs to trust; none: the certificate is not checked (libpq's `prefer` and
    /// `require` without `sslrootcert`), the session is encrypted all the same.
    roots: Option<Arc<RootCertStore>>,
    /// Whether the certificate must name the host dialled (`verify-full`).
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
            if self.check_name {
                verify_server_name(&cert, server_name)?;
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    // The handshake's signatures are checked in every mode: they prove the server holds
    // the key of the certificate it sent.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Database, PgUrl};
    use std::time::Duration;

    #[test]
    fn libpq_parameters_are_taken_off_the_url() {
        let split = |u: &str| split_url(u).map_err(|e| e.to_string());
        let params = |mode, root: Option<&str>| TlsParams {
            mode,
            root_cert: root.map(PathBuf::from),
        };
        assert_eq!(
            split("postgres://u@h/db").unwrap(),
            (
                "postgres://u@h/db?sslmode=prefer".into(),
                params(SslMode::Prefer, None)
            )
        );
        assert_eq!(
            split("postgres://u@h/db?connect_timeout=3&sslmode=verify-full&sslrootcert=/etc/my%20ca.pem&application_name=x").unwrap(),
            (
                "postgres://u@h/db?connect_timeout=3&application_name=x&sslmode=require".into(),
                params(SslMode::VerifyFull, Some("/etc/my ca.pem"))
            )
        );
        assert_eq!(
            split("postgres://u@h/db?sslmode=verify-ca&sslrootcert=ca.pem").unwrap(),
            (
                "postgres://u@h/db?sslmode=require".into(),
                params(SslMode::VerifyCa, Some("ca.pem"))
            )
        );
        assert_eq!(
            split("postgres://u@h/db?sslmode=require&sslmode=disable").unwrap(),
            (
                "postgres://u@h/db?sslmode=disable".into(),
                params(SslMode::Disable, None)
            )
        );
        assert_eq!(
            split("postgres://u@h/db?sslmode=require").unwrap().1,
            params(SslMode::Require, None)
        );
        for (url, says) in [
            ("postgres://u@h/db?sslmode=on", "sslmode=on is not one of"),
            (
                "postgres://u@h/db?sslmode=allow",
                "sslmode=allow is not supported",
            ),
            (
                "postgres://u@h/db?sslmode=verify-full",
                "sslmode=verify-full checks the server's certificate and needs sslrootcert",
            ),
            (
                "postgres://u@h/db?sslmode=verify-ca&sslrootcert=",
                "needs sslrootcert",
            ),
            (
                "postgres://u@h/db?sslmode=verify-full&sslrootcert=system",
                "sslrootcert=system is not supported",
            ),
            (
                "postgres://u@h/db?sslrootcert=%ff",
                "sslrootcert in the URL is not valid",
            ),
        ] {
            let e = split(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    /// Runs `f` on a thread of its own and fails the test when it takes over 30 s.
    fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(Duration::from_secs(30))
            .expect("took over 30 s (or panicked)")
    }

    fn pg_url(url: &str) -> PgUrl {
        match Database::parse(url) {
            Database::Postgres(u) => u,
            Database::Sqlite(_) => panic!("{url} is not a postgres URL"),
        }
    }

    /// Whether the session that `url` opens is encrypted, or why it could not be opened.
    fn ssl_of(url: String) -> Result<bool, String> {
        within(move || {
            let (mut conn, _) = super::super::connect(&pg_url(&url)).map_err(|e| e.to_string())?;
            let row = conn
                .query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .map_err(|e| e.to_string())?;
            Ok(row.get(0))
        })
    }

    /// The test database's URL with `params` (the test cluster's certificate names
    /// `localhost` only; its URLs dial 127.0.0.1).
    fn with(db: &aftercare_pgtest::TestDb, params: &str) -> String {
        format!("{}?{params}", db.url())
    }

    /// As [`with`], dialling 127.0.0.1 by the name `localhost`, which the certificate holds.
    fn as_localhost(db: &aftercare_pgtest::TestDb, params: &str) -> String {
        let url = db.url().replacen("@127.0.0.1:", "@localhost:", 1);
        assert_ne!(url, db.url(), "the test cluster's URLs dial 127.0.0.1");
        format!("{url}?hostaddr=127.0.0.1&{params}")
    }

    /// A CA's PEM file that signed nothing of the test cluster's.
    fn other_ca(dir: &Path) -> PathBuf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let path = dir.join("other-ca.pem");
        std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
        path
    }

    #[test]
    fn sessions_are_encrypted_and_the_certificate_checked_as_asked() {
        let db = aftercare_pgtest::tls_database();
        let ca = db.ca_pem().display().to_string();
        for url in [
            with(&db, &format!("sslmode=require&sslrootcert={ca}")),
            // verify-ca checks the CA, not the name.
            with(&db, &format!("sslmode=verify-ca&sslrootcert={ca}")),
            as_localhost(&db, &format!("sslmode=verify-full&sslrootcert={ca}")),
            // Encrypted, not checked: libpq's require and prefer without a root certificate.
            with(&db, "sslmode=require"),
            db.url().to_string(),
        ] {
            assert_eq!(ssl_of(url.clone()), Ok(true), "{url}");
        }
        let plain = with(&db, &format!("sslmode=disable&sslrootcert={ca}"));
        assert_eq!(ssl_of(plain), Ok(false));
    }

    #[test]
    fn a_certificate_the_url_does_not_trust_is_refused() {
        let db = aftercare_pgtest::tls_database();
        let dir = tempfile::tempdir().unwrap();
        let other = other_ca(dir.path()).display().to_string();
        let ca = db.ca_pem().display().to_string();
        for (url, says, handle) in [
            (
                as_localhost(&db, &format!("sslmode=verify-full&sslrootcert={other}")),
                "UnknownIssuer",
            ),
            (
                with(&db, &format!("sslmode=verify-ca&sslrootcert={other}")),
                "UnknownIssuer",
            ),
            // libpq's require checks the chain when given a root certificate.
            (
                with(&db, &format!("sslmode=require&sslrootcert={other}")),
                "UnknownIssuer",
            ),
            // The right CA, but the certificate names localhost, not 127.0.0.1.
            (
                with(&db, &format!("sslmode=verify-full&sslrootcert={ca}")),
                "not valid for name \"127.0.0.1\"",
            ),
        ]
        .map(|(url, says)| (url.clone(), says, std::thread::spawn(move || ssl_of(url))))
        {
            // The pool retries until its timeout (5 s): the cases wait side by side.
            let e = handle.join().unwrap().expect_err(&url);
            assert!(
                e.contains("invalid peer certificate") && e.contains(says),
                "{url}: {e}"
            );
            assert!(e.contains(&url), "names the URL: {e}");
        }
    }

    #[test]
    fn root_certificate_files_that_cannot_be_used_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        // Refused before any connection: the port needs no server.
        for (file, says) in [
            (&missing, "cannot read sslrootcert"),
            (&empty, "holds no PEM certificate"),
        ] {
            let url = format!(
                "postgres://u:s3cret@127.0.0.1:1/db?sslmode=verify-full&sslrootcert={}",
                file.display()
            );
            let e = ssl_of(url).unwrap_err();
            assert!(
                e.contains(says) && e.contains(&file.display().to_string()),
                "{e}"
            );
            assert!(
                e.contains("postgres://u:***@127.0.0.1:1/db") && !e.contains("s3cret"),
                "{e}"
            );
        }
    }
}

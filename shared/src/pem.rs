//! Certificates and keys from PEM files, with errors that name the file and what it was
//! meant to hold. Both the agent and the collector load their TLS identity this way.
//!
//! Pure: the caller reads the file (`std::fs::read(path)`) and hands over the result, so
//! this crate does no I/O of its own.

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse {what} {}: {source}", path.display())]
    Parse {
        what: &'static str,
        path: PathBuf,
        source: pem::Error,
    },
    #[error("{what} {} holds no certificate", path.display())]
    NoCertificate { what: &'static str, path: PathBuf },
}

fn read(
    what: &'static str,
    path: &Path,
    read_result: std::io::Result<Vec<u8>>,
) -> Result<Vec<u8>, PemError> {
    read_result.map_err(|source| PemError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in `read_result` (what reading `path` gave), in order; at least one.
pub fn certs(
    what: &'static str,
    path: &Path,
    read_result: std::io::Result<Vec<u8>>,
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bytes = read(what, path, read_result)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PemError::Parse {
            what,
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key in `read_result` (what reading `path` gave).
pub fn key(
    what: &'static str,
    path: &Path,
    read_result: std::io::Result<Vec<u8>>,
) -> Result<PrivateKeyDer<'static>, PemError> {
    let bytes = read(what, path, read_result)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| PemError::Parse {
        what,
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_its_purpose() {
        let p = Path::new("/etc/aftercare/ca.crt");
        let e = certs(
            "CA certificate",
            p,
            Err(std::io::ErrorKind::NotFound.into()),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read CA certificate /etc/aftercare/ca.crt"),
            "{e}"
        );
        let e = certs("CA certificate", p, Ok(b"no pem here".to_vec())).unwrap_err();
        assert!(matches!(e, PemError::NoCertificate { .. }), "{e}");
        let e = key(
            "agent key",
            p,
            Ok(b"-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----\n".to_vec()),
        );
        assert!(e.is_err());
    }
}

//! The support company's certificate authority: it signs the collector's server
//! certificate and one certificate per agent, and the agent certificate is where a peer's
//! [`Identity`] comes from (never from the payload).
//!
//! Files of a CA directory (`ca init`):
//!
//! ```text
//! ca.crt      the CA certificate (public; every agent gets a copy as its only root)
//! ca.key      the CA private key (0600)
//! server.crt  the collector's certificate, signed by the CA, SAN = its server names
//! server.key  the collector's private key (0600)
//! ```
//!
//! An agent certificate names its identity twice: subject `O=customer, CN=host`, for
//! people reading it with `openssl x509`, and a SAN URI `aftercare://<customer>/<host>`
//! with both parts percent-encoded, which is what [`identity_from_cert`] reads: it is
//! unambiguous whatever characters the names hold, and if both are present they must agree.

use aftercare_shared::protocol::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls::pki_types::ServerName;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// File names inside a CA directory and an agent's certificate directory.
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.crt";
pub const SERVER_KEY: &str = "server.key";
pub const AGENT_CERT: &str = "agent.crt";
pub const AGENT_KEY: &str = "agent.key";

/// Names the server certificate carries when `ca init` is given none: enough for the
/// quickstart, where agent and collector share one machine.
pub const DEFAULT_SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// The scheme of the SAN URI that carries an agent's identity.
pub const IDENTITY_URI_SCHEME: &str = "aftercare://";

/// Longest customer or host name: X.509's upper bound for O and CN (RFC 5280, ub-name 64).
pub const MAX_NAME_LEN: usize = 64;

const CA_COMMON_NAME: &str = "aftercare support CA";
const CA_ORGANIZATION: &str = "aftercare";
const CA_DAYS: i64 = 3650;
const SERVER_DAYS: i64 = 730;
const AGENT_DAYS: i64 = 365;
/// Certificates start a little in the past so a peer whose clock is slightly behind
/// does not refuse a certificate issued a moment ago.
const BACKDATE: Duration = Duration::hours(1);

/// What can go wrong with the CA; each message names the file or value and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(
        "a CA already exists at {}: refusing to replace it, because every agent certificate \
         it signed would stop working (pass `--force` to replace it anyway)",
        path.display()
    )]
    AlreadyExists { path: PathBuf },
    #[error("no CA in {}: run `aftercare-collector ca init` first", dir.display())]
    NoCa { dir: PathBuf },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "cannot use {} as the CA {what}: {source} (is it the file `ca init` wrote?)",
        path.display()
    )]
    BadCaFile {
        what: &'static str,
        path: PathBuf,
        source: rcgen::Error,
    },
    #[error("invalid {what} name {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("invalid server name {value:?}: {reason} (give a DNS name or an IP address)")]
    InvalidServerName { value: String, reason: String },
    #[error("invalid validity: not_after {not_after} is not later than not_before {not_before}")]
    InvalidValidity {
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    },
    #[error("cannot create the {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("cannot generate a random serial number: the system random source failed")]
    Random,
    #[error("not a readable X.509 certificate: {reason}")]
    BadCertificate { reason: String },
    #[error("certificate carries no usable aftercare identity: {reason}")]
    NoIdentity { reason: String },
}

/// When a certificate is valid. Tests set it freely, e.g. to make an expired certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From a moment ago (see [`BACKDATE`]) until `days` from now.
    pub fn days_from_now(days: i64) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - BACKDATE,
            not_after: now + Duration::days(days),
        }
    }

    fn check(&self) -> Result<(), CaError> {
        if self.not_after <= self.not_before {
            return Err(CaError::InvalidValidity {
                not_before: self.not_before,
                not_after: self.not_after,
            });
        }
        Ok(())
    }
}

impl Default for Validity {
    /// The validity of an agent certificate: one year.
    fn default() -> Validity {
        Validity::days_from_now(AGENT_DAYS)
    }
}

/// Options of [`init_ca`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Replace an existing CA (and so invalidate every agent certificate it signed).
    pub force: bool,
    pub ca_validity: Validity,
    pub server_validity: Validity,
}

impl Default for InitOptions {
    fn default() -> InitOptions {
        InitOptions {
            force: false,
            ca_validity: Validity::days_from_now(CA_DAYS),
            server_validity: Validity::days_from_now(SERVER_DAYS),
        }
    }
}

/// What [`init_ca`] made, for the CLI to print.
#[derive(Debug, Clone)]
pub struct CaSummary {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub server_names: Vec<String>,
    pub ca_not_after: OffsetDateTime,
    pub server_not_after: OffsetDateTime,
}

impl std::fmt::Display for CaSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = |t: &OffsetDateTime| t.date().to_string();
        writeln!(
            f,
            "CA created: {} (key {}), valid until {}",
            self.ca_cert.display(),
            self.ca_key.display(),
            d(&self.ca_not_after)
        )?;
        write!(
            f,
            "collector certificate: {} for {}, valid until {}",
            self.server_cert.display(),
            self.server_names.join(", "),
            d(&self.server_not_after)
        )
    }
}

impl std::fmt::Display for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.identity {
            Some(id) => write!(f, "certificate for {id}")?,
            None => write!(f, "server certificate")?,
        }
        write!(
            f,
            ": {} (key {}), serial {}, valid {} to {}",
            self.cert_path.display(),
            self.key_path.display(),
            self.serial,
            self.not_before.date(),
            self.not_after.date()
        )
    }
}

/// What [`issue_agent_cert`] or [`issue_server_cert`] made.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The agent's identity; `None` for a server certificate.
    pub identity: Option<Identity>,
    /// Hex, as `openssl x509 -serial` prints it; what a revocation list will name.
    pub serial: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// Creates the CA in `dir` (made 0700 if missing) and the collector's server certificate
/// for `server_names` (DNS names or IP addresses; empty means [`DEFAULT_SERVER_NAMES`]).
/// Refuses to replace an existing CA unless `opts.force`.
pub fn init_ca(
    dir: &Path,
    server_names: &[String],
    opts: &InitOptions,
) -> Result<CaSummary, CaError> {
    opts.ca_validity.check()?;
    let ca_cert_path = dir.join(CA_CERT);
    let ca_key_path = dir.join(CA_KEY);
    if !opts.force {
        for path in [&ca_key_path, &ca_cert_path] {
            if path.exists() {
                return Err(CaError::AlreadyExists { path: path.clone() });
            }
        }
    }
    // Check the server names before anything is written, so a typo leaves no half CA.
    let server_sans = server_sans(server_names)?;
    create_private_dir(dir)?;

    let ca_key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| CaError::Generate {
            what: "CA key",
            source,
        })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, CA_ORGANIZATION);
    // A random suffix makes every CA's name unique: an agent of another (or a replaced) CA
    // is then refused as "UnknownIssuer", not as a confusing "BadSignature" from a
    // namesake CA.
    let ca_id: String = random_serial()?.to_bytes()[1..5]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{CA_COMMON_NAME} {ca_id}"));
    // Path length 0: this CA signs end entities only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial()?);
    params.not_before = opts.ca_validity.not_before;
    params.not_after = opts.ca_validity.not_after;
    let ca_cert = params
        .self_signed(&ca_key)
        .map_err(|source| CaError::Generate {
            what: "CA certificate",
            source,
        })?;

    // The key first and the certificate last: a crash in between leaves a CA that
    // `init` refuses to silently replace, rather than a certificate without its key.
    write_private(&ca_key_path, ca_key.serialize_pem().as_bytes())?;
    write_public(&ca_cert_path, ca_cert.pem().as_bytes())?;

    let issuer = Issuer::new(params, ca_key);
    let server = sign_server_cert(&issuer, dir, server_sans, &opts.server_validity)?;
    Ok(CaSummary {
        ca_cert: ca_cert_path,
        ca_key: ca_key_path,
        server_cert: server.cert_path,
        server_key: server.key_path,
        server_names: server_names_or_default(server_names),
        ca_not_after: opts.ca_validity.not_after,
        server_not_after: server.not_after,
    })
}

/// Issues a new server certificate (and key) from the CA in `ca_dir`, replacing
/// `server.crt` and `server.key`: for adding a server name or renewing.
pub fn issue_server_cert(
    ca_dir: &Path,
    server_names: &[String],
    validity: &Validity,
) -> Result<IssuedCert, CaError> {
    let sans = server_sans(server_names)?;
    let (issuer, _) = load_ca(ca_dir)?;
    sign_server_cert(&issuer, ca_dir, sans, validity)
}

/// Issues an agent certificate for `customer`/`host` from the CA in `ca_dir`, writing
/// `agent.crt`, `agent.key` (0600) and a copy of `ca.crt` into `out` (created if missing,
/// replacing files of an earlier issue).
///
/// For now the agent's key is made here; enrollment will replace this with a CSR, so the
/// key never leaves the agent's host.
pub fn issue_agent_cert(
    ca_dir: &Path,
    customer: &str,
    host: &str,
    out: &Path,
    validity: Validity,
) -> Result<IssuedCert, CaError> {
    validate_name("customer", customer)?;
    validate_name("host", host)?;
    validity.check()?;
    let (issuer, ca_pem) = load_ca(ca_dir)?;

    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| CaError::Generate {
            what: "agent key",
            source,
        })?;
    let identity = Identity {
        customer: customer.to_owned(),
        host: host.to_owned(),
    };
    let uri = identity_uri(&identity);
    let mut params = leaf_params(&validity)?;
    params
        .distinguished_name
        .push(DnType::OrganizationName, customer);
    params.distinguished_name.push(DnType::CommonName, host);
    params.subject_alt_names = vec![SanType::URI(uri.clone().try_into().map_err(|source| {
        CaError::Generate {
            what: "identity URI",
            source,
        }
    })?)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let serial = serial_hex(&params);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|source| CaError::Generate {
            what: "agent certificate",
            source,
        })?;

    create_private_dir(out)?;
    let cert_path = out.join(AGENT_CERT);
    let key_path = out.join(AGENT_KEY);
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    write_public(&cert_path, cert.pem().as_bytes())?;
    write_public(&out.join(CA_CERT), ca_pem.as_bytes())?;
    Ok(IssuedCert {
        identity: Some(identity),
        serial,
        not_before: validity.not_before,
        not_after: validity.not_after,
        cert_path,
        key_path,
    })
}

/// The identity an agent certificate names (DER). Reads the `aftercare://` SAN URI, or
/// the subject's O and CN when there is none; if both are present they must agree.
///
/// This only reads the certificate: that it is genuine, current and signed by our CA is
/// for the TLS handshake to have checked.
/// When a certificate (DER) stops being valid.
pub fn cert_not_after(der: &[u8]) -> Result<aftercare_shared::model::UnixMillis, CaError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CaError::BadCertificate {
            reason: e.to_string(),
        })?;
    Ok(cert.validity().not_after.timestamp() * 1000)
}

pub fn identity_from_cert(der: &[u8]) -> Result<Identity, CaError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CaError::BadCertificate {
            reason: e.to_string(),
        })?;

    let san = cert
        .subject_alternative_name()
        .map_err(|e| CaError::BadCertificate {
            reason: format!("subject alternative names: {e}"),
        })?;
    let mut from_uri = None;
    for name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
        if let x509_parser::extensions::GeneralName::URI(uri) = name
            && uri.starts_with(IDENTITY_URI_SCHEME)
        {
            if from_uri.is_some() {
                return Err(no_identity("it has more than one aftercare:// URI"));
            }
            from_uri = Some(parse_identity_uri(uri)?);
        }
    }

    let subject = cert.subject();
    let org = single_attr(subject.iter_organization(), "O")?;
    let cn = single_attr(subject.iter_common_name(), "CN")?;
    let from_subject = match (org, cn) {
        (Some(customer), Some(host)) => Some(Identity { customer, host }),
        _ => None,
    };

    match (from_uri, from_subject) {
        (Some(uri), Some(subject)) if uri != subject => Err(no_identity(&format!(
            "its URI names {uri} but its subject names {subject}"
        ))),
        (Some(identity), _) => Ok(identity),
        (None, Some(identity)) => {
            validate_name("customer", &identity.customer)?;
            validate_name("host", &identity.host)?;
            Ok(identity)
        }
        (None, None) => Err(no_identity(
            "it has neither an aftercare:// URI nor a subject with O and CN",
        )),
    }
}

/// The value of a subject attribute that may appear at most once.
fn single_attr<'a>(
    mut values: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
    what: &str,
) -> Result<Option<String>, CaError> {
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(no_identity(&format!(
            "its subject has more than one {what}"
        )));
    }
    let value = first.as_str().map_err(|e| CaError::BadCertificate {
        reason: format!("subject {what}: {e}"),
    })?;
    Ok(Some(value.to_owned()))
}

/// Checks a customer or host name: these become file names, table keys and URI parts, so
/// they must be non-empty, at most [`MAX_NAME_LEN`] bytes, without control characters,
/// '/' or surrounding spaces.
pub fn validate_name(what: &'static str, value: &str) -> Result<(), CaError> {
    let reason = if value.is_empty() {
        Some("must not be empty")
    } else if value.len() > MAX_NAME_LEN {
        Some("must be at most 64 bytes long")
    } else if value.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else if value.contains('/') {
        Some("must not contain '/'")
    } else if value.trim() != value {
        Some("must not start or end with spaces")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(CaError::InvalidName {
            what,
            value: value.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// `aftercare://<customer>/<host>`, each part percent-encoded.
pub fn identity_uri(identity: &Identity) -> String {
    format!(
        "{IDENTITY_URI_SCHEME}{}/{}",
        percent_encode(&identity.customer),
        percent_encode(&identity.host)
    )
}

fn parse_identity_uri(uri: &str) -> Result<Identity, CaError> {
    let bad = || no_identity(&format!("malformed identity URI {uri:?}"));
    let rest = uri.strip_prefix(IDENTITY_URI_SCHEME).ok_or_else(bad)?;
    let (customer, host) = rest.split_once('/').ok_or_else(bad)?;
    let customer = percent_decode(customer).ok_or_else(bad)?;
    let host = percent_decode(host).ok_or_else(bad)?;
    validate_name("customer", &customer)?;
    validate_name("host", &host)?;
    Ok(Identity { customer, host })
}

/// Everything but RFC 3986 unreserved characters is encoded, so the result is ASCII (as a
/// URI SAN must be) and holds no '/' of its own.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut iter = s.bytes();
    while let Some(b) = iter.next() {
        if b == b'%' {
            let hi = char::from(iter.next()?).to_digit(16)?;
            let lo = char::from(iter.next()?).to_digit(16)?;
            bytes.push((hi * 16 + lo) as u8);
        } else if is_unreserved(b) {
            bytes.push(b);
        } else {
            // Anything else would have been encoded: not a URI we wrote.
            return None;
        }
    }
    String::from_utf8(bytes).ok()
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn no_identity(reason: &str) -> CaError {
    CaError::NoIdentity {
        reason: reason.to_owned(),
    }
}

fn server_names_or_default(names: &[String]) -> Vec<String> {
    if names.is_empty() {
        DEFAULT_SERVER_NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        names.to_vec()
    }
}

/// Checks each name the way a client will (rustls' ServerName) and makes it a SAN.
fn server_sans(names: &[String]) -> Result<Vec<SanType>, CaError> {
    server_names_or_default(names)
        .into_iter()
        .map(|name| {
            let invalid = |reason: String| CaError::InvalidServerName {
                value: name.clone(),
                reason,
            };
            match ServerName::try_from(name.as_str()) {
                Ok(ServerName::IpAddress(ip)) => Ok(SanType::IpAddress(ip.into())),
                Ok(ServerName::DnsName(dns)) => Ok(SanType::DnsName(
                    dns.as_ref()
                        .try_into()
                        .map_err(|e: rcgen::Error| invalid(e.to_string()))?,
                )),
                Ok(_) => Err(invalid("unsupported kind of name".into())),
                Err(e) => Err(invalid(e.to_string())),
            }
        })
        .collect()
}

fn sign_server_cert(
    issuer: &Issuer<'_, KeyPair>,
    dir: &Path,
    sans: Vec<SanType>,
    validity: &Validity,
) -> Result<IssuedCert, CaError> {
    validity.check()?;
    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| CaError::Generate {
            what: "server key",
            source,
        })?;
    let mut params = leaf_params(validity)?;
    params
        .distinguished_name
        .push(DnType::OrganizationName, CA_ORGANIZATION);
    params
        .distinguished_name
        .push(DnType::CommonName, "aftercare collector");
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serial = serial_hex(&params);
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|source| CaError::Generate {
            what: "server certificate",
            source,
        })?;
    let cert_path = dir.join(SERVER_CERT);
    let key_path = dir.join(SERVER_KEY);
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    write_public(&cert_path, cert.pem().as_bytes())?;
    Ok(IssuedCert {
        identity: None,
        serial,
        not_before: validity.not_before,
        not_after: validity.not_after,
        cert_path,
        key_path,
    })
}

/// What server and agent certificates share: an end entity, a random serial.
fn leaf_params(validity: &Validity) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    Ok(params)
}

/// 128 random bits: unique without any counter to keep (rcgen's default is derived from
/// the public key, which a renewal with the same key would repeat).
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| CaError::Random)?;
    // Positive, and 16 bytes long when DER-encoded.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn serial_hex(params: &CertificateParams) -> String {
    params
        .serial_number
        .as_ref()
        .map(|s| s.to_bytes().iter().map(|b| format!("{b:02X}")).collect())
        .unwrap_or_default()
}

/// The CA's issuer (certificate + key) and its certificate's PEM text.
fn load_ca(dir: &Path) -> Result<(Issuer<'static, KeyPair>, String), CaError> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    let cert_pem = match fs::read_to_string(&cert_path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(CaError::NoCa {
                dir: dir.to_owned(),
            });
        }
        Err(source) => {
            return Err(CaError::Io {
                action: "read",
                path: cert_path,
                source,
            });
        }
    };
    let key_pem = fs::read_to_string(&key_path).map_err(|source| CaError::Io {
        action: "read the CA key",
        path: key_path.clone(),
        source,
    })?;
    let key = KeyPair::from_pem(&key_pem).map_err(|source| CaError::BadCaFile {
        what: "key",
        path: key_path,
        source,
    })?;
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|source| CaError::BadCaFile {
        what: "certificate",
        path: cert_path,
        source,
    })?;
    Ok((issuer, cert_pem))
}

fn create_private_dir(dir: &Path) -> Result<(), CaError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| CaError::Io {
            action: "create the directory",
            path: dir.to_owned(),
            source,
        })
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), CaError> {
    write_atomic(path, contents, 0o600)
}

fn write_public(path: &Path, contents: &[u8]) -> Result<(), CaError> {
    write_atomic(path, contents, 0o644)
}

/// Writes a temporary file created with `mode` (so a key is never readable by others, not
/// even for a moment), syncs it and renames it over `path`: a reader sees the old file or
/// the new one, never half of one.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let io_err = |action, path: &Path| {
        let path = path.to_owned();
        move |source| CaError::Io {
            action,
            path,
            source,
        }
    };
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    // A leftover from a crash would make create_new fail; it holds nothing we need.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(io_err("remove the stale temporary file", &tmp)(e));
        }
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_err("write", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err("replace", path))?;
    if let Some(parent) = path.parent()
        && let Ok(dir) = fs::File::open(parent)
    {
        // Make the rename itself durable; failing here loses nothing already written.
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use std::os::unix::fs::PermissionsExt;

    fn cert_der(path: &Path) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(path).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn identity_round_trips_through_issue() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("ca");
        init_ca(&ca, &[], &InitOptions::default()).unwrap();
        for (customer, host) in [
            ("acme", "db-01.example.com"),
            ("ACME Corp. (北京) 100%", "web 1:8080?x=y#z"),
            ("a", "%2F"),
        ] {
            let out = tmp.path().join("agent");
            let issued = issue_agent_cert(&ca, customer, host, &out, Validity::default()).unwrap();
            let got = identity_from_cert(&cert_der(&issued.cert_path)).unwrap();
            assert_eq!(got.customer, customer);
            assert_eq!(got.host, host);
            assert_eq!(issued.identity, Some(got));
            assert_eq!(
                fs::read(out.join(CA_CERT)).unwrap(),
                fs::read(ca.join(CA_CERT)).unwrap()
            );
        }
    }

    #[test]
    fn identity_uri_is_ascii_and_has_one_separator() {
        let id = Identity {
            customer: "a b/ü".into(),
            host: "h".into(),
        };
        let uri = identity_uri(&id);
        assert_eq!(uri, "aftercare://a%20b%2F%C3%BC/h");
        assert_eq!(
            parse_identity_uri(&uri).unwrap_err().to_string(),
            "invalid customer name \"a b/ü\": must not contain '/'"
        );
        for bad in [
            "aftercare://nohost",
            "aftercare://a/b/c",
            "aftercare://a%2/b",
            "aftercare://%FF/b",
        ] {
            assert!(
                matches!(parse_identity_uri(bad), Err(CaError::NoIdentity { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn serials_are_unique() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("ca");
        init_ca(&ca, &[], &InitOptions::default()).unwrap();
        let a = issue_agent_cert(&ca, "c", "h", &tmp.path().join("a"), Validity::default());
        let b = issue_agent_cert(&ca, "c", "h", &tmp.path().join("b"), Validity::default());
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.serial.len(), 32);
        assert_ne!(a.serial, b.serial);
    }

    #[test]
    fn names_are_validated() {
        let long = "x".repeat(MAX_NAME_LEN + 1);
        let cases: &[(&str, Option<&str>)] = &[
            ("acme", None),
            ("ACME Corp. (北京)", None),
            (&long[1..], None),
            ("", Some("must not be empty")),
            (&long, Some("must be at most 64 bytes long")),
            ("a\nb", Some("must not contain control characters")),
            ("a\u{7f}", Some("must not contain control characters")),
            ("a/b", Some("must not contain '/'")),
            (" a", Some("must not start or end with spaces")),
        ];
        for (value, want) in cases {
            match (validate_name("host", value), want) {
                (Ok(()), None) => {}
                (Err(CaError::InvalidName { reason, .. }), Some(want)) => {
                    assert_eq!(reason, *want, "{value:?}")
                }
                (got, _) => panic!("{value:?}: {got:?}"),
            }
        }
        // The message names the bad value, escaped, and which name it is.
        let tmp = tempfile::tempdir().unwrap();
        init_ca(tmp.path(), &[], &InitOptions::default()).unwrap();
        let err = issue_agent_cert(tmp.path(), "acme", "a\nb", tmp.path(), Validity::default())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid host name \"a\\nb\": must not contain control characters"
        );
    }

    #[test]
    fn init_refuses_to_overwrite_unless_forced() {
        let tmp = tempfile::tempdir().unwrap();
        let first = init_ca(tmp.path(), &[], &InitOptions::default()).unwrap();
        let ca_pem = fs::read(&first.ca_cert).unwrap();

        let err = init_ca(tmp.path(), &[], &InitOptions::default()).unwrap_err();
        assert!(matches!(err, CaError::AlreadyExists { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&tmp.path().join(CA_KEY).display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("--force"), "{msg}");
        assert_eq!(
            fs::read(&first.ca_cert).unwrap(),
            ca_pem,
            "CA left untouched"
        );

        let opts = InitOptions {
            force: true,
            ..InitOptions::default()
        };
        init_ca(tmp.path(), &[], &opts).unwrap();
        assert_ne!(fs::read(&first.ca_cert).unwrap(), ca_pem, "CA replaced");
    }

    #[test]
    fn keys_are_0600_even_when_replacing_wider_files() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("ca");
        let out = tmp.path().join("agent");
        let summary = init_ca(&ca, &[], &InitOptions::default()).unwrap();
        let issued = issue_agent_cert(&ca, "c", "h", &out, Validity::default()).unwrap();
        for key in [&summary.ca_key, &summary.server_key, &issued.key_path] {
            assert_eq!(mode(key), 0o600, "{}", key.display());
        }
        assert_eq!(mode(&ca), 0o700);
        assert_eq!(mode(&out), 0o700);

        // A key file someone made world-readable is replaced, not rewritten in place.
        fs::set_permissions(&issued.key_path, fs::Permissions::from_mode(0o644)).unwrap();
        issue_agent_cert(&ca, "c", "h", &out, Validity::default()).unwrap();
        assert_eq!(mode(&issued.key_path), 0o600);
    }

    #[test]
    fn issue_without_ca_says_to_run_init() {
        let tmp = tempfile::tempdir().unwrap();
        let err =
            issue_agent_cert(tmp.path(), "c", "h", tmp.path(), Validity::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "no CA in {}: run `aftercare-collector ca init` first",
                tmp.path().display()
            )
        );
    }

    #[test]
    fn server_names_are_checked_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let err = init_ca(
            tmp.path(),
            &["ok.example".into(), "not a name".into()],
            &InitOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, CaError::InvalidServerName { ref value, .. } if value == "not a name")
        );
        assert!(!tmp.path().join(CA_KEY).exists());
    }

    #[test]
    fn validity_is_written_and_checked() {
        let tmp = tempfile::tempdir().unwrap();
        init_ca(tmp.path(), &[], &InitOptions::default()).unwrap();
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let expired = Validity {
            not_before: now - Duration::days(10),
            not_after: now - Duration::days(1),
        };
        let issued =
            issue_agent_cert(tmp.path(), "c", "h", &tmp.path().join("a"), expired).unwrap();
        let der = cert_der(&issued.cert_path);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            cert.validity().not_after.timestamp(),
            expired.not_after.unix_timestamp()
        );
        assert_eq!(
            cert.raw_serial_as_string().replace(':', "").to_uppercase(),
            issued.serial
        );

        let backwards = Validity {
            not_before: now,
            not_after: now,
        };
        let err = issue_agent_cert(tmp.path(), "c", "h", &tmp.path().join("b"), backwards);
        assert!(matches!(err, Err(CaError::InvalidValidity { .. })));
    }

    #[test]
    fn identity_from_subject_alone_and_garbage() {
        // A certificate without our URI (as another tool might issue) still names O/CN.
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "acme");
        params.distinguished_name.push(DnType::CommonName, "db1");
        let cert = params.self_signed(&key).unwrap();
        let id = identity_from_cert(cert.der()).unwrap();
        assert_eq!((id.customer.as_str(), id.host.as_str()), ("acme", "db1"));

        // URI and subject disagreeing is refused rather than guessed at.
        params.subject_alt_names = vec![SanType::URI("aftercare://other/db1".try_into().unwrap())];
        let cert = params.self_signed(&key).unwrap();
        let err = identity_from_cert(cert.der()).unwrap_err();
        assert!(err.to_string().contains("other/db1"), "{err}");

        assert!(matches!(
            identity_from_cert(b"not a certificate"),
            Err(CaError::BadCertificate { .. })
        ));
    }
}

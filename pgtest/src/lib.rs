//! PostgreSQL for tests: every test gets a database of its own on a throwaway cluster.
//!
//! With `AFTERCARE_TEST_PG` set (a `postgres://` URL of a role that may create databases)
//! the tests use that server. Otherwise the first test that asks starts a cluster for the
//! whole test process from Debian's `postgresql` binaries, on 127.0.0.1 and a free port,
//! in a temporary directory that is removed when the process exits. Where neither is
//! possible the test fails, saying how to get PostgreSQL: a backend the tests cannot reach
//! must never pass as tested.
//!
//! The cluster trades durability for speed (`fsync = off`): it holds nothing a test
//! cannot make again. Benchmarks measure on a durable one of their own.
//!
//! The cluster also speaks TLS (`ssl = on`), with a server certificate for `localhost` only
//! signed by a CA made for it ([`TestDb::ca_pem`]); plain connections work as before. The
//! tests' URLs dial 127.0.0.1, a name the certificate does not hold: a test can check both
//! a matching name (`localhost`) and one that is refused. [`tls_database`] is always on
//! this cluster, also with `AFTERCARE_TEST_PG` set, since the tests cannot know that
//! server's certificates.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Where a user of this machine may point the tests instead of the throwaway cluster.
pub const ENV: &str = "AFTERCARE_TEST_PG";

/// The throwaway cluster's `shared_buffers`, if not the tests' 32MB (e.g. `512MB`): a
/// benchmark's working set may not fit theirs. Read when the cluster starts.
pub const SHARED_BUFFERS_ENV: &str = "AFTERCARE_PGTEST_SHARED_BUFFERS";

/// A database of one test; dropped (with any connections still open to it) when this is.
pub struct TestDb {
    url: String,
    name: String,
    server: &'static Server,
}

impl TestDb {
    /// The URL to give the collector: `postgres://...`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The PEM file of the CA that signed the server's certificate, for `sslrootcert`.
    /// Only the tests' own cluster has one: take the database from [`tls_database`].
    pub fn ca_pem(&self) -> &Path {
        self.server.ca_pem.as_deref().unwrap_or_else(|| {
            panic!(
                "database {} is on the server {ENV} names, whose CA the tests do not know: \
                 TLS tests take theirs from aftercare_pgtest::tls_database()",
                self.name
            )
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.server.admin_url, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A fresh, empty database for one test. Panics, saying how to get PostgreSQL, when no
/// server can be had.
pub fn database() -> TestDb {
    on(server())
}

/// A fresh, empty database on the tests' own cluster, whose TLS certificates the tests
/// made (see [`TestDb::ca_pem`]); also with `AFTERCARE_TEST_PG` set. Panics, saying how to
/// get PostgreSQL, when that cluster cannot be started.
pub fn tls_database() -> TestDb {
    on(own_cluster().map_err(|why| format!("TLS tests need the tests' own cluster: {why}")))
}

fn on(server: Result<&'static Server, String>) -> TestDb {
    let server = server.unwrap_or_else(|why| panic!("{why}"));
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "t_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut c = postgres::Client::connect(&server.admin_url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to the tests' PostgreSQL: {e}"));
    c.batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    TestDb {
        url: server.url_of(&name),
        name,
        server,
    }
}

struct Server {
    /// URL of a database to connect to for creating and dropping test databases.
    admin_url: String,
    /// `postgres://user@host:port/` with the database name left to add.
    base: String,
    /// The CA of the server's certificate: on the tests' own cluster only.
    ca_pem: Option<PathBuf>,
}

impl Server {
    fn url_of(&self, db: &str) -> String {
        format!("{}{db}", self.base)
    }
}

fn server() -> Result<&'static Server, String> {
    static EXTERNAL: OnceLock<Result<Server, String>> = OnceLock::new();
    match std::env::var(ENV) {
        Ok(url) if !url.is_empty() => EXTERNAL
            .get_or_init(|| external(&url))
            .as_ref()
            .map_err(Clone::clone),
        _ => own_cluster(),
    }
}

/// The throwaway cluster, started at first use.
fn own_cluster() -> Result<&'static Server, String> {
    static OWN: OnceLock<Result<Server, String>> = OnceLock::new();
    OWN.get_or_init(start_cluster)
        .as_ref()
        .map_err(Clone::clone)
}

/// A server the user named: its URL with the database part cut off.
fn external(url: &str) -> Result<Server, String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| format!("{ENV}={url} is not a postgres:// URL"))?;
    let (authority, _db) = rest.split_once('/').unwrap_or((rest, ""));
    let base = format!("postgres://{authority}/");
    let admin_url = url.to_string();
    postgres::Client::connect(&admin_url, postgres::NoTls)
        .map_err(|e| format!("{ENV}={url}: cannot connect: {e}"))?;
    Ok(Server {
        admin_url,
        base,
        ca_pem: None,
    })
}

const HOW_TO_GET: &str = "PostgreSQL tests need a PostgreSQL server: install Debian's \
     `postgresql` package (`apt-get install postgresql`; `.ci/run` does it) so the tests can \
     start a throwaway cluster, or set AFTERCARE_TEST_PG=postgres://USER@HOST:PORT/DB to a \
     server where that role may create databases";

/// The newest `initdb` of Debian's packages (`/usr/lib/postgresql/<major>/bin`), else one
/// on the PATH.
fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    dirs.sort();
    if let Some((_, d)) = dirs.pop() {
        return Some(d);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("initdb").is_file() && p.join("pg_ctl").is_file())
    })
}

/// The cluster's directory; removed, with its server stopped, when the process exits.
static CLUSTER_DIR: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();

fn start_cluster() -> Result<Server, String> {
    let bin = bin_dir().ok_or_else(|| HOW_TO_GET.to_string())?;
    let tmp = std::env::temp_dir();
    remove_stale(&tmp, &bin);
    let dir = tmp.join(format!("aftercare-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let data = dir.join("data");
    // initdb refuses to run as root: as root, the cluster belongs to the `postgres` user
    // the package creates.
    let as_user = if unsafe { libc::geteuid() } == 0 {
        let ok = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!(
                "running as root, the test cluster must belong to the `postgres` user, and \
                 `chown postgres {}` failed; {HOW_TO_GET}",
                dir.display()
            ));
        }
        Some("postgres")
    } else {
        None
    };
    let run = |program: &Path, args: &[&std::ffi::OsStr]| -> Result<(), String> {
        let mut cmd = match as_user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        let out = cmd
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed: {}{}",
                program.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    };
    run(
        &bin.join("initdb"),
        &[
            "-D".as_ref(),
            data.as_os_str(),
            "-U".as_ref(),
            "aftercare".as_ref(),
            "--auth=trust".as_ref(),
            "--no-sync".as_ref(),
            "-E".as_ref(),
            "UTF8".as_ref(),
            "--locale=C".as_ref(),
        ],
    )?;
    let ca_pem = write_tls(&dir, &data, as_user)?;
    let port = free_port()?;
    let buffers = std::env::var(SHARED_BUFFERS_ENV).unwrap_or_else(|_| "32MB".into());
    if buffers.is_empty() || !buffers.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "{SHARED_BUFFERS_ENV}={buffers:?} is not a size PostgreSQL reads: give one like 512MB"
        ));
    }
    let conf = format!(
        "\n# aftercare tests\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
         unix_socket_directories = '{}'\nmax_connections = 300\nshared_buffers = {buffers}\n\
         fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
         ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        dir.display()
    );
    let conf_path = data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf_path)
        .map_err(|e| format!("cannot read {}: {e}", conf_path.display()))?;
    text.push_str(&conf);
    std::fs::write(&conf_path, text)
        .map_err(|e| format!("cannot write {}: {e}", conf_path.display()))?;
    let pg_ctl = bin.join("pg_ctl");
    let _ = CLUSTER_DIR.set((dir.clone(), pg_ctl.clone()));
    // SAFETY: registering a plain `extern "C" fn` that takes no arguments.
    unsafe { libc::atexit(stop_cluster) };
    run(
        &pg_ctl,
        &[
            "-D".as_ref(),
            data.as_os_str(),
            "-l".as_ref(),
            dir.join("server.log").as_os_str(),
            "-w".as_ref(),
            "-t".as_ref(),
            "60".as_ref(),
            "start".as_ref(),
        ],
    )
    .map_err(|e| {
        let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
        format!("{e}\nserver log:\n{log}")
    })?;
    let base = format!("postgres://aftercare@127.0.0.1:{port}/");
    Ok(Server {
        admin_url: format!("{base}postgres"),
        base,
        ca_pem: Some(ca_pem),
    })
}

/// A CA (`dir/ca.pem`) and a server certificate it signed for `localhost` only, with its key
/// (`data/server.{crt,key}`, the key 0600 and, as PostgreSQL demands, the cluster user's).
/// Returns the CA's path.
fn write_tls(dir: &Path, data: &Path, as_user: Option<&str>) -> Result<PathBuf, String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |e: rcgen::Error| format!("cannot make the test cluster's certificates: {e}");
    let ca_key = KeyPair::generate().map_err(failed)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "aftercare pgtest CA");
    let ca_cert = ca.self_signed(&ca_key).map_err(failed)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().map_err(failed)?;
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .and_then(|p| p.signed_by(&key, &issuer))
        .map_err(failed)?;

    let ca_path = dir.join("ca.pem");
    let write = |path: &Path, text: &str, mode: u32| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write(&ca_path, &ca_cert.pem(), 0o644)?;
    let (crt, key_path) = (data.join("server.crt"), data.join("server.key"));
    write(&crt, &cert.pem(), 0o644)?;
    write(&key_path, &key.serialize_pem(), 0o600)?;
    if let Some(user) = as_user {
        let ok = Command::new("chown")
            .arg(format!("{user}:{user}"))
            .args([&crt, &key_path])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!(
                "cannot give {} and {} to the `{user}` user (chown failed)",
                crt.display(),
                key_path.display()
            ));
        }
    }
    Ok(ca_path)
}

/// A TCP port free now on 127.0.0.1 (the server binds it a moment later).
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

extern "C" fn stop_cluster() {
    if let Some((dir, pg_ctl)) = CLUSTER_DIR.get() {
        stop_and_remove(dir, pg_ctl);
    }
}

fn stop_and_remove(dir: &Path, pg_ctl: &Path) {
    let data = dir.join("data");
    if data.join("postmaster.pid").exists() {
        let mut cmd = if unsafe { libc::geteuid() } == 0 {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_ctl);
            c
        } else {
            Command::new(pg_ctl)
        };
        let _ = cmd
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Clusters of test processes that died without their exit handler (killed): stop them and
/// remove their directories.
fn remove_stale(tmp: &Path, bin: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("aftercare-pg-"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            stop_and_remove(&e.path(), &bin.join("pg_ctl"));
        }
    }
}

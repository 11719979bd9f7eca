//! Helpers for the end-to-end tests: a collector with its CA in a temporary folder, agents
//! with certificates from it, real QUIC on 127.0.0.1, and the real binaries when a test needs
//! a process to kill.

use aftercare_agent::config::AgentConfig;
use aftercare_collector::ca;
use aftercare_collector::config::CollectorConfig;
use aftercare_collector::server::Collector;
use aftercare_shared::consent::{ConsentRecord, Scope};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Every test's upper bound on waiting for something to happen.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub collector: CollectorConfig,
}

impl Fixture {
    /// A temp folder with a collector config (listening on 127.0.0.1:0) and its CA.
    pub fn new() -> Fixture {
        Self::with_listen("127.0.0.1:0")
    }

    pub fn with_listen(listen: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("collector.toml");
        let text = format!(
            "data_dir = \"collector\"\nlisten = \"{listen}\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
             [ingest]\ncompact_every = \"1s\"\n"
        );
        std::fs::write(&path, text).unwrap();
        let collector = CollectorConfig::load(&path).unwrap();
        ca::init_ca(
            &collector.ca_dir(),
            &collector.server_names,
            &ca::InitOptions::default(),
        )
        .expect("ca init");
        Fixture { dir, collector }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("collector.toml")
    }

    /// Issue an agent certificate into `<tmp>/<name>`.
    pub fn issue(&self, name: &str, customer: &str, host: &str) -> PathBuf {
        let out = self.dir.path().join(name);
        ca::issue_agent_cert(
            &self.collector.ca_dir(),
            customer,
            host,
            &out,
            ca::Validity::days_from_now(30),
        )
        .expect("issue cert");
        out
    }

    /// Start the collector in this process.
    pub async fn start(&self) -> Running {
        let c = Collector::bind(&self.collector).expect("bind collector");
        let addr = c.local_addr();
        let api = c.api_addr();
        let stop = CancellationToken::new();
        let task = tokio::spawn(c.run(stop.clone()));
        Running {
            addr,
            api,
            stop,
            task,
        }
    }

    /// Agent config for certificates in `cert_dir`, state in `<tmp>/<name>-state`.
    pub fn agent_config(&self, name: &str, cert_dir: &Path, addr: SocketAddr) -> AgentConfig {
        let path = self.dir.path().join(format!("{name}.toml"));
        let text = format!(
            "state_dir = \"{name}-state\"\ninterval = \"1s\"\nlog_level = \"debug\"\n\
             [collector]\naddress = \"{addr}\"\nca = \"{ca}\"\ncert = \"{crt}\"\nkey = \"{key}\"\n\
             reconnect_min = \"100ms\"\nreconnect_max = \"1s\"\nack_timeout = \"3s\"\n",
            ca = cert_dir.join("ca.crt").display(),
            crt = cert_dir.join("agent.crt").display(),
            key = cert_dir.join("agent.key").display(),
        );
        std::fs::write(&path, text).unwrap();
        AgentConfig::load(&path).unwrap()
    }

    pub fn agent_config_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.toml"))
    }

    pub fn store(&self) -> Box<dyn aftercare_collector::store::Store> {
        self.collector
            .database
            .open_readonly()
            .expect("open store read-only")
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Running {
    pub addr: SocketAddr,
    /// The HTTP API.
    pub api: SocketAddr,
    pub stop: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("collector stops in time")
            .expect("collector task")
            .expect("collector run");
    }
}

/// Grant `scopes` in the agent's consent file, as `consent grant` would.
pub fn grant(cfg: &AgentConfig, scopes: &[Scope]) {
    let path = cfg.consent_path();
    let mut rec = aftercare_agent::consent::load(&path).unwrap();
    rec.grant_scopes(scopes, "Test Admin", time::OffsetDateTime::now_utc(), None)
        .unwrap();
    aftercare_agent::consent::store(&path, &rec).unwrap();
}

pub fn revoke(cfg: &AgentConfig, scopes: &[Scope]) {
    let path = cfg.consent_path();
    let mut rec: ConsentRecord = aftercare_agent::consent::load(&path).unwrap();
    rec.revoke(scopes);
    aftercare_agent::consent::store(&path, &rec).unwrap();
}

/// An agent running in this process.
pub struct AgentTask {
    pub stop: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

pub fn start_agent(cfg: AgentConfig) -> AgentTask {
    let stop = CancellationToken::new();
    let task = tokio::spawn(aftercare_agent::run::run(cfg, stop.clone()));
    AgentTask { stop, task }
}

impl AgentTask {
    pub async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("agent stops in time")
            .expect("agent task")
            .expect("agent run");
    }
}

/// Poll `f` every 100 ms until it returns Some, or panic after `within`.
pub async fn eventually<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if tokio::time::Instant::now() > end {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A binary of this workspace, built by `cargo test` next to the test executables.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds it",
        p.display()
    );
    p
}

/// A UDP port free right now on 127.0.0.1 (for a collector that must come back on the
/// same port after a restart).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A QUIC endpoint as an agent makes one, with the certificates `Fixture::issue` wrote to
/// `certs`; for tests that speak the protocol by hand.
pub fn agent_endpoint(certs: &Path) -> quinn::Endpoint {
    let tls = aftercare_agent::tls::client_config(
        &certs.join("ca.crt"),
        &certs.join("agent.crt"),
        &certs.join("agent.key"),
    )
    .expect("client config");
    aftercare_agent::transport::endpoint(tls, false).expect("client endpoint")
}

/// Panic unless `err` is a connection attempt the collector refused before any handshake
/// (QUIC's CONNECTION_REFUSED).
pub fn assert_refused_attempt(err: &aftercare_agent::transport::LinkError) {
    assert!(
        err.is_refused_attempt(),
        "expected the attempt refused, got: {err}"
    );
}

/// A UDP relay between one client and `server`, as a network path that can fail: cut, it
/// drops every datagram both ways (the network went away); with answers dropped, the
/// client's datagrams still reach the server but nothing comes back (a peer that is gone,
/// or has given its attempt up, as far as the server can tell).
pub struct Relay {
    pub addr: SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    deaf: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: JoinHandle<()>,
}

impl Relay {
    pub async fn start(server: SocketAddr) -> Relay {
        use std::sync::atomic::Ordering::SeqCst;
        let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        back.connect(server).await.unwrap();
        let addr = front.local_addr().unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let deaf = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, d) = (cut.clone(), deaf.clone());
        let task = tokio::spawn(async move {
            let (mut up, mut down) = (vec![0u8; 65536], vec![0u8; 65536]);
            let mut client = None;
            loop {
                tokio::select! {
                    r = front.recv_from(&mut up) => {
                        let Ok((n, from)) = r else { break };
                        client = Some(from);
                        if !c.load(SeqCst) {
                            let _ = back.send(&up[..n]).await;
                        }
                    }
                    r = back.recv(&mut down) => {
                        // An error here is an ICMP report for an earlier datagram.
                        let Ok(n) = r else { continue };
                        let blocked = c.load(SeqCst) || d.load(SeqCst);
                        if let (Some(to), false) = (client, blocked) {
                            let _ = front.send_to(&down[..n], to).await;
                        }
                    }
                }
            }
        });
        Relay {
            addr,
            cut,
            deaf,
            task,
        }
    }

    /// Drop every datagram from now on, both ways.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Drop the server's datagrams from now on; the client's still pass.
    pub fn drop_answers(&self) {
        self.deaf.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A child process that is killed when dropped, so a failing test leaves nothing behind.
pub struct Proc(pub Option<std::process::Child>);

impl Proc {
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// MemTotal from /proc/meminfo, in bytes.
pub fn meminfo_total() -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = text.lines().find(|l| l.starts_with("MemTotal:")).unwrap();
    let kb: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024.0
}

impl Proc {
    /// Start `bin(name)` with `args`, its stderr in `log`.
    pub fn spawn(name: &str, args: &[&str], log: &Path) -> Proc {
        let log = std::fs::File::create(log).unwrap();
        let child = std::process::Command::new(bin(name))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc(Some(child))
    }

    /// SIGTERM, then wait (bounded) for a clean exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.0.take() else {
            return false;
        };
        // SAFETY: kill(2) on our own unreaped child.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
        let end = std::time::Instant::now() + PATIENCE;
        while std::time::Instant::now() < end {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }
}

/// Append a `[[logs]]` source (TOML body lines in `body`) to agent `name`'s config and
/// load it again.
pub fn add_log_source(f: &Fixture, name: &str, body: &str) -> AgentConfig {
    let p = f.agent_config_path(name);
    let mut text = std::fs::read_to_string(&p).unwrap();
    text.push_str(&format!("\n[[logs]]\n{body}\n"));
    std::fs::write(&p, text).unwrap();
    AgentConfig::load(&p).unwrap()
}

/// Every log record stored for `host`; empty while the collector has no database yet.
pub fn stored_logs(f: &Fixture, host: &str) -> Vec<aftercare_shared::model::LogRecord> {
    use aftercare_collector::store::LogFilter;
    let Ok(mut st) = f.collector.database.open_readonly() else {
        return Vec::new();
    };
    let filter = LogFilter {
        since: 0,
        until: i64::MAX,
        min_severity: None,
        grep: None,
        limit: usize::MAX,
    };
    st.logs(host, &filter).unwrap_or_default()
}

/// A webhook receiver on 127.0.0.1: takes every POST, answers 200, keeps the JSON bodies.
/// Its thread lives as long as the test process.
pub struct Receiver {
    pub url: String,
    pub got: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        use std::io::{BufRead, BufReader, Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                if r.read_exact(&mut body).is_ok()
                    && let Ok(v) = serde_json::from_slice(&body)
                {
                    g.lock().unwrap().push(v);
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Receiver { url, got }
    }

    /// The events (`opened`, `resolved`...) heard about findings of `rule`, in order.
    pub fn events_for(&self, rule: &str) -> Vec<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["finding"]["rule"] == rule)
            .map(|v| v["event"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

/// (status, JSON body or Null) of one call to the HTTP API, with a bearer token if given;
/// bounded in time.
pub fn api_call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let auth = token.map(|t| format!("Bearer {t}"));
    let resp = match method {
        "GET" | "DELETE" => {
            let mut r = if method == "GET" {
                agent.get(url)
            } else {
                agent.delete(url)
            };
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
        _ => {
            let mut r = if method == "PUT" {
                agent.put(url)
            } else {
                agent.post(url)
            }
            .header("Content-Type", "application/json");
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.send(body.unwrap_or("{}"))
        }
    };
    let mut resp = resp.expect("the API answers");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// Every item of a list endpoint, `limit` per page, checking each page's size; the pages'
/// cursors are returned too.
pub fn api_pages(base_url: &str, token: &str, limit: usize) -> Vec<serde_json::Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let sep = if base_url.contains('?') { '&' } else { '?' };
    for _ in 0..1000 {
        let url = match &cursor {
            Some(c) => format!("{base_url}{sep}limit={limit}&cursor={c}"),
            None => format!("{base_url}{sep}limit={limit}"),
        };
        let (s, v) = api_call("GET", &url, Some(token), None);
        assert_eq!(s, 200, "{url}: {v}");
        let page = v["items"].as_array().expect("items").clone();
        assert!(page.len() <= limit, "{url}: {} items", page.len());
        items.extend(page);
        match v["next_cursor"].as_str() {
            Some(c) => {
                assert!(
                    !v["items"].as_array().unwrap().is_empty(),
                    "an empty page with a cursor"
                );
                cursor = Some(c.to_string());
            }
            None => return items,
        }
    }
    panic!("{base_url}: pages never end");
}

//! The load generator at tiny scale: every scenario on both backends, its self-checks
//! (every batch acknowledged once and in order, the store holding exactly what was sent,
//! high-water marks right after a restart) passing, within a bounded time. PostgreSQL is
//! aftercare-pgtest's (`database()` per scenario, in the loadgen process; `AFTERCARE_TEST_PG`
//! is passed through).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(240);

#[test]
fn every_scenario_on_both_backends_accounts_exactly_once() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aftercare-loadgen"))
        .args([
            "all",
            "--agents",
            "20",
            "--batches",
            "30",
            "--reconnect-batches",
            "3",
            "--log-bursts",
            "3",
            "--burst-lines",
            "200",
            // Paced: the path real agents take (one batch written per tick); 3 s per backend.
            "--pace",
            "100ms",
            "--idle-hold",
            "500ms",
            "--backend",
            "both",
            "--collector-threads",
            "2",
            "--agent-threads",
            "2",
            // Three sockets, the last one not full.
            "--agents-per-socket",
            "7",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start aftercare-loadgen");
    // Read the pipes on threads: a full pipe would stall the child.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let t = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for aftercare-loadgen") {
            break Some(status);
        }
        if t.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (out.join().expect("stdout"), err.join().expect("stderr"));
    let shown = format!("--- stdout\n{out}\n--- stderr\n{err}");
    let Some(status) = status else {
        panic!("aftercare-loadgen took more than {PATIENCE:?}\n{shown}");
    };
    assert!(
        status.success(),
        "aftercare-loadgen failed: {status}\n{shown}"
    );
    assert!(!out.contains("FAILED"), "{shown}");
    for scenario in ["ingest", "logs", "idle", "reconnect"] {
        for backend in ["sqlite", "postgres"] {
            let row = out
                .lines()
                .find(|l| {
                    let mut w = l.split_whitespace();
                    w.next() == Some(scenario) && w.next() == Some(backend)
                })
                .unwrap_or_else(|| panic!("no row for {scenario} on {backend}\n{shown}"));
            assert!(row.trim_end().ends_with("ok"), "{row}\n{shown}");
        }
    }
}

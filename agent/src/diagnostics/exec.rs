//! Running a probe's program: fixed argv, no shell, stdin empty, environment cleared but
//! for PATH and LANG, in a process group of its own so that the whole group is killed at
//! the time limit or once the output passes its cap.

use aftercare_shared::diag::{DiagOutcome, OutputCap};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// What a probe gave.
#[derive(Debug)]
pub struct Ran {
    pub outcome: DiagOutcome,
    pub output: Vec<u8>,
    pub truncated: bool,
}

impl Ran {
    /// A built-in's text, capped.
    pub fn text(bytes: Vec<u8>, cap: usize) -> Ran {
        let mut c = OutputCap::new(cap);
        c.push(&bytes);
        let (output, truncated) = c.finish();
        Ran {
            outcome: DiagOutcome::Done { exit_code: None },
            output,
            truncated,
        }
    }

    pub fn failed(why: String) -> Ran {
        Ran {
            output: format!("{why}\n").into_bytes(),
            outcome: DiagOutcome::Failed(why),
            truncated: false,
        }
    }
}

/// Run `argv` (argv[0] an absolute path) for at most `timeout`, keeping at most `cap` bytes
/// of its stdout and stderr together, in the order they came.
pub async fn run(argv: &[String], timeout: Duration, cap: usize) -> Ran {
    let Some((program, args)) = argv.split_first() else {
        return Ran::failed("empty argv".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for key in ["PATH", "LANG"] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Ran::failed(format!("cannot run {program}: {e}")),
    };
    // Also when this future is dropped (the agent stops, the collector's stream is reset):
    // nothing the probe started outlives it.
    let group = Group(child.id());
    let kill_group = || group.kill();
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let mut cap = OutputCap::new(cap);
    let (mut out_open, mut err_open) = (true, true);
    let (mut b1, mut b2) = (vec![0u8; 8192], vec![0u8; 8192]);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut timed_out = false;
    while out_open || err_open {
        tokio::select! {
            _ = &mut deadline => {
                timed_out = true;
                break;
            }
            n = out.read(&mut b1), if out_open => match n {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => if !cap.push(&b1[..n]) { break },
            },
            n = err.read(&mut b2), if err_open => match n {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => if !cap.push(&b2[..n]) { break },
            },
        }
    }
    let cut = cap.is_truncated();
    let status = if timed_out || cut {
        kill_group();
        child.wait().await.ok()
    } else {
        // Output closed: wait for the exit within what is left of the time limit.
        tokio::select! {
            s = child.wait() => s.ok(),
            _ = &mut deadline => {
                timed_out = true;
                kill_group();
                child.wait().await.ok()
            }
        }
    };
    // Whatever the probe left behind in its group goes too.
    kill_group();
    let (output, truncated) = cap.finish();
    let outcome = if timed_out {
        DiagOutcome::TimedOut {
            after_ms: started.elapsed().as_millis() as u64,
        }
    } else {
        DiagOutcome::Done {
            exit_code: status.and_then(|s| s.code().or_else(|| s.signal().map(|g| 128 + g))),
        }
    };
    Ran {
        outcome,
        output,
        truncated,
    }
}

/// A probe's process group (its pgid is the child's pid), killed when dropped.
struct Group(Option<u32>);

impl Group {
    fn kill(&self) {
        if let Some(pid) = self.0 {
            // SAFETY: kill(2) on the process group we created; once all its members are
            // gone it fails with ESRCH and does nothing.
            unsafe {
                libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn output_and_exit_code() {
        let r = run(
            &argv(&["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(5),
            1024,
        )
        .await;
        assert_eq!(r.outcome, DiagOutcome::Done { exit_code: Some(3) });
        let text = String::from_utf8(r.output).unwrap();
        assert!(text.contains("out\n") && text.contains("err\n"), "{text}");
        assert!(!r.truncated);
    }

    #[tokio::test]
    async fn the_environment_is_cleared_but_for_path_and_lang() {
        // The test process has HOME, CARGO_* and more; the probe sees none of them.
        assert!(std::env::var_os("CARGO_PKG_NAME").is_some() || std::env::var_os("HOME").is_some());
        let r = run(&argv(&["/usr/bin/env"]), Duration::from_secs(5), 65536).await;
        let text = String::from_utf8(r.output).unwrap();
        for line in text.lines() {
            assert!(
                line.starts_with("PATH=") || line.starts_with("LANG="),
                "{line}"
            );
        }
    }

    #[tokio::test]
    async fn a_hanging_probe_is_killed_at_its_limit() {
        let t = Instant::now();
        let r = run(
            &argv(&["/bin/sleep", "30"]),
            Duration::from_millis(300),
            1024,
        )
        .await;
        assert!(matches!(r.outcome, DiagOutcome::TimedOut { after_ms } if after_ms >= 300));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn output_past_the_cap_is_cut_and_the_process_ends() {
        let t = Instant::now();
        let r = run(&argv(&["/usr/bin/yes"]), Duration::from_secs(10), 1000).await;
        assert!(r.truncated);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "killed, not waited for"
        );
        let text = String::from_utf8(r.output).unwrap();
        assert!(text.contains("[output cut at 1000 bytes"), "{text}");
        assert!(text.len() < 1100);
    }

    #[tokio::test]
    async fn what_a_probe_started_dies_with_it() {
        // The shell exits at once; its background child holds the output open until the
        // time limit, and is killed with the group.
        let r = run(
            &argv(&["/bin/sh", "-c", "/bin/sleep 4343 & echo started"]),
            Duration::from_millis(500),
            1024,
        )
        .await;
        assert!(matches!(r.outcome, DiagOutcome::TimedOut { .. }), "{r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sleeping = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| c == b"/bin/sleep\x004343\x00")
            })
            .count();
        assert_eq!(sleeping, 0);
    }

    #[tokio::test]
    async fn a_missing_program_fails() {
        let r = run(&argv(&["/nonexistent/probe"]), Duration::from_secs(1), 100).await;
        assert!(
            matches!(r.outcome, DiagOutcome::Failed(ref m) if m.contains("/nonexistent/probe"))
        );
    }
}

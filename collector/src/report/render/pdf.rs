//! The HTML report printed to PDF by headless Chromium: the one place rendering touches
//! files and processes.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::RenderError;

/// Chromium gets this long to print; a hung browser must not hang report generation.
const PRINT_LIMIT: Duration = Duration::from_secs(60);

const KNOWN_PATHS: [&str; 2] = ["/usr/bin/chromium", "/usr/bin/chromium-browser"];

/// `$CHROME` if set and present, else the distributions' usual paths.
pub fn find_chromium() -> Option<PathBuf> {
    std::env::var_os("CHROME")
        .map(PathBuf::from)
        .into_iter()
        .chain(KNOWN_PATHS.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// Prints `html` to PDF (A4, as the stylesheet's `@page` asks) with `chromium`, or the one
/// [`find_chromium`] finds.
pub fn render_pdf(html: &str, chromium: Option<&Path>) -> Result<Vec<u8>, RenderError> {
    let chromium = match chromium {
        Some(path) if path.is_file() => path.to_path_buf(),
        Some(path) => return Err(RenderError::NoChromium(path.display().to_string())),
        None => find_chromium().ok_or_else(|| {
            RenderError::NoChromium(format!("$CHROME, {}", KNOWN_PATHS.join(", ")))
        })?,
    };
    let fail = |message: String| RenderError::Chromium {
        chromium: chromium.clone(),
        message,
    };
    let dir = tempfile::tempdir().map_err(|e| fail(format!("making a temporary folder: {e}")))?;
    let page = dir.path().join("report.html");
    let out = dir.path().join("report.pdf");
    let log = dir.path().join("chromium.log");
    std::fs::write(&page, html).map_err(|e| fail(format!("writing {}: {e}", page.display())))?;
    let log_file = std::fs::File::create(&log)
        .map_err(|e| fail(format!("creating {}: {e}", log.display())))?;

    let mut child = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-pdf-header-footer",
        ])
        .args([
            "--no-first-run",
            "--disable-background-networking",
            "--disable-extensions",
        ])
        // Its own profile: never the operator's, and two reports may print at once.
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("--print-to-pdf={}", out.display()))
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        // Its own process group, so a timeout ends its helpers too.
        .process_group(0)
        .spawn()
        .map_err(|e| fail(format!("starting it: {e}")))?;

    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < PRINT_LIMIT => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Ok(None) => {
                kill_group(child.id());
                let _ = child.wait();
                return Err(fail(format!(
                    "no PDF after {} s; stopped it",
                    PRINT_LIMIT.as_secs()
                )));
            }
            Err(e) => return Err(fail(format!("waiting for it: {e}"))),
        }
    };
    // Helpers it left behind (crashpad) go with it.
    kill_group(child.id());
    let pdf = std::fs::read(&out).unwrap_or_default();
    if !status.success() || !pdf.starts_with(b"%PDF") {
        let stderr = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(fail(format!(
            "{status}, no PDF written; its last words: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        )));
    }
    Ok(pdf)
}

fn kill_group(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals the process group we created with
    // `process_group(0)` for this child; it touches no memory of ours.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

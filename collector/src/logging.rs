//! Log output: `tracing` to stderr (systemd's journal picks it up) or to a file.

use std::path::Path;

fn level(configured: &str) -> tracing::Level {
    std::env::var("AFTERCARE_LOG")
        .unwrap_or_else(|_| configured.to_string())
        .parse()
        .unwrap_or(tracing::Level::INFO)
}

pub fn init(configured: &str) {
    let _ = tracing_subscriber::fmt()
        .with_max_level(level(configured))
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Log to a file (quickstart keeps the terminal for the status view).
pub fn init_to_file(path: &Path, configured: &str) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let _ = tracing_subscriber::fmt()
        .with_max_level(level(configured))
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(f))
        .try_init();
    Ok(())
}

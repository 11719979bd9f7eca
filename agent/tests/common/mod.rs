//! Running the real `aftercare-agent` binary from the CLI tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn agent(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aftercare-agent"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run aftercare-agent")
}

/// Everything the command printed, stdout then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A minimal agent.toml in `dir` with its state in `<dir>/state`.
pub fn config(dir: &Path) -> PathBuf {
    let p = dir.join("agent.toml");
    std::fs::write(
        &p,
        "state_dir = \"state\"\n[collector]\naddress = \"127.0.0.1:7443\"\n\
         ca = \"ca.crt\"\ncert = \"agent.crt\"\nkey = \"agent.key\"\n",
    )
    .unwrap();
    p
}

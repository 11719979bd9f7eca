//! The agent's sequence epoch, kept in the state directory.
//!
//! Sequence numbers are `epoch << 32 | counter` (see `aftercare_shared::protocol`). The epoch
//! grows by one at every start and is on disk before the first batch is numbered, so a
//! restarted agent never reuses a number the collector has already stored.

use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("state file {path}: {message}")]
pub struct StateError {
    pub path: PathBuf,
    pub message: String,
}

const FILE: &str = "epoch";

pub fn epoch_path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Read the last epoch, store and return the next one.
pub fn next_epoch(state_dir: &Path) -> Result<u32, StateError> {
    let path = epoch_path(state_dir);
    let err = |message: String| StateError {
        path: path.clone(),
        message,
    };
    let last = match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().parse::<u32>().map_err(|_| {
            err(format!(
                "holds '{}', not a number; delete it and the agent starts a new epoch \
                 above the collector's",
                s.trim()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(err(e.to_string())),
    };
    let next = last
        .checked_add(1)
        .ok_or_else(|| err("epoch exhausted".into()))?;
    store_epoch(state_dir, next)?;
    Ok(next)
}

/// Persist `epoch` (atomically, durably).
pub fn store_epoch(state_dir: &Path, epoch: u32) -> Result<(), StateError> {
    let path = epoch_path(state_dir);
    let err = |e: std::io::Error| StateError {
        path: path.clone(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(state_dir).map_err(err)?;
    let tmp = state_dir.join(".epoch.tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        writeln!(f, "{epoch}").map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, &path).map_err(err)?;
    if let Ok(d) = std::fs::File::open(state_dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_grow_across_starts_and_garbage_is_named() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(next_epoch(d.path()).unwrap(), 1);
        assert_eq!(next_epoch(d.path()).unwrap(), 2);
        store_epoch(d.path(), 40).unwrap();
        assert_eq!(next_epoch(d.path()).unwrap(), 41);
        std::fs::write(epoch_path(d.path()), "x").unwrap();
        let e = next_epoch(d.path()).unwrap_err();
        assert!(e.to_string().contains("not a number"), "{e}");
    }
}

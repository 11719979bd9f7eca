//! The consent file on disk, and the watch on it.
//!
//! The record itself (scopes, grants, expiry) is pure logic in `aftercare_shared::consent`;
//! this module reads and writes the file and turns changes to it — by our CLI, by hand, or
//! by time passing an `until` — into a `watch` channel the rest of the agent follows.

use aftercare_shared::consent::{ConsentError, ConsentRecord, Scope};
use aftercare_shared::time_fmt::now_millis;
use notify::{EventKind, RecursiveMode, Watcher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read consent file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("consent file {path}: {source}")]
    Invalid { path: PathBuf, source: ConsentError },
    #[error("cannot write consent file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Read the record; a missing file is an empty record (nothing granted).
pub fn load(path: &Path) -> Result<ConsentRecord, FileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => ConsentRecord::parse(&text).map_err(|source| FileError::Invalid {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConsentRecord::default()),
        Err(source) => Err(FileError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Write the record atomically: a reader (the running agent) sees the old file or the new
/// one, never half of one, and a crash leaves one of the two.
pub fn store(path: &Path, record: &ConsentRecord) -> Result<(), FileError> {
    let err = |source| FileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(".consent.toml.tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(record.to_toml().as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)?;
    // The rename is durable only once the directory is synced.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// What the rest of the agent sees: the record as last read, and which scopes are active now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConsentState {
    pub record: ConsentRecord,
    pub active: Vec<Scope>,
}

impl ConsentState {
    pub fn allows(&self, scope: Scope) -> bool {
        self.active.contains(&scope)
    }
}

fn read_state(path: &Path) -> ConsentState {
    match load(path) {
        Ok(record) => {
            let active = record.active_scopes(now_millis());
            ConsentState { record, active }
        }
        // Unreadable consent is no consent: nothing leaves the host until it is fixed.
        Err(e) => {
            warn!("{e}; sending nothing until the file is fixed");
            ConsentState::default()
        }
    }
}

/// Start watching the consent file. Returns the current state at once; later changes arrive
/// within a second through the receiver. Stops when `shutdown` is cancelled.
pub fn watch(
    path: PathBuf,
    shutdown: CancellationToken,
) -> Result<watch::Receiver<ConsentState>, notify::Error> {
    let initial = read_state(&path);
    let (tx, rx) = watch::channel(initial);
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<()>();
    let name = path.file_name().map(|n| n.to_os_string());
    // Watch the directory, not the file: editors and our own writer replace the file by
    // rename, which a watch on the old inode would never see.
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        // Only changes count: reads of the file (ours included) would feed back into
        // themselves (PROBES.md: a watcher that re-reads what it watches spins).
        let relevant = matches!(
            ev.kind,
            EventKind::Create(_)
                | EventKind::Modify(notify::event::ModifyKind::Data(_))
                | EventKind::Modify(notify::event::ModifyKind::Name(_))
                | EventKind::Modify(notify::event::ModifyKind::Any)
                | EventKind::Remove(_)
                | EventKind::Access(notify::event::AccessKind::Close(
                    notify::event::AccessMode::Write
                ))
        );
        if relevant && ev.paths.iter().any(|p| p.file_name() == name.as_deref()) {
            let _ = ev_tx.send(());
        }
    })?;
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&dir).map_err(notify::Error::io)?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;

    tokio::spawn(async move {
        let _watcher = watcher; // dropped (and the inotify fd closed) when this task ends
        // A slow safety net for filesystems that deliver no events.
        let poll = Duration::from_secs(30);
        loop {
            let now = now_millis();
            let next_expiry = tx.borrow().record.next_change_after(now);
            let wait = next_expiry
                .map(|t| Duration::from_millis((t - now).max(0) as u64 + 5))
                .unwrap_or(poll)
                .min(poll);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = ev_rx.recv() => {
                    if ev.is_none() { break; }
                    // Writers may land in several events; coalesce them.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    while ev_rx.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(wait) => {}
            }
            let new = read_state(&path);
            tx.send_if_modified(|cur| {
                if *cur == new {
                    return false;
                }
                if cur.active != new.active {
                    info!(
                        scopes = %scopes_str(&new.active),
                        "consent changed"
                    );
                }
                *cur = new;
                true
            });
        }
    });
    Ok(rx)
}

pub fn scopes_str(s: &[Scope]) -> String {
    if s.is_empty() {
        return "none".into();
    }
    s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_no_consent_and_store_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("consent.toml");
        assert_eq!(load(&p).unwrap(), ConsentRecord::default());
        let mut r = ConsentRecord::default();
        r.grant_scopes(
            &[Scope::Metrics],
            "Ann",
            time::OffsetDateTime::now_utc(),
            None,
        )
        .unwrap();
        store(&p, &r).unwrap();
        assert_eq!(load(&p).unwrap(), r);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn grant_revoke_and_garbage_are_seen_within_a_second() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("consent.toml");
        let stop = CancellationToken::new();
        let mut rx = watch(p.clone(), stop.clone()).unwrap();
        assert!(rx.borrow().active.is_empty());

        let mut r = ConsentRecord::default();
        r.grant_scopes(
            &[Scope::Metrics, Scope::Logs],
            "Ann",
            time::OffsetDateTime::now_utc(),
            None,
        )
        .unwrap();
        store(&p, &r).unwrap();
        tokio::time::timeout(Duration::from_secs(1), rx.changed())
            .await
            .expect("grant seen within 1 s")
            .unwrap();
        assert_eq!(rx.borrow().active, vec![Scope::Metrics, Scope::Logs]);

        // A hand edit that breaks the file means no consent.
        std::fs::write(&p, "this is = = not toml").unwrap();
        tokio::time::timeout(Duration::from_secs(1), rx.changed())
            .await
            .expect("edit seen within 1 s")
            .unwrap();
        assert!(rx.borrow().active.is_empty());
        stop.cancel();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn expiry_takes_effect_without_any_file_event() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("consent.toml");
        let mut r = ConsentRecord::default();
        let now = time::OffsetDateTime::now_utc();
        r.grant_scopes(
            &[Scope::Metrics],
            "Ann",
            now,
            Some(now + time::Duration::milliseconds(600)),
        )
        .unwrap();
        store(&p, &r).unwrap();
        let stop = CancellationToken::new();
        let mut rx = watch(p, stop.clone()).unwrap();
        assert_eq!(rx.borrow().active, vec![Scope::Metrics]);
        tokio::time::timeout(Duration::from_millis(1600), rx.changed())
            .await
            .expect("expiry seen")
            .unwrap();
        assert!(rx.borrow().active.is_empty());
        stop.cancel();
    }
}

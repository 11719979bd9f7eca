//! Tailer positions on disk.
//!
//! One TOML file (toml is already in the agent; serde_json is not, for size), a serde enum
//! tagged with `version` so a later format can be read beside this one:
//!
//! ```toml
//! version = "1"
//!
//! [[files]]
//! dev_ino = "2049:1835021"
//! fingerprint = "256:9c1f0e4b2a7d3c51"
//! offset = 4096
//! path = "/var/log/nginx/access.log"
//! ```
//!
//! Keyed by (dev, inode) and fingerprint, never by path (the path is for people). Offsets
//! are acknowledged ones only: after a crash, lines past them are read and sent again, so
//! nothing is lost and the collector's (stream, sequence) dedup keeps the store exact.
//! Written to a temp file, fsynced, renamed over the old one, and the directory fsynced:
//! after a kill -9 the file is the old positions or the new ones, never a torn mix.

use super::fingerprint::{DevIno, Fingerprint};
use super::tailer::FilePosition;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("log checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "log checkpoint {path} is unreadable ({message}); move it aside and the agent \
         starts over (files are read again from where `start_at` says)"
    )]
    Format { path: PathBuf, message: String },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum Stored {
    #[serde(rename = "1")]
    V1 { files: Vec<EntryV1> },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryV1 {
    /// "DEV:INO" as text: inode numbers can use all 64 bits (overlayfs xino) and TOML
    /// integers stop at 2^63.
    dev_ino: String,
    fingerprint: String,
    offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<PathBuf>,
}

/// The positions as file content.
pub fn encode(positions: &[FilePosition]) -> String {
    let files = positions
        .iter()
        .map(|p| EntryV1 {
            dev_ino: format!("{}:{}", p.dev_ino.dev, p.dev_ino.ino),
            fingerprint: p.fingerprint.to_string(),
            offset: p.offset,
            path: p.path.clone(),
        })
        .collect();
    toml::to_string(&Stored::V1 { files }).expect("strings and small integers always encode")
}

/// Positions from file content; the error says what is wrong, without a path.
pub fn decode(text: &str) -> Result<Vec<FilePosition>, String> {
    let Stored::V1 { files } = toml::from_str(text).map_err(|e| e.to_string())?;
    files
        .into_iter()
        .map(|e| {
            let bad = || format!("dev_ino '{}' is not DEV:INO", e.dev_ino);
            let (dev, ino) = e.dev_ino.split_once(':').ok_or_else(bad)?;
            let dev_ino = DevIno {
                dev: dev.parse().map_err(|_| bad())?,
                ino: ino.parse().map_err(|_| bad())?,
            };
            let fingerprint: Fingerprint = e.fingerprint.parse()?;
            Ok(FilePosition {
                dev_ino,
                fingerprint,
                offset: e.offset,
                path: e.path,
            })
        })
        .collect()
}

/// The stored positions, or `None` when there is no checkpoint yet (a fresh start).
pub fn load(path: &Path) -> Result<Option<Vec<FilePosition>>, CheckpointError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Io {
                path: path.into(),
                source,
            });
        }
    };
    decode(&text)
        .map(Some)
        .map_err(|message| CheckpointError::Format {
            path: path.into(),
            message,
        })
}

/// Replace the stored positions atomically and durably.
pub fn store(path: &Path, positions: &[FilePosition]) -> Result<(), CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.into(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(encode(positions).as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    // The rename is durable only once the directory is.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<FilePosition> {
        vec![
            FilePosition {
                dev_ino: DevIno {
                    dev: 2049,
                    ino: u64::MAX - 3,
                },
                fingerprint: Fingerprint::of(b"2026-11-22 first line\n"),
                offset: 4096,
                path: Some("/var/log/app.log".into()),
            },
            FilePosition {
                dev_ino: DevIno { dev: 1, ino: 2 },
                fingerprint: Fingerprint::of(b""),
                offset: 0,
                path: None,
            },
        ]
    }

    #[test]
    fn positions_round_trip_through_the_versioned_format() {
        let text = encode(&sample());
        assert!(text.starts_with("version = \"1\""), "{text}");
        assert_eq!(decode(&text).unwrap(), sample());
        assert_eq!(decode(&encode(&[])).unwrap(), []);
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused_with_a_reason() {
        assert!(decode("version = \"9\"\nfiles = []\n").is_err());
        assert!(decode("files = []\n").is_err(), "no version");
        let e = decode(
            "version = \"1\"\n[[files]]\ndev_ino = \"x\"\nfingerprint = \"0:0\"\noffset = 1\n",
        );
        assert!(e.unwrap_err().contains("DEV:INO"));
        let e = decode(
            "version = \"1\"\n[[files]]\ndev_ino = \"1:2\"\nfingerprint = \"0:0\"\noffset = 1\nextra = 1\n",
        );
        assert!(e.is_err(), "unknown key");
    }

    #[test]
    fn store_replaces_atomically_and_a_leftover_temp_file_is_harmless() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("logs.checkpoint");
        assert!(load(&p).unwrap().is_none());
        store(&p, &sample()).unwrap();
        // A kill -9 between writing the temp file and the rename leaves this behind.
        std::fs::write(d.path().join(".logs.checkpoint.tmp"), "torn garb").unwrap();
        assert_eq!(load(&p).unwrap().unwrap(), sample());
        store(&p, &sample()[1..]).unwrap();
        assert_eq!(load(&p).unwrap().unwrap(), sample()[1..]);
        std::fs::write(&p, "not toml [").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(
            e.contains("logs.checkpoint") && e.contains("move it aside"),
            "{e}"
        );
    }
}

//! Helpers for the agent's and the collector's TOML configs: one error type that names the
//! file, and durations written as people write them.

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Parse `text` (the contents of `path`) into `T`; unknown keys and bad values are named.
pub fn parse_toml<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Turn a validation message into the error that names the file.
pub fn invalid(path: &Path) -> impl FnOnce(String) -> ConfigError + '_ {
    move |message| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    }
}

/// `#[serde(with = "aftercare_shared::config::duration")]`: "10s", "500ms", "2m".
pub mod duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "'{s}' is not a duration ({e}); write e.g. \"10s\", \"500ms\", \"2m\""
            ))
        })
    }
}

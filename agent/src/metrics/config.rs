//! The `[metrics]` section of the agent's configuration.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// What to measure and how long a filesystem may take to answer.
///
/// ```toml
/// [metrics]
/// fs_timeout = "2s"
/// include_fs_types = ["tmpfs"]          # also watch tmpfs (excluded by default)
/// exclude_mounts = ["/proc", "/sys", "/dev", "/mnt/scratch"]
/// exclude_interfaces = ["veth*"]
/// temperatures = true
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// How long one tick waits for `statvfs` answers. A mount that has not answered by then
    /// is reported hung and not probed again until its call returns. One tick blocks at most
    /// this long on filesystems.
    #[serde(deserialize_with = "human_duration")]
    pub fs_timeout: Duration,
    /// Filesystem types not reported: pseudo and container filesystems. Setting this key
    /// replaces the whole default list; to watch one of them, use `include_fs_types`.
    pub exclude_fs_types: Vec<String>,
    /// Types reported even though `exclude_fs_types` names them, e.g. `["tmpfs"]`.
    pub include_fs_types: Vec<String>,
    /// Mount points not reported. `/sys` excludes `/sys` and everything below it;
    /// `/var/lib/docker/` (trailing slash) only what is below it.
    pub exclude_mounts: Vec<String>,
    /// Block devices not reported in disk I/O: exact names, or prefixes ending in `*`.
    /// Partitions are never reported: their whole disk carries the same I/O.
    pub exclude_disks: Vec<String>,
    /// Network interfaces not reported: exact names, or prefixes ending in `*`.
    pub exclude_interfaces: Vec<String>,
    /// Read hardware temperature sensors where the host has them.
    pub temperatures: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        MetricsConfig {
            fs_timeout: Duration::from_secs(2),
            exclude_fs_types: strings(&[
                "autofs",
                "binfmt_misc",
                "bpf",
                "cgroup",
                "cgroup2",
                "configfs",
                "debugfs",
                "devpts",
                "devtmpfs",
                "efivarfs",
                "fusectl",
                "hugetlbfs",
                "mqueue",
                "nsfs",
                "overlay",
                "proc",
                "pstore",
                "ramfs",
                "rpc_pipefs",
                "securityfs",
                "selinuxfs",
                // Read-only images (snaps, live media) are always 100 % full by design.
                "squashfs",
                "iso9660",
                "sysfs",
                "tmpfs",
                "tracefs",
            ]),
            include_fs_types: Vec::new(),
            exclude_mounts: strings(&[
                "/proc",
                "/sys",
                "/dev",
                "/run/credentials",
                "/run/docker/netns",
                "/var/lib/docker/",
                "/var/lib/containers/storage/",
                "/var/lib/kubelet/pods/",
            ]),
            exclude_disks: strings(&["loop*", "ram*", "zram*", "fd*"]),
            exclude_interfaces: Vec::new(),
            temperatures: true,
        }
    }
}

pub const FS_TIMEOUT_MIN: Duration = Duration::from_millis(100);
/// A tick is 10 s by default: waiting longer than this on one would delay the next.
pub const FS_TIMEOUT_MAX: Duration = Duration::from_secs(10);

impl MetricsConfig {
    /// Check values that serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(FS_TIMEOUT_MIN..=FS_TIMEOUT_MAX).contains(&self.fs_timeout) {
            return Err(format!(
                "metrics.fs_timeout must be between {} and {} (got {})",
                humantime::format_duration(FS_TIMEOUT_MIN),
                humantime::format_duration(FS_TIMEOUT_MAX),
                humantime::format_duration(self.fs_timeout),
            ));
        }
        for (key, list) in [
            ("exclude_fs_types", &self.exclude_fs_types),
            ("include_fs_types", &self.include_fs_types),
            ("exclude_disks", &self.exclude_disks),
            ("exclude_interfaces", &self.exclude_interfaces),
        ] {
            if let Some(bad) = list
                .iter()
                .find(|s| s.is_empty() || s.contains(char::is_whitespace))
            {
                return Err(format!(
                    "metrics.{key}: '{bad}' is not a name (empty or contains spaces)"
                ));
            }
        }
        if let Some(bad) = self.exclude_mounts.iter().find(|m| !m.starts_with('/')) {
            return Err(format!(
                "metrics.exclude_mounts: '{bad}' is not an absolute path"
            ));
        }
        Ok(())
    }
}

/// `"2s"`, `"500ms"`, `"1m 30s"`.
fn human_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!("'{s}' is not a duration such as 2s or 500ms: {e}"))
    })
}

/// An exact name, or a prefix ending in `*`.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_an_empty_section_means_defaults() {
        MetricsConfig::default().validate().unwrap();
        let c: MetricsConfig = toml::from_str("").unwrap();
        assert_eq!(c, MetricsConfig::default());
    }

    #[test]
    fn toml_values() {
        let c: MetricsConfig = toml::from_str(
            r#"
            fs_timeout = "500ms"
            include_fs_types = ["tmpfs"]
            exclude_interfaces = ["veth*", "docker0"]
            temperatures = false
            "#,
        )
        .unwrap();
        assert_eq!(c.fs_timeout, Duration::from_millis(500));
        assert_eq!(c.include_fs_types, ["tmpfs"]);
        assert!(!c.temperatures);
        // Keys not given keep their defaults.
        assert_eq!(
            c.exclude_fs_types,
            MetricsConfig::default().exclude_fs_types
        );
        c.validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = toml::from_str::<MetricsConfig>("fs_timeout = \"soon\"").unwrap_err();
        assert!(e.to_string().contains("fs_timeout"), "{e}");
        let e = toml::from_str::<MetricsConfig>("fs_timout = \"2s\"").unwrap_err();
        assert!(e.to_string().contains("fs_timout"), "{e}");

        let cases = [
            (
                MetricsConfig {
                    fs_timeout: Duration::from_millis(50),
                    ..Default::default()
                },
                "metrics.fs_timeout must be between 100ms and 10s (got 50ms)",
            ),
            (
                MetricsConfig {
                    fs_timeout: Duration::from_secs(60),
                    ..Default::default()
                },
                "metrics.fs_timeout",
            ),
            (
                MetricsConfig {
                    exclude_mounts: vec!["data".into()],
                    ..Default::default()
                },
                "metrics.exclude_mounts: 'data'",
            ),
            (
                MetricsConfig {
                    exclude_interfaces: vec!["".into()],
                    ..Default::default()
                },
                "metrics.exclude_interfaces",
            ),
        ];
        for (c, want) in cases {
            let e = c.validate().unwrap_err();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }

    #[test]
    fn name_patterns() {
        assert!(name_matches("veth*", "veth12ab"));
        assert!(!name_matches("veth*", "eth0"));
        assert!(name_matches("eth0", "eth0"));
        assert!(!name_matches("eth0", "eth01"));
        assert!(name_matches("*", "anything"));
    }
}

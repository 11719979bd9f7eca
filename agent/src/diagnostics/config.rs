//! `[diagnostics]` in agent.toml: which probes the support company may run here, and the
//! customer's own probes as fixed argv.
//!
//! ```toml
//! [diagnostics]
//! allow = ["filesystems", "top-processes", "nginx-config-test"]   # default: every built-in
//!
//! [[diagnostics.probe]]
//! name = "nginx-config-test"
//! description = "nginx -t: is the configuration valid?"
//! argv = ["/usr/sbin/nginx", "-t"]
//! timeout = "10s"          # default 10s, at most 5m
//! max_output = "64KiB"     # or a number of bytes; default 64 KiB, at most 4 MiB
//!
//! [[diagnostics.probe]]
//! name = "unit-status"
//! argv = ["/usr/bin/systemctl", "status", "--no-pager", "{unit}"]
//! args = [{ name = "unit", kind = "name" }]
//! ```
//!
//! A placeholder is a whole argv element `{name}` naming a declared argument; values are
//! checked by `aftercare_shared::diag::validate_args` and never pass through a shell.

use super::builtin::{self, BUILTINS};
use aftercare_shared::diag::{self, ArgKind, ArgSpec, ProbeInfo};
use serde::Deserialize;
use std::time::Duration;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_OUTPUT: u64 = 64 << 10;
pub const MAX_OUTPUT: u64 = 4 << 20;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagnosticsConfig {
    /// Probes that may run; `None`: every built-in and every customer probe.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    #[serde(default, rename = "probe")]
    pub probes: Vec<CustomProbe>,
}

/// A probe the customer defines: a fixed argv, run without a shell.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomProbe {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub argv: Vec<String>,
    #[serde(
        default = "default_timeout",
        with = "aftercare_shared::config::duration"
    )]
    pub timeout: Duration,
    #[serde(default)]
    pub max_output: Option<Size>,
    #[serde(default)]
    pub args: Vec<ArgConfig>,
}

/// `65536` or `"64KiB"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgConfig {
    pub name: String,
    /// `integer` (with `min`, `max`), `choice` (with `choices`) or `name`.
    pub kind: String,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub choices: Option<Vec<String>>,
    pub default: Option<String>,
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

/// `"64KiB"`, `"1MiB"`, `"4096"`, `"100KB"` to bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size: write e.g. 65536, \"64KiB\" or \"1MiB\""))?;
    let mul = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "KB" => 1000,
        "MB" => 1_000_000,
        _ => return Err(format!("'{s}': unknown unit; use B, KiB, MiB, KB or MB")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// A customer probe as validated: what it runs and what it advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomSpec {
    pub argv: Vec<String>,
    pub info: ProbeInfo,
}

/// The probes this agent offers, validated: built-in and custom, with the allow-list
/// applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    pub builtins: Vec<ProbeInfo>,
    pub custom: Vec<CustomSpec>,
    /// Names the customer allows.
    pub allowed: Vec<String>,
}

impl Catalog {
    /// What a probe declares, if this agent knows it (allowed or not).
    pub fn info(&self, name: &str) -> Option<&ProbeInfo> {
        self.builtins
            .iter()
            .chain(self.custom.iter().map(|c| &c.info))
            .find(|p| p.name == name)
    }

    pub fn custom(&self, name: &str) -> Option<&CustomSpec> {
        self.custom.iter().find(|c| c.info.name == name)
    }

    pub fn allows(&self, name: &str) -> bool {
        self.allowed.iter().any(|a| a == name)
    }

    /// What is advertised to the collector: the allowed probes.
    pub fn advertised(&self) -> Vec<ProbeInfo> {
        self.builtins
            .iter()
            .chain(self.custom.iter().map(|c| &c.info))
            .filter(|p| self.allows(&p.name))
            .cloned()
            .collect()
    }
}

impl DiagnosticsConfig {
    /// Check everything, naming the key that is wrong.
    pub fn catalog(&self) -> Result<Catalog, String> {
        let builtins = builtin::infos();
        let mut custom: Vec<CustomSpec> = Vec::new();
        for (i, p) in self.probes.iter().enumerate() {
            let key = format!("diagnostics.probe[{i}]");
            let spec = p.validate(&key)?;
            if BUILTINS.contains(&spec.info.name.as_str()) {
                return Err(format!(
                    "{key}.name = '{}' is the name of a built-in probe; choose another",
                    spec.info.name
                ));
            }
            if custom.iter().any(|c| c.info.name == spec.info.name) {
                return Err(format!(
                    "{key}.name = '{}' is used by another probe",
                    spec.info.name
                ));
            }
            custom.push(spec);
        }
        let allowed = match &self.allow {
            None => builtins
                .iter()
                .map(|b| b.name.clone())
                .chain(custom.iter().map(|c| c.info.name.clone()))
                .collect(),
            Some(list) => {
                for (i, name) in list.iter().enumerate() {
                    let known = BUILTINS.contains(&name.as_str())
                        || custom.iter().any(|c| &c.info.name == name);
                    if !known {
                        return Err(format!(
                            "diagnostics.allow[{i}] = '{name}' is no probe: the built-in ones are {}, \
                             and customer probes are defined under [[diagnostics.probe]]",
                            BUILTINS.join(", ")
                        ));
                    }
                }
                list.clone()
            }
        };
        Ok(Catalog {
            builtins,
            custom,
            allowed,
        })
    }
}

impl CustomProbe {
    fn validate(&self, key: &str) -> Result<CustomSpec, String> {
        diag::check_name(&self.name).map_err(|e| format!("{key}.name = '{}': {e}", self.name))?;
        let Some(program) = self.argv.first() else {
            return Err(format!(
                "{key}.argv is empty: give the program and its arguments"
            ));
        };
        if !program.starts_with('/') {
            return Err(format!(
                "{key}.argv[0] = '{program}' must be an absolute path (no PATH lookup, no shell)"
            ));
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err(format!(
                "{key}.timeout = {:?} is out of range: use 1ms to 5m",
                self.timeout
            ));
        }
        let max_output = match &self.max_output {
            None => DEFAULT_MAX_OUTPUT,
            Some(Size::Bytes(n)) => *n,
            Some(Size::Text(t)) => parse_size(t).map_err(|e| format!("{key}.max_output: {e}"))?,
        };
        if !(1..=MAX_OUTPUT).contains(&max_output) {
            return Err(format!(
                "{key}.max_output = {max_output} is out of range: use 1 to 4 MiB"
            ));
        }
        let mut args: Vec<ArgSpec> = Vec::new();
        for (j, a) in self.args.iter().enumerate() {
            let akey = format!("{key}.args[{j}]");
            let spec = a.validate(&akey)?;
            if args.iter().any(|o| o.name == spec.name) {
                return Err(format!("{akey}.name = '{}' is declared twice", spec.name));
            }
            args.push(spec);
        }
        for (j, e) in self.argv.iter().enumerate() {
            if diag::spliced(e) {
                return Err(format!(
                    "{key}.argv[{j}] = '{e}': a value is given only as a whole element \"{{name}}\", never inside a string"
                ));
            }
            if let Some(name) = diag::placeholder(e)
                && !args.iter().any(|a| a.name == name)
            {
                return Err(format!(
                    "{key}.argv[{j}] = '{e}' names no declared argument (declare it in {key}.args)"
                ));
            }
        }
        Ok(CustomSpec {
            argv: self.argv.clone(),
            info: ProbeInfo {
                name: self.name.clone(),
                description: self.description.clone(),
                args,
                timeout_ms: self.timeout.as_millis() as u64,
                max_output,
            },
        })
    }
}

impl ArgConfig {
    fn validate(&self, key: &str) -> Result<ArgSpec, String> {
        diag::check_name(&self.name).map_err(|e| format!("{key}.name = '{}': {e}", self.name))?;
        let only = |allowed: &[&str]| -> Result<(), String> {
            let given = [
                ("min", self.min.is_some()),
                ("max", self.max.is_some()),
                ("choices", self.choices.is_some()),
            ];
            match given.iter().find(|(k, set)| *set && !allowed.contains(k)) {
                Some((k, _)) => Err(format!(
                    "{key}.{k} does not apply to kind = \"{}\"",
                    self.kind
                )),
                None => Ok(()),
            }
        };
        let kind = match self.kind.as_str() {
            "integer" => {
                only(&["min", "max"])?;
                let (Some(min), Some(max)) = (self.min, self.max) else {
                    return Err(format!("{key}: kind = \"integer\" needs min and max"));
                };
                if min > max {
                    return Err(format!("{key}.min = {min} is above {key}.max = {max}"));
                }
                ArgKind::Integer { min, max }
            }
            "choice" => {
                only(&["choices"])?;
                let choices = self.choices.clone().unwrap_or_default();
                if choices.is_empty() {
                    return Err(format!("{key}.choices: kind = \"choice\" needs choices"));
                }
                for c in &choices {
                    diag::check_name(c).map_err(|e| format!("{key}.choices: '{c}': {e}"))?;
                }
                ArgKind::Choice(choices)
            }
            "name" => {
                only(&[])?;
                ArgKind::Name
            }
            other => {
                return Err(format!(
                    "{key}.kind = '{other}': use \"integer\", \"choice\" or \"name\""
                ));
            }
        };
        if let Some(d) = &self.default {
            diag::check_value(&kind, d).map_err(|e| format!("{key}.default = '{d}': {e}"))?;
        }
        Ok(ArgSpec {
            name: self.name.clone(),
            kind,
            default: self.default.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Catalog, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            diagnostics: DiagnosticsConfig,
        }
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        f.diagnostics.catalog()
    }

    #[test]
    fn defaults_allow_every_builtin_and_custom_probe() {
        let c = parse(
            "[diagnostics]\n[[diagnostics.probe]]\nname = \"nginx-t\"\nargv = [\"/usr/sbin/nginx\", \"-t\"]\n",
        )
        .unwrap();
        for b in BUILTINS {
            assert!(c.allows(b), "{b}");
        }
        assert!(c.allows("nginx-t"));
        let p = c.custom("nginx-t").unwrap();
        assert_eq!(p.info.timeout_ms, 10_000);
        assert_eq!(p.info.max_output, 64 << 10);
        assert_eq!(c.advertised().len(), BUILTINS.len() + 1);
    }

    #[test]
    fn allow_narrows_and_sizes_parse() {
        let c = parse(
            "[diagnostics]\nallow = [\"filesystems\", \"unit\"]\n\
             [[diagnostics.probe]]\nname = \"unit\"\nargv = [\"/usr/bin/systemctl\", \"status\", \"{u}\"]\n\
             timeout = \"2s\"\nmax_output = \"1KiB\"\nargs = [{ name = \"u\", kind = \"name\" }]\n\
             [[diagnostics.probe]]\nname = \"other\"\nargv = [\"/bin/true\"]\nmax_output = 100\n",
        )
        .unwrap();
        assert!(c.allows("filesystems") && c.allows("unit"));
        assert!(!c.allows("top-processes") && !c.allows("other"));
        assert_eq!(c.custom("unit").unwrap().info.max_output, 1024);
        assert_eq!(c.custom("other").unwrap().info.max_output, 100);
        assert_eq!(c.advertised().len(), 2);
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("10KB"), Ok(10_000));
        assert!(parse_size("lots").is_err() && parse_size("5GiB").is_err());
    }

    #[test]
    fn bad_probes_name_the_key() {
        let probe = |body: &str| format!("[diagnostics]\n[[diagnostics.probe]]\n{body}\n");
        let cases = [
            (
                "[diagnostics]\nallow = [\"rm-everything\"]\n".to_string(),
                "diagnostics.allow[0]",
            ),
            (
                probe("name = \"x\"\nargv = [\"nginx\", \"-t\"]"),
                "diagnostics.probe[0].argv[0]",
            ),
            (
                probe("name = \"x\"\nargv = []"),
                "diagnostics.probe[0].argv",
            ),
            (
                probe("name = \"filesystems\"\nargv = [\"/bin/df\"]"),
                "diagnostics.probe[0].name",
            ),
            (
                probe("name = \"a b\"\nargv = [\"/bin/df\"]"),
                "diagnostics.probe[0].name",
            ),
            (
                probe("name = \"x\"\nargv = [\"/bin/df\", \"{mount}\"]"),
                "diagnostics.probe[0].argv[1]",
            ),
            (
                probe(
                    "name = \"x\"\nargv = [\"/bin/df\", \"--x={m}\"]\nargs = [{ name = \"m\", kind = \"name\" }]",
                ),
                "diagnostics.probe[0].argv[1]",
            ),
            (
                probe("name = \"x\"\nargv = [\"/bin/df\"]\ntimeout = \"10m\""),
                "diagnostics.probe[0].timeout",
            ),
            (
                probe("name = \"x\"\nargv = [\"/bin/df\"]\nmax_output = \"5MiB\""),
                "diagnostics.probe[0].max_output",
            ),
            (
                probe(
                    "name = \"x\"\nargv = [\"/bin/df\"]\nargs = [{ name = \"n\", kind = \"integer\" }]",
                ),
                "diagnostics.probe[0].args[0]",
            ),
            (
                probe(
                    "name = \"x\"\nargv = [\"/bin/df\"]\nargs = [{ name = \"n\", kind = \"float\" }]",
                ),
                "diagnostics.probe[0].args[0].kind",
            ),
            (
                probe(
                    "name = \"x\"\nargv = [\"/bin/df\"]\nargs = [{ name = \"n\", kind = \"name\", min = 1 }]",
                ),
                "diagnostics.probe[0].args[0].min",
            ),
            (
                probe(
                    "name = \"x\"\nargv = [\"/bin/df\"]\nargs = [{ name = \"n\", kind = \"integer\", min = 1, max = 5, default = \"9\" }]",
                ),
                "diagnostics.probe[0].args[0].default",
            ),
            (
                probe("name = \"x\"\nargv = [\"/bin/df\"]\nshell = true"),
                "shell",
            ),
            (
                format!(
                    "{}[[diagnostics.probe]]\nname = \"x\"\nargv = [\"/bin/true\"]\n",
                    probe("name = \"x\"\nargv = [\"/bin/df\"]")
                ),
                "diagnostics.probe[1].name",
            ),
        ];
        for (text, key) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(key), "{text}\n=> {e}");
        }
    }
}

//! The customer's consent record: which scopes may leave the host, who granted them, until
//! when. The agent keeps it as a small TOML file that the customer's administrator writes
//! with `aftercare-agent consent grant`, or by hand; the collector stores the copy it is shown
//! and refuses data outside it.

use crate::model::UnixMillis;
use crate::time_fmt;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use time::OffsetDateTime;

/// What may leave the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Metrics,
    Logs,
    Diagnostics,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Metrics, Scope::Logs, Scope::Diagnostics];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Metrics => "metrics",
            Scope::Logs => "logs",
            Scope::Diagnostics => "diagnostics",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    #[error("unknown consent scope '{0}': the scopes are metrics, logs and diagnostics")]
    UnknownScope(String),
    #[error("no scope given: name at least one of metrics, logs, diagnostics")]
    NoScope,
    #[error(
        "the consent file is not valid: {0}; fix it or write it anew with `aftercare-agent consent grant`"
    )]
    Parse(String),
    #[error("consent file version {0} is newer than this agent understands (1); upgrade the agent")]
    Version(u32),
    #[error("'granted by' is empty: name the person who grants consent with --by")]
    NoGrantor,
    #[error("consent for {scope} would end at {until}, which is not in the future")]
    UntilInPast { scope: Scope, until: String },
}

impl FromStr for Scope {
    type Err = ConsentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "metrics" => Ok(Scope::Metrics),
            "logs" => Ok(Scope::Logs),
            "diagnostics" => Ok(Scope::Diagnostics),
            other => Err(ConsentError::UnknownScope(other.to_string())),
        }
    }
}

/// Parse `metrics,logs` into scopes, refusing unknown names.
pub fn parse_scopes(list: &str) -> Result<Vec<Scope>, ConsentError> {
    let mut out: Vec<Scope> = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let s: Scope = part.parse()?;
        if !out.contains(&s) {
            out.push(s);
        }
    }
    if out.is_empty() {
        return Err(ConsentError::NoScope);
    }
    out.sort();
    Ok(out)
}

/// One scope granted by one person. Times are Unix milliseconds (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub scope: Scope,
    pub by: String,
    pub at: UnixMillis,
    pub until: Option<UnixMillis>,
}

/// Clock skew tolerated between the grant's writer and the agent.
const SKEW_MS: i64 = 5 * 60_000;

impl Grant {
    pub fn active_at(&self, now: UnixMillis) -> bool {
        self.at <= now + SKEW_MS && self.until.is_none_or(|u| now < u)
    }
}

/// The whole record. An empty record (no file, or every grant revoked) allows nothing.
/// This is the form on the wire and in the collector's store; the file form is
/// [`ConsentRecord::to_toml`], with times a person can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub version: u32,
    pub grants: Vec<Grant>,
}

impl Default for ConsentRecord {
    fn default() -> Self {
        ConsentRecord {
            version: 1,
            grants: Vec::new(),
        }
    }
}

/// The file form of the record.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentFile {
    #[serde(default = "one")]
    version: u32,
    #[serde(default, rename = "grant")]
    grants: Vec<GrantFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantFile {
    scope: Scope,
    by: String,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    until: Option<OffsetDateTime>,
}

fn one() -> u32 {
    1
}

const FILE_HEADER: &str = "\
# aftercare consent record: what this agent may send to the support company.
# Written by `aftercare-agent consent grant|revoke`; it may be edited by hand. The agent
# notices a change within a second: a removed scope stops at once and its unsent data is
# deleted. Scopes: metrics, logs, diagnostics. `at` and `until` are quoted RFC 3339 times; `until` is optional.
";

impl ConsentRecord {
    pub fn parse(text: &str) -> Result<Self, ConsentError> {
        let file: ConsentFile =
            toml::from_str(text).map_err(|e| ConsentError::Parse(e.to_string()))?;
        if file.version > 1 {
            return Err(ConsentError::Version(file.version));
        }
        let mut grants: Vec<Grant> = Vec::new();
        for g in file.grants {
            if g.by.trim().is_empty() {
                return Err(ConsentError::Parse(format!(
                    "the grant of {} names nobody in `by`",
                    g.scope
                )));
            }
            if grants.iter().any(|x| x.scope == g.scope) {
                return Err(ConsentError::Parse(format!(
                    "{} is granted twice; keep one [[grant]] per scope",
                    g.scope
                )));
            }
            grants.push(Grant {
                scope: g.scope,
                by: g.by,
                at: time_fmt::from_offset(g.at),
                until: g.until.map(time_fmt::from_offset),
            });
        }
        grants.sort_by_key(|g| g.scope);
        Ok(ConsentRecord { version: 1, grants })
    }

    pub fn to_toml(&self) -> String {
        let file = ConsentFile {
            version: self.version,
            grants: self
                .grants
                .iter()
                .map(|g| GrantFile {
                    scope: g.scope,
                    by: g.by.clone(),
                    at: time_fmt::to_offset(g.at),
                    until: g.until.map(time_fmt::to_offset),
                })
                .collect(),
        };
        let body = toml::to_string(&file).expect("consent record always serializes");
        format!("{FILE_HEADER}\n{body}")
    }

    /// The grant for `scope`, if any (whether or not it is still active).
    pub fn grant(&self, scope: Scope) -> Option<&Grant> {
        self.grants.iter().find(|g| g.scope == scope)
    }

    pub fn allows(&self, scope: Scope, now: UnixMillis) -> bool {
        self.grant(scope).is_some_and(|g| g.active_at(now))
    }

    /// The scopes active at `now`, sorted.
    pub fn active_scopes(&self, now: UnixMillis) -> Vec<Scope> {
        let mut v: Vec<Scope> = Scope::ALL
            .into_iter()
            .filter(|s| self.allows(*s, now))
            .collect();
        v.sort();
        v
    }

    /// When the set of active scopes next changes by itself (an expiry), if ever.
    pub fn next_change_after(&self, now: UnixMillis) -> Option<UnixMillis> {
        self.grants
            .iter()
            .filter_map(|g| g.until)
            .filter(|u| *u > now)
            .min()
    }

    /// Grant (or re-grant, replacing the earlier grant) each scope.
    pub fn grant_scopes(
        &mut self,
        scopes: &[Scope],
        by: &str,
        at: OffsetDateTime,
        until: Option<OffsetDateTime>,
    ) -> Result<(), ConsentError> {
        if by.trim().is_empty() {
            return Err(ConsentError::NoGrantor);
        }
        if scopes.is_empty() {
            return Err(ConsentError::NoScope);
        }
        if let Some(u) = until
            && u <= at
        {
            return Err(ConsentError::UntilInPast {
                scope: scopes[0],
                until: u
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            });
        }
        let at = time_fmt::from_offset(at.replace_nanosecond(0).unwrap_or(at));
        let until = until.map(time_fmt::from_offset);
        for &scope in scopes {
            self.grants.retain(|g| g.scope != scope);
            self.grants.push(Grant {
                scope,
                by: by.trim().to_string(),
                at,
                until,
            });
        }
        self.grants.sort_by_key(|g| g.scope);
        Ok(())
    }

    /// Revoke the given scopes, or all when `scopes` is empty. Returns what was removed.
    pub fn revoke(&mut self, scopes: &[Scope]) -> Vec<Scope> {
        let mut removed = Vec::new();
        self.grants.retain(|g| {
            let hit = scopes.is_empty() || scopes.contains(&g.scope);
            if hit {
                removed.push(g.scope);
            }
            !hit
        });
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn scopes_parse_and_refuse_unknown() {
        assert_eq!(
            parse_scopes("logs, metrics,logs").unwrap(),
            vec![Scope::Metrics, Scope::Logs]
        );
        let e = parse_scopes("metrics,telemetry").unwrap_err();
        assert!(e.to_string().contains("telemetry"), "{e}");
        assert!(parse_scopes(" , ").is_err());
    }

    #[test]
    fn grant_expire_revoke() {
        let mut r = ConsentRecord::default();
        let at = datetime!(2026-11-01 00:00 UTC);
        let until = datetime!(2026-12-01 00:00 UTC);
        r.grant_scopes(&[Scope::Metrics, Scope::Logs], "Ann", at, Some(until))
            .unwrap();
        let mid = time_fmt::from_offset(datetime!(2026-11-15 00:00 UTC));
        let after = time_fmt::from_offset(until);
        assert!(r.allows(Scope::Metrics, mid));
        assert!(!r.allows(Scope::Diagnostics, mid));
        assert!(!r.allows(Scope::Metrics, after), "until is exclusive");
        assert_eq!(r.next_change_after(mid), Some(after));
        assert_eq!(r.revoke(&[Scope::Logs]), vec![Scope::Logs]);
        assert_eq!(r.active_scopes(mid), vec![Scope::Metrics]);
        assert_eq!(r.revoke(&[]), vec![Scope::Metrics]);
        assert!(r.active_scopes(mid).is_empty());
    }

    #[test]
    fn grant_validates() {
        let mut r = ConsentRecord::default();
        let at = datetime!(2026-11-01 00:00 UTC);
        assert!(matches!(
            r.grant_scopes(&[Scope::Metrics], " ", at, None),
            Err(ConsentError::NoGrantor)
        ));
        assert!(
            r.grant_scopes(&[Scope::Metrics], "Ann", at, Some(at))
                .is_err()
        );
    }

    #[test]
    fn file_round_trip_and_errors() {
        let mut r = ConsentRecord::default();
        r.grant_scopes(
            &[Scope::Metrics],
            "Ann Li",
            datetime!(2026-11-01 08:00 UTC),
            None,
        )
        .unwrap();
        let text = r.to_toml();
        assert!(text.starts_with("# aftercare consent record"));
        assert_eq!(ConsentRecord::parse(&text).unwrap(), r);
        let hand = "[[grant]]\nscope = \"logs\"\nby = \"Bo\"\nat = \"2026-11-01T00:00:00Z\"\n";
        assert_eq!(
            ConsentRecord::parse(hand).unwrap().grants[0].scope,
            Scope::Logs
        );
        let bad = "[[grant]]\nscope = \"everything\"\nby = \"Bo\"\nat = \"2026-11-01T00:00:00Z\"\n";
        assert!(ConsentRecord::parse(bad).is_err());
        let twice = format!("{hand}{hand}");
        assert!(
            ConsentRecord::parse(&twice)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert!(
            ConsentRecord::parse("scopes = 1").is_err(),
            "unknown keys are refused"
        );
        assert!(matches!(
            ConsentRecord::parse("version = 7"),
            Err(ConsentError::Version(7))
        ));
    }
}

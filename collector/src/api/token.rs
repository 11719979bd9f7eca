//! API tokens: what an admin creates with `aftercare-collector token create`, and what a
//! bearer presents. A token is shown once; the store keeps only its SHA-256, which is
//! enough because a token is 32 random bytes (nothing to guess, so no slow hash needed).

use crate::store::{Store, StoreError, TokenRow};
use aftercare_shared::model::UnixMillis;
use serde::{Deserialize, Serialize};

/// What a token may do. Each role can do what the ones before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also acknowledges and resolves findings and runs diagnostics.
    Engineer,
    /// Also manages tokens, silences and contracts.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Engineer, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Engineer => "engineer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s.trim())
    }

    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

/// Tokens start so, so that a leaked one is recognisable (secret scanners, logs).
pub const PREFIX: &str = "act_";

/// A new token: `act_` and 32 random bytes, base64url.
pub fn generate() -> Result<String, ring::error::Unspecified> {
    use base64::Engine as _;
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    Ok(format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// What the store keeps of a token: its SHA-256, hex.
pub fn hash(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.trim().as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A token name: what the audit trail records for its calls.
pub fn valid_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "token name '{name}' is not usable: use 1 to 64 letters, digits, '-', '_', '.' or '@'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hashed() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 43, "{a}");
        assert_eq!(
            hash(&a),
            hash(&format!(" {a}\n")),
            "surrounding space is not part of it"
        );
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(hash(&a).len(), 64);
    }

    #[test]
    fn roles_include_the_ones_below() {
        assert!(Role::Admin.allows(Role::Engineer));
        assert!(Role::Engineer.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Engineer));
        assert_eq!(Role::parse("engineer"), Some(Role::Engineer));
        assert_eq!(Role::parse("root"), None);
        assert!(valid_name("ann@support").is_ok());
        assert!(valid_name("a b").unwrap_err().contains("not usable"));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("no random numbers from the system for a token")]
    Random,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new token named `name` (already checked with [`valid_name`]) kept in the store as its
/// hash; the secret is returned, to be shown once. The CLI, the API and the quickstart all
/// make tokens here.
pub fn issue<S: Store + ?Sized>(
    st: &mut S,
    name: &str,
    role: Role,
    by: &str,
    now: UnixMillis,
) -> Result<String, IssueError> {
    let secret = generate().map_err(|_| IssueError::Random)?;
    st.add_token(
        &TokenRow {
            name: name.into(),
            role,
            created_at: now,
            created_by: by.into(),
            revoked_at: None,
        },
        &hash(&secret),
    )?;
    Ok(secret)
}

//! Bearer tokens for the client API: `NAME.SECRET`, 32 random bytes of secret, stored as the
//! SHA-256 of the secret only (a token has the entropy of a key, so a fast hash is enough: no
//! password hashing needed), each with a role.

use crate::SecurityError;
use base64::Engine;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

/// What a token's holder may do on the client API; each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    /// List jobs and workers, read a job's status.
    Viewer,
    /// Also submit, cancel and savepoint jobs.
    Operator,
    /// Also create and revoke tokens.
    Admin,
}

impl TokenRole {
    pub fn name(self) -> &'static str {
        match self {
            TokenRole::Viewer => "viewer",
            TokenRole::Operator => "operator",
            TokenRole::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Result<TokenRole, SecurityError> {
        match text {
            "viewer" => Ok(TokenRole::Viewer),
            "operator" => Ok(TokenRole::Operator),
            "admin" => Ok(TokenRole::Admin),
            _ => Err(SecurityError::Invalid(format!(
                "unknown token role `{text}` (expected viewer, operator or admin)"
            ))),
        }
    }

    /// Whether a holder of `self` may do what needs `needed`.
    pub fn allows(self, needed: TokenRole) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for TokenRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A token's name is part of the token and of every audit record: letters, digits, `-`, `_`.
pub fn check_name(name: &str) -> Result<(), SecurityError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(SecurityError::Invalid(format!(
            "`{name}` is not a usable token name (letters, digits, `-`, `_`; at most 64)"
        )))
    }
}

/// A new token for `name`: the token to hand out once, and the hash to store.
pub fn generate(name: &str) -> Result<(String, String), SecurityError> {
    check_name(name)?;
    let mut secret = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| SecurityError::Invalid("no randomness for a token".into()))?;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let hash = hash(&secret);
    Ok((format!("{name}.{secret}"), hash))
}

/// The stored form of a token's secret.
pub fn hash(secret: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Splits a presented token into its name and the hash of its secret.
pub fn parse(token: &str) -> Option<(&str, String)> {
    let (name, secret) = token.trim().split_once('.')?;
    check_name(name).ok()?;
    (!secret.is_empty()).then(|| (name, hash(secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_itself_and_only_its_hash_is_kept() {
        let (token, stored) = generate("ci").unwrap();
        assert!(token.starts_with("ci."));
        assert!(!stored.contains(token.split_once('.').unwrap().1));
        let (name, presented) = parse(&token).unwrap();
        assert_eq!((name, presented.as_str()), ("ci", stored.as_str()));
        let (other, _) = generate("ci").unwrap();
        assert_ne!(parse(&other).unwrap().1, stored);
        assert!(parse("no-dot").is_none());
        assert!(parse("../x.y").is_none());
        assert!(generate("bad name").is_err());
        assert!(TokenRole::Admin.allows(TokenRole::Operator));
        assert!(!TokenRole::Viewer.allows(TokenRole::Operator));
    }
}

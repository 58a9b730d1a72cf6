//! Secret job parameters, sealed at rest: AES-256-GCM with a cluster key that only the
//! coordinators hold (`secrets.key` in their certificate directories, made by `eddy certs
//! init`). The replicated state and its snapshots keep the sealed form; the leader opens a
//! job's secrets only to compile it and to deploy it to workers over mutual TLS.

use crate::SecurityError;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;

/// The cluster's key for secret parameters.
#[derive(Clone)]
pub struct SecretKey {
    bytes: [u8; 32],
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

impl SecretKey {
    /// A new random key.
    pub fn generate() -> Result<SecretKey, SecurityError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SecurityError::Invalid("no randomness for a key".into()))?;
        Ok(SecretKey { bytes })
    }

    /// The key in `path` (base64 of 32 bytes, as [`SecretKey::encode`] writes it).
    pub fn load(path: &Path) -> Result<SecretKey, SecurityError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecurityError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        let bytes = B64
            .decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| SecurityError::BadFile {
                path: path.to_path_buf(),
                what: "secrets key",
                reason: "expected the base64 of 32 bytes".into(),
            })?;
        Ok(SecretKey { bytes })
    }

    /// The text a key file holds.
    pub fn encode(&self) -> String {
        B64.encode(self.bytes)
    }

    fn key(&self) -> LessSafeKey {
        // 32 bytes are always a valid AES-256 key.
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.bytes).expect("a 32-byte key"))
    }

    /// `value` sealed: base64 of a random nonce and the ciphertext with its tag. `name` is
    /// bound in as associated data, so a sealed value cannot be moved to another parameter.
    pub fn seal(&self, name: &str, value: &str) -> Result<String, SecurityError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SecurityError::Invalid("no randomness for a nonce".into()))?;
        let mut data = value.as_bytes().to_vec();
        self.key()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut data,
            )
            .map_err(|_| SecurityError::Invalid("cannot seal a secret".into()))?;
        let mut out = nonce.to_vec();
        out.extend(data);
        Ok(B64.encode(out))
    }

    /// The value [`SecretKey::seal`] sealed for `name`; an error for another key or a
    /// tampered value.
    pub fn open(&self, name: &str, sealed: &str) -> Result<String, SecurityError> {
        let refused = || {
            SecurityError::Invalid(format!(
                "the secret parameter `{name}` cannot be opened with this cluster's secrets key"
            ))
        };
        let bytes = B64.decode(sealed).map_err(|_| refused())?;
        if bytes.len() < NONCE_LEN {
            return Err(refused());
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| refused())?;
        let mut data = rest.to_vec();
        let plain = self
            .key()
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut data)
            .map_err(|_| refused())?;
        String::from_utf8(plain.to_vec()).map_err(|_| refused())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_name() {
        let key = SecretKey::generate().unwrap();
        let sealed = key.seal("warehouse", "postgres://u:pw@h/db").unwrap();
        assert!(!sealed.contains("pw"));
        assert_eq!(
            key.open("warehouse", &sealed).unwrap(),
            "postgres://u:pw@h/db"
        );
        assert_ne!(
            key.seal("warehouse", "x").unwrap(),
            key.seal("warehouse", "x").unwrap()
        );
        assert!(key.open("other", &sealed).is_err());
        assert!(SecretKey::generate()
            .unwrap()
            .open("warehouse", &sealed)
            .is_err());
        assert!(key.open("warehouse", "garbage").is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k"), key.encode()).unwrap();
        let loaded = SecretKey::load(&dir.path().join("k")).unwrap();
        assert_eq!(
            loaded.open("warehouse", &sealed).unwrap(),
            "postgres://u:pw@h/db"
        );
        assert_eq!(format!("{loaded:?}"), "SecretKey(***)");
    }
}

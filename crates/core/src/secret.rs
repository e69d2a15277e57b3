//! Secrets at rest (Discord webhook, LLM API keys): AES-256-GCM with a
//! fresh random nonce per write, under the installation's key, each bound
//! to what it is for (the associated data): a sealed webhook copied over
//! the sealed API key does not open as an API key.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use rand::Rng;

/// Sealed with its purpose as associated data.
const BOUND: &str = "v2:";
/// Sealed before purposes were bound; opened for any purpose, and re-sealed
/// as `v2` at start-up.
const UNBOUND: &str = "v1:";
const NONCE_BYTES: usize = 12;

/// Whether a sealed value predates purpose binding.
pub fn is_unbound(sealed: &str) -> bool {
    sealed.starts_with(UNBOUND)
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SecretError {
    #[error("ENCRYPTION_KEY must be 64 hexadecimal characters (32 bytes)")]
    BadKey,
    #[error("a stored secret cannot be decrypted with this ENCRYPTION_KEY")]
    WrongKey,
}

/// Encrypts and decrypts stored secrets. `Debug` never shows the key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(<key redacted>)")
    }
}

/// A new random key, as the 64 hex characters ENCRYPTION_KEY takes.
pub fn generate_key() -> String {
    let key: [u8; 32] = rand::rng().random();
    hex::encode(key)
}

impl SecretBox {
    pub fn from_hex(key: &str) -> Result<Self, SecretError> {
        let bytes = hex::decode(key.trim()).map_err(|_| SecretError::BadKey)?;
        if bytes.len() != 32 {
            return Err(SecretError::BadKey);
        }
        Ok(Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
        })
    }

    /// Seals `plaintext` for `purpose` (e.g. the setting's name).
    pub fn seal(&self, purpose: &str, plaintext: &str) -> String {
        let nonce: [u8; NONCE_BYTES] = rand::rng().random();
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: purpose.as_bytes(),
        };
        // Encryption of an in-memory buffer with a valid key cannot fail.
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        format!("{BOUND}{}{}", hex::encode(nonce), hex::encode(ciphertext))
    }

    /// Opens a value sealed for `purpose` (or sealed unbound, before v2).
    pub fn open(&self, purpose: &str, sealed: &str) -> Result<String, SecretError> {
        let (hex_part, aad) = match sealed.strip_prefix(BOUND) {
            Some(rest) => (rest, purpose.as_bytes()),
            None => (
                sealed.strip_prefix(UNBOUND).ok_or(SecretError::WrongKey)?,
                &[][..],
            ),
        };
        let raw = hex::decode(hex_part)
            .ok()
            .filter(|b| b.len() > NONCE_BYTES)
            .ok_or(SecretError::WrongKey)?;
        let (nonce, ciphertext) = raw.split_at(NONCE_BYTES);
        let payload = Payload {
            msg: ciphertext,
            aad,
        };
        let plaintext = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| SecretError::WrongKey)?;
        String::from_utf8(plaintext).map_err(|_| SecretError::WrongKey)
    }
}

/// `"..."` and the last four characters, for showing a secret's identity.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(4)..].iter().collect();
    format!("...{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key() {
        let key = generate_key();
        let secret_box = SecretBox::from_hex(&key).unwrap();
        let url = "https://discord.example/api/webhooks/1/token";
        let sealed = secret_box.seal("webhook", url);
        assert!(!sealed.contains("discord"));
        assert_ne!(sealed, secret_box.seal("webhook", url));
        assert_eq!(secret_box.open("webhook", &sealed).unwrap(), url);
        let other = SecretBox::from_hex(&generate_key()).unwrap();
        assert_eq!(other.open("webhook", &sealed), Err(SecretError::WrongKey));
        // Sealed for one purpose, it does not open for another.
        assert_eq!(
            secret_box.open("llm.api_key", &sealed),
            Err(SecretError::WrongKey)
        );
        assert!(!is_unbound(&sealed));
        assert!(!format!("{secret_box:?}").contains(&key));
    }

    #[test]
    fn values_sealed_before_binding_still_open() {
        let key = "11".repeat(32);
        let secret_box = SecretBox::from_hex(&key).unwrap();
        // "plantops" sealed by the v1 format under this key.
        let nonce = [7u8; NONCE_BYTES];
        let ciphertext = secret_box
            .cipher
            .encrypt(Nonce::from_slice(&nonce), &b"plantops"[..])
            .unwrap();
        let legacy = format!("v1:{}{}", hex::encode(nonce), hex::encode(ciphertext));
        assert!(is_unbound(&legacy));
        assert_eq!(secret_box.open("anything", &legacy).unwrap(), "plantops");
    }

    #[test]
    fn keys_must_be_64_hex_characters() {
        assert_eq!(SecretBox::from_hex("abc").unwrap_err(), SecretError::BadKey);
        assert!(SecretBox::from_hex(&"zz".repeat(32)).is_err());
        assert!(SecretBox::from_hex(&"ab".repeat(32)).is_ok());
        assert_eq!(mask("sk-1234567890"), "...7890");
    }
}

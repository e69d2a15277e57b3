//! Secrets at rest (Discord webhook, LLM API keys): AES-256-GCM with a
//! fresh random nonce per write, under the installation's key.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use rand::Rng;

const PREFIX: &str = "v1:";
const NONCE_BYTES: usize = 12;

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

    pub fn seal(&self, plaintext: &str) -> String {
        let nonce: [u8; NONCE_BYTES] = rand::rng().random();
        // Encryption of an in-memory buffer with a valid key cannot fail.
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
            .unwrap_or_default();
        format!("{PREFIX}{}{}", hex::encode(nonce), hex::encode(ciphertext))
    }

    pub fn open(&self, sealed: &str) -> Result<String, SecretError> {
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|h| hex::decode(h).ok())
            .filter(|b| b.len() > NONCE_BYTES)
            .ok_or(SecretError::WrongKey)?;
        let (nonce, ciphertext) = raw.split_at(NONCE_BYTES);
        let plaintext = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
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
        let sealed = secret_box.seal("https://discord.example/api/webhooks/1/token");
        assert!(!sealed.contains("discord"));
        assert_ne!(
            sealed,
            secret_box.seal("https://discord.example/api/webhooks/1/token")
        );
        assert_eq!(
            secret_box.open(&sealed).unwrap(),
            "https://discord.example/api/webhooks/1/token"
        );
        let other = SecretBox::from_hex(&generate_key()).unwrap();
        assert_eq!(other.open(&sealed), Err(SecretError::WrongKey));
        assert!(!format!("{secret_box:?}").contains(&key));
    }

    #[test]
    fn keys_must_be_64_hex_characters() {
        assert_eq!(SecretBox::from_hex("abc").unwrap_err(), SecretError::BadKey);
        assert!(SecretBox::from_hex(&"zz".repeat(32)).is_err());
        assert!(SecretBox::from_hex(&"ab".repeat(32)).is_ok());
        assert_eq!(mask("sk-1234567890"), "...7890");
    }
}

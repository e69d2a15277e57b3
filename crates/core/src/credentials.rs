//! Device broker credentials.
//!
//! Passwords are 40 random alphanumeric characters (≈238 bits), so a
//! brute-force or dictionary attack on a leaked hash is hopeless whatever the
//! hash's cost; a salted SHA-256 keeps a reconnect storm of thousands of
//! devices cheap, where argon2 would spend ~50 ms of CPU per connection.
//! docs/architecture.md records the decision.

use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const PASSWORD_CHARS: usize = 40;
const SCHEME: &str = "sha256";

pub fn generate_username() -> String {
    let suffix: u32 = rand::rng().random();
    format!("device_{suffix:08x}")
}

pub fn generate_password() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), PASSWORD_CHARS)
}

/// `sha256$<salt hex>$<digest hex>`.
pub fn hash_password(password: &str) -> String {
    let salt: [u8; 16] = rand::rng().random();
    format!("{SCHEME}${}${}", hex::encode(salt), digest(&salt, password))
}

pub fn verify_password(password: &str, stored: &str) -> bool {
    let mut parts = stored.splitn(3, '$');
    let (Some(SCHEME), Some(salt), Some(expected)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(salt) = hex::decode(salt) else {
        return false;
    };
    digest(&salt, password)
        .as_bytes()
        .ct_eq(expected.as_bytes())
        .into()
}

fn digest(salt: &[u8], password: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(password.as_bytes());
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_credentials_have_the_contract_shape() {
        let username = generate_username();
        assert!(username.starts_with("device_"));
        assert_eq!(username.len(), "device_".len() + 8);
        let password = generate_password();
        assert!(password.len() >= 32);
        assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(password, generate_password());
    }

    #[test]
    fn hashes_verify_only_their_password_and_are_salted() {
        let hash = hash_password("correct horse");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct horsf", &hash));
        assert!(!verify_password("correct horse", "garbage"));
        assert_ne!(hash, hash_password("correct horse"));
        assert!(!hash.contains("correct"));
    }
}

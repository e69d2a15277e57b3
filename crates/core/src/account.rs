//! People and programs that use the API: accounts and their roles, API
//! tokens and their scopes, device enrollment keys, and the secrets behind
//! them (docs/security.md).
//!
//! Passwords people choose are hashed with Argon2id (OWASP parameters);
//! session ids, API tokens and enrollment keys are 256 random bits, so a
//! plain SHA-256 of them is as strong as any slow hash and costs nothing per
//! request.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::validation::{Collector, FieldError};
use crate::ValidationErrors;

pub const MIN_PASSWORD_CHARS: usize = 8;
/// Argon2 hashes what it is given; a megabyte "password" is a denial of service.
pub const MAX_PASSWORD_CHARS: usize = 256;
pub const MAX_USERNAME_CHARS: usize = 64;
pub const MAX_NAME_CHARS: usize = 100;

/// What an account may do: `admin` everything, `viewer` read everything
/// and change nothing (but its own password and tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Role::Admin, Role::Viewer]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// What an API token may do: `read` only GET, `full` what its owner may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Full,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Full => "full",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Scope::Read, Scope::Full]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// How a device came to be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Enrollment {
    /// By a signed-in admin (the UI's Register button, an admin token).
    Admin,
    /// With an enrollment key.
    Key,
    /// While an admin had the enrollment window open.
    Window,
    /// Without credentials: `PLANTOPS_ENROLLMENT=open` or `PLANTOPS_AUTH=off`.
    Open,
}

impl Enrollment {
    pub fn as_str(self) -> &'static str {
        match self {
            Enrollment::Admin => "admin",
            Enrollment::Key => "key",
            Enrollment::Window => "window",
            Enrollment::Open => "open",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Enrollment::Admin,
            Enrollment::Key,
            Enrollment::Window,
            Enrollment::Open,
        ]
        .into_iter()
        .find(|e| e.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// A user as stored: the account and its password hash.
#[derive(Debug, Clone)]
pub struct StoredUser {
    pub user: User,
    pub password_hash: String,
}

/// A long-lived API token; the secret itself is shown once, at creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiToken {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub scope: Scope,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A credential devices present to register themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EnrollmentKey {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// The key stops working at this time; never when absent.
    pub expires_at: Option<DateTime<Utc>>,
    /// How many devices the key may register; unlimited when absent.
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl EnrollmentKey {
    pub fn is_usable(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none()
            && self.expires_at.is_none_or(|at| at > now)
            && self.max_uses.is_none_or(|max| self.uses < max)
    }
}

/// A freshly generated secret: the text handed out once and the digest
/// kept in its place.
#[derive(Debug, Clone)]
pub struct IssuedSecret {
    pub plain: String,
    pub digest: String,
}

/// 256 random bits behind a prefix that names the kind (`pot_` API token,
/// `pek_` enrollment key), so a leaked one is recognisable in a paste or a
/// secret scanner.
pub fn issue_secret(prefix: &str) -> IssuedSecret {
    let bytes: [u8; 32] = rand::rng().random();
    let plain = format!("{prefix}{}", hex::encode(bytes));
    let digest = secret_digest(&plain);
    IssuedSecret { plain, digest }
}

pub const API_TOKEN_PREFIX: &str = "pot_";
pub const ENROLLMENT_KEY_PREFIX: &str = "pek_";
pub const SESSION_PREFIX: &str = "pos_";

/// What is stored and looked up in place of a high-entropy secret.
pub fn secret_digest(plain: &str) -> String {
    hex::encode(Sha256::digest(plain.as_bytes()))
}

/// OWASP's Argon2id baseline: 19 MiB, 2 passes, 1 lane.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("OWASP parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The PHC string of `password` (salted Argon2id). Takes tens of
/// milliseconds of CPU on purpose: callers run it off the async workers.
pub fn hash_user_password(password: &str) -> String {
    let salt = SaltString::encode_b64(&rand::rng().random::<[u8; 16]>())
        .expect("16 bytes are a valid salt");
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .expect("Argon2 accepts any password up to its limits")
        .to_string()
}

/// Checks `password` against a PHC string; a malformed hash never matches.
pub fn verify_user_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|hash| argon2().verify_password(password.as_bytes(), &hash).is_ok())
        .unwrap_or(false)
}

/// A hash of a password nobody has, so that a login for an unknown user
/// costs the same as one for a known user.
pub fn decoy_password_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_user_password(&hex::encode(rand::rng().random::<[u8; 16]>())))
}

pub fn validate_username(username: &str, errors: &mut Collector) {
    let valid = !username.is_empty()
        && username.chars().count() <= MAX_USERNAME_CHARS
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if !valid {
        errors.push(FieldError::new(
            &["body", "username"],
            format!(
                "username must be 1–{MAX_USERNAME_CHARS} characters: letters, digits, '.', '_', '-', '@'"
            ),
            "value_error.username",
        ));
    }
}

pub fn validate_password(password: &str, field: &str, errors: &mut Collector) {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        errors.push(FieldError::new(
            &["body", field],
            format!("password must be at least {MIN_PASSWORD_CHARS} characters"),
            "value_error.any_str.min_length",
        ));
    } else if chars > MAX_PASSWORD_CHARS {
        errors.push(FieldError::new(
            &["body", field],
            format!("password must be at most {MAX_PASSWORD_CHARS} characters"),
            "value_error.any_str.max_length",
        ));
    }
}

/// A display name of a token or key: 1–100 characters after trimming.
pub fn validate_name(name: &str, errors: &mut Collector) -> String {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        errors.push(FieldError::new(
            &["body", "name"],
            format!("name must be 1–{MAX_NAME_CHARS} characters"),
            "value_error.any_str.length",
        ));
    }
    name.to_string()
}

/// Username and password of a new account, checked together.
pub fn validate_credentials(username: &str, password: &str) -> Result<(), ValidationErrors> {
    let mut errors = Collector::default();
    validate_username(username, &mut errors);
    validate_password(password, "password", &mut errors);
    errors.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_passwords_are_argon2id_and_verify_only_themselves() {
        let hash = hash_user_password("correct horse");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify_user_password("correct horse", &hash));
        assert!(!verify_user_password("correct horsf", &hash));
        assert!(!verify_user_password("correct horse", "not a hash"));
        assert_ne!(hash, hash_user_password("correct horse"), "salted");
    }

    #[test]
    fn issued_secrets_are_prefixed_random_and_stored_as_digests() {
        let a = issue_secret(API_TOKEN_PREFIX);
        let b = issue_secret(API_TOKEN_PREFIX);
        assert!(a.plain.starts_with("pot_") && a.plain.len() == 4 + 64);
        assert_ne!(a.plain, b.plain);
        assert_eq!(a.digest, secret_digest(&a.plain));
        assert!(!a.digest.contains(&a.plain[4..]));
    }

    #[test]
    fn credentials_are_validated() {
        assert!(validate_credentials("admin", "12345678").is_ok());
        let errors = validate_credentials("", "short").unwrap_err();
        assert_eq!(errors.0.len(), 2);
        assert!(validate_credentials("with space", "12345678").is_err());
        assert!(validate_credentials("a", &"x".repeat(MAX_PASSWORD_CHARS + 1)).is_err());
    }

    #[test]
    fn enrollment_keys_stop_when_revoked_expired_or_used_up() {
        let now = crate::now();
        let key = EnrollmentKey {
            id: Uuid::new_v4(),
            name: "k".into(),
            created_at: now,
            expires_at: None,
            max_uses: Some(2),
            uses: 1,
            revoked_at: None,
        };
        assert!(key.is_usable(now));
        assert!(!EnrollmentKey {
            uses: 2,
            ..key.clone()
        }
        .is_usable(now));
        assert!(!EnrollmentKey {
            revoked_at: Some(now),
            ..key.clone()
        }
        .is_usable(now));
        assert!(!EnrollmentKey {
            expires_at: Some(now),
            ..key
        }
        .is_usable(now));
    }
}

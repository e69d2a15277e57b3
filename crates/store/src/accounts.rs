//! Accounts, sessions, API tokens and enrollment keys: the SQL is the same
//! on both backends, so it is written once here, like `sql.rs`.

use plantops_core::account::{ApiToken, EnrollmentKey, Role, Scope, StoredUser, User};
use sqlx::FromRow;
use uuid::Uuid;

use crate::sql::{to_u64, Timestamp};
use crate::{Result, StoreError};

pub(crate) const USER_COLUMNS: &str = "id, username, role, created_at";
pub(crate) const TOKEN_COLUMNS: &str = "id, user_id, name, scope, created_at, last_used_at";
pub(crate) const KEY_COLUMNS: &str = "id, name, created_at, expires_at, max_uses, uses, revoked_at";

fn corrupt(what: &str, raw: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {raw:?}"))
}

#[derive(FromRow)]
pub(crate) struct UserRow {
    id: Uuid,
    username: String,
    role: String,
    created_at: Timestamp,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;
    fn try_from(row: UserRow) -> Result<Self> {
        Ok(User {
            role: Role::parse(&row.role).ok_or_else(|| corrupt("role", &row.role))?,
            id: row.id,
            username: row.username,
            created_at: row.created_at.0,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct StoredUserRow {
    #[sqlx(flatten)]
    user: UserRow,
    password_hash: String,
}

impl TryFrom<StoredUserRow> for StoredUser {
    type Error = StoreError;
    fn try_from(row: StoredUserRow) -> Result<Self> {
        Ok(StoredUser {
            user: row.user.try_into()?,
            password_hash: row.password_hash,
        })
    }
}

/// A session with its user, as a lookup by digest finds it.
#[derive(FromRow)]
pub(crate) struct SessionRow {
    #[sqlx(flatten)]
    user: UserRow,
    session_created_at: Timestamp,
    last_seen_at: Timestamp,
}

impl TryFrom<SessionRow> for crate::Session {
    type Error = StoreError;
    fn try_from(row: SessionRow) -> Result<Self> {
        Ok(crate::Session {
            user: row.user.try_into()?,
            created_at: row.session_created_at.0,
            last_seen_at: row.last_seen_at.0,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct TokenRow {
    id: Uuid,
    user_id: Uuid,
    name: String,
    scope: String,
    created_at: Timestamp,
    last_used_at: Option<Timestamp>,
}

impl TryFrom<TokenRow> for ApiToken {
    type Error = StoreError;
    fn try_from(row: TokenRow) -> Result<Self> {
        Ok(ApiToken {
            scope: Scope::parse(&row.scope).ok_or_else(|| corrupt("scope", &row.scope))?,
            id: row.id,
            user_id: row.user_id,
            name: row.name,
            created_at: row.created_at.0,
            last_used_at: row.last_used_at.map(|t| t.0),
        })
    }
}

#[derive(FromRow)]
pub(crate) struct TokenUserRow {
    #[sqlx(flatten)]
    token: TokenRow,
    username: String,
    role: String,
    user_created_at: Timestamp,
}

impl TryFrom<TokenUserRow> for (ApiToken, User) {
    type Error = StoreError;
    fn try_from(row: TokenUserRow) -> Result<Self> {
        let user = User {
            id: row.token.user_id,
            role: Role::parse(&row.role).ok_or_else(|| corrupt("role", &row.role))?,
            username: row.username,
            created_at: row.user_created_at.0,
        };
        Ok((row.token.try_into()?, user))
    }
}

#[derive(FromRow)]
pub(crate) struct KeyRow {
    id: Uuid,
    name: String,
    created_at: Timestamp,
    expires_at: Option<Timestamp>,
    max_uses: Option<i32>,
    uses: i32,
    revoked_at: Option<Timestamp>,
}

impl From<KeyRow> for EnrollmentKey {
    fn from(row: KeyRow) -> Self {
        EnrollmentKey {
            id: row.id,
            name: row.name,
            created_at: row.created_at.0,
            expires_at: row.expires_at.map(|t| t.0),
            max_uses: row.max_uses.map(|n| to_u64(i64::from(n)) as u32),
            uses: to_u64(i64::from(row.uses)) as u32,
            revoked_at: row.revoked_at.map(|t| t.0),
        }
    }
}

/// Implements [`crate::AccountStore`] for a backend whose pool is `self.pool`.
macro_rules! account_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::AccountStore for $store {
            async fn count_users(&self) -> $crate::Result<u64> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
                    .fetch_one(&self.pool)
                    .await?;
                Ok($crate::sql::to_u64(n))
            }

            async fn insert_user(
                &self,
                user: &plantops_core::account::User,
                password_hash: &str,
                only_if_none: bool,
            ) -> $crate::Result<$crate::AccountChange> {
                // One statement: the "no user yet" check and the insert
                // cannot be split by a concurrent setup.
                let guard = if only_if_none {
                    " WHERE NOT EXISTS (SELECT 1 FROM users)"
                } else {
                    // SQLite's parser needs a WHERE before ON CONFLICT here.
                    " WHERE true"
                };
                let inserted = sqlx::query(&format!(
                    "INSERT INTO users (id, username, password_hash, role, created_at) \
                     SELECT $1, $2, $3, $4, $5{guard} ON CONFLICT (username) DO NOTHING"
                ))
                .bind(user.id)
                .bind(&user.username)
                .bind(password_hash)
                .bind(user.role.as_str())
                .bind($crate::sql::Timestamp(user.created_at))
                .execute(&self.pool)
                .await?;
                Ok(if inserted.rows_affected() == 1 {
                    $crate::AccountChange::Done
                } else {
                    $crate::AccountChange::Conflict
                })
            }

            async fn user_by_name(
                &self,
                username: &str,
            ) -> $crate::Result<Option<plantops_core::account::StoredUser>> {
                let row: Option<$crate::accounts::StoredUserRow> = sqlx::query_as(&format!(
                    "SELECT {}, password_hash FROM users WHERE username = $1",
                    $crate::accounts::USER_COLUMNS
                ))
                .bind(username)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn get_user(
                &self,
                id: uuid::Uuid,
            ) -> $crate::Result<Option<plantops_core::account::User>> {
                let row: Option<$crate::accounts::UserRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM users WHERE id = $1",
                    $crate::accounts::USER_COLUMNS
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn list_users(&self) -> $crate::Result<Vec<plantops_core::account::User>> {
                let rows: Vec<$crate::accounts::UserRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM users ORDER BY username",
                    $crate::accounts::USER_COLUMNS
                ))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn set_user_role(
                &self,
                id: uuid::Uuid,
                role: plantops_core::account::Role,
            ) -> $crate::Result<$crate::AccountChange> {
                let changed = sqlx::query(
                    "UPDATE users SET role = $1 WHERE id = $2 AND ($1 = 'admin' OR role <> 'admin' \
                     OR (SELECT COUNT(*) FROM users WHERE role = 'admin') > 1)",
                )
                .bind(role.as_str())
                .bind(id)
                .execute(&self.pool)
                .await?;
                self.account_change(id, changed.rows_affected()).await
            }

            async fn delete_user(&self, id: uuid::Uuid) -> $crate::Result<$crate::AccountChange> {
                // Sessions and tokens go with the user (ON DELETE CASCADE).
                let deleted = sqlx::query(
                    "DELETE FROM users WHERE id = $1 AND (role <> 'admin' \
                     OR (SELECT COUNT(*) FROM users WHERE role = 'admin') > 1)",
                )
                .bind(id)
                .execute(&self.pool)
                .await?;
                self.account_change(id, deleted.rows_affected()).await
            }

            async fn set_user_password(
                &self,
                id: uuid::Uuid,
                password_hash: &str,
            ) -> $crate::Result<bool> {
                let (pool, password_hash) = (self.pool.clone(), password_hash.to_string());
                $crate::uncancellable(async move {
                    let mut tx = pool.begin().await?;
                    let changed = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                        .bind(&password_hash)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(changed.rows_affected() == 1)
                })
                .await
            }

            async fn insert_session(
                &self,
                digest: &str,
                user_id: uuid::Uuid,
                at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<()> {
                sqlx::query(
                    "INSERT INTO sessions (digest, user_id, created_at, last_seen_at) \
                     VALUES ($1, $2, $3, $3)",
                )
                .bind(digest)
                .bind(user_id)
                .bind($crate::sql::Timestamp(at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn session(&self, digest: &str) -> $crate::Result<Option<$crate::Session>> {
                let row: Option<$crate::accounts::SessionRow> = sqlx::query_as(
                    "SELECT u.id, u.username, u.role, u.created_at, \
                     s.created_at AS session_created_at, s.last_seen_at \
                     FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.digest = $1",
                )
                .bind(digest)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn touch_session(
                &self,
                digest: &str,
                at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<()> {
                sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE digest = $2")
                    .bind($crate::sql::Timestamp(at))
                    .bind(digest)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn delete_session(&self, digest: &str) -> $crate::Result<()> {
                sqlx::query("DELETE FROM sessions WHERE digest = $1")
                    .bind(digest)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn delete_expired_sessions(
                &self,
                idle_before: chrono::DateTime<chrono::Utc>,
                created_before: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<u64> {
                let deleted = sqlx::query(
                    "DELETE FROM sessions WHERE last_seen_at < $1 OR created_at < $2",
                )
                .bind($crate::sql::Timestamp(idle_before))
                .bind($crate::sql::Timestamp(created_before))
                .execute(&self.pool)
                .await?;
                Ok(deleted.rows_affected())
            }

            async fn insert_api_token(
                &self,
                token: &plantops_core::account::ApiToken,
                digest: &str,
            ) -> $crate::Result<()> {
                sqlx::query(
                    "INSERT INTO api_tokens (id, digest, user_id, name, scope, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(token.id)
                .bind(digest)
                .bind(token.user_id)
                .bind(&token.name)
                .bind(token.scope.as_str())
                .bind($crate::sql::Timestamp(token.created_at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn api_tokens(
                &self,
                user_id: uuid::Uuid,
            ) -> $crate::Result<Vec<plantops_core::account::ApiToken>> {
                let rows: Vec<$crate::accounts::TokenRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM api_tokens WHERE user_id = $1 ORDER BY created_at, id",
                    $crate::accounts::TOKEN_COLUMNS
                ))
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn api_token(
                &self,
                digest: &str,
            ) -> $crate::Result<
                Option<(plantops_core::account::ApiToken, plantops_core::account::User)>,
            > {
                let row: Option<$crate::accounts::TokenUserRow> = sqlx::query_as(
                    "SELECT t.id, t.user_id, t.name, t.scope, t.created_at, t.last_used_at, \
                     u.username, u.role, u.created_at AS user_created_at \
                     FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.digest = $1",
                )
                .bind(digest)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn touch_api_token(
                &self,
                id: uuid::Uuid,
                at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<()> {
                sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                    .bind($crate::sql::Timestamp(at))
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn delete_api_token(
                &self,
                id: uuid::Uuid,
                user_id: uuid::Uuid,
            ) -> $crate::Result<bool> {
                let deleted = sqlx::query("DELETE FROM api_tokens WHERE id = $1 AND user_id = $2")
                    .bind(id)
                    .bind(user_id)
                    .execute(&self.pool)
                    .await?;
                Ok(deleted.rows_affected() == 1)
            }

            async fn insert_enrollment_key(
                &self,
                key: &plantops_core::account::EnrollmentKey,
                digest: &str,
            ) -> $crate::Result<()> {
                sqlx::query(
                    "INSERT INTO enrollment_keys (id, digest, name, created_at, expires_at, \
                     max_uses, uses) VALUES ($1, $2, $3, $4, $5, $6, 0)",
                )
                .bind(key.id)
                .bind(digest)
                .bind(&key.name)
                .bind($crate::sql::Timestamp(key.created_at))
                .bind(key.expires_at.map($crate::sql::Timestamp))
                .bind(key.max_uses.map(|n| i32::try_from(n).unwrap_or(i32::MAX)))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn enrollment_keys(
                &self,
            ) -> $crate::Result<Vec<plantops_core::account::EnrollmentKey>> {
                let rows: Vec<$crate::accounts::KeyRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM enrollment_keys ORDER BY created_at DESC, id",
                    $crate::accounts::KEY_COLUMNS
                ))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn enrollment_key(
                &self,
                digest: &str,
            ) -> $crate::Result<Option<plantops_core::account::EnrollmentKey>> {
                let row: Option<$crate::accounts::KeyRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM enrollment_keys WHERE digest = $1",
                    $crate::accounts::KEY_COLUMNS
                ))
                .bind(digest)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Into::into))
            }

            async fn revoke_enrollment_key(
                &self,
                id: uuid::Uuid,
                at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<bool> {
                let revoked = sqlx::query(
                    "UPDATE enrollment_keys SET revoked_at = COALESCE(revoked_at, $1) \
                     WHERE id = $2",
                )
                .bind($crate::sql::Timestamp(at))
                .bind(id)
                .execute(&self.pool)
                .await?;
                Ok(revoked.rows_affected() == 1)
            }

            async fn use_enrollment_key(
                &self,
                id: uuid::Uuid,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<bool> {
                // The usability check and the count are one statement, so
                // two devices racing for a key's last use get one each.
                let used = sqlx::query(
                    "UPDATE enrollment_keys SET uses = uses + 1 WHERE id = $1 \
                     AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2) \
                     AND (max_uses IS NULL OR uses < max_uses)",
                )
                .bind(id)
                .bind($crate::sql::Timestamp(now))
                .execute(&self.pool)
                .await?;
                Ok(used.rows_affected() == 1)
            }
        }

        impl $store {
            /// What an update guarded by the last-admin rule did.
            async fn account_change(
                &self,
                id: uuid::Uuid,
                affected: u64,
            ) -> $crate::Result<$crate::AccountChange> {
                if affected == 1 {
                    return Ok($crate::AccountChange::Done);
                }
                Ok(match $crate::AccountStore::get_user(self, id).await? {
                    Some(_) => $crate::AccountChange::LastAdmin,
                    None => $crate::AccountChange::NotFound,
                })
            }
        }
    };
}

pub(crate) use account_store;

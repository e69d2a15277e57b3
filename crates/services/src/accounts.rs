//! Accounts outside the HTTP layer: what the routes and the CLI
//! (`plantops token create`, the benchmarks) both do.

use plantops_core::account::{issue_secret, ApiToken, Scope, API_TOKEN_PREFIX};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IssuedToken {
    #[serde(flatten)]
    pub token: ApiToken,
    /// Shown once: send it as `Authorization: Bearer <token>`.
    #[serde(rename = "token")]
    pub secret: String,
}

/// Stores a new API token for `user_id`; the secret is shown once.
pub async fn create_api_token(
    store: &plantops_store::DynStore,
    user_id: Uuid,
    name: String,
    scope: Scope,
) -> Result<IssuedToken, plantops_store::StoreError> {
    let secret = issue_secret(API_TOKEN_PREFIX);
    let token = ApiToken {
        id: Uuid::new_v4(),
        user_id,
        name,
        scope,
        created_at: plantops_core::now(),
        last_used_at: None,
    };
    store.insert_api_token(&token, &secret.digest).await?;
    tracing::info!(token_id = %token.id, scope = scope.as_str(), "API token created");
    Ok(IssuedToken {
        token,
        secret: secret.plain,
    })
}

//! `/api/users` (admins change, everyone reads) and `/api/tokens` (each
//! user's own API tokens).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use plantops_core::account::{
    validate_credentials, validate_name, validate_password, ApiToken, Role, Scope, User,
};
use plantops_core::validation::Collector;
use plantops_store::AccountChange;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::hash_password;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, Problem, ValidationProblem};
use crate::extract::ApiJson;
use crate::state::AppState;
use plantops_services::accounts::{create_api_token, IssuedToken};

pub const USER_NOT_FOUND: &str = "User not found";
pub const TOKEN_NOT_FOUND: &str = "API token not found";
const LAST_ADMIN: &str = "The last admin cannot be removed or demoted";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(update_user, delete_user))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(delete_token))
}

fn id_of(raw: &str, not_found: &'static str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound(not_found))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserList {
    pub users: Vec<User>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewUser {
    pub username: String,
    /// At least 8 characters.
    pub password: String,
    pub role: Role,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UserUpdate {
    pub role: Option<Role>,
    /// A new password (ends the user's sessions).
    pub password: Option<String>,
}

/// Every account, by name.
#[utoipa::path(get, path = "/users", tag = "users", responses((status = 200, body = UserList)))]
async fn list_users(State(state): State<AppState>) -> ApiResult<Json<UserList>> {
    Ok(Json(UserList {
        users: state.store.list_users().await?,
    }))
}

/// Add an account (admin).
#[utoipa::path(post, path = "/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = User), (status = 409, body = Problem),
        (status = 422, body = ValidationProblem)))]
async fn create_user(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<NewUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    validate_credentials(&request.username, &request.password)?;
    let user = User {
        id: Uuid::new_v4(),
        username: request.username,
        role: request.role,
        created_at: plantops_core::now(),
    };
    let hash = hash_password(request.password).await?;
    match state.store.insert_user(&user, &hash, false).await? {
        AccountChange::Done => {
            tracing::info!(username = %user.username, role = user.role.as_str(), "user added");
            Ok((StatusCode::CREATED, Json(user)))
        }
        _ => Err(ApiError::Conflict("That username is taken")),
    }
}

fn account_change(change: AccountChange) -> ApiResult<()> {
    match change {
        AccountChange::Done => Ok(()),
        AccountChange::NotFound => Err(ApiError::NotFound(USER_NOT_FOUND)),
        AccountChange::LastAdmin => Err(ApiError::Conflict(LAST_ADMIN)),
        AccountChange::Conflict => Err(ApiError::Conflict("That username is taken")),
    }
}

/// Change an account's role or password (admin).
#[utoipa::path(put, path = "/users/{id}", tag = "users", request_body = UserUpdate,
    params(("id" = String, Path)),
    responses((status = 200, body = User), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = ValidationProblem)))]
async fn update_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<UserUpdate>,
) -> ApiResult<Json<User>> {
    let id = id_of(&id, USER_NOT_FOUND)?;
    if let Some(password) = &request.password {
        let mut errors = Collector::default();
        validate_password(password, "password", &mut errors);
        errors.finish()?;
    }
    if let Some(role) = request.role {
        account_change(state.store.set_user_role(id, role).await?)?;
        state.auth.forget_credentials();
    }
    if let Some(password) = request.password {
        let hash = hash_password(password).await?;
        if !state.store.set_user_password(id, &hash).await? {
            return Err(ApiError::NotFound(USER_NOT_FOUND));
        }
        state.auth.forget_credentials();
    }
    let user = state
        .store
        .get_user(id)
        .await?
        .ok_or(ApiError::NotFound(USER_NOT_FOUND))?;
    tracing::info!(username = %user.username, role = user.role.as_str(), "user changed");
    Ok(Json(user))
}

/// Remove an account with its sessions and tokens (admin).
#[utoipa::path(delete, path = "/users/{id}", tag = "users", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = id_of(&id, USER_NOT_FOUND)?;
    account_change(state.store.delete_user(id).await?)?;
    state.auth.forget_credentials();
    tracing::info!(user_id = %id, "user removed");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<ApiToken>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewToken {
    pub name: String,
    /// `read`: GET only; `full`: what the owner may do.
    pub scope: Scope,
}

fn owner(principal: &Principal) -> ApiResult<&User> {
    principal.account().ok_or(ApiError::Conflict(
        "Authentication is off (PLANTOPS_AUTH=off): there is no account to own tokens",
    ))
}

/// The signed-in user's API tokens.
#[utoipa::path(get, path = "/tokens", tag = "users", responses((status = 200, body = TokenList)))]
async fn list_tokens(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Json<TokenList>> {
    let tokens = match principal.account() {
        Some(user) => state.store.api_tokens(user.id).await?,
        None => Vec::new(),
    };
    Ok(Json(TokenList { tokens }))
}

/// Create an API token for the signed-in user; the token is shown once.
#[utoipa::path(post, path = "/tokens", tag = "users", request_body = NewToken,
    responses((status = 201, body = IssuedToken), (status = 409, body = Problem),
        (status = 422, body = ValidationProblem)))]
async fn create_token(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(request): ApiJson<NewToken>,
) -> ApiResult<(StatusCode, Json<IssuedToken>)> {
    let user = owner(&principal)?;
    let mut errors = Collector::default();
    let name = validate_name(&request.name, &mut errors);
    errors.finish()?;
    let issued = create_api_token(&state.store, user.id, name, request.scope).await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

/// Revoke one of the signed-in user's tokens; it stops working at once.
#[utoipa::path(delete, path = "/tokens/{id}", tag = "users", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_token(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = id_of(&id, TOKEN_NOT_FOUND)?;
    let user = owner(&principal)?;
    if !state.store.delete_api_token(id, user.id).await? {
        return Err(ApiError::NotFound(TOKEN_NOT_FOUND));
    }
    state.auth.forget_credentials();
    tracing::info!(token_id = %id, "API token revoked");
    Ok(StatusCode::NO_CONTENT)
}

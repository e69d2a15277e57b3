//! `/api/auth`: first-start setup, sign-in and out, the signed-in user, and
//! changing one's own password.

use std::net::IpAddr;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use plantops_core::account::{
    decoy_password_hash, hash_user_password, validate_credentials, validate_password,
    verify_user_password, Role, User,
};
use plantops_core::validation::Collector;
use plantops_store::AccountChange;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{client_address, is_https, new_session, peer, Credential, Principal};
use crate::error::{ApiError, ApiResult, Problem, ValidationProblem};
use crate::extract::ApiJson;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(setup))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(change_password))
}

/// The address a request came from, for throttling.
pub struct ClientAddress(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(client_address(
            &parts.headers,
            peer(&parts.extensions),
            state.auth.settings.trust_proxy,
        )))
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuthStatus {
    /// No account exists yet: the setup page creates the first admin.
    pub setup_required: bool,
    /// `false` with `PLANTOPS_AUTH=off`: nobody needs to sign in.
    pub auth: bool,
    /// `PLANTOPS_ENROLLMENT=open`: devices register without a key.
    pub enrollment_open: bool,
}

/// Whether setup is pending and which protections are on (public).
#[utoipa::path(get, path = "/auth/status", tag = "auth", responses((status = 200, body = AuthStatus)))]
async fn status(State(state): State<AppState>) -> ApiResult<Json<AuthStatus>> {
    let settings = &state.auth.settings;
    Ok(Json(AuthStatus {
        setup_required: settings.required && state.store.count_users().await? == 0,
        auth: settings.required,
        enrollment_open: settings.enrollment_open || !settings.required,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SetupRequest {
    /// The token from the setup link (or `<data dir>/setup-token`).
    pub token: String,
    pub username: String,
    /// At least 8 characters.
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// Argon2 costs tens of milliseconds of CPU: off the async workers.
pub async fn hash_password(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || hash_user_password(&password))
        .await
        .map_err(|_| ApiError::Internal("Hashing the password failed"))
}

async fn verify_password(password: String, hash: String) -> ApiResult<bool> {
    tokio::task::spawn_blocking(move || verify_user_password(&password, &hash))
        .await
        .map_err(|_| ApiError::Internal("Checking the password failed"))
}

/// Starts a session for `user` and answers with its cookie.
async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    user: User,
) -> ApiResult<Response> {
    let (secret, digest) = new_session();
    state
        .store
        .insert_session(&digest, user.id, plantops_core::now())
        .await?;
    let cookie = state.auth.session_cookie(secret, is_https(headers));
    Ok((status, [(header::SET_COOKIE, cookie)], Json(user)).into_response())
}

/// Create the first admin with the one-time setup token; signs them in.
#[utoipa::path(post, path = "/auth/setup", tag = "auth", request_body = SetupRequest,
    responses((status = 201, body = User), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 422, body = ValidationProblem)))]
async fn setup(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<SetupRequest>,
) -> ApiResult<Response> {
    if !state.auth.settings.required {
        return Err(ApiError::Conflict(
            "Authentication is off (PLANTOPS_AUTH=off)",
        ));
    }
    if state.store.count_users().await? > 0 {
        state.auth.close_setup();
        return Err(ApiError::Conflict("Setup is done: sign in instead"));
    }
    if !state.auth.setup_token_matches(&request.token) {
        return Err(ApiError::Forbidden(
            "The setup token is wrong: use the link plantops serve logged, or <data dir>/setup-token",
        ));
    }
    validate_credentials(&request.username, &request.password)?;
    let user = User {
        id: Uuid::new_v4(),
        username: request.username,
        role: Role::Admin,
        created_at: plantops_core::now(),
    };
    let hash = hash_password(request.password).await?;
    if state.store.insert_user(&user, &hash, true).await? != AccountChange::Done {
        return Err(ApiError::Conflict("Setup is done: sign in instead"));
    }
    state.auth.close_setup();
    tracing::info!(username = %user.username, "first admin created");
    signed_in(&state, &headers, StatusCode::CREATED, user).await
}

/// Sign in: sets the session cookie.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = User), (status = 401, body = Problem),
        (status = 422, body = ValidationProblem), (status = 429, body = Problem)))]
async fn login(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    ApiJson(request): ApiJson<LoginRequest>,
) -> ApiResult<Response> {
    if !state.auth.settings.required {
        return Err(ApiError::Conflict(
            "Authentication is off (PLANTOPS_AUTH=off)",
        ));
    }
    let throttle = &state.auth.throttle;
    if let Some(wait) = throttle.wait(address, &request.username) {
        return Err(ApiError::TooManyRequests(wait));
    }
    let stored = state.store.user_by_name(&request.username).await?;
    // An unknown name costs the same as a wrong password.
    let hash = stored.as_ref().map_or_else(
        || decoy_password_hash().to_string(),
        |s| s.password_hash.clone(),
    );
    let matches = verify_password(request.password, hash).await?;
    match stored {
        Some(stored) if matches => {
            throttle.succeeded(address, &request.username);
            tracing::info!(username = %stored.user.username, "signed in");
            signed_in(&state, &headers, StatusCode::OK, stored.user).await
        }
        _ => {
            throttle.failed(address, &request.username);
            tracing::warn!(%address, "failed sign-in");
            Err(ApiError::Unauthorized("Wrong username or password"))
        }
    }
}

/// Sign out: ends this session and clears its cookie.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", responses((status = 204)))]
async fn logout(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if let Credential::Session { digest } = &principal.credential {
        state.store.delete_session(digest).await?;
        state.auth.forget_credentials();
    }
    let cookie = state.auth.expired_cookie(is_https(&headers));
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

/// The signed-in user (`anonymous`, an admin, with `PLANTOPS_AUTH=off`).
#[utoipa::path(get, path = "/auth/me", tag = "auth",
    responses((status = 200, body = User), (status = 401, body = Problem)))]
async fn me(Extension(principal): Extension<Principal>) -> Json<User> {
    Json(principal.user)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordChange {
    pub current_password: String,
    /// At least 8 characters.
    pub new_password: String,
}

/// Change one's own password; every session of the account ends, and this
/// browser gets a new one.
#[utoipa::path(put, path = "/auth/password", tag = "auth", request_body = PasswordChange,
    responses((status = 204), (status = 403, body = Problem), (status = 409, body = Problem),
        (status = 422, body = ValidationProblem), (status = 429, body = Problem)))]
async fn change_password(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    ApiJson(request): ApiJson<PasswordChange>,
) -> ApiResult<Response> {
    let Some(user) = principal.account() else {
        return Err(ApiError::Conflict(
            "Authentication is off: there is no account to change",
        ));
    };
    let throttle = &state.auth.throttle;
    if let Some(wait) = throttle.wait(address, &user.username) {
        return Err(ApiError::TooManyRequests(wait));
    }
    let mut errors = Collector::default();
    validate_password(&request.new_password, "new_password", &mut errors);
    errors.finish()?;
    let stored = state
        .store
        .user_by_name(&user.username)
        .await?
        .ok_or(ApiError::Unauthorized("The account no longer exists"))?;
    if !verify_password(request.current_password, stored.password_hash).await? {
        throttle.failed(address, &user.username);
        return Err(ApiError::Forbidden("The current password is wrong"));
    }
    let hash = hash_password(request.new_password).await?;
    state.store.set_user_password(user.id, &hash).await?;
    state.auth.forget_credentials();
    tracing::info!(username = %user.username, "password changed; sessions ended");
    match principal.credential {
        Credential::Session { .. } => {
            let mut response = signed_in(&state, &headers, StatusCode::OK, user.clone()).await?;
            *response.status_mut() = StatusCode::NO_CONTENT;
            *response.body_mut() = axum::body::Body::empty();
            Ok(response)
        }
        _ => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

//! `/api/enrollment-keys` and `/api/enrollment/window`: what lets a device
//! register itself, and the check registration makes.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use plantops_core::account::{
    issue_secret, secret_digest, validate_name, Enrollment, EnrollmentKey, ENROLLMENT_KEY_PREFIX,
};
use plantops_core::validation::Collector;
use plantops_core::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{bearer, Principal};
use crate::error::{ApiError, ApiResult, Problem, ValidationProblem};
use crate::extract::ApiJson;
use crate::state::AppState;

pub const KEY_NOT_FOUND: &str = "Enrollment key not found";
/// Where the window's closing time is kept (RFC 3339).
const WINDOW_SETTING: &str = "enrollment_window_until";
pub const MAX_WINDOW_MINUTES: u32 = 60;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
        .routes(routes!(get_window, open_window, close_window))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnrollmentKeyList {
    pub keys: Vec<EnrollmentKey>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewEnrollmentKey {
    pub name: String,
    /// The key stops working at this time (RFC 3339); never when absent.
    pub expires_at: Option<DateTime<Utc>>,
    /// How many devices it may register; unlimited when absent.
    pub max_uses: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IssuedEnrollmentKey {
    #[serde(flatten)]
    pub enrollment_key: EnrollmentKey,
    /// Shown once: devices send it as `Authorization: Bearer <key>`.
    pub key: String,
}

/// Every enrollment key, newest first (revoked and used-up ones too).
#[utoipa::path(get, path = "/enrollment-keys", tag = "devices",
    responses((status = 200, body = EnrollmentKeyList)))]
async fn list_keys(State(state): State<AppState>) -> ApiResult<Json<EnrollmentKeyList>> {
    Ok(Json(EnrollmentKeyList {
        keys: state.store.enrollment_keys().await?,
    }))
}

/// Create an enrollment key (admin); the key is shown once.
#[utoipa::path(post, path = "/enrollment-keys", tag = "devices", request_body = NewEnrollmentKey,
    responses((status = 201, body = IssuedEnrollmentKey), (status = 422, body = ValidationProblem)))]
async fn create_key(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<NewEnrollmentKey>,
) -> ApiResult<(StatusCode, Json<IssuedEnrollmentKey>)> {
    let now = plantops_core::now();
    let mut errors = Collector::default();
    let name = validate_name(&request.name, &mut errors);
    if request.expires_at.is_some_and(|at| at <= now) {
        errors.push(FieldError::new(
            &["body", "expires_at"],
            "expires_at must be in the future",
            "value_error.datetime",
        ));
    }
    if request.max_uses == Some(0) || request.max_uses.is_some_and(|n| n > i32::MAX as u32) {
        errors.push(FieldError::new(
            &["body", "max_uses"],
            "max_uses must be at least 1",
            "value_error.number.range",
        ));
    }
    errors.finish()?;
    let secret = issue_secret(ENROLLMENT_KEY_PREFIX);
    let key = EnrollmentKey {
        id: Uuid::new_v4(),
        name,
        created_at: now,
        expires_at: request.expires_at,
        max_uses: request.max_uses,
        uses: 0,
        revoked_at: None,
    };
    state
        .store
        .insert_enrollment_key(&key, &secret.digest)
        .await?;
    tracing::info!(key_id = %key.id, "enrollment key created");
    Ok((
        StatusCode::CREATED,
        Json(IssuedEnrollmentKey {
            enrollment_key: key,
            key: secret.plain,
        }),
    ))
}

/// Revoke an enrollment key (admin); devices it registered keep working.
#[utoipa::path(delete, path = "/enrollment-keys/{id}", tag = "devices",
    params(("id" = String, Path)), responses((status = 204), (status = 404, body = Problem)))]
async fn revoke_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound(KEY_NOT_FOUND))?;
    if !state
        .store
        .revoke_enrollment_key(id, plantops_core::now())
        .await?
    {
        return Err(ApiError::NotFound(KEY_NOT_FOUND));
    }
    tracing::info!(key_id = %id, "enrollment key revoked");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnrollmentWindow {
    pub open: bool,
    /// When it closes, while open.
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct OpenWindow {
    /// 1–60.
    pub minutes: u32,
}

async fn window_until(state: &AppState) -> ApiResult<Option<DateTime<Utc>>> {
    let now = Utc::now();
    Ok(state
        .store
        .get_setting(WINDOW_SETTING)
        .await?
        .and_then(|raw| DateTime::parse_from_rfc3339(&raw).ok())
        .map(|at| at.with_timezone(&Utc))
        .filter(|until| *until > now))
}

fn window(until: Option<DateTime<Utc>>) -> Json<EnrollmentWindow> {
    Json(EnrollmentWindow {
        open: until.is_some(),
        until,
    })
}

/// Whether devices may register without a key now, and until when.
#[utoipa::path(get, path = "/enrollment/window", tag = "devices",
    responses((status = 200, body = EnrollmentWindow)))]
async fn get_window(State(state): State<AppState>) -> ApiResult<Json<EnrollmentWindow>> {
    Ok(window(window_until(&state).await?))
}

/// Let devices register without a key for a few minutes (admin), like a
/// Zigbee coordinator's permit-join.
#[utoipa::path(post, path = "/enrollment/window", tag = "devices", request_body = OpenWindow,
    responses((status = 200, body = EnrollmentWindow), (status = 422, body = ValidationProblem)))]
async fn open_window(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<OpenWindow>,
) -> ApiResult<Json<EnrollmentWindow>> {
    if !(1..=MAX_WINDOW_MINUTES).contains(&request.minutes) {
        return Err(plantops_core::ValidationErrors::single(
            &["body", "minutes"],
            format!("minutes must be between 1 and {MAX_WINDOW_MINUTES}"),
            "value_error.number.range",
        )
        .into());
    }
    let until = plantops_core::now() + chrono::Duration::minutes(i64::from(request.minutes));
    state
        .store
        .put_setting(WINDOW_SETTING, Some(&until.to_rfc3339()))
        .await?;
    tracing::info!(%until, "enrollment window opened");
    Ok(window(Some(until)))
}

/// Close the enrollment window now (admin).
#[utoipa::path(delete, path = "/enrollment/window", tag = "devices",
    responses((status = 200, body = EnrollmentWindow)))]
async fn close_window(State(state): State<AppState>) -> ApiResult<Json<EnrollmentWindow>> {
    state.store.put_setting(WINDOW_SETTING, None).await?;
    tracing::info!("enrollment window closed");
    Ok(window(None))
}

/// What allows a registration; an enrollment key is counted only once the
/// device is new ([`count_key_use`]).
#[derive(Debug, Clone, Copy)]
pub enum EnrollmentPass {
    Granted(Enrollment),
    Key(Uuid),
}

impl EnrollmentPass {
    pub fn enrollment(self) -> Enrollment {
        match self {
            EnrollmentPass::Granted(enrollment) => enrollment,
            EnrollmentPass::Key(_) => Enrollment::Key,
        }
    }
}

const NEEDS_ENROLLMENT: &str =
    "Registration needs an enrollment key (Authorization: Bearer pek_…) \
                                or an open enrollment window";

/// Decides whether this request may register a device.
pub async fn check_enrollment(
    state: &AppState,
    principal: Option<&Principal>,
    headers: &HeaderMap,
) -> ApiResult<EnrollmentPass> {
    let settings = &state.auth.settings;
    if !settings.required || settings.enrollment_open {
        return Ok(EnrollmentPass::Granted(Enrollment::Open));
    }
    if principal.is_some_and(Principal::is_admin) {
        return Ok(EnrollmentPass::Granted(Enrollment::Admin));
    }
    if let Some(key) = bearer(headers).filter(|k| k.starts_with(ENROLLMENT_KEY_PREFIX)) {
        let now = plantops_core::now();
        return match state.store.enrollment_key(&secret_digest(key)).await? {
            // A used-up key still re-registers a known device (it gets no
            // password); a new device is refused when the use is counted.
            Some(key) if key.revoked_at.is_none() && key.expires_at.is_none_or(|at| at > now) => {
                Ok(EnrollmentPass::Key(key.id))
            }
            _ => Err(ApiError::Unauthorized(
                "The enrollment key is unknown, revoked or expired",
            )),
        };
    }
    if window_until(state).await?.is_some() {
        return Ok(EnrollmentPass::Granted(Enrollment::Window));
    }
    Err(ApiError::Unauthorized(NEEDS_ENROLLMENT))
}

/// Checked before the body is read: an unauthorised device learns nothing
/// about what a valid registration looks like.
impl axum::extract::FromRequestParts<AppState> for EnrollmentPass {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = parts.extensions.get::<Principal>();
        check_enrollment(state, principal, &parts.headers).await
    }
}

/// Counts a key's use for a new device; false when the key was used up
/// (or revoked) meanwhile.
pub async fn count_key_use(state: &AppState, pass: EnrollmentPass) -> ApiResult<bool> {
    match pass {
        EnrollmentPass::Key(id) => Ok(state
            .store
            .use_enrollment_key(id, plantops_core::now())
            .await?),
        EnrollmentPass::Granted(_) => Ok(true),
    }
}

//! The one mapping from internal errors to HTTP problem responses
//! (docs/api.md: `{"detail": "..."}`, and a list of field errors for 422).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use plantops_core::{FieldError, ValidationErrors};
use plantops_mqtt::BrokerError;
use plantops_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(&'static str),
    /// No valid credentials: 401 with `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Valid credentials that may not do this: 403.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The request conflicts with the current state: 409.
    #[error("{0}")]
    Conflict(&'static str),
    /// A body in a format other than JSON: 415.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// Too many attempts; try again after the delay: 429 with `Retry-After`.
    #[error("too many attempts")]
    TooManyRequests(std::time::Duration),
    #[error(transparent)]
    Validation(#[from] ValidationErrors),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// A dependency is not set up (e.g. no LLM configured): 503.
    #[error("{0}")]
    Unavailable(String),
    /// An upstream service failed or answered nonsense: 502.
    #[error("{0}")]
    BadGateway(String),
    /// A fault of ours; the message is safe to show.
    #[error("{0}")]
    Internal(&'static str),
}

/// `{"detail": "<message>"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    pub detail: String,
}

/// `{"detail": [{"loc", "msg", "type"}]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationProblem {
    pub detail: Vec<FieldError>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, detail) = match self {
            ApiError::NotFound(what) => (StatusCode::NOT_FOUND, what.to_string()),
            ApiError::Unauthorized(what) => {
                let body = Json(Problem {
                    detail: what.to_string(),
                });
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    body,
                )
                    .into_response();
            }
            ApiError::Forbidden(what) => (StatusCode::FORBIDDEN, what.to_string()),
            ApiError::Conflict(what) => (StatusCode::CONFLICT, what.to_string()),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "The request body must be JSON (Content-Type: application/json)".to_string(),
            ),
            ApiError::TooManyRequests(wait) => {
                // Whole seconds, rounded up: never tell a client to come back early.
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let body = Json(Problem {
                    detail: format!("Too many failed attempts; try again in {seconds} s"),
                });
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, seconds.to_string())],
                    body,
                )
                    .into_response();
            }
            ApiError::Validation(errors) => {
                let body = ValidationProblem { detail: errors.0 };
                return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
            }
            ApiError::Store(error) => {
                tracing::error!(%error, "store request failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The database is unavailable; try again shortly".to_string(),
                )
            }
            ApiError::Unavailable(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
            ApiError::BadGateway(why) => {
                tracing::warn!(reason = %why, "upstream request failed");
                (StatusCode::BAD_GATEWAY, why)
            }
            ApiError::Internal(what) => (StatusCode::INTERNAL_SERVER_ERROR, what.to_string()),
            ApiError::Broker(error) => {
                // The broker's own words stay in the log (with this
                // request's correlation id); the caller learns what to do.
                tracing::error!(%error, "broker request failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The MQTT broker is unavailable; try again shortly".to_string(),
                )
            }
        };
        (status, Json(Problem { detail })).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

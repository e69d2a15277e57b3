//! The one mapping from internal errors to HTTP problem responses
//! (docs/api.md: `{"detail": "..."}`, and a list of field errors for 422).

use axum::http::StatusCode;
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
                tracing::error!(%error, "broker request failed");
                (StatusCode::SERVICE_UNAVAILABLE, error.to_string())
            }
        };
        (status, Json(Problem { detail })).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

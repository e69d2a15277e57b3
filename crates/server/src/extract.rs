//! Extractors that answer bad input with docs/api.md's 422 shape, naming the
//! field and the rule, where axum's own would answer 400 with plain text.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use plantops_core::{FieldError, ValidationErrors};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::ApiError;

/// A JSON body. A request that declares another content type is refused
/// (415): an HTML form on another site can post `text/plain` or form data
/// without the browser asking first. One that declares none is parsed, as
/// the original did (device firmware often sends no `Content-Type`).
pub struct ApiJson<T>(pub T);

fn declares_other_than_json(req: &Request) -> bool {
    let Some(value) = req.headers().get(axum::http::header::CONTENT_TYPE) else {
        return false;
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    !(essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json")))
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if declares_other_than_json(&req) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ValidationErrors::single(&["body"], e.body_text(), "value_error.body"))?;
        let deserializer = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(deserializer)
            .map(ApiJson)
            .map_err(|e| {
                let kind = if e.inner().is_syntax() || e.inner().is_eof() {
                    "value_error.jsondecode"
                } else {
                    "type_error"
                };
                located("body", e.path().to_string(), e.inner().to_string(), kind).into()
            })
    }
}

/// Query parameters.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(ApiQuery)
            .map_err(|e| {
                located(
                    "query",
                    e.path().to_string(),
                    e.inner().to_string(),
                    "type_error",
                )
                .into()
            })
    }
}

/// The id in a path naming one plant, device or alert. An id that is not a
/// UUID names nothing, so it answers 404 with the resource's "not found"
/// detail, as the original PlantOps did (docs/api.md, compatibility).
macro_rules! id_path {
    ($name:ident, $not_found:expr) => {
        pub struct $name(pub Uuid);

        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &S,
            ) -> Result<Self, Self::Rejection> {
                let axum::extract::Path(raw) =
                    axum::extract::Path::<String>::from_request_parts(parts, state)
                        .await
                        .map_err(|_| ApiError::NotFound($not_found))?;
                Uuid::parse_str(&raw)
                    .map($name)
                    .map_err(|_| ApiError::NotFound($not_found))
            }
        }
    };
}

id_path!(PlantId, PLANT_NOT_FOUND);
id_path!(DeviceId, DEVICE_NOT_FOUND);
id_path!(AlertId, ALERT_NOT_FOUND);
id_path!(ChannelId, CHANNEL_NOT_FOUND);
id_path!(TaskId, TASK_NOT_FOUND);

/// A plant's id and the id of one of its care events
/// (`/plants/{id}/care-events/{event_id}`).
pub struct PlantCareEventIds(pub Uuid, pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PlantCareEventIds {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path((plant, event)) =
            axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::NotFound(PLANT_NOT_FOUND))?;
        let plant = Uuid::parse_str(&plant).map_err(|_| ApiError::NotFound(PLANT_NOT_FOUND))?;
        let event =
            Uuid::parse_str(&event).map_err(|_| ApiError::NotFound(CARE_EVENT_NOT_FOUND))?;
        Ok(Self(plant, event))
    }
}

/// What a malformed or unknown id in a path or body answers.
pub const PLANT_NOT_FOUND: &str = "Plant not found";
pub const DEVICE_NOT_FOUND: &str = "Device not found";
pub const ALERT_NOT_FOUND: &str = "Alert not found";
pub const CHANNEL_NOT_FOUND: &str = "Notification channel not found";
pub const TASK_NOT_FOUND: &str = "Task not found";
pub const CARE_EVENT_NOT_FOUND: &str = "Care event not found";

/// Builds the location of a deserialisation error. serde reports a missing
/// field at its parent, naming the field only in the message.
fn located(source: &str, path: String, message: String, kind: &str) -> ValidationErrors {
    let mut loc = vec![source.to_string()];
    loc.extend(
        path.split('.')
            .filter(|p| *p != "." && !p.is_empty())
            .map(str::to_string),
    );
    let mut kind = kind;
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        loc.push(field.to_string());
        kind = "value_error.missing";
    }
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or_default()
        .to_string();
    ValidationErrors(vec![FieldError {
        loc,
        msg: message,
        kind: kind.to_string(),
    }])
}

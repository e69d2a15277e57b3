//! `/api/mqtt/auth`, `/api/mqtt/acl`, `/api/mqtt/superuser`: for a broker
//! without Mosquitto's dynamic security (EMQX, VerneMQ, Mosquitto with
//! mosquitto-go-auth), which asks PlantOps over HTTP who may connect and
//! what they may publish and subscribe to. The requests come in the shapes
//! those brokers send (JSON or a form); the answer carries both dialects:
//! EMQX reads `result` (and `is_superuser`), go-auth's JSON response mode
//! `ok` and `error`. Protected by a shared secret
//! (`PLANTOPS_MQTT_AUTH_SECRET`), sent in `X-PlantOps-MQTT-Secret` or, for
//! brokers that cannot add headers (go-auth), as `?secret=`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::header;
use axum::Json;
use plantops_core::credentials::verify_password;
use plantops_core::topic;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(authenticate))
        .routes(routes!(authorize))
        .routes(routes!(superuser))
}

/// The header that carries the shared secret.
pub const SECRET_HEADER: &str = "x-plantops-mqtt-secret";

/// What the endpoints need to know: the secret, and the backend's own
/// account (its instances log in as `<username>.<instance id>`).
#[derive(Clone)]
pub struct BrokerAuth {
    pub secret: String,
    /// The backend's username and password (an external broker's
    /// `MQTT_BACKEND_*`); `None`: no backend account is accepted.
    pub backend: Option<(String, String)>,
}

impl std::fmt::Debug for BrokerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerAuth")
            .field("backend", &self.backend.as_ref().map(|(name, _)| name))
            .finish_non_exhaustive()
    }
}

/// `?secret=` for brokers that cannot send a header.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SecretQuery {
    /// The shared secret, when not sent in `X-PlantOps-MQTT-Secret`.
    pub secret: Option<String>,
}

/// A connection attempt, as EMQX and go-auth describe it.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AuthRequest {
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub clientid: Option<String>,
}

/// A publish or subscribe to check. go-auth sends `acc` (1 read, 2 write,
/// 3 read and write, 4 subscribe); EMQX sends `action` (`publish`,
/// `subscribe`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct AclRequest {
    pub username: String,
    #[serde(default)]
    pub clientid: Option<String>,
    pub topic: String,
    #[serde(default)]
    pub acc: Option<u8>,
    #[serde(default)]
    pub action: Option<String>,
}

/// go-auth's superuser check: nobody is one.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SuperuserRequest {
    pub username: String,
}

/// The decision, in both dialects, always with status 200.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BrokerDecision {
    /// EMQX: `allow` or `deny`.
    pub result: String,
    /// mosquitto-go-auth (`http_response_mode json`).
    pub ok: bool,
    /// Why it was denied (empty when allowed).
    pub error: String,
    pub is_superuser: bool,
}

fn decision(allowed: Result<(), &str>) -> Json<BrokerDecision> {
    Json(match allowed {
        Ok(()) => BrokerDecision {
            result: "allow".into(),
            ok: true,
            error: String::new(),
            is_superuser: false,
        },
        Err(reason) => BrokerDecision {
            result: "deny".into(),
            ok: false,
            error: reason.into(),
            is_superuser: false,
        },
    })
}

/// A broker's request: the secret proved, the body read as `T`. Carries the
/// endpoints' settings for the handler.
pub struct BrokerCall<T> {
    auth: BrokerAuth,
    request: T,
}

impl<T: DeserializeOwned> FromRequest<AppState> for BrokerCall<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(auth) = state.config.broker_auth.clone() else {
            return Err(ApiError::NotFound(
                "Broker authentication over HTTP is off (PLANTOPS_MQTT_AUTH_SECRET)",
            ));
        };
        let (parts, body) = request.into_parts();
        let query: Option<SecretQuery> = parts
            .uri
            .query()
            .and_then(|q| serde_urlencoded::from_str(q).ok());
        let sent = parts
            .headers
            .get(SECRET_HEADER)
            .and_then(|v| v.to_str().ok())
            .or(query.as_ref().and_then(|q| q.secret.as_deref()))
            .unwrap_or_default();
        if !bool::from(sent.as_bytes().ct_eq(auth.secret.as_bytes())) {
            return Err(ApiError::Unauthorized(
                "Send the broker secret in X-PlantOps-MQTT-Secret (or ?secret=)",
            ));
        }
        let form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|_| unreadable("the body could not be read"))?;
        let parsed = if form {
            serde_urlencoded::from_bytes(&body).map_err(|e| e.to_string())
        } else {
            serde_json::from_slice(&body).map_err(|e| e.to_string())
        };
        let request = parsed.map_err(|error| unreadable(&error))?;
        Ok(Self { auth, request })
    }
}

fn unreadable(error: &str) -> ApiError {
    plantops_core::ValidationErrors::single(
        &["body"],
        format!("unreadable broker request: {error}"),
        "value_error",
    )
    .into()
}

impl BrokerAuth {
    /// One of the backend instances' accounts: the backend's password, or
    /// `None` when `username` is not one.
    fn backend_password(&self, username: &str) -> Option<&str> {
        let (backend, password) = self.backend.as_ref()?;
        let ours = username == backend
            || username
                .strip_prefix(backend.as_str())
                .is_some_and(|rest| rest.starts_with('.'));
        ours.then_some(password.as_str())
    }
}

/// Whether a client may connect. Devices: their generated credentials and
/// one of their own client ids; backend instances: the backend password,
/// client id = username.
#[utoipa::path(post, path = "/mqtt/auth", tag = "devices", params(SecretQuery),
    request_body(content = AuthRequest, content_type = "application/json"),
    responses((status = 200, body = BrokerDecision), (status = 401, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
async fn authenticate(
    State(state): State<AppState>,
    BrokerCall { auth, request }: BrokerCall<AuthRequest>,
) -> ApiResult<Json<BrokerDecision>> {
    let client_id = request.clientid.as_deref();
    if let Some(backend_password) = auth.backend_password(&request.username) {
        let password_ok = request
            .password
            .as_bytes()
            .ct_eq(backend_password.as_bytes());
        let verdict = if !bool::from(password_ok) {
            Err("wrong password")
        } else if client_id.is_some_and(|id| id != request.username) {
            Err("a backend account connects with its username as client id")
        } else {
            Ok(())
        };
        return Ok(decision(verdict));
    }
    let verdict = match state.store.device_credentials(&request.username).await? {
        Some(device) if verify_password(&request.password, &device.password_hash) => {
            let own = client_id.is_none_or(|id| {
                topic::is_own_client_id(id, &device.device_id.to_string(), &request.username)
            });
            if own {
                Ok(())
            } else {
                Err("a device connects with its own client id")
            }
        }
        _ => Err("unknown username or wrong password"),
    };
    Ok(decision(verdict))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Access {
    Read,
    Write,
    Subscribe,
}

fn accesses(request: &AclRequest) -> Option<Vec<Access>> {
    match (request.acc, request.action.as_deref()) {
        (Some(1), _) => Some(vec![Access::Read]),
        (Some(2), _) => Some(vec![Access::Write]),
        (Some(3), _) => Some(vec![Access::Read, Access::Write]),
        (Some(4), _) => Some(vec![Access::Subscribe]),
        (None, Some("publish")) => Some(vec![Access::Write]),
        (None, Some("subscribe")) => Some(vec![Access::Subscribe]),
        _ => None,
    }
}

/// The backend reads every device's telemetry and heartbeats (through the
/// shared subscription) and publishes nothing.
fn backend_may(access: Access, topic_or_filter: &str) -> bool {
    let filter = topic_or_filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(topic_or_filter, |(_, filter)| filter);
    match access {
        Access::Subscribe => [topic::ALL_TELEMETRY, topic::ALL_HEARTBEATS].contains(&filter),
        Access::Read => topic::parse(filter).is_some(),
        Access::Write => false,
    }
}

/// A device publishes its own telemetry and heartbeats and reads only
/// under its own prefix.
fn device_may(access: Access, device_id: &str, topic_or_filter: &str) -> bool {
    match access {
        Access::Write => topic::own_kind(device_id, topic_or_filter).is_some(),
        Access::Read | Access::Subscribe => topic::is_own_filter(device_id, topic_or_filter),
    }
}

/// Whether a client may publish to, subscribe to or receive on a topic.
#[utoipa::path(post, path = "/mqtt/acl", tag = "devices", params(SecretQuery),
    request_body(content = AclRequest, content_type = "application/json"),
    responses((status = 200, body = BrokerDecision), (status = 401, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
async fn authorize(
    State(state): State<AppState>,
    BrokerCall { auth, request }: BrokerCall<AclRequest>,
) -> ApiResult<Json<BrokerDecision>> {
    let Some(accesses) = accesses(&request) else {
        return Ok(decision(Err(
            "unknown access (acc 1–4 or action publish/subscribe)",
        )));
    };
    let allowed = if auth.backend_password(&request.username).is_some() {
        accesses.iter().all(|a| backend_may(*a, &request.topic))
    } else {
        match state.store.device_credentials(&request.username).await? {
            Some(device) => {
                let id = device.device_id.to_string();
                accesses.iter().all(|a| device_may(*a, &id, &request.topic))
            }
            None => false,
        }
    };
    Ok(decision(if allowed { Ok(()) } else { Err("not allowed") }))
}

/// go-auth's superuser check: no account is a superuser.
#[utoipa::path(post, path = "/mqtt/superuser", tag = "devices", params(SecretQuery),
    request_body(content = SuperuserRequest, content_type = "application/json"),
    responses((status = 200, body = BrokerDecision), (status = 401, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)))]
async fn superuser(_: BrokerCall<SuperuserRequest>) -> ApiResult<Json<BrokerDecision>> {
    Ok(decision(Err("no account is a superuser")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_publish_their_own_topics_and_read_under_their_prefix() {
        let id = "3f1c";
        assert!(device_may(Access::Write, id, "devices/3f1c/telemetry"));
        assert!(device_may(Access::Write, id, "devices/3f1c/heartbeat"));
        assert!(!device_may(Access::Write, id, "devices/9999/telemetry"));
        assert!(!device_may(Access::Write, id, "devices/3f1c/commands"));
        assert!(device_may(Access::Subscribe, id, "devices/3f1c/#"));
        assert!(!device_may(Access::Subscribe, id, "devices/+/telemetry"));
        assert!(!device_may(Access::Read, id, "devices/9999/commands"));
    }

    #[test]
    fn the_backend_reads_every_device_and_publishes_nothing() {
        assert!(backend_may(
            Access::Subscribe,
            "$share/plantops/devices/+/telemetry"
        ));
        assert!(backend_may(Access::Subscribe, "devices/+/heartbeat"));
        assert!(!backend_may(Access::Subscribe, "#"));
        assert!(backend_may(Access::Read, "devices/3f1c/telemetry"));
        assert!(!backend_may(Access::Write, "devices/3f1c/telemetry"));
    }
}

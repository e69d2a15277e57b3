//! `/api/health`, `/api/ready` and `/api/mqtt/ca`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::error::{ApiError, Problem};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(broker_ca))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Component {
    /// `connected` or `disconnected`.
    pub status: String,
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Components {
    pub database: Component,
    pub mqtt: Component,
    pub ingest: IngestComponent,
    /// Background tasks that failed and were restarted in the last 30
    /// minutes, by name; empty when all is well.
    pub tasks: std::collections::BTreeMap<String, TaskComponent>,
    /// The TLS certificates this server knows (`broker`: the built-in
    /// broker's server certificate; `ca`: the CA devices trust), by name.
    pub certificates: std::collections::BTreeMap<String, CertificateComponent>,
    pub instance: InstanceComponent,
    /// The last verified backup and the last failed one, whichever process
    /// took them (scheduled backups, `plantops backup`).
    pub backup: plantops_services::ops::backups::BackupStatus,
}

/// This instance among those sharing the database (docs/scaling.md).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InstanceComponent {
    /// `PLANTOPS_INSTANCE_ID`, or the id kept in the data directory.
    pub id: String,
    /// Whether this instance runs the singleton jobs (offline detection,
    /// retention, weekly care plans). SQLite's one instance always does.
    pub leader: bool,
}

/// When a certificate ends. `status`: `ok`, `expiring` (within 30 days:
/// renew it, docs/deployment.md) or `expired`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CertificateComponent {
    pub status: String,
    pub not_after: DateTime<Utc>,
    pub days_left: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskComponent {
    pub restarts: u64,
    pub last_failure: DateTime<Utc>,
    pub reason: String,
}

/// Messages received from devices, readings stored, and messages dropped
/// by reason (malformed, too large, unknown device, ...).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IngestComponent {
    pub received: u64,
    pub stored: u64,
    pub dropped: std::collections::HashMap<String, u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `healthy`, `degraded` or `unhealthy`.
    pub status: String,
    pub timestamp: DateTime<Utc>,
    pub version: String,
    /// Only for signed-in users and API tokens: anonymous callers see the
    /// status alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub components: Option<Components>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadyChecks {
    pub database: bool,
    pub mqtt: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    pub ready: bool,
    pub checks: ReadyChecks,
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the database answers and carries every migration.
async fn database_check(state: &AppState) -> Result<(), String> {
    let probe = async {
        state.store.ping().await?;
        state.store.is_migrated().await
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err("migrations are not applied yet".into()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("no answer within 2 s".into()),
    }
}

fn component(up: bool, message: String) -> Component {
    Component {
        status: if up { "connected" } else { "disconnected" }.into(),
        message,
    }
}

/// Overall status (public); each component's, with counters, for
/// authenticated callers. Always 200.
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, body = Health)))]
async fn health(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
) -> Json<Health> {
    let database = database_check(&state).await;
    let link = state.broker.state();
    let failing = state.tasks.recent();
    let status = match (database.is_ok(), link.up && failing.is_empty()) {
        (true, true) => "healthy",
        (false, _) => "unhealthy",
        (true, false) => "degraded",
    };
    let backend = state.store.backend().as_str();
    let backup = match &principal {
        Some(_) => plantops_services::ops::backups::BackupStatus::read(&state.store)
            .await
            .unwrap_or_default(),
        None => Default::default(),
    };
    Json(Health {
        status: status.into(),
        timestamp: plantops_core::now(),
        version: env!("CARGO_PKG_VERSION").into(),
        components: principal.is_some().then(|| Components {
            database: match database {
                Ok(()) => component(true, format!("{backend} ok")),
                Err(message) => component(false, format!("{backend}: {message}")),
            },
            mqtt: component(
                link.up,
                format!("{}: {}", state.broker.kind(), link.message),
            ),
            ingest: ingest_component(&state),
            tasks: failing
                .into_iter()
                .map(|(task, failure)| {
                    let component = TaskComponent {
                        restarts: failure.restarts,
                        last_failure: failure.last_failure,
                        reason: failure.reason,
                    };
                    (task.to_string(), component)
                })
                .collect(),
            certificates: state
                .config
                .certificates
                .iter()
                .map(|(name, not_after)| {
                    let days_left = (*not_after - plantops_core::now()).num_days();
                    let status = if *not_after <= plantops_core::now() {
                        "expired"
                    } else if days_left < plantops_mqtt::certs::RENEW_BEFORE_DAYS {
                        "expiring"
                    } else {
                        "ok"
                    };
                    let component = CertificateComponent {
                        status: status.into(),
                        not_after: *not_after,
                        days_left,
                    };
                    (name.to_string(), component)
                })
                .collect(),
            instance: InstanceComponent {
                id: state.instance.id.clone(),
                leader: state
                    .instance
                    .leading
                    .load(std::sync::atomic::Ordering::Acquire),
            },
            backup,
        }),
    })
}

fn ingest_component(state: &AppState) -> IngestComponent {
    let stats = state.ingest.snapshot();
    IngestComponent {
        received: stats.received,
        stored: stats.stored,
        dropped: stats
            .dropped
            .into_iter()
            .map(|(reason, n)| (reason.to_string(), n))
            .collect(),
    }
}

/// 200 when the database and the broker link are usable, 503 otherwise.
#[utoipa::path(get, path = "/ready", tag = "health",
    responses((status = 200, body = Ready), (status = 503, body = Ready)))]
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Ready>) {
    let checks = ReadyChecks {
        database: database_check(&state).await.is_ok(),
        mqtt: state.broker.state().up,
    };
    let ready = checks.database && checks.mqtt;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Ready { ready, checks }))
}

/// The CA certificate (PEM) devices should trust for the broker's TLS port.
#[utoipa::path(get, path = "/mqtt/ca", tag = "devices",
    responses((status = 200, content_type = "application/x-pem-file", body = String),
        (status = 404, body = Problem)))]
async fn broker_ca(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let pem = state
        .config
        .broker_ca_pem
        .clone()
        .ok_or(ApiError::NotFound("The broker has no TLS CA configured"))?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem))
}

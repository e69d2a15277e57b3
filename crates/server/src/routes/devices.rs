//! `/api/devices`: self-registration, credentials, assignment, telemetry.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use plantops_core::credentials::{generate_password, generate_username, hash_password};
use plantops_core::device::RegisterDevice;
use plantops_core::validation::Collector;
use plantops_core::{Device, DeviceStatus, FieldError, Reading};
use plantops_store::Registration;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::enrollment::{count_key_use, EnrollmentPass};
use super::plants::DeviceList;
use super::Message;
use crate::error::{ApiError, ApiResult, Problem, ValidationProblem};
use crate::extract::{ApiJson, ApiQuery, DeviceId, DEVICE_NOT_FOUND, PLANT_NOT_FOUND};
use crate::state::AppState;

/// What a repeated registration returns instead of the password (compat).
pub const STORED_PASSWORD_SENTINEL: &str = "<stored_securely>";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register_device))
        .routes(routes!(list_devices))
        .routes(routes!(get_device, delete_device))
        .routes(routes!(rotate_credentials))
        .routes(routes!(provision_device))
        .routes(routes!(unassign_device))
        .routes(routes!(latest_telemetry))
        .routes(routes!(esphome_config))
}

/// deploy/esphome/plantops-sensor.yaml: a sensor built with ESPHome.
const ESPHOME_TEMPLATE: &str = include_str!("../../../../deploy/esphome/plantops-sensor.yaml");

/// The template with the values of its `substitutions:` block replaced;
/// without a CA line when the broker offers no TLS.
pub fn fill_esphome(template: &str, values: &[(&str, &str)], tls: bool) -> String {
    let mut in_substitutions = false;
    let mut filled = String::with_capacity(template.len() + 128);
    for line in template.lines() {
        if !line.starts_with(' ') && !line.starts_with('#') && !line.is_empty() {
            in_substitutions = line == "substitutions:";
        }
        let replaced = in_substitutions
            .then(|| {
                values.iter().find_map(|(key, value)| {
                    line.strip_prefix("  ")
                        .and_then(|rest| rest.strip_prefix(key))
                        .filter(|rest| rest.starts_with(": "))
                        .map(|_| format!("  {key}: \"{value}\""))
                })
            })
            .flatten();
        if !tls && line.trim_start().starts_with("certificate_authority:") {
            continue;
        }
        filled.push_str(replaced.as_deref().unwrap_or(line));
        filled.push('\n');
    }
    filled
}

/// The ESPHome configuration for this device, filled in with its id, its
/// username and the broker's host and port; its password and Wi-Fi come
/// from ESPHome's `secrets.yaml`.
#[utoipa::path(get, path = "/devices/{id}/esphome", tag = "devices",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "ESPHome YAML", content((String = "application/yaml"))),
        (status = 404, body = Problem)))]
async fn esphome_config(
    State(state): State<AppState>,
    DeviceId(id): DeviceId,
    headers: HeaderMap,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let device = find(&state, id).await?;
    let endpoint = &state.config.broker_endpoint;
    let (port, tls) = match (endpoint.tls_port, endpoint.port) {
        (Some(port), _) => (port, true),
        (None, Some(port)) => (port, false),
        (None, None) => (8883, true),
    };
    let short = &device.id.simple().to_string()[..8];
    let name = format!("plantops-{short}");
    let (device_id, port, host) = (
        device.id.to_string(),
        port.to_string(),
        broker_host(&state, &headers),
    );
    let values = [
        ("name", name.as_str()),
        ("device_id", device_id.as_str()),
        ("mqtt_username", device.mqtt_username.as_str()),
        ("mqtt_host", host.as_str()),
        ("mqtt_port", port.as_str()),
    ];
    let yaml = fill_esphome(ESPHOME_TEMPLATE, &values, tls);
    let disposition = format!("attachment; filename=\"{name}.yaml\"");
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/yaml".to_string(),
            ),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        yaml,
    )
        .into_response())
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Registered {
    pub device_id: Uuid,
    pub mqtt_username: String,
    /// Shown once; `<stored_securely>` when the MAC was registered before.
    pub mqtt_password: String,
    pub mqtt_host: String,
    pub mqtt_port: Option<u16>,
    pub mqtt_tls_port: Option<u16>,
}

async fn find(state: &AppState, id: Uuid) -> ApiResult<Device> {
    state
        .store
        .get_device(id)
        .await?
        .ok_or(ApiError::NotFound(DEVICE_NOT_FOUND))
}

/// The broker host to hand a device: configured, or the host it used to
/// reach us (a device on the LAN registers at the server's LAN address).
fn broker_host(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(host) = &state.config.broker_endpoint.public_host {
        return host.clone();
    }
    headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
        .map(|a| {
            a.host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        })
        .unwrap_or_else(|| "localhost".to_string())
}

fn credentials(
    state: &AppState,
    headers: &HeaderMap,
    device: &Device,
    password: String,
) -> Registered {
    let endpoint = &state.config.broker_endpoint;
    Registered {
        device_id: device.id,
        mqtt_username: device.mqtt_username.clone(),
        mqtt_password: password,
        mqtt_host: broker_host(state, headers),
        mqtt_port: endpoint.port.or(endpoint.tls_port),
        mqtt_tls_port: endpoint.tls_port,
    }
}

/// Register a device by MAC address and receive its MQTT credentials.
#[utoipa::path(post, path = "/devices/register", tag = "devices", request_body = RegisterDevice,
    responses((status = 200, body = Registered), (status = 401, body = Problem),
        (status = 422, body = ValidationProblem),
        (status = 503, body = Problem)))]
async fn register_device(
    State(state): State<AppState>,
    pass: EnrollmentPass,
    headers: HeaderMap,
    ApiJson(request): ApiJson<RegisterDevice>,
) -> ApiResult<Json<Registered>> {
    let mac = request.validate()?;
    let password = generate_password();
    let device = Device {
        id: Uuid::new_v4(),
        mac_address: mac.as_str().to_string(),
        mqtt_username: generate_username(),
        plant_id: None,
        status: DeviceStatus::Provisioning,
        firmware_version: request.firmware_version.clone(),
        sensor_types: request.sensor_types.clone(),
        last_seen_at: None,
        created_at: plantops_core::now(),
        enrollment: Some(pass.enrollment()),
        vitals: None,
        vitals_at: None,
    };
    match state
        .store
        .register_device(&device, &hash_password(&password))
        .await?
    {
        Registration::Existing(existing) => {
            tracing::info!(device_id = %existing.id, "known device registered again");
            Ok(Json(credentials(
                &state,
                &headers,
                &existing,
                STORED_PASSWORD_SENTINEL.into(),
            )))
        }
        Registration::Created(device) => {
            if !count_key_use(&state, pass).await? {
                state.store.delete_device(device.id).await?;
                return Err(ApiError::Unauthorized("The enrollment key is used up"));
            }
            if let Err(error) = state
                .broker
                .add_device(device.id, &device.mqtt_username, &password)
                .await
            {
                // Without broker access the credentials are useless: undo,
                // so the device can simply register again.
                state.store.delete_device(device.id).await?;
                return Err(error.into());
            }
            tracing::info!(device_id = %device.id, enrollment = pass.enrollment().as_str(), "device registered");
            Ok(Json(credentials(&state, &headers, &device, password)))
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct DeviceListQuery {
    /// 1–1000, default 100.
    pub limit: Option<i64>,
    /// ≥ 0, default 0.
    pub offset: Option<i64>,
    /// `provisioning`, `online`, `offline` or `error`.
    pub status: Option<String>,
}

/// List devices, newest first, optionally by status.
#[utoipa::path(get, path = "/devices", tag = "devices", params(DeviceListQuery),
    responses((status = 200, body = DeviceList), (status = 422, body = ValidationProblem)))]
async fn list_devices(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<DeviceListQuery>,
) -> ApiResult<Json<DeviceList>> {
    let mut errors = Collector::default();
    let page = super::PageQuery {
        limit: query.limit,
        offset: query.offset,
    }
    .page(&mut errors);
    let status = query.status.as_deref().and_then(|raw| {
        let status = DeviceStatus::parse(raw);
        if status.is_none() {
            errors.push(FieldError::new(
                &["query", "status"],
                "status must be one of provisioning, online, offline, error",
                "type_error.enum",
            ));
        }
        status
    });
    errors.finish()?;
    let (devices, total) = state.store.list_devices(page, status).await?;
    Ok(Json(DeviceList { devices, total }))
}

/// Get one device.
#[utoipa::path(get, path = "/devices/{id}", tag = "devices", params(("id" = Uuid, Path)),
    responses((status = 200, body = Device), (status = 404, body = Problem)))]
async fn get_device(
    State(state): State<AppState>,
    DeviceId(id): DeviceId,
) -> ApiResult<Json<Device>> {
    Ok(Json(find(&state, id).await?))
}

/// Delete a device: its broker access ends and a live session is cut.
#[utoipa::path(delete, path = "/devices/{id}", tag = "devices", params(("id" = Uuid, Path)),
    responses((status = 200, body = Message), (status = 404, body = Problem)))]
async fn delete_device(
    State(state): State<AppState>,
    DeviceId(id): DeviceId,
) -> ApiResult<Json<Message>> {
    let device = find(&state, id).await?;
    if !state.store.delete_device(id).await? {
        return Err(ApiError::NotFound(DEVICE_NOT_FOUND));
    }
    state
        .broker
        .remove_device(id, &device.mqtt_username)
        .await?;
    tracing::info!(device_id = %id, "device deleted");
    Ok(Message::new(format!("Device {id} deleted")))
}

/// Issue a new MQTT password; the old one stops working at once.
#[utoipa::path(post, path = "/devices/{id}/rotate-credentials", tag = "devices",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Registered), (status = 404, body = Problem)))]
async fn rotate_credentials(
    State(state): State<AppState>,
    headers: HeaderMap,
    DeviceId(id): DeviceId,
) -> ApiResult<Json<Registered>> {
    let device = find(&state, id).await?;
    let password = generate_password();
    if !state
        .store
        .set_device_password(id, &hash_password(&password))
        .await?
    {
        return Err(ApiError::NotFound(DEVICE_NOT_FOUND));
    }
    state
        .broker
        .set_password(id, &device.mqtt_username, &password)
        .await?;
    tracing::info!(device_id = %id, "device credentials rotated");
    Ok(Json(credentials(&state, &headers, &device, password)))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct Provision {
    /// The plant's id; one that is not a UUID names no plant (404).
    pub plant_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Provisioned {
    pub id: Uuid,
    pub plant_id: Uuid,
    pub status: DeviceStatus,
    pub message: String,
}

/// Assign a device to a plant (reassigns when already assigned).
#[utoipa::path(post, path = "/devices/{id}/provision", tag = "devices",
    params(("id" = Uuid, Path)), request_body = Provision,
    responses((status = 200, body = Provisioned), (status = 404, body = Problem),
        (status = 422, body = ValidationProblem)))]
async fn provision_device(
    State(state): State<AppState>,
    DeviceId(id): DeviceId,
    ApiJson(request): ApiJson<Provision>,
) -> ApiResult<Json<Provisioned>> {
    let Ok(plant_id) = Uuid::parse_str(request.plant_id.trim()) else {
        // As for a plant that does not exist: which of the two is missing.
        find(&state, id).await?;
        return Err(ApiError::NotFound(PLANT_NOT_FOUND));
    };
    if !state.store.assign_device(id, Some(plant_id)).await? {
        // Tell the caller which of the two is missing.
        find(&state, id).await?;
        return Err(ApiError::NotFound(PLANT_NOT_FOUND));
    }
    let device = find(&state, id).await?;
    tracing::info!(device_id = %id, %plant_id, "device assigned");
    Ok(Json(Provisioned {
        id,
        plant_id,
        status: device.status,
        message: format!("Device assigned to plant {plant_id}"),
    }))
}

/// Remove a device from its plant.
#[utoipa::path(post, path = "/devices/{id}/unassign", tag = "devices",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Message), (status = 404, body = Problem)))]
async fn unassign_device(
    State(state): State<AppState>,
    DeviceId(id): DeviceId,
) -> ApiResult<Json<Message>> {
    if !state.store.assign_device(id, None).await? {
        return Err(ApiError::NotFound(DEVICE_NOT_FOUND));
    }
    tracing::info!(device_id = %id, "device unassigned");
    Ok(Message::new(format!("Device {id} unassigned")))
}

/// The device's newest reading.
#[utoipa::path(get, path = "/devices/{id}/telemetry/latest", tag = "devices",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Reading), (status = 404, body = Problem)))]
async fn latest_telemetry(
    State(state): State<AppState>,
    DeviceId(id): DeviceId,
) -> ApiResult<Json<Reading>> {
    find(&state, id).await?;
    state
        .store
        .latest_device_reading(id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("No telemetry data found"))
}

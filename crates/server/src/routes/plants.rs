//! `/api/plants`: CRUD, devices of a plant, raw history and chart series.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use plantops_core::event::Event;
use plantops_core::validation::Collector;
use plantops_core::{Device, FieldError, NewPlant, Plant, PlantPatch, PlantStatus, Reading};
use plantops_store::{PlantOverview, SeriesPoint};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::PageQuery;
use crate::error::{ApiError, ApiResult, Problem, ValidationProblem};
use crate::extract::{ApiJson, ApiQuery, PlantId, PLANT_NOT_FOUND};
use crate::state::AppState;

pub const MAX_HISTORY_ROWS: u32 = 10_000;
pub const MAX_HISTORY_HOURS: i64 = 720;
/// A year: charts reach past the raw readings' retention through the
/// hourly rollups.
pub const MAX_SERIES_HOURS: i64 = 8784;
pub const MAX_SERIES_POINTS: i64 = 2000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_plants, create_plant))
        .routes(routes!(get_plant, update_plant, delete_plant))
        .routes(routes!(plant_devices))
        .routes(routes!(plant_history))
        .routes(routes!(plant_series))
        .routes(routes!(export_readings))
}

/// A plant with what the dashboard needs to judge it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlantView {
    #[serde(flatten)]
    pub plant: Plant,
    pub latest_telemetry: Option<Reading>,
    pub device_count: u64,
    pub status: PlantStatus,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlantList {
    pub plants: Vec<PlantView>,
    pub total: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceList {
    pub devices: Vec<Device>,
    pub total: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct History {
    pub records: Vec<Reading>,
    pub count: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Series {
    pub plant_id: Uuid,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bucket_seconds: i64,
    pub points: Vec<SeriesPoint>,
}

/// Offline when the newest reading is older than this many heartbeats.
const STALE_HEARTBEATS: i64 = 3;

fn status_of(plant: &Plant, latest: Option<&Reading>, heartbeat_secs: u64) -> PlantStatus {
    let Some(latest) = latest else {
        return PlantStatus::Unknown;
    };
    let stale =
        Utc::now() - latest.time > Duration::seconds(STALE_HEARTBEATS * heartbeat_secs as i64);
    if stale {
        return PlantStatus::Offline;
    }
    plant
        .thresholds
        .map_or(PlantStatus::Healthy, |t| t.judge(&latest.values))
}

/// A plant as the API shows it: with its newest reading, device count and
/// the status they make.
fn plant_view(entry: PlantOverview, heartbeat_secs: u64) -> PlantView {
    PlantView {
        status: status_of(&entry.plant, entry.latest.as_ref(), heartbeat_secs),
        device_count: entry.device_count,
        latest_telemetry: entry.latest,
        plant: entry.plant,
    }
}

pub async fn view(state: &AppState, plant: Plant) -> ApiResult<PlantView> {
    let ids = [plant.id];
    let latest = state
        .store
        .latest_plant_readings(&ids)
        .await?
        .remove(&plant.id);
    let counts = state.store.device_counts(&ids).await?;
    let device_count = counts.get(&plant.id).copied().unwrap_or(0);
    let entry = PlantOverview {
        plant,
        latest,
        device_count,
    };
    Ok(plant_view(entry, state.config.heartbeat_interval_secs))
}

pub(crate) async fn find(state: &AppState, id: Uuid) -> ApiResult<Plant> {
    state
        .store
        .get_plant(id)
        .await?
        .ok_or(ApiError::NotFound(PLANT_NOT_FOUND))
}

/// List plants, newest first, with latest reading, device count and status.
#[utoipa::path(get, path = "/plants", tag = "plants", params(PageQuery),
    responses((status = 200, body = PlantList), (status = 422, body = ValidationProblem)))]
async fn list_plants(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<PlantList>> {
    let (overview, total) = state.store.plant_overview(query.validated()?).await?;
    let heartbeat = state.config.heartbeat_interval_secs;
    let plants = overview
        .into_iter()
        .map(|entry| plant_view(entry, heartbeat))
        .collect();
    Ok(Json(PlantList { plants, total }))
}

/// Create a plant.
#[utoipa::path(post, path = "/plants", tag = "plants", request_body = NewPlant,
    responses((status = 201, body = PlantView), (status = 422, body = ValidationProblem)))]
async fn create_plant(
    State(state): State<AppState>,
    ApiJson(new): ApiJson<NewPlant>,
) -> ApiResult<(StatusCode, Json<PlantView>)> {
    new.validate()?;
    let now = plantops_core::now();
    let plant = Plant {
        id: Uuid::new_v4(),
        name: new.name.trim().to_string(),
        species: plantops_core::plant::normalize_species(new.species.as_deref()),
        thresholds: new.thresholds,
        alert_cooldown_minutes: new
            .alert_cooldown_minutes
            .unwrap_or(plantops_core::plant::DEFAULT_ALERT_COOLDOWN_MINUTES),
        low_battery_percent: new.low_battery_percent,
        created_at: now,
        updated_at: now,
    };
    state.store.insert_plant(&plant).await?;
    tracing::info!(plant_id = %plant.id, "plant created");
    state.publish(Event::PlantChanged {
        plant_id: plant.id,
        removed: false,
    });
    Ok((StatusCode::CREATED, Json(view(&state, plant).await?)))
}

/// Get one plant.
#[utoipa::path(get, path = "/plants/{id}", tag = "plants", params(("id" = Uuid, Path)),
    responses((status = 200, body = PlantView), (status = 404, body = Problem)))]
async fn get_plant(
    State(state): State<AppState>,
    PlantId(id): PlantId,
) -> ApiResult<Json<PlantView>> {
    let plant = find(&state, id).await?;
    Ok(Json(view(&state, plant).await?))
}

/// Update a plant partially; `thresholds`, when given, replaces the whole object.
#[utoipa::path(put, path = "/plants/{id}", tag = "plants", params(("id" = Uuid, Path)),
    request_body = PlantPatch,
    responses((status = 200, body = PlantView), (status = 404, body = Problem),
        (status = 422, body = ValidationProblem)))]
async fn update_plant(
    State(state): State<AppState>,
    PlantId(id): PlantId,
    ApiJson(patch): ApiJson<PlantPatch>,
) -> ApiResult<Json<PlantView>> {
    patch.validate()?;
    let mut plant = find(&state, id).await?;
    patch.apply(&mut plant);
    plant.updated_at = plantops_core::now();
    if !state.store.update_plant(&plant).await? {
        return Err(ApiError::NotFound(PLANT_NOT_FOUND));
    }
    tracing::info!(plant_id = %id, "plant updated");
    state.publish(Event::PlantChanged {
        plant_id: id,
        removed: false,
    });
    Ok(Json(view(&state, plant).await?))
}

/// Delete a plant; its devices are unassigned, its readings kept.
#[utoipa::path(delete, path = "/plants/{id}", tag = "plants", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_plant(
    State(state): State<AppState>,
    PlantId(id): PlantId,
) -> ApiResult<StatusCode> {
    if !state.store.delete_plant(id).await? {
        return Err(ApiError::NotFound(PLANT_NOT_FOUND));
    }
    tracing::info!(plant_id = %id, "plant deleted");
    state.publish(Event::PlantChanged {
        plant_id: id,
        removed: true,
    });
    Ok(StatusCode::NO_CONTENT)
}

/// Devices assigned to a plant.
#[utoipa::path(get, path = "/plants/{id}/devices", tag = "plants", params(("id" = Uuid, Path)),
    responses((status = 200, body = DeviceList), (status = 404, body = Problem)))]
async fn plant_devices(
    State(state): State<AppState>,
    PlantId(id): PlantId,
) -> ApiResult<Json<DeviceList>> {
    find(&state, id).await?;
    let devices = state.store.plant_devices(id).await?;
    Ok(Json(DeviceList {
        total: devices.len() as u64,
        devices,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct HoursQuery {
    /// 1–720, default 24.
    pub hours: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SeriesQuery {
    /// 1–8784 (a year), default 24. Older than PLANTOPS_RETENTION_DAYS:
    /// from the hourly rollups.
    pub hours: Option<i64>,
    /// Most points to return, 2–2000, default 500.
    pub points: Option<i64>,
}

fn hours(raw: Option<i64>, max: i64, errors: &mut Collector) -> i64 {
    let hours = raw.unwrap_or(24);
    if !(1..=max).contains(&hours) {
        errors.push(FieldError::new(
            &["query", "hours"],
            format!("hours must be between 1 and {max}"),
            "value_error.number.range",
        ));
    }
    hours
}

/// Raw readings of the last `hours`, newest first (at most 10,000).
#[utoipa::path(get, path = "/plants/{id}/history", tag = "plants",
    params(("id" = Uuid, Path), HoursQuery),
    responses((status = 200, body = History), (status = 404, body = Problem),
        (status = 422, body = ValidationProblem)))]
async fn plant_history(
    State(state): State<AppState>,
    PlantId(id): PlantId,
    ApiQuery(query): ApiQuery<HoursQuery>,
) -> ApiResult<Json<History>> {
    let mut errors = Collector::default();
    let hours = hours(query.hours, MAX_HISTORY_HOURS, &mut errors);
    errors.finish()?;
    find(&state, id).await?;
    let since = Utc::now() - Duration::hours(hours);
    let records = state
        .store
        .plant_history(id, since, MAX_HISTORY_ROWS)
        .await?;
    Ok(Json(History {
        count: records.len(),
        records,
    }))
}

/// Time-bucketed min/avg/max per metric, for charts.
#[utoipa::path(get, path = "/plants/{id}/series", tag = "plants",
    params(("id" = Uuid, Path), SeriesQuery),
    responses((status = 200, body = Series), (status = 404, body = Problem),
        (status = 422, body = ValidationProblem)))]
async fn plant_series(
    State(state): State<AppState>,
    PlantId(id): PlantId,
    ApiQuery(query): ApiQuery<SeriesQuery>,
) -> ApiResult<Json<Series>> {
    let mut errors = Collector::default();
    let hours = hours(query.hours, MAX_SERIES_HOURS, &mut errors);
    let points = query.points.unwrap_or(500);
    if !(2..=MAX_SERIES_POINTS).contains(&points) {
        errors.push(FieldError::new(
            &["query", "points"],
            format!("points must be between 2 and {MAX_SERIES_POINTS}"),
            "value_error.number.range",
        ));
    }
    errors.finish()?;
    find(&state, id).await?;
    let to = plantops_core::now();
    let from = to - Duration::hours(hours);
    let bucket_seconds = plantops_core::series_bucket_seconds(hours * 3600, points as u32);
    let retention = state.config.retention_days;
    let raw_since = (retention > 0).then(|| to - Duration::days(i64::from(retention)));
    let points = plantops_services::ops::rollups::series(
        &state.store,
        id,
        from,
        to,
        bucket_seconds,
        raw_since,
        to,
    )
    .await?;
    Ok(Json(Series {
        plant_id: id,
        from,
        to,
        bucket_seconds,
        points,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ExportQuery {
    /// `csv` (default) or `jsonl`.
    #[param(inline)]
    pub format: Option<crate::export::ExportFormat>,
    /// First moment included: RFC 3339 (a time without a zone is UTC) or a
    /// date (`2026-11-01`, midnight UTC). Default: the first reading.
    pub from: Option<String>,
    /// First moment no longer included, in the same forms. Default: now.
    pub to: Option<String>,
    /// `care`: the plant's care journal of the range too, merged in by time.
    #[param(inline)]
    pub include: Option<ExportInclude>,
}

/// What an export adds to the readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportInclude {
    Care,
}

/// An RFC 3339 time or a plain date; a field error otherwise.
fn moment(raw: Option<&str>, field: &str, errors: &mut Collector) -> Option<DateTime<Utc>> {
    let parsed = crate::export::parse_moment(raw?);
    if parsed.is_none() {
        errors.push(FieldError::new(
            &["query", field],
            format!("{field} must be an RFC 3339 time or a date (YYYY-MM-DD)"),
            "value_error.datetime",
        ));
    }
    parsed
}

/// A plant's readings in `[from, to)` as a download, oldest first, streamed
/// (any number of rows in constant memory).
#[utoipa::path(get, path = "/plants/{id}/export", tag = "plants",
    params(("id" = Uuid, Path), ExportQuery),
    responses(
        (status = 200, description = "CSV with a header line, or JSON Lines (one reading per line)",
            content((String = "text/csv"), (String = "application/x-ndjson"))),
        (status = 404, body = Problem), (status = 422, body = ValidationProblem)))]
async fn export_readings(
    State(state): State<AppState>,
    PlantId(id): PlantId,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let mut errors = Collector::default();
    let from = moment(query.from.as_deref(), "from", &mut errors);
    let to = moment(query.to.as_deref(), "to", &mut errors);
    let (from, to) = (
        from.unwrap_or(DateTime::UNIX_EPOCH),
        to.unwrap_or_else(Utc::now),
    );
    if from >= to {
        errors.push(FieldError::new(
            &["query", "from"],
            "from must be before to",
            "value_error.range",
        ));
    }
    errors.finish()?;
    let plant = find(&state, id).await?;
    let format = query.format.unwrap_or_default();
    let care = match query.include {
        Some(ExportInclude::Care) => Some(state.store.care_events_between(id, from, to).await?),
        None => None,
    };
    let chunks = crate::export::readings(state.store.clone(), id, from, to, format, care);
    let body = axum::body::Body::from_stream(futures::StreamExt::inspect(chunks, |chunk| {
        if let Err(error) = chunk {
            // The status is sent already: the download ends short.
            tracing::error!(%error, "export stopped by a database error");
        }
    }));
    let disposition = format!(
        "attachment; filename=\"{}\"",
        crate::export::file_name(&plant.name, to, format)
    );
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                format.content_type().to_string(),
            ),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

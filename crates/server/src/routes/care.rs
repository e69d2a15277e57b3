//! The care journal (`/api/plants/{id}/care-events`), a plant's care
//! schedule (`/api/plants/{id}/care-schedule`) and the due tasks across
//! plants (`/api/tasks`). The work is `plantops_services::care`'s.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use plantops_core::journal::{CareEvent, CareSchedule, CareSource, CareTaskRule, NewCareEvent};
use plantops_core::ValidationErrors;
use plantops_services::care::tasks::{TaskError, TaskView, MAX_SNOOZE_HOURS};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::plants::find as find_plant;
use crate::auth::{Credential, Principal};
use crate::error::{ApiError, ApiResult, Problem, ValidationProblem};
use crate::extract::{
    ApiJson, ApiQuery, PlantCareEventIds, PlantId, TaskId, CARE_EVENT_NOT_FOUND, TASK_NOT_FOUND,
};
use crate::state::AppState;

/// Most journal entries one page holds.
pub const MAX_CARE_EVENTS_PAGE: u32 = 200;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_care_events, record_care_event))
        .routes(routes!(delete_care_event))
        .routes(routes!(get_care_schedule, put_care_schedule))
        .routes(routes!(list_tasks))
        .routes(routes!(task_done))
        .routes(routes!(snooze_task))
}

impl From<TaskError> for ApiError {
    fn from(error: TaskError) -> Self {
        match error {
            TaskError::NotFound => ApiError::NotFound(TASK_NOT_FOUND),
            TaskError::Store(error) => ApiError::Store(error),
        }
    }
}

/// Who records: a session is a user, a token a token; with authentication
/// off nobody is named.
fn recorder(principal: &Principal) -> (CareSource, Option<String>) {
    let source = match principal.credential {
        Credential::Token { .. } => CareSource::Token,
        Credential::Session { .. } | Credential::AuthOff => CareSource::User,
    };
    (source, principal.account().map(|u| u.username.clone()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CareEventsQuery {
    /// Entries before this time (the `at` of the last entry of the page
    /// before); default: the newest.
    pub before: Option<DateTime<Utc>>,
    /// 1–200, default 50.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CareEventList {
    /// Newest first.
    pub events: Vec<CareEvent>,
    /// `before` for the next page; `null` on the last.
    pub next_before: Option<DateTime<Utc>>,
}

/// A plant's care journal, newest first, a page at a time.
#[utoipa::path(get, path = "/plants/{id}/care-events", tag = "care",
    params(("id" = Uuid, Path), CareEventsQuery),
    responses((status = 200, body = CareEventList), (status = 404, body = Problem),
        (status = 422, body = ValidationProblem)))]
async fn list_care_events(
    State(state): State<AppState>,
    PlantId(id): PlantId,
    ApiQuery(query): ApiQuery<CareEventsQuery>,
) -> ApiResult<Json<CareEventList>> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_CARE_EVENTS_PAGE).contains(&limit) {
        return Err(ValidationErrors::single(
            &["query", "limit"],
            "limit must be 1–200",
            "value_error.number",
        )
        .into());
    }
    find_plant(&state, id).await?;
    let events = state.store.care_events(id, query.before, limit).await?;
    let next_before = (events.len() == limit as usize)
        .then(|| events.last().map(|e| e.at))
        .flatten();
    Ok(Json(CareEventList {
        events,
        next_before,
    }))
}

/// Record what was done to a plant (watered, fertilized, a note, …).
#[utoipa::path(post, path = "/plants/{id}/care-events", tag = "care",
    params(("id" = Uuid, Path)), request_body = NewCareEvent,
    responses((status = 201, body = CareEvent), (status = 404, body = Problem),
        (status = 422, body = ValidationProblem)))]
async fn record_care_event(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PlantId(id): PlantId,
    ApiJson(input): ApiJson<NewCareEvent>,
) -> ApiResult<(StatusCode, Json<CareEvent>)> {
    find_plant(&state, id).await?;
    let (source, recorded_by) = recorder(&principal);
    let event = input.validated(id, source, recorded_by, Utc::now())?;
    state.journal.record(&event).await?;
    Ok((StatusCode::CREATED, Json(event)))
}

/// Remove a journal entry.
#[utoipa::path(delete, path = "/plants/{id}/care-events/{event_id}", tag = "care",
    params(("id" = Uuid, Path), ("event_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_care_event(
    State(state): State<AppState>,
    PlantCareEventIds(plant_id, event_id): PlantCareEventIds,
) -> ApiResult<StatusCode> {
    if !state.store.delete_care_event(plant_id, event_id).await? {
        return Err(ApiError::NotFound(CARE_EVENT_NOT_FOUND));
    }
    tracing::info!(%plant_id, %event_id, "care event deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// A plant's care schedule and when each task is due.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CareScheduleView {
    pub tasks: Vec<CareTaskRule>,
    /// Each task with its due date, soonest first.
    pub due: Vec<TaskView>,
}

async fn schedule_view(state: &AppState, plant_id: Uuid) -> ApiResult<CareScheduleView> {
    let stored = state.store.care_tasks(Some(plant_id)).await?;
    let due = state.care_tasks.list(Some(plant_id), Utc::now()).await?;
    Ok(CareScheduleView {
        tasks: stored.into_iter().map(|t| t.rule).collect(),
        due,
    })
}

/// A plant's care schedule.
#[utoipa::path(get, path = "/plants/{id}/care-schedule", tag = "care",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = CareScheduleView), (status = 404, body = Problem)))]
async fn get_care_schedule(
    State(state): State<AppState>,
    PlantId(id): PlantId,
) -> ApiResult<Json<CareScheduleView>> {
    find_plant(&state, id).await?;
    Ok(Json(schedule_view(&state, id).await?))
}

/// Replace a plant's care schedule; tasks kept by name keep their
/// snooze and reminders.
#[utoipa::path(put, path = "/plants/{id}/care-schedule", tag = "care",
    params(("id" = Uuid, Path)), request_body = CareSchedule,
    responses((status = 200, body = CareScheduleView), (status = 404, body = Problem),
        (status = 422, body = ValidationProblem)))]
async fn put_care_schedule(
    State(state): State<AppState>,
    PlantId(id): PlantId,
    ApiJson(schedule): ApiJson<CareSchedule>,
) -> ApiResult<Json<CareScheduleView>> {
    let rules: Vec<CareTaskRule> = schedule
        .validated()?
        .into_iter()
        .map(|(_, rule)| rule)
        .collect();
    find_plant(&state, id).await?;
    state.store.put_care_schedule(id, &rules).await?;
    tracing::info!(plant_id = %id, tasks = rules.len(), "care schedule saved");
    Ok(Json(schedule_view(&state, id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TasksQuery {
    /// Tasks due before this time; default: now (due and overdue).
    pub due_before: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskList {
    /// Soonest first.
    pub tasks: Vec<TaskView>,
}

/// Due and overdue care tasks across plants.
#[utoipa::path(get, path = "/tasks", tag = "care", params(TasksQuery),
    responses((status = 200, body = TaskList), (status = 422, body = ValidationProblem)))]
async fn list_tasks(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<TasksQuery>,
) -> ApiResult<Json<TaskList>> {
    let now = Utc::now();
    let before = query.due_before.unwrap_or(now);
    let tasks = state
        .care_tasks
        .list(None, now)
        .await?
        .into_iter()
        .filter(|t| t.due_at <= before)
        .collect();
    Ok(Json(TaskList { tasks }))
}

/// Mark a task done: its journal entry is recorded, its snooze ends.
#[utoipa::path(post, path = "/tasks/{id}/done", tag = "care", params(("id" = Uuid, Path)),
    responses((status = 201, body = CareEvent), (status = 404, body = Problem)))]
async fn task_done(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    TaskId(id): TaskId,
) -> ApiResult<(StatusCode, Json<CareEvent>)> {
    let (source, recorded_by) = recorder(&principal);
    let event = state
        .care_tasks
        .done(id, source, recorded_by, Utc::now())
        .await?;
    Ok((StatusCode::CREATED, Json(event)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Snooze {
    /// 1–336 (two weeks).
    pub hours: u32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Snoozed {
    pub snoozed_until: DateTime<Utc>,
}

/// Put a task off; it is not due, and not reminded of, until then.
#[utoipa::path(post, path = "/tasks/{id}/snooze", tag = "care", params(("id" = Uuid, Path)),
    request_body = Snooze,
    responses((status = 200, body = Snoozed), (status = 404, body = Problem),
        (status = 422, body = ValidationProblem)))]
async fn snooze_task(
    State(state): State<AppState>,
    TaskId(id): TaskId,
    ApiJson(snooze): ApiJson<Snooze>,
) -> ApiResult<Json<Snoozed>> {
    if !(1..=MAX_SNOOZE_HOURS).contains(&snooze.hours) {
        return Err(ValidationErrors::single(
            &["body", "hours"],
            "hours must be 1–336",
            "value_error.number",
        )
        .into());
    }
    let snoozed_until = state
        .care_tasks
        .snooze(id, snooze.hours, Utc::now())
        .await?;
    Ok(Json(Snoozed { snoozed_until }))
}

//! `/api/notification-channels`: where alerts go besides the settings'
//! Discord webhook (ntfy, Telegram, a signed webhook, email, more Discord
//! webhooks). Each channel takes alerts from its minimum severity up and
//! delivers them from its own outbox. Secrets are stored sealed and never
//! shown.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::settings::TestResult;
use crate::error::{ApiError, ApiResult, Problem, ValidationProblem};
use crate::extract::{ApiJson, ChannelId, CHANNEL_NOT_FOUND};
use crate::state::AppState;
use plantops_services::alerts::channels::{ChannelError, ChannelInput, ChannelView};
use plantops_services::alerts::send::Notice;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_channels, create_channel))
        .routes(routes!(update_channel, delete_channel))
        .routes(routes!(test_channel))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChannelList {
    pub channels: Vec<ChannelView>,
}

impl From<ChannelError> for ApiError {
    fn from(error: ChannelError) -> Self {
        match error {
            ChannelError::Store(e) => ApiError::Store(e),
            other => {
                tracing::error!(error = %other, "stored notification channel unreadable");
                ApiError::Internal("A stored notification channel cannot be decrypted")
            }
        }
    }
}

async fn view(state: &AppState, id: Uuid) -> ApiResult<ChannelView> {
    let stored = state
        .store
        .get_channel(id)
        .await?
        .ok_or(ApiError::NotFound(CHANNEL_NOT_FOUND))?;
    Ok(state.notifications.channels.view(&stored)?)
}

/// Every notification channel, oldest first (secrets masked).
#[utoipa::path(get, path = "/notification-channels", tag = "alerts",
    responses((status = 200, body = ChannelList)))]
async fn list_channels(State(state): State<AppState>) -> ApiResult<Json<ChannelList>> {
    Ok(Json(ChannelList {
        channels: state.notifications.channels.list().await?,
    }))
}

/// Add a channel; alerts created from now on reach it.
#[utoipa::path(post, path = "/notification-channels", tag = "alerts",
    request_body = ChannelInput,
    responses((status = 201, body = ChannelView), (status = 422, body = ValidationProblem)))]
async fn create_channel(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<ChannelInput>,
) -> ApiResult<(StatusCode, Json<ChannelView>)> {
    let channel = input.into_channel(Uuid::new_v4(), None, &state.notifications.destinations)?;
    let stored = state
        .notifications
        .channels
        .seal(&channel, plantops_core::now());
    state.store.insert_channel(&stored).await?;
    tracing::info!(channel_id = %channel.id, kind = stored.kind, "notification channel added");
    state.notifier_wake.notify_one();
    Ok((StatusCode::CREATED, Json(view(&state, channel.id).await?)))
}

/// Change a channel; fields left out keep their stored values (so secrets
/// need not be sent again).
#[utoipa::path(put, path = "/notification-channels/{id}", tag = "alerts",
    params(("id" = Uuid, Path)), request_body = ChannelInput,
    responses((status = 200, body = ChannelView), (status = 404, body = Problem),
        (status = 422, body = ValidationProblem)))]
async fn update_channel(
    State(state): State<AppState>,
    ChannelId(id): ChannelId,
    ApiJson(input): ApiJson<ChannelInput>,
) -> ApiResult<Json<ChannelView>> {
    let channels = &state.notifications.channels;
    let existing = state
        .store
        .get_channel(id)
        .await?
        .ok_or(ApiError::NotFound(CHANNEL_NOT_FOUND))?;
    let current = channels.open(&existing)?;
    let channel = input.into_channel(id, Some(&current), &state.notifications.destinations)?;
    let stored = channels.seal(&channel, existing.created_at);
    if !state.store.update_channel(&stored).await? {
        return Err(ApiError::NotFound(CHANNEL_NOT_FOUND));
    }
    tracing::info!(channel_id = %id, kind = stored.kind, "notification channel updated");
    Ok(Json(view(&state, id).await?))
}

/// Remove a channel and the notices still waiting for it.
#[utoipa::path(delete, path = "/notification-channels/{id}", tag = "alerts",
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_channel(
    State(state): State<AppState>,
    ChannelId(id): ChannelId,
) -> ApiResult<StatusCode> {
    if !state.store.delete_channel(id).await? {
        return Err(ApiError::NotFound(CHANNEL_NOT_FOUND));
    }
    tracing::info!(channel_id = %id, "notification channel removed");
    state.notifier_wake.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

/// Send a test notice through the channel now and say how it went.
#[utoipa::path(post, path = "/notification-channels/{id}/test", tag = "alerts",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = TestResult), (status = 404, body = Problem)))]
async fn test_channel(
    State(state): State<AppState>,
    ChannelId(id): ChannelId,
) -> ApiResult<Json<TestResult>> {
    let channel = state
        .notifications
        .channels
        .get(id)
        .await?
        .ok_or(ApiError::NotFound(CHANNEL_NOT_FOUND))?;
    let attempt = state
        .notifications
        .sender
        .send(&channel.config, &Notice::Test)
        .await;
    Ok(Json(attempt.into()))
}

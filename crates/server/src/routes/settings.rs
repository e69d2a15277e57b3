//! `/api/settings/notifications`: the Discord webhook (stored sealed, shown
//! masked) and a test notification.

use axum::extract::State;
use axum::Json;
use plantops_core::secret::mask;
use plantops_core::ValidationErrors;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, ValidationProblem};
use crate::extract::ApiJson;
use crate::state::AppState;
use plantops_services::alerts::channels::{ChannelConfig, DiscordChannel};
use plantops_services::alerts::send::{Attempt, Notice};
use plantops_services::keys::SettingsError;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_notifications, put_notifications))
        .routes(routes!(test_notification))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NotificationSettingsView {
    pub discord_webhook_set: bool,
    /// `"..."` and the last four characters.
    pub discord_webhook_masked: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NotificationSettingsUpdate {
    /// A Discord webhook URL (https://discord.com/api/webhooks/…; the
    /// server's PLANTOPS_DISCORD_WEBHOOK_PREFIXES), or `null` to remove it.
    pub discord_webhook_url: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TestResult {
    pub success: bool,
    pub message: String,
}

impl From<SettingsError> for ApiError {
    fn from(error: SettingsError) -> Self {
        match error {
            SettingsError::Store(e) => ApiError::Store(e),
            SettingsError::Secret(e) => {
                tracing::error!(%e, "stored secret unreadable");
                ApiError::Internal("The stored webhook cannot be decrypted")
            }
        }
    }
}

async fn view(state: &AppState) -> ApiResult<NotificationSettingsView> {
    let webhook = state.notifications.discord_webhook().await?;
    Ok(NotificationSettingsView {
        discord_webhook_set: webhook.is_some(),
        discord_webhook_masked: webhook.map(|w| mask(&w.0)),
    })
}

/// Whether a Discord webhook is configured (masked).
#[utoipa::path(get, path = "/settings/notifications", tag = "alerts",
    responses((status = 200, body = NotificationSettingsView)))]
async fn get_notifications(
    State(state): State<AppState>,
) -> ApiResult<Json<NotificationSettingsView>> {
    Ok(Json(view(&state).await?))
}

/// Set or remove the Discord webhook; it is stored encrypted.
#[utoipa::path(put, path = "/settings/notifications", tag = "alerts",
    request_body = NotificationSettingsUpdate,
    responses((status = 200, body = NotificationSettingsView),
        (status = 422, body = ValidationProblem)))]
async fn put_notifications(
    State(state): State<AppState>,
    ApiJson(update): ApiJson<NotificationSettingsUpdate>,
) -> ApiResult<Json<NotificationSettingsView>> {
    let url = update.discord_webhook_url.as_deref().map(str::trim);
    if let Some(url) = url {
        let destinations = &state.notifications.destinations;
        if url.len() > 2048 || !destinations.allows(url) {
            let message = format!(
                "discord_webhook_url must be a Discord webhook URL (starting with one of: {})",
                destinations.describe()
            );
            return Err(ValidationErrors::single(
                &["body", "discord_webhook_url"],
                &message,
                "value_error.url",
            )
            .into());
        }
    }
    state.notifications.set_discord_webhook(url).await?;
    tracing::info!(set = url.is_some(), "Discord webhook updated");
    Ok(Json(view(&state).await?))
}

/// Send a test notification to the configured webhook.
#[utoipa::path(post, path = "/settings/notifications/test", tag = "alerts",
    responses((status = 200, body = TestResult)))]
async fn test_notification(State(state): State<AppState>) -> ApiResult<Json<TestResult>> {
    let Some(webhook) = state.notifications.discord_webhook().await? else {
        return Ok(Json(TestResult {
            success: false,
            message: "No Discord webhook is configured".into(),
        }));
    };
    let config = ChannelConfig::Discord(DiscordChannel { url: webhook.0 });
    let attempt = state
        .notifications
        .sender
        .send(&config, &Notice::Test)
        .await;
    Ok(Json(attempt.into()))
}

impl From<Attempt> for TestResult {
    fn from(attempt: Attempt) -> Self {
        let (success, message) = match attempt {
            Attempt::Delivered => (true, "Test notification sent".to_string()),
            Attempt::RetryAfter(wait) => (
                false,
                format!("Rate limited; try again in {:.1} s", wait.as_secs_f64()),
            ),
            Attempt::Failed(reason) => (false, format!("Not delivered: {reason}")),
        };
        TestResult { success, message }
    }
}

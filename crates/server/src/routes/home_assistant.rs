//! `/api/settings/home-assistant`: the broker Home Assistant listens to
//! (its URL stored sealed, shown with the password masked) and the
//! discovery prefix.

use axum::extract::State;
use axum::Json;
use plantops_core::ValidationErrors;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, ValidationProblem};
use crate::extract::ApiJson;
use crate::state::AppState;
use plantops_services::home_assistant::{check_prefix, masked, parse_link, Source};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_home_assistant, put_home_assistant))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HomeAssistantView {
    /// Whether PlantOps publishes to Home Assistant's broker.
    pub enabled: bool,
    /// `api` (set here) or `environment` (`PLANTOPS_HA_MQTT_URL`); `null`
    /// when off.
    pub source: Option<String>,
    /// The broker URL with its password shown as `***`.
    pub url: Option<String>,
    pub discovery_prefix: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct HomeAssistantUpdate {
    /// `mqtt://user:password@host:1883` or `mqtts://…` (the Mosquitto
    /// add-on: a Home Assistant user); `null` removes the setting (then
    /// `PLANTOPS_HA_MQTT_URL`, if set, applies).
    pub url: Option<String>,
    /// Home Assistant's discovery prefix; `homeassistant` when omitted.
    #[serde(default)]
    pub discovery_prefix: Option<String>,
}

async fn view(state: &AppState) -> ApiResult<HomeAssistantView> {
    let current = state.home_assistant.current().await?;
    Ok(HomeAssistantView {
        enabled: current.is_some(),
        source: current.as_ref().map(|c| {
            match c.source {
                Source::Api => "api",
                Source::Environment => "environment",
            }
            .to_string()
        }),
        url: current.as_ref().map(|c| masked(&c.url)),
        discovery_prefix: current
            .map(|c| c.prefix)
            .unwrap_or_else(|| plantops_services::home_assistant::DEFAULT_PREFIX.into()),
    })
}

/// Where Home Assistant's discovery goes (password masked).
#[utoipa::path(get, path = "/settings/home-assistant", tag = "integrations",
    responses((status = 200, body = HomeAssistantView)))]
async fn get_home_assistant(State(state): State<AppState>) -> ApiResult<Json<HomeAssistantView>> {
    Ok(Json(view(&state).await?))
}

/// Set or remove Home Assistant's broker; the URL is stored encrypted and
/// the bridge reconnects at once.
#[utoipa::path(put, path = "/settings/home-assistant", tag = "integrations",
    request_body = HomeAssistantUpdate,
    responses((status = 200, body = HomeAssistantView),
        (status = 422, body = ValidationProblem)))]
async fn put_home_assistant(
    State(state): State<AppState>,
    ApiJson(update): ApiJson<HomeAssistantUpdate>,
) -> ApiResult<Json<HomeAssistantView>> {
    let prefix = update.discovery_prefix.as_deref().map(str::trim);
    if let Some(prefix) = prefix {
        if let Err(message) = check_prefix(prefix) {
            let message = format!("discovery_prefix {message}");
            return Err(ValidationErrors::single(
                &["body", "discovery_prefix"],
                &message,
                "value_error",
            )
            .into());
        }
    }
    let url = update.url.as_deref().map(str::trim);
    if let Some(url) = url {
        let checked = parse_link(
            url,
            prefix.unwrap_or(plantops_services::home_assistant::DEFAULT_PREFIX),
            None,
        );
        if let Err(message) = checked.and_then(|_| {
            (url.len() <= 2048)
                .then_some(())
                .ok_or_else(|| "is too long".to_string())
        }) {
            let message = format!("url {message}");
            return Err(
                ValidationErrors::single(&["body", "url"], &message, "value_error.url").into(),
            );
        }
    }
    state.home_assistant.set(url, prefix).await?;
    tracing::info!(enabled = url.is_some(), "Home Assistant broker updated");
    Ok(Json(view(&state).await?))
}

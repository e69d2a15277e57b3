//! The advisor API: LLM settings, care plans, and the rule-based health
//! check (docs/api.md "Advisor").

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use plantops_advisor::plan::Author;
use plantops_advisor::Provider;
use plantops_core::care::{CarePlan, MetricTrend};
use plantops_core::plant::BoundSide;
use plantops_core::secret::mask;
use plantops_core::validation::Collector;
use plantops_core::{FieldError, Metric, PlantStatus};
use plantops_store::StoredCarePlan;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, Problem, ValidationProblem};
use crate::extract::{ApiJson, ApiQuery, PlantId, PLANT_NOT_FOUND};
use crate::state::AppState;
use plantops_services::care::advisor::{CarePlanError, LlmConfig, Reason};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_llm, put_llm))
        .routes(routes!(test_llm))
        .routes(routes!(analyze))
        .routes(routes!(care_plan))
        .routes(routes!(care_plans))
        .routes(routes!(health_check))
}

impl From<CarePlanError> for ApiError {
    fn from(error: CarePlanError) -> Self {
        match error {
            CarePlanError::PlantNotFound => ApiError::NotFound(PLANT_NOT_FOUND),
            CarePlanError::NotConfigured => ApiError::Unavailable(error.to_string()),
            CarePlanError::Advisor(error) => ApiError::BadGateway(error.to_string()),
            CarePlanError::Store(error) => ApiError::Store(error),
            CarePlanError::Secret(error) => {
                tracing::error!(%error, "stored LLM key unreadable");
                ApiError::Internal("The stored API key cannot be decrypted")
            }
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LlmSettingsView {
    pub provider: Provider,
    pub model: String,
    pub api_key_set: bool,
    /// `"..."` and the last four characters.
    pub api_key_masked: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
    /// The model each provider uses when none is given.
    pub default_models: DefaultModels,
}

/// Each provider's default model: the UI's placeholder, never a copy.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DefaultModels {
    pub anthropic: String,
    pub openai: String,
}

impl From<LlmConfig> for LlmSettingsView {
    fn from(config: LlmConfig) -> Self {
        Self {
            provider: config.provider,
            model: config.model,
            api_key_set: config.api_key.is_some(),
            api_key_masked: config.api_key.as_deref().map(mask),
            updated_at: config.updated_at,
            default_models: DefaultModels {
                anthropic: Provider::Anthropic.default_model().into(),
                openai: Provider::OpenAi.default_model().into(),
            },
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LlmSettingsUpdate {
    pub provider: Provider,
    /// Omitted: the stored key is kept.
    pub api_key: Option<String>,
    /// Omitted: the provider's default (or the stored model of the same provider).
    pub model: Option<String>,
}

impl LlmSettingsUpdate {
    /// Trimmed key and model, each checked.
    fn validated(&self) -> Result<(Option<&str>, Option<&str>), plantops_core::ValidationErrors> {
        let mut errors = Collector::default();
        let key = self.api_key.as_deref().map(str::trim);
        // Sent as an HTTP header: visible ASCII only (found by API fuzzing:
        // a control character made every later care plan fail with 502).
        if key.is_some_and(|k| {
            k.is_empty() || k.len() > 500 || !k.bytes().all(|b| b.is_ascii_graphic())
        }) {
            errors.push(FieldError::new(
                &["body", "api_key"],
                "api_key must be 1–500 visible ASCII characters (no spaces)",
                "value_error.api_key",
            ));
        }
        let model = self.model.as_deref().map(str::trim);
        if model.is_some_and(|m| m.is_empty() || m.len() > 100 || m.chars().any(char::is_control)) {
            errors.push(FieldError::new(
                &["body", "model"],
                "model must be 1–100 characters, none of them control characters",
                "value_error.model",
            ));
        }
        errors.finish().map(|()| (key, model))
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LlmTestResult {
    pub success: bool,
    pub message: String,
    pub latency_ms: Option<u64>,
}

/// The LLM provider, model and whether a key is stored (masked).
#[utoipa::path(get, path = "/settings/llm", tag = "advisor",
    responses((status = 200, body = LlmSettingsView)))]
async fn get_llm(State(state): State<AppState>) -> ApiResult<Json<LlmSettingsView>> {
    Ok(Json(state.advisor.settings().await?.into()))
}

/// Set the provider, model and API key; the key is stored encrypted.
#[utoipa::path(put, path = "/settings/llm", tag = "advisor",
    request_body = LlmSettingsUpdate,
    responses((status = 200, body = LlmSettingsView),
        (status = 422, body = ValidationProblem)))]
async fn put_llm(
    State(state): State<AppState>,
    ApiJson(update): ApiJson<LlmSettingsUpdate>,
) -> ApiResult<Json<LlmSettingsView>> {
    let (key, model) = update.validated()?;
    let config = state
        .advisor
        .put_settings(update.provider, key, model)
        .await?;
    tracing::info!(provider = config.provider.as_str(), model = %config.model, key_set = config.api_key.is_some(), "LLM settings updated");
    Ok(Json(config.into()))
}

/// Try a provider, model and key (or the stored key) with a tiny request.
/// Always 200; `success` tells, `message` carries the provider's reason.
#[utoipa::path(post, path = "/settings/llm/test", tag = "advisor",
    request_body = LlmSettingsUpdate,
    responses((status = 200, body = LlmTestResult),
        (status = 422, body = ValidationProblem)))]
async fn test_llm(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<LlmSettingsUpdate>,
) -> ApiResult<Json<LlmTestResult>> {
    let (key, model) = request.validated()?;
    let stored = state.advisor.settings().await?;
    let model = stored.model_for(request.provider, model);
    // A stored key goes only to the provider it was stored for.
    let stored_key = stored
        .api_key
        .filter(|_| stored.updated_at.is_some() && stored.provider == request.provider);
    let Some(api_key) = key.map(str::to_string).or(stored_key) else {
        return Ok(Json(LlmTestResult {
            success: false,
            message: format!(
                "No API key given and none stored for {}",
                request.provider.as_str()
            ),
            latency_ms: None,
        }));
    };
    let author = Author {
        provider: request.provider,
        model: &model,
        api_key: &api_key,
    };
    let result = match plantops_advisor::test_connection(state.advisor.client(), &author).await {
        Ok(latency) => LlmTestResult {
            success: true,
            message: format!("{} answered with model {model}", request.provider.as_str()),
            latency_ms: Some(latency.as_millis() as u64),
        },
        Err(error) => LlmTestResult {
            success: false,
            message: error.to_string(),
            latency_ms: None,
        },
    };
    Ok(Json(result))
}

/// docs/api.md's care-plan answer; `care_plan` is null until one is written.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CarePlanResponse {
    pub plant_id: uuid::Uuid,
    pub plant_name: String,
    pub species: Option<String>,
    pub care_plan: Option<CarePlan>,
    pub last_generated: Option<DateTime<Utc>>,
}

async fn plan_response(
    state: &AppState,
    id: uuid::Uuid,
    plan: Option<StoredCarePlan>,
) -> ApiResult<CarePlanResponse> {
    let plant = state
        .store
        .get_plant(id)
        .await?
        .ok_or(ApiError::NotFound(PLANT_NOT_FOUND))?;
    Ok(CarePlanResponse {
        plant_id: plant.id,
        plant_name: plant.name,
        species: plant.species,
        last_generated: plan.as_ref().map(|p| p.created_at),
        care_plan: plan.map(|p| p.plan),
    })
}

/// Write a new care plan now with the configured LLM.
#[utoipa::path(post, path = "/plants/{id}/analyze", tag = "advisor",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = CarePlanResponse),
        (status = 404, body = Problem),
        (status = 502, body = Problem, description = "The provider failed or answered invalid output; nothing stored"),
        (status = 503, body = Problem, description = "No LLM configured")))]
async fn analyze(
    State(state): State<AppState>,
    PlantId(id): PlantId,
) -> ApiResult<Json<CarePlanResponse>> {
    let plan = state.advisor.analyze(id, Reason::Request).await?;
    Ok(Json(plan_response(&state, id, Some(plan)).await?))
}

/// The plant's current care plan (null when none was written yet).
#[utoipa::path(get, path = "/plants/{id}/care-plan", tag = "advisor",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = CarePlanResponse), (status = 404, body = Problem)))]
async fn care_plan(
    State(state): State<AppState>,
    PlantId(id): PlantId,
) -> ApiResult<Json<CarePlanResponse>> {
    let latest = state.store.care_plans(id, 1).await?.into_iter().next();
    Ok(Json(plan_response(&state, id, latest).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct HistoryQuery {
    /// 1–100, default 20.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CarePlanHistory {
    pub plant_id: uuid::Uuid,
    /// Newest first.
    pub care_plans: Vec<StoredCarePlan>,
}

/// The plant's care plans, newest first.
#[utoipa::path(get, path = "/plants/{id}/care-plans", tag = "advisor",
    params(("id" = uuid::Uuid, Path), HistoryQuery),
    responses((status = 200, body = CarePlanHistory), (status = 404, body = Problem),
        (status = 422, body = ValidationProblem)))]
async fn care_plans(
    State(state): State<AppState>,
    PlantId(id): PlantId,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<CarePlanHistory>> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(plantops_core::ValidationErrors::single(
            &["query", "limit"],
            "limit must be between 1 and 100",
            "value_error.number.range",
        )
        .into());
    }
    if state.store.get_plant(id).await?.is_none() {
        return Err(ApiError::NotFound(PLANT_NOT_FOUND));
    }
    let care_plans = state.store.care_plans(id, limit as u32).await?;
    Ok(Json(CarePlanHistory {
        plant_id: id,
        care_plans,
    }))
}

/// How far a value is off: outside a bound, or close to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    Medium,
    Low,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Optimal,
    Warning,
    Critical,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthIssue {
    pub metric: Metric,
    pub severity: Severity,
    pub current_value: f64,
    pub threshold_violated: BoundSide,
    pub message: String,
}

/// Who recommends: the rules (always), or the configured model (an
/// addition when an LLM is set up and answers in time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecommendationSource {
    Rules,
    Model,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Recommendation {
    pub priority: Priority,
    pub action: String,
    pub source: RecommendationSource,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthCheck {
    pub plant_id: uuid::Uuid,
    pub plant_name: String,
    pub status: HealthStatus,
    pub issues: Vec<HealthIssue>,
    pub recommendations: Vec<Recommendation>,
    pub trends: Vec<MetricTrend>,
    pub checked_at: DateTime<Utc>,
    pub has_care_plan: bool,
    pub care_plan_age_hours: Option<f64>,
}

fn action_for(metric: Metric, side: BoundSide) -> &'static str {
    match (metric, side) {
        (Metric::SoilMoisture, BoundSide::Min) => "Water the plant",
        (Metric::SoilMoisture, BoundSide::Max) => {
            "Let the soil dry out and check that the pot drains"
        }
        (Metric::Temperature, BoundSide::Min) => "Move the plant somewhere warmer",
        (Metric::Temperature, BoundSide::Max) => "Move the plant out of heat and direct sun",
        (Metric::Humidity, BoundSide::Min) => "Raise the humidity (group plants, use a tray)",
        (Metric::Humidity, BoundSide::Max) => "Improve air circulation",
        (Metric::LightLevel, BoundSide::Min) => "Give the plant more light",
        (Metric::LightLevel, BoundSide::Max) => "Shade the plant from strong light",
    }
}

/// A rule-based check of the latest reading against the thresholds, with
/// 24-hour trends.
#[utoipa::path(post, path = "/plants/{id}/health-check", tag = "advisor",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = HealthCheck), (status = 404, body = Problem)))]
async fn health_check(
    State(state): State<AppState>,
    PlantId(id): PlantId,
) -> ApiResult<Json<HealthCheck>> {
    let plant = state
        .store
        .get_plant(id)
        .await?
        .ok_or(ApiError::NotFound(PLANT_NOT_FOUND))?;
    let now = plantops_core::now();
    let latest = state.store.latest_plant_readings(&[id]).await?.remove(&id);
    let day = state
        .store
        .plant_history(id, now - chrono::Duration::hours(24), 10_000)
        .await?;
    let findings = match (&plant.thresholds, &latest) {
        (Some(thresholds), Some(reading)) => thresholds.assess(&reading.values),
        _ => Vec::new(),
    };
    let mut issues = Vec::new();
    let mut recommendations = Vec::new();
    for finding in &findings {
        let critical = finding.status == PlantStatus::Critical;
        let side = finding.side.as_str();
        issues.push(HealthIssue {
            metric: finding.metric,
            severity: if critical {
                Severity::Critical
            } else {
                Severity::Warning
            },
            current_value: finding.value,
            threshold_violated: finding.side,
            message: format!(
                "{} is {} {} ({side} {} {})",
                finding.metric.as_str(),
                finding.value,
                finding.metric.unit(),
                finding.bound,
                finding.metric.unit()
            ),
        });
        recommendations.push(Recommendation {
            priority: if critical {
                Priority::High
            } else {
                Priority::Medium
            },
            action: action_for(finding.metric, finding.side).into(),
            source: RecommendationSource::Rules,
        });
    }
    if latest.is_none() {
        recommendations.push(Recommendation {
            priority: Priority::Medium,
            action: "Assign a sensor device: the plant has no readings yet".into(),
            source: RecommendationSource::Rules,
        });
    }
    // Where a metric is heading, unless it is already outside its bound.
    let trends = plantops_core::care::trends(&day);
    for advice in plantops_core::care::trend_advice(&day, &trends, plant.thresholds.as_ref()) {
        if findings
            .iter()
            .any(|f| f.metric == advice.metric && f.status == PlantStatus::Critical)
        {
            continue;
        }
        recommendations.push(Recommendation {
            priority: if advice.urgent {
                Priority::High
            } else {
                Priority::Medium
            },
            action: advice.action,
            source: RecommendationSource::Rules,
        });
    }
    let found: Vec<String> = issues
        .iter()
        .map(|issue| issue.message.clone())
        .chain(recommendations.iter().map(|r| r.action.clone()))
        .collect();
    if let Some(note) = state
        .advisor
        .health_note(&plant, latest.as_ref(), &trends, &found)
        .await
    {
        recommendations.push(Recommendation {
            priority: Priority::Medium,
            action: note,
            source: RecommendationSource::Model,
        });
    }
    let status = if findings.iter().any(|f| f.status == PlantStatus::Critical) {
        HealthStatus::Critical
    } else if findings.is_empty() {
        HealthStatus::Optimal
    } else {
        HealthStatus::Warning
    };
    let plan = state.store.care_plans(id, 1).await?.into_iter().next();
    Ok(Json(HealthCheck {
        plant_id: plant.id,
        plant_name: plant.name,
        status,
        issues,
        recommendations,
        trends,
        checked_at: now,
        has_care_plan: plan.is_some(),
        care_plan_age_hours: plan
            .map(|p| ((now - p.created_at).num_minutes() as f64 / 60.0 * 10.0).round() / 10.0),
    }))
}

//! The care advisor as a service: LLM settings (key sealed at rest), care
//! plans on request, and background refreshes — weekly, and when a plant
//! gets a new critical alert — with bounded concurrency and never two at
//! once for one plant.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use plantops_advisor::plan::Author;
use plantops_advisor::{AdvisorError, LlmClient, PlantContext, Provider};
use plantops_core::alert::AlertKind;
use plantops_core::care::MetricTrend;
use plantops_core::event::Event;
use plantops_core::secret::{SecretBox, SecretError};
use plantops_core::{Plant, Reading};
use plantops_store::{AlertFilter, DynStore, Page, StoreError, StoredCarePlan};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, Semaphore};
use uuid::Uuid;

use crate::keys::{LLM_API_KEY, LLM_SETTING};
/// The most a health check waits for the model's note (less when
/// PLANTOPS_LLM_TIMEOUT_SECS is shorter).
pub const HEALTH_NOTE_TIMEOUT: Duration = Duration::from_secs(15);
/// Background generations running at once (each is one provider request).
const BACKGROUND_CONCURRENCY: usize = 2;
/// A plan older than this is rewritten by the weekly refresh.
const WEEKLY: chrono::Duration = chrono::Duration::days(7);
/// A critical alert refreshes a plan at most this often per plant.
const ALERT_REFRESH_GAP: chrono::Duration = chrono::Duration::hours(1);

/// The stored form: provider and model in clear, the key sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredLlmSettings {
    provider: Provider,
    model: String,
    api_key_sealed: Option<String>,
    updated_at: DateTime<Utc>,
}

/// The LLM configuration in use (key opened).
#[derive(Clone)]
pub struct LlmConfig {
    pub provider: Provider,
    pub model: String,
    pub api_key: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("provider", &self.provider)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl LlmConfig {
    /// The model to use for `provider`: the one asked for, else the stored
    /// one when the provider stays the same, else the provider's default.
    pub fn model_for(&self, provider: Provider, requested: Option<&str>) -> String {
        match requested {
            Some(model) => model.to_string(),
            None if self.updated_at.is_some() && self.provider == provider => self.model.clone(),
            None => provider.default_model().to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CarePlanError {
    #[error("Plant not found")]
    PlantNotFound,
    #[error("LLM not configured: set a provider and API key in Settings (PUT /api/settings/llm)")]
    NotConfigured,
    #[error(transparent)]
    Advisor(#[from] AdvisorError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored API key cannot be decrypted: {0}")]
    Secret(#[from] SecretError),
}

/// Why a plan was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Request,
    Weekly,
    CriticalAlert,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Request => "request",
            Reason::Weekly => "weekly",
            Reason::CriticalAlert => "critical_alert",
        }
    }
}

pub struct CareAdvisor {
    store: DynStore,
    secrets: SecretBox,
    client: LlmClient,
    /// One lock per plant: a plan is never generated twice at once.
    plant_locks: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
    background: Semaphore,
}

impl CareAdvisor {
    pub fn new(store: DynStore, secrets: SecretBox, client: LlmClient) -> Self {
        Self {
            store,
            secrets,
            client,
            plant_locks: Mutex::default(),
            background: Semaphore::new(BACKGROUND_CONCURRENCY),
        }
    }

    pub fn client(&self) -> &LlmClient {
        &self.client
    }

    /// The configuration, with defaults when nothing is stored.
    pub async fn settings(&self) -> Result<LlmConfig, CarePlanError> {
        let Some(raw) = self.store.get_setting(LLM_SETTING).await? else {
            return Ok(LlmConfig {
                provider: Provider::Anthropic,
                model: Provider::Anthropic.default_model().into(),
                api_key: None,
                updated_at: None,
            });
        };
        let stored: StoredLlmSettings = serde_json::from_str(&raw)
            .map_err(|error| StoreError::Corrupt(format!("llm settings: {error}")))?;
        let api_key = stored
            .api_key_sealed
            .as_deref()
            .map(|sealed| self.secrets.open(LLM_API_KEY, sealed))
            .transpose()?;
        Ok(LlmConfig {
            provider: stored.provider,
            model: stored.model,
            api_key,
            updated_at: Some(stored.updated_at),
        })
    }

    /// Saves provider, model and key (sealed with a fresh nonce). A missing
    /// key keeps the stored one; a missing model takes the provider's default
    /// when the provider changes, else keeps the stored one.
    pub async fn put_settings(
        &self,
        provider: Provider,
        api_key: Option<&str>,
        model: Option<&str>,
    ) -> Result<LlmConfig, CarePlanError> {
        let current = self.settings().await?;
        let model = current.model_for(provider, model);
        let api_key = api_key.map(str::to_string).or(current.api_key);
        let stored = StoredLlmSettings {
            provider,
            model,
            api_key_sealed: api_key
                .as_deref()
                .map(|key| self.secrets.seal(LLM_API_KEY, key)),
            updated_at: plantops_core::now(),
        };
        let raw = serde_json::to_string(&stored)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        self.store.put_setting(LLM_SETTING, Some(&raw)).await?;
        self.settings().await
    }

    fn plant_lock(&self, plant_id: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.plant_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(plant_id).or_default().clone()
    }

    /// The model's short recommendation for a health check, when an LLM is
    /// configured. `None` (and a log line) whenever it cannot be had within
    /// [`HEALTH_NOTE_TIMEOUT`] or the LLM timeout, whichever is shorter: the
    /// health check never fails because the model did.
    pub async fn health_note(
        &self,
        plant: &Plant,
        latest: Option<&Reading>,
        trends: &[MetricTrend],
        findings: &[String],
    ) -> Option<String> {
        let config = match self.settings().await {
            Ok(config) => config,
            Err(error) => {
                tracing::warn!(plant_id = %plant.id, %error, "LLM settings unreadable; health check from the rules only");
                return None;
            }
        };
        let api_key = config.api_key?;
        let context = PlantContext {
            plant,
            latest,
            trends,
            alerts: &[],
            now: plantops_core::now(),
        };
        let author = Author {
            provider: config.provider,
            model: &config.model,
            api_key: &api_key,
        };
        let limit = HEALTH_NOTE_TIMEOUT.min(self.client.timeout());
        let note = plantops_advisor::health_note(&self.client, &author, &context, findings);
        match tokio::time::timeout(limit, note).await {
            Ok(Ok(note)) => Some(note),
            Ok(Err(error)) => {
                tracing::warn!(plant_id = %plant.id, %error, "no health-check note from the model; rules only");
                None
            }
            Err(_) => {
                tracing::warn!(plant_id = %plant.id, timeout_ms = limit.as_millis() as u64, "the model's health-check note took too long; rules only");
                None
            }
        }
    }

    /// Writes, stores and returns a new care plan for the plant.
    pub async fn analyze(
        &self,
        plant_id: Uuid,
        reason: Reason,
    ) -> Result<StoredCarePlan, CarePlanError> {
        let lock = self.plant_lock(plant_id);
        let _guard = lock.lock().await;
        self.generate_locked(plant_id, reason).await
    }

    async fn generate_locked(
        &self,
        plant_id: Uuid,
        reason: Reason,
    ) -> Result<StoredCarePlan, CarePlanError> {
        let plant = self
            .store
            .get_plant(plant_id)
            .await?
            .ok_or(CarePlanError::PlantNotFound)?;
        let config = self.settings().await?;
        let api_key = config.api_key.ok_or(CarePlanError::NotConfigured)?;
        let now = plantops_core::now();
        let latest = self.store.latest_plant_readings(&[plant_id]).await?;
        let day = self
            .store
            .plant_history(plant_id, now - chrono::Duration::hours(24), 10_000)
            .await?;
        let trends = plantops_core::care::trends(&day);
        let (alerts, _) = self
            .store
            .list_alerts(
                &AlertFilter {
                    plant_id: Some(plant_id),
                    kind: None,
                    since: Some(now - chrono::Duration::days(7)),
                },
                Page {
                    limit: 10,
                    offset: 0,
                },
            )
            .await?;
        let context = PlantContext {
            plant: &plant,
            latest: latest.get(&plant_id),
            trends: &trends,
            alerts: &alerts,
            now,
        };
        let author = Author {
            provider: config.provider,
            model: &config.model,
            api_key: &api_key,
        };
        let written = plantops_advisor::generate_care_plan(&self.client, &author, &context).await?;
        let stored = StoredCarePlan {
            id: Uuid::new_v4(),
            plant_id,
            created_at: written.plan.generated_at,
            plan: written.plan,
            provider: config.provider.as_str().into(),
            model: config.model,
            reason: reason.as_str().into(),
            input_tokens: written.usage.map(|u| u.input_tokens),
            output_tokens: written.usage.map(|u| u.output_tokens),
            duration_ms: Some(u64::try_from(written.duration.as_millis()).unwrap_or(u64::MAX)),
        };
        self.store.insert_care_plan(&stored).await?;
        tracing::info!(%plant_id, reason = reason.as_str(), provider = stored.provider,
            model = stored.model, input_tokens = stored.input_tokens, output_tokens = stored.output_tokens,
            duration_ms = stored.duration_ms, "care plan written");
        Ok(stored)
    }

    /// A background refresh: skipped when the plant's plan is being written
    /// already or when no LLM is configured.
    async fn refresh(self: Arc<Self>, plant_id: Uuid, reason: Reason) {
        let Ok(_permit) = self.background.acquire().await else {
            return;
        };
        let lock = self.plant_lock(plant_id);
        let Ok(_guard) = lock.try_lock() else {
            return;
        };
        match self.generate_locked(plant_id, reason).await {
            Ok(_) | Err(CarePlanError::NotConfigured | CarePlanError::PlantNotFound) => {}
            Err(error) => {
                tracing::warn!(%plant_id, reason = reason.as_str(), %error, "background care plan failed")
            }
        }
    }

    async fn configured(&self) -> bool {
        matches!(self.settings().await, Ok(config) if config.api_key.is_some())
    }

    /// Refreshes the plans of plants with a new threshold alert (the
    /// instance that raised the alert does), until the event channel closes.
    pub async fn run(self: Arc<Self>, mut events: broadcast::Receiver<Event>) {
        loop {
            match events.recv().await {
                Ok(Event::Alert(alert)) if alert.kind == AlertKind::Threshold => {
                    let Some(plant_id) = alert.plant_id else {
                        continue;
                    };
                    if !self.configured().await {
                        continue;
                    }
                    let recent = match self.store.care_plans(plant_id, 1).await {
                        Ok(plans) => plans.first().is_some_and(|p| {
                            plantops_core::now() - p.created_at < ALERT_REFRESH_GAP
                        }),
                        Err(_) => true,
                    };
                    if !recent {
                        tokio::spawn(self.clone().refresh(plant_id, Reason::CriticalAlert));
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Hourly, rewrites plans older than a week: a job for the leader alone,
    /// so several instances do not pay for one plan twice.
    pub async fn run_weekly(self: Arc<Self>) {
        let mut hourly = tokio::time::interval(Duration::from_secs(3600));
        hourly.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            hourly.tick().await;
            if !self.configured().await {
                continue;
            }
            let Ok(ages) = self.store.care_plan_ages().await else {
                continue;
            };
            let now = plantops_core::now();
            for (plant_id, written) in ages {
                if now - written >= WEEKLY {
                    tokio::spawn(self.clone().refresh(plant_id, Reason::Weekly));
                }
            }
        }
    }
}

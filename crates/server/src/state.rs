//! What every handler shares.

use std::sync::Arc;

use plantops_core::event::Event;
use plantops_mqtt::ingest::IngestStats;
use plantops_mqtt::Broker;
use plantops_services::start::BrokerEndpoint;
use plantops_store::DynStore;
use tokio::sync::broadcast;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub heartbeat_interval_secs: u64,
    pub broker_endpoint: BrokerEndpoint,
    /// PEM of the CA devices should trust, when the broker has TLS.
    pub broker_ca_pem: Option<String>,
    pub allowed_hosts: crate::http::AllowedHosts,
    /// When each known TLS certificate ends (`broker`, `ca`).
    pub certificates: Vec<(&'static str, chrono::DateTime<chrono::Utc>)>,
    /// The broker authentication endpoints' settings; `None`: they are off.
    pub broker_auth: Option<crate::routes::broker_auth::BrokerAuth>,
    /// Days raw readings are kept (0: all); older charts use the rollups.
    pub retention_days: u32,
}

#[derive(Clone)]
pub struct AppState {
    pub store: DynStore,
    pub broker: Arc<dyn Broker>,
    pub events: broadcast::Sender<Event>,
    /// Numbered, replayable copy of `events` for the SSE stream.
    pub live: crate::live::LiveHub,
    pub ingest: Arc<IngestStats>,
    pub notifications: Arc<plantops_services::alerts::settings::NotificationSettings>,
    /// Wakes this instance's notifier (new alerts, channels added or removed).
    pub notifier_wake: Arc<tokio::sync::Notify>,
    pub home_assistant: Arc<plantops_services::home_assistant::HomeAssistantSettings>,
    pub advisor: Arc<plantops_services::care::advisor::CareAdvisor>,
    pub journal: plantops_services::care::journal::Journal,
    pub care_tasks: plantops_services::care::tasks::Tasks,
    pub config: Arc<ApiConfig>,
    pub auth: Arc<crate::auth::Auth>,
    /// Background tasks that failed and were restarted.
    pub tasks: Arc<plantops_services::ops::supervise::TaskHealth>,
    /// One permit per open `/api/events` stream.
    pub event_streams: Arc<tokio::sync::Semaphore>,
    /// This instance's id and whether it leads.
    pub instance: Arc<plantops_services::ops::cluster::Instance>,
}

impl AppState {
    /// Tells live listeners; nobody listening is fine.
    pub fn publish(&self, event: Event) {
        let _ = self.events.send(event);
    }
}

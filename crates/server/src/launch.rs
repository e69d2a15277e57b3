//! Start-up of the HTTP server over the services: `plantops serve` parses
//! its settings into a [`ServerConfig`] and calls [`launch`]; tests call
//! [`Server::start`] in-process.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use plantops_services::start::{BrokerConfig, Services, ServicesConfig};

use crate::{ApiConfig, AppState};

/// Everything start-up needs, already validated.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub services: ServicesConfig,
    /// Open `/api/events` streams allowed at once (each holds a buffer).
    pub max_event_streams: usize,
    pub auth: crate::auth::AuthSettings,
    pub http: crate::http::HttpLimits,
    /// Shared secret of `/api/mqtt/auth` and `/api/mqtt/acl`; `None` turns
    /// them off.
    pub mqtt_auth_secret: Option<String>,
}

/// A started PlantOps: the services and the HTTP state over them. Dropping
/// it stops the background work.
pub struct Server {
    state: AppState,
    services: Services,
    http: crate::http::HttpLimits,
}

impl Server {
    /// Starts the services, then what HTTP adds: live events shared between
    /// instances, sign-in and the first admin's setup token.
    pub async fn start(config: ServerConfig) -> anyhow::Result<Self> {
        // The recorder first: values recorded before it exists are lost.
        crate::observe::prometheus();
        let mut services = Services::start(&config.services).await?;
        let store = services.store.clone();
        let live = match store
            .live_feed()
            .await
            .context("cannot listen for other instances' live events")?
        {
            Some(feed) => crate::live::LiveHub::start_shared(&services.events, store.clone(), feed),
            None => crate::live::LiveHub::start(&services.events),
        };
        let auth = Arc::new(crate::auth::Auth::new(config.auth.clone()));
        if !config.auth.required {
            tracing::warn!("PLANTOPS_AUTH=off: anyone who can reach this server can read and change everything");
        } else if config.auth.enrollment_open {
            tracing::warn!(
                "PLANTOPS_ENROLLMENT=open: any device on the network can register without a key"
            );
        }
        let data_dir = &config.services.data_dir;
        if config.auth.required {
            if store.count_users().await.context("cannot count accounts")? == 0 {
                std::fs::create_dir_all(data_dir)
                    .and_then(|()| auth.open_setup(data_dir))
                    .with_context(|| {
                        format!("cannot write the setup token into {}", data_dir.display())
                    })?;
            } else {
                // A token left by an earlier start is dead: remove it.
                let stale = data_dir.join(crate::auth::SETUP_TOKEN_FILE);
                let _ = std::fs::remove_file(stale);
            }
            let (store, settings) = (store.clone(), config.auth.clone());
            services.supervise("session sweeper", move || {
                crate::auth::sweep_sessions(store.clone(), settings.clone())
            });
        }
        let broker_auth = config.mqtt_auth_secret.clone().map(|secret| {
            let backend = match &config.services.broker {
                BrokerConfig::Mosquitto { link, .. } => link
                    .password
                    .clone()
                    .filter(|p| !p.is_empty() && !link.username.is_empty())
                    .map(|password| (link.username.clone(), password)),
                BrokerConfig::Builtin(_) => None,
            };
            crate::routes::broker_auth::BrokerAuth { secret, backend }
        });
        let state = AppState {
            tasks: services.task_health.clone(),
            auth,
            event_streams: Arc::new(tokio::sync::Semaphore::new(config.max_event_streams)),
            live,
            instance: services.instance.clone(),
            store,
            broker: services.broker.clone(),
            events: services.events.clone(),
            ingest: services.ingest.clone(),
            notifications: services.notifications.clone(),
            notifier_wake: services.notifier_wake.clone(),
            home_assistant: services.home_assistant.clone(),
            advisor: services.advisor.clone(),
            journal: services.journal.clone(),
            care_tasks: services.care_tasks.clone(),
            config: Arc::new(ApiConfig {
                heartbeat_interval_secs: config.services.heartbeat_interval_secs,
                broker_endpoint: services.broker_endpoint.clone(),
                broker_ca_pem: services.broker_ca_pem.clone(),
                allowed_hosts: crate::http::AllowedHosts::new(&config.http.allowed_hosts),
                certificates: services.certificates.clone(),
                broker_auth,
                retention_days: config.services.retention_days,
            }),
        };
        Ok(Self {
            state,
            services,
            http: config.http,
        })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The whole HTTP application over this server's state.
    pub fn router(&self) -> axum::Router {
        crate::app(self.state.clone())
    }

    /// Serves HTTP on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let live = self.state.live.clone();
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "HTTP server listening");
            if let Some(link) = self.state.auth.setup_link(addr) {
                // The one secret that is logged on purpose: it only creates
                // the first admin and dies when one exists.
                tracing::warn!(
                    setup_link = %link,
                    "no account yet: open the setup link to create the first admin (the token is also in the data directory, file setup-token)"
                );
            }
        }
        let departure = self.services.departure();
        let shutdown = async move {
            shutdown.await;
            // Open event streams never end by themselves.
            live.close();
            departure.await;
        };
        crate::http::serve(listener, self.router(), &self.http, shutdown).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Starts PlantOps and serves HTTP on `listener` until `shutdown` completes.
pub async fn launch(
    config: ServerConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Server::start(config).await?.serve(listener, shutdown).await
}

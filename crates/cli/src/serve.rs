//! `plantops serve` and `plantops migrate`: wiring of store, broker,
//! ingestion, workers and the HTTP server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use plantops_core::secret::{generate_key, SecretBox};
use plantops_mqtt::builtin::{BuiltinBroker, BuiltinConfig, Listener, TlsListener};
use plantops_mqtt::ingest::{BatchConfig, Ingest};
use plantops_mqtt::mosquitto::{MosquittoBroker, MosquittoConfig};
use plantops_mqtt::presence::PresenceTracker;
use plantops_mqtt::{certs, Broker};
use plantops_server::advisor::CareAdvisor;
use plantops_server::alerts::evaluator::Evaluator;
use plantops_server::alerts::notifier::{Notifier, WebhookUrl};
use plantops_server::alerts::settings::{check_key, NotificationSettings};
use plantops_server::{ApiConfig, AppState, BrokerEndpoint};
use plantops_store::DynStore;
use tokio::sync::broadcast;

use crate::config::{DatabaseSettings, ServeSettings};

/// Opens the store and applies migrations, retrying while the database is
/// still starting (a compose stack starts everything at once).
async fn open_store(settings: &DatabaseSettings) -> anyhow::Result<DynStore> {
    if settings.database_url.is_none() {
        std::fs::create_dir_all(&settings.data_dir).with_context(|| {
            format!(
                "cannot create PLANTOPS_DATA_DIR {}",
                settings.data_dir.display()
            )
        })?;
    }
    let url = settings.url();
    let mut delay = Duration::from_millis(250);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = async {
            let store = plantops_store::connect(&url).await?;
            store.migrate().await?;
            Ok::<_, plantops_store::StoreError>(store)
        };
        match attempt.await {
            Ok(store) => {
                tracing::info!(backend = store.backend().name(), "database ready");
                return Ok(store);
            }
            Err(error) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "database not ready");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(error) => return Err(error).context("database unavailable (DATABASE_URL)"),
        }
    }
}

/// The key sealing stored secrets: ENCRYPTION_KEY, or with SQLite a key
/// generated once into the data directory (mode 0600). A key that does not
/// open this database's secrets stops start-up.
async fn secret_box(settings: &ServeSettings, store: &DynStore) -> anyhow::Result<SecretBox> {
    let key = match &settings.encryption_key {
        Some(key) => key.clone(),
        None if store.backend() == plantops_store::Backend::Postgres => anyhow::bail!(
            "ENCRYPTION_KEY is required with PostgreSQL (generate one with: openssl rand -hex 32)"
        ),
        None => {
            let path = settings.database.data_dir.join("encryption.key");
            if !path.exists() {
                crate::files::write_private(&path, generate_key().as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                tracing::info!(path = %path.display(), "generated the key for stored secrets; back it up with the database");
            }
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?
        }
    };
    let secrets = SecretBox::from_hex(&key).context("ENCRYPTION_KEY")?;
    check_key(store, &secrets).await.context(
        "ENCRYPTION_KEY does not match the key this database's secrets were sealed with",
    )?;
    Ok(secrets)
}

pub async fn migrate(settings: &DatabaseSettings) -> anyhow::Result<()> {
    open_store(settings).await?;
    tracing::info!("migrations applied");
    Ok(())
}

struct BrokerSetup {
    broker: Arc<dyn Broker>,
    endpoint: BrokerEndpoint,
    ca_pem: Option<String>,
}

async fn start_builtin(
    settings: &ServeSettings,
    store: DynStore,
    ingest: Ingest,
) -> anyhow::Result<BrokerSetup> {
    let tls = match settings.mqtts_addr.0 {
        None => None,
        Some(addr) => {
            let (cert, key, ca) = match (&settings.tls_cert, &settings.tls_key) {
                (Some(cert), Some(key)) => (cert.clone(), key.clone(), None),
                _ => {
                    let dir = settings.database.data_dir.join("tls");
                    let files = certs::ensure(&dir, &certs::default_sans(&settings.tls_sans))
                        .context("cannot prepare the broker's TLS certificate")?;
                    (files.cert, files.key, Some(files.ca_cert))
                }
            };
            Some((
                TlsListener {
                    listener: Listener {
                        addr,
                        setting: "PLANTOPS_MQTTS_ADDR",
                    },
                    cert,
                    key,
                },
                ca,
            ))
        }
    };
    let ca_pem = match tls.as_ref().and_then(|(_, ca)| ca.as_ref()) {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        ),
        None => None,
    };
    let config = BuiltinConfig {
        plain: settings.mqtt_addr.0.map(|addr| Listener {
            addr,
            setting: "PLANTOPS_MQTT_ADDR",
        }),
        tls: tls.map(|(listener, _)| listener),
    };
    let broker = BuiltinBroker::start(config, store, ingest).await?;
    let endpoint = BrokerEndpoint {
        public_host: settings.mqtt_public_host.clone(),
        port: broker.plain_addr().map(|a| a.port()),
        tls_port: broker.tls_addr().map(|a| a.port()),
    };
    Ok(BrokerSetup {
        broker,
        endpoint,
        ca_pem,
    })
}

async fn start_mosquitto(
    settings: &ServeSettings,
    host: &str,
    store: DynStore,
    ingest: Ingest,
) -> anyhow::Result<BrokerSetup> {
    let external = &settings.external;
    let config = MosquittoConfig {
        host: host.to_string(),
        port: if external.mqtt_use_tls {
            external.mqtt_tls_port
        } else {
            external.mqtt_port
        },
        use_tls: external.mqtt_use_tls,
        ca_cert: external.mqtt_ca_cert.clone(),
        username: external.mqtt_backend_username.clone(),
        password: external.mqtt_backend_password.clone(),
        dynsec_username: external
            .mqtt_dynsec_username
            .clone()
            .unwrap_or_else(|| external.mqtt_backend_username.clone()),
        dynsec_password: external
            .mqtt_dynsec_password
            .clone()
            .or_else(|| external.mqtt_backend_password.clone()),
        client_id: "plantops-backend".into(),
    };
    let ca_pem = match &external.mqtt_ca_cert {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read MQTT_CA_CERT {}", path.display()))?,
        ),
        None => None,
    };
    let broker = MosquittoBroker::start(config.clone(), ingest).await?;
    // Provisioning waits for the broker; the server starts meanwhile and
    // reports the link in /api/ready.
    let provisioner = broker.clone();
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(500);
        loop {
            let attempt = async {
                provisioner.ensure_backend_access(&config).await?;
                let known = device_usernames(&store)
                    .await
                    .map_err(|e| plantops_mqtt::BrokerError::Unavailable(e.to_string()))?;
                provisioner.reconcile(&known).await
            };
            match attempt.await {
                Ok(()) => {
                    provisioner.mark_provisioned();
                    tracing::info!("Mosquitto accounts reconciled with the store");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "Mosquitto provisioning not possible yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    });
    let endpoint = BrokerEndpoint {
        // MQTT_HOST is how the backend reaches the broker (often a compose
        // service name); devices get the public host or the HTTP host.
        public_host: settings.mqtt_public_host.clone(),
        port: (!external.mqtt_use_tls).then_some(external.mqtt_port),
        tls_port: Some(external.mqtt_tls_port),
    };
    Ok(BrokerSetup {
        broker,
        endpoint,
        ca_pem,
    })
}

async fn device_usernames(
    store: &DynStore,
) -> plantops_store::Result<std::collections::HashSet<String>> {
    let devices = store.all_devices(None).await?;
    Ok(devices.into_iter().map(|d| d.mqtt_username).collect())
}

pub async fn run(settings: ServeSettings) -> anyhow::Result<()> {
    settings.check_production().map_err(anyhow::Error::msg)?;
    let store = open_store(&settings.database).await?;
    let heartbeat = Duration::from_secs(settings.heartbeat_interval_secs);
    let (events, _) = broadcast::channel(4096);
    // Subscribed before anything can publish, so no reading goes unjudged.
    let outbox = Arc::new(tokio::sync::Notify::new());
    let evaluator = Evaluator::new(store.clone(), events.clone(), outbox.clone());
    let evaluator = tokio::spawn(evaluator.run(events.subscribe()));
    let secrets = secret_box(&settings, &store).await?;
    let llm = plantops_advisor::LlmClient::new(plantops_advisor::Endpoints {
        anthropic_base_url: settings.anthropic_base_url.clone(),
        openai_base_url: settings.openai_base_url.clone(),
        timeout: Duration::from_secs(settings.llm_timeout_secs),
        ..Default::default()
    })
    .context("cannot set up the LLM client")?;
    let advisor = Arc::new(CareAdvisor::new(store.clone(), secrets.clone(), llm));
    let care_refresh = tokio::spawn(advisor.clone().run(events.subscribe()));
    let notifications = Arc::new(NotificationSettings::new(
        store.clone(),
        secrets,
        settings.discord_webhook_url.clone().map(WebhookUrl),
    ));
    let notifier = Notifier::new(store.clone(), notifications.clone(), outbox);
    let notifier = tokio::spawn(notifier.run());
    let presence = Arc::new(
        PresenceTracker::load(heartbeat, &store)
            .await
            .context("cannot load device presence")?,
    );
    let (ingest, _batcher) = Ingest::start(
        store.clone(),
        events.clone(),
        presence.clone(),
        BatchConfig::default(),
    );

    let setup = if let Some(host) = &settings.external.mqtt_host {
        start_mosquitto(&settings, host, store.clone(), ingest.clone()).await?
    } else {
        start_builtin(&settings, store.clone(), ingest.clone()).await?
    };

    let offline_tick = (heartbeat / 4).clamp(Duration::from_millis(200), Duration::from_secs(15));
    let detector = tokio::spawn(presence.clone().run_offline_detector(
        store.clone(),
        events.clone(),
        offline_tick,
    ));

    let housekeeping = (settings.retention_days > 0)
        .then(|| tokio::spawn(prune_readings(store.clone(), settings.retention_days)));

    let live = plantops_server::live::LiveHub::start(&events);
    let state = AppState {
        store,
        broker: setup.broker,
        live: live.clone(),
        events,
        ingest: ingest.stats(),
        notifications,
        advisor,
        config: Arc::new(ApiConfig {
            heartbeat_interval_secs: settings.heartbeat_interval_secs,
            broker_endpoint: setup.endpoint,
            broker_ca_pem: setup.ca_pem,
        }),
    };
    let listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (PLANTOPS_HTTP_ADDR)",
                settings.http_addr
            )
        })?;
    tracing::info!(addr = %settings.http_addr, "HTTP server listening");
    // `into_make_service`: serving a bare `Router` deep-clones every route
    // for each new connection (axum 0.8), which was most of the cost of a
    // request arriving on a fresh connection, as nginx sends them.
    axum::serve(listener, plantops_server::app(state).into_make_service())
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            // Open event streams never end by themselves.
            live.close();
        })
        .await
        .context("HTTP server failed")?;
    detector.abort();
    evaluator.abort();
    notifier.abort();
    care_refresh.abort();
    if let Some(task) = housekeeping {
        task.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Applies PLANTOPS_RETENTION_DAYS once an hour.
async fn prune_readings(store: DynStore, days: u32) {
    let mut hourly = tokio::time::interval(Duration::from_secs(3600));
    loop {
        hourly.tick().await;
        let before = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
        match store.prune_readings(before).await {
            Ok(removed) => tracing::info!(removed, %before, "old readings pruned"),
            Err(error) => tracing::error!(%error, "pruning old readings failed"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

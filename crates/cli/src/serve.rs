//! `plantops serve` and `plantops migrate`: settings into the server
//! crate's [`ServerConfig`] (the services' part in [`ServicesConfig`]);
//! start-up itself is `plantops_server::launch`.

use std::num::NonZeroU32;
use std::time::Duration;

use anyhow::Context;
use plantops_mqtt::mosquitto::MosquittoConfig;
use plantops_server::launch::ServerConfig;
use plantops_services::alerts::send::SendSettings;
use plantops_services::start::{BrokerConfig, BuiltinBrokerConfig, ServicesConfig};

use crate::config::{DatabaseSettings, ServeSettings};

fn server_config(settings: &ServeSettings) -> anyhow::Result<ServerConfig> {
    let external = &settings.external;
    let broker = match &external.mqtt_host {
        Some(host) => BrokerConfig::Mosquitto {
            link: MosquittoConfig {
                host: host.clone(),
                port: if external.mqtt_use_tls {
                    external.mqtt_tls_port
                } else {
                    external.mqtt_port
                },
                use_tls: external.mqtt_use_tls,
                ca_cert: external.mqtt_ca_cert.clone(),
                username: external.mqtt_backend_username.clone(),
                password: external.mqtt_backend_password.clone(),
                dynsec_username: external.mqtt_dynsec_username.clone().unwrap_or_default(),
                dynsec_password: external.mqtt_dynsec_password.clone(),
            },
            plain_port: external.mqtt_port,
            tls_port: external.mqtt_tls_port,
        },
        None => BrokerConfig::Builtin(BuiltinBrokerConfig {
            plain: settings.mqtt_addr.0,
            tls: settings.mqtts_addr.0,
            certificate: settings.tls_cert.clone().zip(settings.tls_key.clone()),
            tls_sans: settings.tls_sans.clone(),
            limits: plantops_mqtt::builtin::BuiltinLimits {
                max_connections: settings.mqtt_max_connections,
                max_keep_alive_secs: settings.mqtt_max_keepalive_secs,
                max_inflight: settings.mqtt_max_inflight,
                max_pending_logins: settings.mqtt_max_pending_logins,
                max_pending_logins_per_address: settings.mqtt_max_pending_logins_per_address,
                partial_packet_deadline: plantops_mqtt::builtin::PARTIAL_PACKET_DEADLINE,
            },
        }),
    };
    Ok(ServerConfig {
        services: ServicesConfig {
            data_dir: settings.database.data_dir.clone(),
            database_url: settings.database.url(),
            encryption_key: settings.encryption_key.clone(),
            broker,
            mqtt_public_host: settings.mqtt_public_host.clone(),
            heartbeat_interval_secs: settings.heartbeat_interval_secs,
            instance_id: settings.instance_id.clone(),
            instance_timeout: Duration::from_secs(settings.instance_timeout_secs),
            device_rate: plantops_mqtt::ingest::DeviceRateLimit {
                per_second: NonZeroU32::new(settings.device_messages_per_sec)
                    .unwrap_or(NonZeroU32::MIN),
                burst: NonZeroU32::new(settings.device_message_burst).unwrap_or(NonZeroU32::MIN),
            },
            retention_days: settings.retention_days,
            rollup_retention_days: settings.rollup_retention_days,
            low_battery_percent: (settings.low_battery_percent > 0)
                .then_some(f64::from(settings.low_battery_percent)),
            discord_webhook_url: settings.discord_webhook_url.clone(),
            discord_webhook_prefixes: settings.discord_webhook_prefixes.clone(),
            notification_services: SendSettings::new(
                &settings.telegram_api_url,
                settings.smtp_ca.as_deref(),
            )?,
            llm: plantops_advisor::Endpoints {
                anthropic_base_url: settings.anthropic_base_url.clone(),
                openai_base_url: settings.openai_base_url.clone(),
                timeout: Duration::from_secs(settings.llm_timeout_secs),
                ..Default::default()
            },
            backups: settings.backups.plan(&settings.database.data_dir),
            watering_detection: plantops_services::care::journal::Detection {
                rise: f64::from(settings.watering_rise),
            },
            home_assistant: plantops_services::start::HomeAssistantConfig {
                url: settings.home_assistant.ha_mqtt_url.0.clone(),
                prefix: settings.home_assistant.ha_discovery_prefix.clone(),
                ca: settings.home_assistant.ha_mqtt_ca.clone(),
            },
        },
        max_event_streams: settings.max_event_streams,
        mqtt_auth_secret: settings.external.mqtt_auth_secret.clone(),
        http: plantops_server::http::HttpLimits {
            header_timeout: Duration::from_secs(settings.http_header_timeout_secs),
            max_connections: settings.http_max_connections,
            max_concurrent_requests: settings.http_max_concurrent_requests,
            allowed_hosts: settings
                .allowed_hosts
                .iter()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect(),
        },
        auth: settings.access.auth_settings(),
    })
}

pub async fn migrate(settings: &DatabaseSettings) -> anyhow::Result<()> {
    open_database(settings).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// The configured database, migrated (its directory created for SQLite).
pub async fn open_database(
    settings: &DatabaseSettings,
) -> anyhow::Result<plantops_store::DynStore> {
    if settings.database_url.is_none() {
        std::fs::create_dir_all(&settings.data_dir).with_context(|| {
            format!(
                "cannot create PLANTOPS_DATA_DIR {}",
                settings.data_dir.display()
            )
        })?;
    }
    plantops_services::start::open_store(&settings.url()).await
}

pub async fn run(settings: ServeSettings) -> anyhow::Result<()> {
    tracing::info!(version = crate::VERSION, "starting PlantOps");
    settings.check_production().map_err(anyhow::Error::msg)?;
    settings.external.check().map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (PLANTOPS_HTTP_ADDR)",
                settings.http_addr
            )
        })?;
    plantops_server::launch::launch(server_config(&settings)?, listener, shutdown_signal()).await
}

pub(crate) async fn shutdown_signal() {
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

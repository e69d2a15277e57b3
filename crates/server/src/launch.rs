//! Start-up: the store, the broker (built-in or a link to Mosquitto),
//! ingestion, the background workers and the HTTP server, wired once here.
//! `plantops serve` parses its settings into a [`ServerConfig`] and calls
//! [`launch`]; tests call [`Server::start`] in-process.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use plantops_core::backoff::Backoff;
use plantops_core::secret::{generate_key, SecretBox};
use plantops_mqtt::builtin::{BuiltinBroker, BuiltinConfig, Listener, TlsListener};
use plantops_mqtt::ingest::{BatchConfig, Ingest};
use plantops_mqtt::mosquitto::{MosquittoBroker, MosquittoConfig};
use plantops_mqtt::presence::OfflineCheck;
use plantops_mqtt::{certs, Broker};
use plantops_store::{Backend, DynStore};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::advisor::CareAdvisor;
use crate::alerts::evaluator::Evaluator;
use crate::alerts::notifier::Notifier;
use crate::alerts::settings::{NotificationSettings, WebhookDestinations, WebhookUrl};
use crate::cluster::LeaderJob;
use crate::secrets::{check_key, reseal, Reseal};
use crate::supervise::{supervise, TaskHealth};
use crate::{ApiConfig, AppState, BrokerEndpoint};

/// A receiver subscribed at start-up, so the first run of a task misses no
/// event; a restarted run subscribes afresh (what passed meanwhile is gone).
struct FirstReceiver(std::sync::Mutex<Option<broadcast::Receiver<plantops_core::event::Event>>>);

fn subscribed_now(events: &broadcast::Sender<plantops_core::event::Event>) -> FirstReceiver {
    FirstReceiver(std::sync::Mutex::new(Some(events.subscribe())))
}

impl FirstReceiver {
    fn receiver(
        &self,
        events: &broadcast::Sender<plantops_core::event::Event>,
    ) -> broadcast::Receiver<plantops_core::event::Event> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(|| events.subscribe())
    }
}

/// Everything start-up needs, already validated.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Generated TLS material and keys (and the SQLite file by default).
    pub data_dir: PathBuf,
    /// `postgres://…` or `sqlite://…`.
    pub database_url: String,
    /// 64 hex characters; with SQLite, generated into the data directory
    /// when unset.
    pub encryption_key: Option<String>,
    pub broker: BrokerConfig,
    /// Broker host handed to devices; `None` = the host they used for HTTP.
    pub mqtt_public_host: Option<String>,
    pub heartbeat_interval_secs: u64,
    /// Open `/api/events` streams allowed at once (each holds a buffer).
    pub max_event_streams: usize,
    /// Days of readings to keep; 0 keeps everything.
    pub retention_days: u32,
    /// Days of hourly rollups to keep; 0 keeps them forever.
    pub rollup_retention_days: u32,
    /// The operator's webhook; one set through the API takes precedence.
    pub discord_webhook_url: Option<String>,
    /// Where a webhook set through the API may point.
    pub discord_webhook_prefixes: Vec<String>,
    /// Telegram's API and the extra CA for SMTP servers.
    pub notification_services: crate::alerts::send::SendSettings,
    pub llm: plantops_advisor::Endpoints,
    pub auth: crate::auth::AuthSettings,
    pub http: crate::http::HttpLimits,
    /// Messages one device may send; more are dropped.
    pub device_rate: plantops_mqtt::ingest::DeviceRateLimit,
    /// A battery below this percentage is an alert; `None`: never.
    pub low_battery_percent: Option<f64>,
    /// This instance's id among several (`PLANTOPS_INSTANCE_ID`); `None`:
    /// kept in the data directory, or the host name.
    pub instance_id: Option<String>,
    /// How long an instance may go without touching the database before
    /// the leader takes over its broker session.
    pub instance_timeout: Duration,
    /// Shared secret of `/api/mqtt/auth` and `/api/mqtt/acl`; `None` turns
    /// them off.
    pub mqtt_auth_secret: Option<String>,
    /// Scheduled backups (`PLANTOPS_BACKUP_SCHEDULE`), taken by the leader.
    pub backups: Option<crate::backups::BackupPlan>,
    pub home_assistant: HomeAssistantConfig,
}

/// Home Assistant's broker from the environment; the API's setting, when
/// there is one, takes precedence.
#[derive(Debug, Clone)]
pub struct HomeAssistantConfig {
    /// `PLANTOPS_HA_MQTT_URL` (with a password: not logged).
    pub url: Option<String>,
    /// `PLANTOPS_HA_DISCOVERY_PREFIX`.
    pub prefix: String,
    /// `PLANTOPS_HA_MQTT_CA`: a CA to trust for `mqtts://`.
    pub ca: Option<PathBuf>,
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        Self {
            url: None,
            prefix: crate::home_assistant::DEFAULT_PREFIX.into(),
            ca: None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum BrokerConfig {
    Builtin(BuiltinBrokerConfig),
    Mosquitto {
        link: MosquittoConfig,
        /// The ports devices use, handed out at registration.
        plain_port: u16,
        tls_port: u16,
    },
}

#[derive(Debug, Clone)]
pub struct BuiltinBrokerConfig {
    /// Plain MQTT listener; `None` turns it off.
    pub plain: Option<SocketAddr>,
    /// TLS listener; `None` turns it off.
    pub tls: Option<SocketAddr>,
    /// The server certificate and key (PEM); generated from a CA kept in
    /// the data directory when `None`.
    pub certificate: Option<(PathBuf, PathBuf)>,
    /// Names a generated certificate covers besides the local ones.
    pub tls_sans: Vec<String>,
    pub limits: plantops_mqtt::builtin::BuiltinLimits,
}

/// Opens the store and applies migrations, retrying while the database is
/// still starting (a compose stack starts everything at once).
pub async fn open_store(url: &str) -> anyhow::Result<DynStore> {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = async {
            let store = plantops_store::connect(url).await?;
            store.migrate().await?;
            Ok::<_, plantops_store::StoreError>(store)
        };
        match attempt.await {
            Ok(store) => {
                tracing::info!(backend = store.backend().as_str(), "database ready");
                return Ok(store);
            }
            // Waiting cannot fix a database newer than this binary.
            Err(error @ plantops_store::StoreError::NewerSchema { .. }) => return Err(error.into()),
            Err(error) => {
                let delay = backoff.next_delay();
                if tokio::time::Instant::now() + delay >= deadline {
                    return Err(error).context("database unavailable (DATABASE_URL)");
                }
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "database not ready");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Files only their owner may read (keys, credentials, the setup token).
use plantops_mqtt::certs::write_private;

/// Where PlantOps keeps a generated key for stored secrets (SQLite).
pub const KEY_FILE: &str = "encryption.key";
/// A new key written by `plantops rotate-key` before it re-seals; it
/// replaces [`KEY_FILE`] once the database holds secrets sealed with it.
pub const NEXT_KEY_FILE: &str = "encryption.key.next";

/// The key sealing stored secrets: ENCRYPTION_KEY, or with SQLite a key
/// generated once into the data directory (mode 0600).
pub fn installation_key(
    configured: Option<&str>,
    data_dir: &std::path::Path,
    backend: Backend,
) -> anyhow::Result<SecretBox> {
    let key = match configured {
        Some(key) => key.to_string(),
        None if backend == Backend::Postgres => anyhow::bail!(
            "ENCRYPTION_KEY is required with PostgreSQL (generate one with: openssl rand -hex 32)"
        ),
        None => {
            let path = data_dir.join(KEY_FILE);
            if !path.exists() {
                write_private(&path, generate_key().as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                tracing::info!(path = %path.display(), "generated the key for stored secrets; back it up with the database");
            }
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?
        }
    };
    SecretBox::from_hex(&key).context("ENCRYPTION_KEY")
}

/// The installation's key, checked against the database: a key that does
/// not open its secrets stops start-up. A key rotation interrupted after
/// its commit is completed here; values sealed before purpose binding are
/// re-sealed.
async fn secret_box(config: &ServerConfig, store: &DynStore) -> anyhow::Result<SecretBox> {
    let secrets = installation_key(
        config.encryption_key.as_deref(),
        &config.data_dir,
        store.backend(),
    )?;
    let secrets = match check_key(store.as_ref(), &secrets).await {
        Ok(()) => secrets,
        Err(error) => match finish_rotation(config, store).await? {
            Some(rotated) => rotated,
            None => return Err(error).context(
                "ENCRYPTION_KEY does not match the key this database's secrets were sealed with",
            ),
        },
    };
    let resealed = reseal(store.as_ref(), &secrets, &secrets, Reseal::Unbound)
        .await
        .context("cannot re-seal stored secrets")?;
    if resealed > 0 {
        tracing::info!(resealed, "stored secrets bound to their purpose");
    }
    Ok(secrets)
}

/// The key of a rotation interrupted after its commit (SQLite's key file
/// only): the new key, if it opens the database, now made the key file.
async fn finish_rotation(
    config: &ServerConfig,
    store: &DynStore,
) -> anyhow::Result<Option<SecretBox>> {
    if config.encryption_key.is_some() {
        return Ok(None);
    }
    let next = config.data_dir.join(NEXT_KEY_FILE);
    let Some(rotated) = std::fs::read_to_string(&next)
        .ok()
        .and_then(|key| SecretBox::from_hex(&key).ok())
    else {
        return Ok(None);
    };
    if check_key(store.as_ref(), &rotated).await.is_err() {
        return Ok(None);
    }
    std::fs::rename(&next, config.data_dir.join(KEY_FILE))
        .context("cannot finish the interrupted key rotation")?;
    tracing::info!("finished an interrupted key rotation");
    Ok(Some(rotated))
}

struct BrokerSetup {
    broker: Arc<dyn Broker>,
    endpoint: BrokerEndpoint,
    ca_pem: Option<String>,
    /// The built-in broker's server certificate (PEM).
    server_cert_pem: Option<String>,
    /// Mosquitto's start-up provisioning, which runs until it succeeds.
    provisioning: Option<JoinHandle<()>>,
    /// Mosquitto's ingest link, for the caller to supervise.
    link: Option<plantops_mqtt::mosquitto::IngestLink>,
    /// The external broker, whose sessions the leader looks after.
    mosquitto: Option<Arc<MosquittoBroker>>,
}

fn read_pem(path: &std::path::Path, setting: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {setting} {}", path.display()))
}

async fn start_builtin(
    config: &ServerConfig,
    builtin: &BuiltinBrokerConfig,
    store: DynStore,
    ingest: Ingest,
) -> anyhow::Result<BrokerSetup> {
    let mut ca_pem = None;
    let mut server_cert_pem = None;
    let tls = match builtin.tls {
        None => None,
        Some(addr) => {
            let (cert, key) = match &builtin.certificate {
                Some(files) => files.clone(),
                None => {
                    let dir = config.data_dir.join("tls");
                    let files = certs::ensure(&dir, &certs::default_sans(&builtin.tls_sans))
                        .context("cannot prepare the broker's TLS certificate")?;
                    ca_pem = Some(read_pem(&files.ca_cert, "the generated CA")?);
                    (files.cert, files.key)
                }
            };
            server_cert_pem = Some(read_pem(&cert, "the broker certificate")?);
            let listener = Listener {
                addr,
                setting: "PLANTOPS_MQTTS_ADDR",
            };
            Some(TlsListener {
                listener,
                cert,
                key,
            })
        }
    };
    let plain = builtin.plain.map(|addr| Listener {
        addr,
        setting: "PLANTOPS_MQTT_ADDR",
    });
    let broker = BuiltinBroker::start(
        BuiltinConfig {
            plain,
            tls,
            limits: builtin.limits,
        },
        Arc::new(store),
        ingest,
    )
    .await?;
    let endpoint = BrokerEndpoint {
        public_host: config.mqtt_public_host.clone(),
        port: broker.plain_addr().map(|a| a.port()),
        tls_port: broker.tls_addr().map(|a| a.port()),
    };
    Ok(BrokerSetup {
        broker,
        endpoint,
        ca_pem,
        server_cert_pem,
        provisioning: None,
        link: None,
        mosquitto: None,
    })
}

async fn start_mosquitto(
    config: &ServerConfig,
    link: &MosquittoConfig,
    ports: (u16, u16),
    instance_id: &str,
    store: DynStore,
    ingest: Ingest,
) -> anyhow::Result<BrokerSetup> {
    let ca_pem = match &link.ca_cert {
        Some(path) => Some(read_pem(path, "MQTT_CA_CERT")?),
        None => None,
    };
    let (broker, ingest_link) = MosquittoBroker::start(link.clone(), instance_id, ingest).await?;
    let mosquitto = broker.clone();
    let instance_id = instance_id.to_string();
    // Provisioning waits for the broker; the server starts meanwhile and
    // reports the link in /api/ready.
    let provisioner = broker.clone();
    let use_tls = link.use_tls;
    let link = link.clone();
    let provisioning = tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            let attempt = async {
                provisioner
                    .ensure_instance_admin(&link, &instance_id)
                    .await?;
                provisioner
                    .ensure_backend_access(&link, &instance_id)
                    .await?;
                // Any instance may reconcile: a device is stored before its
                // broker account is made and its account removed after it
                // is deleted, so none is ever judged unknown by mistake.
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
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    });
    let (plain_port, tls_port) = ports;
    let endpoint = BrokerEndpoint {
        // MQTT_HOST is how the backend reaches the broker (often a compose
        // service name); devices get the public host or the HTTP host.
        public_host: config.mqtt_public_host.clone(),
        port: (!use_tls).then_some(plain_port),
        tls_port: Some(tls_port),
    };
    Ok(BrokerSetup {
        broker,
        endpoint,
        ca_pem,
        server_cert_pem: None,
        provisioning: Some(provisioning),
        link: Some(ingest_link),
        mosquitto: Some(mosquitto),
    })
}

async fn device_usernames(
    store: &DynStore,
) -> plantops_store::Result<std::collections::HashSet<String>> {
    let devices = store.all_devices(None).await?;
    Ok(devices.into_iter().map(|d| d.mqtt_username).collect())
}

/// A started PlantOps: its state and the background work that serves it.
/// Dropping it stops the background work.
pub struct Server {
    state: AppState,
    tasks: Vec<JoinHandle<()>>,
    http: crate::http::HttpLimits,
    /// This instance's row, when instances share a broker (Mosquitto).
    instance_record: Option<Arc<crate::cluster::InstanceRecord>>,
    /// Released when the server is dropped.
    _lock: crate::cluster::InstanceLock,
}

impl Server {
    /// Opens the store, starts the broker, ingestion and the workers.
    pub async fn start(config: ServerConfig) -> anyhow::Result<Self> {
        // The recorder first: values recorded before it exists are lost.
        crate::observe::prometheus();
        if config.database_url.starts_with("sqlite:") {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!(
                    "cannot create PLANTOPS_DATA_DIR {}",
                    config.data_dir.display()
                )
            })?;
        }
        let lock = crate::cluster::InstanceLock::acquire(&config.data_dir, &config.database_url)?;
        let instance_id =
            crate::cluster::instance_id(config.instance_id.as_deref(), &config.data_dir)?;
        tracing::info!(instance_id = %instance_id, "starting");
        let store = open_store(&config.database_url).await?;
        let heartbeat = Duration::from_secs(config.heartbeat_interval_secs);
        let (events, _) = broadcast::channel(4096);
        let mut tasks = Vec::new();
        let mut instance_record = None;
        let outbox = Arc::new(tokio::sync::Notify::new());
        let task_health = Arc::new(TaskHealth::default());
        // Judges committed readings for ingestion, and device status
        // changes from the live events.
        let announcer = crate::alerts::Announcer::new(events.clone(), outbox.clone());
        let evaluator = Arc::new(Evaluator::new(&store, announcer.clone()));
        tasks.push(supervise("evaluator", task_health.clone(), {
            let (evaluator, events) = (evaluator.clone(), events.clone());
            // Subscribed before anything can publish, so no status change
            // goes unjudged.
            let first = subscribed_now(&events);
            move || evaluator.clone().run(first.receiver(&events))
        }));
        let secrets = secret_box(&config, &store).await?;
        let llm = plantops_advisor::LlmClient::new(config.llm.clone())
            .context("cannot set up the LLM client")?;
        let advisor = Arc::new(CareAdvisor::new(store.clone(), secrets.clone(), llm));
        tasks.push(supervise("care advisor", task_health.clone(), {
            let (advisor, events) = (advisor.clone(), events.clone());
            let first = subscribed_now(&events);
            move || advisor.clone().run(first.receiver(&events))
        }));
        let mut leader_jobs = vec![
            LeaderJob::new("weekly care plans", {
                let advisor = advisor.clone();
                move || advisor.clone().run_weekly()
            }),
            LeaderJob::new("judging catch-up", {
                let evaluator = evaluator.clone();
                move || evaluator.clone().catch_up_periodically()
            }),
        ];
        let home_assistant = Arc::new(crate::home_assistant::HomeAssistantSettings::new(
            store.clone(),
            secrets.clone(),
            config.home_assistant.url.clone(),
            config.home_assistant.prefix.clone(),
            config.home_assistant.ca.clone(),
        ));
        home_assistant
            .refresh()
            .await
            .context("cannot read the Home Assistant settings")?;
        tasks.push(supervise("home assistant settings", task_health.clone(), {
            let settings = home_assistant.clone();
            move || settings.clone().follow()
        }));
        tasks.push(supervise("home assistant", task_health.clone(), {
            let (store, events, link) = (store.clone(), events.clone(), home_assistant.subscribe());
            let client_id = format!("plantops-{instance_id}");
            move || {
                plantops_mqtt::home_assistant::run(
                    store.clone(),
                    events.clone(),
                    link.clone(),
                    client_id.clone(),
                )
            }
        }));
        let notifications = Arc::new(
            NotificationSettings::new(
                &store,
                secrets,
                config.discord_webhook_url.clone().map(WebhookUrl),
                WebhookDestinations::new(&config.discord_webhook_prefixes)
                    .map_err(anyhow::Error::msg)
                    .context("PLANTOPS_DISCORD_WEBHOOK_PREFIXES")?,
                config.notification_services.clone(),
            )
            .context("cannot set up the HTTP client that sends notifications")?,
        );
        tasks.push(supervise("notifier", task_health.clone(), {
            let (store, notifications, outbox) =
                (store.clone(), notifications.clone(), outbox.clone());
            move || Notifier::new(&store, notifications.clone(), outbox.clone()).run()
        }));
        let (ingest, batcher) = Ingest::new(
            &store,
            events.clone(),
            BatchConfig::default(),
            config.device_rate,
            config.low_battery_percent,
            Some(evaluator),
        );
        tasks.push(supervise("ingest", task_health.clone(), move || {
            batcher.clone().run()
        }));

        let setup = match &config.broker {
            BrokerConfig::Builtin(builtin) => {
                start_builtin(&config, builtin, store.clone(), ingest.clone()).await?
            }
            BrokerConfig::Mosquitto {
                link,
                plain_port,
                tls_port,
            } => {
                let ports = (*plain_port, *tls_port);
                let (store, ingest) = (store.clone(), ingest.clone());
                start_mosquitto(&config, link, ports, &instance_id, store, ingest).await?
            }
        };
        let certificates = certificate_ends(&setup);
        if !certificates.is_empty() {
            let (store, ends, announcer) = (store.clone(), certificates.clone(), announcer.clone());
            leader_jobs.push(LeaderJob::new("certificate watch", move || {
                crate::alerts::certificates::watch(store.clone(), ends.clone(), announcer.clone())
            }));
        }
        tasks.extend(setup.provisioning);
        if let Some(link) = setup.link {
            tasks.push(supervise(
                "mosquitto link",
                task_health.clone(),
                move || link.clone().run(),
            ));
        }

        leader_jobs.push(LeaderJob::new("offline detector", {
            let (store, events) = (store.clone(), events.clone());
            let check = OfflineCheck::new(heartbeat);
            move || check.run(store.clone(), events.clone())
        }));
        tasks.push(supervise("rollups", task_health.clone(), {
            let (store, events) = (store.clone(), events.clone());
            move || crate::rollups::maintain(store.clone(), events.clone())
        }));
        if config.retention_days > 0 || config.rollup_retention_days > 0 {
            let (store, days, rollup_days) = (
                store.clone(),
                config.retention_days,
                config.rollup_retention_days,
            );
            leader_jobs.push(LeaderJob::new("retention", move || {
                prune_readings(store.clone(), days, rollup_days)
            }));
        }
        if let Some(plan) = config.backups.clone() {
            let (store, url, announcer) = (
                store.clone(),
                config.database_url.clone(),
                announcer.clone(),
            );
            tracing::info!(schedule = %plan.schedule, dir = %plan.dir.display(), keep = plan.keep, "scheduled backups");
            leader_jobs.push(LeaderJob::new("scheduled backups", move || {
                crate::backups::run_scheduled(
                    store.clone(),
                    url.clone(),
                    plan.clone(),
                    announcer.clone(),
                )
            }));
        }
        // The instances' rows serve only the takeover of broker sessions:
        // with the built-in broker nobody reads them, so nothing is written.
        if let Some(broker) = setup.mosquitto.clone() {
            let record = crate::cluster::InstanceRecord::new(
                store.clone(),
                instance_id.clone(),
                config.instance_timeout,
            );
            tasks.push(supervise("instance heartbeat", task_health.clone(), {
                let record = record.clone();
                move || record.clone().heartbeat()
            }));
            instance_record = Some(record);
            let (store, id, timeout) =
                (store.clone(), instance_id.clone(), config.instance_timeout);
            leader_jobs.push(LeaderJob::new("session takeover", move || {
                crate::cluster::take_over_sessions(
                    store.clone(),
                    broker.clone(),
                    id.clone(),
                    timeout,
                )
            }));
        }
        let leading = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tasks.push(tokio::spawn(crate::cluster::lead(
            store.clone(),
            leader_jobs,
            task_health.clone(),
            leading.clone(),
        )));
        let live = match store
            .live_feed()
            .await
            .context("cannot listen for other instances' live events")?
        {
            Some(feed) => crate::live::LiveHub::start_shared(&events, store.clone(), feed),
            None => crate::live::LiveHub::start(&events),
        };

        let auth = Arc::new(crate::auth::Auth::new(config.auth.clone()));
        if !config.auth.required {
            tracing::warn!("PLANTOPS_AUTH=off: anyone who can reach this server can read and change everything");
        } else if config.auth.enrollment_open {
            tracing::warn!(
                "PLANTOPS_ENROLLMENT=open: any device on the network can register without a key"
            );
        }
        if config.auth.required {
            if store.count_users().await.context("cannot count accounts")? == 0 {
                std::fs::create_dir_all(&config.data_dir)
                    .and_then(|()| auth.open_setup(&config.data_dir))
                    .with_context(|| {
                        format!(
                            "cannot write the setup token into {}",
                            config.data_dir.display()
                        )
                    })?;
            } else {
                // A token left by an earlier start is dead: remove it.
                let stale = config.data_dir.join(crate::auth::SETUP_TOKEN_FILE);
                let _ = std::fs::remove_file(stale);
            }
            let (store, settings) = (store.clone(), config.auth.clone());
            tasks.push(supervise(
                "session sweeper",
                task_health.clone(),
                move || crate::auth::sweep_sessions(store.clone(), settings.clone()),
            ));
        }

        let state = AppState {
            tasks: task_health,
            auth,
            event_streams: Arc::new(tokio::sync::Semaphore::new(config.max_event_streams)),
            live,
            instance: Arc::new(crate::cluster::Instance {
                id: instance_id,
                leading,
            }),
            store,
            broker: setup.broker,
            events,
            ingest: ingest.stats(),
            notifications,
            notifier_wake: outbox.clone(),
            home_assistant,
            advisor,
            config: Arc::new(ApiConfig {
                heartbeat_interval_secs: config.heartbeat_interval_secs,
                broker_endpoint: setup.endpoint,
                broker_ca_pem: setup.ca_pem,
                allowed_hosts: crate::http::AllowedHosts::new(&config.http.allowed_hosts),
                certificates,
                broker_auth: config.mqtt_auth_secret.clone().map(|secret| {
                    let backend = match &config.broker {
                        BrokerConfig::Mosquitto { link, .. } => link
                            .password
                            .clone()
                            .filter(|p| !p.is_empty() && !link.username.is_empty())
                            .map(|password| (link.username.clone(), password)),
                        BrokerConfig::Builtin(_) => None,
                    };
                    crate::routes::broker_auth::BrokerAuth { secret, backend }
                }),
                retention_days: config.retention_days,
            }),
        };
        Ok(Self {
            state,
            tasks,
            http: config.http,
            instance_record,
            _lock: lock,
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
        let broker = self.state.broker.clone();
        let instance_record = self.instance_record.clone();
        let shutdown = async move {
            shutdown.await;
            // Open event streams never end by themselves.
            live.close();
            let others_remain = match &instance_record {
                Some(record) => record.others_remain().await,
                None => false,
            };
            broker.leave(others_remain).await;
        };
        crate::http::serve(listener, self.router(), &self.http, shutdown).await;
        tracing::info!("stopped");
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
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

/// When the broker's certificates end, also published as
/// `plantops_certificate_expiry_timestamp_seconds{certificate}` and
/// warned about within the renewal window.
fn certificate_ends(setup: &BrokerSetup) -> Vec<(&'static str, chrono::DateTime<chrono::Utc>)> {
    let known = [("broker", &setup.server_cert_pem), ("ca", &setup.ca_pem)];
    let mut ends = Vec::new();
    for (name, pem) in known {
        let Some(pem) = pem else { continue };
        match certs::expires_at(pem) {
            Ok(end) => {
                metrics::gauge!("plantops_certificate_expiry_timestamp_seconds", "certificate" => name)
                    .set(end.timestamp() as f64);
                let days_left = (end - chrono::Utc::now()).num_days();
                if days_left < certs::RENEW_BEFORE_DAYS {
                    tracing::warn!(certificate = name, %end, days_left, "a TLS certificate ends soon: renew it (docs/deployment.md)");
                }
                ends.push((name, end));
            }
            Err(error) => {
                tracing::warn!(certificate = name, %error, "cannot read a certificate's end")
            }
        }
    }
    ends
}

/// Applies the retention settings once an hour: raw readings (rolled up
/// first) and, separately, the rollups; 0 keeps either.
async fn prune_readings(store: DynStore, days: u32, rollup_days: u32) {
    let mut hourly = tokio::time::interval(Duration::from_secs(3600));
    loop {
        hourly.tick().await;
        let now = chrono::Utc::now();
        if days > 0 {
            let before = now - chrono::Duration::days(i64::from(days));
            match crate::rollups::prune_raw(&store, before).await {
                Ok(removed) => tracing::info!(removed, %before, "old readings pruned"),
                Err(error) => tracing::error!(%error, "pruning old readings failed"),
            }
        }
        if rollup_days > 0 {
            let before = now - chrono::Duration::days(i64::from(rollup_days));
            match store.prune_rollups(before).await {
                Ok(removed) => tracing::info!(removed, %before, "old hourly rollups pruned"),
                Err(error) => tracing::error!(%error, "pruning old rollups failed"),
            }
        }
    }
}

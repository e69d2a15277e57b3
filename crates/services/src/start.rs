//! Start-up of everything but HTTP: the store, the key, the broker
//! (built-in or a link to Mosquitto), ingestion and the background workers,
//! wired once here. The HTTP crate's `Server::start` calls
//! [`Services::start`] and serves what it returns.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use plantops_core::backoff::Backoff;
use plantops_core::event::Event;
use plantops_mqtt::builtin::{BuiltinBroker, BuiltinConfig, Listener, TlsListener};
use plantops_mqtt::ingest::{BatchConfig, Ingest, IngestStats};
use plantops_mqtt::mosquitto::{MosquittoBroker, MosquittoConfig};
use plantops_mqtt::presence::OfflineCheck;
use plantops_mqtt::{certs, Broker};
use plantops_store::DynStore;
use tokio::sync::{broadcast, Notify};
use tokio::task::JoinHandle;

use crate::alerts::evaluator::Evaluator;
use crate::alerts::notifier::Notifier;
use crate::alerts::settings::{NotificationSettings, WebhookDestinations, WebhookUrl};
use crate::alerts::Announcer;
use crate::care::advisor::CareAdvisor;
use crate::care::journal::Journal;
use crate::care::tasks::Tasks;
use crate::home_assistant::HomeAssistantSettings;
use crate::ops::cluster::{Instance, InstanceLock, InstanceRecord, LeaderJob};
use crate::ops::supervise::{supervise, TaskHealth};

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
pub struct ServicesConfig {
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
    /// Scheduled backups (`PLANTOPS_BACKUP_SCHEDULE`), taken by the leader.
    pub backups: Option<crate::ops::backups::BackupPlan>,
    pub home_assistant: HomeAssistantConfig,
    /// How waterings are read from the soil moisture.
    pub watering_detection: crate::care::journal::Detection,
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

/// Where devices reach the broker; returned at registration.
#[derive(Debug, Clone)]
pub struct BrokerEndpoint {
    /// Host name devices use; `None` = the host the device used for HTTP.
    pub public_host: Option<String>,
    pub port: Option<u16>,
    pub tls_port: Option<u16>,
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
    config: &ServicesConfig,
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
    config: &ServicesConfig,
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

/// A started PlantOps without its HTTP server: what the API serves, and the
/// background work behind it. Dropping it stops the background work.
pub struct Services {
    pub store: DynStore,
    pub broker: Arc<dyn Broker>,
    /// Every change, as it happens on this instance.
    pub events: broadcast::Sender<Event>,
    pub ingest: Arc<IngestStats>,
    pub notifications: Arc<NotificationSettings>,
    /// Wakes this instance's notifier (new alerts, channels added or removed).
    pub notifier_wake: Arc<Notify>,
    pub home_assistant: Arc<HomeAssistantSettings>,
    pub advisor: Arc<CareAdvisor>,
    pub journal: Journal,
    pub care_tasks: Tasks,
    /// Background tasks that failed and were restarted.
    pub task_health: Arc<TaskHealth>,
    /// This instance's id and whether it leads.
    pub instance: Arc<Instance>,
    pub broker_endpoint: BrokerEndpoint,
    /// PEM of the CA devices should trust, when the broker has TLS.
    pub broker_ca_pem: Option<String>,
    /// When each known TLS certificate ends (`broker`, `ca`).
    pub certificates: Vec<(&'static str, chrono::DateTime<chrono::Utc>)>,
    tasks: Vec<JoinHandle<()>>,
    /// This instance's row, when instances share a broker (Mosquitto).
    instance_record: Option<Arc<InstanceRecord>>,
    /// Released when the services are dropped.
    _lock: InstanceLock,
}

/// The background tasks being started, each restarted when it fails.
struct Workers {
    health: Arc<TaskHealth>,
    tasks: Vec<JoinHandle<()>>,
    leader_jobs: Vec<LeaderJob>,
}

impl Workers {
    fn supervise<F, Fut>(&mut self, name: &'static str, start: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks.push(supervise(name, self.health.clone(), start));
    }

    /// A job only the leader among the instances runs.
    fn lead<F, Fut>(&mut self, name: &'static str, start: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.leader_jobs.push(LeaderJob::new(name, start));
    }
}

impl Services {
    /// Opens the store, starts the broker, ingestion and the workers.
    pub async fn start(config: &ServicesConfig) -> anyhow::Result<Self> {
        if config.database_url.starts_with("sqlite:") {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!(
                    "cannot create PLANTOPS_DATA_DIR {}",
                    config.data_dir.display()
                )
            })?;
        }
        let lock = InstanceLock::acquire(&config.data_dir, &config.database_url)?;
        let instance_id =
            crate::ops::cluster::instance_id(config.instance_id.as_deref(), &config.data_dir)?;
        tracing::info!(instance_id = %instance_id, "starting");
        let store = open_store(&config.database_url).await?;
        let (events, _) = broadcast::channel(4096);
        let mut workers = Workers {
            health: Arc::new(TaskHealth::default()),
            tasks: Vec::new(),
            leader_jobs: Vec::new(),
        };
        let outbox = Arc::new(Notify::new());
        let announcer = Announcer::new(events.clone(), outbox.clone());
        // Judges committed readings for ingestion, and device status
        // changes from the live events.
        let evaluator = Arc::new(Evaluator::new(&store, announcer.clone()));
        workers.supervise("evaluator", {
            let (evaluator, events) = (evaluator.clone(), events.clone());
            // Subscribed before anything can publish, so no status change
            // goes unjudged.
            let first = subscribed_now(&events);
            move || evaluator.clone().run(first.receiver(&events))
        });
        workers.lead("judging catch-up", {
            let evaluator = evaluator.clone();
            move || evaluator.clone().catch_up_periodically()
        });
        let secrets =
            crate::keys::open_secrets(config.encryption_key.as_deref(), &config.data_dir, &store)
                .await?;
        let llm = plantops_advisor::LlmClient::new(config.llm.clone())
            .context("cannot set up the LLM client")?;
        let advisor = Arc::new(CareAdvisor::new(store.clone(), secrets.clone(), llm));
        workers.supervise("care advisor", {
            let (advisor, events) = (advisor.clone(), events.clone());
            let first = subscribed_now(&events);
            move || advisor.clone().run(first.receiver(&events))
        });
        workers.lead("weekly care plans", {
            let advisor = advisor.clone();
            move || advisor.clone().run_weekly()
        });
        let journal = Journal::new(store.clone(), config.watering_detection);
        let care_tasks = Tasks::new(store.clone(), journal.clone(), announcer.clone());
        workers.lead("watering detection", {
            let journal = journal.clone();
            move || journal.clone().detect_periodically()
        });
        workers.lead("care reminders", {
            let tasks = care_tasks.clone();
            move || tasks.clone().remind_periodically()
        });
        let care = crate::home_assistant::bridge::CareLink {
            journal: journal.clone(),
            tasks: care_tasks.clone(),
        };
        let home_assistant = start_home_assistant(
            config,
            &store,
            care,
            &secrets,
            &events,
            &instance_id,
            &mut workers,
        )
        .await?;
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
        workers.supervise("notifier", {
            let (store, notifications, outbox) =
                (store.clone(), notifications.clone(), outbox.clone());
            move || Notifier::new(&store, notifications.clone(), outbox.clone()).run()
        });
        let (ingest, batcher) = Ingest::new(
            &store,
            events.clone(),
            BatchConfig::default(),
            config.device_rate,
            config.low_battery_percent,
            Some(evaluator),
        );
        workers.supervise("ingest", move || batcher.clone().run());

        let setup = match &config.broker {
            BrokerConfig::Builtin(builtin) => {
                start_builtin(config, builtin, store.clone(), ingest.clone()).await?
            }
            BrokerConfig::Mosquitto {
                link,
                plain_port,
                tls_port,
            } => {
                let ports = (*plain_port, *tls_port);
                let (store, ingest) = (store.clone(), ingest.clone());
                start_mosquitto(config, link, ports, &instance_id, store, ingest).await?
            }
        };
        let certificates = certificate_ends(&setup);
        if !certificates.is_empty() {
            let (store, ends, announcer) = (store.clone(), certificates.clone(), announcer.clone());
            workers.lead("certificate watch", move || {
                crate::alerts::certificates::watch(store.clone(), ends.clone(), announcer.clone())
            });
        }
        workers.tasks.extend(setup.provisioning);
        if let Some(link) = setup.link {
            workers.supervise("mosquitto link", move || link.clone().run());
        }
        start_housekeeping(config, &store, &events, &announcer, &mut workers);
        // The instances' rows serve only the takeover of broker sessions:
        // with the built-in broker nobody reads them, so nothing is written.
        let mut instance_record = None;
        if let Some(broker) = setup.mosquitto.clone() {
            let record =
                InstanceRecord::new(store.clone(), instance_id.clone(), config.instance_timeout);
            workers.supervise("instance heartbeat", {
                let record = record.clone();
                move || record.clone().heartbeat()
            });
            instance_record = Some(record);
            let (store, id, timeout) =
                (store.clone(), instance_id.clone(), config.instance_timeout);
            workers.lead("session takeover", move || {
                crate::ops::cluster::take_over_sessions(
                    store.clone(),
                    broker.clone(),
                    id.clone(),
                    timeout,
                )
            });
        }
        let leading = Arc::new(AtomicBool::new(false));
        let Workers {
            health,
            mut tasks,
            leader_jobs,
        } = workers;
        tasks.push(tokio::spawn(crate::ops::cluster::lead(
            store.clone(),
            leader_jobs,
            health.clone(),
            leading.clone(),
        )));
        Ok(Self {
            store,
            broker: setup.broker,
            events,
            ingest: ingest.stats(),
            notifications,
            notifier_wake: outbox,
            home_assistant,
            advisor,
            journal,
            care_tasks,
            task_health: health,
            instance: Arc::new(Instance {
                id: instance_id,
                leading,
            }),
            broker_endpoint: setup.endpoint,
            broker_ca_pem: setup.ca_pem,
            certificates,
            tasks,
            instance_record,
            _lock: lock,
        })
    }

    /// Starts one more supervised task that lives as long as the services
    /// (the HTTP layer's own, such as the session sweeper).
    pub fn supervise<F, Fut>(&mut self, name: &'static str, start: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks
            .push(supervise(name, self.task_health.clone(), start));
    }

    /// Leaves the broker: its session handed to the other instances when
    /// some remain, ended otherwise. For the end of a graceful shutdown.
    pub fn departure(&self) -> impl Future<Output = ()> + Send + 'static {
        let broker = self.broker.clone();
        let record = self.instance_record.clone();
        async move {
            let others_remain = match &record {
                Some(record) => record.others_remain().await,
                None => false,
            };
            broker.leave(others_remain).await;
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Home Assistant's settings (read once now, then followed) and the bridge
/// that follows them.
async fn start_home_assistant(
    config: &ServicesConfig,
    store: &DynStore,
    care: crate::home_assistant::bridge::CareLink,
    secrets: &plantops_core::secret::SecretBox,
    events: &broadcast::Sender<Event>,
    instance_id: &str,
    workers: &mut Workers,
) -> anyhow::Result<Arc<HomeAssistantSettings>> {
    let settings = Arc::new(HomeAssistantSettings::new(
        store.clone(),
        secrets.clone(),
        config.home_assistant.url.clone(),
        config.home_assistant.prefix.clone(),
        config.home_assistant.ca.clone(),
    ));
    settings
        .refresh()
        .await
        .context("cannot read the Home Assistant settings")?;
    workers.supervise("home assistant settings", {
        let settings = settings.clone();
        move || settings.clone().follow()
    });
    workers.supervise("home assistant", {
        let (store, events, link) = (store.clone(), events.clone(), settings.subscribe());
        let client_id = format!("plantops-{instance_id}");
        move || {
            crate::home_assistant::bridge::run(
                store.clone(),
                care.clone(),
                events.clone(),
                link.clone(),
                client_id.clone(),
            )
        }
    });
    Ok(settings)
}

/// Presence, rollups, retention and backups.
fn start_housekeeping(
    config: &ServicesConfig,
    store: &DynStore,
    events: &broadcast::Sender<Event>,
    announcer: &Announcer,
    workers: &mut Workers,
) {
    workers.lead("offline detector", {
        let (store, events) = (store.clone(), events.clone());
        let check = OfflineCheck::new(Duration::from_secs(config.heartbeat_interval_secs));
        move || check.run(store.clone(), events.clone())
    });
    workers.supervise("rollups", {
        let (store, events) = (store.clone(), events.clone());
        move || crate::ops::rollups::maintain(store.clone(), events.clone())
    });
    if config.retention_days > 0 || config.rollup_retention_days > 0 {
        let (store, days, rollup_days) = (
            store.clone(),
            config.retention_days,
            config.rollup_retention_days,
        );
        workers.lead("retention", move || {
            crate::ops::retention::prune_readings(store.clone(), days, rollup_days)
        });
    }
    if let Some(plan) = config.backups.clone() {
        let (store, url, announcer) = (
            store.clone(),
            config.database_url.clone(),
            announcer.clone(),
        );
        tracing::info!(schedule = %plan.schedule, dir = %plan.dir.display(), keep = plan.keep, "scheduled backups");
        workers.lead("scheduled backups", move || {
            crate::ops::backups::run_scheduled(
                store.clone(),
                url.clone(),
                plan.clone(),
                announcer.clone(),
            )
        });
    }
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

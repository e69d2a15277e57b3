//! An external Mosquitto: the backend subscribes to device topics with a
//! persistent session and acknowledges each QoS 1 message only after it is
//! committed; device accounts and ACLs are provisioned at runtime through
//! Mosquitto's dynamic-security plugin (no password file, no restart).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use plantops_core::backoff::Backoff;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeFilter, SubscribeReasonCode,
    TlsConfiguration, Transport,
};
use serde_json::{json, Value};
use tokio::sync::{oneshot, Semaphore};
use uuid::Uuid;

use crate::ingest::{Ingest, Outcome};
use crate::{Broker, BrokerError, LinkState};

const CONTROL_TOPIC: &str = "$CONTROL/dynamic-security/v1";
const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";
/// The role that lets the backend read every device's messages.
const BACKEND_ROLE: &str = "plantops-backend";
const DEVICE_ROLE_PREFIX: &str = "plantops-device-";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages being committed at once before the link stops reading.
const MAX_OUTSTANDING: usize = 10_000;

#[derive(Clone)]
pub struct MosquittoConfig {
    pub host: String,
    pub port: u16,
    pub use_tls: bool,
    pub ca_cert: Option<PathBuf>,
    pub username: String,
    pub password: Option<String>,
    pub dynsec_username: String,
    pub dynsec_password: Option<String>,
    /// Stable, so the broker keeps the backend's session across restarts.
    pub client_id: String,
}

impl std::fmt::Debug for MosquittoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MosquittoConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("use_tls", &self.use_tls)
            .field("username", &self.username)
            .field("dynsec_username", &self.dynsec_username)
            .finish_non_exhaustive()
    }
}

fn options(
    config: &MosquittoConfig,
    client_id: &str,
    username: &str,
    password: Option<&str>,
) -> Result<MqttOptions, BrokerError> {
    let mut options = MqttOptions::new(client_id, &config.host, config.port);
    options.set_credentials(username, password.unwrap_or_default());
    options.set_keep_alive(Duration::from_secs(30));
    // Oversized device payloads must reach ingestion to be counted, not
    // break the link.
    options.set_max_packet_size(256 * 1024, 256 * 1024);
    if config.use_tls {
        let tls = match &config.ca_cert {
            Some(path) => TlsConfiguration::Simple {
                ca: std::fs::read(path).map_err(|e| {
                    BrokerError::Unavailable(format!(
                        "cannot read MQTT_CA_CERT {}: {e}",
                        path.display()
                    ))
                })?,
                alpn: None,
                client_auth: None,
            },
            None => TlsConfiguration::default(),
        };
        options.set_transport(Transport::Tls(tls));
    }
    Ok(options)
}

/// Whether the broker granted every filter of a SUBSCRIBE (it answers a
/// denied one with a failure code, not an error).
fn all_granted(ack: &rumqttc::SubAck) -> bool {
    ack.return_codes
        .iter()
        .all(|code| matches!(code, SubscribeReasonCode::Success(_)))
}

fn nodelay(eventloop: &mut EventLoop) {
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    // Also bounds every write: a broker busy with a burst of devices may
    // take longer than the default 5 s to read our acknowledgements, and
    // dropping the link then only adds redeliveries.
    network.set_connection_timeout(30);
    eventloop.set_network_options(network);
}

/// Reconnect delays, jittered so many backends do not reconnect in step.
fn reconnect_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(200), Duration::from_secs(30)).with_jitter()
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Vec<Value>>>>>;

/// Sends dynamic-security commands and waits for their responses.
struct Dynsec {
    client: AsyncClient,
    pending: Pending,
    /// True while the response topic is subscribed: a command sent before
    /// that would have its answer dropped by the broker.
    listening: tokio::sync::watch::Receiver<bool>,
}

impl Dynsec {
    fn start(config: &MosquittoConfig) -> Result<Self, BrokerError> {
        let client_id = format!("{}-dynsec", config.client_id);
        let mut options = options(
            config,
            &client_id,
            &config.dynsec_username,
            config.dynsec_password.as_deref(),
        )?;
        options.set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        nodelay(&mut eventloop);
        let pending: Pending = Arc::default();
        let routes = pending.clone();
        let subscriber = client.clone();
        let (listening_tx, listening) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut backoff = reconnect_backoff();
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        backoff.reset();
                        let _ = subscriber.subscribe(RESPONSE_TOPIC, QoS::AtLeastOnce).await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        let granted = all_granted(&ack);
                        if !granted {
                            tracing::warn!("Mosquitto refused the dynamic-security response topic to MQTT_DYNSEC_USERNAME");
                        }
                        listening_tx.send_replace(granted);
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let Ok(body) = serde_json::from_slice::<Value>(&publish.payload) else {
                            continue;
                        };
                        let responses = body["responses"].as_array().cloned().unwrap_or_default();
                        let key = responses
                            .first()
                            .and_then(|r| r["correlationData"].as_str())
                            .map(str::to_string);
                        let waiter = key.and_then(|k| routes.lock().ok()?.remove(&k));
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(responses);
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        // Answers to requests sent on the lost connection
                        // will not come: fail them now so callers retry.
                        listening_tx.send_replace(false);
                        if let Ok(mut waiting) = routes.lock() {
                            waiting.clear();
                        }
                        tracing::warn!(%error, "dynamic-security link down");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        });
        Ok(Self {
            client,
            pending,
            listening,
        })
    }

    /// Runs commands in one message; returns the plugin's responses.
    async fn run(&self, mut commands: Vec<Value>) -> Result<Vec<Value>, BrokerError> {
        let mut listening = self.listening.clone();
        let subscribed = async { listening.wait_for(|up| *up).await.is_ok() };
        if !tokio::time::timeout(COMMAND_TIMEOUT, subscribed)
            .await
            .unwrap_or(false)
        {
            return Err(BrokerError::Unavailable(
                "no dynamic-security link to Mosquitto (MQTT_DYNSEC_USERNAME)".into(),
            ));
        }
        let key = Uuid::new_v4().to_string();
        for command in &mut commands {
            command["correlationData"] = json!(key);
        }
        let (tx, rx) = oneshot::channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(key.clone(), tx);
        }
        let payload = json!({ "commands": commands }).to_string();
        let sent = self
            .client
            .publish(CONTROL_TOPIC, QoS::AtLeastOnce, false, payload)
            .await;
        let answer = match sent {
            Ok(()) => tokio::time::timeout(COMMAND_TIMEOUT, rx).await,
            Err(e) => {
                self.forget(&key);
                return Err(BrokerError::Unavailable(e.to_string()));
            }
        };
        match answer {
            Ok(Ok(responses)) => Ok(responses),
            _ => {
                self.forget(&key);
                Err(BrokerError::Unavailable(
                    "Mosquitto's dynamic-security plugin did not answer".into(),
                ))
            }
        }
    }

    fn forget(&self, key: &str) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(key);
        }
    }

    /// Runs commands; errors other than the tolerated ones fail the call.
    async fn run_checked(
        &self,
        commands: Vec<Value>,
        tolerated: &[&str],
    ) -> Result<(), BrokerError> {
        let names: Vec<String> = commands
            .iter()
            .map(|c| c["command"].as_str().unwrap_or_default().to_string())
            .collect();
        let responses = self.run(commands).await?;
        for (name, response) in names.iter().zip(responses) {
            if let Some(error) = response["error"].as_str() {
                if !tolerated.iter().any(|t| error.contains(t)) {
                    return Err(BrokerError::Refused(format!("{name}: {error}")));
                }
            }
        }
        Ok(())
    }
}

fn device_role(device_id: Uuid) -> String {
    format!("{DEVICE_ROLE_PREFIX}{device_id}")
}

pub struct MosquittoBroker {
    dynsec: Dynsec,
    state: Arc<RwLock<LinkState>>,
    /// Set once the backend's account, role and the device accounts are in
    /// place. Until then registering could race the broker kicking the
    /// admin's links (a role change disconnects the client).
    provisioned: std::sync::atomic::AtomicBool,
}

impl MosquittoBroker {
    /// Connects the ingest link and the provisioning link. The links keep
    /// reconnecting in the background; `state()` tells how they are doing.
    pub async fn start(config: MosquittoConfig, ingest: Ingest) -> Result<Arc<Self>, BrokerError> {
        let dynsec = Dynsec::start(&config)?;
        let broker = Arc::new(Self {
            dynsec,
            state: Arc::new(RwLock::new(LinkState {
                up: false,
                message: format!("connecting to {}:{}", config.host, config.port),
            })),
            provisioned: false.into(),
        });
        let mut options = options(
            &config,
            &config.client_id,
            &config.username,
            config.password.as_deref(),
        )?;
        options.set_clean_session(false);
        options.set_manual_acks(true);
        options.set_inflight(1000);
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        nodelay(&mut eventloop);
        let state = broker.state.clone();
        let target = format!("{}:{}", config.host, config.port);
        tokio::spawn(async move {
            let outstanding = Arc::new(Semaphore::new(MAX_OUTSTANDING));
            let mut backoff = reconnect_backoff();
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        backoff.reset();
                        tracing::info!(broker = %target, session_present = ack.session_present, "connected to Mosquitto");
                        let topics = ["devices/+/telemetry", "devices/+/heartbeat"]
                            .map(|topic| SubscribeFilter::new(topic.into(), QoS::AtLeastOnce));
                        let _ = client.subscribe_many(topics).await;
                        set_state(&state, false, format!("subscribing at {target}"));
                    }
                    // Ready only once device topics are granted: a backend
                    // account without its role connects but receives nothing.
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        let granted = all_granted(&ack);
                        if granted {
                            set_state(&state, true, format!("connected to {target}"));
                        } else {
                            tracing::warn!(broker = %target, "Mosquitto refused the device topics to MQTT_BACKEND_USERNAME; waiting for its role");
                            set_state(&state, false, format!("{target} refused the device topics: the backend account has no access yet"));
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let Ok(permit) = outstanding.clone().acquire_owned().await else {
                            break;
                        };
                        let ingest = ingest.clone();
                        let client = client.clone();
                        tokio::spawn(async move {
                            let device = plantops_core::topic::parse(&publish.topic)
                                .and_then(|(id, _)| Uuid::parse_str(id).ok())
                                .unwrap_or_default();
                            let wait = publish.qos != QoS::AtMostOnce;
                            let outcome = ingest
                                .handle(device, &publish.topic, &publish.payload, wait)
                                .await;
                            // Unacknowledged, the broker sends it again after a reconnect.
                            if outcome != Outcome::ShuttingDown {
                                let _ = client.ack(&publish).await;
                            }
                            drop(permit);
                        });
                    }
                    Ok(_) => {}
                    Err(error) => {
                        let wait = backoff.next_delay();
                        tracing::warn!(broker = %target, %error, retry_in_ms = wait.as_millis() as u64, "Mosquitto link down");
                        set_state(&state, false, format!("cannot reach {target}: {error}"));
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        });
        Ok(broker)
    }

    /// Gives the backend account read access to every device topic. Run once
    /// at start; repeating it is harmless. (Changing a client's roles makes
    /// Mosquitto disconnect it, so the links reconnect once on first setup.)
    pub async fn ensure_backend_access(&self, config: &MosquittoConfig) -> Result<(), BrokerError> {
        let mut commands = vec![json!({"command": "createRole", "rolename": BACKEND_ROLE})];
        for topic in ["devices/+/telemetry", "devices/+/heartbeat"] {
            commands.push(json!({"command": "addRoleACL", "rolename": BACKEND_ROLE,
                "acltype": "subscribePattern", "topic": topic, "allow": true}));
            commands.push(json!({"command": "addRoleACL", "rolename": BACKEND_ROLE,
                "acltype": "publishClientReceive", "topic": topic, "allow": true}));
        }
        if config.username != config.dynsec_username {
            let password = config.password.clone().unwrap_or_default();
            commands.push(
                json!({"command": "createClient", "username": config.username,
                "password": password}),
            );
            // A password changed in the environment takes effect on restart.
            commands.push(json!({"command": "setClientPassword",
                "username": config.username, "password": password}));
        }
        self.dynsec
            .run_checked(commands, &["already exists"])
            .await?;
        // Mosquitto 2.0 answers a repeated addClientRole with "Internal
        // error", so look first.
        let lookup = json!({"command": "getClient", "username": config.username});
        let responses = self.dynsec.run(vec![lookup]).await?;
        let has_role = responses
            .first()
            .and_then(|r| r["data"]["client"]["roles"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .any(|role| role["rolename"] == BACKEND_ROLE);
        if has_role {
            return Ok(());
        }
        let grant = json!({"command": "addClientRole", "username": config.username,
            "rolename": BACKEND_ROLE});
        self.dynsec.run_checked(vec![grant], &[]).await
    }

    /// Declares provisioning done: from now on the link state alone tells
    /// whether the broker is usable.
    pub fn mark_provisioned(&self) {
        self.provisioned
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Removes broker accounts of devices the store no longer knows; names
    /// devices the store knows but the broker lacks (they must rotate).
    pub async fn reconcile(&self, known: &HashSet<String>) -> Result<(), BrokerError> {
        let listed = self.list_clients().await?;
        let device_accounts: HashSet<String> = listed
            .into_iter()
            .filter(|name| name.starts_with("device_"))
            .collect();
        for stale in device_accounts.difference(known) {
            tracing::info!(username = %stale, "removing broker account of a deleted device");
            self.dynsec
                .run_checked(
                    vec![json!({"command": "deleteClient", "username": stale})],
                    &["not found"],
                )
                .await?;
        }
        for missing in known.difference(&device_accounts) {
            tracing::warn!(username = %missing, "device has no broker account; rotate its credentials to restore access");
        }
        Ok(())
    }

    async fn list_clients(&self) -> Result<Vec<String>, BrokerError> {
        let command = json!({"command": "listClients", "verbose": false});
        let responses = self.dynsec.run(vec![command]).await?;
        Ok(responses
            .first()
            .and_then(|r| r["data"]["clients"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|c| {
                c.as_str()
                    .or_else(|| c["username"].as_str())
                    .map(str::to_string)
            })
            .collect())
    }
}

fn set_state(state: &RwLock<LinkState>, up: bool, message: String) {
    if let Ok(mut state) = state.write() {
        *state = LinkState { up, message };
    }
}

#[async_trait]
impl Broker for MosquittoBroker {
    fn kind(&self) -> &'static str {
        "mosquitto"
    }

    fn state(&self) -> LinkState {
        let link = self
            .state
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|_| LinkState {
                up: false,
                message: "state unavailable".into(),
            });
        if link.up && !self.provisioned.load(std::sync::atomic::Ordering::Acquire) {
            return LinkState {
                up: false,
                message: "provisioning accounts through dynamic security".into(),
            };
        }
        link
    }

    async fn add_device(
        &self,
        device_id: Uuid,
        username: &str,
        password: &str,
    ) -> Result<(), BrokerError> {
        let role = device_role(device_id);
        let mut commands = vec![
            json!({"command": "createRole", "rolename": role}),
            json!({"command": "addRoleACL", "rolename": role, "acltype": "subscribePattern",
                "topic": format!("devices/{device_id}/#"), "allow": true}),
        ];
        for topic in [
            plantops_core::topic::telemetry(&device_id.to_string()),
            plantops_core::topic::heartbeat(&device_id.to_string()),
        ] {
            commands.push(json!({"command": "addRoleACL", "rolename": role,
                "acltype": "publishClientSend", "topic": topic, "allow": true}));
        }
        commands
            .push(json!({"command": "createClient", "username": username, "password": password}));
        commands.push(json!({"command": "addClientRole", "username": username, "rolename": role}));
        self.dynsec.run_checked(commands, &[]).await
    }

    async fn set_password(
        &self,
        _: Uuid,
        username: &str,
        password: &str,
    ) -> Result<(), BrokerError> {
        // Disabling a client disconnects it: sessions with the old password end.
        let commands = vec![
            json!({"command": "setClientPassword", "username": username, "password": password}),
            json!({"command": "disableClient", "username": username}),
            json!({"command": "enableClient", "username": username}),
        ];
        self.dynsec.run_checked(commands, &[]).await
    }

    async fn remove_device(&self, device_id: Uuid, username: &str) -> Result<(), BrokerError> {
        // Deleting a client disconnects it.
        let commands = vec![
            json!({"command": "deleteClient", "username": username}),
            json!({"command": "deleteRole", "rolename": device_role(device_id)}),
        ];
        self.dynsec.run_checked(commands, &["not found"]).await
    }
}

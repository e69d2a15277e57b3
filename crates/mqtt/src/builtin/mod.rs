//! The built-in broker (mqtt5): devices authenticate against the store, may
//! publish only to their own topics, and every publish goes straight into
//! ingestion, acknowledged (QoS 1) only after its batch is committed.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mqtt5::broker::auth::{AuthProvider, AuthResult};
use mqtt5::broker::config::{BrokerConfig, StorageConfig, TlsConfig};
use mqtt5::broker::events::{
    BrokerEventHandler, ClientConnectEvent, ClientDisconnectEvent, ClientPublishEvent,
    PublishAction,
};
use mqtt5::broker::router::MessageRouter;
use mqtt5::broker::{BrokerShutdownHandle, MqttBroker};
use mqtt5::packet::connect::ConnectPacket;
use mqtt5::protocol::v5::reason_codes::ReasonCode;
use mqtt5::QoS;
use plantops_core::credentials::verify_password;
use plantops_core::topic::is_own_client_id;
use plantops_store::{DeviceStore, DynStore};
use uuid::Uuid;

use crate::ingest::{Ingest, Outcome};
use crate::{Broker, BrokerError, LinkState};

/// A listener address together with the setting that chose it, so a port
/// already in use can be reported in the user's terms.
#[derive(Debug, Clone)]
pub struct Listener {
    pub addr: SocketAddr,
    pub setting: &'static str,
}

#[derive(Debug, Clone)]
pub struct TlsListener {
    pub listener: Listener,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Default)]
pub struct BuiltinConfig {
    pub plain: Option<Listener>,
    pub tls: Option<TlsListener>,
    pub limits: BuiltinLimits,
}

/// What one device, or all of them, may hold of the built-in broker.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinLimits {
    /// Connections at once (PLANTOPS_MQTT_MAX_CONNECTIONS).
    pub max_connections: usize,
    /// Longest keep-alive a client may ask for, in seconds; a longer one
    /// (or 0, never) is refused, so a dead connection cannot linger
    /// (PLANTOPS_MQTT_MAX_KEEPALIVE_SECS).
    pub max_keep_alive_secs: u16,
}

impl Default for BuiltinLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_keep_alive_secs: 3600,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{addr} is already in use (another MQTT broker, such as Mosquitto, may hold it); set {setting} to a free address, or to an empty value to turn this listener off")]
    PortInUse {
        addr: SocketAddr,
        setting: &'static str,
    },
    #[error("cannot listen on {addr} ({setting}): {source}")]
    Bind {
        addr: SocketAddr,
        setting: &'static str,
        source: std::io::Error,
    },
    #[error("the built-in broker needs at least one listener (PLANTOPS_MQTT_ADDR or PLANTOPS_MQTTS_ADDR)")]
    NoListener,
    #[error("built-in broker failed to start: {0}")]
    Broker(String),
}

/// Checks a listener address up front so the error names the setting.
fn check_free(listener: &Listener) -> Result<(), StartError> {
    match TcpListener::bind(listener.addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(StartError::PortInUse {
            addr: listener.addr,
            setting: listener.setting,
        }),
        Err(source) => Err(StartError::Bind {
            addr: listener.addr,
            setting: listener.setting,
            source,
        }),
    }
}

/// Live connections per device, so a deleted or rotated device can be cut.
#[derive(Default)]
struct Sessions(Mutex<HashMap<Uuid, HashSet<String>>>);

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, HashSet<String>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, device_id: Uuid) -> HashSet<String> {
        self.lock().remove(&device_id).unwrap_or_default()
    }
}

struct DeviceAuth {
    store: Arc<dyn DeviceStore>,
    failures: FailedLogins,
    max_keep_alive_secs: u16,
}

/// Failed logins per source address within a minute: past a few, each
/// further failure is answered only after a growing pause (up to 5 s), so
/// guessing from one address is slow. A right password is never delayed
/// or refused — locking a username (or an address) out would let anyone
/// who knows a device's username keep it off the network.
#[derive(Default)]
struct FailedLogins {
    by_address: Mutex<HashMap<std::net::IpAddr, (u32, tokio::time::Instant)>>,
}

/// Subscriptions one device connection may hold (under its own prefix).
pub const MAX_SUBSCRIPTIONS_PER_DEVICE: usize = 8;

const FREE_LOGIN_FAILURES: u32 = 5;
const LOGIN_FAILURE_WINDOW: Duration = Duration::from_secs(60);
const MAX_LOGIN_FAILURE_PAUSE: Duration = Duration::from_secs(5);
/// Past this many remembered addresses, quiet ones are swept out.
const FAILED_LOGINS_SWEEP_ABOVE: usize = 4096;

impl FailedLogins {
    /// Counts a failure; returns how long to wait before answering it.
    fn failed(&self, address: std::net::IpAddr) -> Duration {
        let now = tokio::time::Instant::now();
        let mut by_address = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        if by_address.len() > FAILED_LOGINS_SWEEP_ABOVE {
            by_address.retain(|_, (_, since)| now.duration_since(*since) < LOGIN_FAILURE_WINDOW);
        }
        let (count, since) = by_address.entry(address).or_insert((0, now));
        if now.duration_since(*since) >= LOGIN_FAILURE_WINDOW {
            (*count, *since) = (0, now);
        }
        *count += 1;
        let over = count.saturating_sub(FREE_LOGIN_FAILURES);
        (Duration::from_millis(250) * over).min(MAX_LOGIN_FAILURE_PAUSE)
    }
}

fn device_of(user_id: Option<&str>) -> Option<Uuid> {
    user_id.and_then(|u| Uuid::parse_str(u).ok())
}

impl AuthProvider for DeviceAuth {
    fn authenticate<'a>(
        &'a self,
        connect: &'a ConnectPacket,
        client_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = mqtt5::error::Result<AuthResult>> + Send + 'a>> {
        Box::pin(async move {
            let refused = || Ok(AuthResult::fail(ReasonCode::BadUsernameOrPassword));
            if connect.keep_alive == 0 || connect.keep_alive > self.max_keep_alive_secs {
                // As Mosquitto's max_keepalive does for MQTT 3.1.1 clients.
                tracing::info!(%client_addr, keep_alive = connect.keep_alive, "keep-alive out of bounds refused");
                return Ok(AuthResult::fail(ReasonCode::ClientIdentifierNotValid));
            }
            let (Some(username), Some(password)) = (&connect.username, &connect.password) else {
                return refused();
            };
            let Ok(password) = std::str::from_utf8(password) else {
                return refused();
            };
            match self.store.device_credentials(username).await {
                Ok(Some(creds)) if verify_password(password, &creds.password_hash) => {
                    let device = creds.device_id.to_string();
                    if !is_own_client_id(&connect.client_id, &device, username) {
                        // Another device's id would take over its session.
                        tracing::info!(%client_addr, device_id = %device, client_id = %connect.client_id, "foreign client id refused");
                        return Ok(AuthResult::fail(ReasonCode::ClientIdentifierNotValid));
                    }
                    Ok(AuthResult::success_with_user(device))
                }
                Ok(_) => {
                    tracing::info!(%client_addr, username = %username, "device login refused");
                    tokio::time::sleep(self.failures.failed(client_addr.ip())).await;
                    refused()
                }
                Err(error) => {
                    tracing::error!(%error, "device login: store unavailable");
                    Ok(AuthResult::fail(ReasonCode::ServerUnavailable))
                }
            }
        })
    }

    fn authorize_publish<'a>(
        &'a self,
        _client_id: &str,
        user_id: Option<&'a str>,
        topic: &'a str,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        let allowed = match (user_id, plantops_core::topic::parse(topic)) {
            (Some(user), Some((device, _))) => user == device,
            _ => false,
        };
        Box::pin(async move { allowed })
    }

    fn authorize_subscribe<'a>(
        &'a self,
        _client_id: &str,
        user_id: Option<&'a str>,
        topic_filter: &'a str,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        let allowed = device_of(user_id).is_some_and(|device| {
            plantops_core::topic::is_own_filter(&device.to_string(), topic_filter)
        });
        Box::pin(async move { allowed })
    }
}

struct IngestHandler {
    ingest: Ingest,
    sessions: Arc<Sessions>,
}

impl BrokerEventHandler for IngestHandler {
    fn on_client_connect<'a>(
        &'a self,
        event: ClientConnectEvent,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        if let Some(device) = device_of(event.user_id.as_deref()) {
            tracing::debug!(device_id = %device, client_id = %event.client_id, "device connected");
            self.sessions
                .lock()
                .entry(device)
                .or_default()
                .insert(event.client_id.to_string());
        }
        Box::pin(async {})
    }

    fn on_client_disconnect<'a>(
        &'a self,
        event: ClientDisconnectEvent,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        if let Some(device) = device_of(event.user_id.as_deref()) {
            let mut sessions = self.sessions.lock();
            if let Some(clients) = sessions.get_mut(&device) {
                clients.remove(event.client_id.as_ref());
                if clients.is_empty() {
                    sessions.remove(&device);
                }
            }
        }
        Box::pin(async {})
    }

    fn on_client_publish<'a>(
        &'a self,
        event: ClientPublishEvent,
    ) -> Pin<Box<dyn Future<Output = PublishAction> + Send + 'a>> {
        Box::pin(async move {
            let Some(device) = device_of(event.user_id.as_deref()) else {
                return PublishAction::Handled;
            };
            let wait = event.qos != QoS::AtMostOnce;
            match self
                .ingest
                .handle(device, &event.topic, &event.payload, wait)
                .await
            {
                Outcome::Stored | Outcome::Dropped(_) => PublishAction::Handled,
                // Never acknowledge what was not stored: hold the PUBACK
                // until the connection closes, so the device sends again.
                Outcome::ShuttingDown => std::future::pending().await,
            }
        })
    }
}

pub struct BuiltinBroker {
    router: Arc<MessageRouter>,
    sessions: Arc<Sessions>,
    shutdown: BrokerShutdownHandle,
    task: tokio::task::JoinHandle<()>,
    plain_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
}

impl BuiltinBroker {
    pub async fn start(
        config: BuiltinConfig,
        store: DynStore,
        ingest: Ingest,
    ) -> Result<Arc<Self>, StartError> {
        if config.plain.is_none() && config.tls.is_none() {
            return Err(StartError::NoListener);
        }
        for listener in config
            .plain
            .iter()
            .chain(config.tls.as_ref().map(|t| &t.listener))
        {
            check_free(listener)?;
        }
        let sessions = Arc::new(Sessions::default());
        let handler = Arc::new(IngestHandler {
            ingest,
            sessions: sessions.clone(),
        });
        let storage = StorageConfig {
            enable_persistence: false,
            ..StorageConfig::default()
        };
        let mut broker_config = BrokerConfig::default()
            .with_bind_addresses(config.plain.iter().map(|l| l.addr).collect())
            .with_storage(storage)
            .with_sys_topics_enabled(false)
            .with_maximum_qos(1)
            .with_max_packet_size(64 * 1024)
            .with_session_expiry(Duration::from_secs(7 * 24 * 3600))
            .with_max_clients(config.limits.max_connections)
            // A device publishes to two topics and needs no more than a few
            // subscriptions; each one is state the broker keeps for it.
            .with_max_subscriptions_per_client(MAX_SUBSCRIPTIONS_PER_DEVICE)
            .with_event_handler(handler);
        // Topic aliases off: each would be state kept per connection before
        // any authorisation of the topic it stands for.
        broker_config.topic_alias_maximum = 0;
        if let Some(tls) = &config.tls {
            broker_config = broker_config.with_tls(
                TlsConfig::new(tls.cert.clone(), tls.key.clone())
                    .with_bind_addresses(vec![tls.listener.addr]),
            );
        }
        let auth: Arc<dyn AuthProvider> = Arc::new(DeviceAuth {
            store,
            failures: FailedLogins::default(),
            max_keep_alive_secs: config.limits.max_keep_alive_secs,
        });
        let mut broker = MqttBroker::with_config(broker_config)
            .await
            .map_err(|e| StartError::Broker(e.to_string()))?
            .with_auth_provider(auth);
        let router = broker.router();
        let shutdown = broker.shutdown_handle();
        let plain_addr = broker.local_addr();
        let tls_addr = broker.tls_local_addr();
        let mut ready = broker.ready_receiver();
        let task = tokio::spawn(async move {
            if let Err(error) = broker.run().await {
                tracing::error!(%error, "built-in broker stopped");
            }
        });
        // Wait until the listeners accept, so a device registered next can
        // connect at once.
        let _ = tokio::time::timeout(Duration::from_secs(5), ready.wait_for(|r| *r)).await;
        if let Some(addr) = plain_addr {
            tracing::info!(%addr, "built-in MQTT broker listening");
        }
        if let Some(addr) = tls_addr {
            tracing::info!(%addr, "built-in MQTT broker listening (TLS)");
        }
        Ok(Arc::new(Self {
            router,
            sessions,
            shutdown,
            task,
            plain_addr,
            tls_addr,
        }))
    }

    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.plain_addr
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    async fn cut(&self, device_id: Uuid) {
        for client_id in self.sessions.take(device_id) {
            tracing::info!(%device_id, %client_id, "disconnecting device session");
            self.router.disconnect_client(&client_id).await;
        }
    }
}

#[async_trait]
impl Broker for BuiltinBroker {
    fn kind(&self) -> &'static str {
        "builtin"
    }

    fn state(&self) -> LinkState {
        if self.task.is_finished() {
            LinkState {
                up: false,
                message: "the built-in broker has stopped".into(),
            }
        } else {
            let listeners: Vec<String> = self
                .plain_addr
                .iter()
                .map(|a| format!("mqtt://{a}"))
                .chain(self.tls_addr.iter().map(|a| format!("mqtts://{a}")))
                .collect();
            LinkState {
                up: true,
                message: format!("listening on {}", listeners.join(", ")),
            }
        }
    }

    async fn add_device(&self, _: Uuid, _: &str, _: &str) -> Result<(), BrokerError> {
        // Logins are checked against the store: nothing to provision.
        Ok(())
    }

    async fn set_password(&self, device_id: Uuid, _: &str, _: &str) -> Result<(), BrokerError> {
        self.cut(device_id).await;
        Ok(())
    }

    async fn remove_device(&self, device_id: Uuid, _: &str) -> Result<(), BrokerError> {
        self.cut(device_id).await;
        Ok(())
    }
}

impl Drop for BuiltinBroker {
    fn drop(&mut self) {
        self.shutdown.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::FailedLogins;
    use plantops_core::topic::is_own_client_id;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn failed_logins_slow_down_an_address_and_recover() {
        let failures = FailedLogins::default();
        let home = "192.168.1.20".parse().unwrap();
        let pauses: Vec<Duration> = (0..8).map(|_| failures.failed(home)).collect();
        assert_eq!(pauses[..5], [Duration::ZERO; 5]);
        assert_eq!(pauses[5..], [250, 500, 750].map(Duration::from_millis));
        for _ in 0..30 {
            failures.failed(home);
        }
        assert_eq!(failures.failed(home), Duration::from_secs(5), "bounded");
        assert_eq!(
            failures.failed("10.0.0.9".parse().unwrap()),
            Duration::ZERO,
            "per address"
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(failures.failed(home), Duration::ZERO, "a new minute");
    }

    #[test]
    fn devices_keep_to_their_own_client_ids() {
        let (id, user) = ("0b6f-device", "device_1a2b3c4d");
        assert!(is_own_client_id(id, id, user));
        assert!(is_own_client_id("plantops-0b6f-device", id, user));
        assert!(is_own_client_id(user, id, user));
        for foreign in [
            "plantops-backend",
            "other-device",
            "",
            "auto-1234",
            "plantops-",
        ] {
            assert!(!is_own_client_id(foreign, id, user), "{foreign}");
        }
    }
}

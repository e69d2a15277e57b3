//! The built-in broker: a small MQTT 3.1.1/5 server made for what devices
//! do with PlantOps. Devices authenticate against the store, may publish
//! only to their own topics, and every publish goes straight into
//! ingestion. A connection keeps reading while its QoS 1 messages wait for
//! their batch, and acknowledges each (in order) only after it is
//! committed, so batches grow with the load, not with the number of
//! connections. Nothing is ever routed to subscribers: a device's messages
//! are for PlantOps, so subscriptions are checked and acknowledged only.

mod auth;
mod connection;

pub use auth::CredentialLookup;
pub use connection::{
    MAX_CONNECT_PROPERTIES, MAX_CONNECT_SIZE, MAX_FILTER_LENGTH, PARTIAL_PACKET_DEADLINE,
};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};
use tokio_rustls::TlsAcceptor;
use uuid::Uuid;

use crate::ingest::Ingest;
use crate::{Broker, BrokerError, LinkState};
use auth::{AddressKey, DeviceAuth, FailedLogins};

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
    /// QoS 1 messages one connection may have unacknowledged; MQTT 5
    /// clients are told (receive maximum) and disconnected past it (0x93),
    /// from others the broker takes no more until one is committed
    /// (PLANTOPS_MQTT_MAX_INFLIGHT).
    pub max_inflight: u16,
    /// Connections not yet logged in, at once: kept apart from the device
    /// slots, so clients that never log in cannot take them
    /// (PLANTOPS_MQTT_MAX_PENDING_LOGINS).
    pub max_pending_logins: usize,
    /// Connections not yet logged in from one address (IPv6: one /64), so
    /// one host cannot take every login slot
    /// (PLANTOPS_MQTT_MAX_PENDING_LOGINS_PER_ADDRESS).
    pub max_pending_logins_per_address: usize,
    /// How long a packet may take to arrive whole after its first byte
    /// ([`PARTIAL_PACKET_DEADLINE`]; shorter in tests).
    pub partial_packet_deadline: std::time::Duration,
}

impl Default for BuiltinLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_keep_alive_secs: 3600,
            max_inflight: 64,
            max_pending_logins: 512,
            max_pending_logins_per_address: 32,
            partial_packet_deadline: PARTIAL_PACKET_DEADLINE,
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
    #[error("cannot use the broker certificate {cert} with its key {key}: {reason}")]
    Certificate {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// Binds a listener; a taken port is named with the setting that chose it.
async fn bind(listener: &Listener) -> Result<TcpListener, StartError> {
    TcpListener::bind(listener.addr)
        .await
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AddrInUse => StartError::PortInUse {
                addr: listener.addr,
                setting: listener.setting,
            },
            _ => StartError::Bind {
                addr: listener.addr,
                setting: listener.setting,
                source,
            },
        })
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, StartError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let refused = |reason: String| StartError::Certificate {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| refused(e.to_string()))?;
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| refused(e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| refused(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, private_key)
    .map_err(|e| refused(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Why a connection is told to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kick {
    /// A newer connection with the same client id took over.
    TakenOver = 1,
    /// The device was deleted or its credentials rotated.
    Revoked = 2,
}

/// One live connection's handle: a way to tell it to end, and why.
#[derive(Default)]
struct KickSwitch {
    reason: AtomicU8,
    notify: Notify,
}

impl KickSwitch {
    fn kick(&self, reason: Kick) {
        self.reason.store(reason as u8, Ordering::Release);
        self.notify.notify_one();
    }

    async fn kicked(&self) -> Kick {
        self.notify.notified().await;
        match self.reason.load(Ordering::Acquire) {
            1 => Kick::TakenOver,
            _ => Kick::Revoked,
        }
    }
}

struct LiveSession {
    device_id: Uuid,
    serial: u64,
    switch: Arc<KickSwitch>,
}

/// Live connections by client id, so a reconnecting device replaces its old
/// connection and a deleted or rotated device can be cut.
#[derive(Default)]
struct Sessions {
    by_client_id: Mutex<HashMap<Arc<str>, LiveSession>>,
    serial: AtomicU64,
}

/// Removes its connection from [`Sessions`] when the connection ends.
struct SessionGuard {
    sessions: Arc<Sessions>,
    client_id: Arc<str>,
    serial: u64,
    switch: Arc<KickSwitch>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, LiveSession>> {
        self.by_client_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection, ending the one that held the client id.
    fn open(self: &Arc<Self>, client_id: &str, device_id: Uuid) -> SessionGuard {
        let client_id: Arc<str> = Arc::from(client_id);
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let switch = Arc::new(KickSwitch::default());
        let previous = self.lock().insert(
            client_id.clone(),
            LiveSession {
                device_id,
                serial,
                switch: switch.clone(),
            },
        );
        if let Some(previous) = previous {
            previous.switch.kick(Kick::TakenOver);
        }
        SessionGuard {
            sessions: self.clone(),
            client_id,
            serial,
            switch,
        }
    }

    /// Ends every connection of a device; returns their client ids.
    fn cut(&self, device_id: Uuid) -> Vec<Arc<str>> {
        let mut sessions = self.lock();
        let mut cut = Vec::new();
        sessions.retain(|client_id, session| {
            if session.device_id != device_id {
                return true;
            }
            session.switch.kick(Kick::Revoked);
            cut.push(client_id.clone());
            false
        });
        cut
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut sessions = self.sessions.lock();
        if sessions
            .get(&self.client_id)
            .is_some_and(|s| s.serial == self.serial)
        {
            sessions.remove(&self.client_id);
        }
    }
}

/// What every connection shares.
struct Shared {
    auth: DeviceAuth,
    ingest: Ingest,
    sessions: Arc<Sessions>,
    limits: BuiltinLimits,
    /// One permit per logged-in connection (PLANTOPS_MQTT_MAX_CONNECTIONS).
    connections: Arc<Semaphore>,
    /// Logins refused because every device slot was taken.
    full: RefusalLog,
    /// Connections not yet logged in, on every listener together.
    logins: Arc<PendingLogins>,
    /// Connections refused for want of a login place, in all or for their
    /// address.
    no_login_place: RefusalLog,
    no_login_place_for_address: RefusalLog,
    /// Becomes true when the broker stops.
    stopping: watch::Receiver<bool>,
}

/// Logs a recurring refusal once a minute, not once per connection.
struct RefusalLog {
    what: &'static str,
    setting: &'static str,
    last: Mutex<OncePer>,
}

impl RefusalLog {
    fn new(what: &'static str, setting: &'static str) -> Self {
        Self {
            what,
            setting,
            last: Mutex::new(OncePer::minute()),
        }
    }

    fn refused(&self, peer: SocketAddr, limit: usize) {
        let due = self.last.lock().unwrap_or_else(|e| e.into_inner()).due();
        if due {
            tracing::warn!(%peer, limit, "{} refused: {} reached (logged once a minute)", self.what, self.setting);
        }
    }
}

/// Connections accepted and not yet logged in: at most so many in all and
/// so many per address.
struct PendingLogins {
    slots: Arc<Semaphore>,
    by_address: Mutex<HashMap<AddressKey, usize>>,
    per_address: usize,
}

/// A connection's place among the pending logins, given back on drop.
pub(crate) struct PendingLogin {
    _slot: tokio::sync::OwnedSemaphorePermit,
    logins: Arc<PendingLogins>,
    address: AddressKey,
}

/// Why a connection was not taken in.
#[derive(Debug, PartialEq, Eq)]
enum NotAdmitted {
    AllSlots,
    Address,
}

impl PendingLogins {
    fn new(limits: &BuiltinLimits) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(limits.max_pending_logins)),
            by_address: Mutex::default(),
            per_address: limits.max_pending_logins_per_address,
        })
    }

    fn admit(self: &Arc<Self>, address: std::net::IpAddr) -> Result<PendingLogin, NotAdmitted> {
        let address = AddressKey::from(address);
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| NotAdmitted::AllSlots)?;
        let mut by_address = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        let pending = by_address.entry(address).or_insert(0);
        if *pending >= self.per_address {
            return Err(NotAdmitted::Address);
        }
        *pending += 1;
        Ok(PendingLogin {
            _slot: slot,
            logins: self.clone(),
            address,
        })
    }
}

impl Drop for PendingLogin {
    fn drop(&mut self) {
        let mut by_address = self
            .logins
            .by_address
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(pending) = by_address.get_mut(&self.address) {
            *pending -= 1;
            if *pending == 0 {
                by_address.remove(&self.address);
            }
        }
    }
}

pub struct BuiltinBroker {
    sessions: Arc<Sessions>,
    /// The connection permits, all back once every connection has ended.
    connections: Arc<Semaphore>,
    /// Keeps ingestion's queue open after the connections have ended at a
    /// graceful stop: the batcher ends only when the server does (ending
    /// earlier would be reported as a failed task).
    _ingest: Ingest,
    max_connections: usize,
    stop: watch::Sender<bool>,
    listeners: Vec<tokio::task::JoinHandle<()>>,
    plain_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
}

impl BuiltinBroker {
    /// Starts the listeners; logins are checked against `credentials`
    /// (the store).
    pub async fn start(
        config: BuiltinConfig,
        credentials: Arc<dyn CredentialLookup>,
        ingest: Ingest,
    ) -> Result<Arc<Self>, StartError> {
        if config.plain.is_none() && config.tls.is_none() {
            return Err(StartError::NoListener);
        }
        let tls = match &config.tls {
            Some(tls) => Some((
                bind(&tls.listener).await?,
                tls_acceptor(&tls.cert, &tls.key)?,
            )),
            None => None,
        };
        let plain = match &config.plain {
            Some(listener) => Some(bind(listener).await?),
            None => None,
        };
        let (stop, stopping) = watch::channel(false);
        let sessions = Arc::new(Sessions::default());
        let connections = Arc::new(Semaphore::new(config.limits.max_connections));
        let kept_ingest = ingest.clone();
        let shared = Arc::new(Shared {
            auth: DeviceAuth {
                store: credentials,
                failures: FailedLogins::default(),
                max_keep_alive_secs: config.limits.max_keep_alive_secs,
            },
            ingest,
            sessions: sessions.clone(),
            limits: config.limits,
            connections: connections.clone(),
            full: RefusalLog::new("device logins", "PLANTOPS_MQTT_MAX_CONNECTIONS"),
            logins: PendingLogins::new(&config.limits),
            no_login_place: RefusalLog::new("connections", "PLANTOPS_MQTT_MAX_PENDING_LOGINS"),
            no_login_place_for_address: RefusalLog::new(
                "connections from one address",
                "PLANTOPS_MQTT_MAX_PENDING_LOGINS_PER_ADDRESS",
            ),
            stopping,
        });
        let mut listeners = Vec::new();
        let plain_addr = plain.as_ref().and_then(|l| l.local_addr().ok());
        let tls_addr = tls.as_ref().and_then(|(l, _)| l.local_addr().ok());
        if let (Some(listener), Some(addr)) = (plain, plain_addr) {
            tracing::info!(%addr, "built-in MQTT broker listening");
            listeners.push(tokio::spawn(accept(listener, None, shared.clone())));
        }
        if let (Some((listener, acceptor)), Some(addr)) = (tls, tls_addr) {
            tracing::info!(%addr, "built-in MQTT broker listening (TLS)");
            listeners.push(tokio::spawn(accept(listener, Some(acceptor), shared)));
        }
        Ok(Arc::new(Self {
            sessions,
            connections,
            _ingest: kept_ingest,
            max_connections: config.limits.max_connections,
            stop,
            listeners,
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

    fn cut(&self, device_id: Uuid) {
        for client_id in self.sessions.cut(device_id) {
            tracing::info!(%device_id, %client_id, "disconnecting device session");
        }
    }
}

/// Lets a recurring event through once per period (a flood of refused
/// connections is one log line a minute, not one per connection).
struct OncePer {
    period: std::time::Duration,
    last: Option<tokio::time::Instant>,
}

impl OncePer {
    fn minute() -> Self {
        Self {
            period: std::time::Duration::from_secs(60),
            last: None,
        }
    }

    fn due(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        if self.last.is_some_and(|last| now - last < self.period) {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// Resolves once the broker stops.
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    // The borrow `wait_for` returns must not live across an await.
    let _ = stopping.wait_for(|stop| *stop).await.map(|_| ());
}

/// Accepts connections until the broker stops; each runs in its own task.
async fn accept(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    let mut stopping = shared.stopping.clone();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: pause rather than spin.
                    tracing::warn!(%error, "built-in broker cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut stopping) => return,
        };
        let deadline = tokio::time::Instant::now() + connection::LOGIN_DEADLINE;
        let pending = match shared.logins.admit(peer.ip()) {
            Ok(pending) => pending,
            Err(NotAdmitted::AllSlots) => {
                let limit = shared.limits.max_pending_logins;
                shared.no_login_place.refused(peer, limit);
                continue;
            }
            Err(NotAdmitted::Address) => {
                let limit = shared.limits.max_pending_logins_per_address;
                shared.no_login_place_for_address.refused(peer, limit);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        // Plain and TLS connections are separate tasks, so a plain one does
        // not carry room for a TLS session in its future.
        match tls.clone() {
            None => tokio::spawn(async move {
                connection::serve(stream, peer, &shared, pending, deadline).await;
            }),
            Some(acceptor) => tokio::spawn(async move {
                match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        connection::serve(stream, peer, &shared, pending, deadline).await
                    }
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }),
        };
    }
}

#[async_trait]
impl Broker for BuiltinBroker {
    fn kind(&self) -> &'static str {
        "builtin"
    }

    fn state(&self) -> LinkState {
        if self.listeners.iter().any(|task| task.is_finished()) {
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
        self.cut(device_id);
        Ok(())
    }

    async fn remove_device(&self, device_id: Uuid, _: &str) -> Result<(), BrokerError> {
        self.cut(device_id);
        Ok(())
    }

    /// Stops accepting connections; each connection stops reading, waits
    /// for what it handed to ingestion to be committed, sends those
    /// PUBACKs and closes. Returns once every connection has ended (or
    /// after [`STOP_GRACE`], when the store does not answer).
    async fn leave(&self, _others_remain: bool) {
        let _ = self.stop.send(true);
        let max = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let all_ended = self.connections.acquire_many(max);
        if tokio::time::timeout(STOP_GRACE, all_ended).await.is_err() {
            tracing::warn!(
                "connections still waiting for their commits after {} s; closing them unacknowledged",
                STOP_GRACE.as_secs()
            );
        }
    }
}

/// How long a stopping broker waits for its connections' commits.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

impl Drop for BuiltinBroker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

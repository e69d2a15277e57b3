//! Broker access: the seam between PlantOps and the MQTT broker devices talk
//! to, whichever it is (built-in or an external Mosquitto).

#![forbid(unsafe_code)]

use async_trait::async_trait;
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    #[error("broker refused the request: {0}")]
    Refused(String),
}

/// How the link to the broker is doing, for `/api/health` and `/api/ready`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkState {
    pub up: bool,
    pub message: String,
}

/// Device access on the broker. The built-in broker checks the store itself,
/// so for it adding a device is free; Mosquitto is provisioned at runtime.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// `"builtin"` or `"mosquitto"`.
    fn kind(&self) -> &'static str;
    fn state(&self) -> LinkState;
    /// Makes a newly registered device's credentials work at once.
    async fn add_device(
        &self,
        device_id: Uuid,
        username: &str,
        password: &str,
    ) -> Result<(), BrokerError>;
    /// Replaces the password; sessions opened with the old one are cut.
    async fn set_password(
        &self,
        device_id: Uuid,
        username: &str,
        password: &str,
    ) -> Result<(), BrokerError>;
    /// Removes the device's access and disconnects it.
    async fn remove_device(&self, device_id: Uuid, username: &str) -> Result<(), BrokerError>;
    /// At a graceful stop: stop taking device messages, store and
    /// acknowledge the ones in hand, disconnect. With `others_remain`,
    /// another instance takes this one's share of the devices' messages
    /// from now on; without, the broker is to keep queueing them for this
    /// instance until it is back.
    async fn leave(&self, others_remain: bool);
}

pub mod builtin;
pub mod certs;
pub mod ingest;
pub mod mosquitto;
pub mod presence;

/// Selects ring as the process's TLS crypto provider (several crates link
/// rustls; without one chosen, the first TLS handshake would panic).
/// A TLS transport trusting `ca` (PEM), or the system's roots without one;
/// `setting` names the file's setting in the error.
pub fn tls_transport(
    ca: Option<&std::path::Path>,
    setting: &str,
) -> Result<rumqttc::Transport, BrokerError> {
    let tls = match ca {
        Some(path) => rumqttc::TlsConfiguration::Simple {
            ca: std::fs::read(path).map_err(|e| {
                BrokerError::Unavailable(format!("cannot read {setting} {}: {e}", path.display()))
            })?,
            alpn: None,
            client_auth: None,
        },
        None => rumqttc::TlsConfiguration::default(),
    };
    Ok(rumqttc::Transport::Tls(tls))
}

pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

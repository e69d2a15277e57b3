//! A small client for PlantOps' own HTTP API and device MQTT connections,
//! shared by `simulate` and `bench`.

use std::time::Duration;

use anyhow::{bail, Context};
use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

/// What a device needs to connect: the answer of `POST /devices/register`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceCredentials {
    pub mac_address: String,
    pub device_id: Uuid,
    pub mqtt_username: String,
    pub mqtt_password: String,
}

/// Where the server tells devices to connect.
#[derive(Debug, Clone)]
pub struct BrokerEndpoint {
    pub host: String,
    pub port: Option<u16>,
    pub tls_port: Option<u16>,
}

/// The answer to a registration: credentials (unless the MAC was already
/// registered and the password is therefore not shown) and the endpoint.
pub struct Registration {
    pub device_id: Uuid,
    pub mqtt_username: String,
    pub password: Option<String>,
    pub endpoint: BrokerEndpoint,
}

/// What the tools send to a server that requires sign-in (docs/security.md).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ApiCredentials {
    /// API token (`plantops token create --scope full`) sent with every
    /// request; an admin's also registers devices.
    #[arg(long, env = "PLANTOPS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Enrollment key devices register with (`pek_…`); without one,
    /// registration uses the token, or needs the enrollment window open.
    #[arg(long, env = "PLANTOPS_ENROLLMENT_KEY", hide_env_values = true)]
    pub enrollment_key: Option<String>,
}

fn bearer(secret: &str, flag: &str) -> anyhow::Result<reqwest::header::HeaderValue> {
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", secret.trim()))
        .map_err(|_| anyhow::anyhow!("{flag} holds characters a header cannot carry"))?;
    value.set_sensitive(true);
    Ok(value)
}

#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    enrollment_key: Option<reqwest::header::HeaderValue>,
}

impl Api {
    pub fn new(base_url: &str, credentials: &ApiCredentials) -> anyhow::Result<Self> {
        let base = base_url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--url must start with http:// or https:// (got {base_url})");
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &credentials.token {
            headers.insert(reqwest::header::AUTHORIZATION, bearer(token, "--token")?);
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .default_headers(headers)
            .build()
            .context("cannot build the HTTP client")?;
        let enrollment_key = credentials
            .enrollment_key
            .as_deref()
            .map(|key| bearer(key, "--enrollment-key"))
            .transpose()?;
        Ok(Self {
            base,
            http,
            enrollment_key,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api{path}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let response = request
            .send()
            .await
            .with_context(|| format!("{what}: cannot reach {}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == reqwest::StatusCode::UNAUTHORIZED {
            bail!(
                "{what}: {status} {} (pass --token / PLANTOPS_TOKEN, and --enrollment-key / PLANTOPS_ENROLLMENT_KEY for registration)",
                body.get("detail").unwrap_or(&body)
            );
        }
        if !status.is_success() {
            bail!("{what}: {status} {}", body.get("detail").unwrap_or(&body));
        }
        Ok(body)
    }

    /// Waits until `/api/ready` answers 200, or fails after `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(response) = self.http.get(self.url("/ready")).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{} did not become ready within {timeout:?}", self.base);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn register(&self, mac_address: &str) -> anyhow::Result<Registration> {
        let mut request = self.http.post(self.url("/devices/register"));
        if let Some(key) = &self.enrollment_key {
            request = request.header(reqwest::header::AUTHORIZATION, key.clone());
        }
        let body = self
            .send(
                request.json(&json!({
                    "mac_address": mac_address,
                    "firmware_version": concat!("plantops-sim/", env!("CARGO_PKG_VERSION")),
                    "sensor_types": ["soil_moisture", "temperature", "humidity", "light_level"],
                })),
                "register device",
            )
            .await?;
        let field = |name: &str| {
            body.get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
                .with_context(|| format!("register device: answer lacks {name}"))
        };
        let password = field("mqtt_password")?;
        let port = |name: &str| body.get(name).and_then(Value::as_u64).map(|p| p as u16);
        Ok(Registration {
            device_id: field("device_id")?
                .parse()
                .context("register device: device_id")?,
            mqtt_username: field("mqtt_username")?,
            password: (password != "<stored_securely>").then_some(password),
            endpoint: BrokerEndpoint {
                host: field("mqtt_host")?,
                port: port("mqtt_port"),
                tls_port: port("mqtt_tls_port"),
            },
        })
    }

    /// Working credentials for the device with this MAC, registering it if
    /// needed: the fresh password, else the one `known` holds for the same
    /// device, else — our own simulated device, password not kept — a
    /// rotated one.
    pub async fn device_credentials(
        &self,
        mac_address: &str,
        known: Option<&DeviceCredentials>,
    ) -> anyhow::Result<(DeviceCredentials, BrokerEndpoint)> {
        let registration = self.register(mac_address).await?;
        let password = match (registration.password, known) {
            (Some(fresh), _) => fresh,
            (None, Some(known)) if known.device_id == registration.device_id => {
                known.mqtt_password.clone()
            }
            (None, _) => self.rotate(registration.device_id).await?,
        };
        let credentials = DeviceCredentials {
            mac_address: mac_address.to_string(),
            device_id: registration.device_id,
            mqtt_username: registration.mqtt_username,
            mqtt_password: password,
        };
        Ok((credentials, registration.endpoint))
    }

    /// A fresh password for a device whose password is not known here.
    pub async fn rotate(&self, device_id: Uuid) -> anyhow::Result<String> {
        let body = self
            .send(
                self.http
                    .post(self.url(&format!("/devices/{device_id}/rotate-credentials"))),
                "rotate credentials",
            )
            .await?;
        body.get("mqtt_password")
            .and_then(Value::as_str)
            .map(str::to_string)
            .context("rotate credentials: answer lacks mqtt_password")
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(self.url(path)), path).await
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.post(self.url(path)).json(&body), path)
            .await
    }

    pub async fn ca_pem(&self) -> anyhow::Result<Vec<u8>> {
        let response = self
            .http
            .get(self.url("/mqtt/ca"))
            .send()
            .await
            .context("fetch the broker CA")?;
        if !response.status().is_success() {
            bail!(
                "fetch the broker CA: {} (pass --ca with the broker's CA file)",
                response.status()
            );
        }
        Ok(response.bytes().await?.to_vec())
    }
}

/// MQTT options for one device; `ca` selects TLS.
pub fn mqtt_options(
    credentials: &DeviceCredentials,
    host: &str,
    port: u16,
    ca: Option<&[u8]>,
    keep_alive: Duration,
) -> MqttOptions {
    let mut options = MqttOptions::new(credentials.device_id.to_string(), host, port);
    options.set_credentials(&credentials.mqtt_username, &credentials.mqtt_password);
    options.set_keep_alive(keep_alive);
    if let Some(ca) = ca {
        options.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca: ca.to_vec(),
            alpn: None,
            client_auth: None,
        }));
    }
    options
}

/// Turns off Nagle's algorithm: with it every QoS 1 round trip waits ~40 ms
/// for a delayed ACK.
pub fn without_nagle(eventloop: &mut rumqttc::EventLoop) {
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
}

/// A locally administered MAC address numbered `index` within a run's
/// `prefix` (so two simulators can run side by side).
pub fn simulated_mac(prefix: u16, index: u32) -> String {
    let [p1, p2] = prefix.to_be_bytes();
    let [_, i1, i2, i3] = index.to_be_bytes();
    format!("02:{p1:02x}:{p2:02x}:{i1:02x}:{i2:02x}:{i3:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_macs_are_valid_and_distinct() {
        let a = simulated_mac(0x504f, 1);
        let b = simulated_mac(0x504f, 256);
        assert_eq!(a, "02:50:4f:00:00:01");
        assert_ne!(a, b);
        assert!(plantops_core::device::MacAddress::parse(&b).is_some());
    }
}

//! Drives a real `plantops serve` process over TCP: HTTP with reqwest,
//! MQTT with rumqttc.

pub mod discord;
pub mod llm;
pub mod mosquitto;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

pub struct Server {
    pub child: Child,
    pub http: String,
    pub mqtt_port: u16,
    pub mqtts_port: u16,
    pub client: reqwest::Client,
}

pub struct Ports {
    pub http: u16,
    pub mqtt: u16,
    pub mqtts: u16,
}

impl Ports {
    pub fn free() -> Self {
        Self {
            http: plantops_testkit::free_port(),
            mqtt: plantops_testkit::free_port(),
            mqtts: plantops_testkit::free_port(),
        }
    }
}

pub fn plantops() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_plantops"));
    for var in [
        "DATABASE_URL",
        "MQTT_HOST",
        "PLANTOPS_DATA_DIR",
        "LOG_FORMAT",
    ] {
        command.env_remove(var);
    }
    command
}

impl Server {
    /// The `plantops serve` command for these ports and data directory.
    pub fn command(data_dir: &Path, ports: &Ports, env: &[(&str, &str)]) -> Command {
        let mut command = plantops();
        command
            .arg("serve")
            .env("PLANTOPS_DATA_DIR", data_dir)
            .env("PLANTOPS_HTTP_ADDR", format!("127.0.0.1:{}", ports.http))
            .env("PLANTOPS_MQTT_ADDR", format!("127.0.0.1:{}", ports.mqtt))
            .env("PLANTOPS_MQTTS_ADDR", format!("127.0.0.1:{}", ports.mqtts))
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        command
    }

    /// Starts `plantops serve` with the built-in broker and waits until it
    /// answers `/api/ready`.
    pub async fn start(data_dir: &Path, ports: &Ports, env: &[(&str, &str)]) -> Server {
        Self::launch(Self::command(data_dir, ports, env), ports).await
    }

    pub async fn launch(mut command: Command, ports: &Ports) -> Server {
        plantops_mqtt::install_crypto_provider();
        let child = command.spawn().expect("spawn plantops");
        let server = Server {
            child,
            http: format!("http://127.0.0.1:{}", ports.http),
            mqtt_port: ports.mqtt,
            mqtts_port: ports.mqtts,
            client: reqwest::Client::new(),
        };
        server.wait_ready().await;
        server
    }

    pub async fn wait_ready(&self) {
        for _ in 0..300 {
            if let Ok(response) = self
                .client
                .get(format!("{}/api/ready", self.http))
                .send()
                .await
            {
                if response.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("plantops did not become ready");
    }

    pub async fn kill(&mut self) {
        self.child.kill().await.expect("SIGKILL plantops");
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.http))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send_json(reqwest::Method::POST, path, body).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send_json(reqwest::Method::PUT, path, body).await
    }

    async fn send_json(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .request(method, format!("{}{path}", self.http))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, path: &str) -> u16 {
        let response = self
            .client
            .delete(format!("{}{path}", self.http))
            .send()
            .await
            .unwrap();
        response.status().as_u16()
    }

    pub async fn register(&self, mac: &str) -> Credentials {
        let (status, body) = self
            .post("/api/devices/register", json!({ "mac_address": mac }))
            .await;
        assert_eq!(status, 200, "{body}");
        Credentials {
            device_id: body["device_id"].as_str().unwrap().to_string(),
            username: body["mqtt_username"].as_str().unwrap().to_string(),
            password: body["mqtt_password"].as_str().unwrap().to_string(),
        }
    }

    /// Registers a device and assigns it to `plant_id`.
    pub async fn register_for(&self, mac: &str, plant_id: &str) -> Credentials {
        let device = self.register(mac).await;
        let (status, body) = self
            .post(
                &format!("/api/devices/{}/provision", device.device_id),
                json!({ "plant_id": plant_id }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        device
    }

    pub async fn ca_pem(&self) -> Vec<u8> {
        let response = self
            .client
            .get(format!("{}/api/mqtt/ca", self.http))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        response.bytes().await.unwrap().to_vec()
    }
}

#[derive(Debug, Clone)]
pub struct Credentials {
    pub device_id: String,
    pub username: String,
    pub password: String,
}

/// MQTT options for a device; `ca` selects TLS.
pub fn device_options(
    creds: &Credentials,
    port: u16,
    ca: Option<Vec<u8>>,
    client_id: &str,
) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, "localhost", port);
    options.set_credentials(&creds.username, &creds.password);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(false);
    if let Some(ca) = ca {
        options.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth: None,
        }));
    }
    options
}

/// What the broker answered to a connection attempt.
#[derive(Debug, PartialEq)]
pub enum Connack {
    Accepted,
    Refused(String),
}

/// Connects and returns the client once the broker accepted (or refused).
pub async fn connect(options: MqttOptions) -> (AsyncClient, EventLoop, Connack) {
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    // Without it, Nagle and delayed ACKs hold every QoS 1 round trip ~40 ms.
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let outcome = loop {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                break if ack.code == rumqttc::ConnectReturnCode::Success {
                    Connack::Accepted
                } else {
                    Connack::Refused(format!("{:?}", ack.code))
                };
            }
            Ok(Ok(_)) => continue,
            Ok(Err(error)) => break Connack::Refused(error.to_string()),
            Err(_) => panic!("no CONNACK within 10 s"),
        }
    };
    (client, eventloop, outcome)
}

/// Publishes at QoS 1 and waits for the PUBACK.
pub async fn publish_acked(
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    topic: &str,
    payload: Value,
) {
    client
        .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => return,
            Ok(Ok(_)) => continue,
            Ok(Err(error)) => panic!("connection failed before PUBACK: {error}"),
            Err(_) => panic!("no PUBACK within 10 s"),
        }
    }
}

/// Polls until the connection ends; returns how it ended.
pub async fn closed(eventloop: &mut EventLoop) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(_)) => continue,
            Ok(Err(error)) => return error.to_string(),
            Err(_) => panic!("connection still open after 10 s"),
        }
    }
}

//! Drives a real `plantops serve` process over TCP: HTTP with reqwest,
//! MQTT with rumqttc.

pub mod discord;
pub mod llm;
pub mod mosquitto;
pub mod services;
pub mod smtp;

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
    /// Sends the admin token (when the server requires sign-in).
    pub client: reqwest::Client,
    /// A full API token of the `admin` account (password `admin-password`);
    /// `None` when the server runs with PLANTOPS_AUTH=off.
    pub token: Option<String>,
}

/// The admin account every test server gets, and where its token is kept
/// so that a restarted server reuses it.
pub const ADMIN_PASSWORD: &str = "admin-password";
const TOKEN_FILE: &str = "test-admin-token";

/// Runs `plantops ARGS` with the settings (database, data directory) of a
/// `serve` command, feeding `stdin`; returns stdout.
pub async fn run_like(serve: &Command, args: &[&str], stdin: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let mut command = plantops();
    for (name, value) in serve.as_std().get_envs() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plantops");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "plantops {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The admin's token for the server `serve` starts: created once through
/// `plantops user add` and `plantops token create` (while it runs), kept in
/// its data directory.
async fn admin_token(serve: &Command) -> Option<String> {
    let env = |name: &str| {
        serve
            .as_std()
            .get_envs()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
    };
    if env("PLANTOPS_AUTH").as_deref() == Some("off") {
        return None;
    }
    let file = Path::new(&env("PLANTOPS_DATA_DIR").expect("a data directory")).join(TOKEN_FILE);
    if let Ok(token) = std::fs::read_to_string(&file) {
        return Some(token);
    }
    run_like(
        serve,
        &[
            "user",
            "add",
            "admin",
            "--role",
            "admin",
            "--password-stdin",
        ],
        &format!("{ADMIN_PASSWORD}\n"),
    )
    .await;
    let token = run_like(
        serve,
        &[
            "token", "create", "--user", "admin", "--name", "tests", "--scope", "full",
        ],
        "",
    )
    .await;
    let token = token.trim().to_string();
    std::fs::write(&file, &token).unwrap();
    Some(token)
}

/// An HTTP client that sends `token` as a bearer token.
pub fn client_with(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

#[derive(Clone)]
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
        let mut server = Server {
            child,
            http: format!("http://127.0.0.1:{}", ports.http),
            mqtt_port: ports.mqtt,
            mqtts_port: ports.mqtts,
            client: reqwest::Client::new(),
            token: None,
        };
        server.wait_ready().await;
        server.token = admin_token(&command).await;
        server.client = client_with(server.token.as_deref());
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

    /// Sends SIGTERM, as an upgrade, `systemctl restart` or `docker stop` do.
    pub fn signal_stop(&self) {
        let pid = self.child.id().expect("plantops runs").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn terminate(&mut self) {
        self.signal_stop();
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("plantops stops after SIGTERM")
            .unwrap();
        assert!(exit.success(), "{exit}");
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

    /// `/metrics` in Prometheus' text format, read with the admin's token.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.http))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
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

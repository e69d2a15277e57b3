//! `plantops simulate`: simulated sensor devices that register through the
//! HTTP API and publish telemetry and heartbeats over MQTT, like firmware.

pub mod model;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
use serde_json::json;
use tokio::sync::watch;

use crate::api_client::{self, Api, DeviceCredentials};
use model::SimulatedPlant;

const SPECIES: [&str; 6] = [
    "Monstera deliciosa",
    "Ficus lyrata",
    "Sansevieria trifasciata",
    "Epipremnum aureum",
    "Calathea orbifolia",
    "Ocimum basilicum",
];

pub fn positive_seconds(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.001 => Ok(secs),
        _ => Err(format!("expected a number of seconds ≥ 0.001, got {raw:?}")),
    }
}

fn share(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("expected a share between 0 and 1, got {raw:?}")),
    }
}

/// Simulated devices for a running PlantOps server.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The server's HTTP address.
    #[arg(long, env = "PLANTOPS_URL", default_value = "http://127.0.0.1:8000")]
    pub url: String,
    #[command(flatten)]
    pub credentials_for_api: crate::api_client::ApiCredentials,
    /// How many devices to simulate.
    #[arg(long, short = 'n', default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub devices: u32,
    /// Seconds between a device's readings.
    #[arg(long, default_value = "10", value_parser = positive_seconds)]
    pub interval: f64,
    /// Seconds between a device's heartbeats.
    #[arg(long, default_value = "60", value_parser = positive_seconds)]
    pub heartbeat_interval: f64,
    /// Create a plant for every device that has none and assign it.
    #[arg(long)]
    pub create_plants: bool,
    /// JSON file keeping the devices' credentials between runs (written 0600).
    #[arg(long)]
    pub credentials: Option<PathBuf>,
    /// Broker host (default: what the server's registration answer names).
    #[arg(long)]
    pub mqtt_host: Option<String>,
    /// Broker port (default: from the registration answer).
    #[arg(long)]
    pub mqtt_port: Option<u16>,
    /// Connect over TLS, trusting the server's CA (`/api/mqtt/ca`) or --ca.
    #[arg(long)]
    pub tls: bool,
    /// CA certificate (PEM) to trust; implies --tls.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// MQTT QoS for telemetry (existing devices use 0).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Share of readings that breach the thresholds on purpose.
    #[arg(long, default_value = "0.01", value_parser = share)]
    pub breach_rate: f64,
    /// Stop after this many readings per device.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_parser = positive_seconds)]
    pub duration: Option<f64>,
    /// Seed for the random walks and the devices' MAC addresses; two
    /// simulators with different seeds simulate different devices.
    #[arg(long, default_value_t = 1)]
    pub seed: u16,
}

#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    readings: AtomicU64,
    acknowledged: AtomicU64,
    heartbeats: AtomicU64,
    waterings: AtomicU64,
    breaches: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    fn line(&self, devices: u32, elapsed: Duration) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        format!(
            "{}/{devices} connected · {} readings ({} acknowledged) · {} heartbeats · {} waterings · {} breaches · {} errors · {:.0}s",
            get(&self.connected),
            get(&self.readings),
            get(&self.acknowledged),
            get(&self.heartbeats),
            get(&self.waterings),
            get(&self.breaches),
            get(&self.errors),
            elapsed.as_secs_f64(),
        )
    }
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.url, &args.credentials_for_api)?;
    api.wait_ready(Duration::from_secs(10))
        .await
        .with_context(|| format!("is `plantops serve` running at {}?", args.url))?;

    let saved = match &args.credentials {
        Some(path) => load_credentials(path)?,
        None => HashMap::new(),
    };
    let mut devices = Vec::with_capacity(args.devices as usize);
    let mut endpoint = None;
    for index in 1..=args.devices {
        let mac = api_client::simulated_mac(args.seed, index);
        let (credentials, announced) = api.device_credentials(&mac, saved.get(&mac)).await?;
        devices.push(credentials);
        endpoint = Some(announced);
    }
    if let Some(path) = &args.credentials {
        save_credentials(path, &devices)?;
    }
    if args.create_plants {
        create_plants(&api, &devices).await?;
    }

    let endpoint = endpoint.context("no device registered")?;
    let ca = match (&args.ca, args.tls) {
        (Some(path), _) => Some(
            std::fs::read(path).with_context(|| format!("cannot read --ca {}", path.display()))?,
        ),
        (None, true) => Some(api.ca_pem().await?),
        (None, false) => None,
    };
    let host = args.mqtt_host.clone().unwrap_or(endpoint.host);
    let default_port = if ca.is_some() {
        endpoint.tls_port
    } else {
        endpoint.port
    };
    let Some(port) = args.mqtt_port.or(default_port) else {
        bail!(
            "the server announces no {} MQTT port; pass --mqtt-port",
            if ca.is_some() { "TLS" } else { "plain" }
        );
    };
    eprintln!(
        "simulating {} devices against {host}:{port}{} every {}s",
        devices.len(),
        if ca.is_some() { " (TLS)" } else { "" },
        args.interval
    );

    let counters = Arc::new(Counters::default());
    let (stop, stopped) = watch::channel(false);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, credentials) in devices.iter().enumerate() {
        let options = api_client::mqtt_options(
            credentials,
            &host,
            port,
            ca.as_deref(),
            Duration::from_secs(30),
        );
        let device = DeviceRun {
            device_id: credentials.device_id.to_string(),
            plant: SimulatedPlant::new(u64::from(args.seed) << 32 | index as u64, args.breach_rate),
            interval: Duration::from_secs_f64(args.interval),
            heartbeat_interval: Duration::from_secs_f64(args.heartbeat_interval),
            qos: if args.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            count: args.count,
            counters: counters.clone(),
        };
        tasks.spawn(device.run(options, stopped.clone()));
    }

    let interactive = std::io::stderr().is_terminal();
    let mut progress = tokio::time::interval(if interactive {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    });
    progress.tick().await;
    let deadline = args.duration.map(Duration::from_secs_f64);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut stopping = false;
    loop {
        tokio::select! {
            finished = tasks.join_next() => {
                match finished {
                    Some(Ok(())) => continue,
                    Some(Err(error)) => bail!("a simulated device failed: {error}"),
                    None => break,
                }
            }
            _ = &mut ctrl_c, if !stopping => {
                stopping = true;
                let _ = stop.send(true);
            }
            _ = progress.tick() => {
                if deadline.is_some_and(|d| started.elapsed() >= d) && !stopping {
                    stopping = true;
                    let _ = stop.send(true);
                }
                let line = counters.line(args.devices, started.elapsed());
                if interactive {
                    eprint!("\r\x1b[2K{line}");
                } else {
                    eprintln!("{line}");
                }
            }
        }
    }
    if interactive {
        eprintln!();
    }
    let elapsed = started.elapsed();
    let readings = counters.readings.load(Ordering::Relaxed);
    println!(
        "summary: {} · {:.1} readings/s",
        counters.line(args.devices, elapsed),
        readings as f64 / elapsed.as_secs_f64().max(0.001)
    );
    Ok(())
}

struct DeviceRun {
    device_id: String,
    plant: SimulatedPlant,
    interval: Duration,
    heartbeat_interval: Duration,
    qos: QoS,
    count: Option<u64>,
    counters: Arc<Counters>,
}

impl DeviceRun {
    async fn run(mut self, options: rumqttc::MqttOptions, mut stopped: watch::Receiver<bool>) {
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        api_client::without_nagle(&mut eventloop);
        let telemetry_topic = plantops_core::topic::telemetry(&self.device_id);
        let heartbeat_topic = plantops_core::topic::heartbeat(&self.device_id);
        // Devices do not all wake at the same instant.
        let jitter = self.interval.mul_f64(rand::random::<f64>());
        let mut readings =
            tokio::time::interval_at(tokio::time::Instant::now() + jitter, self.interval);
        readings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeats = tokio::time::interval(self.heartbeat_interval);
        let booted = Instant::now();
        let mut last_step = chrono::Utc::now();
        let mut sent = 0u64;
        let mut unacknowledged = 0u64;
        let mut connected = false;
        let mut finishing = false;
        let mut finish_deadline = None;

        loop {
            let done_publishing = self.count.is_some_and(|count| sent >= count);
            finishing |= done_publishing;
            if finishing {
                let deadline = *finish_deadline
                    .get_or_insert_with(|| tokio::time::Instant::now() + Duration::from_secs(10));
                if unacknowledged == 0 || !connected || tokio::time::Instant::now() > deadline {
                    break;
                }
            }
            tokio::select! {
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        self.counters.connected.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        unacknowledged = unacknowledged.saturating_sub(1);
                        self.counters.acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        if connected {
                            self.counters.connected.fetch_sub(1, Ordering::Relaxed);
                        }
                        connected = false;
                        self.counters.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(device = %self.device_id, %error, "connection lost; reconnecting");
                        // rumqttc reconnects on the next poll; do not spin.
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = stopped.changed() => finishing = true,
                        }
                    }
                },
                _ = readings.tick(), if connected && !finishing && !done_publishing => {
                    let now = plantops_core::now();
                    let elapsed = (now - last_step).num_milliseconds().max(0) as f64 / 1000.0;
                    last_step = now;
                    let sample = self.plant.step(now, elapsed);
                    let payload = model::telemetry_payload(now, &sample.values);
                    if client.try_publish(&telemetry_topic, self.qos, false, payload).is_ok() {
                        sent += 1;
                        if self.qos == QoS::AtLeastOnce {
                            unacknowledged += 1;
                        }
                        self.counters.readings.fetch_add(1, Ordering::Relaxed);
                        self.counters.waterings.fetch_add(u64::from(sample.watered), Ordering::Relaxed);
                        self.counters.breaches.fetch_add(u64::from(sample.breach), Ordering::Relaxed);
                    } else {
                        self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ = heartbeats.tick(), if connected && !finishing => {
                    let payload = model::heartbeat_payload(
                        chrono::Utc::now(),
                        booted.elapsed().as_secs(),
                        -40 - (rand::random::<u8>() % 40) as i32,
                    );
                    if client.try_publish(&heartbeat_topic, QoS::AtMostOnce, false, payload).is_ok() {
                        self.counters.heartbeats.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ = stopped.changed(), if !finishing => finishing = true,
            }
        }
        if connected {
            // Send DISCONNECT after whatever is still queued, then close.
            let _ = client.try_disconnect();
            let flushed = async {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), flushed).await;
            self.counters.connected.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn load_credentials(path: &Path) -> anyhow::Result<HashMap<String, DeviceCredentials>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    let devices: Vec<DeviceCredentials> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a simulator credentials file", path.display()))?;
    Ok(devices
        .into_iter()
        .map(|device| (device.mac_address.clone(), device))
        .collect())
}

fn save_credentials(path: &Path, devices: &[DeviceCredentials]) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(devices)?;
    plantops_mqtt::certs::write_private(path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

async fn create_plants(api: &Api, devices: &[DeviceCredentials]) -> anyhow::Result<()> {
    let mut created = 0;
    for (index, device) in devices.iter().enumerate() {
        let current = api.get(&format!("/devices/{}", device.device_id)).await?;
        if !current["plant_id"].is_null() {
            continue;
        }
        let plant = api
            .post(
                "/plants",
                json!({
                    "name": format!("Simulated plant {}", index + 1),
                    "species": SPECIES[index % SPECIES.len()],
                    "thresholds": model::plant_thresholds(),
                }),
            )
            .await?;
        let plant_id = plant["id"]
            .as_str()
            .context("create plant: answer lacks id")?;
        api.post(
            &format!("/devices/{}/provision", device.device_id),
            json!({ "plant_id": plant_id }),
        )
        .await?;
        created += 1;
    }
    if created > 0 {
        eprintln!("created {created} plants and assigned their devices");
    }
    Ok(())
}

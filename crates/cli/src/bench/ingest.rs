//! `plantops bench ingest`: many devices publishing QoS 1 telemetry as fast
//! as the server acknowledges it. A QoS 1 acknowledgement is sent only after
//! the reading is committed, so publish→PUBACK is publish→commit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
use serde_json::json;

use super::server::{quantile, register_devices, ServerOptions, ServerUnderTest};
use crate::api_client;
use crate::simulate::positive_seconds;

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub server: ServerOptions,
    /// Device connections publishing at once.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connections: u32,
    /// Unacknowledged QoS 1 messages each connection keeps in flight.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub inflight: u16,
    /// Seconds measured after the warm-up.
    #[arg(long, default_value = "10", value_parser = positive_seconds)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value = "3", value_parser = positive_seconds)]
    pub warmup: f64,
    /// Publish over TLS (the announced TLS port, trusting `/api/mqtt/ca`),
    /// as production devices do.
    #[arg(long)]
    pub tls: bool,
    /// Give every device a plant of its own with soil-moisture thresholds,
    /// so every reading is judged (alerting) before it is acknowledged.
    #[arg(long)]
    pub plants: bool,
    /// Send battery and signal with every reading, as the ESPHome
    /// configuration does.
    #[arg(long)]
    pub vitals: bool,

    /// Print the result as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

/// A plant with soil-moisture thresholds for every device (the bench's
/// readings stay inside them: the judging costs, no alert is raised).
async fn give_each_a_plant(
    api: &crate::api_client::Api,
    devices: &[api_client::DeviceCredentials],
) -> anyhow::Result<()> {
    use futures::stream::{self, StreamExt, TryStreamExt};
    stream::iter(devices)
        .map(|device| async move {
            let plant = api
                .post(
                    "/plants",
                    serde_json::json!({
                        "name": format!("Bench {}", device.mac_address),
                        "thresholds": {"soil_moisture": {"min": 20, "max": 80}},
                    }),
                )
                .await?;
            let plant_id = plant["id"].as_str().context("plant without an id")?;
            api.post(
                &format!("/devices/{}/provision", device.device_id),
                serde_json::json!({ "plant_id": plant_id }),
            )
            .await?;
            anyhow::Ok(())
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// What one connection saw.
#[derive(Default)]
struct ConnectionResult {
    published: u64,
    acknowledged: u64,
    /// Acknowledgements that arrived within the measured window.
    acknowledged_measuring: u64,
    latencies_ms: Vec<f64>,
    errors: u64,
}

struct Clock {
    measure_from: Instant,
    measure_until: Instant,
}

pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    let server = ServerUnderTest::start(&args.server).await?;
    let idle = server.memory();
    let stored_before = server.store.count_readings().await?;
    eprintln!(
        "{}: registering {} devices ...",
        server.backend, args.connections
    );
    let (devices, endpoint) = register_devices(&server.api, 0xbe00, args.connections).await?;
    if args.plants {
        give_each_a_plant(&server.api, &devices).await?;
    }
    let (port, ca) = if args.tls {
        let port = endpoint
            .tls_port
            .context("the server announces no MQTT TLS port to benchmark")?;
        (port, Some(server.api.ca_pem().await?))
    } else {
        let port = endpoint
            .port
            .context("the server announces no plain MQTT port to benchmark (try --tls)")?;
        (port, None)
    };

    // Telemetry timestamps: unique per device, in the past, so the
    // idempotent insert keeps every one.
    let base_ms = chrono::Utc::now().timestamp_millis() - 2 * 3600 * 1000;
    let started = Instant::now();
    let clock = Arc::new(Clock {
        measure_from: started + Duration::from_secs_f64(args.warmup),
        measure_until: started + Duration::from_secs_f64(args.warmup + args.duration),
    });
    let connected = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for device in &devices {
        let mut options = api_client::mqtt_options(
            device,
            &endpoint.host,
            port,
            ca.as_deref(),
            Duration::from_secs(60),
        );
        options.set_inflight(args.inflight);
        tasks.spawn(publish_until(
            options,
            plantops_core::topic::telemetry(&device.device_id.to_string()),
            base_ms,
            args.vitals,
            clock.clone(),
            connected.clone(),
        ));
    }
    eprintln!(
        "{} connections publishing: {:.0}s warm-up, {:.0}s measured",
        args.connections, args.warmup, args.duration
    );

    tokio::time::sleep_until(clock.measure_from.into()).await;
    let cpu_before = server.cpu_seconds();
    let own_cpu_before = super::server::process_cpu_seconds("self");
    tokio::time::sleep_until(clock.measure_until.into()).await;
    let cpu_after = server.cpu_seconds();
    let own_cpu_after = super::server::process_cpu_seconds("self");
    let under_load = server.memory();

    let mut total = ConnectionResult::default();
    while let Some(result) = tasks.join_next().await {
        let result = result.context("a benchmark connection panicked")?;
        total.published += result.published;
        total.acknowledged += result.acknowledged;
        total.acknowledged_measuring += result.acknowledged_measuring;
        total.errors += result.errors;
        total.latencies_ms.extend(result.latencies_ms);
    }
    if connected.load(Ordering::Relaxed) < u64::from(args.connections) {
        bail!(
            "only {} of {} connections were accepted",
            connected.load(Ordering::Relaxed),
            args.connections
        );
    }
    // The built-in broker acknowledges after the commit; Mosquitto on
    // receipt, so its readings may still be on their way to the database.
    let drain_started = Instant::now();
    let mut stored = server.store.count_readings().await? - stored_before;
    let mut last_growth = Instant::now();
    while stored < total.acknowledged && last_growth.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = server.store.count_readings().await? - stored_before;
        if now > stored {
            last_growth = Instant::now();
        }
        stored = now;
    }
    let drain_secs = drain_started.elapsed().as_secs_f64();
    total.latencies_ms.sort_by(f64::total_cmp);
    let result = json!({
        "backend": server.backend,
        "instances": server.instances(),
        "vitals": args.vitals,
        "connections": args.connections,
        "inflight": args.inflight,
        "duration_secs": args.duration,
        "readings_per_sec": (total.acknowledged_measuring as f64 / args.duration).round(),
        "p50_ms": round2(quantile(&total.latencies_ms, 0.50)),
        "p99_ms": round2(quantile(&total.latencies_ms, 0.99)),
        "published": total.published,
        "acknowledged": total.acknowledged,
        "stored": stored,
        "drain_secs": round2(drain_secs),
        "lost": total.acknowledged.saturating_sub(stored),
        "unacknowledged": total.published.saturating_sub(total.acknowledged),
        "connection_errors": total.errors,
        "rss_idle_mb": idle.map(|m| round2(m.rss_mb)),
        "rss_mb": under_load.map(|m| round2(m.rss_mb)),
        "rss_peak_mb": under_load.map(|m| round2(m.peak_mb)),
        "server_cpu_percent": cpu_before.zip(cpu_after)
            .map(|(before, after)| ((after - before) / args.duration * 100.0).round()),
        // CPU time per reading acknowledged in the window: what the shared
        // cores cannot blur (the load generator competes for them).
        "server_cpu_us_per_reading": per_reading(cpu_before.zip(cpu_after), total.acknowledged_measuring),
        "loadgen_cpu_us_per_reading": per_reading(own_cpu_before.zip(own_cpu_after), total.acknowledged_measuring),
    });
    server.stop().await?;

    println!(
        "{}: {} readings/s sustained over {:.0}s from {} connections · publish→commit p50 {} ms, p99 {} ms · {} acknowledged, {} stored, {} lost · server RSS {} MB idle, {} MB under load · server CPU {} µs per reading",
        result["backend"].as_str().unwrap_or_default(),
        result["readings_per_sec"],
        args.duration,
        args.connections,
        result["p50_ms"],
        result["p99_ms"],
        result["acknowledged"],
        result["stored"],
        result["lost"],
        result["rss_idle_mb"],
        result["rss_mb"],
        result["server_cpu_us_per_reading"],
    );
    if args.json {
        println!("{result}");
    }
    Ok(())
}

/// Microseconds of CPU per reading, from CPU seconds before and after.
fn per_reading(cpu: Option<(f64, f64)>, readings: u64) -> Option<f64> {
    let (before, after) = cpu?;
    (readings > 0).then(|| round2((after - before) * 1e6 / readings as f64))
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// One device: publishes until the measurement ends, then waits for every
/// acknowledgement and disconnects.
async fn publish_until(
    options: rumqttc::MqttOptions,
    topic: String,
    base_ms: i64,
    vitals: bool,
    clock: Arc<Clock>,
    connected: Arc<AtomicU64>,
) -> ConnectionResult {
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    api_client::without_nagle(&mut eventloop);
    // Handed to the client, sent or not yet: the connection is done when
    // every one of them is acknowledged.
    let queued = Arc::new(AtomicU64::new(0));
    let publisher = {
        let client = client.clone();
        let until = clock.measure_until;
        let queued = queued.clone();
        tokio::spawn(async move {
            let mut sequence = 0i64;
            while Instant::now() < until {
                let vitals = if vitals {
                    format!(r#","battery":{},"rssi":-61"#, 90 - sequence % 20)
                } else {
                    String::new()
                };
                let payload = format!(
                    r#"{{"timestamp":{},"soil_moisture":{:.1},"temperature":21.5,"humidity":55.0,"light_level":{}{vitals}}}"#,
                    base_ms + sequence,
                    30.0 + (sequence % 400) as f64 / 10.0,
                    sequence % 20_000,
                );
                if client
                    .publish(&topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .is_err()
                {
                    break;
                }
                queued.fetch_add(1, Ordering::Relaxed);
                sequence += 1;
            }
        })
    };

    let mut result = ConnectionResult::default();
    let mut sent_at: HashMap<u16, Instant> = HashMap::new();
    let mut publisher_done = false;
    let give_up = clock.measure_until + Duration::from_secs(60);
    loop {
        if publisher_done && result.acknowledged >= queued.load(Ordering::Relaxed) {
            break;
        }
        let event = tokio::select! {
            event = eventloop.poll() => event,
            _ = tokio::time::sleep_until(give_up.into()) => break,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                result.published += 1;
                sent_at.insert(pkid, Instant::now());
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                result.acknowledged += 1;
                let now = Instant::now();
                if now >= clock.measure_from && now < clock.measure_until {
                    result.acknowledged_measuring += 1;
                }
                if let Some(sent) = sent_at.remove(&ack.pkid) {
                    if sent >= clock.measure_from && now < clock.measure_until {
                        result
                            .latencies_ms
                            .push((now - sent).as_secs_f64() * 1000.0);
                    }
                }
            }
            Ok(_) => {}
            Err(_) => {
                result.errors += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        if !publisher_done && publisher.is_finished() {
            publisher_done = true;
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while !matches!(
            eventloop.poll().await,
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_)
        ) {}
    })
    .await;
    result
}

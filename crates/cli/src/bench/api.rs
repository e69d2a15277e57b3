//! `plantops bench api`: latency and throughput of the queries the UI makes,
//! on realistic volumes (by default 100 plants with 30 days of one reading
//! per minute each: 4.3 million rows).

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{self, StreamExt};
use plantops_core::reading::Reading;
use serde_json::{json, Value};
use uuid::Uuid;

use super::server::{quantile, register_devices, ServerOptions, ServerUnderTest};

#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub server: ServerOptions,
    /// Plants (each with one device) to create.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub plants: u32,
    /// Days of history per plant, one reading per minute.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=30))]
    pub days: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
    /// Requests per query.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub requests: u32,
    /// Print the result as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    let server = ServerUnderTest::start(&args.server).await?;
    let plant_ids = seed(&server, &args).await?;
    let memory_after_seeding = server.memory();

    let plant = |i: usize| plant_ids[i % plant_ids.len()];
    let queries = [
        ("list_plants", "/plants?limit=100".to_string()),
        ("plant_detail", "/plants/{id}".to_string()),
        ("history_30d", "/plants/{id}/history?hours=720".to_string()),
        (
            "series_30d",
            "/plants/{id}/series?hours=720&points=500".to_string(),
        ),
    ];
    let mut results = serde_json::Map::new();
    for (name, path) in &queries {
        let paths: Vec<String> = (0..args.requests as usize)
            .map(|i| path.replace("{id}", &plant(i).to_string()))
            .collect();
        let measured = measure(&server, &paths, args.concurrency).await?;
        println!(
            "{name:<13} p50 {:>7.2} ms · p99 {:>7.2} ms · {:>7.0} req/s · {:>8.0} bytes/response",
            measured["p50_ms"].as_f64().unwrap_or(f64::NAN),
            measured["p99_ms"].as_f64().unwrap_or(f64::NAN),
            measured["requests_per_sec"].as_f64().unwrap_or(f64::NAN),
            measured["bytes_per_response"].as_f64().unwrap_or(f64::NAN),
        );
        results.insert((*name).to_string(), measured);
    }
    let memory = server.memory();
    let summary = json!({
        "backend": server.backend,
        "plants": args.plants,
        "days": args.days,
        "rows": u64::from(args.plants) * u64::from(args.days) * 1440,
        "concurrency": args.concurrency,
        "queries": results,
        "rss_mb": memory.map(|m| m.rss_mb.round()),
        "rss_after_seeding_mb": memory_after_seeding.map(|m| m.rss_mb.round()),
    });
    server.stop().await?;
    if args.json {
        println!("{summary}");
    }
    Ok(())
}

/// Plants and devices through the API; the readings straight into the
/// store (the ingest path is what `bench ingest` measures).
async fn seed(server: &ServerUnderTest, args: &ApiArgs) -> anyhow::Result<Vec<Uuid>> {
    let started = Instant::now();
    let (devices, _) = register_devices(&server.api, 0xa910, args.plants).await?;
    let mut plant_ids = Vec::with_capacity(devices.len());
    for (index, device) in devices.iter().enumerate() {
        let plant = server
            .api
            .post(
                "/plants",
                json!({
                    "name": format!("Bench plant {}", index + 1),
                    "species": "Monstera deliciosa",
                    "thresholds": crate::simulate::model::plant_thresholds(),
                }),
            )
            .await?;
        let plant_id: Uuid = plant["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .context("create plant: answer lacks id")?;
        server
            .api
            .post(
                &format!("/devices/{}/provision", device.device_id),
                json!({ "plant_id": plant_id }),
            )
            .await?;
        plant_ids.push(plant_id);
    }

    let minutes = i64::from(args.days) * 1440;
    let now = plantops_core::now();
    let mut batch = Vec::with_capacity(10_000);
    let mut rows = 0u64;
    for (device, plant_id) in devices.iter().zip(&plant_ids) {
        let mut walk = crate::simulate::model::SimulatedPlant::new(rows, 0.0);
        for minute in (1..=minutes).rev() {
            let time = now - chrono::Duration::minutes(minute);
            let sample = walk.step(time, 60.0);
            batch.push(Reading {
                time,
                device_id: device.device_id,
                plant_id: Some(*plant_id),
                values: sample.values,
            });
            if batch.len() == batch.capacity() {
                rows += server.store.commit_batch(&batch, &[]).await?.inserted;
                batch.clear();
            }
        }
        eprint!(
            "\rseeded {rows} readings ({:.0}s)",
            started.elapsed().as_secs_f64()
        );
    }
    rows += server.store.commit_batch(&batch, &[]).await?.inserted;
    // Written behind the server's back: roll the hours up as the server
    // would have while the readings came in over MQTT.
    plantops_services::ops::rollups::refresh_all(
        &server.store,
        now - chrono::Duration::minutes(minutes),
        now,
    )
    .await?;
    eprintln!(
        "\rseeded {} plants, {rows} readings (and their hourly rollups) in {:.0}s",
        plant_ids.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(plant_ids)
}

async fn measure(
    server: &ServerUnderTest,
    paths: &[String],
    concurrency: u32,
) -> anyhow::Result<Value> {
    // Warm the connection pool and caches before timing.
    for path in paths.iter().take(concurrency as usize * 2) {
        server.api.get(path).await?;
    }
    let started = Instant::now();
    let outcomes: Vec<anyhow::Result<(Duration, usize)>> = stream::iter(paths)
        .map(|path| async move {
            let sent = Instant::now();
            let response = server.api.http().get(server.api.url(path)).send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            anyhow::ensure!(status.is_success(), "{path}: {status}");
            Ok((sent.elapsed(), body.len()))
        })
        .buffer_unordered(concurrency as usize)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut latencies = Vec::with_capacity(outcomes.len());
    let mut bytes = 0usize;
    for outcome in outcomes {
        let (latency, size) = outcome?;
        latencies.push(latency.as_secs_f64() * 1000.0);
        bytes += size;
    }
    latencies.sort_by(f64::total_cmp);
    let round = |value: f64| (value * 100.0).round() / 100.0;
    Ok(json!({
        "requests": latencies.len(),
        "p50_ms": round(quantile(&latencies, 0.50)),
        "p99_ms": round(quantile(&latencies, 0.99)),
        "requests_per_sec": (latencies.len() as f64 / elapsed.as_secs_f64()).round(),
        "bytes_per_response": bytes / latencies.len().max(1),
    }))
}

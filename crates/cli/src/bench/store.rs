//! `plantops bench store`: the database's own insert rate for readings, in
//! the batch shape ingestion produces (many devices interleaved, one
//! transaction per batch) — the bound under `bench ingest`.

use std::time::Instant;

use anyhow::Context;
use plantops_core::reading::{Measurements, Reading};
use plantops_store::Presence;
use serde_json::json;
use uuid::Uuid;

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// Database to measure (default: a new SQLite file in a temporary
    /// directory). Rows are written for fresh random device ids.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Devices whose readings interleave in every batch.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub devices: u32,
    /// Readings per transaction.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub batch: u32,
    /// Readings in all.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub rows: u64,
    /// Print the result as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    let temporary = tempfile::tempdir().context("cannot create a temporary directory")?;
    let url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", temporary.path().join("bench.db").display()));
    let store = plantops_store::connect(&url).await?;
    store.migrate().await?;
    let devices: Vec<Uuid> = (0..args.devices).map(|_| Uuid::new_v4()).collect();
    let base = plantops_core::now() - chrono::Duration::hours(2);
    let mut written = 0u64;
    let mut batch = Vec::with_capacity(args.batch as usize);
    let mut seen = Vec::with_capacity(devices.len());
    let started = Instant::now();
    let mut sequence = 0i64;
    while written < args.rows {
        batch.clear();
        seen.clear();
        while batch.len() < args.batch as usize && written + (batch.len() as u64) < args.rows {
            let device_id = devices[(sequence as usize) % devices.len()];
            let time = base + chrono::Duration::milliseconds(sequence / i64::from(args.devices));
            batch.push(Reading {
                time,
                device_id,
                plant_id: None,
                values: Measurements {
                    soil_moisture: Some(40.0),
                    temperature: Some(21.5),
                    humidity: Some(55.0),
                    light_level: Some(1200.0),
                },
            });
            sequence += 1;
        }
        // Ingestion marks each device of a batch seen in the same transaction.
        let mut ids: Vec<Uuid> = batch.iter().map(|r| r.device_id).collect();
        ids.sort_unstable();
        ids.dedup();
        seen.extend(ids.into_iter().map(|device_id| Presence {
            device_id,
            seen_at: plantops_core::now(),
            vitals: None,
        }));
        written += store.commit_batch(&batch, &seen).await?.inserted;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let result = json!({
        "backend": store.backend().as_str(),
        "devices": args.devices,
        "batch": args.batch,
        "rows": written,
        "seconds": (elapsed * 100.0).round() / 100.0,
        "rows_per_sec": (written as f64 / elapsed).round(),
    });
    println!(
        "{}: {} rows in batches of {} from {} devices: {} rows/s",
        result["backend"].as_str().unwrap_or_default(),
        written,
        args.batch,
        args.devices,
        result["rows_per_sec"]
    );
    if args.json {
        println!("{result}");
    }
    Ok(())
}

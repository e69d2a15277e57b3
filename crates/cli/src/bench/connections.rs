//! `plantops bench connections`: memory of the server holding many idle
//! device connections.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::stream::{self, StreamExt};
use rumqttc::{AsyncClient, Event, Packet};
use serde_json::json;
use tokio::sync::watch;

use super::server::{register_devices, ServerOptions, ServerUnderTest};
use crate::api_client;

#[derive(Debug, clap::Args)]
pub struct ConnectionsArgs {
    #[command(flatten)]
    pub server: ServerOptions,
    /// Idle device connections to open.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    pub connections: u32,
    /// Print the result as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: ConnectionsArgs) -> anyhow::Result<()> {
    let server = ServerUnderTest::start(&args.server).await?;
    eprintln!("registering {} devices ...", args.connections);
    let (devices, endpoint) = register_devices(&server.api, 0xc0, args.connections).await?;
    let port = endpoint
        .port
        .context("the server announces no plain MQTT port")?;
    let before = server.memory();

    let (release, released) = watch::channel(false);
    let released = Arc::new(released);
    let accepted: Vec<bool> = stream::iter(&devices)
        .map(|device| {
            let options = api_client::mqtt_options(
                device,
                &endpoint.host,
                port,
                None,
                // Idle means idle: no keep-alive traffic during the run.
                Duration::from_secs(1800),
            );
            let released = released.clone();
            async move { hold_open(options, released).await }
        })
        // Logins in flight at once, below what the broker admits from one
        // address (PLANTOPS_MQTT_MAX_PENDING_LOGINS_PER_ADDRESS, 32).
        .buffer_unordered(16)
        .collect()
        .await;
    let open = accepted.iter().filter(|ok| **ok).count();
    if open < devices.len() {
        let _ = release.send(true);
        bail!("only {open} of {} connections were accepted", devices.len());
    }
    // Let the server settle after the connection storm.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let holding = server.memory();
    let _ = release.send(true);

    let per_connection_kb = before.zip(holding).map(|(before, holding)| {
        ((holding.rss_mb - before.rss_mb) * 1024.0 / open as f64 * 10.0).round() / 10.0
    });
    let result = json!({
        "backend": server.backend,
        "connections": open,
        "rss_before_mb": before.map(|m| m.rss_mb.round()),
        "rss_mb": holding.map(|m| m.rss_mb.round()),
        "rss_peak_mb": holding.map(|m| m.peak_mb.round()),
        "kb_per_connection": per_connection_kb,
    });
    println!(
        "{}: {open} idle connections · server RSS {} MB (before {} MB, peak {} MB) · {} KB per connection",
        server.backend, result["rss_mb"], result["rss_before_mb"], result["rss_peak_mb"], result["kb_per_connection"],
    );
    server.stop().await?;
    if args.json {
        println!("{result}");
    }
    Ok(())
}

/// Connects; once accepted, keeps the connection open in the background
/// until released. Returns whether the broker accepted.
async fn hold_open(options: rumqttc::MqttOptions, released: Arc<watch::Receiver<bool>>) -> bool {
    let (client, mut eventloop) = AsyncClient::new(options, 4);
    let accepted = loop {
        match tokio::time::timeout(Duration::from_secs(30), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                break ack.code == rumqttc::ConnectReturnCode::Success
            }
            Ok(Ok(_)) => continue,
            Ok(Err(_)) | Err(_) => break false,
        }
    };
    if accepted {
        let mut released = (*released).clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = eventloop.poll() => if event.is_err() { break },
                    _ = released.changed() => break,
                }
            }
            drop(client);
        });
    }
    accepted
}

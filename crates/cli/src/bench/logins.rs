//! `plantops bench logins`: one host opens connections to the built-in
//! broker as fast as it can, each sending the largest CONNECT the broker
//! takes (4 KiB, 32 properties) with a wrong password, while a device on
//! another address logs in and publishes. Reports the server's memory and
//! what the device saw.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::server::{register_devices, ServerOptions, ServerUnderTest};
use crate::api_client;

#[derive(Debug, clap::Args)]
pub struct LoginsArgs {
    #[command(flatten)]
    pub server: ServerOptions,
    /// Connection attempts the flooding host makes in all.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connections: u32,
    /// Attempts it keeps open at once.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    pub concurrency: u32,
    /// The flooding host's address (any 127.x.y.z is this machine; the
    /// device logs in from 127.0.0.1).
    #[arg(long, default_value = "127.0.0.2")]
    pub flood_from: std::net::Ipv4Addr,
    /// Flood from this many addresses, counting up from --flood-from (many
    /// hosts rather than one).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65_000))]
    pub hosts: u32,
    /// Print the result as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

/// How the broker answered one flooding connection.
#[derive(Default)]
struct Answers {
    /// Closed before any CONNACK (no login slot for the address, or cut off).
    closed: AtomicU64,
    /// A CONNACK refusing the login.
    refused: AtomicU64,
    /// Could not even connect (the listen backlog was full).
    unreachable: AtomicU64,
}

pub async fn run(args: LoginsArgs) -> anyhow::Result<()> {
    // The broker's own per-address budget, not the one the other benches
    // lift (their devices all log in from one host).
    let server = ServerUnderTest::start_with(
        &args.server,
        &[("PLANTOPS_MQTT_MAX_PENDING_LOGINS_PER_ADDRESS", "32")],
    )
    .await?;
    let (devices, endpoint) = register_devices(&server.api, 0xd0, 1).await?;
    let device = devices.first().context("no device registered")?;
    let port = endpoint
        .port
        .context("the server announces no plain MQTT port")?;
    let broker: SocketAddr = format!("{}:{port}", endpoint.host)
        .parse()
        .context("the broker's address")?;
    let before = server.memory();
    let connect = largest_connect();
    let answers = Arc::new(Answers::default());

    let started = Instant::now();
    let flood = {
        let (answers, first, hosts, connect) = (
            answers.clone(),
            u32::from(args.flood_from),
            args.hosts,
            connect.clone(),
        );
        let (total, concurrency) = (args.connections, args.concurrency as usize);
        tokio::spawn(async move {
            let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
            let mut attempts = tokio::task::JoinSet::new();
            for n in 0..total {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let from = IpAddr::from(std::net::Ipv4Addr::from(first + n % hosts));
                let (answers, connect) = (answers.clone(), connect.clone());
                attempts.spawn(async move {
                    let _slot = slot;
                    attempt(from, broker, &connect, &answers).await;
                });
            }
            while attempts.join_next().await.is_some() {}
        })
    };

    // Meanwhile a device logs in from another address and publishes.
    let options =
        api_client::mqtt_options(device, &endpoint.host, port, None, Duration::from_secs(30));
    let device_started = Instant::now();
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let mut connected_after = None;
    let mut latencies = Vec::new();
    let mut sent_at = None;
    let topic = plantops_core::topic::telemetry(&device.device_id.to_string());
    while !flood.is_finished() || latencies.len() < 10 {
        if connected_after.is_some() && sent_at.is_none() {
            client
                .publish(
                    &topic,
                    QoS::AtLeastOnce,
                    false,
                    json!({"temperature": 21.0}).to_string(),
                )
                .await?;
            sent_at = Some(Instant::now());
        }
        match tokio::time::timeout(Duration::from_secs(30), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                connected_after = Some(device_started.elapsed());
            }
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                if let Some(sent) = sent_at.take() {
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => anyhow::bail!("the device lost its connection: {error}"),
            Err(_) => anyhow::bail!("the device heard nothing for 30 s"),
        }
    }
    flood.await.context("the flood failed")?;
    let flood_secs = started.elapsed().as_secs_f64();
    let during = server.memory();
    latencies.sort_by(f64::total_cmp);
    let result = json!({
        "backend": server.backend,
        "attempts": args.connections,
        "hosts": args.hosts,
        "concurrency": args.concurrency,
        "flood_secs": (flood_secs * 10.0).round() / 10.0,
        "closed_without_connack": answers.closed.load(Ordering::Relaxed),
        "connack_refused": answers.refused.load(Ordering::Relaxed),
        "unreachable": answers.unreachable.load(Ordering::Relaxed),
        "rss_before_mb": before.map(|m| m.rss_mb.round()),
        "rss_after_mb": during.map(|m| m.rss_mb.round()),
        "rss_peak_mb": during.map(|m| m.peak_mb.round()),
        "device_connected_ms": connected_after.map(|d| d.as_millis() as u64),
        "device_publishes": latencies.len(),
        "device_p50_ms": super::server::quantile(&latencies, 0.5),
        "device_max_ms": latencies.last().copied(),
    });
    println!(
        "{}: {} connection attempts with 4 KiB CONNECTs in {:.1} s ({} closed at once, {} refused) · server RSS {} → {} MB (peak {}) · a device on another address logged in after {} ms and had {} readings acknowledged (p50 {:.1} ms, max {:.1} ms)",
        server.backend,
        args.connections,
        flood_secs,
        result["closed_without_connack"],
        result["connack_refused"],
        result["rss_before_mb"],
        result["rss_after_mb"],
        result["rss_peak_mb"],
        result["device_connected_ms"],
        latencies.len(),
        super::server::quantile(&latencies, 0.5),
        latencies.last().copied().unwrap_or_default(),
    );
    server.stop().await?;
    if args.json {
        println!("{result}");
    }
    Ok(())
}

/// Connects from `from`, sends the CONNECT and waits for the broker's
/// answer or for it to close.
async fn attempt(from: IpAddr, broker: SocketAddr, connect: &[u8], answers: &Answers) {
    let socket = match from {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    };
    let stream = match socket {
        Ok(socket) if socket.bind(SocketAddr::new(from, 0)).is_ok() => socket.connect(broker).await,
        _ => Err(std::io::ErrorKind::AddrNotAvailable.into()),
    };
    let Ok(mut stream) = stream else {
        answers.unreachable.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let _ = stream.write_all(connect).await;
    let mut first = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut first)).await {
        Ok(Ok(1)) if first[0] == 0x20 => answers.refused.fetch_add(1, Ordering::Relaxed),
        _ => answers.closed.fetch_add(1, Ordering::Relaxed),
    };
}

/// An MQTT 5 CONNECT of just under 4 KiB with 32 user properties and a
/// wrong password: the most a client may make the broker read before login.
fn largest_connect() -> Vec<u8> {
    use mqtt5_protocol::packet::connect::ConnectPacket;
    use mqtt5_protocol::packet::MqttPacket;
    use mqtt5_protocol::{ConnectOptions, PropertyId, PropertyValue};
    let options = ConnectOptions::new("flood")
        .with_credentials("nobody", "wrong-password")
        .with_keep_alive(Duration::from_secs(60));
    let mut connect = ConnectPacket::new(options);
    for i in 0..32 {
        let pair = PropertyValue::Utf8StringPair(format!("key-{i:03}"), "v".repeat(112));
        // 32 are within the protocol's limits: adding cannot fail.
        let _ = connect.properties.add(PropertyId::UserProperty, pair);
    }
    let mut out = Vec::new();
    // Our own packet, well-formed: encoding cannot fail.
    let _ = connect.encode(&mut out);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_flooding_connect_is_the_largest_the_broker_takes() {
        let connect = super::largest_connect();
        assert!(connect.len() <= plantops_mqtt::builtin::MAX_CONNECT_SIZE);
        assert!(connect.len() > plantops_mqtt::builtin::MAX_CONNECT_SIZE - 128);
    }
}

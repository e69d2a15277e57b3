//! Scale-out: three `plantops serve` instances on one PostgreSQL database
//! and one real Mosquitto (TLS, dynamic security), as docs/scaling.md
//! describes. Readings are shared among the instances by the broker;
//! alerts, notifications, presence and the singleton jobs must come out
//! exactly once, and live events reach every instance's browsers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plantops_testkit::TestDb;
use serde_json::{json, Value};

use crate::common::discord::Discord;
use crate::common::mosquitto::Mosquitto;
use crate::common::{connect, device_options, publish_acked, Connack, Credentials, Ports, Server};

const INSTANCES: usize = 3;
const DEVICES: usize = 100;
const READINGS_PER_DEVICE: usize = 20;
/// A device is offline after three silent heartbeat intervals: 30 s.
const HEARTBEAT_SECS: &str = "10";

struct Instance {
    dir: tempfile::TempDir,
    ports: Ports,
    server: Server,
}

struct Cluster {
    db: TestDb,
    mosquitto: Mosquitto,
    _broker_dir: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
    instances: Vec<Instance>,
    ca: Vec<u8>,
}

impl Cluster {
    async fn start(discord: &Discord) -> Cluster {
        let db = TestDb::postgres().await;
        let broker_dir = tempfile::tempdir().unwrap();
        let mosquitto = Mosquitto::start(broker_dir.path(), plantops_testkit::free_port()).await;
        let mut env = mosquitto.backend_env();
        env.push(("DATABASE_URL", db.url().to_string()));
        env.push(("ENCRYPTION_KEY", "ab".repeat(32)));
        env.push(("DISCORD_WEBHOOK_URL", discord.url.clone()));
        env.push(("PLANTOPS_HEARTBEAT_INTERVAL_SECS", HEARTBEAT_SECS.into()));
        // A restart takes a few seconds; a dead instance is taken over
        // after ten.
        env.push(("PLANTOPS_INSTANCE_TIMEOUT_SECS", "10".into()));
        let ca = std::fs::read(&mosquitto.ca).unwrap();
        let mut cluster = Cluster {
            db,
            mosquitto,
            _broker_dir: broker_dir,
            env,
            instances: Vec::new(),
            ca,
        };
        for _ in 0..INSTANCES {
            let dir = tempfile::tempdir().unwrap();
            // The first instance made the admin's token: the others share it.
            if let Some(first) = cluster.instances.first() {
                std::fs::copy(
                    first.dir.path().join("test-admin-token"),
                    dir.path().join("test-admin-token"),
                )
                .unwrap();
            }
            let ports = Ports::free();
            let server = cluster.launch(dir.path(), &ports).await;
            cluster.instances.push(Instance { dir, ports, server });
        }
        cluster
    }

    async fn launch(&self, dir: &std::path::Path, ports: &Ports) -> Server {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Server::start(dir, ports, &env).await
    }

    /// SIGKILLs instance `i` and starts it again on the same data
    /// directory (so with the same instance id and broker session).
    async fn kill(&mut self, i: usize) {
        self.instances[i].server.kill().await;
    }

    async fn restart(&mut self, i: usize) {
        let (dir, ports) = (
            self.instances[i].dir.path().to_path_buf(),
            self.instances[i].ports.clone(),
        );
        self.instances[i].server = self.launch(&dir, &ports).await;
    }

    fn any(&self) -> &Server {
        &self.instances[0].server
    }

    async fn readings_stored(&self) -> i64 {
        let pool = sqlx::PgPool::connect(self.db.url()).await.unwrap();
        let n = sqlx::query_scalar("SELECT COUNT(*) FROM readings")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n
    }

    /// Waits for the publishers to finish, then until the database holds
    /// `expected` readings (at most `limit`); returns how many it holds.
    async fn all_stored(
        &self,
        publishers: Vec<tokio::task::JoinHandle<()>>,
        acked: &AtomicUsize,
        expected: i64,
        limit: Duration,
    ) -> i64 {
        let published = publishers.len() * READINGS_PER_DEVICE;
        for publisher in publishers {
            publisher.await.unwrap();
        }
        assert_eq!(acked.load(Ordering::SeqCst), published);
        self.until("every acknowledged reading stored", limit, async || {
            let n = self.readings_stored().await;
            (n >= expected).then_some(n)
        })
        .await
    }

    /// Waits until `check` holds, for at most `limit`.
    async fn until<T>(&self, what: &str, limit: Duration, check: impl AsyncFn() -> Option<T>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The complete SSE frames in `text` as (id, event type, data); a frame
/// still arriving is left out.
fn frames(text: &str) -> Vec<(u64, String, String)> {
    let complete = text.rfind("\n\n").map_or("", |end| &text[..end]);
    complete
        .split("\n\n")
        .filter_map(|frame| {
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .map(str::trim)
                    .map(str::to_string)
            };
            Some((
                field("id:")?.parse().ok()?,
                field("event:")?,
                field("data:")?,
            ))
        })
        .collect()
}

/// The `reading` events of an event stream as (id, data), once `wanted`
/// of them arrived; `None` when they do not within 20 s.
async fn read_readings(
    stream: &mut reqwest::Response,
    wanted: usize,
) -> Option<Vec<(u64, String)>> {
    let mut text = String::new();
    let readings = |text: &str| -> Vec<(u64, String)> {
        frames(text)
            .into_iter()
            .filter(|(_, kind, _)| kind == "reading")
            .map(|(id, _, data)| (id, data))
            .collect()
    };
    let read = async {
        while readings(&text).len() < wanted {
            let Ok(Some(chunk)) = stream.chunk().await else {
                return;
            };
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .ok()?;
    let readings = readings(&text);
    (readings.len() >= wanted).then_some(readings)
}

async fn health(server: &Server) -> Value {
    let (status, body) = server.get("/api/health").await;
    assert_eq!(status, 200);
    body["components"]["instance"].clone()
}

/// Publishes `payloads` from a device over TLS, each acknowledged.
async fn publish_all(device: &Credentials, port: u16, ca: &[u8], payloads: &[Value]) {
    let options = device_options(device, port, Some(ca.to_vec()), &device.device_id);
    let (client, mut eventloop, outcome) = connect(options).await;
    assert_eq!(outcome, Connack::Accepted);
    let topic = format!("devices/{}/telemetry", device.device_id);
    for payload in payloads {
        publish_acked(&client, &mut eventloop, &topic, payload.clone()).await;
    }
    let _ = client.disconnect().await;
}

fn soil(value: f64, at: chrono::DateTime<chrono::Utc>) -> Value {
    json!({"soil_moisture": value, "timestamp": at.timestamp_millis()})
}

/// Readings of one plant split among three instances by the broker; a
/// breach of several devices at once is one alert and one notification,
/// its recovery one more; every instance's event stream shows readings
/// other instances stored.
async fn breach_storm(cluster: &Cluster, discord: &mut Discord) {
    let (status, plant) = cluster
        .any()
        .post(
            "/api/plants",
            json!({"name": "Storm", "alert_cooldown_minutes": 0,
                "thresholds": {"soil_moisture": {"min": 20, "max": 80}}}),
        )
        .await;
    assert_eq!(status, 201, "{plant}");
    let plant_id = plant["id"].as_str().unwrap().to_string();
    // Registered through every instance; once more through another is the
    // same device (registration is idempotent cluster-wide).
    let mut devices = Vec::new();
    for i in 0..6 {
        let server = &cluster.instances[i % INSTANCES].server;
        devices.push(
            server
                .register_for(&format!("cc:00:00:00:00:{i:02x}"), &plant_id)
                .await,
        );
    }
    let again = cluster.instances[1]
        .server
        .register("cc:00:00:00:00:00")
        .await;
    assert_eq!(again.device_id, devices[0].device_id);

    let mut stream = cluster.instances[0]
        .server
        .client
        .get(format!("{}/api/events", cluster.instances[0].server.http))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);

    let t0 = chrono::Utc::now() - chrono::Duration::minutes(10);
    let phase = |value: f64, offset_secs: i64| {
        let devices = devices.clone();
        let (port, ca) = (cluster.mosquitto.port, cluster.ca.clone());
        async move {
            let publishers = devices.iter().enumerate().map(|(d, device)| {
                let payloads: Vec<Value> = (0..5)
                    .map(|k| {
                        let at = t0
                            + chrono::Duration::seconds(offset_secs + k)
                            + chrono::Duration::milliseconds(d as i64 * 10);
                        soil(value, at)
                    })
                    .collect();
                let (device, ca) = (device.clone(), ca.clone());
                tokio::spawn(async move { publish_all(&device, port, &ca, &payloads).await })
            });
            for publisher in publishers.collect::<Vec<_>>() {
                publisher.await.unwrap();
            }
        }
    };
    phase(10.0, 0).await;
    let first = discord.next_delivered().await;
    assert_eq!(first["embeds"][0]["title"], "Plant Alert: Storm");
    phase(50.0, 60).await;
    let second = discord.next_delivered().await;
    assert_eq!(second["embeds"][0]["title"], "Back to normal: Storm");
    // Another breach after the recovery: one more notice. Readings judged
    // late by any instance were older than the recovery and changed nothing.
    publish_all(
        &devices[3],
        cluster.mosquitto.port,
        &cluster.ca,
        &[soil(5.0, t0 + chrono::Duration::seconds(120))],
    )
    .await;
    let third = discord.next_delivered().await;
    assert_eq!(third["embeds"][0]["title"], "Plant Alert: Storm");

    let (_, alerts) = cluster
        .any()
        .get(&format!("/api/alerts?plant_id={plant_id}&kind=threshold"))
        .await;
    assert_eq!(alerts["total"], 2, "one alert per breach: {alerts}");
    let (_, alerts) = cluster
        .any()
        .get(&format!("/api/alerts?plant_id={plant_id}&kind=recovered"))
        .await;
    assert_eq!(alerts["total"], 1, "one recovery: {alerts}");

    // Each instance stored some of the readings…
    let mut storing = 0;
    for instance in &cluster.instances {
        let metrics = instance.server.metrics().await;
        let committed = metrics
            .lines()
            .find_map(|l| l.strip_prefix("plantops_readings_committed_total "))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if committed > 0.0 {
            storing += 1;
        }
    }
    assert!(
        storing >= 2,
        "the broker shared the readings among instances"
    );
    // …and instance A's event stream showed all 61 of them.
    let wanted = 6 * 5 * 2 + 1;
    let readings_on_a = read_readings(&mut stream, wanted)
        .await
        .expect("instance A's stream lacks readings other instances stored");
    assert_eq!(readings_on_a.len(), wanted);
    assert_eq!(discord.attempts(), 3, "one notification per alert");

    // A browser that loses A and reconnects to B resumes where it was:
    // every instance names events alike.
    let (resume_from, _) = readings_on_a[29].clone();
    let b = &cluster.instances[1].server;
    let mut resumed = b
        .client
        .get(format!("{}/api/events", b.http))
        .header("last-event-id", resume_from.to_string())
        .send()
        .await
        .unwrap();
    let readings_on_b = read_readings(&mut resumed, wanted - 30)
        .await
        .unwrap_or_else(|| panic!("B did not replay what followed A's event {resume_from}"));
    assert_eq!(readings_on_b, readings_on_a[30..].to_vec());
}

#[tokio::test]
async fn three_instances_share_devices_alerts_and_jobs() {
    plantops_mqtt::install_crypto_provider();
    let mut discord = Discord::start(&[]).await;
    let mut cluster = Cluster::start(&discord).await;

    // Distinct ids, one leader.
    let mut ids = Vec::new();
    let mut leaders = 0;
    for instance in &cluster.instances {
        let info = health(&instance.server).await;
        ids.push(info["id"].as_str().unwrap().to_string());
        leaders += usize::from(info["leader"] == true);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), INSTANCES);
    let leaders = cluster
        .until("one leader", Duration::from_secs(20), async || {
            let mut count = 0;
            for instance in &cluster.instances {
                count += usize::from(health(&instance.server).await["leader"] == true);
            }
            (count >= 1).then_some(count)
        })
        .await
        .max(leaders);
    assert_eq!(leaders, 1, "exactly one instance leads");

    breach_storm(&cluster, &mut discord).await;
    let before = cluster.readings_stored().await;

    // 100 devices publish while instance B is SIGKILLed and restarted:
    // every reading the broker acknowledged is stored, exactly once.
    let (status, plant) = cluster
        .any()
        .post("/api/plants", json!({"name": "Bench"}))
        .await;
    assert_eq!(status, 201);
    let plant_id = plant["id"].as_str().unwrap().to_string();
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        let server = &cluster.instances[i % INSTANCES].server;
        devices.push(
            server
                .register_for(
                    &format!("dd:00:00:00:{:02x}:{:02x}", i / 256, i % 256),
                    &plant_id,
                )
                .await,
        );
    }
    let first_hour = chrono::Utc::now() - chrono::Duration::hours(2);
    let (publishers, acked) = publish_from(
        &devices,
        (cluster.mosquitto.port, &cluster.ca),
        first_hour,
        READINGS_PER_DEVICE,
    );
    let total = DEVICES * READINGS_PER_DEVICE;
    cluster
        .until(
            "a quarter acknowledged",
            Duration::from_secs(60),
            async || (acked.load(Ordering::SeqCst) >= total / 4).then_some(()),
        )
        .await;
    cluster.kill(1).await;
    cluster.restart(1).await;
    let expected = before + total as i64;
    let stored = cluster
        .all_stored(publishers, &acked, expected, Duration::from_secs(60))
        .await;
    assert_eq!(stored, expected, "nothing lost, nothing doubled");

    // The leader dies for good while the devices publish: another
    // instance leads within the bound, takes over the dead one's broker
    // session (what the broker queued for it) and runs offline detection —
    // the devices fall silent when they are done.
    let mut leader = None;
    for (i, instance) in cluster.instances.iter().enumerate() {
        if health(&instance.server).await["leader"] == true {
            leader = Some(i);
        }
    }
    let leader = leader.expect("a leader");
    let second_hour = chrono::Utc::now() - chrono::Duration::hours(1);
    let (publishers, acked) = publish_from(
        &devices,
        (cluster.mosquitto.port, &cluster.ca),
        second_hour,
        READINGS_PER_DEVICE,
    );
    cluster
        .until(
            "a quarter acknowledged",
            Duration::from_secs(60),
            async || (acked.load(Ordering::SeqCst) >= total / 4).then_some(()),
        )
        .await;
    let killed = Instant::now();
    cluster.kill(leader).await;
    let survivors: Vec<usize> = (0..INSTANCES).filter(|i| *i != leader).collect();
    let successor = cluster
        .until("a new leader", Duration::from_secs(30), async || {
            for &i in &survivors {
                if health(&cluster.instances[i].server).await["leader"] == true {
                    return Some(i);
                }
            }
            None
        })
        .await;
    eprintln!("lead passed on in {:?}", killed.elapsed());
    let expected = expected + total as i64;
    let stored = cluster
        .all_stored(publishers, &acked, expected, Duration::from_secs(90))
        .await;
    assert_eq!(
        stored, expected,
        "nothing lost with an instance gone for good"
    );
    let server = &cluster.instances[successor].server;
    let device = &devices[0].device_id;
    cluster
        .until(
            "offline detection by the new leader",
            Duration::from_secs(90),
            async || {
                let (_, body) = server.get(&format!("/api/devices/{device}")).await;
                (body["status"] == "offline").then_some(())
            },
        )
        .await;
}

/// Every device publishes `count` readings from `start` on, 100 ms apart,
/// each acknowledged by the broker and counted.
fn publish_from(
    devices: &[Credentials],
    (port, ca): (u16, &[u8]),
    start: chrono::DateTime<chrono::Utc>,
    count: usize,
) -> (Vec<tokio::task::JoinHandle<()>>, Arc<AtomicUsize>) {
    let acked = Arc::new(AtomicUsize::new(0));
    let publishers = devices
        .iter()
        .enumerate()
        .map(|(d, device)| {
            let (device, ca, acked) = (device.clone(), ca.to_vec(), acked.clone());
            tokio::spawn(async move {
                let options = device_options(&device, port, Some(ca), &device.device_id);
                let (client, mut eventloop, outcome) = connect(options).await;
                assert_eq!(outcome, Connack::Accepted);
                let topic = format!("devices/{}/telemetry", device.device_id);
                for k in 0..count {
                    let at = start
                        + chrono::Duration::seconds(k as i64)
                        + chrono::Duration::milliseconds(d as i64);
                    publish_acked(&client, &mut eventloop, &topic, soil(40.0, at)).await;
                    acked.fetch_add(1, Ordering::SeqCst);
                    // Spread over the failure or the update rather than done before it.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let _ = client.disconnect().await;
            })
        })
        .collect();
    (publishers, acked)
}

/// An instance stopped on purpose (SIGTERM: an upgrade, a scale-down)
/// leaves the shared subscriptions first: the broker queues nothing for
/// it, and the instances still running get every device message at once.
#[tokio::test]
async fn an_instance_stopped_gracefully_leaves_its_share_to_the_others() {
    plantops_mqtt::install_crypto_provider();
    let db = TestDb::postgres().await;
    let broker_dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(broker_dir.path(), plantops_testkit::free_port()).await;
    let mut env = mosquitto.backend_env();
    env.push(("DATABASE_URL", db.url().to_string()));
    env.push(("ENCRYPTION_KEY", "cd".repeat(32)));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (first_dir, second_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut first = Server::start(first_dir.path(), &Ports::free(), &env).await;
    std::fs::copy(
        first_dir.path().join("test-admin-token"),
        second_dir.path().join("test-admin-token"),
    )
    .unwrap();
    let second = Server::start(second_dir.path(), &Ports::free(), &env).await;
    let device = second.register("ee:00:00:00:00:01").await;

    first.terminate().await;

    let ca = std::fs::read(&mosquitto.ca).unwrap();
    let start = chrono::Utc::now() - chrono::Duration::minutes(5);
    let payloads: Vec<Value> = (0..6)
        .map(|k| soil(30.0 + k as f64, start + chrono::Duration::seconds(k)))
        .collect();
    publish_all(&device, mosquitto.port, &ca, &payloads).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM readings")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        if stored == 6 {
            let (_, latest) = second
                .get(&format!(
                    "/api/devices/{}/telemetry/latest",
                    device.device_id
                ))
                .await;
            assert_eq!(latest["soil_moisture"], 35.0);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{stored} of 6 readings reached the running instance"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A rolling update: each of two instances in turn stopped as an update
/// stops it (SIGTERM) and started again while devices keep publishing;
/// every reading the broker acknowledged is stored, once.
#[tokio::test]
async fn a_rolling_update_loses_no_reading() {
    plantops_mqtt::install_crypto_provider();
    let db = TestDb::postgres().await;
    let broker_dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(broker_dir.path(), plantops_testkit::free_port()).await;
    let mut env = mosquitto.backend_env();
    env.push(("DATABASE_URL", db.url().to_string()));
    env.push(("ENCRYPTION_KEY", "ef".repeat(32)));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut servers = vec![Server::start(dirs[0].path(), &Ports::free(), &env).await];
    std::fs::copy(
        dirs[0].path().join("test-admin-token"),
        dirs[1].path().join("test-admin-token"),
    )
    .unwrap();
    servers.push(Server::start(dirs[1].path(), &Ports::free(), &env).await);
    let mut devices = Vec::new();
    for i in 0..20 {
        devices.push(
            servers[i % 2]
                .register(&format!("ef:00:00:00:00:{i:02x}"))
                .await,
        );
    }
    let ca = std::fs::read(&mosquitto.ca).unwrap();
    let start = chrono::Utc::now() - chrono::Duration::hours(3);
    const PER_DEVICE: usize = 40;
    let (publishers, acked) = publish_from(&devices, (mosquitto.port, &ca), start, PER_DEVICE);
    for (i, dir) in dirs.iter().enumerate() {
        servers[i].terminate().await;
        // The "new version" starts on the same data directory.
        servers[i] = Server::start(dir.path(), &Ports::free(), &env).await;
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let total = devices.len() * PER_DEVICE;
    assert_eq!(acked.load(Ordering::SeqCst), total);
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM readings")
            .fetch_one(&pool)
            .await
            .unwrap();
        if stored as usize == total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{stored} of {total} readings stored after the rolling update"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

//! Faults while devices publish: the server's database connections are
//! cut, the server is stopped (SIGTERM), killed (SIGKILL) and started
//! again, and on Mosquitto the broker restarts too.
//! At the end every reading a broker acknowledged is stored, once (a
//! reading's key is its device and time), and every breach of a plant's
//! threshold among the stored readings raised one alert, and its recovery
//! one more.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plantops_testkit::TestDb;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::json;
use tokio::sync::watch;

use crate::common::mosquitto::Mosquitto;
use crate::common::{device_options, Credentials, Ports, Server};

const DEVICES: usize = 4;
/// Acknowledged readings each device adds between two faults.
const BETWEEN_FAULTS: usize = 15;

/// What the publishers are to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Publish,
    /// Publish nothing more until told to go on.
    Pause,
    Stop,
}

/// A device publishing QoS 1 readings with up to `IN_FLIGHT` waiting for
/// their PUBACKs, each with a time of its own, connecting afresh whenever
/// its connection drops. A reading counts as acknowledged once its PUBACK
/// arrived; those in flight when a connection drops are not sent again
/// (they may or may not be stored).
struct Publisher {
    acknowledged: Arc<Mutex<BTreeSet<i64>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Publishes a device keeps waiting for their PUBACKs.
const IN_FLIGHT: usize = 8;

impl Publisher {
    fn start(options: MqttOptions, device_id: String, phase: watch::Receiver<Phase>) -> Publisher {
        let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
        let task = tokio::spawn(publish(options, device_id, acknowledged.clone(), phase));
        Publisher { acknowledged, task }
    }

    fn count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }
}

async fn publish(
    mut options: MqttOptions,
    device_id: String,
    acknowledged: Arc<Mutex<BTreeSet<i64>>>,
    mut phase: watch::Receiver<Phase>,
) {
    options.set_inflight(IN_FLIGHT as u16);
    let topic = format!("devices/{device_id}/telemetry");
    // Readings 200 ms apart by their own times (within the device rate of
    // 10 a second however they arrive), starting an hour ago.
    let mut time = chrono::Utc::now().timestamp_millis() - 3_600_000;
    loop {
        let (client, mut eventloop) = AsyncClient::new(options.clone(), 2 * IN_FLIGHT);
        // Times handed to the client, not yet written; written ones by id.
        let mut handed: VecDeque<i64> = VecDeque::new();
        let mut written: HashMap<u16, i64> = HashMap::new();
        'connection: loop {
            let now = *phase.borrow();
            match now {
                Phase::Stop => return,
                Phase::Publish if handed.len() + written.len() < IN_FLIGHT => {
                    time += 200;
                    let soil = soil_at(time);
                    let payload = json!({ "soil_moisture": soil, "timestamp": time }).to_string();
                    if client
                        .try_publish(&topic, QoS::AtLeastOnce, false, payload)
                        .is_err()
                    {
                        break 'connection;
                    }
                    handed.push_back(time);
                    // Twenty a second: over the device rate once its burst
                    // is spent (the built-in broker paces it), and few
                    // enough for the history to hold them all.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Phase::Publish | Phase::Pause => {}
            }
            let event = tokio::select! {
                event = tokio::time::timeout(Duration::from_secs(5), eventloop.poll()) => event,
                _ = phase.changed() => continue,
            };
            match event {
                Ok(Ok(Event::Outgoing(Outgoing::Publish(id)))) => {
                    if let Some(time) = handed.pop_front() {
                        written.insert(id, time);
                    }
                }
                Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                    if let Some(time) = written.remove(&ack.pkid) {
                        acknowledged.lock().unwrap().insert(time);
                    }
                }
                Ok(Ok(_)) => {}
                // Down, refused or silent: connect afresh.
                Ok(Err(_)) | Err(_) => break 'connection,
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The soil moisture a device measures at `time` (ms): spells of
/// [`BREACH_SPELL_MS`] below the plant's minimum of 30 % between spells as
/// long at 50 %. Each spell holds 30 readings of a device, more than can
/// arrive out of order, so each is judged as one breach.
fn soil_at(time: i64) -> f64 {
    if (time / BREACH_SPELL_MS) % 2 == 1 {
        10.0
    } else {
        50.0
    }
}

const BREACH_SPELL_MS: i64 = 6_000;
const SOIL_MINIMUM: f64 = 30.0;

/// Waits until every publisher has `more` acknowledged readings beyond
/// what it had.
async fn progress(publishers: &[Publisher], more: usize) {
    let targets: Vec<usize> = publishers.iter().map(|p| p.count() + more).collect();
    tokio::time::timeout(Duration::from_secs(60), async {
        while publishers
            .iter()
            .zip(&targets)
            .any(|(p, target)| p.count() < *target)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("devices publish again after the fault");
}

/// Ends every connection the server holds to its PostgreSQL database, as
/// a database restart or a network cut does: commits in progress fail and
/// are tried again on new connections.
async fn cut_database_connections(db: &TestDb) {
    use sqlx::Connection;
    let TestDb::Postgres { name, .. } = db else {
        panic!("a PostgreSQL test database");
    };
    let mut admin = sqlx::PgConnection::connect(&plantops_testkit::postgres_admin_url())
        .await
        .unwrap();
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(
        !cut.is_empty(),
        "the server holds connections to its database"
    );
}

/// A device and the plant it alone serves (so that the plant's readings
/// are judged in the order the device took them).
struct Watched {
    plant_id: String,
    device: Credentials,
}

/// The soil moisture of a plant's stored readings, oldest first (its
/// device's reading times in ms).
async fn stored_soil(server: &Server, plant_id: &str) -> Vec<(i64, f64)> {
    let (status, history) = server
        .get(&format!("/api/plants/{plant_id}/history?hours=2"))
        .await;
    assert_eq!(status, 200);
    let records = history["records"].as_array().unwrap();
    assert!(records.len() < 10_000, "the history is cut at 10,000 rows");
    let mut stored: Vec<(i64, f64)> = records
        .iter()
        .map(|r| {
            let time = chrono::DateTime::parse_from_rfc3339(r["time"].as_str().unwrap())
                .unwrap()
                .timestamp_millis();
            (time, r["soil_moisture"].as_f64().unwrap())
        })
        .collect();
    stored.sort_by_key(|(time, _)| *time);
    stored
}

/// Every acknowledged reading of every device is in its plant's history,
/// and the plant's alerts are those its stored readings call for: one per
/// spell below the minimum, one per return above it.
async fn every_acknowledged_reading_is_stored_and_judged(
    server: &Server,
    watched: &[Watched],
    publishers: Vec<Publisher>,
) {
    for (Watched { plant_id, device }, publisher) in watched.iter().zip(publishers) {
        let stored = stored_soil(server, plant_id).await;
        let times: BTreeSet<i64> = stored.iter().map(|(time, _)| *time).collect();
        let acknowledged = publisher.acknowledged.lock().unwrap().clone();
        let lost: Vec<&i64> = acknowledged.difference(&times).collect();
        assert!(
            lost.is_empty(),
            "device {}: {} of {} acknowledged readings lost: {lost:?}",
            device.device_id,
            lost.len(),
            acknowledged.len()
        );

        let mut breaches = 0;
        let mut recoveries = 0;
        let mut breached = false;
        for (_, soil) in &stored {
            if *soil < SOIL_MINIMUM && !breached {
                breaches += 1;
            } else if *soil >= SOIL_MINIMUM && breached {
                recoveries += 1;
            }
            breached = *soil < SOIL_MINIMUM;
        }
        assert!(breaches >= 1, "the readings crossed the minimum");
        let alerts = |kind: &'static str| async move {
            let (_, alerts) = server
                .get(&format!("/api/alerts?plant_id={plant_id}&kind={kind}&limit=1"))
                .await;
            alerts["total"].as_u64().unwrap()
        };
        assert_eq!(
            (alerts("threshold").await, alerts("recovered").await),
            (breaches, recoveries),
            "device {}: (breach, recovery) alerts for {} stored readings",
            device.device_id,
            stored.len()
        );
    }
}

async fn plants_with_devices(server: &Server) -> Vec<Watched> {
    let mut watched = Vec::new();
    for i in 0..DEVICES {
        let (status, plant) = server
            .post(
                "/api/plants",
                json!({
                    "name": format!("Monstera {i}"),
                    "thresholds": {"soil_moisture": {"min": SOIL_MINIMUM, "max": null}},
                    "alert_cooldown_minutes": 0,
                }),
            )
            .await;
        assert_eq!(status, 201, "{plant}");
        let plant_id = plant["id"].as_str().unwrap().to_string();
        let device = server
            .register_for(&format!("cc:00:00:00:00:{i:02x}"), &plant_id)
            .await;
        watched.push(Watched { plant_id, device });
    }
    watched
}

/// Waits until the backend has subscribed again after a Mosquitto restart:
/// a probe device publishes until one of its readings is stored (those
/// published before may reach nobody).
async fn subscribed_again(server: &Server, probe: &Credentials, port: u16, ca: &[u8]) {
    let topic = format!("devices/{}/telemetry", probe.device_id);
    let latest = format!("/api/devices/{}/telemetry/latest", probe.device_id);
    for attempt in 0..100 {
        let options = device_options(probe, port, Some(ca.to_vec()), &probe.device_id);
        let (client, mut eventloop) = AsyncClient::new(options, 10);
        let payload = json!({ "humidity": attempt }).to_string();
        let _ = client
            .publish(&topic, QoS::AtLeastOnce, false, payload)
            .await;
        let acked = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => return true,
                    Ok(_) => continue,
                    Err(_) => return false,
                }
            }
        })
        .await;
        if acked == Ok(true) {
            for _ in 0..20 {
                let (_, reading) = server.get(&latest).await;
                if reading["humidity"] == f64::from(attempt) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("the backend did not subscribe again after Mosquitto's restart");
}

async fn stop_publishers(phase: watch::Sender<Phase>, publishers: &mut [Publisher]) {
    phase.send(Phase::Stop).unwrap();
    for publisher in publishers.iter_mut() {
        (&mut publisher.task).await.unwrap();
    }
}

/// The built-in broker on PostgreSQL, each device with several publishes
/// in flight: the database connections are cut twice (commits fail and
/// are retried), the server is stopped (SIGTERM) and killed (SIGKILL), each
/// time started again on the same data directory and ports.
#[tokio::test]
async fn acknowledged_readings_survive_failed_commits_stops_and_kills_on_the_builtin_broker() {
    let db = TestDb::postgres().await;
    let env = [
        ("DATABASE_URL", db.url()),
        ("ENCRYPTION_KEY", &"ef".repeat(32)),
    ];
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let mut server = Server::start(dir.path(), &ports, &env).await;
    let watched = plants_with_devices(&server).await;
    let (phase, phases) = watch::channel(Phase::Publish);
    let mut publishers: Vec<Publisher> = watched
        .iter()
        .map(|Watched { device: d, .. }| {
            let mut options = device_options(d, ports.mqtt, None, &d.device_id);
            options.set_keep_alive(Duration::from_secs(5));
            Publisher::start(options, d.device_id.clone(), phases.clone())
        })
        .collect();
    progress(&publishers, BETWEEN_FAULTS).await;

    cut_database_connections(&db).await;
    progress(&publishers, BETWEEN_FAULTS).await;
    cut_database_connections(&db).await;
    progress(&publishers, BETWEEN_FAULTS).await;

    server.terminate().await;
    server = Server::start(dir.path(), &ports, &env).await;
    progress(&publishers, BETWEEN_FAULTS).await;

    server.kill().await;
    server = Server::start(dir.path(), &ports, &env).await;
    progress(&publishers, BETWEEN_FAULTS).await;

    stop_publishers(phase, &mut publishers).await;
    every_acknowledged_reading_is_stored_and_judged(&server, &watched, publishers).await;
}

/// PostgreSQL and Mosquitto: the one backend is stopped (SIGTERM) and
/// killed (SIGKILL), and Mosquitto restarted, while four devices publish
/// through Mosquitto; what Mosquitto acknowledged while no backend ran is
/// stored once the backend is back.
#[tokio::test]
async fn acknowledged_readings_survive_stops_kills_and_a_broker_restart_on_mosquitto() {
    let db = TestDb::postgres().await;
    let broker_dir = tempfile::tempdir().unwrap();
    let broker_port = plantops_testkit::free_port();
    let mut mosquitto = Mosquitto::start(broker_dir.path(), broker_port).await;
    let mut env = mosquitto.backend_env();
    env.push(("DATABASE_URL", db.url().to_string()));
    env.push(("ENCRYPTION_KEY", "cd".repeat(32)));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let mut server = Server::start(dir.path(), &ports, &env).await;
    let watched = plants_with_devices(&server).await;
    let probe = server.register("cc:00:00:00:00:ff").await;
    let ca = std::fs::read(&mosquitto.ca).unwrap();
    let (phase, phases) = watch::channel(Phase::Publish);
    let mut publishers: Vec<Publisher> = watched
        .iter()
        .map(|Watched { device: d, .. }| {
            let mut options = device_options(d, broker_port, Some(ca.clone()), &d.device_id);
            options.set_keep_alive(Duration::from_secs(5));
            Publisher::start(options, d.device_id.clone(), phases.clone())
        })
        .collect();
    progress(&publishers, BETWEEN_FAULTS).await;

    // Devices go on publishing to Mosquitto while no backend runs.
    server.terminate().await;
    progress(&publishers, BETWEEN_FAULTS).await;
    server = Server::start(dir.path(), &ports, &env).await;
    progress(&publishers, BETWEEN_FAULTS).await;

    server.kill().await;
    progress(&publishers, BETWEEN_FAULTS).await;
    server = Server::start(dir.path(), &ports, &env).await;
    progress(&publishers, BETWEEN_FAULTS).await;

    cut_database_connections(&db).await;
    progress(&publishers, BETWEEN_FAULTS).await;

    // A graceful restart of Mosquitto keeps what it queued (sessions and
    // messages). It does not restore shared subscriptions, so devices wait
    // until the backend has subscribed again (docs/deployment.md).
    phase.send(Phase::Pause).unwrap();
    mosquitto.terminate().await;
    mosquitto = Mosquitto::start(broker_dir.path(), broker_port).await;
    subscribed_again(&server, &probe, broker_port, &ca).await;
    phase.send(Phase::Publish).unwrap();
    progress(&publishers, BETWEEN_FAULTS).await;

    stop_publishers(phase, &mut publishers).await;
    // Stored asynchronously to Mosquitto's PUBACKs: wait for the last.
    let expected: usize = publishers.iter().map(Publisher::count).sum();
    let mut stored = 0;
    for _ in 0..400 {
        stored = 0;
        for Watched { plant_id, .. } in &watched {
            let (_, history) = server
                .get(&format!("/api/plants/{plant_id}/history?hours=2"))
                .await;
            stored += history["count"].as_u64().unwrap() as usize;
        }
        if stored >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        stored >= expected,
        "{stored} stored of {expected} acknowledged"
    );
    every_acknowledged_reading_is_stored_and_judged(&server, &watched, publishers).await;
    drop(mosquitto);
}

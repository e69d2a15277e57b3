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

/// How a device publishes: a reading every `gap` (wall time) while it may,
/// each taken `step_ms` after the one before, the first at `first_ms`.
#[derive(Debug, Clone, Copy)]
struct Pace {
    gap: Duration,
    first_ms: i64,
    step_ms: i64,
    /// Soil moisture spells by reading time ([`soil_at`]).
    spell_ms: i64,
}

impl Pace {
    /// Twenty a second with readings 200 ms apart by their own times
    /// (within the device rate of 10 a second however they arrive),
    /// starting an hour ago: over the device rate once its burst is spent
    /// (the built-in broker paces it), and few enough for the history to
    /// hold them all.
    fn fault_test() -> Pace {
        Pace {
            gap: Duration::from_millis(50),
            first_ms: chrono::Utc::now().timestamp_millis() - 3_600_000,
            step_ms: 200,
            spell_ms: 6_000,
        }
    }
}

impl Publisher {
    fn start(
        options: MqttOptions,
        device_id: String,
        phase: watch::Receiver<Phase>,
        pace: Pace,
    ) -> Publisher {
        let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
        let task = tokio::spawn(publish(
            options,
            device_id,
            acknowledged.clone(),
            phase,
            pace,
        ));
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
    pace: Pace,
) {
    options.set_inflight(IN_FLIGHT as u16);
    let topic = format!("devices/{device_id}/telemetry");
    let mut time = pace.first_ms - pace.step_ms;
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
                    time += pace.step_ms;
                    let soil = soil_at(time, pace.spell_ms);
                    let payload = json!({ "soil_moisture": soil, "timestamp": time }).to_string();
                    if client
                        .try_publish(&topic, QoS::AtLeastOnce, false, payload)
                        .is_err()
                    {
                        break 'connection;
                    }
                    handed.push_back(time);
                    tokio::time::sleep(pace.gap).await;
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
/// `spell_ms` below the plant's minimum between spells as long above it.
/// A spell holds more readings of a device than can arrive out of order,
/// so each is judged as one breach.
fn soil_at(time: i64, spell_ms: i64) -> f64 {
    if (time / spell_ms) % 2 == 1 {
        10.0
    } else {
        50.0
    }
}

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

/// The soil moisture of a plant's stored readings, oldest first (reading
/// times in ms), read from the database (the history API is capped).
async fn stored_soil(database: &mut sqlx::PgConnection, plant_id: &str) -> Vec<(i64, f64)> {
    let rows: Vec<(chrono::DateTime<chrono::Utc>, f64)> = sqlx::query_as(
        "SELECT time, soil_moisture FROM readings WHERE plant_id = $1 ORDER BY time",
    )
    .bind(plant_id.parse::<uuid::Uuid>().unwrap())
    .fetch_all(database)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(time, soil)| (time.timestamp_millis(), soil))
        .collect()
}

/// A connection of the test's own to the server's database.
async fn database(db: &TestDb) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(db.url()).await.unwrap()
}

/// What a run stored and judged, against what the brokers acknowledged.
#[derive(Debug, Default)]
struct Tally {
    acknowledged: usize,
    stored: usize,
    /// Stored readings whose PUBACK never reached the device (in flight
    /// when a connection dropped).
    stored_unacknowledged: usize,
    expected_alerts: u64,
    raised_alerts: u64,
}

/// Every acknowledged reading of every device is in its plant's history,
/// and the plant's alerts are those its stored readings call for: one per
/// spell below the minimum, one per return above it.
async fn every_acknowledged_reading_is_stored_and_judged(
    server: &Server,
    db: &TestDb,
    watched: &[Watched],
    publishers: Vec<Publisher>,
) -> Tally {
    let mut tally = Tally::default();
    let mut database = database(db).await;
    for (Watched { plant_id, device }, publisher) in watched.iter().zip(publishers) {
        let stored = stored_soil(&mut database, plant_id).await;
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
                .get(&format!(
                    "/api/alerts?plant_id={plant_id}&kind={kind}&limit=1"
                ))
                .await;
            alerts["total"].as_u64().unwrap()
        };
        let raised = (alerts("threshold").await, alerts("recovered").await);
        assert_eq!(
            raised,
            (breaches, recoveries),
            "device {}: (breach, recovery) alerts for {} stored readings",
            device.device_id,
            stored.len()
        );
        tally.acknowledged += acknowledged.len();
        tally.stored += stored.len();
        tally.stored_unacknowledged += times.difference(&acknowledged).count();
        tally.expected_alerts += breaches + recoveries;
        tally.raised_alerts += raised.0 + raised.1;
    }
    tally
}

async fn plants_with_devices(server: &Server, devices: usize) -> Vec<Watched> {
    let mut watched = Vec::new();
    for i in 0..devices {
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
    let watched = plants_with_devices(&server, DEVICES).await;
    let (phase, phases) = watch::channel(Phase::Publish);
    let pace = Pace::fault_test();
    let mut publishers: Vec<Publisher> = watched
        .iter()
        .map(|Watched { device: d, .. }| {
            let mut options = device_options(d, ports.mqtt, None, &d.device_id);
            options.set_keep_alive(Duration::from_secs(5));
            Publisher::start(options, d.device_id.clone(), phases.clone(), pace)
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
    every_acknowledged_reading_is_stored_and_judged(&server, &db, &watched, publishers).await;
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
    let watched = plants_with_devices(&server, DEVICES).await;
    let probe = server.register("cc:00:00:00:00:ff").await;
    let ca = std::fs::read(&mosquitto.ca).unwrap();
    let (phase, phases) = watch::channel(Phase::Publish);
    let pace = Pace::fault_test();
    let mut publishers: Vec<Publisher> = watched
        .iter()
        .map(|Watched { device: d, .. }| {
            let mut options = device_options(d, broker_port, Some(ca.clone()), &d.device_id);
            options.set_keep_alive(Duration::from_secs(5));
            Publisher::start(options, d.device_id.clone(), phases.clone(), pace)
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
    let mut database = database(&db).await;
    for _ in 0..400 {
        stored = 0;
        for Watched { plant_id, .. } in &watched {
            stored += stored_soil(&mut database, plant_id).await.len();
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
    every_acknowledged_reading_is_stored_and_judged(&server, &db, &watched, publishers).await;
    drop(mosquitto);
}

/// The resident memory of a process, in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// `make soak`: the built-in broker on PostgreSQL for
/// `PLANTOPS_SOAK_MINUTES` (default 30), `PLANTOPS_SOAK_DEVICES` devices
/// (default 20) publishing two readings a second each, one fault every
/// `PLANTOPS_SOAK_FAULT_SECS` (default 300) in turn (database connections cut, SIGTERM and start, SIGKILL
/// and start), the server's resident memory sampled every 10 s. Checks
/// what the fault tests check and prints the figures for
/// docs/benchmarks.md.
#[tokio::test]
#[ignore = "runs for half an hour: make soak"]
async fn soak() {
    let setting = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .map(|v| v.parse().expect("a number"))
            .unwrap_or(default)
    };
    let minutes = setting("PLANTOPS_SOAK_MINUTES", 30);
    let devices = setting("PLANTOPS_SOAK_DEVICES", 20) as usize;
    let fault_every = Duration::from_secs(setting("PLANTOPS_SOAK_FAULT_SECS", 300));
    const SAMPLE_EVERY: Duration = Duration::from_secs(10);

    let db = TestDb::postgres().await;
    let env = [
        ("DATABASE_URL", db.url()),
        ("ENCRYPTION_KEY", &"5a".repeat(32)),
    ];
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let mut server = Server::start(dir.path(), &ports, &env).await;
    let watched = plants_with_devices(&server, devices).await;
    let (phase, phases) = watch::channel(Phase::Publish);
    let pace = Pace {
        gap: Duration::from_millis(500),
        first_ms: chrono::Utc::now().timestamp_millis(),
        step_ms: 500,
        spell_ms: 60_000,
    };
    let mut publishers: Vec<Publisher> = watched
        .iter()
        .map(|Watched { device: d, .. }| {
            let mut options = device_options(d, ports.mqtt, None, &d.device_id);
            options.set_keep_alive(Duration::from_secs(30));
            Publisher::start(options, d.device_id.clone(), phases.clone(), pace)
        })
        .collect();

    let started = std::time::Instant::now();
    let end = started + Duration::from_secs(minutes * 60);
    let mut next_fault = started + fault_every;
    // Per server process: (seconds into the run, resident KiB).
    let mut lives: Vec<Vec<(u64, u64)>> = vec![Vec::new()];
    let mut faults = Vec::new();
    let sample = |lives: &mut Vec<Vec<(u64, u64)>>, server: &Server| {
        let kib = resident_kib(server.child.id().expect("plantops runs"));
        lives
            .last_mut()
            .unwrap()
            .push((started.elapsed().as_secs(), kib));
    };
    sample(&mut lives, &server);
    while std::time::Instant::now() < end {
        tokio::time::sleep(SAMPLE_EVERY).await;
        sample(&mut lives, &server);
        let now = std::time::Instant::now();
        if now < next_fault || now >= end {
            continue;
        }
        next_fault += fault_every;
        match faults.len() % 3 {
            0 => {
                cut_database_connections(&db).await;
                faults.push("database connections cut");
            }
            1 => {
                server.terminate().await;
                server = Server::start(dir.path(), &ports, &env).await;
                faults.push("SIGTERM and start");
                lives.push(Vec::new());
            }
            _ => {
                server.kill().await;
                server = Server::start(dir.path(), &ports, &env).await;
                faults.push("SIGKILL and start");
                lives.push(Vec::new());
            }
        }
        sample(&mut lives, &server);
    }
    stop_publishers(phase, &mut publishers).await;
    let tally =
        every_acknowledged_reading_is_stored_and_judged(&server, &db, &watched, publishers).await;

    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut report = format!(
        "Soak: {minutes} min, built-in broker on PostgreSQL, {devices} devices at 2 readings/s, \
         faults every {} s: {}.\n\n\
         | readings acknowledged | stored | stored without their PUBACK | duplicated | alerts expected | raised |\n\
         |---|---|---|---|---|---|\n\
         | {} | {} | {} | 0 | {} | {} |\n\n\
         | server process | RSS at start (MiB) | at end | peak |\n|---|---|---|---|\n",
        fault_every.as_secs(),
        faults.join(", "),
        tally.acknowledged,
        tally.stored,
        tally.stored_unacknowledged,
        tally.expected_alerts,
        tally.raised_alerts,
    );
    for (n, life) in lives.iter().enumerate() {
        let (Some(first), Some(last)) = (life.first(), life.last()) else {
            continue;
        };
        let peak = life.iter().map(|(_, kib)| *kib).max().unwrap_or_default();
        report += &format!(
            "| {} ({} s to {} s) | {:.1} | {:.1} | {:.1} |\n",
            n + 1,
            first.0,
            last.0,
            mib(first.1),
            mib(last.1),
            mib(peak)
        );
    }
    println!("{report}");
    if let Ok(path) = std::env::var("PLANTOPS_SOAK_REPORT") {
        std::fs::write(path, &report).unwrap();
    }
}

/// A database that stalls does not disconnect a busy device: its window
/// fills while its messages wait for their commit, the built-in broker
/// goes on answering its PINGREQs, and once the database moves everything
/// it sent is acknowledged on the same connection. The stall lasts
/// `PLANTOPS_TEST_STALL_SECS` (8 s, four keep-alive periods; docs/security.md
/// reports 60).
#[tokio::test]
async fn a_busy_device_stays_connected_through_a_database_stall() {
    const SENT: usize = 100;
    let stall = Duration::from_secs(
        std::env::var("PLANTOPS_TEST_STALL_SECS")
            .ok()
            .and_then(|secs| secs.parse().ok())
            .unwrap_or(8),
    );
    let db = TestDb::postgres().await;
    let env = [
        ("DATABASE_URL", db.url()),
        ("ENCRYPTION_KEY", &"7e".repeat(32)),
    ];
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let server = Server::start(dir.path(), &ports, &env).await;
    let device = server.register("cc:00:00:00:01:01").await;
    let mut options = device_options(&device, ports.mqtt, None, &device.device_id);
    options.set_keep_alive(Duration::from_secs(2));
    options.set_inflight(SENT as u16);
    let (client, mut eventloop, connack) = crate::common::connect(options).await;
    assert_eq!(connack, crate::common::Connack::Accepted);

    // Commits wait while another connection holds the readings table.
    let mut holder = database(&db).await;
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("LOCK TABLE readings IN SHARE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    let topic = format!("devices/{}/telemetry", device.device_id);
    let first = chrono::Utc::now().timestamp_millis() - 60_000;
    for i in 0..SENT {
        let payload = json!({"light_level": i, "timestamp": first + i as i64}).to_string();
        client
            .try_publish(&topic, QoS::AtLeastOnce, false, payload)
            .unwrap();
    }
    let mut pongs = 0;
    let mut acknowledged = 0;
    let stalled = tokio::time::timeout(stall, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PingResp)) => pongs += 1,
                Ok(Event::Incoming(Packet::PubAck(_))) => acknowledged += 1,
                Ok(_) => {}
                Err(error) => return error.to_string(),
            }
        }
    })
    .await;
    assert!(
        stalled.is_err(),
        "disconnected during the stall: {stalled:?}"
    );
    assert_eq!(acknowledged, 0, "nothing acknowledged before it is stored");
    assert!(pongs >= 2, "PINGREQs answered during the stall: {pongs}");

    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        while acknowledged < SENT {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acknowledged += 1,
                Ok(_) => {}
                Err(error) => panic!("disconnected after the stall: {error}"),
            }
        }
    })
    .await
    .expect("every message acknowledged once the database moves");
    let (_, latest) = server
        .get(&format!(
            "/api/devices/{}/telemetry/latest",
            device.device_id
        ))
        .await;
    assert_eq!(latest["light_level"], (SENT - 1) as f64);
}

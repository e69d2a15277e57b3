//! `plantops serve` against a real Mosquitto (TLS, dynamic security).

use crate::common;

use std::time::Duration;

use crate::common::mosquitto::Mosquitto;
use crate::common::{
    closed, connect, device_options, publish_acked, Connack, Credentials, Ports, Server,
};
use serde_json::{json, Value};

async fn start(dir: &std::path::Path, mosquitto: &Mosquitto) -> Server {
    let env = mosquitto.backend_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start(dir, &Ports::free(), &env).await
}

/// Polls the API until `check` passes: ingestion through Mosquitto is
/// asynchronous to the device's PUBACK.
async fn eventually(server: &Server, path: &str, check: impl Fn(u16, &Value) -> bool) -> Value {
    for _ in 0..200 {
        let (status, body) = server.get(path).await;
        if check(status, &body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{path} never reached the expected state");
}

#[tokio::test]
async fn devices_are_provisioned_on_mosquitto_and_their_readings_stored() {
    let broker_dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(broker_dir.path(), plantops_testkit::free_port()).await;
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &mosquitto).await;
    let (_, health) = server.get("/api/health").await;
    assert_eq!(health["components"]["mqtt"]["status"], "connected");
    // Provisioning made the broker deny what no role grants, receiving too.
    let defaults = mosquitto.ctrl(&["getDefaultACLAccess"]).await;
    for access in ["publishClientSend", "publishClientReceive", "subscribe"] {
        assert!(
            defaults
                .lines()
                .any(|l| l.starts_with(access) && l.trim_end().ends_with("deny")),
            "{defaults}"
        );
    }

    let (_, plant) = server.post("/api/plants", json!({"name": "Ivy"})).await;
    let plant_id = plant["id"].as_str().unwrap();
    let a = server.register_for("bb:00:00:00:00:01", plant_id).await;
    let b = server.register("bb:00:00:00:00:02").await;
    let ca = std::fs::read(&mosquitto.ca).unwrap();
    let (client, mut eventloop, outcome) = connect(device_options(
        &a,
        mosquitto.port,
        Some(ca.clone()),
        &a.device_id,
    ))
    .await;
    assert_eq!(outcome, Connack::Accepted);

    // The ACL drops A's message on B's topic; A's own arrives after it.
    publish_acked(
        &client,
        &mut eventloop,
        &format!("devices/{}/telemetry", b.device_id),
        json!({"temperature": 99}),
    )
    .await;
    publish_acked(
        &client,
        &mut eventloop,
        &format!("devices/{}/telemetry", a.device_id),
        json!({"soil_moisture": 33, "light": 10}),
    )
    .await;
    let latest = eventually(
        &server,
        &format!("/api/devices/{}/telemetry/latest", a.device_id),
        |s, _| s == 200,
    )
    .await;
    assert_eq!(latest["plant_id"], plant_id);
    assert_eq!(latest["light_level"], 10.0);
    let (status, _) = server
        .get(&format!("/api/devices/{}/telemetry/latest", b.device_id))
        .await;
    assert_eq!(status, 404);

    let mut wrong = b.clone();
    wrong.password = "wrong".into();
    let (_, _, outcome) = connect(device_options(
        &wrong,
        mosquitto.port,
        Some(ca.clone()),
        "intruder",
    ))
    .await;
    assert!(matches!(outcome, Connack::Refused(_)), "{outcome:?}");

    // Deleting the device closes its session and its account.
    assert_eq!(
        server
            .delete(&format!("/api/devices/{}", a.device_id))
            .await,
        200
    );
    closed(&mut eventloop).await;
    let (_, _, outcome) = connect(device_options(&a, mosquitto.port, Some(ca), &a.device_id)).await;
    assert!(matches!(outcome, Connack::Refused(_)), "{outcome:?}");
}

#[tokio::test]
async fn the_backend_reconnects_after_a_broker_restart() {
    let broker_dir = tempfile::tempdir().unwrap();
    let port = plantops_testkit::free_port();
    let mut mosquitto = Mosquitto::start(broker_dir.path(), port).await;
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &mosquitto).await;
    let device = server.register("bb:00:00:00:00:03").await;

    mosquitto.kill().await;
    let ready = eventually(&server, "/api/ready", |s, _| s == 503).await;
    assert_eq!(ready["checks"]["mqtt"], false);
    let (_, health) = server.get("/api/health").await;
    assert_eq!(health["components"]["mqtt"]["status"], "disconnected");
    assert_eq!(health["status"], "degraded");

    let mosquitto = Mosquitto::start(broker_dir.path(), port).await;
    server.wait_ready().await;
    let ca = std::fs::read(&mosquitto.ca).unwrap();
    let (client, mut eventloop, outcome) =
        connect(device_options(&device, port, Some(ca), &device.device_id)).await;
    assert_eq!(outcome, Connack::Accepted, "account survives the restart");
    publish_acked(
        &client,
        &mut eventloop,
        &format!("devices/{}/telemetry", device.device_id),
        json!({"humidity": 61}),
    )
    .await;
    let latest = eventually(
        &server,
        &format!("/api/devices/{}/telemetry/latest", device.device_id),
        |s, _| s == 200,
    )
    .await;
    assert_eq!(latest["humidity"], 61.0);
}

#[tokio::test]
async fn start_up_removes_broker_accounts_of_unknown_devices() {
    let broker_dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(broker_dir.path(), plantops_testkit::free_port()).await;
    mosquitto
        .ctrl(&["createClient", "device_0badc0de", "-p", "leftover"])
        .await;
    assert!(mosquitto
        .ctrl(&["listClients"])
        .await
        .contains("device_0badc0de"));
    let data = tempfile::tempdir().unwrap();
    let _server = start(data.path(), &mosquitto).await;
    for _ in 0..400 {
        if !mosquitto
            .ctrl(&["listClients"])
            .await
            .contains("device_0badc0de")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the stale device account was not removed");
}

#[tokio::test]
async fn the_simulator_publishes_through_mosquitto() {
    let broker_dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(broker_dir.path(), plantops_testkit::free_port()).await;
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &mosquitto).await;
    let output = common::plantops()
        .args([
            "simulate",
            "--url",
            &server.http,
            "--token",
            server.token.as_deref().unwrap(),
            "--devices",
            "2",
            "--interval",
            "0.05",
            "--count",
            "3",
            "--create-plants",
            "--seed",
            "11",
            "--mqtt-host",
            "localhost",
            "--mqtt-port",
            &mosquitto.port.to_string(),
            "--ca",
            mosquitto.ca.to_str().unwrap(),
        ])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("6 readings (6 acknowledged)"));
    let (_, plants) = server.get("/api/plants").await;
    assert_eq!(plants["total"], 2);
    for plant in plants["plants"].as_array().unwrap() {
        let path = format!(
            "/api/plants/{}/history?hours=1",
            plant["id"].as_str().unwrap()
        );
        eventually(&server, &path, |_, body| body["count"] == 3).await;
    }
}

/// A poison message — one larger than the backend's link accepts — never
/// reaches it: Mosquitto disconnects its sender (`max_packet_size`), and
/// the other devices' readings keep arriving. Without the limit the link
/// failed on it and was handed it again after every reconnect.
#[tokio::test]
async fn an_oversized_publish_never_stalls_ingestion() {
    let broker_dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(broker_dir.path(), plantops_testkit::free_port()).await;
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &mosquitto).await;
    let poisoner = server.register("bb:00:00:00:00:0e").await;
    let honest = server.register("bb:00:00:00:00:0f").await;
    let ca = std::fs::read(&mosquitto.ca).unwrap();
    let mut options = device_options(
        &poisoner,
        mosquitto.port,
        Some(ca.clone()),
        &poisoner.device_id,
    );
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop, outcome) = connect(options).await;
    assert_eq!(outcome, Connack::Accepted);
    let huge = format!(
        "{{\"soil_moisture\": 40, \"padding\": \"{}\"}}",
        "x".repeat(300 * 1024)
    );
    client
        .publish(
            format!("devices/{}/telemetry", poisoner.device_id),
            rumqttc::QoS::AtLeastOnce,
            false,
            huge,
        )
        .await
        .unwrap();
    closed(&mut eventloop).await;

    let (client, mut eventloop, _) = connect(device_options(
        &honest,
        mosquitto.port,
        Some(ca),
        &honest.device_id,
    ))
    .await;
    publish_acked(
        &client,
        &mut eventloop,
        &format!("devices/{}/telemetry", honest.device_id),
        json!({"soil_moisture": 52}),
    )
    .await;
    let latest = eventually(
        &server,
        &format!("/api/devices/{}/telemetry/latest", honest.device_id),
        |s, _| s == 200,
    )
    .await;
    assert_eq!(latest["soil_moisture"], 52.0);
    let (_, health) = server.get("/api/health").await;
    assert_eq!(health["components"]["mqtt"]["status"], "connected");
}

/// Client ids are usernames on Mosquitto (`use_username_as_clientid`): a
/// device that names the backend's client id, or another device's, gets its
/// own and takes over no session. Before, it kicked the backend off and
/// inherited its subscription and queued readings.
#[tokio::test]
async fn a_device_cannot_take_over_another_clients_session() {
    let broker_dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(broker_dir.path(), plantops_testkit::free_port()).await;
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &mosquitto).await;
    let hostile = server.register("bb:00:00:00:00:1a").await;
    let honest = server.register("bb:00:00:00:00:1b").await;
    let ca = std::fs::read(&mosquitto.ca).unwrap();

    let (honest_client, mut honest_loop, outcome) = connect(device_options(
        &honest,
        mosquitto.port,
        Some(ca.clone()),
        &honest.device_id,
    ))
    .await;
    assert_eq!(outcome, Connack::Accepted);
    for (round, stolen) in [common::mosquitto::BACKEND, honest.device_id.as_str()]
        .into_iter()
        .enumerate()
    {
        let (hijacker, mut hijacker_loop, outcome) = connect(device_options(
            &hostile,
            mosquitto.port,
            Some(ca.clone()),
            stolen,
        ))
        .await;
        assert_eq!(outcome, Connack::Accepted, "connected as {stolen}");

        // The honest device is still connected and the backend still stores.
        let moisture = 40 + round;
        publish_acked(
            &honest_client,
            &mut honest_loop,
            &format!("devices/{}/telemetry", honest.device_id),
            json!({ "soil_moisture": moisture }),
        )
        .await;
        eventually(
            &server,
            &format!("/api/devices/{}/telemetry/latest", honest.device_id),
            |s, latest| s == 200 && latest["soil_moisture"] == moisture as f64,
        )
        .await;
        // Nor was the hijacker kicked by a backend taking its id back.
        publish_acked(
            &hijacker,
            &mut hijacker_loop,
            &format!("devices/{}/heartbeat", hostile.device_id),
            json!({"uptime": 1}),
        )
        .await;
    }
    let (_, health) = server.get("/api/health").await;
    assert_eq!(health["components"]["mqtt"]["status"], "connected");
}

/// An upgrade from the single-backend version: its persistent session
/// (account `MQTT_BACKEND_USERNAME`, plain subscriptions) holds what
/// devices sent while it was stopped. The new version's leader takes it
/// over: those readings are stored, and the session is ended so the broker
/// stops queueing for it.
#[tokio::test]
async fn readings_queued_for_the_previous_backend_are_stored_after_an_upgrade() {
    use common::mosquitto::{BACKEND, BACKEND_PASSWORD};
    let broker_dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(broker_dir.path(), plantops_testkit::free_port()).await;
    let data = tempfile::tempdir().unwrap();
    // The instances before and after: the first one's session is left to
    // the (slow) takeover of stopped instances, so what arrives quickly
    // comes from the previous backend's session.
    let as_instance = |id: &'static str| {
        let mut env = mosquitto.backend_env();
        env.push(("PLANTOPS_INSTANCE_ID", id.into()));
        env
    };
    let launch = |env: Vec<(&'static str, String)>| {
        let dir = data.path().to_path_buf();
        async move {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            Server::start(&dir, &Ports::free(), &env).await
        }
    };
    let mut server = launch(as_instance("before-upgrade")).await;
    let device = server.register("bb:00:00:00:00:2a").await;
    server.kill().await;

    // What the earlier version left: its account, its role, its session.
    mosquitto
        .ctrl(&["createClient", BACKEND, "-p", BACKEND_PASSWORD])
        .await;
    mosquitto
        .ctrl(&["addClientRole", BACKEND, "plantops-backend"])
        .await;
    let ca = std::fs::read(&mosquitto.ca).unwrap();
    let legacy = Credentials {
        device_id: String::new(),
        username: BACKEND.into(),
        password: BACKEND_PASSWORD.into(),
    };
    let (client, mut eventloop, outcome) = connect(device_options(
        &legacy,
        mosquitto.port,
        Some(ca.clone()),
        BACKEND,
    ))
    .await;
    assert_eq!(outcome, Connack::Accepted);
    client
        .subscribe("devices/+/telemetry", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))) => break,
            Ok(Ok(_)) => continue,
            other => panic!("no SUBACK: {other:?}"),
        }
    }
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), closed(&mut eventloop)).await;

    // Devices went on publishing while no backend ran.
    let (device_client, mut device_loop, outcome) = connect(device_options(
        &device,
        mosquitto.port,
        Some(ca),
        &device.device_id,
    ))
    .await;
    assert_eq!(outcome, Connack::Accepted);
    let topic = format!("devices/{}/telemetry", device.device_id);
    for moisture in 41..46 {
        publish_acked(
            &device_client,
            &mut device_loop,
            &topic,
            json!({ "soil_moisture": moisture, "timestamp": 1_780_000_000 + moisture }),
        )
        .await;
    }

    let server = launch(as_instance("after-upgrade")).await;
    let latest = eventually(
        &server,
        &format!("/api/devices/{}/telemetry/latest", device.device_id),
        |status, latest| status == 200 && latest["soil_moisture"] == 45.0,
    )
    .await;
    assert_eq!(latest["device_id"], device.device_id.as_str());
    for _ in 0..400 {
        let stored = server
            .metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix("plantops_readings_committed_total "))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if stored >= 5.0 {
            assert_eq!(stored, 5.0, "each queued reading stored once");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the readings queued for the previous backend were not stored");
}

/// Unix milliseconds `seconds_ago` before now: a plausible reading time.
fn millis_ago(seconds_ago: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    (now - Duration::from_secs(seconds_ago)).as_millis() as u64
}

/// A graceful stop of the only backend (SIGTERM: what an upgrade,
/// `systemctl restart` and `docker compose up -d` do) keeps its broker
/// session subscribed, so Mosquitto queues what devices send while it is
/// down; started again, it stores all of it. The backlog arrives at once
/// but carries the times it was measured at, so it is not judged a flood.
/// Before, the stopping backend left the shared subscription and Mosquitto
/// discarded every reading it acknowledged meanwhile.
#[tokio::test]
async fn a_graceful_restart_of_the_only_backend_loses_nothing_sent_meanwhile() {
    const SENT: u64 = 30;
    let broker_dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(broker_dir.path(), plantops_testkit::free_port()).await;
    let data = tempfile::tempdir().unwrap();
    let mut env = mosquitto.backend_env();
    // A burst far below the backlog: only the readings' own times let it pass.
    env.push(("PLANTOPS_DEVICE_MESSAGES_PER_SEC", "1".into()));
    env.push(("PLANTOPS_DEVICE_MESSAGE_BURST", "5".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = Server::start(data.path(), &Ports::free(), &env).await;
    let (_, plant) = server.post("/api/plants", json!({"name": "Fern"})).await;
    let plant_id = plant["id"].as_str().unwrap().to_string();
    let device = server.register_for("bb:00:00:00:00:51", &plant_id).await;
    let ca = std::fs::read(&mosquitto.ca).unwrap();
    let (client, mut eventloop, outcome) = connect(device_options(
        &device,
        mosquitto.port,
        Some(ca),
        &device.device_id,
    ))
    .await;
    assert_eq!(outcome, Connack::Accepted);

    server.terminate().await;

    // One reading a second over the last half minute, sent while no
    // backend runs, each acknowledged by Mosquitto.
    let topic = format!("devices/{}/telemetry", device.device_id);
    for i in 0..SENT {
        publish_acked(
            &client,
            &mut eventloop,
            &topic,
            json!({ "soil_moisture": 30 + i, "timestamp": millis_ago(SENT - i) }),
        )
        .await;
    }

    let server = Server::start(data.path(), &Ports::free(), &env).await;
    let history = eventually(
        &server,
        &format!("/api/plants/{plant_id}/history?hours=1"),
        |status, history| status == 200 && history["count"].as_u64() == Some(SENT),
    )
    .await;
    assert_eq!(
        history["records"][0]["soil_moisture"],
        (30 + SENT - 1) as f64
    );
    let (_, health) = server.get("/api/health").await;
    assert_eq!(
        health["components"]["ingest"]["dropped"]["rate_limited"], 0,
        "{health}"
    );
}

//! Devices against a running server: TLS, credentials and their rotation, client ids,
//! presence, pacing, keep-alive, vitals, ESPHome, MQTT clients, crash safety and export.

use super::*;

/// Register → connect over TLS with the returned credentials → publish →
/// stored with its plant; a wrong password and a foreign topic get nowhere.
#[tokio::test]
async fn device_publishes_over_tls_and_reading_is_stored_with_plant() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Ports::free(), &[]).await;
    let (status, plant) = server.post("/api/plants", json!({"name": "Fern"})).await;
    assert_eq!(status, 201);
    let plant_id = plant["id"].as_str().unwrap();
    let a = server.register_for("aa:00:00:00:00:01", plant_id).await;
    let b = server.register("aa:00:00:00:00:02").await;

    let ca = server.ca_pem().await;
    let options = device_options(&a, server.mqtts_port, Some(ca.clone()), &a.device_id);
    let (client, mut eventloop, outcome) = connect(options).await;
    assert_eq!(outcome, Connack::Accepted);
    publish_acked(
        &client,
        &mut eventloop,
        &format!("devices/{}/telemetry", a.device_id),
        json!({"soil_moisture": 41.5, "temperature": 21.0, "light": 900}),
    )
    .await;
    // Acknowledged means stored: no waiting needed.
    let (status, latest) = server
        .get(&format!("/api/devices/{}/telemetry/latest", a.device_id))
        .await;
    assert_eq!(status, 200);
    assert_eq!(latest["plant_id"], plant_id);
    assert_eq!(latest["soil_moisture"], 41.5);
    assert_eq!(latest["light_level"], 900.0);
    let (_, device) = server.get(&format!("/api/devices/{}", a.device_id)).await;
    assert_eq!(device["status"], "online");

    // A publishes on B's topic: refused, B untouched.
    client
        .publish(
            format!("devices/{}/telemetry", b.device_id),
            QoS::AtLeastOnce,
            false,
            r#"{"temperature": 99}"#,
        )
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
            break;
        }
    }
    let (status, _) = server
        .get(&format!("/api/devices/{}/telemetry/latest", b.device_id))
        .await;
    assert_eq!(status, 404);
    let (_, b_device) = server.get(&format!("/api/devices/{}", b.device_id)).await;
    assert_eq!(b_device["status"], "provisioning");

    // Subscriptions only under the device's own prefix.
    for (filter, allowed) in [
        (format!("devices/{}/#", b.device_id), false),
        ("devices/#".to_string(), false),
        (format!("devices/{}/commands", a.device_id), true),
    ] {
        client.subscribe(&filter, QoS::AtLeastOnce).await.unwrap();
        let granted = loop {
            if let Event::Incoming(Packet::SubAck(ack)) = eventloop.poll().await.unwrap() {
                break ack.return_codes[0] != rumqttc::SubscribeReasonCode::Failure;
            }
        };
        assert_eq!(granted, allowed, "subscribe {filter}");
    }
    // A handful of subscriptions, not thousands: the ninth is refused.
    let mut granted = Vec::new();
    for n in 0..9 {
        let filter = format!("devices/{}/commands/{n}", a.device_id);
        client.subscribe(&filter, QoS::AtMostOnce).await.unwrap();
        granted.push(loop {
            if let Event::Incoming(Packet::SubAck(ack)) = eventloop.poll().await.unwrap() {
                break ack.return_codes[0] != rumqttc::SubscribeReasonCode::Failure;
            }
        });
    }
    // One of the eight places is taken by `commands` above.
    assert_eq!(
        granted,
        [true, true, true, true, true, true, true, false, false]
    );

    // Malformed payloads are dropped and counted, the connection lives on.
    publish_acked(
        &client,
        &mut eventloop,
        &format!("devices/{}/telemetry", a.device_id),
        json!({"humidity": 140}),
    )
    .await;
    publish_acked(
        &client,
        &mut eventloop,
        &format!("devices/{}/telemetry", a.device_id),
        json!("text"),
    )
    .await;
    let (_, health) = server.get("/api/health").await;
    assert_eq!(
        health["components"]["ingest"]["dropped"]["invalid_value"],
        1
    );
    assert_eq!(health["components"]["ingest"]["dropped"]["malformed"], 1);
    assert_eq!(health["components"]["ingest"]["stored"], 1);

    // Wrong password, plain port.
    let mut wrong = b.clone();
    wrong.password = "not-the-password".into();
    let (_, _, outcome) = connect(device_options(&wrong, server.mqtt_port, None, "intruder")).await;
    assert!(matches!(outcome, Connack::Refused(_)), "{outcome:?}");
}

#[tokio::test]
async fn deleting_a_device_disconnects_it_and_refuses_it_after() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Ports::free(), &[]).await;
    let device = server.register("aa:00:00:00:00:03").await;
    let client_id = format!("plantops-{}", device.device_id);
    let (client, mut eventloop, outcome) =
        connect(device_options(&device, server.mqtt_port, None, &client_id)).await;
    assert_eq!(outcome, Connack::Accepted);
    publish_acked(
        &client,
        &mut eventloop,
        &format!("devices/{}/heartbeat", device.device_id),
        json!({"status": "online"}),
    )
    .await;

    assert_eq!(
        server
            .delete(&format!("/api/devices/{}", device.device_id))
            .await,
        200
    );
    // Fails the test unless the server closes the connection.
    closed(&mut eventloop).await;
    let (_, _, outcome) =
        connect(device_options(&device, server.mqtt_port, None, &client_id)).await;
    assert!(matches!(outcome, Connack::Refused(_)), "{outcome:?}");
}

#[tokio::test]
async fn rotating_credentials_cuts_the_old_password() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Ports::free(), &[]).await;
    let device = server.register("aa:00:00:00:00:04").await;
    let (_, mut eventloop, outcome) = connect(device_options(
        &device,
        server.mqtt_port,
        None,
        &device.device_id,
    ))
    .await;
    assert_eq!(outcome, Connack::Accepted);
    let (status, rotated) = server
        .post(
            &format!("/api/devices/{}/rotate-credentials", device.device_id),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    closed(&mut eventloop).await;
    let (_, _, outcome) = connect(device_options(&device, server.mqtt_port, None, "old")).await;
    assert!(matches!(outcome, Connack::Refused(_)));
    let mut fresh = device.clone();
    fresh.password = rotated["mqtt_password"].as_str().unwrap().to_string();
    let (_, _, outcome) = connect(device_options(
        &fresh,
        server.mqtt_port,
        None,
        &format!("plantops-{}", fresh.device_id),
    ))
    .await;
    assert_eq!(outcome, Connack::Accepted);
}

/// Strangers failing with a device's username (here: from the same
/// address) only slow themselves down; the right password still gets in.
#[tokio::test]
async fn wrong_passwords_never_lock_out_the_right_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Ports::free(), &[]).await;
    let device = server.register("aa:00:00:00:00:0d").await;
    let mut guess = device.clone();
    guess.password = "a-guessed-password".into();
    for _ in 0..7 {
        let (_, _, outcome) = connect(device_options(
            &guess,
            server.mqtt_port,
            None,
            &device.device_id,
        ))
        .await;
        assert!(matches!(outcome, Connack::Refused(_)), "{outcome:?}");
    }
    let (_, _, outcome) = connect(device_options(
        &device,
        server.mqtt_port,
        None,
        &device.device_id,
    ))
    .await;
    assert_eq!(outcome, Connack::Accepted);
}

/// A device cannot take another device's client id (and with it its
/// session): refused, while the owner stays connected and keeps publishing.
#[tokio::test]
async fn a_device_cannot_take_another_devices_client_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Ports::free(), &[]).await;
    let owner = server.register("aa:00:00:00:00:0b").await;
    let intruder = server.register("aa:00:00:00:00:0c").await;
    let (client, mut eventloop, outcome) = connect(device_options(
        &owner,
        server.mqtt_port,
        None,
        &owner.device_id,
    ))
    .await;
    assert_eq!(outcome, Connack::Accepted);
    for stolen in [
        owner.device_id.clone(),
        format!("plantops-{}", owner.device_id),
        owner.username.clone(),
    ] {
        let (_, _, outcome) =
            connect(device_options(&intruder, server.mqtt_port, None, &stolen)).await;
        assert!(
            matches!(outcome, Connack::Refused(_)),
            "{stolen}: {outcome:?}"
        );
    }
    // The owner's session survived: its next reading is acknowledged and stored.
    publish_acked(
        &client,
        &mut eventloop,
        &format!("devices/{}/telemetry", owner.device_id),
        json!({"soil_moisture": 44.0}),
    )
    .await;
    let (status, latest) = server
        .get(&format!(
            "/api/devices/{}/telemetry/latest",
            owner.device_id
        ))
        .await;
    assert_eq!(
        (status, latest["soil_moisture"].as_f64()),
        (200, Some(44.0))
    );
}

#[tokio::test]
async fn a_silent_device_goes_offline_and_back_online() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &Ports::free(),
        &[("PLANTOPS_HEARTBEAT_INTERVAL_SECS", "1")],
    )
    .await;
    let device = server.register("aa:00:00:00:00:05").await;
    let (client, mut eventloop, _) = connect(device_options(
        &device,
        server.mqtt_port,
        None,
        &device.device_id,
    ))
    .await;
    let topic = format!("devices/{}/heartbeat", device.device_id);
    publish_acked(&client, &mut eventloop, &topic, json!({})).await;
    let path = format!("/api/devices/{}", device.device_id);
    assert_eq!(server.get(&path).await.1["status"], "online");
    // Three missed one-second heartbeats: poll the API until it says so.
    let mut status = String::new();
    for _ in 0..100 {
        status = server.get(&path).await.1["status"]
            .as_str()
            .unwrap()
            .to_string();
        if status == "offline" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "offline");
    publish_acked(&client, &mut eventloop, &topic, json!({})).await;
    assert_eq!(server.get(&path).await.1["status"], "online");
}

/// SIGKILL mid-stream, restart: every acknowledged reading is stored, and
/// the reading in flight at the kill, sent again, is stored once.
#[tokio::test]
async fn sigkill_mid_stream_loses_no_acknowledged_reading() {
    const TOTAL: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let mut server = Server::start(dir.path(), &ports, &[]).await;
    let device = server.register("aa:00:00:00:00:06").await;
    let options = device_options(&device, server.mqtt_port, None, &device.device_id);
    let topic = format!("devices/{}/telemetry", device.device_id);
    let base = chrono::Utc::now() - chrono::Duration::hours(1);
    let payload = |i: usize| {
        let time = base + chrono::Duration::milliseconds(i as i64 * 10);
        json!({"timestamp": time.to_rfc3339(), "soil_moisture": (i % 100) as f64}).to_string()
    };

    // Like device firmware: publish, wait for the PUBACK, resend on failure.
    let mut next = 0;
    let mut killed = false;
    let mut connection = None;
    while next < TOTAL {
        let (client, eventloop) = match connection.as_mut() {
            Some(connection) => connection,
            None => {
                let (client, eventloop, outcome) = connect(options.clone()).await;
                if outcome != Connack::Accepted {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                connection.insert((client, eventloop))
            }
        };
        client
            .publish(&topic, QoS::AtLeastOnce, false, payload(next))
            .await
            .unwrap();
        if next == TOTAL / 3 && !killed {
            // Kill while this reading is on its way.
            server.kill().await;
            killed = true;
            server = Server::start(dir.path(), &ports, &[]).await;
        }
        let acked = loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => break true,
                Ok(_) => {}
                Err(_) => break false,
            }
        };
        if acked {
            next += 1;
        } else {
            connection = None;
        }
    }
    assert!(killed);
    let store = plantops_store::connect(&format!(
        "sqlite://{}",
        dir.path().join("plantops.db").display()
    ))
    .await
    .unwrap();
    assert_eq!(store.count_readings().await.unwrap(), TOTAL as u64);
    drop(server);
}

/// A device over its message rate (PLANTOPS_DEVICE_MESSAGES_PER_SEC, with a
/// burst) is slowed by the built-in broker, which reads its connection no
/// faster: every message acknowledged is stored, and another device's
/// reading is stored while the flooder still waits. Before, the excess was
/// acknowledged and dropped.
#[tokio::test]
async fn a_flooding_device_is_slowed_alone_and_loses_nothing() {
    const SENT: u64 = 8;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &Ports::free(),
        &[
            ("PLANTOPS_DEVICE_MESSAGES_PER_SEC", "2"),
            ("PLANTOPS_DEVICE_MESSAGE_BURST", "2"),
        ],
    )
    .await;
    let flooder = server.register("aa:00:00:00:00:f1").await;
    let honest = server.register("aa:00:00:00:00:f2").await;
    let (client, mut eventloop, _) = connect(device_options(
        &flooder,
        server.mqtt_port,
        None,
        &flooder.device_id,
    ))
    .await;
    let topic = format!("devices/{}/telemetry", flooder.device_id);
    let flood = tokio::spawn(async move {
        for i in 0..SENT {
            publish_acked(
                &client,
                &mut eventloop,
                &topic,
                json!({ "soil_moisture": i, "timestamp": 1_780_000_000 + i }),
            )
            .await;
        }
    });

    let (client, mut eventloop, _) = connect(device_options(
        &honest,
        server.mqtt_port,
        None,
        &honest.device_id,
    ))
    .await;
    let topic = format!("devices/{}/telemetry", honest.device_id);
    publish_acked(
        &client,
        &mut eventloop,
        &topic,
        json!({"soil_moisture": 61}),
    )
    .await;
    let (status, latest) = server
        .get(&format!(
            "/api/devices/{}/telemetry/latest",
            honest.device_id
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(latest["soil_moisture"], 61.0);
    // The flooder needs three seconds at its rate; the other device did not wait for it.
    assert!(
        !flood.is_finished(),
        "the flood ended before the other device was served"
    );

    flood.await.unwrap();
    let (_, health) = server.get("/api/health").await;
    let ingest = &health["components"]["ingest"];
    assert_eq!(ingest["dropped"]["rate_limited"], 0, "{ingest}");
    assert_eq!(ingest["stored"].as_u64().unwrap(), SENT + 1, "{ingest}");
}

/// A keep-alive of 0 (never) or past PLANTOPS_MQTT_MAX_KEEPALIVE_SECS
/// would let a dead connection hold its state for hours: refused, as
/// Mosquitto's `max_keepalive` does.
#[tokio::test]
async fn the_builtin_broker_bounds_keep_alive() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &Ports::free(),
        &[("PLANTOPS_MQTT_MAX_KEEPALIVE_SECS", "600")],
    )
    .await;
    let device = server.register("aa:00:00:00:00:ab").await;
    for (keep_alive, accepted) in [(0, false), (601, false), (600, true), (30, true)] {
        let mut options = device_options(&device, server.mqtt_port, None, &device.device_id);
        options.set_keep_alive(Duration::from_secs(keep_alive));
        let (_, _, outcome) = connect(options).await;
        assert_eq!(
            outcome == Connack::Accepted,
            accepted,
            "keep-alive {keep_alive}: {outcome:?}"
        );
    }
}

/// `plantops export` writes what the API's export sends, from the database
/// the server uses, while it runs.
#[tokio::test]
async fn plantops_export_writes_the_readings_of_a_plant() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let server = Server::start(dir.path(), &ports, &[]).await;
    let (_, plant) = server.post("/api/plants", json!({"name": "Basil"})).await;
    let plant_id = plant["id"].as_str().unwrap().to_string();
    let device = server.register_for("aa:00:00:00:00:e1", &plant_id).await;
    let (client, mut eventloop, _) = connect(device_options(
        &device,
        server.mqtt_port,
        None,
        &device.device_id,
    ))
    .await;
    let topic = format!("devices/{}/telemetry", device.device_id);
    // Each its own timestamp: readings of one device in the same
    // millisecond are one reading (a resend), and a fast machine publishes
    // three in one.
    let start = chrono::Utc::now().timestamp_millis() - 3_000;
    for (n, moisture) in [31.5, 32.5, 33.5].into_iter().enumerate() {
        publish_acked(
            &client,
            &mut eventloop,
            &topic,
            json!({ "soil_moisture": moisture, "timestamp": start + 1_000 * n as i64 }),
        )
        .await;
    }
    let command = Server::command(dir.path(), &ports, &[]);
    let csv = common::run_like(&command, &["export", "--plant", &plant_id], "").await;
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[0].starts_with("time,device_id,plant_id,soil_moisture"));
    assert!(
        lines[1].contains(",31.5,") && lines[3].contains(",33.5,"),
        "{csv}"
    );
    let response = server
        .client
        .get(format!("{}/api/plants/{plant_id}/export", server.http))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.text().await.unwrap(),
        csv,
        "the API sends the same bytes"
    );

    let file = dir.path().join("basil.jsonl");
    common::run_like(
        &command,
        &[
            "export",
            "--plant",
            &plant_id,
            "--format",
            "jsonl",
            "--output",
            file.to_str().unwrap(),
        ],
        "",
    )
    .await;
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 3);
}

/// Battery and signal ride along with readings and heartbeats: shown per
/// device, and a battery falling below PLANTOPS_LOW_BATTERY_PERCENT (or the
/// plant's own limit) is an alert through the normal path.
#[tokio::test]
async fn battery_and_signal_show_per_device_and_a_low_battery_is_an_alert() {
    let data = tempfile::tempdir().unwrap();
    let env = [("PLANTOPS_LOW_BATTERY_PERCENT", "20")];
    let server = Server::start(data.path(), &Ports::free(), &env).await;
    let (_, plant) = server.post("/api/plants", json!({"name": "Cactus"})).await;
    let plant_id = plant["id"].as_str().unwrap();
    let device = server.register_for("aa:bb:cc:00:00:71", plant_id).await;
    let options = device_options(&device, server.mqtt_port, None, &device.username);
    let (client, mut eventloop, _) = connect(options).await;
    let telemetry = format!("devices/{}/telemetry", device.device_id);
    let reading = json!({"temperature": 24.0, "battery": 40, "rssi": -58});
    publish_acked(&client, &mut eventloop, &telemetry, reading).await;

    let (status, shown) = server
        .get(&format!("/api/devices/{}", device.device_id))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        shown["vitals"],
        json!({"battery_percent": 40.0, "battery_volts": null, "rssi_dbm": -58.0})
    );
    assert!(shown["vitals_at"].is_string(), "{shown}");
    let (_, alerts) = server.get("/api/alerts?kind=low_battery").await;
    assert_eq!(alerts["total"], 0);

    // A heartbeat with a voltage of 3.4 V: about 11 % of a lithium cell.
    let heartbeat = format!("devices/{}/heartbeat", device.device_id);
    publish_acked(
        &client,
        &mut eventloop,
        &heartbeat,
        json!({"battery_voltage": 3.4}),
    )
    .await;
    let (_, alerts) = server.get("/api/alerts?kind=low_battery").await;
    assert_eq!(alerts["total"], 1, "{alerts}");
    let alert = &alerts["alerts"][0];
    assert_eq!(alert["device_id"], device.device_id.as_str());
    assert_eq!(alert["plant_id"], plant_id);
    assert_eq!(alert["threshold"], 20.0);
    assert!(
        (alert["value"].as_f64().unwrap() - 11.1).abs() < 0.1,
        "{alert}"
    );
    // Still low: no second alert.
    publish_acked(&client, &mut eventloop, &heartbeat, json!({"battery": 10})).await;
    let (_, alerts) = server.get("/api/alerts?kind=low_battery").await;
    assert_eq!(alerts["total"], 1);

    // The plant's own limit replaces the server's; 0 turns alerts off.
    let plant_path = format!("/api/plants/{plant_id}");
    let (status, problem) = server
        .put(&plant_path, json!({"low_battery_percent": 101}))
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        problem["detail"][0]["loc"],
        json!(["body", "low_battery_percent"])
    );
    let (status, updated) = server
        .put(&plant_path, json!({"low_battery_percent": 60}))
        .await;
    assert_eq!((status, &updated["low_battery_percent"]), (200, &json!(60)));
    publish_acked(&client, &mut eventloop, &heartbeat, json!({"battery": 100})).await;
    publish_acked(&client, &mut eventloop, &heartbeat, json!({"battery": 50})).await;
    let (_, alerts) = server.get("/api/alerts?kind=low_battery").await;
    assert_eq!(alerts["total"], 2, "{alerts}");
    assert_eq!(alerts["alerts"][0]["threshold"], 60.0);
    server
        .put(&plant_path, json!({"low_battery_percent": 0}))
        .await;
    publish_acked(&client, &mut eventloop, &heartbeat, json!({"battery": 100})).await;
    publish_acked(&client, &mut eventloop, &heartbeat, json!({"battery": 5})).await;
    let (_, alerts) = server.get("/api/alerts?kind=low_battery").await;
    assert_eq!(alerts["total"], 2, "no alert with the plant's limit off");
    // Back to the server's limit.
    let (_, updated) = server
        .put(&plant_path, json!({"low_battery_percent": null}))
        .await;
    assert!(updated["low_battery_percent"].is_null(), "{updated}");
    let _ = client.disconnect().await;
}

/// The ESPHome configuration offered for a device is the repository's,
/// filled in with the device's id, username and the broker's host and TLS
/// port; `esphome config` accepts it (when `make check` installed ESPHome:
/// PLANTOPS_ESPHOME).
#[tokio::test]
async fn a_device_gets_its_esphome_configuration_filled_in() {
    let data = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let server = Server::start(data.path(), &ports, &[]).await;
    let device = server.register("aa:bb:cc:00:00:81").await;
    let response = server
        .client
        .get(format!(
            "{}/api/devices/{}/esphome",
            server.http, device.device_id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let short = &device.device_id.replace('-', "")[..8];
    assert_eq!(
        response.headers()["content-disposition"],
        format!("attachment; filename=\"plantops-{short}.yaml\"").as_str()
    );
    let yaml = response.text().await.unwrap();
    let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let substitutions = &parsed["substitutions"];
    assert_eq!(
        substitutions["device_id"].as_str(),
        Some(device.device_id.as_str())
    );
    assert_eq!(
        substitutions["mqtt_username"].as_str(),
        Some(device.username.as_str())
    );
    assert_eq!(substitutions["mqtt_host"].as_str(), Some("127.0.0.1"));
    let tls_port = ports.mqtts.to_string();
    assert_eq!(substitutions["mqtt_port"].as_str(), Some(tls_port.as_str()));
    assert!(yaml.contains("topic: devices/${device_id}/telemetry"));
    assert!(yaml.contains("password: !secret plantops_mqtt_password"));
    assert!(
        !yaml.contains(&device.password),
        "the password stays a secret"
    );

    let (status, _) = server
        .get(&format!("/api/devices/{}/esphome", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(status, 404);

    let Some(esphome) = std::env::var_os("PLANTOPS_ESPHOME").filter(|p| !p.is_empty()) else {
        eprintln!("PLANTOPS_ESPHOME unset: esphome config not run (make check runs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plantops-sensor.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let ca = String::from_utf8(server.ca_pem().await).unwrap();
    let secrets = serde_json::json!({
        "wifi_ssid": "home", "wifi_password": "wifi-password",
        "plantops_mqtt_password": device.password, "plantops_ca": ca,
    });
    std::fs::write(dir.path().join("secrets.yaml"), secrets.to_string()).unwrap();
    let checked = tokio::process::Command::new(esphome)
        .arg("config")
        .arg(&file)
        .output()
        .await
        .unwrap();
    let output = String::from_utf8_lossy(&checked.stdout).to_string()
        + &String::from_utf8_lossy(&checked.stderr);
    assert!(checked.status.success(), "{output}");
    assert!(output.contains("Configuration is valid"), "{output}");
}

/// Another MQTT implementation than the tests' own client: libmosquitto's
/// `mosquitto_pub` publishes over TLS with MQTT 3.1.1 and with MQTT 5 at
/// QoS 1, and exits 0 only once the PUBACK came (which means stored).
#[tokio::test]
async fn mosquitto_clients_publish_over_tls_with_mqtt_3_1_1_and_5() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Ports::free(), &[]).await;
    let (_, plant) = server.post("/api/plants", json!({"name": "Ivy"})).await;
    let plant_id = plant["id"].as_str().unwrap();
    let device = server.register_for("aa:00:00:00:00:5e", plant_id).await;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, server.ca_pem().await).unwrap();
    let topic = format!("devices/{}/telemetry", device.device_id);
    // One process after the other: their readings are received apart.
    for (version, moisture) in [("mqttv311", 31.0), ("mqttv5", 35.0)] {
        let payload = json!({ "soil_moisture": moisture }).to_string();
        let output = tokio::process::Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &server.mqtts_port.to_string()])
            .args(["--cafile", ca.to_str().unwrap(), "-V", version, "-q", "1"])
            .args(["-i", &device.device_id, "-u", &device.username])
            .args(["-P", &device.password, "-t", &topic, "-m", &payload])
            .output()
            .await
            .expect("mosquitto_pub (package mosquitto-clients)");
        assert!(
            output.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let (status, history) = server
        .get(&format!("/api/plants/{plant_id}/history?hours=1"))
        .await;
    assert_eq!(status, 200);
    let moistures: Vec<f64> = history["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["soil_moisture"].as_f64().unwrap())
        .collect();
    assert_eq!(moistures, [35.0, 31.0], "newest first: {history}");
}

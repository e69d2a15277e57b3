//! Home Assistant's MQTT discovery against a real Mosquitto standing in for
//! Home Assistant's broker (a password file, as the Mosquitto add-on has):
//! a plant's retained device config and its fields as Home Assistant
//! documents them, state on every reading, availability, a rename, Home
//! Assistant announcing `online`, a deletion; and the setting through the
//! API.

use std::path::Path;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::common::{self, mosquitto::is_root, Ports, Server};

const HA_USER: &str = "homeassistant";
const HA_PASSWORD: &str = "ha-broker-secret";

/// Mosquitto with one account, as Home Assistant's add-on runs it.
async fn home_assistant_broker(dir: &Path) -> (Child, u16) {
    let passwords = dir.join("passwd");
    let status = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwords)
        .args([HA_USER, HA_PASSWORD])
        .status()
        .await
        .expect("mosquitto_passwd (package mosquitto)");
    assert!(status.success());
    let port = Ports::free().mqtt;
    let user = if is_root() { "user root\n" } else { "" };
    let config = dir.join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            "{user}per_listener_settings false\nallow_anonymous false\npassword_file {}\n\
             listener {port} 127.0.0.1\n",
            passwords.display()
        ),
    )
    .unwrap();
    let child = crate::common::mosquitto::spawn(&config, port).await;
    (child, port)
}

/// Home Assistant's side: a client reading what PlantOps publishes.
async fn home_assistant(port: u16, name: &str, filters: &[&str]) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(name, "127.0.0.1", port);
    options.set_credentials(HA_USER, HA_PASSWORD);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, eventloop) = AsyncClient::new(options, 100);
    for filter in filters {
        client.subscribe(*filter, QoS::AtLeastOnce).await.unwrap();
    }
    (client, eventloop)
}

/// The next message on `topic`.
async fn next_on(eventloop: &mut EventLoop, topic: &str) -> Publish {
    let wait = async {
        loop {
            if let Event::Incoming(Packet::Publish(message)) = eventloop.poll().await.unwrap() {
                if message.topic == topic {
                    return message;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("nothing on {topic} within 30 s"))
}

fn json_of(message: &Publish) -> Value {
    serde_json::from_slice(&message.payload).unwrap()
}

#[tokio::test]
async fn plants_appear_in_home_assistant_and_follow_their_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = home_assistant_broker(dir.path()).await;
    let (ha, mut ha_loop) = home_assistant(port, "ha", &["homeassistant/#", "plantops/#"]).await;
    let url = format!("mqtt://{HA_USER}:{HA_PASSWORD}@127.0.0.1:{port}");
    let data = dir.path().join("data");
    let ports = Ports::free();
    let server = Server::start(&data, &ports, &[("PLANTOPS_HA_MQTT_URL", &url)]).await;

    let (status, plant) = server.post("/api/plants", json!({"name": "Fern"})).await;
    assert_eq!(status, 201, "{plant}");
    let plant_id: uuid::Uuid = plant["id"].as_str().unwrap().parse().unwrap();
    let object_id = format!("plantops_{}", plant_id.simple());
    let config_topic = format!("homeassistant/device/{object_id}/config");
    let state_topic = format!("plantops/{plant_id}/state");
    let availability_topic = format!("plantops/{plant_id}/availability");

    let config = json_of(&next_on(&mut ha_loop, &config_topic).await);
    assert_eq!(config["dev"]["name"], "Fern");
    assert_eq!(config["dev"]["ids"], json!([object_id]));
    assert_eq!(config["o"]["name"], "PlantOps");
    let mut names: Vec<&String> = config["cmps"].as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(
        names,
        ["last_watered", "mark_watered", "next_watering", "problem"],
        "no measurement before the plant reports; its care from the start"
    );
    let availability = next_on(&mut ha_loop, &availability_topic).await;
    assert_eq!(&availability.payload[..], b"offline", "no device yet");

    // A device reports: its sensors join the config, the state follows.
    let device = server
        .register_for("aa:bb:cc:00:00:61", &plant_id.to_string())
        .await;
    let options = common::device_options(&device, server.mqtt_port, None, &device.username);
    let (client, mut eventloop, _) = common::connect(options).await;
    let telemetry = format!("devices/{}/telemetry", device.device_id);
    let reading = json!({"soil_moisture": 35.5, "temperature": 22.5, "light_level": 800.0});
    common::publish_acked(&client, &mut eventloop, &telemetry, reading).await;

    let config = json_of(&next_on(&mut ha_loop, &config_topic).await);
    let components = config["cmps"].as_object().unwrap();
    let mut names: Vec<&String> = components.keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "illuminance",
            "last_watered",
            "mark_watered",
            "next_watering",
            "problem",
            "soil_moisture",
            "temperature"
        ]
    );
    assert_eq!(components["last_watered"]["device_class"], "timestamp");
    assert_eq!(components["next_watering"]["device_class"], "timestamp");
    let button = &components["mark_watered"];
    assert_eq!(button["p"], "button");
    assert_eq!(
        button["command_topic"],
        format!("plantops/{plant_id}/watered")
    );
    assert_eq!(button["payload_press"], "PRESS");
    let soil = &components["soil_moisture"];
    assert_eq!(soil["p"], "sensor");
    assert_eq!(soil["device_class"], "moisture");
    assert_eq!(soil["unit_of_measurement"], "%");
    assert_eq!(soil["state_class"], "measurement");
    assert_eq!(soil["value_template"], "{{ value_json.soil_moisture }}");
    assert_eq!(soil["unique_id"], format!("{object_id}_soil_moisture"));
    assert_eq!(components["temperature"]["unit_of_measurement"], "°C");
    assert_eq!(components["illuminance"]["device_class"], "illuminance");
    assert_eq!(components["illuminance"]["unit_of_measurement"], "lx");
    assert_eq!(components["problem"]["p"], "binary_sensor");
    assert_eq!(components["problem"]["device_class"], "problem");
    assert_eq!(config["state_topic"], state_topic);
    assert_eq!(config["availability_topic"], availability_topic);
    let state = json_of(&next_on(&mut ha_loop, &state_topic).await);
    assert_eq!(
        state,
        json!({"soil_moisture": 35.5, "temperature": 22.5, "illuminance": 800.0, "problem": "OFF",
               "last_watered": null, "next_watering": null})
    );
    let availability = next_on(&mut ha_loop, &availability_topic).await;
    assert_eq!(&availability.payload[..], b"online", "the device is online");

    // The next reading: state only, values merged.
    let reading = json!({"soil_moisture": 33.0});
    common::publish_acked(&client, &mut eventloop, &telemetry, reading).await;
    let state = json_of(&next_on(&mut ha_loop, &state_topic).await);
    assert_eq!(state["soil_moisture"], 33.0);
    assert_eq!(state["temperature"], 22.5);

    // A breached threshold: the problem sensor turns on.
    let thresholds = json!({"thresholds": {"soil_moisture": {"min": 30.0, "max": 80.0}}});
    let (status, body) = server
        .put(&format!("/api/plants/{plant_id}"), thresholds)
        .await;
    assert_eq!(status, 200, "{body}");
    let _ = next_on(&mut ha_loop, &config_topic).await;
    let reading = json!({"soil_moisture": 20.0});
    common::publish_acked(&client, &mut eventloop, &telemetry, reading).await;
    loop {
        let state = json_of(&next_on(&mut ha_loop, &state_topic).await);
        if state["problem"] == "ON" {
            assert_eq!(state["soil_moisture"], 20.0);
            break;
        }
        assert_eq!(state["problem"], "OFF", "{state}");
    }

    // Renamed: the config follows.
    let (status, _) = server
        .put(
            &format!("/api/plants/{plant_id}"),
            json!({"name": "Boston fern"}),
        )
        .await;
    assert_eq!(status, 200);
    let config = json_of(&next_on(&mut ha_loop, &config_topic).await);
    assert_eq!(config["dev"]["name"], "Boston fern");

    // Home Assistant restarted: everything again.
    ha.publish("homeassistant/status", QoS::AtLeastOnce, false, "online")
        .await
        .unwrap();
    let config = json_of(&next_on(&mut ha_loop, &config_topic).await);
    assert_eq!(config["dev"]["name"], "Boston fern");
    assert_eq!(config["cmps"].as_object().unwrap().len(), 7);

    // "Mark watered" pressed in Home Assistant: the journal records it and
    // the sensor shows it.
    let (status, _) = server
        .put(
            &format!("/api/plants/{plant_id}/care-schedule"),
            json!({"tasks": [{"task": "water", "every_days": 4}]}),
        )
        .await;
    assert_eq!(status, 200);
    ha.publish(
        format!("plantops/{plant_id}/watered"),
        QoS::AtLeastOnce,
        false,
        "PRESS",
    )
    .await
    .unwrap();
    let state = loop {
        let state = json_of(&next_on(&mut ha_loop, &state_topic).await);
        if !state["last_watered"].is_null() {
            break state;
        }
    };
    let last: chrono::DateTime<chrono::Utc> =
        state["last_watered"].as_str().unwrap().parse().unwrap();
    let next: chrono::DateTime<chrono::Utc> =
        state["next_watering"].as_str().unwrap().parse().unwrap();
    assert_eq!(next - last, chrono::Duration::days(4), "{state}");
    let (_, journal) = server
        .get(&format!("/api/plants/{plant_id}/care-events"))
        .await;
    assert_eq!(journal["events"][0]["kind"], "watered", "{journal}");
    assert_eq!(journal["events"][0]["source"], "automation");
    assert_eq!(journal["events"][0]["recorded_by"], "Home Assistant");

    // The retained config is what a Home Assistant starting now reads.
    let (_late, mut late_loop) = home_assistant(port, "ha-late", &[&config_topic]).await;
    let retained = next_on(&mut late_loop, &config_topic).await;
    assert!(retained.retain);
    assert_eq!(json_of(&retained)["dev"]["name"], "Boston fern");

    // Deleted: an empty retained config removes the device.
    let status = server.delete(&format!("/api/plants/{plant_id}")).await;
    assert_eq!(status, 204);
    let removal = next_on(&mut ha_loop, &config_topic).await;
    assert!(removal.payload.is_empty());
    let (late, mut late_loop) = home_assistant(port, "ha-after", &[&config_topic, "marker"]).await;
    late.publish("marker", QoS::AtLeastOnce, false, "done")
        .await
        .unwrap();
    // Retained messages come right after the SUBACK, before the marker.
    let first = loop {
        if let Event::Incoming(Packet::Publish(message)) = late_loop.poll().await.unwrap() {
            break message;
        }
    };
    assert_eq!(first.topic, "marker", "no retained config left");
    let _ = client.disconnect().await;
}

#[tokio::test]
async fn the_broker_is_set_through_the_api_and_shown_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = home_assistant_broker(dir.path()).await;
    let server = Server::start(&dir.path().join("data"), &Ports::free(), &[]).await;
    let (status, view) = server.get("/api/settings/home-assistant").await;
    assert_eq!(status, 200);
    assert_eq!(
        view,
        json!({"enabled": false, "source": null, "url": null, "discovery_prefix": "homeassistant"})
    );

    for (body, field) in [
        (json!({"url": "http://ha.lan:1883"}), "url"),
        (json!({"url": "mqtt://"}), "url"),
        (
            json!({"url": "mqtt://ha.lan", "discovery_prefix": "home/#"}),
            "discovery_prefix",
        ),
    ] {
        let (status, problem) = server.put("/api/settings/home-assistant", body).await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(
            problem["detail"][0]["loc"],
            json!(["body", field]),
            "{problem}"
        );
    }
    let (status, _) = server.get("/api/settings/home-assistant").await;
    assert_eq!(status, 200);

    let (status, plant) = server.post("/api/plants", json!({"name": "Ivy"})).await;
    assert_eq!(status, 201);
    let url = format!("mqtt://{HA_USER}:{HA_PASSWORD}@127.0.0.1:{port}");
    let (status, view) = server
        .put(
            "/api/settings/home-assistant",
            json!({"url": url, "discovery_prefix": "ha"}),
        )
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["enabled"], true);
    assert_eq!(view["source"], "api");
    assert_eq!(view["discovery_prefix"], "ha");
    let shown = view["url"].as_str().unwrap();
    assert!(!shown.contains(HA_PASSWORD), "{shown}");
    assert!(shown.contains("***"), "{shown}");

    // The bridge connects at once, under the new prefix.
    let plant_id: uuid::Uuid = plant["id"].as_str().unwrap().parse().unwrap();
    let (_ha2, mut ha2_loop) = home_assistant(port, "ha2", &["ha/#"]).await;
    let config_topic = format!("ha/device/plantops_{}/config", plant_id.simple());
    let config = json_of(&next_on(&mut ha2_loop, &config_topic).await);
    assert_eq!(config["dev"]["name"], "Ivy");

    let (status, view) = server
        .put("/api/settings/home-assistant", json!({"url": null}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(view["enabled"], false);
}

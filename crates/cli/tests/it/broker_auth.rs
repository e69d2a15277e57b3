//! A broker without Mosquitto's dynamic security asks PlantOps over HTTP
//! who may connect and what they may do (`/api/mqtt/auth`, `/api/mqtt/acl`,
//! `/api/mqtt/superuser`). The requests below are shaped exactly as
//! mosquitto-go-auth's HTTP backend (JSON and form parameters, JSON
//! response mode) and EMQX's HTTP authentication and authorization send
//! them. The broker PlantOps reads from here is a plain Mosquitto.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{connect, device_options, publish_acked, Connack, Ports, Server};

const SECRET: &str = "broker-secret-for-tests-0123456789";
const BACKEND_PASSWORD: &str = "backend-password-for-tests";

async fn plain_mosquitto(dir: &std::path::Path) -> (tokio::process::Child, u16) {
    let port = plantops_testkit::free_port();
    let user = if crate::common::mosquitto::is_root() {
        "user root\n"
    } else {
        ""
    };
    let config = dir.join("mosquitto.conf");
    std::fs::write(
        &config,
        format!("{user}listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    let child = crate::common::mosquitto::spawn(&config, port).await;
    (child, port)
}

/// One request as a broker sends it: `form` or JSON, the secret in the
/// query (go-auth) or in the header (EMQX).
async fn ask(
    server: &Server,
    path: &str,
    body: Value,
    form: bool,
    secret_in_query: bool,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut url = format!("{}{path}", server.http);
    if secret_in_query {
        url.push_str(&format!("?secret={SECRET}"));
    }
    let mut request = client.post(url).header("user-agent", "mosquitto-2.0.18");
    if !secret_in_query {
        request = request.header("x-plantops-mqtt-secret", SECRET);
    }
    request = if form {
        let fields: Vec<(String, String)> = body
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_string),
                )
            })
            .collect();
        request.form(&fields)
    } else {
        request.json(&body)
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_broker_without_dynamic_security_asks_plantops_over_http() {
    let broker_dir = tempfile::tempdir().unwrap();
    let (_mosquitto, port) = plain_mosquitto(broker_dir.path()).await;
    let data = tempfile::tempdir().unwrap();
    let port_text = port.to_string();
    let env = [
        ("MQTT_HOST", "localhost"),
        ("MQTT_PORT", port_text.as_str()),
        ("MQTT_BACKEND_USERNAME", "plantops_backend"),
        ("MQTT_BACKEND_PASSWORD", BACKEND_PASSWORD),
        ("PLANTOPS_MQTT_AUTH_SECRET", SECRET),
        ("PLANTOPS_INSTANCE_ID", "backend-1"),
    ];
    let server = Server::start(data.path(), &Ports::free(), &env).await;
    // Nothing to provision: registration needs no broker admin.
    let device = server.register("ab:00:00:00:00:01").await;
    let other = server.register("ab:00:00:00:00:02").await;
    let (_, health) = server.get("/api/health").await;
    assert_eq!(
        health["components"]["mqtt"]["status"], "connected",
        "{health}"
    );

    // mosquitto-go-auth, JSON parameters and JSON responses.
    let login = json!({"username": device.username, "password": device.password, "clientid": device.device_id});
    let (status, answer) = ask(&server, "/api/mqtt/auth", login.clone(), false, true).await;
    assert_eq!((status, &answer["ok"]), (200, &json!(true)), "{answer}");
    let wrong =
        json!({"username": device.username, "password": "guess", "clientid": device.device_id});
    let (_, answer) = ask(&server, "/api/mqtt/auth", wrong, false, true).await;
    assert_eq!(answer["ok"], false);
    assert_eq!(answer["result"], "deny");
    // Another device's client id would take over its session.
    let stolen = json!({"username": device.username, "password": device.password, "clientid": other.device_id});
    let (_, answer) = ask(&server, "/api/mqtt/auth", stolen, false, true).await;
    assert_eq!(answer["ok"], false);
    let (_, answer) = ask(
        &server,
        "/api/mqtt/superuser",
        json!({"username": device.username}),
        false,
        true,
    )
    .await;
    assert_eq!(answer["ok"], false, "nobody is a superuser");
    let acl = |topic: &str, acc: i32| json!({"username": device.username, "clientid": device.device_id, "topic": topic, "acc": acc});
    let own = format!("devices/{}/telemetry", device.device_id);
    let foreign = format!("devices/{}/telemetry", other.device_id);
    for (topic, acc, allowed) in [
        (own.clone(), 2, true),
        (foreign.clone(), 2, false),
        (format!("devices/{}/#", device.device_id), 4, true),
        ("devices/+/telemetry".to_string(), 4, false),
        (own.clone(), 3, true),
        (foreign.clone(), 3, false),
    ] {
        let (_, answer) = ask(&server, "/api/mqtt/acl", acl(&topic, acc), false, true).await;
        assert_eq!(answer["ok"], allowed, "acc {acc} on {topic}: {answer}");
    }
    // go-auth's form parameters.
    let (status, answer) = ask(&server, "/api/mqtt/auth", login.clone(), true, true).await;
    assert_eq!((status, &answer["ok"]), (200, &json!(true)), "{answer}");
    let (_, answer) = ask(&server, "/api/mqtt/acl", acl(&own, 2), true, true).await;
    assert_eq!(answer["ok"], true, "{answer}");

    // EMQX: the secret in a header, `result`, and `action` instead of `acc`.
    let emqx_login = json!({"username": device.username, "password": device.password,
        "clientid": device.device_id, "peerhost": "127.0.0.1"});
    let (status, answer) = ask(&server, "/api/mqtt/auth", emqx_login, false, false).await;
    assert_eq!(
        (status, &answer["result"]),
        (200, &json!("allow")),
        "{answer}"
    );
    assert_eq!(answer["is_superuser"], false);
    for (topic, action, allowed) in [
        (own.as_str(), "publish", "allow"),
        (foreign.as_str(), "publish", "deny"),
        ("devices/+/telemetry", "subscribe", "deny"),
    ] {
        let request = json!({"username": device.username, "clientid": device.device_id,
            "topic": topic, "action": action, "peerhost": "127.0.0.1"});
        let (_, answer) = ask(&server, "/api/mqtt/acl", request, false, false).await;
        assert_eq!(answer["result"], allowed, "{action} on {topic}");
    }

    // The backend instance's own account reads every device, writes nothing.
    let backend = "plantops_backend.backend-1";
    let (_, answer) = ask(
        &server,
        "/api/mqtt/auth",
        json!({"username": backend, "password": BACKEND_PASSWORD, "clientid": backend}),
        false,
        true,
    )
    .await;
    assert_eq!(answer["ok"], true, "{answer}");
    let (_, answer) = ask(
        &server,
        "/api/mqtt/auth",
        json!({"username": backend, "password": "guess", "clientid": backend}),
        false,
        true,
    )
    .await;
    assert_eq!(answer["ok"], false);
    for (topic, acc, allowed) in [
        ("$share/plantops/devices/+/telemetry", 4, true),
        ("devices/+/heartbeat", 4, true),
        (own.as_str(), 1, true),
        (own.as_str(), 2, false),
        ("#", 4, false),
    ] {
        let request = json!({"username": backend, "clientid": backend, "topic": topic, "acc": acc});
        let (_, answer) = ask(&server, "/api/mqtt/acl", request, false, true).await;
        assert_eq!(answer["ok"], allowed, "backend acc {acc} on {topic}");
    }

    // Without the secret: refused, and nothing is decided.
    let response = reqwest::Client::new()
        .post(format!("{}/api/mqtt/auth?secret=wrong", server.http))
        .json(&login)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // A body no broker sends: a clear 422.
    let (status, answer) = ask(&server, "/api/mqtt/acl", json!({"topic": own}), false, true).await;
    assert_eq!(status, 422, "{answer}");

    // And readings flow through the broker as with Mosquitto's plugin.
    let (client, mut eventloop, outcome) =
        connect(device_options(&device, port, None, &device.device_id)).await;
    assert_eq!(outcome, Connack::Accepted);
    publish_acked(&client, &mut eventloop, &own, json!({"soil_moisture": 42})).await;
    for _ in 0..200 {
        let (status, latest) = server
            .get(&format!(
                "/api/devices/{}/telemetry/latest",
                device.device_id
            ))
            .await;
        if status == 200 {
            assert_eq!(latest["soil_moisture"], 42.0);
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the reading never arrived");
}

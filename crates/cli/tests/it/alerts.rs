//! Alerts end to end: a breaching reading published over MQTT reaches a
//! local server that speaks Discord's webhook protocol.

use std::time::Duration;

use crate::common;
use crate::common::discord::{Discord, Reply};
use crate::common::{connect, device_options, publish_acked, Credentials, Ports, Server};
use rumqttc::{AsyncClient, EventLoop};
use serde_json::{json, Value};

/// A server with the plant "Fern" (soil 20–80 %, temperature up to 30 °C)
/// and a device of it connected over MQTT; the notification tests share it.
pub(crate) struct Setup {
    pub(crate) server: Server,
    client: AsyncClient,
    eventloop: EventLoop,
    device: Credentials,
    plant_id: String,
    /// The last reading's timestamp (ms): each reading gets its own, since
    /// two of one device in the same millisecond are one (a resend).
    last_ms: i64,
}

pub(crate) async fn setup(dir: &std::path::Path, ports: &Ports, env: &[(&str, &str)]) -> Setup {
    let server = Server::start(dir, ports, env).await;
    let (status, plant) = server
        .post(
            "/api/plants",
            json!({"name": "Fern", "thresholds": {
                "soil_moisture": {"min": 20, "max": 80},
                "temperature": {"min": null, "max": 30}
            }}),
        )
        .await;
    assert_eq!(status, 201);
    let plant_id = plant["id"].as_str().unwrap().to_string();
    let device = server.register_for("cc:00:00:00:00:01", &plant_id).await;
    let (client, eventloop, _) = connect(device_options(
        &device,
        server.mqtt_port,
        None,
        &device.device_id,
    ))
    .await;
    Setup {
        server,
        client,
        eventloop,
        device,
        plant_id,
        last_ms: 0,
    }
}

impl Setup {
    pub(crate) fn plant_id(&self) -> &str {
        &self.plant_id
    }

    /// Connects the device again (after the server restarted).
    pub(crate) async fn reconnect(&mut self) {
        let options = device_options(
            &self.device,
            self.server.mqtt_port,
            None,
            &self.device.device_id,
        );
        (self.client, self.eventloop, _) = connect(options).await;
    }

    pub(crate) async fn soil(&mut self, value: f64) {
        self.publish(json!({"soil_moisture": value})).await;
    }

    async fn publish(&mut self, mut payload: Value) {
        self.last_ms = (self.last_ms + 1).max(chrono::Utc::now().timestamp_millis());
        payload["timestamp"] = self.last_ms.into();
        let topic = format!("devices/{}/telemetry", self.device.device_id);
        publish_acked(&self.client, &mut self.eventloop, &topic, payload).await;
    }

    /// Waits until the plant's alerts satisfy `check`.
    async fn alerts_until(&self, check: impl Fn(&Value) -> bool) -> Value {
        let path = format!("/api/alerts?plant_id={}", self.plant_id);
        for _ in 0..400 {
            let (_, alerts) = self.server.get(&path).await;
            if check(&alerts) {
                return alerts;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("alerts never reached the expected state");
    }
}

fn webhook_env(discord: &Discord) -> Vec<(&'static str, String)> {
    vec![("DISCORD_WEBHOOK_URL", discord.url.clone())]
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn a_breach_is_notified_once_and_its_recovery_once() {
    let mut discord = Discord::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let env = webhook_env(&discord);
    let mut s = setup(dir.path(), &Ports::free(), &env_refs(&env)).await;

    s.soil(10.0).await;
    let message = discord.next_delivered().await;
    let embed = &message["embeds"][0];
    assert_eq!(embed["title"], "Plant Alert: Fern");
    assert_eq!(embed["color"], 0xE74C3C);
    let description = embed["description"].as_str().unwrap();
    assert!(
        description.contains("below the minimum of 20%"),
        "{description}"
    );
    assert!(description.contains("10%"), "{description}");

    // Still low: no new notice. Then back to normal: one green notice.
    s.soil(12.0).await;
    s.soil(50.0).await;
    let message = discord.next_delivered().await;
    assert_eq!(message["embeds"][0]["title"], "Back to normal: Fern");
    assert_eq!(message["embeds"][0]["color"], 0x2ECC71);
    assert_eq!(discord.attempts(), 2);

    let alerts = s
        .alerts_until(|a| {
            a["alerts"]
                .as_array()
                .is_some_and(|l| l.iter().all(|x| x["delivery"] == "sent"))
        })
        .await;
    assert_eq!(alerts["total"], 2);
    assert_eq!(alerts["alerts"][0]["kind"], "recovered");
    assert_eq!(alerts["alerts"][1]["kind"], "threshold");
    assert_eq!(alerts["alerts"][1]["direction"], "min");
    assert_eq!(alerts["alerts"][1]["threshold"], 20.0);
    assert_eq!(alerts["alerts"][1]["value"], 10.0);

    let id = alerts["alerts"][1]["id"].as_str().unwrap();
    let (status, acked) = s
        .server
        .post(&format!("/api/alerts/{id}/acknowledge"), json!({}))
        .await;
    assert_eq!(status, 200);
    assert!(acked["acknowledged_at"].is_string());

    // A second breach within the 60-minute cooldown is recorded in state
    // but not notified again.
    s.soil(5.0).await;
    s.soil(50.0).await;
    // Readings are judged in order: once this later breach is notified,
    // the suppressed one above has been judged too.
    s.publish(json!({"temperature": 35.0})).await;
    let message = discord.next_delivered().await;
    let description = message["embeds"][0]["description"].as_str().unwrap();
    assert!(description.starts_with("Temperature"), "{description}");
    assert_eq!(discord.attempts(), 3);
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_until_delivered() {
    let mut discord = Discord::start(&[Reply::RateLimited(0.2), Reply::ServerError]).await;
    let dir = tempfile::tempdir().unwrap();
    let env = webhook_env(&discord);
    let mut s = setup(dir.path(), &Ports::free(), &env_refs(&env)).await;
    s.soil(90.0).await;
    let message = discord.next_delivered().await;
    assert_eq!(message["embeds"][0]["title"], "Plant Alert: Fern");
    assert_eq!(discord.attempts(), 3);
    s.alerts_until(|a| a["alerts"][0]["delivery"] == "sent")
        .await;
}

/// Numbers from the network are parsed totally: a `Retry-After` of NaN or
/// infinity once panicked the notifier, and every later alert stayed pending.
#[tokio::test]
async fn nonsense_retry_after_headers_only_delay_delivery() {
    let mut discord = Discord::start(&[
        Reply::RateLimitedHeader("NaN"),
        Reply::RateLimitedHeader("inf"),
        Reply::RateLimitedHeader("-3"),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let env = webhook_env(&discord);
    let mut s = setup(dir.path(), &Ports::free(), &env_refs(&env)).await;
    s.soil(90.0).await;
    let message = discord.next_delivered().await;
    assert_eq!(message["embeds"][0]["title"], "Plant Alert: Fern");
    assert_eq!(discord.attempts(), 4);
    let (_, health) = s.server.get("/api/health").await;
    assert_eq!(
        health["components"]["tasks"],
        json!({}),
        "nothing had to be restarted"
    );
}

#[tokio::test]
async fn the_outbox_survives_a_restart_and_never_sends_twice() {
    let mut discord =
        Discord::start(&std::array::from_fn::<Reply, 50, _>(|_| Reply::ServerError)).await;
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let env = webhook_env(&discord);
    let mut s = setup(dir.path(), &ports, &env_refs(&env)).await;
    s.soil(5.0).await;
    // Discord is down: the alert is stored and stays pending.
    let alerts = s.alerts_until(|a| a["alerts"][0].is_object()).await;
    assert_eq!(alerts["alerts"][0]["delivery"], "pending", "{alerts}");
    // Killed once a failed attempt is recorded: one killed mid-attempt
    // would leave the alert leased for a minute (docs/scaling.md).
    while !s.server.metrics().await.lines().any(|l| {
        l.starts_with("plantops_notifications_total{result=\"failed\"} ") && !l.ends_with(" 0")
    }) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.server.kill().await;

    discord.script(&[]);
    let server = Server::start(dir.path(), &ports, &env_refs(&env)).await;
    let message = discord.next_delivered().await;
    assert_eq!(message["embeds"][0]["title"], "Plant Alert: Fern");
    s.server = server;
    s.alerts_until(|a| a["alerts"][0]["delivery"] == "sent")
        .await;
    let attempts = discord.attempts();
    // The next notice delivered is a new alert, not the confirmed one again.
    let (client, eventloop, _) = connect(device_options(
        &s.device,
        s.server.mqtt_port,
        None,
        &s.device.device_id,
    ))
    .await;
    (s.client, s.eventloop) = (client, eventloop);
    s.publish(json!({"temperature": 40.0})).await;
    let message = discord.next_delivered().await;
    let description = message["embeds"][0]["description"].as_str().unwrap();
    assert!(description.starts_with("Temperature"), "{description}");
    assert_eq!(discord.attempts(), attempts + 1);
}

#[tokio::test]
async fn device_offline_and_back_online_are_notified_with_the_plant() {
    let mut discord = Discord::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = webhook_env(&discord);
    env.push(("PLANTOPS_HEARTBEAT_INTERVAL_SECS", "1".into()));
    let mut s = setup(dir.path(), &Ports::free(), &env_refs(&env)).await;
    s.soil(50.0).await;
    let offline = discord.next_delivered().await;
    assert_eq!(offline["embeds"][0]["title"], "Device Offline");
    assert_eq!(offline["embeds"][0]["color"], 0xF1C40F);
    assert!(offline["embeds"][0]["description"]
        .as_str()
        .unwrap()
        .contains("(Fern)"));
    s.soil(50.0).await;
    let online = discord.next_delivered().await;
    assert_eq!(online["embeds"][0]["title"], "Device Online");
}

#[tokio::test]
async fn without_a_webhook_alerts_are_stored_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), &Ports::free(), &[]).await;
    s.soil(95.0).await;
    // Stored as pending, then settled by the notifier, which has nowhere
    // to send it.
    let alerts = s
        .alerts_until(|a| a["alerts"][0].is_object() && a["alerts"][0]["delivery"] != "pending")
        .await;
    assert_eq!(alerts["total"], 1);
    assert_eq!(alerts["alerts"][0]["kind"], "threshold");
    assert_eq!(alerts["alerts"][0]["direction"], "max");
    assert_eq!(alerts["alerts"][0]["delivery"], "disabled");
}

#[tokio::test]
async fn a_webhook_set_through_the_api_receives_tests_and_alerts() {
    let mut discord = Discord::start(&[]).await;
    let elsewhere = Discord::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    // The operator lets webhooks point at the local stand-in for Discord
    // (and at nothing else: not at `elsewhere`).
    let origin = discord.url.split("/api/").next().unwrap();
    let prefix = format!("{origin}/api/webhooks/");
    let prefixes = [("PLANTOPS_DISCORD_WEBHOOK_PREFIXES", prefix.as_str())];
    let mut s = setup(dir.path(), &Ports::free(), &prefixes).await;
    let response = s
        .server
        .client
        .put(format!("{}/api/settings/notifications", s.server.http))
        .json(&json!({ "discord_webhook_url": elsewhere.url }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let response = s
        .server
        .client
        .put(format!("{}/api/settings/notifications", s.server.http))
        .json(&json!({"discord_webhook_url": discord.url}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, result) = s
        .server
        .post("/api/settings/notifications/test", json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(result["success"], true, "{result}");
    let test = discord.next_delivered().await;
    assert_eq!(test["embeds"][0]["title"], "PlantOps test notification");

    // A redirect is not followed: the webhook's messages go nowhere else.
    discord.script(&[Reply::Redirect(elsewhere.url.clone())]);
    let (_, result) = s
        .server
        .post("/api/settings/notifications/test", json!({}))
        .await;
    assert_eq!(result["success"], false, "{result}");
    assert_eq!(elsewhere.attempts(), 0);

    s.soil(3.0).await;
    let alert = discord.next_delivered().await;
    assert_eq!(alert["embeds"][0]["title"], "Plant Alert: Fern");
}

/// `plantops rotate-key` re-seals the webhook, the LLM key and the
/// notification channels under a new key (SQLite: the key file is
/// replaced); the restarted server opens them all, and the old key opens
/// nothing any more.
#[tokio::test]
async fn rotate_key_reseals_every_stored_secret() {
    let mut discord = Discord::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let origin = discord.url.split("/api/").next().unwrap();
    let prefix = format!("{origin}/api/webhooks/");
    let env = [("PLANTOPS_DISCORD_WEBHOOK_PREFIXES", prefix.as_str())];
    let mut server = Server::start(dir.path(), &ports, &env).await;
    let (status, _) = server
        .put(
            "/api/settings/notifications",
            json!({ "discord_webhook_url": discord.url }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .put(
            "/api/settings/llm",
            json!({"provider": "anthropic", "api_key": "sk-ant-rotate-9876"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, channel) = server
        .post(
            "/api/notification-channels",
            json!({"kind": "discord", "name": "Second", "url": discord.url}),
        )
        .await;
    assert_eq!(status, 201, "{channel}");
    server.kill().await;

    let key_file = dir.path().join("encryption.key");
    let old_key = std::fs::read_to_string(&key_file).unwrap();
    let command = Server::command(dir.path(), &ports, &env);
    common::run_like(&command, &["rotate-key"], "").await;
    let new_key = std::fs::read_to_string(&key_file).unwrap();
    assert_ne!(new_key.trim(), old_key.trim());
    assert!(!dir.path().join("encryption.key.next").exists());
    // As if the rotation had stopped between its commit and replacing the
    // key file: the next start finishes it.
    let next = dir.path().join("encryption.key.next");
    std::fs::rename(&key_file, &next).unwrap();
    std::fs::write(&key_file, &old_key).unwrap();

    let server = Server::launch(Server::command(dir.path(), &ports, &env), &ports).await;
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), new_key);
    assert!(!next.exists());
    let (_, llm) = server.get("/api/settings/llm").await;
    assert_eq!(llm["api_key_masked"], "...9876", "{llm}");
    let (_, result) = server
        .post("/api/settings/notifications/test", json!({}))
        .await;
    assert_eq!(result["success"], true, "{result}");
    discord.next_delivered().await;
    let test = format!(
        "/api/notification-channels/{}/test",
        channel["id"].as_str().unwrap()
    );
    let (_, result) = server.post(&test, json!({})).await;
    assert_eq!(result["success"], true, "{result}");
    discord.next_delivered().await;

    let stale = common::plantops()
        .arg("rotate-key")
        .env("PLANTOPS_DATA_DIR", dir.path())
        .env("ENCRYPTION_KEY", old_key.trim())
        .output()
        .await
        .unwrap();
    assert!(!stale.status.success());
    assert!(
        String::from_utf8_lossy(&stale.stderr).contains("does not open"),
        "{}",
        String::from_utf8_lossy(&stale.stderr)
    );
}

/// A reading committed by an instance that stopped before judging it (here
/// written into the database while no server runs, as such an instance
/// leaves it) raises its alert when a server starts; judged once, it raises
/// nothing again, through further readings and another restart.
#[tokio::test]
async fn a_reading_stored_but_never_judged_raises_its_alert_at_the_next_start() {
    use sqlx::Connection;
    let db = plantops_testkit::TestDb::postgres().await;
    let env = [
        ("DATABASE_URL", db.url()),
        ("ENCRYPTION_KEY", &"ab".repeat(32)),
    ];
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let mut setup = setup(dir.path(), &ports, &env).await;
    setup.soil(50.0).await;
    let threshold_alerts = |alerts: &Value| {
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["kind"] == "threshold")
            .count()
    };
    setup.server.terminate().await;

    let mut database = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let device_id: uuid::Uuid = setup.device.device_id.parse().unwrap();
    let plant_id: uuid::Uuid = setup.plant_id.parse().unwrap();
    let unjudged_at = chrono::Utc::now();
    sqlx::query(
        "INSERT INTO readings (time, device_id, plant_id, soil_moisture) VALUES ($1, $2, $3, 5)",
    )
    .bind(unjudged_at)
    .bind(device_id)
    .bind(plant_id)
    .execute(&mut database)
    .await
    .unwrap();

    setup.server = Server::start(dir.path(), &ports, &env).await;
    let alerts = setup.alerts_until(|a| threshold_alerts(a) > 0).await;
    assert_eq!(threshold_alerts(&alerts), 1);
    assert_eq!(alerts["alerts"][0]["value"], 5.0);

    // The breach goes on: no second alert, before or after a restart.
    setup.server.terminate().await;
    setup.server = Server::start(dir.path(), &ports, &env).await;
    let (client, eventloop, _) = connect(device_options(
        &setup.device,
        setup.server.mqtt_port,
        None,
        &setup.device.device_id,
    ))
    .await;
    (setup.client, setup.eventloop) = (client, eventloop);
    setup.soil(6.0).await;
    let (_, latest) = setup
        .server
        .get(&format!(
            "/api/devices/{}/telemetry/latest",
            setup.device.device_id
        ))
        .await;
    assert_eq!(latest["soil_moisture"], 6.0);
    let path = format!("/api/alerts?plant_id={}", setup.plant_id);
    let (_, alerts) = setup.server.get(&path).await;
    assert_eq!(threshold_alerts(&alerts), 1, "{alerts}");
}

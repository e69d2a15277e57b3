//! The care loop from outside: `plantops serve` driven over HTTP and MQTT,
//! its reminders reaching a local server that speaks Discord's webhook
//! protocol, its journal reading waterings from published soil moisture.

use serde_json::json;

use crate::alerts::setup;
use crate::common::discord::Discord;
use crate::common::Ports;

#[tokio::test]
async fn a_due_task_reaches_the_channels_once_and_a_published_rise_is_a_watering() {
    let mut discord = Discord::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let url = discord.url.clone();
    let env = [("DISCORD_WEBHOOK_URL", url.as_str())];
    let mut s = setup(dir.path(), &ports, &env).await;
    let plant = s.plant_id().to_string();
    let (status, schedule) = s
        .server
        .put(
            &format!("/api/plants/{plant}/care-schedule"),
            json!({"tasks": [{"task": "water", "every_days": 3}]}),
        )
        .await;
    assert_eq!(status, 200, "{schedule}");
    let five_days_ago = (chrono::Utc::now() - chrono::Duration::days(5)).to_rfc3339();
    let (status, _) = s
        .server
        .post(
            &format!("/api/plants/{plant}/care-events"),
            json!({"kind": "watered", "at": five_days_ago}),
        )
        .await;
    assert_eq!(status, 201);

    // The leader looks for due tasks as it starts, then every minute.
    s.server.terminate().await;
    s.server = crate::common::Server::start(dir.path(), &ports, &env).await;
    let message = discord.next_delivered().await;
    assert_eq!(message["embeds"][0]["title"], "Care due: Fern", "{message}");
    let (_, alerts) = s.server.get("/api/alerts?kind=care_due").await;
    assert_eq!(alerts["total"], 1, "{alerts}");
    let (_, tasks) = s.server.get("/api/tasks").await;
    assert_eq!(tasks["tasks"][0]["task"], "water", "{tasks}");

    // The device reports dry soil, then soil 15 points wetter.
    s.reconnect().await;
    s.soil(30.0).await;
    s.soil(45.0).await;
    s.server.terminate().await;
    s.server = crate::common::Server::start(dir.path(), &ports, &env).await;
    let journal = loop {
        let (_, journal) = s
            .server
            .get(&format!("/api/plants/{plant}/care-events"))
            .await;
        if journal["events"][0]["source"] == "detected" {
            break journal;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(journal["events"][0]["kind"], "watered", "{journal}");
    // The watering was the task: nothing is due, and it was announced once.
    let (_, tasks) = s.server.get("/api/tasks").await;
    assert_eq!(tasks["tasks"], json!([]), "{tasks}");
    let (_, alerts) = s.server.get("/api/alerts?kind=care_due").await;
    assert_eq!(alerts["total"], 1, "{alerts}");
}

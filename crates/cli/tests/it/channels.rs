//! Notification channels end to end: `plantops serve` delivers alerts from a
//! device's MQTT readings to local servers speaking ntfy's, Telegram's,
//! Discord's, a signed webhook's and SMTP's (aiosmtpd) protocols, each from
//! its own outbox.

use std::time::Duration;

use crate::alerts::{setup, Setup};
use crate::common::discord::Discord;
use crate::common::services::{Reply, Service, Services, BOT_TOKEN, NTFY_TOKEN, WEBHOOK_SECRET};
use crate::common::smtp::{self, Smtp};
use crate::common::{Ports, Server};
use serde_json::{json, Value};

/// The channel tests' server: the alert tests' plant and device, and the
/// channels API.
struct Garden(Setup);

impl Garden {
    async fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> Garden {
        Garden(setup(dir, &Ports::free(), env).await)
    }

    async fn soil(&mut self, value: f64) {
        self.0.soil(value).await;
    }

    fn server(&self) -> &Server {
        &self.0.server
    }

    async fn add(&self, channel: Value) -> String {
        let (status, body) = self
            .server()
            .post("/api/notification-channels", channel)
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    async fn channel(&self, id: &str) -> Value {
        let (status, body) = self.server().get("/api/notification-channels").await;
        assert_eq!(status, 200);
        body["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Waits until the channel's view satisfies `check`.
    async fn channel_until(&self, id: &str, check: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..600 {
            let channel = self.channel(id).await;
            if check(&channel) {
                return channel;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "channel {id} never reached the expected state: {}",
            self.channel(id).await
        );
    }
}

fn text(received: &Value) -> String {
    received.as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn alerts_reach_every_channel_from_its_minimum_severity_up() {
    let mut services = Services::start().await;
    let mut discord = Discord::start(&[]).await;
    let python = smtp::python();
    let mut mail = match &python {
        Some(python) => Some(Smtp::start(python, None, "", "").await),
        None => None,
    };
    let dir = tempfile::tempdir().unwrap();
    let discord_prefix = discord.url.split("/api/").next().unwrap().to_string() + "/";
    let mut garden = Garden::start(
        dir.path(),
        &[
            ("PLANTOPS_TELEGRAM_API_URL", &services.base),
            ("PLANTOPS_DISCORD_WEBHOOK_PREFIXES", &discord_prefix),
        ],
    )
    .await;

    let ntfy = garden
        .add(
            json!({"kind": "ntfy", "name": "Phone", "min_severity": "info",
            "url": format!("{}/my-plants", services.base), "token": NTFY_TOKEN}),
        )
        .await;
    let telegram = garden
        .add(
            json!({"kind": "telegram", "name": "Family", "min_severity": "warning",
            "bot_token": BOT_TOKEN, "chat_id": "-100123"}),
        )
        .await;
    let webhook = garden
        .add(
            json!({"kind": "webhook", "name": "Automation", "min_severity": "critical",
            "url": format!("{}/hook", services.base), "secret": WEBHOOK_SECRET}),
        )
        .await;
    let second_discord = garden
        .add(
            json!({"kind": "discord", "name": "Garden server", "min_severity": "critical",
            "url": discord.url}),
        )
        .await;
    let email = match &mail {
        Some(mail) => Some(
            garden
                .add(
                    json!({"kind": "email", "name": "Inbox", "smtp_host": "127.0.0.1",
                    "smtp_port": mail.port, "smtp_security": "none",
                    "from": "PlantOps <plants@example.com>", "to": ["me@example.com"]}),
                )
                .await,
        ),
        None => None,
    };

    // Listed with what they do and nothing secret.
    let (_, list) = garden.server().get("/api/notification-channels").await;
    let listed = list.to_string();
    for secret in [
        NTFY_TOKEN,
        BOT_TOKEN,
        WEBHOOK_SECRET,
        "secret-token",
        "my-plants",
    ] {
        assert!(!listed.contains(secret), "{secret} shown: {listed}");
    }
    let view = garden.channel(&telegram).await;
    assert_eq!(view["kind"], "telegram");
    assert_eq!(view["min_severity"], "warning");
    assert_eq!(view["target"], "Telegram chat -100123");
    assert_eq!(view["pending"], 0);

    // A test through each says it worked, and each service got it.
    for id in [&ntfy, &telegram, &webhook, &second_discord] {
        let (status, result) = garden
            .server()
            .post(&format!("/api/notification-channels/{id}/test"), json!({}))
            .await;
        assert_eq!(
            (status, result["success"].as_bool()),
            (200, Some(true)),
            "{result}"
        );
    }
    let test = services.next(Service::Ntfy).await.body;
    assert_eq!(test["topic"], "my-plants");
    assert_eq!(test["title"], "PlantOps test notification");
    assert!(text(&services.next(Service::Telegram).await.body["text"])
        .starts_with("PlantOps test notification"));
    let test = services.next(Service::Webhook).await;
    assert_eq!(test.headers["x-plantops-event"], "test");
    assert_eq!(test.body["event"], "test");
    assert_eq!(
        discord.next_delivered().await["embeds"][0]["title"],
        "PlantOps test notification"
    );

    // A breach is critical: every channel takes it.
    garden.soil(10.0).await;
    let breach = services.next(Service::Ntfy).await;
    assert_eq!(breach.body["title"], "Plant Alert: Fern");
    assert_eq!(breach.body["priority"], 5);
    assert_eq!(breach.body["tags"], json!(["rotating_light", "seedling"]));
    let message = text(&breach.body["message"]);
    assert!(message.contains("below the minimum of 20%"), "{message}");
    assert!(message.contains("Plant: Fern"), "{message}");
    let telegram_message = services.next(Service::Telegram).await.body;
    assert_eq!(telegram_message["chat_id"], "-100123");
    assert!(text(&telegram_message["text"]).starts_with("Plant Alert: Fern\n"));
    let hook = services.next(Service::Webhook).await;
    assert_eq!(hook.body["event"], "alert");
    assert_eq!(hook.body["severity"], "critical");
    assert_eq!(hook.body["plant_name"], "Fern");
    assert_eq!(hook.body["alert"]["kind"], "threshold");
    assert_eq!(hook.body["alert"]["value"], 10.0);
    assert_eq!(
        hook.headers["x-plantops-delivery"].to_str().unwrap(),
        hook.body["alert"]["id"].as_str().unwrap()
    );
    assert_eq!(
        discord.next_delivered().await["embeds"][0]["title"],
        "Plant Alert: Fern"
    );
    if let Some(mail) = &mut mail {
        let message = mail.next_message().await;
        assert_eq!(message["mail_from"], "plants@example.com");
        assert_eq!(message["rcpt_tos"], json!(["me@example.com"]));
        let content = text(&message["content"]);
        assert!(content.contains("Subject: Plant Alert: Fern"), "{content}");
        assert!(content.contains("below the minimum of 20%"), "{content}");
    }

    // The recovery is good news (info): only the channels that take info.
    garden.soil(50.0).await;
    let recovery = services.next(Service::Ntfy).await.body;
    assert_eq!(recovery["title"], "Back to normal: Fern");
    assert_eq!(recovery["priority"], 3);
    if let Some(mail) = &mut mail {
        let content = text(&mail.next_message().await["content"]);
        assert!(
            content.contains("Subject: Back to normal: Fern"),
            "{content}"
        );
    }
    // Nothing waits anywhere, so what the others got is final.
    for id in [&ntfy, &telegram, &webhook, &second_discord] {
        garden.channel_until(id, |c| c["pending"] == 0).await;
    }
    assert!(services.unread(Service::Telegram).is_empty());
    assert!(services.unread(Service::Webhook).is_empty());
    assert_eq!(discord.attempts(), 2);

    // An update leaves out the secret and keeps it: the webhook still signs
    // with it (the receiver refuses anything else).
    let (status, updated) = garden
        .server()
        .put(
            &format!("/api/notification-channels/{webhook}"),
            json!({"kind": "webhook", "name": "Home automation", "min_severity": "info"}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["name"], "Home automation");
    assert_eq!(updated["min_severity"], "info");
    let (_, result) = garden
        .server()
        .post(
            &format!("/api/notification-channels/{webhook}/test"),
            json!({}),
        )
        .await;
    assert_eq!(result["success"], true, "{result}");
    assert_eq!(services.next(Service::Webhook).await.body["event"], "test");

    // Removed: gone from the list, 404 after.
    assert_eq!(
        garden
            .server()
            .delete(&format!("/api/notification-channels/{telegram}"))
            .await,
        204
    );
    assert!(garden.channel(&telegram).await.is_null());
    assert_eq!(
        garden
            .server()
            .delete(&format!("/api/notification-channels/{telegram}"))
            .await,
        404
    );
    let (status, _) = garden
        .server()
        .post(
            &format!("/api/notification-channels/{telegram}/test"),
            json!({}),
        )
        .await;
    assert_eq!(status, 404);

    if let (Some(mail), Some(email)) = (mail, email) {
        garden.channel_until(&email, |c| c["pending"] == 0).await;
        let rest = mail.stop().await;
        // The breach and the recovery, both read above: nothing more.
        assert!(rest.is_empty(), "{rest:?}");
    }
}

#[tokio::test]
async fn one_channels_outage_delays_only_its_own_notices() {
    let mut services = Services::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut garden =
        Garden::start(dir.path(), &[("PLANTOPS_TELEGRAM_API_URL", &services.base)]).await;
    let ntfy = garden
        .add(json!({"kind": "ntfy", "name": "Phone",
            "url": format!("{}/my-plants", services.base), "token": NTFY_TOKEN}))
        .await;
    let telegram = garden
        .add(json!({"kind": "telegram", "name": "Family",
            "bot_token": BOT_TOKEN, "chat_id": "42"}))
        .await;
    let webhook = garden
        .add(json!({"kind": "webhook", "name": "Automation",
            "url": format!("{}/hook", services.base), "secret": WEBHOOK_SECRET}))
        .await;

    services.down(Service::Webhook);
    services.script(Service::Telegram, &[Reply::RateLimited(1)]);
    garden.soil(10.0).await;

    // ntfy delivers while the webhook stays down; Telegram after the second
    // it asked for.
    assert_eq!(
        services.next(Service::Ntfy).await.body["title"],
        "Plant Alert: Fern"
    );
    assert!(text(&services.next(Service::Telegram).await.body["text"]).starts_with("Plant Alert"));
    assert_eq!(services.attempts(Service::Telegram), 2);
    let failing = garden
        .channel_until(&webhook, |c| c["last_error"].is_string())
        .await;
    assert_eq!(failing["pending"], 1);
    assert!(text(&failing["last_error"]).contains("503"), "{failing}");
    garden.channel_until(&ntfy, |c| c["pending"] == 0).await;
    garden.channel_until(&telegram, |c| c["pending"] == 0).await;
    // The alert itself went nowhere else (no Discord webhook is set).
    for _ in 0..600 {
        let (_, alerts) = garden.server().get("/api/alerts").await;
        if alerts["alerts"][0]["delivery"] == "disabled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = garden.server().metrics().await;
    assert!(
        metrics.contains("plantops_notifier_backlog 1"),
        "the webhook's notice is the backlog"
    );

    // Back up: the notice that waited arrives, once, and the error clears.
    services.up(Service::Webhook);
    let hook = services.next(Service::Webhook).await;
    assert_eq!(hook.body["alert"]["kind"], "threshold");
    let recovered = garden.channel_until(&webhook, |c| c["pending"] == 0).await;
    assert!(recovered["last_error"].is_null(), "{recovered}");
    assert!(services.unread(Service::Webhook).is_empty());
    assert!(services.unread(Service::Ntfy).is_empty());
}

#[tokio::test]
async fn bad_channels_are_refused_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Ports::free(), &[]).await;
    for (body, field) in [
        (
            json!({"kind": "ntfy", "name": "x", "url": "https://ntfy.sh/"}),
            "url",
        ),
        (
            json!({"kind": "telegram", "name": "x", "chat_id": "1"}),
            "bot_token",
        ),
        (
            json!({"kind": "webhook", "name": "x", "url": "https://example.com/h",
            "secret": "short"}),
            "secret",
        ),
        (
            json!({"kind": "email", "name": "x", "smtp_host": "mail.example.com",
            "from": "me@example.com", "to": []}),
            "to",
        ),
        (
            json!({"kind": "discord", "name": "x",
            "url": "https://evil.example/api/webhooks/1/t"}),
            "url",
        ),
        (
            json!({"kind": "ntfy", "name": "", "url": "https://ntfy.sh/plants"}),
            "name",
        ),
        (
            json!({"kind": "ntfy", "name": "x", "url": "https://ntfy.sh/plants",
            "chat_id": "1"}),
            "chat_id",
        ),
        (json!({"kind": "pager", "name": "x"}), "kind"),
        (
            json!({"kind": "ntfy", "name": "x", "url": "https://ntfy.sh/plants",
            "min_severity": "urgent"}),
            "min_severity",
        ),
    ] {
        let (status, problem) = server
            .post("/api/notification-channels", body.clone())
            .await;
        assert_eq!(status, 422, "{body} → {problem}");
        let named = problem["detail"]
            .as_array()
            .is_some_and(|d| d.iter().any(|e| e["loc"][1] == field));
        assert!(named, "{body}: {field} not named in {problem}");
    }
    // Nothing was stored.
    let (_, list) = server.get("/api/notification-channels").await;
    assert_eq!(list["channels"], json!([]));
    let (status, _) = server
        .put(
            "/api/notification-channels/00000000-0000-0000-0000-000000000000",
            json!({"kind": "ntfy", "name": "x", "url": "https://ntfy.sh/plants"}),
        )
        .await;
    assert_eq!(status, 404);
}

/// STARTTLS required, a login after it, the server's certificate from a
/// private CA named in PLANTOPS_SMTP_CA; and a server without STARTTLS
/// gets nothing, not even the login.
#[tokio::test]
async fn email_goes_over_starttls_with_a_login_and_never_in_the_clear() {
    let Some(python) = smtp::python() else {
        return;
    };
    let certs_dir = tempfile::tempdir().unwrap();
    let tls =
        plantops_mqtt::certs::ensure(certs_dir.path(), &plantops_mqtt::certs::default_sans(&[]))
            .unwrap();
    let mut secure = Smtp::start(&python, Some((&tls.cert, &tls.key)), "plants", "pa55word").await;
    let plain = Smtp::start(&python, None, "", "").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = tls.ca_cert.display().to_string();
    let server = Server::start(dir.path(), &Ports::free(), &[("PLANTOPS_SMTP_CA", &ca)]).await;

    let add = |port: u16| {
        json!({"kind": "email", "name": "Inbox", "smtp_host": "127.0.0.1", "smtp_port": port,
            "smtp_username": "plants", "smtp_password": "pa55word",
            "from": "plants@example.com", "to": ["me@example.com", "partner@example.com"]})
    };
    let (status, channel) = server
        .post("/api/notification-channels", add(secure.port))
        .await;
    assert_eq!(status, 201, "{channel}");
    assert!(!channel.to_string().contains("pa55word"));
    let (_, result) = server
        .post(
            &format!(
                "/api/notification-channels/{}/test",
                channel["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    assert_eq!(result["success"], true, "{result}");
    let message = secure.next_message().await;
    assert_eq!(message["tls"], true);
    assert_eq!(message["login"], "plants");
    assert_eq!(
        message["rcpt_tos"],
        json!(["me@example.com", "partner@example.com"])
    );
    assert!(text(&message["content"]).contains("Subject: PlantOps test notification"));

    let (_, channel) = server
        .post("/api/notification-channels", add(plain.port))
        .await;
    let (_, result) = server
        .post(
            &format!(
                "/api/notification-channels/{}/test",
                channel["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    assert_eq!(result["success"], false, "{result}");
    assert!(
        plain.stop().await.is_empty(),
        "the plain server got a message"
    );
}

//! One delivery attempt to one channel, in each service's own protocol:
//! Discord's webhook, ntfy's JSON publish, Telegram's `sendMessage`, a
//! webhook signed with HMAC-SHA256, and email over SMTP.

use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, Mac};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use plantops_core::alert::{Alert, AlertKind, Severity};
use serde_json::{json, Value};
use sha2::Sha256;

use super::channels::{
    ntfy_topic_url, ChannelConfig, DiscordChannel, EmailChannel, NtfyChannel, SmtpSecurity,
    TelegramChannel, WebhookChannel,
};
use super::discord;

/// Every send gives up after this long; the outbox retries.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What one attempt came to.
#[derive(Debug, PartialEq)]
pub enum Attempt {
    Delivered,
    /// Rate limited: try again after this long.
    RetryAfter(Duration),
    Failed(String),
}

/// What is sent: an alert, or a test from the settings.
#[derive(Debug, Clone, Copy)]
pub enum Notice<'a> {
    Alert {
        alert: &'a Alert,
        plant_name: Option<&'a str>,
    },
    Test,
}

impl Notice<'_> {
    pub fn title(&self) -> String {
        let Notice::Alert { alert, plant_name } = self else {
            return "PlantOps test notification".into();
        };
        let plant = plant_name.unwrap_or("unassigned device");
        match alert.kind {
            AlertKind::Threshold => format!("Plant Alert: {plant}"),
            AlertKind::Recovered => format!("Back to normal: {plant}"),
            AlertKind::DeviceOffline => "Device Offline".to_string(),
            AlertKind::DeviceOnline => "Device Online".to_string(),
            AlertKind::CertificateExpiring => "Certificate expiring".to_string(),
            AlertKind::BackupFailed => "Backup failed".to_string(),
            AlertKind::LowBattery => format!("Battery low: {plant}"),
            AlertKind::CareDue => format!("Care due: {plant}"),
        }
    }

    /// The message and its details, one per line.
    pub fn text(&self) -> String {
        let Notice::Alert { alert, plant_name } = self else {
            return "Notifications from PlantOps reach this channel.".into();
        };
        let mut lines = vec![alert.message.clone()];
        if let Some(plant) = plant_name {
            lines.push(format!("Plant: {plant}"));
        }
        if let (Some(metric), Some(value)) = (alert.metric, alert.value) {
            lines.push(format!("{}: {value}", metric.as_str()));
        }
        if let (Some(threshold), Some(side)) = (alert.threshold, alert.direction) {
            lines.push(format!("Threshold: {} {threshold}", side.as_str()));
        }
        if let Some(device) = alert.device_id {
            lines.push(format!("Device: {device}"));
        }
        lines.join("\n")
    }

    pub fn severity(&self) -> Severity {
        match self {
            Notice::Alert { alert, .. } => alert.kind.severity(),
            Notice::Test => Severity::Info,
        }
    }

    /// The generic webhook's body.
    fn webhook_body(&self) -> Value {
        match self {
            Notice::Alert { alert, plant_name } => json!({
                "event": "alert",
                "title": self.title(),
                "severity": self.severity(),
                "plant_name": plant_name,
                "alert": alert,
            }),
            Notice::Test => json!({
                "event": "test",
                "title": self.title(),
                "severity": self.severity(),
                "message": self.text(),
            }),
        }
    }

    /// Retries of one alert carry the same id, so a receiver can drop
    /// duplicates.
    fn delivery_id(&self) -> String {
        match self {
            Notice::Alert { alert, .. } => alert.id.to_string(),
            Notice::Test => uuid::Uuid::new_v4().to_string(),
        }
    }
}

/// Where the delivery services live and what TLS roots email trusts.
#[derive(Debug, Clone)]
pub struct SendSettings {
    /// Telegram's Bot API (PLANTOPS_TELEGRAM_API_URL).
    pub telegram_api: reqwest::Url,
    /// A CA that SMTP servers' certificates may also chain to
    /// (PLANTOPS_SMTP_CA), besides the public roots.
    pub smtp_ca_pem: Option<Vec<u8>>,
}

pub const TELEGRAM_API: &str = "https://api.telegram.org";

impl SendSettings {
    /// Reads PLANTOPS_SMTP_CA's file; a bad one stops start-up.
    pub fn new(telegram_api: &str, smtp_ca: Option<&Path>) -> anyhow::Result<Self> {
        let telegram_api = reqwest::Url::parse(telegram_api).map_err(|e| {
            anyhow::anyhow!("PLANTOPS_TELEGRAM_API_URL {telegram_api:?} is not a URL: {e}")
        })?;
        let smtp_ca_pem = match smtp_ca {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("PLANTOPS_SMTP_CA {}: {e}", path.display()))?;
                Certificate::from_pem(&pem).map_err(|e| {
                    anyhow::anyhow!(
                        "PLANTOPS_SMTP_CA {} is not a PEM certificate: {e}",
                        path.display()
                    )
                })?;
                Some(pem)
            }
            None => None,
        };
        Ok(Self {
            telegram_api,
            smtp_ca_pem,
        })
    }
}

impl Default for SendSettings {
    fn default() -> Self {
        Self::new(TELEGRAM_API, None).expect("the default Telegram URL parses")
    }
}

/// Sends notices; one per process, sharing its HTTP connections.
pub struct Sender {
    http: reqwest::Client,
    settings: SendSettings,
}

impl Sender {
    /// Fails only when no HTTP client can be built (no TLS backend): then
    /// nothing could be sent, and a default client would follow redirects
    /// and wait for ever.
    pub fn new(settings: SendSettings) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            // A webhook URL is a credential; a redirect would send alerts
            // elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { http, settings })
    }

    pub async fn send(&self, config: &ChannelConfig, notice: &Notice<'_>) -> Attempt {
        match config {
            ChannelConfig::Discord(DiscordChannel { url }) => {
                let body = match notice {
                    Notice::Alert { alert, plant_name } => discord::message(alert, *plant_name),
                    Notice::Test => json!({
                        "username": "PlantOps",
                        "embeds": [{"title": notice.title(), "description": notice.text(),
                            "color": 0x2E_CC_71}]
                    }),
                };
                self.post("Discord", self.http.post(url).json(&body)).await
            }
            ChannelConfig::Ntfy(NtfyChannel { url, token }) => {
                let Ok((server, topic)) = ntfy_topic_url(url) else {
                    return Attempt::Failed("the ntfy URL is not a server and topic".into());
                };
                let (priority, tags) = match notice.severity() {
                    Severity::Critical => (5, ["rotating_light", "seedling"]),
                    Severity::Warning => (4, ["warning", "seedling"]),
                    Severity::Info => (3, ["white_check_mark", "seedling"]),
                };
                // JSON publishing to the server's root keeps non-ASCII plant
                // names intact (headers would need encoding).
                let body = json!({
                    "topic": topic,
                    "title": notice.title(),
                    "message": notice.text(),
                    "priority": priority,
                    "tags": tags,
                });
                let mut request = self.http.post(server).json(&body);
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                self.post("ntfy", request).await
            }
            ChannelConfig::Telegram(TelegramChannel { bot_token, chat_id }) => {
                let base = self.settings.telegram_api.as_str().trim_end_matches('/');
                let url = format!("{base}/bot{bot_token}/sendMessage");
                let body = json!({
                    "chat_id": chat_id,
                    "text": format!("{}\n{}", notice.title(), notice.text()),
                    "disable_web_page_preview": true,
                });
                self.post("Telegram", self.http.post(url).json(&body)).await
            }
            ChannelConfig::Webhook(WebhookChannel { url, secret }) => {
                let body = notice.webhook_body().to_string();
                let request = self
                    .http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-plantops-signature", signature(secret, body.as_bytes()))
                    .header(
                        "x-plantops-event",
                        if matches!(notice, Notice::Test) {
                            "test"
                        } else {
                            "alert"
                        },
                    )
                    .header("x-plantops-delivery", notice.delivery_id())
                    .body(body);
                self.post("the webhook", request).await
            }
            ChannelConfig::Email(EmailChannel { .. }) => self.email(config, notice).await,
        }
    }

    /// One POST; 2xx is delivered, 429 waits as the service asks.
    async fn post(&self, service: &str, request: reqwest::RequestBuilder) -> Attempt {
        let response = match request.send().await {
            Ok(response) => response,
            // Without the URL: webhook and Telegram URLs carry secrets.
            Err(error) => return Attempt::Failed(error.without_url().to_string()),
        };
        let status = response.status();
        if status.is_success() {
            return Attempt::Delivered;
        }
        if status.as_u16() == 429 {
            let header = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok());
            let body: Option<Value> = response.json().await.ok();
            // Discord says `retry_after`, Telegram `parameters.retry_after`.
            // Parsed totally: NaN, infinities and negatives from the network
            // must not reach Duration::from_secs_f64, which panics on them.
            let seconds = body
                .as_ref()
                .and_then(|b| {
                    b["retry_after"]
                        .as_f64()
                        .or(b["parameters"]["retry_after"].as_f64())
                })
                .or(header)
                .filter(|s| s.is_finite())
                .unwrap_or(1.0)
                .clamp(0.05, 3600.0);
            return Attempt::RetryAfter(Duration::from_secs_f64(seconds));
        }
        // Telegram explains a refusal in `description` (a wrong chat id, a
        // bot not in the group). Other bodies are never read back: a webhook
        // may point anywhere, and its answers are not shown to anyone.
        let description = if service == "Telegram" {
            let detail: Option<Value> = response.json().await.ok();
            detail
                .as_ref()
                .and_then(|d| d["description"].as_str())
                .map(|d| format!(": {}", d.chars().take(200).collect::<String>()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Attempt::Failed(format!("{service} answered {status}{description}"))
    }

    async fn email(&self, config: &ChannelConfig, notice: &Notice<'_>) -> Attempt {
        let ChannelConfig::Email(EmailChannel {
            smtp_host,
            smtp_port,
            smtp_security,
            smtp_username,
            smtp_password,
            from,
            to,
        }) = config
        else {
            return Attempt::Failed("not an email channel".into());
        };
        let message = match compose(from, to, &notice.title(), notice.text()) {
            Ok(message) => message,
            Err(reason) => return Attempt::Failed(reason),
        };
        let tls = match self.tls_parameters(smtp_host) {
            Ok(tls) => tls,
            Err(reason) => return Attempt::Failed(reason),
        };
        let mut transport =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp_host.as_str())
                .port(*smtp_port)
                .timeout(Some(TIMEOUT))
                .tls(match smtp_security {
                    // Required: without STARTTLS nothing is sent, so no
                    // one in between can downgrade the connection.
                    SmtpSecurity::Starttls => Tls::Required(tls),
                    SmtpSecurity::Tls => Tls::Wrapper(tls),
                    SmtpSecurity::None => Tls::None,
                });
        if let (Some(username), Some(password)) = (smtp_username, smtp_password) {
            transport = transport.credentials(Credentials::new(username.clone(), password.clone()));
        }
        match transport.build().send(message).await {
            Ok(_) => Attempt::Delivered,
            Err(error) => Attempt::Failed(format!("SMTP: {error}")),
        }
    }

    fn tls_parameters(&self, host: &str) -> Result<TlsParameters, String> {
        let mut builder = TlsParameters::builder(host.to_string());
        if let Some(pem) = &self.settings.smtp_ca_pem {
            let ca = Certificate::from_pem(pem).map_err(|e| format!("PLANTOPS_SMTP_CA: {e}"))?;
            builder = builder.add_root_certificate(ca);
        }
        builder
            .build_rustls()
            .map_err(|e| format!("TLS settings: {e}"))
    }
}

fn compose(
    from: &str,
    to: &[String],
    subject: &str,
    text: String,
) -> Result<lettre::Message, String> {
    let from: Mailbox = from.parse().map_err(|e| format!("from: {e}"))?;
    let mut builder = lettre::Message::builder()
        .from(from)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    for address in to {
        builder = builder.to(address.parse().map_err(|e| format!("to {address}: {e}"))?);
    }
    builder.body(text).map_err(|e| e.to_string())
}

/// `sha256=` and the hex HMAC-SHA256 of the body under the channel's secret.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length; the error arm cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_published_hmac_sha256_vector() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn notices_carry_the_alerts_details() {
        let mut alert = Alert::pending(
            None,
            Some(uuid::Uuid::nil()),
            AlertKind::Threshold,
            "Soil moisture is too low".into(),
        );
        alert.metric = Some(plantops_core::Metric::SoilMoisture);
        alert.value = Some(12.5);
        let notice = Notice::Alert {
            alert: &alert,
            plant_name: Some("Fern"),
        };
        assert_eq!(notice.title(), "Plant Alert: Fern");
        assert_eq!(notice.severity(), Severity::Critical);
        let text = notice.text();
        assert!(
            text.starts_with("Soil moisture is too low\nPlant: Fern\n"),
            "{text}"
        );
        assert!(text.contains("soil_moisture: 12.5"), "{text}");
        let body = notice.webhook_body();
        assert_eq!(body["alert"]["id"], alert.id.to_string());
        assert_eq!(body["severity"], "critical");
    }
}

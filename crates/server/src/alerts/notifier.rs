//! Delivery from the persisted outbox (the alerts table): retries with
//! exponential backoff, honours Discord's 429 `retry_after`, gives up only
//! after a long bound. A restart or an outage delays notices, never drops
//! them; a notice Discord confirmed is marked sent at once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use plantops_core::alert::Delivery;
use plantops_core::backoff::Backoff;
use plantops_store::{AlertStore, DeliveryUpdate, DynStore, PlantStore, QueuedAlert};
use tokio::sync::Notify;

use super::discord;
use super::settings::{NotificationSettings, WebhookUrl};

/// Attempts before an alert is marked failed: with backoff capped at 15
/// minutes, about six hours of trying.
pub const MAX_ATTEMPTS: u32 = 30;
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
const IDLE_CHECK: Duration = Duration::from_secs(5);
/// Alerts claimed at once.
const BATCH: u32 = 5;
/// How long claimed alerts are this notifier's: longer than delivering a
/// claim can take (each send times out after 10 s). After it, another
/// instance takes over the alerts of a notifier that died.
const LEASE: Duration = Duration::from_secs(60);

pub struct Notifier {
    /// The outbox.
    alerts: Arc<dyn AlertStore>,
    /// Plant names for the messages.
    plants: Arc<dyn PlantStore>,
    client: reqwest::Client,
    settings: Arc<NotificationSettings>,
    wake: Arc<Notify>,
}

/// What one attempt came to.
#[derive(Debug, PartialEq)]
pub enum Attempt {
    Delivered,
    /// Rate limited: try again after this long.
    RetryAfter(Duration),
    Failed(String),
}

/// The wait after `attempts` failed deliveries: 2 s doubling to 15 minutes.
pub fn backoff(attempts: u32) -> Duration {
    Backoff::new(Duration::from_secs(1), MAX_BACKOFF).delay_after(attempts)
}

impl Notifier {
    pub fn new(store: &DynStore, settings: Arc<NotificationSettings>, wake: Arc<Notify>) -> Self {
        Self {
            alerts: store.clone(),
            plants: store.clone(),
            client: http_client(),
            settings,
            wake,
        }
    }

    pub async fn run(self) {
        // Every series from the start, at zero (rates and alert rules see
        // the first one); the latency histogram too.
        for result in ["sent", "rate_limited", "failed"] {
            metrics::counter!("plantops_notifications_total", "result" => result).increment(0);
        }
        let _ = metrics::histogram!("plantops_alert_delivery_seconds");
        loop {
            let pause = match self.deliver_due().await {
                Ok(pause) => pause,
                Err(error) => {
                    tracing::error!(%error, "outbox unavailable");
                    Some(IDLE_CHECK)
                }
            };
            let wait = pause.unwrap_or(IDLE_CHECK);
            tokio::select! {
                _ = self.wake.notified(), if pause.is_none() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Delivers what is due; returns a pause when Discord asked for one.
    /// Alerts are claimed before they are sent, so several notifiers (one
    /// per instance) never send one twice.
    async fn deliver_due(&self) -> plantops_store::Result<Option<Duration>> {
        loop {
            let now = Utc::now();
            let claimed = self
                .alerts
                .claim_due_alerts(now, later(LEASE), BATCH)
                .await?;
            if claimed.is_empty() {
                return Ok(None);
            }
            let mut claimed = claimed.into_iter();
            while let Some(queued) = claimed.next() {
                if let Some(pause) = self.deliver(queued).await? {
                    // The rest of the claim waits out the pause too.
                    for rest in claimed {
                        self.record(
                            rest.alert.id,
                            Delivery::Pending,
                            rest.attempts,
                            later(pause),
                        )
                        .await?;
                    }
                    return Ok(Some(pause));
                }
            }
        }
    }

    async fn deliver(&self, queued: QueuedAlert) -> plantops_store::Result<Option<Duration>> {
        let QueuedAlert { alert, attempts } = queued;
        let webhook = match self.settings.discord_webhook().await {
            Ok(webhook) => webhook,
            Err(error) => {
                tracing::error!(%error, "cannot read the Discord webhook setting");
                return Ok(Some(IDLE_CHECK));
            }
        };
        let Some(webhook) = &webhook else {
            self.record(alert.id, Delivery::Disabled, attempts, Utc::now())
                .await?;
            return Ok(None);
        };
        let plant_name = match alert.plant_id {
            Some(id) => self.plants.get_plant(id).await?.map(|p| p.name),
            None => None,
        };
        let body = discord::message(&alert, plant_name.as_deref());
        let attempts = attempts + 1;
        match send(&self.client, webhook, &body).await {
            Attempt::Delivered => {
                metrics::counter!("plantops_notifications_total", "result" => "sent").increment(1);
                let waited = (Utc::now() - alert.created_at).to_std().unwrap_or_default();
                metrics::histogram!("plantops_alert_delivery_seconds").record(waited.as_secs_f64());
                tracing::info!(alert_id = %alert.id, "notification delivered");
                self.record(alert.id, Delivery::Sent, attempts, Utc::now())
                    .await?;
                Ok(None)
            }
            Attempt::RetryAfter(wait) => {
                metrics::counter!("plantops_notifications_total", "result" => "rate_limited")
                    .increment(1);
                tracing::warn!(alert_id = %alert.id, retry_after_ms = wait.as_millis() as u64, "Discord rate limit");
                self.record(alert.id, Delivery::Pending, attempts, later(wait))
                    .await?;
                Ok(Some(wait))
            }
            Attempt::Failed(reason) => {
                metrics::counter!("plantops_notifications_total", "result" => "failed")
                    .increment(1);
                if attempts >= MAX_ATTEMPTS {
                    tracing::error!(alert_id = %alert.id, attempts, reason, "giving up on a notification");
                    self.record(alert.id, Delivery::Failed, attempts, Utc::now())
                        .await?;
                } else {
                    let wait = backoff(attempts);
                    tracing::warn!(alert_id = %alert.id, attempts, reason, retry_in_ms = wait.as_millis() as u64, "notification not delivered");
                    self.record(alert.id, Delivery::Pending, attempts, later(wait))
                        .await?;
                }
                Ok(None)
            }
        }
    }

    async fn record(
        &self,
        id: uuid::Uuid,
        delivery: Delivery,
        attempts: u32,
        next_attempt_at: DateTime<Utc>,
    ) -> plantops_store::Result<()> {
        self.alerts
            .update_delivery(&DeliveryUpdate {
                id,
                delivery,
                attempts,
                next_attempt_at,
            })
            .await
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        // A webhook URL is a credential; a redirect would send alerts elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// One POST to a Discord webhook.
pub async fn send(
    client: &reqwest::Client,
    webhook: &WebhookUrl,
    body: &serde_json::Value,
) -> Attempt {
    let response = match client.post(&webhook.0).json(body).send().await {
        Ok(response) => response,
        // Without the URL: it carries the webhook's secret token.
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
            .and_then(|v| v.parse::<f64>().ok());
        let body: Option<serde_json::Value> = response.json().await.ok();
        // Parsed totally: NaN, infinities and negatives from the network
        // must not reach Duration::from_secs_f64, which panics on them.
        let seconds = body
            .as_ref()
            .and_then(|b| b["retry_after"].as_f64())
            .or(header)
            .filter(|s| s.is_finite())
            .unwrap_or(1.0)
            .clamp(0.05, 3600.0);
        return Attempt::RetryAfter(Duration::from_secs_f64(seconds));
    }
    Attempt::Failed(format!("Discord answered {status}"))
}

/// Sends a test message to `webhook`; for the settings endpoint.
pub async fn send_test(webhook: &WebhookUrl) -> Attempt {
    let body = serde_json::json!({
        "username": "PlantOps",
        "embeds": [{"title": "PlantOps test notification",
            "description": "Notifications from PlantOps reach this channel.",
            "color": 0x2E_CC_71}]
    });
    send(&http_client(), webhook, &body).await
}

fn later(wait: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_fifteen_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(16));
        assert_eq!(backoff(29), MAX_BACKOFF);
        // Thirty attempts span hours, not minutes, before an alert fails.
        let total: Duration = (1..MAX_ATTEMPTS).map(backoff).sum();
        assert!(total > Duration::from_secs(5 * 3600));
    }
}

//! Delivery from the persisted outboxes: the alerts table for the
//! settings' Discord webhook, `channel_deliveries` for every channel. Each
//! is a lane of its own — retries with exponential backoff, honours a
//! service's 429 `retry_after`, gives up only after a long bound — so one
//! channel's outage or rate limit delays only its own notices. A restart or
//! an outage delays notices, never drops them; a notice the service
//! confirmed is marked sent at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use plantops_core::alert::Delivery;
use plantops_core::backoff::Backoff;
use plantops_store::{DeliveryUpdate, DynStore, QueuedAlert};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::channels::{ChannelConfig, DiscordChannel};
pub use super::send::Attempt;
use super::send::Notice;
use super::settings::NotificationSettings;

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

/// The wait after `attempts` failed deliveries: 2 s doubling to 15 minutes.
pub fn backoff(attempts: u32) -> Duration {
    Backoff::new(Duration::from_secs(1), MAX_BACKOFF).delay_after(attempts)
}

/// One outbox and where it delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Lane {
    /// The alerts table, to the settings' (or DISCORD_WEBHOOK_URL's) Discord
    /// webhook; `disabled` when there is none.
    Settings,
    Channel(Uuid),
}

pub struct Notifier {
    store: DynStore,
    settings: Arc<NotificationSettings>,
    wake: Arc<Notify>,
}

impl Notifier {
    pub fn new(store: &DynStore, settings: Arc<NotificationSettings>, wake: Arc<Notify>) -> Self {
        Self {
            store: store.clone(),
            settings,
            wake,
        }
    }

    /// Runs a lane per outbox; channels added or removed (here or on
    /// another instance) are picked up at the next wake-up or within 5 s.
    pub async fn run(self) {
        // Every series from the start, at zero (rates and alert rules see
        // the first one); the latency histogram too.
        for result in ["sent", "rate_limited", "failed"] {
            metrics::counter!("plantops_notifications_total", "result" => result).increment(0);
        }
        let _ = metrics::histogram!("plantops_alert_delivery_seconds");
        // Dropping a lane (a channel removed, or this task ending) stops it.
        let mut lanes: HashMap<Lane, (Arc<Notify>, LaneTask)> = HashMap::new();
        loop {
            match self.store.list_channels().await {
                Ok(channels) => {
                    let mut current: Vec<Lane> =
                        channels.iter().map(|c| Lane::Channel(c.id)).collect();
                    current.push(Lane::Settings);
                    // A lane that stopped on its own is started again.
                    lanes.retain(|lane, (_, task)| current.contains(lane) && !task.0.is_finished());
                    for lane in current {
                        lanes.entry(lane).or_insert_with(|| self.start(lane));
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "cannot list notification channels");
                    // The settings' webhook does not depend on the list.
                    lanes.retain(|_, (_, task)| !task.0.is_finished());
                    lanes
                        .entry(Lane::Settings)
                        .or_insert_with(|| self.start(Lane::Settings));
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {
                    for (wake, _) in lanes.values() {
                        wake.notify_one();
                    }
                }
                _ = tokio::time::sleep(IDLE_CHECK) => {}
            }
        }
    }

    fn start(&self, lane: Lane) -> (Arc<Notify>, LaneTask) {
        let wake = Arc::new(Notify::new());
        let worker = LaneWorker {
            lane,
            store: self.store.clone(),
            settings: self.settings.clone(),
            wake: wake.clone(),
        };
        (wake, LaneTask(tokio::spawn(worker.run())))
    }
}

/// A running lane, stopped when dropped.
struct LaneTask(JoinHandle<()>);

impl Drop for LaneTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct LaneWorker {
    lane: Lane,
    store: DynStore,
    settings: Arc<NotificationSettings>,
    wake: Arc<Notify>,
}

/// Where a lane's next notice goes.
enum Destination {
    Send(ChannelConfig),
    /// Nothing configured: the notice is marked disabled.
    Nowhere,
    /// The channel is gone: its lane ends.
    Removed,
}

impl LaneWorker {
    async fn run(self) {
        loop {
            let pause = match self.deliver_due().await {
                Ok(Some(pause)) if pause == Duration::MAX => return,
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

    fn channel_id(&self) -> Option<Uuid> {
        match self.lane {
            Lane::Settings => None,
            Lane::Channel(id) => Some(id),
        }
    }

    async fn claim(&self) -> plantops_store::Result<Vec<QueuedAlert>> {
        let now = Utc::now();
        match self.lane {
            Lane::Settings => self.store.claim_due_alerts(now, later(LEASE), BATCH).await,
            Lane::Channel(id) => {
                self.store
                    .claim_due_deliveries(id, now, later(LEASE), BATCH)
                    .await
            }
        }
    }

    /// Delivers what is due; returns a pause when a service asked for one
    /// (`Duration::MAX`: the channel is gone). Alerts are claimed before
    /// they are sent, so several notifiers (one per instance) never send
    /// one twice.
    async fn deliver_due(&self) -> plantops_store::Result<Option<Duration>> {
        loop {
            let claimed = self.claim().await?;
            if claimed.is_empty() {
                return Ok(None);
            }
            let mut claimed = claimed.into_iter();
            while let Some(queued) = claimed.next() {
                if let Some(pause) = self.deliver(queued).await? {
                    if pause == Duration::MAX {
                        return Ok(Some(pause));
                    }
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

    async fn destination(&self) -> Option<Destination> {
        match self.lane {
            Lane::Settings => match self.settings.discord_webhook().await {
                Ok(Some(webhook)) => {
                    Some(Destination::Send(ChannelConfig::Discord(DiscordChannel {
                        url: webhook.0,
                    })))
                }
                Ok(None) => Some(Destination::Nowhere),
                Err(error) => {
                    tracing::error!(%error, "cannot read the Discord webhook setting");
                    None
                }
            },
            Lane::Channel(id) => match self.settings.channels.get(id).await {
                Ok(Some(channel)) => Some(Destination::Send(channel.config)),
                Ok(None) => Some(Destination::Removed),
                Err(error) => {
                    tracing::error!(%error, channel_id = %id, "cannot open a notification channel");
                    None
                }
            },
        }
    }

    async fn deliver(&self, queued: QueuedAlert) -> plantops_store::Result<Option<Duration>> {
        let QueuedAlert { alert, attempts } = queued;
        let config = match self.destination().await {
            Some(Destination::Send(config)) => config,
            Some(Destination::Nowhere) => {
                self.record(alert.id, Delivery::Disabled, attempts, Utc::now())
                    .await?;
                return Ok(None);
            }
            Some(Destination::Removed) => return Ok(Some(Duration::MAX)),
            None => return Ok(Some(IDLE_CHECK)),
        };
        let plant_name = match alert.plant_id {
            Some(id) => self.store.get_plant(id).await?.map(|p| p.name),
            None => None,
        };
        let notice = Notice::Alert {
            alert: &alert,
            plant_name: plant_name.as_deref(),
        };
        let attempts = attempts + 1;
        let channel = self.channel_id();
        let kind = config.kind().as_str();
        match self.settings.sender.send(&config, &notice).await {
            Attempt::Delivered => {
                metrics::counter!("plantops_notifications_total", "result" => "sent").increment(1);
                let waited = (Utc::now() - alert.created_at).to_std().unwrap_or_default();
                metrics::histogram!("plantops_alert_delivery_seconds").record(waited.as_secs_f64());
                tracing::info!(alert_id = %alert.id, channel_id = ?channel, kind, "notification delivered");
                // The error clears first: a channel showing nothing
                // pending shows no stale error either.
                self.remember_error(None).await?;
                self.record(alert.id, Delivery::Sent, attempts, Utc::now())
                    .await?;
                Ok(None)
            }
            Attempt::RetryAfter(wait) => {
                metrics::counter!("plantops_notifications_total", "result" => "rate_limited")
                    .increment(1);
                tracing::warn!(alert_id = %alert.id, channel_id = ?channel, kind, retry_after_ms = wait.as_millis() as u64, "rate limited");
                self.record(alert.id, Delivery::Pending, attempts, later(wait))
                    .await?;
                Ok(Some(wait))
            }
            Attempt::Failed(reason) => {
                self.remember_error(Some(&reason)).await?;
                if attempts >= MAX_ATTEMPTS {
                    tracing::error!(alert_id = %alert.id, channel_id = ?channel, kind, attempts, reason, "giving up on a notification");
                    self.record(alert.id, Delivery::Failed, attempts, Utc::now())
                        .await?;
                } else {
                    let wait = backoff(attempts);
                    tracing::warn!(alert_id = %alert.id, channel_id = ?channel, kind, attempts, reason, retry_in_ms = wait.as_millis() as u64, "notification not delivered");
                    self.record(alert.id, Delivery::Pending, attempts, later(wait))
                        .await?;
                }
                // Counted once recorded: a failure counted is one whose
                // retry is scheduled (tests stop the server after it).
                metrics::counter!("plantops_notifications_total", "result" => "failed")
                    .increment(1);
                Ok(None)
            }
        }
    }

    /// A channel shows why its last attempt failed until one succeeds.
    async fn remember_error(&self, reason: Option<&str>) -> plantops_store::Result<()> {
        match self.lane {
            Lane::Settings => Ok(()),
            Lane::Channel(id) => {
                self.store
                    .record_channel_error(id, reason, Utc::now())
                    .await
            }
        }
    }

    async fn record(
        &self,
        id: Uuid,
        delivery: Delivery,
        attempts: u32,
        next_attempt_at: DateTime<Utc>,
    ) -> plantops_store::Result<()> {
        let update = DeliveryUpdate {
            id,
            delivery,
            attempts,
            next_attempt_at,
        };
        match self.lane {
            Lane::Settings => self.store.update_delivery(&update).await,
            Lane::Channel(channel) => self.store.update_channel_delivery(channel, &update).await,
        }
    }
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

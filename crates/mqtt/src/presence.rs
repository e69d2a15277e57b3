//! Device presence, decided in the database so that several instances
//! agree: a committed batch brings its devices online
//! ([`plantops_store::CommittedBatch::came_online`]), and the offline check
//! — run by one instance, the leader — marks offline the devices silent
//! for three heartbeat intervals. Transitions become
//! [`DeviceStatusChange`] events.

use std::time::Duration;

use chrono::Utc;
use plantops_core::event::{DeviceStatusChange, Event};
use plantops_core::DeviceStatus;
use plantops_store::DeviceStore;
use tokio::sync::broadcast;

/// Heartbeats a device may miss before it counts as offline.
pub const MISSED_HEARTBEATS: u32 = 3;

#[derive(Debug, Clone, Copy)]
pub struct OfflineCheck {
    heartbeat: Duration,
}

impl OfflineCheck {
    pub fn new(heartbeat: Duration) -> Self {
        Self { heartbeat }
    }

    /// How often to look: a quarter of the heartbeat, 0.2–15 s.
    pub fn tick(&self) -> Duration {
        (self.heartbeat / 4).clamp(Duration::from_millis(200), Duration::from_secs(15))
    }

    /// Marks offline the devices silent too long and announces them.
    pub async fn run_once(
        &self,
        store: &dyn DeviceStore,
        events: &broadcast::Sender<Event>,
    ) -> plantops_store::Result<usize> {
        let limit = chrono::Duration::from_std(self.heartbeat * MISSED_HEARTBEATS)
            .unwrap_or(chrono::Duration::MAX);
        let silent = store.mark_silent_offline(Utc::now() - limit).await?;
        for device in &silent {
            tracing::info!(device_id = %device.device_id, "device offline");
            let _ = events.send(Event::DeviceStatus(DeviceStatusChange {
                device_id: device.device_id,
                plant_id: device.plant_id,
                status: DeviceStatus::Offline,
                previous: DeviceStatus::Online,
                last_seen_at: device.last_seen_at,
            }));
        }
        Ok(silent.len())
    }

    /// Checks every [`OfflineCheck::tick`] until the task is dropped.
    pub async fn run(
        self,
        store: std::sync::Arc<dyn DeviceStore>,
        events: broadcast::Sender<Event>,
    ) {
        let mut interval = tokio::time::interval(self.tick());
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if let Err(error) = self.run_once(store.as_ref(), &events).await {
                tracing::error!(%error, "could not mark silent devices offline; retrying next tick");
            }
        }
    }
}

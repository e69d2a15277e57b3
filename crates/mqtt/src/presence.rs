//! Device presence: online on any message, offline after three missed
//! heartbeat intervals. Transitions become [`DeviceStatusChange`] events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use plantops_core::event::{DeviceStatusChange, Event};
use plantops_core::DeviceStatus;
use plantops_store::{DeviceStore, Presence};
use tokio::sync::broadcast;
use uuid::Uuid;

/// Heartbeats a device may miss before it counts as offline.
pub const MISSED_HEARTBEATS: u32 = 3;

#[derive(Debug, Clone, Copy)]
struct Live {
    status: DeviceStatus,
    last_seen: DateTime<Utc>,
    plant_id: Option<Uuid>,
}

pub struct PresenceTracker {
    heartbeat: Duration,
    devices: Mutex<HashMap<Uuid, Live>>,
}

impl PresenceTracker {
    pub fn new(heartbeat: Duration) -> Self {
        Self {
            heartbeat,
            devices: Mutex::default(),
        }
    }

    /// Starts from the devices the store says are online, so one that went
    /// silent while PlantOps was down is noticed after a restart.
    pub async fn load(
        heartbeat: Duration,
        store: &dyn DeviceStore,
    ) -> plantops_store::Result<Self> {
        let tracker = Self::new(heartbeat);
        let online = store.all_devices(Some(DeviceStatus::Online)).await?;
        let mut live = tracker.lock();
        for device in online {
            live.insert(
                device.id,
                Live {
                    status: DeviceStatus::Online,
                    last_seen: device.last_seen_at.unwrap_or(device.created_at),
                    plant_id: device.plant_id,
                },
            );
        }
        drop(live);
        Ok(tracker)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Live>> {
        // A panic while holding the lock leaves plain data behind: go on.
        self.devices.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records committed presence; returns the devices that came online.
    pub fn seen(
        &self,
        seen: &[Presence],
        plants: &HashMap<Uuid, Option<Uuid>>,
    ) -> Vec<DeviceStatusChange> {
        let mut live = self.lock();
        let mut changes = Vec::new();
        for presence in seen {
            let plant_id = plants.get(&presence.device_id).copied().flatten();
            let entry = live.entry(presence.device_id).or_insert(Live {
                status: DeviceStatus::Provisioning,
                last_seen: presence.seen_at,
                plant_id,
            });
            entry.last_seen = entry.last_seen.max(presence.seen_at);
            entry.plant_id = plant_id;
            if entry.status != DeviceStatus::Online {
                let previous = entry.status;
                entry.status = DeviceStatus::Online;
                changes.push(DeviceStatusChange {
                    device_id: presence.device_id,
                    plant_id,
                    status: DeviceStatus::Online,
                    previous,
                    last_seen_at: Some(entry.last_seen),
                });
            }
        }
        changes
    }

    /// Online devices silent for longer than the allowed missed heartbeats.
    pub fn silent_since(&self, now: DateTime<Utc>) -> Vec<DeviceStatusChange> {
        let limit = chrono::Duration::from_std(self.heartbeat * MISSED_HEARTBEATS)
            .unwrap_or(chrono::Duration::MAX);
        self.lock()
            .iter()
            .filter(|(_, l)| l.status == DeviceStatus::Online && now - l.last_seen > limit)
            .map(|(id, l)| DeviceStatusChange {
                device_id: *id,
                plant_id: l.plant_id,
                status: DeviceStatus::Offline,
                previous: l.status,
                last_seen_at: Some(l.last_seen),
            })
            .collect()
    }

    /// Applies offline changes unless the device spoke meanwhile; returns
    /// those applied.
    fn mark_offline(&self, changes: Vec<DeviceStatusChange>) -> Vec<DeviceStatusChange> {
        let mut live = self.lock();
        changes
            .into_iter()
            .filter(|change| match live.get_mut(&change.device_id) {
                Some(l) if Some(l.last_seen) == change.last_seen_at => {
                    l.status = DeviceStatus::Offline;
                    true
                }
                _ => false,
            })
            .collect()
    }

    pub fn forget(&self, device_id: Uuid) {
        self.lock().remove(&device_id);
    }

    /// Checks for silent devices every `tick` until the task is dropped.
    pub async fn run_offline_detector(
        self: Arc<Self>,
        store: Arc<dyn DeviceStore>,
        events: broadcast::Sender<Event>,
        tick: Duration,
    ) {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let silent = self.silent_since(Utc::now());
            if silent.is_empty() {
                continue;
            }
            let ids: Vec<Uuid> = silent.iter().map(|c| c.device_id).collect();
            if let Err(error) = store.set_devices_status(&ids, DeviceStatus::Offline).await {
                tracing::error!(%error, "could not mark silent devices offline; retrying next tick");
                continue;
            }
            for change in self.mark_offline(silent) {
                tracing::info!(device_id = %change.device_id, "device offline");
                let _ = events.send(Event::DeviceStatus(change));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn devices_go_online_on_messages_and_offline_after_three_missed_heartbeats() {
        let tracker = PresenceTracker::new(Duration::from_secs(60));
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let device = Uuid::new_v4();
        let plant = Uuid::new_v4();
        let plants = HashMap::from([(device, Some(plant))]);
        let seen = |at| {
            [Presence {
                device_id: device,
                seen_at: at,
            }]
        };

        let changes = tracker.seen(&seen(t0), &plants);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (changes[0].status, changes[0].plant_id),
            (DeviceStatus::Online, Some(plant))
        );
        assert!(
            tracker.seen(&seen(t0), &plants).is_empty(),
            "no repeat while online"
        );

        assert!(tracker
            .silent_since(t0 + chrono::Duration::seconds(180))
            .is_empty());
        let silent = tracker.silent_since(t0 + chrono::Duration::seconds(181));
        assert_eq!(silent.len(), 1);
        // A message between detection and marking keeps the device online.
        tracker.seen(&seen(t0 + chrono::Duration::seconds(181)), &plants);
        assert!(tracker.mark_offline(silent).is_empty());

        let silent = tracker.silent_since(t0 + chrono::Duration::seconds(400));
        assert_eq!(tracker.mark_offline(silent).len(), 1);
        let back = tracker.seen(&seen(t0 + chrono::Duration::seconds(401)), &plants);
        assert_eq!(back[0].status, DeviceStatus::Online);
        assert_eq!(back[0].previous, DeviceStatus::Offline);
    }
}

//! Evaluation on arrival: each committed reading is checked at once against
//! its plant's thresholds through the per-(plant, metric) state machine;
//! device status changes become offline / back-online alerts.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Duration;
use plantops_core::alert::{Alert, AlertKind, Delivery, MetricState, Transition};
use plantops_core::event::{DeviceStatusChange, Event};
use plantops_core::plant::BoundSide;
use plantops_core::{DeviceStatus, Metric, Plant, Reading};
use plantops_store::{AlertStore, DynStore, PlantStore, StateChange};
use tokio::sync::{broadcast, Notify};
use uuid::Uuid;

struct PlantEntry {
    plant: Plant,
    states: HashMap<Metric, MetricState>,
}

pub struct Evaluator {
    plants_store: Arc<dyn PlantStore>,
    /// Threshold states and the alerts (the outbox).
    alerts_store: Arc<dyn AlertStore>,
    events: broadcast::Sender<Event>,
    /// Wakes the notifier when alerts are stored.
    outbox: Arc<Notify>,
    plants: HashMap<Uuid, PlantEntry>,
}

fn format_value(metric: Metric, value: f64) -> String {
    let unit = metric.unit();
    let sep = if unit == "lux" { " " } else { "" };
    format!("{}{sep}{unit}", (value * 10.0).round() / 10.0)
}

fn label(metric: Metric) -> &'static str {
    match metric {
        Metric::SoilMoisture => "Soil moisture",
        Metric::Temperature => "Temperature",
        Metric::Humidity => "Humidity",
        Metric::LightLevel => "Light",
    }
}

/// A pending alert; the notifier marks it disabled if no channel is set.
fn new_alert(
    plant_id: Option<Uuid>,
    device_id: Option<Uuid>,
    kind: AlertKind,
    message: String,
) -> Alert {
    Alert {
        id: Uuid::new_v4(),
        plant_id,
        device_id,
        kind,
        metric: None,
        value: None,
        threshold: None,
        direction: None,
        message,
        created_at: plantops_core::now(),
        delivery: Delivery::Pending,
        acknowledged_at: None,
    }
}

impl Evaluator {
    pub fn new(store: &DynStore, events: broadcast::Sender<Event>, outbox: Arc<Notify>) -> Self {
        Self {
            plants_store: store.clone(),
            alerts_store: store.clone(),
            events,
            outbox,
            plants: HashMap::new(),
        }
    }

    pub async fn run(mut self, mut rx: broadcast::Receiver<Event>) {
        loop {
            let event = match rx.recv().await {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "alert evaluation fell behind; events skipped");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let result = match event {
                Event::Reading(reading) => self.reading(&reading).await,
                Event::DeviceStatus(change) => self.device_status(&change).await,
                Event::PlantChanged { plant_id, .. } => {
                    self.plants.remove(&plant_id);
                    Ok(())
                }
                Event::Alert(_) => Ok(()),
            };
            if let Err(error) = result {
                tracing::error!(%error, "alert evaluation failed");
                // Reload from the store next time rather than trust memory.
                self.plants.clear();
            }
        }
    }

    async fn entry(&mut self, plant_id: Uuid) -> plantops_store::Result<Option<&mut PlantEntry>> {
        if !self.plants.contains_key(&plant_id) {
            let Some(plant) = self.plants_store.get_plant(plant_id).await? else {
                return Ok(None);
            };
            let states = self.alerts_store.metric_states(plant_id).await?;
            self.plants.insert(plant_id, PlantEntry { plant, states });
        }
        Ok(self.plants.get_mut(&plant_id))
    }

    async fn reading(&mut self, reading: &Reading) -> plantops_store::Result<()> {
        let Some(plant_id) = reading.plant_id else {
            return Ok(());
        };
        let Some(entry) = self.entry(plant_id).await? else {
            return Ok(());
        };
        let Some(thresholds) = entry.plant.thresholds else {
            return Ok(());
        };
        let cooldown = Duration::minutes(i64::from(entry.plant.alert_cooldown_minutes));
        let mut changes = Vec::new();
        let mut alerts = Vec::new();
        for metric in Metric::ALL {
            let (Some(bounds), Some(value)) = (thresholds.get(metric), reading.values.get(metric))
            else {
                continue;
            };
            let state = entry.states.get(&metric).copied().unwrap_or_default();
            let (next, transition) = state.observe(metric, &bounds, value, reading.time, cooldown);
            if next != state {
                entry.states.insert(metric, next);
                changes.push(StateChange {
                    plant_id,
                    metric,
                    state: next,
                });
            }
            let name = &entry.plant.name;
            let (kind, side, threshold, message) = match transition {
                Some(Transition::Breach { side, threshold }) => {
                    let relation = match side {
                        BoundSide::Min => "below the minimum",
                        BoundSide::Max => "above the maximum",
                    };
                    let message = format!(
                        "{} of {name} is {}, {relation} of {}",
                        label(metric),
                        format_value(metric, value),
                        format_value(metric, threshold)
                    );
                    (AlertKind::Threshold, side, threshold, message)
                }
                Some(Transition::Recovery { side, threshold }) => {
                    let message = format!(
                        "{} of {name} is back to normal: {}",
                        label(metric),
                        format_value(metric, value)
                    );
                    (AlertKind::Recovered, side, threshold, message)
                }
                _ => continue,
            };
            alerts.push(Alert {
                metric: Some(metric),
                value: Some(value),
                threshold: Some(threshold),
                direction: Some(side),
                ..new_alert(Some(plant_id), Some(reading.device_id), kind, message)
            });
        }
        if changes.is_empty() && alerts.is_empty() {
            return Ok(());
        }
        self.alerts_store.record_alerts(&changes, &alerts).await?;
        self.announce(alerts);
        Ok(())
    }

    async fn device_status(&mut self, change: &DeviceStatusChange) -> plantops_store::Result<()> {
        let kind = match (change.previous, change.status) {
            (_, DeviceStatus::Offline) => AlertKind::DeviceOffline,
            (DeviceStatus::Offline, DeviceStatus::Online) => AlertKind::DeviceOnline,
            _ => return Ok(()),
        };
        let plant = match change.plant_id {
            Some(id) => self.entry(id).await?.map(|e| e.plant.clone()),
            None => None,
        };
        let serves = plant
            .as_ref()
            .map(|p| format!(" ({})", p.name))
            .unwrap_or_default();
        let message = match kind {
            AlertKind::DeviceOffline => format!(
                "Device {}{serves} is offline: no message for three heartbeat intervals",
                change.device_id
            ),
            _ => format!("Device {}{serves} is back online", change.device_id),
        };
        let alert = new_alert(
            plant.as_ref().map(|p| p.id),
            Some(change.device_id),
            kind,
            message,
        );
        self.alerts_store
            .record_alerts(&[], std::slice::from_ref(&alert))
            .await?;
        self.announce(vec![alert]);
        Ok(())
    }

    fn announce(&self, alerts: Vec<Alert>) {
        if alerts.is_empty() {
            return;
        }
        for alert in alerts {
            tracing::info!(plant_id = ?alert.plant_id, device_id = ?alert.device_id, kind = alert.kind.as_str(), "alert raised");
            metrics::counter!("plantops_alerts_total", "kind" => alert.kind.as_str()).increment(1);
            let _ = self.events.send(Event::Alert(alert));
        }
        self.outbox.notify_one();
    }
}

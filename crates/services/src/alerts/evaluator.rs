//! Evaluation on commit: ingestion hands each committed batch to
//! [`Evaluator`] (as its [`ReadingJudge`]) before acknowledging it, and the
//! readings are checked against their plants' thresholds through the
//! per-(plant, metric) state machine; device status changes, from the live
//! events, become offline / back-online alerts.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use plantops_core::alert::{Alert, AlertKind, Transition};
use plantops_core::event::{DeviceStatusChange, Event};
use plantops_core::plant::BoundSide;
use plantops_core::{DeviceStatus, Metric, Plant, Reading};
use plantops_mqtt::ingest::ReadingJudge;
use plantops_store::{DynStore, JudgedPlant, StateChange};

use super::Announcer;
use tokio::sync::broadcast;
use uuid::Uuid;

/// How far back the catch-up looks for unjudged readings: an alert about
/// a value older than this would come too late to help.
const CATCH_UP_WINDOW: Duration = Duration::hours(24);
/// Readings judged per catch-up transaction.
const CATCH_UP_PAGE: u32 = 2_000;
const CATCH_UP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

pub struct Evaluator {
    /// Plants' thresholds and states, and the alerts (the outbox).
    store: DynStore,
    announcer: Announcer,
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

impl Evaluator {
    pub fn new(store: &DynStore, announcer: Announcer) -> Self {
        Self {
            store: store.clone(),
            announcer,
        }
    }

    /// Turns device status changes into alerts until the events end.
    pub async fn run(self: Arc<Self>, mut rx: broadcast::Receiver<Event>) {
        loop {
            let change = match rx.recv().await {
                Ok(Event::DeviceStatus(change)) => change,
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "device status evaluation fell behind; events skipped"
                    );
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if let Err(error) = self.device_status(&change).await {
                tracing::error!(%error, device_id = %change.device_id, "device status alert not stored");
            }
        }
    }

    async fn device_status(&self, change: &DeviceStatusChange) -> plantops_store::Result<()> {
        let kind = match (change.previous, change.status) {
            (_, DeviceStatus::Offline) => AlertKind::DeviceOffline,
            (DeviceStatus::Offline, DeviceStatus::Online) => AlertKind::DeviceOnline,
            _ => return Ok(()),
        };
        let plant = match change.plant_id {
            Some(id) => self.store.get_plant(id).await?,
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
        let alert = Alert::pending(
            plant.as_ref().map(|p| p.id),
            Some(change.device_id),
            kind,
            message,
        );
        self.store
            .record_alerts(&[], std::slice::from_ref(&alert))
            .await?;
        self.announce(vec![alert]);
        Ok(())
    }

    /// Judges readings against their plants' thresholds in one transaction
    /// that holds the plants: with several instances, each breach is judged
    /// once, whichever instance its readings reached.
    async fn judge_readings(&self, readings: &[Reading]) -> plantops_store::Result<()> {
        let mut readings: Vec<Reading> = readings
            .iter()
            .filter(|r| r.plant_id.is_some())
            .cloned()
            .collect();
        readings.sort_by_key(|r| r.time);
        let mut newest: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
        for reading in &readings {
            if let Some(plant_id) = reading.plant_id {
                newest.insert(plant_id, reading.time);
            }
        }
        let newest: Vec<(Uuid, DateTime<Utc>)> = newest.into_iter().collect();
        let judge: plantops_store::Judge = Box::new(move |plants| judge(plants, &readings));
        let alerts = self.store.judge_plants(&newest, judge).await?;
        self.announce(alerts);
        Ok(())
    }

    /// Judges what was stored and not judged: readings newer than their
    /// plant's judged high-water mark (and than [`CATCH_UP_WINDOW`]), as an
    /// instance leaves them that committed a batch and stopped before its
    /// evaluator saw it (QoS 0 readings, or a device that does not resend).
    /// Judging a reading twice raises nothing twice: the state machine
    /// ignores what it has seen, so this may overlap the live path.
    pub async fn catch_up(&self) -> plantops_store::Result<usize> {
        let mut judged = 0;
        loop {
            let since = plantops_core::now() - CATCH_UP_WINDOW;
            let readings = self.store.unjudged_readings(since, CATCH_UP_PAGE).await?;
            judged += readings.len();
            let last_page = readings.len() < CATCH_UP_PAGE as usize;
            if !readings.is_empty() {
                self.judge_readings(&readings).await?;
            }
            if last_page {
                return Ok(judged);
            }
        }
    }

    /// Runs [`Evaluator::catch_up`] now and then every
    /// [`CATCH_UP_INTERVAL`] (a leader job: at start, after a takeover, and
    /// for readings an instance that died left behind).
    pub async fn catch_up_periodically(self: Arc<Self>) {
        loop {
            match self.catch_up().await {
                Ok(0) => {}
                Ok(judged) => tracing::info!(judged, "judged readings stored without judgement"),
                Err(error) => tracing::error!(%error, "catching up on unjudged readings failed"),
            }
            tokio::time::sleep(CATCH_UP_INTERVAL).await;
        }
    }

    fn announce(&self, alerts: Vec<Alert>) {
        self.announcer.announce(alerts);
    }
}

#[async_trait::async_trait]
impl ReadingJudge for Evaluator {
    async fn judge(&self, readings: &[Reading]) -> plantops_store::Result<()> {
        self.judge_readings(readings).await
    }

    async fn raise(&self, alerts: Vec<Alert>) -> plantops_store::Result<()> {
        self.store.record_alerts(&[], &alerts).await?;
        self.announce(alerts);
        Ok(())
    }
}

/// Runs each reading (oldest first) through its plant's per-metric state
/// machines; returns the final state of every metric that changed and the
/// alerts the transitions raised.
fn judge(plants: Vec<JudgedPlant>, readings: &[Reading]) -> (Vec<StateChange>, Vec<Alert>) {
    let mut changes = Vec::new();
    let mut alerts = Vec::new();
    for JudgedPlant { plant, mut states } in plants {
        let Some(thresholds) = plant.thresholds else {
            continue;
        };
        let cooldown = Duration::minutes(i64::from(plant.alert_cooldown_minutes));
        let mut changed = Vec::new();
        for reading in readings.iter().filter(|r| r.plant_id == Some(plant.id)) {
            for metric in Metric::ALL {
                let (Some(bounds), Some(value)) =
                    (thresholds.get(metric), reading.values.get(metric))
                else {
                    continue;
                };
                let state = states.get(&metric).copied().unwrap_or_default();
                let (next, transition) =
                    state.observe(metric, &bounds, value, reading.time, cooldown);
                if next != state {
                    states.insert(metric, next);
                    if !changed.contains(&metric) {
                        changed.push(metric);
                    }
                }
                if let Some(alert) = transition_alert(&plant, reading, metric, value, transition) {
                    alerts.push(alert);
                }
            }
        }
        changes.extend(changed.into_iter().map(|metric| StateChange {
            plant_id: plant.id,
            metric,
            state: states[&metric],
        }));
    }
    (changes, alerts)
}

/// The alert a transition raises, if any.
fn transition_alert(
    plant: &Plant,
    reading: &Reading,
    metric: Metric,
    value: f64,
    transition: Option<Transition>,
) -> Option<Alert> {
    let name = &plant.name;
    let (kind, side, threshold, message) = match transition? {
        Transition::Breach { side, threshold } => {
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
        Transition::Recovery { side, threshold } => {
            let message = format!(
                "{} of {name} is back to normal: {}",
                label(metric),
                format_value(metric, value)
            );
            (AlertKind::Recovered, side, threshold, message)
        }
        _ => return None,
    };
    Some(Alert {
        metric: Some(metric),
        value: Some(value),
        threshold: Some(threshold),
        direction: Some(side),
        ..Alert::pending(Some(plant.id), Some(reading.device_id), kind, message)
    })
}

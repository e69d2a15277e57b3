//! The care journal: entries recorded by people, tokens and automations,
//! and waterings detected from a rise of the soil moisture.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use plantops_core::journal::{CareEvent, CareEventKind, CareSource};
use plantops_core::{Metric, Reading};
use plantops_store::{DynStore, StoreError};
use uuid::Uuid;

/// A watering recorded by someone replaces a detected one this close to it,
/// and a detection this close to any recorded watering is not stored.
pub const SAME_WATERING: Duration = Duration::hours(1);
/// How often the leader looks for waterings in the readings.
const DETECT_INTERVAL: StdDuration = StdDuration::from_secs(60);
/// How far back each look reaches: the rise's hour and the hour before it,
/// so a missed look (a restart, a new leader) is caught up.
const DETECT_LOOKBACK: Duration = Duration::hours(3);
/// Readings read per plant and look.
const DETECT_READINGS: u32 = 5_000;

/// How waterings are detected (`PLANTOPS_WATERING_RISE`).
#[derive(Debug, Clone, Copy)]
pub struct Detection {
    /// Soil-moisture points the moisture must rise within [`SAME_WATERING`]; 0: off.
    pub rise: f64,
}

impl Default for Detection {
    fn default() -> Self {
        Self { rise: 10.0 }
    }
}

/// Records, lists and removes journal entries.
#[derive(Clone)]
pub struct Journal {
    store: DynStore,
    detection: Detection,
}

impl Journal {
    pub fn new(store: DynStore, detection: Detection) -> Self {
        Self { store, detection }
    }

    /// Stores an entry already checked; a watering recorded by someone
    /// removes the detected one it explains.
    pub async fn record(&self, event: &CareEvent) -> Result<(), StoreError> {
        self.store.insert_care_event(event, SAME_WATERING).await?;
        tracing::info!(plant_id = %event.plant_id, kind = event.kind.as_str(), source = event.source.as_str(), "care event recorded");
        Ok(())
    }

    /// Looks for waterings once a minute (leader only: one detection
    /// however many instances run).
    pub async fn detect_periodically(self) {
        if self.detection.rise <= 0.0 {
            return std::future::pending().await;
        }
        super::every(DETECT_INTERVAL, "watering detection", |now| {
            self.detect(now)
        })
        .await
    }

    /// Records a detected watering for every rise in the plants' recent
    /// soil moisture; returns how many were new.
    pub async fn detect(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut found = 0;
        for plant in self.store.all_plants().await? {
            let readings = self
                .store
                .plant_history(plant.id, now - DETECT_LOOKBACK, DETECT_READINGS)
                .await?;
            for (at, rise) in rises(&readings, self.detection.rise) {
                let event = CareEvent {
                    id: Uuid::new_v4(),
                    plant_id: plant.id,
                    kind: CareEventKind::Watered,
                    at,
                    amount: None,
                    unit: None,
                    text: Some(format!("soil moisture rose {rise:.0} points")),
                    task: None,
                    source: CareSource::Detected,
                    recorded_by: None,
                    created_at: now,
                };
                if self
                    .store
                    .insert_detected_watering(&event, SAME_WATERING)
                    .await?
                {
                    found += 1;
                }
            }
        }
        Ok(found)
    }
}

/// The waterings in a plant's readings (any order): each time the soil
/// moisture stands at least `step` points above its lowest value of the
/// hour before, the first reading that does so, with the rise. A rise is
/// reported once: the next one must start from a new low after it.
pub fn rises(readings: &[Reading], step: f64) -> Vec<(DateTime<Utc>, f64)> {
    let mut soil: Vec<(DateTime<Utc>, f64)> = readings
        .iter()
        .filter_map(|r| r.values.get(Metric::SoilMoisture).map(|v| (r.time, v)))
        .collect();
    soil.sort_by_key(|(time, _)| *time);
    let mut found = Vec::new();
    // Readings before this index belong to a rise already reported.
    let mut start = 0;
    for (i, &(time, value)) in soil.iter().enumerate() {
        let low = soil[start..i]
            .iter()
            .filter(|(t, _)| time - *t <= SAME_WATERING)
            .map(|(_, v)| *v)
            .fold(f64::INFINITY, f64::min);
        if value - low >= step {
            found.push((time, value - low));
            start = i;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use plantops_core::Measurements;

    fn soil(minutes: i64, value: f64) -> Reading {
        Reading {
            time: DateTime::<Utc>::UNIX_EPOCH + Duration::minutes(minutes),
            device_id: Uuid::nil(),
            plant_id: None,
            values: Measurements {
                soil_moisture: Some(value),
                ..Default::default()
            },
        }
    }

    #[test]
    fn a_rise_of_the_step_within_the_hour_is_one_watering() {
        let readings = [
            soil(0, 30.0),
            soil(10, 29.0),
            soil(20, 35.0),
            soil(25, 45.0),
            soil(30, 50.0),
        ];
        let found = rises(&readings, 10.0);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].0, readings[3].time,
            "the first reading 10 points above the low"
        );
        assert_eq!(found[0].1, 16.0);
    }

    #[test]
    fn a_slow_drift_and_noise_are_not_waterings() {
        // +12 points, but over three hours: not within the hour.
        let drift: Vec<Reading> = (0..=12)
            .map(|n| soil(n * 15, 30.0 + f64::from(n as i32)))
            .collect();
        assert!(rises(&drift, 10.0).is_empty());
        let noise = [soil(0, 30.0), soil(5, 36.0), soil(10, 31.0), soil(15, 37.0)];
        assert!(rises(&noise, 10.0).is_empty());
    }

    #[test]
    fn two_waterings_with_a_dry_spell_between_are_two() {
        let readings = [
            soil(0, 20.0),
            soil(10, 40.0),
            soil(200, 22.0),
            soil(210, 45.0),
        ];
        let found: Vec<_> = rises(&readings, 10.0).into_iter().map(|(t, _)| t).collect();
        assert_eq!(found, [readings[1].time, readings[3].time]);
    }
}

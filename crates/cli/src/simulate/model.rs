//! What a simulated plant sensor measures: a per-device random walk with a
//! day/night cycle, soil that dries until someone waters it, and now and then
//! a reading outside any sensible threshold.

use chrono::{DateTime, Timelike, Utc};
use plantops_core::reading::Measurements;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Bright-window daylight peak, lux.
const PEAK_LUX: f64 = 20_000.0;
/// Soil level below which the simulated owner may water the plant.
const WATERING_LEVEL: f64 = 28.0;

pub struct SimulatedPlant {
    rng: StdRng,
    soil_moisture: f64,
    temperature_offset: f64,
    humidity: f64,
    /// Soil moisture lost per hour, %.
    drying_per_hour: f64,
    /// Share of readings deliberately out of range (0–1).
    breach_rate: f64,
}

/// One reading's values and what happened to the plant before it.
pub struct Sample {
    pub values: Measurements,
    pub watered: bool,
    pub breach: bool,
}

impl SimulatedPlant {
    pub fn new(seed: u64, breach_rate: f64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        Self {
            soil_moisture: rng.random_range(40.0..70.0),
            temperature_offset: rng.random_range(-2.0..2.0),
            humidity: rng.random_range(40.0..65.0),
            drying_per_hour: rng.random_range(0.3..1.2),
            breach_rate: breach_rate.clamp(0.0, 1.0),
            rng,
        }
    }

    /// Advances the plant by `elapsed_secs` and measures it at `at`.
    pub fn step(&mut self, at: DateTime<Utc>, elapsed_secs: f64) -> Sample {
        let hours = elapsed_secs / 3600.0;
        // 0 at 06:00 and 18:00, 1 at noon, negative at night.
        let hour = f64::from(at.hour()) + f64::from(at.minute()) / 60.0;
        let daylight = ((hour - 6.0) / 12.0 * std::f64::consts::PI).sin();

        self.soil_moisture -= self.drying_per_hour * hours * (1.0 + daylight.max(0.0));
        self.soil_moisture += self.noise(0.15);
        let watered = self.soil_moisture < WATERING_LEVEL && self.rng.random_bool(0.3);
        if watered {
            self.soil_moisture += self.rng.random_range(30.0..45.0);
        }
        self.soil_moisture = self.soil_moisture.clamp(5.0, 95.0);

        self.temperature_offset = (self.temperature_offset + self.noise(0.1)).clamp(-4.0, 4.0);
        let temperature = 21.0 + 3.0 * daylight + self.temperature_offset;

        self.humidity = (self.humidity + self.noise(0.5) - daylight * 0.2).clamp(25.0, 85.0);

        let light = if daylight > 0.0 {
            PEAK_LUX * daylight * self.rng.random_range(0.7..1.0)
        } else {
            self.rng.random_range(0.0..5.0)
        };

        let mut values = Measurements {
            soil_moisture: Some(round1(self.soil_moisture)),
            temperature: Some(round1(temperature)),
            humidity: Some(round1(self.humidity)),
            light_level: Some(light.round()),
        };
        let breach = self.breach_rate > 0.0 && self.rng.random_bool(self.breach_rate);
        if breach {
            // One metric far outside the simulator's plant thresholds.
            match self.rng.random_range(0..3) {
                0 => values.soil_moisture = Some(round1(self.rng.random_range(3.0..9.0))),
                1 => values.temperature = Some(round1(self.rng.random_range(36.0..40.0))),
                _ => values.humidity = Some(round1(self.rng.random_range(2.0..8.0))),
            }
        }
        Sample {
            values,
            watered,
            breach,
        }
    }

    fn noise(&mut self, scale: f64) -> f64 {
        self.rng.random_range(-scale..scale)
    }
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// The telemetry message a device publishes (docs/api.md payload).
pub fn telemetry_payload(at: DateTime<Utc>, values: &Measurements) -> Vec<u8> {
    let mut object = json!({
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    for metric in plantops_core::Metric::ALL {
        if let Some(value) = values.get(metric) {
            object[metric.as_str()] = json!(value);
        }
    }
    object.to_string().into_bytes()
}

/// A heartbeat message in the shape existing firmware sends.
pub fn heartbeat_payload(at: DateTime<Utc>, uptime_secs: u64, rssi: i32) -> Vec<u8> {
    let value: Value = json!({
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "uptime": uptime_secs,
        "rssi": rssi,
    });
    value.to_string().into_bytes()
}

/// The thresholds `--create-plants` gives each simulated plant: the normal
/// walk stays inside them, breaches fall outside.
pub fn plant_thresholds() -> Value {
    json!({
        "soil_moisture": {"min": 10.0, "max": 95.0},
        "temperature": {"min": 12.0, "max": 32.0},
        "humidity": {"min": 10.0, "max": 95.0},
        "light_level": {"min": null, "max": 60000.0},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use plantops_core::plant::{PlantStatus, Thresholds};
    use plantops_core::telemetry;

    fn day() -> impl Iterator<Item = DateTime<Utc>> {
        let start = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        (0..24 * 60).map(move |minute| start + Duration::minutes(minute))
    }

    #[test]
    fn every_payload_is_valid_telemetry_with_its_own_timestamp() {
        let mut plant = SimulatedPlant::new(7, 0.05);
        for at in day() {
            let sample = plant.step(at, 60.0);
            let payload = telemetry_payload(at, &sample.values);
            let parsed = telemetry::parse(&payload, at + Duration::seconds(2))
                .expect("the simulator sends what the server accepts");
            assert_eq!(parsed.time, at, "the device's timestamp is kept");
            assert_eq!(parsed.values, sample.values);
        }
    }

    #[test]
    fn light_follows_day_and_night() {
        let mut plant = SimulatedPlant::new(1, 0.0);
        let light_at = |plant: &mut SimulatedPlant, hour: u32| {
            let at = Utc.with_ymd_and_hms(2026, 6, 1, hour, 0, 0).unwrap();
            plant.step(at, 60.0).values.light_level.unwrap()
        };
        assert!(light_at(&mut plant, 12) > 10_000.0);
        assert!(light_at(&mut plant, 2) < 10.0);
    }

    #[test]
    fn soil_dries_and_gets_watered() {
        let mut plant = SimulatedPlant::new(3, 0.0);
        let mut watered = 0;
        let mut minimum = f64::MAX;
        for at in day().chain(day().map(|t| t + Duration::days(1))) {
            // Ten simulated minutes per step: two days of drying.
            let sample = plant.step(at, 600.0);
            watered += usize::from(sample.watered);
            minimum = minimum.min(sample.values.soil_moisture.unwrap());
        }
        assert!(watered > 0, "the simulated owner waters a dry plant");
        assert!(minimum >= 5.0);
    }

    #[test]
    fn without_breaches_the_walk_stays_healthy_and_breaches_are_critical() {
        let thresholds: Thresholds = serde_json::from_value(plant_thresholds()).unwrap();
        let mut calm = SimulatedPlant::new(11, 0.0);
        for at in day() {
            let sample = calm.step(at, 60.0);
            assert_eq!(thresholds.judge(&sample.values), PlantStatus::Healthy);
        }
        let mut wild = SimulatedPlant::new(11, 1.0);
        let sample = wild.step(Utc::now(), 60.0);
        assert!(sample.breach);
        assert_eq!(thresholds.judge(&sample.values), PlantStatus::Critical);
    }

    #[test]
    fn heartbeats_are_json_objects() {
        let payload = heartbeat_payload(Utc::now(), 42, -60);
        let value: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(value["uptime"], 42);
    }
}

//! A stored sensor reading, in CONTRACT.md's compatible shape.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::Metric;

/// The measured values of one message; each is optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Measurements {
    /// Soil moisture, % (0–100).
    pub soil_moisture: Option<f64>,
    /// Air temperature, °C.
    pub temperature: Option<f64>,
    /// Relative humidity, %.
    pub humidity: Option<f64>,
    /// Illuminance, lux.
    pub light_level: Option<f64>,
}

impl Measurements {
    pub fn get(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::SoilMoisture => self.soil_moisture,
            Metric::Temperature => self.temperature,
            Metric::Humidity => self.humidity,
            Metric::LightLevel => self.light_level,
        }
    }

    pub fn set(&mut self, metric: Metric, value: Option<f64>) {
        let slot = match metric {
            Metric::SoilMoisture => &mut self.soil_moisture,
            Metric::Temperature => &mut self.temperature,
            Metric::Humidity => &mut self.humidity,
            Metric::LightLevel => &mut self.light_level,
        };
        *slot = value;
    }

    pub fn is_empty(&self) -> bool {
        Metric::ALL.iter().all(|m| self.get(*m).is_none())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Reading {
    pub time: DateTime<Utc>,
    pub device_id: Uuid,
    /// The plant the device served when the reading arrived.
    pub plant_id: Option<Uuid>,
    #[serde(flatten)]
    pub values: Measurements,
}

//! The four measured quantities and their physically plausible ranges.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    SoilMoisture,
    Temperature,
    Humidity,
    LightLevel,
}

impl Metric {
    pub const ALL: [Metric; 4] = [
        Metric::SoilMoisture,
        Metric::Temperature,
        Metric::Humidity,
        Metric::LightLevel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::SoilMoisture => "soil_moisture",
            Metric::Temperature => "temperature",
            Metric::Humidity => "humidity",
            Metric::LightLevel => "light_level",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Metric::SoilMoisture | Metric::Humidity => "%",
            Metric::Temperature => "°C",
            Metric::LightLevel => "lux",
        }
    }

    /// The range a threshold may be set in (docs/api.md): wider than
    /// [`Metric::range`], since scripts written for the original set bounds a
    /// sensor never reports (a `temperature.max` of 100, say).
    pub fn threshold_range(self) -> (f64, f64) {
        match self {
            Metric::SoilMoisture | Metric::Humidity => (0.0, 100.0),
            Metric::Temperature => (-100.0, 200.0),
            Metric::LightLevel => (0.0, 1_000_000.0),
        }
    }

    /// The range a reading must fall in to be believed (docs/api.md):
    /// outside it the sensor is broken, not the plant.
    pub fn range(self) -> (f64, f64) {
        match self {
            Metric::SoilMoisture | Metric::Humidity => (0.0, 100.0),
            Metric::Temperature => (-50.0, 80.0),
            Metric::LightLevel => (0.0, 200_000.0),
        }
    }

    pub fn parse(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

//! Plants, their thresholds, and the status derived from their latest data.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::validation::{Collector, FieldError};
use crate::{Measurements, Metric, ValidationErrors};

pub const DEFAULT_ALERT_COOLDOWN_MINUTES: u32 = 60;
/// A week: longer cooldowns would hide a plant that never recovers.
pub const MAX_ALERT_COOLDOWN_MINUTES: u32 = 7 * 24 * 60;
pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_SPECIES_CHARS: usize = 200;

/// Acceptable range of one metric; either side may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl Bounds {
    /// Which bound `value` violates, if any.
    pub fn violation(&self, value: f64) -> Option<(BoundSide, f64)> {
        match (self.min, self.max) {
            (Some(min), _) if value < min => Some((BoundSide::Min, min)),
            (_, Some(max)) if value > max => Some((BoundSide::Max, max)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BoundSide {
    Min,
    Max,
}

impl BoundSide {
    pub fn as_str(self) -> &'static str {
        match self {
            BoundSide::Min => "min",
            BoundSide::Max => "max",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [BoundSide::Min, BoundSide::Max]
            .into_iter()
            .find(|side| side.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub soil_moisture: Option<Bounds>,
    pub temperature: Option<Bounds>,
    pub humidity: Option<Bounds>,
    pub light_level: Option<Bounds>,
}

impl Thresholds {
    pub fn get(&self, metric: Metric) -> Option<Bounds> {
        match metric {
            Metric::SoilMoisture => self.soil_moisture,
            Metric::Temperature => self.temperature,
            Metric::Humidity => self.humidity,
            Metric::LightLevel => self.light_level,
        }
    }

    pub fn validate(&self, errors: &mut Collector) {
        for metric in Metric::ALL {
            let Some(bounds) = self.get(metric) else {
                continue;
            };
            let (low, high) = metric.threshold_range();
            for (side, value) in [(BoundSide::Min, bounds.min), (BoundSide::Max, bounds.max)] {
                let Some(value) = value else { continue };
                if !value.is_finite() || value < low || value > high {
                    errors.push(FieldError::new(
                        &["body", "thresholds", metric.as_str(), side.as_str()],
                        format!("{} must be between {low} and {high}", metric.as_str()),
                        "value_error.number.range",
                    ));
                }
            }
            if let (Some(min), Some(max)) = (bounds.min, bounds.max) {
                if min > max {
                    errors.push(FieldError::new(
                        &["body", "thresholds", metric.as_str()],
                        "min must be less than or equal to max",
                        "value_error.min_gt_max",
                    ));
                }
            }
        }
    }

    /// The plant's status judged from one set of values: `Critical` when a
    /// value is outside its bounds, `Warning` when it is within 10 % of the
    /// band's width from a bound, `Healthy` otherwise.
    pub fn judge(&self, values: &Measurements) -> PlantStatus {
        let findings = self.assess(values);
        if findings.iter().any(|f| f.status == PlantStatus::Critical) {
            PlantStatus::Critical
        } else if findings.is_empty() {
            PlantStatus::Healthy
        } else {
            PlantStatus::Warning
        }
    }

    /// Every metric that is outside its bounds or close to one.
    pub fn assess(&self, values: &Measurements) -> Vec<Finding> {
        let mut findings = Vec::new();
        for metric in Metric::ALL {
            let (Some(bounds), Some(value)) = (self.get(metric), values.get(metric)) else {
                continue;
            };
            let finding = |status, (side, bound)| Finding {
                metric,
                value,
                status,
                side,
                bound,
            };
            if let Some(violation) = bounds.violation(value) {
                findings.push(finding(PlantStatus::Critical, violation));
                continue;
            }
            let margin = match (bounds.min, bounds.max) {
                (Some(min), Some(max)) => (max - min) * 0.1,
                _ => {
                    let (low, high) = metric.range();
                    (high - low) * 0.05
                }
            };
            let near = match (bounds.min, bounds.max) {
                (Some(min), _) if value < min + margin => Some((BoundSide::Min, min)),
                (_, Some(max)) if value > max - margin => Some((BoundSide::Max, max)),
                _ => None,
            };
            if let Some(near) = near {
                findings.push(finding(PlantStatus::Warning, near));
            }
        }
        findings
    }
}

/// A metric outside its bounds (`Critical`) or close to one (`Warning`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finding {
    pub metric: Metric,
    pub value: f64,
    pub status: PlantStatus,
    pub side: BoundSide,
    pub bound: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlantStatus {
    Healthy,
    Warning,
    Critical,
    Offline,
    Unknown,
}

/// A plant as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Plant {
    pub id: Uuid,
    pub name: String,
    pub species: Option<String>,
    pub thresholds: Option<Thresholds>,
    pub alert_cooldown_minutes: u32,
    /// Below this battery percentage a device of the plant raises a
    /// `low_battery` alert; 0: never; `null`: PLANTOPS_LOW_BATTERY_PERCENT.
    #[serde(default)]
    pub low_battery_percent: Option<u8>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewPlant {
    pub name: String,
    #[serde(default)]
    pub species: Option<String>,
    #[serde(default)]
    pub thresholds: Option<Thresholds>,
    #[serde(default)]
    pub alert_cooldown_minutes: Option<u32>,
    /// 0–100; 0: no low-battery alerts for this plant; absent or `null`:
    /// the server's PLANTOPS_LOW_BATTERY_PERCENT.
    #[serde(default)]
    pub low_battery_percent: Option<u8>,
}

impl NewPlant {
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Collector::default();
        validate_name(&self.name, &mut errors);
        validate_species(self.species.as_deref(), &mut errors);
        if let Some(t) = &self.thresholds {
            t.validate(&mut errors);
        }
        validate_cooldown(self.alert_cooldown_minutes, &mut errors);
        validate_battery_limit(self.low_battery_percent, &mut errors);
        errors.finish()
    }
}

/// A partial update. `species` and `thresholds` distinguish "absent" (keep)
/// from `null` (clear), hence the double option.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct PlantPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub species: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Thresholds>)]
    pub thresholds: Option<Option<Thresholds>>,
    #[serde(default)]
    pub alert_cooldown_minutes: Option<u32>,
    /// `null` returns the plant to PLANTOPS_LOW_BATTERY_PERCENT.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u8>)]
    pub low_battery_percent: Option<Option<u8>>,
}

impl PlantPatch {
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Collector::default();
        if let Some(name) = &self.name {
            validate_name(name, &mut errors);
        }
        if let Some(species) = &self.species {
            validate_species(species.as_deref(), &mut errors);
        }
        if let Some(Some(t)) = &self.thresholds {
            t.validate(&mut errors);
        }
        validate_cooldown(self.alert_cooldown_minutes, &mut errors);
        validate_battery_limit(self.low_battery_percent.flatten(), &mut errors);
        errors.finish()
    }

    pub fn apply(&self, plant: &mut Plant) {
        if let Some(name) = &self.name {
            plant.name = name.trim().to_string();
        }
        if let Some(species) = &self.species {
            plant.species = normalize_species(species.as_deref());
        }
        if let Some(thresholds) = self.thresholds {
            plant.thresholds = thresholds;
        }
        if let Some(minutes) = self.alert_cooldown_minutes {
            plant.alert_cooldown_minutes = minutes;
        }
        if let Some(limit) = self.low_battery_percent {
            plant.low_battery_percent = limit;
        }
    }
}

fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

pub fn normalize_species(species: Option<&str>) -> Option<String> {
    species
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn validate_name(name: &str, errors: &mut Collector) {
    let length = name.trim().chars().count();
    if length == 0 || length > MAX_NAME_CHARS {
        errors.push(FieldError::new(
            &["body", "name"],
            format!("name must be 1 to {MAX_NAME_CHARS} characters"),
            "value_error.any_str.length",
        ));
    }
}

fn validate_species(species: Option<&str>, errors: &mut Collector) {
    if species.is_some_and(|s| s.chars().count() > MAX_SPECIES_CHARS) {
        errors.push(FieldError::new(
            &["body", "species"],
            format!("species must be at most {MAX_SPECIES_CHARS} characters"),
            "value_error.any_str.max_length",
        ));
    }
}

fn validate_cooldown(minutes: Option<u32>, errors: &mut Collector) {
    if minutes.is_some_and(|m| m > MAX_ALERT_COOLDOWN_MINUTES) {
        errors.push(FieldError::new(
            &["body", "alert_cooldown_minutes"],
            format!("alert_cooldown_minutes must be 0 to {MAX_ALERT_COOLDOWN_MINUTES}"),
            "value_error.number.range",
        ));
    }
}

fn validate_battery_limit(percent: Option<u8>, errors: &mut Collector) {
    if percent.is_some_and(|p| p > 100) {
        errors.push(FieldError::new(
            &["body", "low_battery_percent"],
            "low_battery_percent must be 0 to 100 (0: no low-battery alerts)",
            "value_error.number.range",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soil(min: Option<f64>, max: Option<f64>) -> Thresholds {
        Thresholds {
            soil_moisture: Some(Bounds { min, max }),
            ..Default::default()
        }
    }

    #[test]
    fn min_above_max_is_rejected_with_its_location() {
        let plant = NewPlant {
            name: "Fern".into(),
            species: None,
            thresholds: Some(soil(Some(60.0), Some(20.0))),
            alert_cooldown_minutes: None,
            low_battery_percent: None,
        };
        let errors = plant.validate().unwrap_err();
        assert_eq!(errors.0[0].loc, ["body", "thresholds", "soil_moisture"]);
    }

    #[test]
    fn out_of_range_bounds_and_blank_names_are_rejected() {
        let plant = NewPlant {
            name: "   ".into(),
            species: None,
            thresholds: Some(Thresholds {
                temperature: Some(Bounds {
                    min: Some(-150.0),
                    max: None,
                }),
                ..Default::default()
            }),
            alert_cooldown_minutes: Some(MAX_ALERT_COOLDOWN_MINUTES + 1),
            low_battery_percent: Some(101),
        };
        let locs: Vec<_> = plant
            .validate()
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.loc.join("."))
            .collect();
        assert_eq!(
            locs,
            [
                "body.name",
                "body.thresholds.temperature.min",
                "body.alert_cooldown_minutes",
                "body.low_battery_percent"
            ]
        );
    }

    #[test]
    fn thresholds_the_original_accepted_beyond_sensor_ranges_are_accepted() {
        let plant = NewPlant {
            name: "Cactus".into(),
            species: None,
            thresholds: Some(Thresholds {
                temperature: Some(Bounds {
                    min: Some(-60.0),
                    max: Some(100.0),
                }),
                light_level: Some(Bounds {
                    min: None,
                    max: Some(500_000.0),
                }),
                ..Default::default()
            }),
            alert_cooldown_minutes: None,
            low_battery_percent: Some(0),
        };
        assert!(plant.validate().is_ok());
        // Readings keep their plausibility range.
        assert!(Metric::Temperature.range().1 < 100.0);
    }

    #[test]
    fn judge_distinguishes_critical_warning_and_healthy() {
        let t = soil(Some(20.0), Some(80.0));
        let at = |v: f64| Measurements {
            soil_moisture: Some(v),
            ..Default::default()
        };
        assert_eq!(t.judge(&at(10.0)), PlantStatus::Critical);
        assert_eq!(t.judge(&at(85.0)), PlantStatus::Critical);
        assert_eq!(t.judge(&at(23.0)), PlantStatus::Warning);
        assert_eq!(t.judge(&at(50.0)), PlantStatus::Healthy);
        assert_eq!(t.judge(&Measurements::default()), PlantStatus::Healthy);
    }

    #[test]
    fn patch_distinguishes_absent_from_null() {
        let patch: PlantPatch = serde_json::from_str(r#"{"species": null}"#).unwrap();
        assert_eq!(patch.species, Some(None));
        assert_eq!(patch.thresholds, None);
        let patch: PlantPatch = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(patch.species, None);
    }
}

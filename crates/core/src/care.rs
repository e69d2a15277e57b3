//! Care plans (docs/api.md's CarePlan) and the statistics they are written
//! from.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::reading::Reading;
use crate::Metric;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Watering {
    pub frequency: String,
    pub amount: String,
    /// The next suggested watering day (YYYY-MM-DD), when the model names one.
    pub next_date: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Advice {
    pub current: String,
    pub ideal: String,
    pub recommendation: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CarePlan {
    pub summary: String,
    pub watering: Watering,
    pub light: Advice,
    pub humidity: Advice,
    pub temperature: Option<Advice>,
    pub alerts: Vec<String>,
    pub tips: Vec<String>,
    pub generated_at: DateTime<Utc>,
}

/// The part of a care plan a model writes (we add `generated_at`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelPlan {
    summary: String,
    watering: Watering,
    light: Advice,
    humidity: Advice,
    #[serde(default)]
    temperature: Option<Advice>,
    alerts: Vec<String>,
    tips: Vec<String>,
}

/// The JSON shape models are asked for, as text for the prompt.
pub const CARE_PLAN_SCHEMA: &str = r#"{
  "summary": "string, 1-3 sentences",
  "watering": {"frequency": "string", "amount": "string", "next_date": "YYYY-MM-DD or null"},
  "light": {"current": "string", "ideal": "string", "recommendation": "string"},
  "humidity": {"current": "string", "ideal": "string", "recommendation": "string"},
  "temperature": {"current": "string", "ideal": "string", "recommendation": "string"} or null,
  "alerts": ["string, what needs attention now"],
  "tips": ["string"]
}"#;

/// Why a model's answer is not a care plan; the text goes back to the model
/// in the corrective retry.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPlan(pub String);

impl CarePlan {
    /// Reads a model's answer: a JSON object of the care-plan shape, alone or
    /// inside a Markdown code fence.
    pub fn from_model_output(text: &str, generated_at: DateTime<Utc>) -> Result<Self, InvalidPlan> {
        let json = extract_json_object(text)
            .ok_or_else(|| InvalidPlan("the answer contains no JSON object".into()))?;
        let plan: ModelPlan = serde_json::from_str(json)
            .map_err(|error| InvalidPlan(format!("the JSON does not match the schema: {error}")))?;
        let mut problems = Vec::new();
        let mut require = |field: &str, value: &str| {
            if value.trim().is_empty() {
                problems.push(format!("{field} is empty"));
            }
        };
        require("summary", &plan.summary);
        require("watering.frequency", &plan.watering.frequency);
        require("watering.amount", &plan.watering.amount);
        for (name, advice) in [("light", &plan.light), ("humidity", &plan.humidity)]
            .into_iter()
            .chain(plan.temperature.as_ref().map(|t| ("temperature", t)))
        {
            require(&format!("{name}.recommendation"), &advice.recommendation);
        }
        let next_date = match plan.watering.next_date.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(date) => match NaiveDate::parse_from_str(date, "%Y-%m-%d") {
                Ok(_) => Some(date.to_string()),
                Err(_) => {
                    problems.push(format!("watering.next_date {date:?} is not YYYY-MM-DD"));
                    None
                }
            },
        };
        if !problems.is_empty() {
            return Err(InvalidPlan(problems.join("; ")));
        }
        Ok(CarePlan {
            summary: plan.summary.trim().to_string(),
            watering: Watering {
                next_date,
                ..plan.watering
            },
            light: plan.light,
            humidity: plan.humidity,
            temperature: plan.temperature,
            alerts: plan.alerts,
            tips: plan.tips,
            generated_at,
        })
    }
}

/// The outermost `{ ... }` of a text (models like to add prose or fences).
fn extract_json_object(text: &str) -> Option<&str> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    (end > start).then(|| &text[start..=end])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Rising,
    Falling,
    Stable,
}

/// One metric over a window: what the prompt and the health check report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricTrend {
    pub metric: Metric,
    pub direction: Direction,
    /// Change of the last quarter's mean against the first quarter's, %.
    pub change_percent: f64,
    pub current: f64,
    pub min_24h: f64,
    pub max_24h: f64,
    pub mean_24h: f64,
    pub summary: String,
}

/// A change smaller than this (in % of the first quarter's mean, or of the
/// metric's range for values near zero) counts as stable.
const STABLE_PERCENT: f64 = 5.0;

/// Statistics per metric over `readings` (any order).
pub fn trends(readings: &[Reading]) -> Vec<MetricTrend> {
    let mut ordered: Vec<&Reading> = readings.iter().collect();
    ordered.sort_by_key(|reading| reading.time);
    let mut trends = Vec::new();
    for metric in Metric::ALL {
        let values: Vec<f64> = ordered
            .iter()
            .filter_map(|reading| reading.values.get(metric))
            .collect();
        let Some(&current) = values.last() else {
            continue;
        };
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let quarter = (values.len() / 4).max(1);
        let first = values[..quarter].iter().sum::<f64>() / quarter as f64;
        let last = values[values.len() - quarter..].iter().sum::<f64>() / quarter as f64;
        let (low, high) = metric.range();
        let reference = if first.abs() > (high - low) * 0.01 {
            first.abs()
        } else {
            high - low
        };
        let change_percent = round1((last - first) / reference * 100.0);
        let direction = if change_percent > STABLE_PERCENT {
            Direction::Rising
        } else if change_percent < -STABLE_PERCENT {
            Direction::Falling
        } else {
            Direction::Stable
        };
        let unit = metric.unit();
        let summary = format!(
            "{} {} ({:+.1} %), now {} {unit}, 24 h range {}–{} {unit}",
            metric.as_str(),
            match direction {
                Direction::Rising => "rising",
                Direction::Falling => "falling",
                Direction::Stable => "stable",
            },
            change_percent,
            round1(current),
            round1(min),
            round1(max),
        );
        trends.push(MetricTrend {
            metric,
            direction,
            change_percent,
            current,
            min_24h: min,
            max_24h: max,
            mean_24h: round1(mean),
            summary,
        });
    }
    trends
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::Measurements;
    use chrono::TimeZone;
    use serde_json::json;
    use uuid::Uuid;

    fn plan_json() -> serde_json::Value {
        json!({
            "summary": "Fine.",
            "watering": {"frequency": "weekly", "amount": "300 ml", "next_date": "2026-12-01"},
            "light": {"current": "low", "ideal": "bright", "recommendation": "move to a window"},
            "humidity": {"current": "40 %", "ideal": "60 %", "recommendation": "mist"},
            "temperature": null,
            "alerts": [],
            "tips": ["rotate weekly"]
        })
    }

    #[test]
    fn accepts_a_plan_alone_or_in_a_fence() {
        let at = Utc::now();
        let plain = CarePlan::from_model_output(&plan_json().to_string(), at).unwrap();
        let fenced =
            CarePlan::from_model_output(&format!("Here:\n```json\n{}\n```", plan_json()), at)
                .unwrap();
        assert_eq!(plain, fenced);
        assert_eq!(plain.generated_at, at);
        assert!(plain.temperature.is_none());
    }

    #[test]
    fn names_what_is_wrong() {
        let at = Utc::now();
        let mut missing = plan_json();
        missing.as_object_mut().unwrap().remove("light");
        let error = CarePlan::from_model_output(&missing.to_string(), at).unwrap_err();
        assert!(error.0.contains("light"), "{error}");

        let mut bad_date = plan_json();
        bad_date["watering"]["next_date"] = json!("next Tuesday");
        let error = CarePlan::from_model_output(&bad_date.to_string(), at).unwrap_err();
        assert!(error.0.contains("next_date"), "{error}");

        let mut empty = plan_json();
        empty["summary"] = json!(" ");
        assert!(CarePlan::from_model_output(&empty.to_string(), at).is_err());
        assert!(CarePlan::from_model_output("no JSON here", at).is_err());
    }

    #[test]
    fn trends_report_range_mean_and_direction() {
        let start = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        let readings: Vec<Reading> = [60.0, 58.0, 40.0, 30.0]
            .iter()
            .enumerate()
            .map(|(i, soil)| Reading {
                time: start + chrono::Duration::hours(i as i64),
                device_id: Uuid::nil(),
                plant_id: None,
                values: Measurements {
                    soil_moisture: Some(*soil),
                    temperature: Some(21.0),
                    ..Default::default()
                },
            })
            .rev()
            .collect();
        let trends = trends(&readings);
        assert_eq!(trends.len(), 2, "only measured metrics");
        let soil = &trends[0];
        assert_eq!(soil.metric, Metric::SoilMoisture);
        assert_eq!(soil.direction, Direction::Falling);
        assert_eq!(soil.current, 30.0);
        assert_eq!(
            (soil.min_24h, soil.max_24h, soil.mean_24h),
            (30.0, 60.0, 47.0)
        );
        assert_eq!(soil.change_percent, -50.0);
        assert_eq!(trends[1].direction, Direction::Stable);
    }
}

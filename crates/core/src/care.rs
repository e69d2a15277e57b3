//! Care plans (docs/api.md's CarePlan) and the statistics they are written
//! from.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
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
    /// Reads a model's answer as models really write it: a JSON object of
    /// the care-plan shape, alone, inside a Markdown code fence, after prose
    /// or a `<think>` block, or wrapped in one key. Numbers (and `{min,
    /// max}` ranges) where the schema has text are rendered with their unit,
    /// unknown fields are ignored, `null` optional sections are empty. What
    /// is still refused: no summary, no watering frequency and amount, no
    /// light or humidity recommendation.
    pub fn from_model_output(text: &str, generated_at: DateTime<Utc>) -> Result<Self, InvalidPlan> {
        let plan = find_plan_object(text)
            .ok_or_else(|| InvalidPlan("the answer contains no JSON object".into()))?;
        let mut problems = Vec::new();
        let mut required = |field: &str, value: Option<String>| {
            if value.is_none() {
                problems.push(format!("{field} is missing or empty"));
            }
            value.unwrap_or_default()
        };
        let summary = required("summary", as_text(plan.get("summary"), ""));
        let watering = plan.get("watering").and_then(Value::as_object);
        let frequency = required(
            "watering.frequency",
            watering.and_then(|w| as_text(w.get("frequency"), "")),
        );
        let amount = required(
            "watering.amount",
            watering.and_then(|w| as_text(w.get("amount"), "")),
        );
        let next_date = watering.and_then(|w| as_date(w.get("next_date")));
        let mut advice = |section: &str, unit: &str| {
            let object = plan.get(section).and_then(Value::as_object);
            let recommendation = required(
                &format!("{section}.recommendation"),
                object.and_then(|a| as_text(a.get("recommendation"), "")),
            );
            Advice {
                current: object
                    .and_then(|a| as_text(a.get("current"), unit))
                    .unwrap_or_default(),
                ideal: object
                    .and_then(|a| as_text(a.get("ideal"), unit))
                    .unwrap_or_default(),
                recommendation,
            }
        };
        let light = advice("light", "lux");
        let humidity = advice("humidity", "%");
        if !problems.is_empty() {
            return Err(InvalidPlan(problems.join("; ")));
        }
        // Optional: a temperature section without a recommendation is left out.
        let temperature = plan
            .get("temperature")
            .and_then(Value::as_object)
            .and_then(|t| {
                Some(Advice {
                    recommendation: as_text(t.get("recommendation"), "")?,
                    current: as_text(t.get("current"), "°C").unwrap_or_default(),
                    ideal: as_text(t.get("ideal"), "°C").unwrap_or_default(),
                })
            });
        Ok(CarePlan {
            summary,
            watering: Watering {
                frequency,
                amount,
                next_date,
            },
            light,
            humidity,
            temperature,
            alerts: as_list(plan.get("alerts")),
            tips: as_list(plan.get("tips")),
            generated_at,
        })
    }
}

/// The care-plan object in a model's answer: the first JSON object with a
/// `summary` (or one wrapping such an object under a single key); failing
/// that, the first JSON object at all, so the error names what is missing.
fn find_plan_object(text: &str) -> Option<Map<String, Value>> {
    let text = without_think_blocks(text);
    let mut first = None;
    for (start, _) in text.match_indices('{') {
        let mut values = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
        let Some(Ok(Value::Object(object))) = values.next() else {
            continue;
        };
        if object.contains_key("summary") {
            return Some(object);
        }
        if let [(_, Value::Object(inner))] = object.iter().collect::<Vec<_>>().as_slice() {
            if inner.contains_key("summary") {
                return Some((*inner).clone());
            }
        }
        first.get_or_insert(object);
    }
    first
}

/// Reasoning models (through Ollama, say) think aloud before answering.
fn without_think_blocks(text: &str) -> std::borrow::Cow<'_, str> {
    let mut rest = text;
    let mut kept = String::new();
    while let Some(start) = rest.find("<think>") {
        let Some(end) = rest[start..].find("</think>") else {
            break;
        };
        kept.push_str(&rest[..start]);
        rest = &rest[start + end + "</think>".len()..];
    }
    if kept.is_empty() && rest.len() == text.len() {
        return std::borrow::Cow::Borrowed(text);
    }
    kept.push_str(rest);
    std::borrow::Cow::Owned(kept)
}

/// A number as people write it: no trailing `.0`.
fn number(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => n.to_string(),
    }
}

fn with_unit(value: String, unit: &str) -> String {
    if unit.is_empty() {
        value
    } else {
        format!("{value} {unit}")
    }
}

/// Text where the schema has text: a string, a number with its unit, or a
/// range (`{"min", "max"}` or `[min, max]`) with its unit. Empty is none.
fn as_text(value: Option<&Value>, unit: &str) -> Option<String> {
    let text = match value? {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => with_unit(number(n), unit),
        Value::Object(range) => match (range.get("min"), range.get("max")) {
            (Some(Value::Number(min)), Some(Value::Number(max))) => {
                with_unit(format!("{}–{}", number(min), number(max)), unit)
            }
            _ => return None,
        },
        Value::Array(items) => match items.as_slice() {
            [Value::Number(min), Value::Number(max)] => {
                with_unit(format!("{}–{}", number(min), number(max)), unit)
            }
            _ => return None,
        },
        Value::Bool(_) | Value::Null => return None,
    };
    (!text.is_empty()).then_some(text)
}

/// A list of short texts: a list (strings and numbers kept, anything else
/// dropped), a single string, or nothing.
fn as_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter(|item| item.is_string() || item.is_number())
            .filter_map(|item| as_text(Some(item), ""))
            .collect(),
        Some(single @ Value::String(_)) => as_text(Some(single), "").into_iter().collect(),
        _ => Vec::new(),
    }
}

/// `YYYY-MM-DD`, or the date of an RFC 3339 time; anything else (a date in
/// words) is no date rather than no plan.
fn as_date(value: Option<&Value>) -> Option<String> {
    let raw = value?.as_str()?.trim();
    if let Ok(date) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Some(date.to_string());
    }
    DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|time| time.date_naive().to_string())
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

/// A recommendation from where a metric is heading, before any bound is
/// crossed (the health check's trend rules).
#[derive(Debug, Clone, PartialEq)]
pub struct TrendAdvice {
    pub metric: Metric,
    /// Needs attention within hours, not days.
    pub urgent: bool,
    pub action: String,
}

/// Projections further out than this are not worth a recommendation.
const SOIL_HORIZON_HOURS: f64 = 48.0;
const TEMPERATURE_HORIZON_HOURS: f64 = 24.0;
/// Within this many hours of a bound a recommendation is urgent.
const URGENT_HOURS: f64 = 12.0;

/// Least-squares slope of a metric in units per hour over `readings`
/// (sorted by time); `None` with fewer than three values or under an hour.
fn slope_per_hour(readings: &[&Reading], metric: Metric) -> Option<f64> {
    let points: Vec<(f64, f64)> = readings
        .iter()
        .filter_map(|r| Some((r.time.timestamp() as f64 / 3600.0, r.values.get(metric)?)))
        .collect();
    let (first, last) = (points.first()?, points.last()?);
    if points.len() < 3 || last.0 - first.0 < 1.0 {
        return None;
    }
    let n = points.len() as f64;
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_v = points.iter().map(|p| p.1).sum::<f64>() / n;
    let covariance: f64 = points.iter().map(|p| (p.0 - mean_t) * (p.1 - mean_v)).sum();
    let variance: f64 = points.iter().map(|p| (p.0 - mean_t).powi(2)).sum();
    (variance > 0.0).then(|| covariance / variance)
}

fn hours(value: f64) -> String {
    if value < 1.0 {
        "less than an hour".into()
    } else {
        format!("about {} h", value.round())
    }
}

/// Trend rules: soil moisture falling towards its minimum (or falling
/// noticeably with no minimum set) means water soon; temperature rising
/// towards its maximum means move the plant out of the heat. Pure: the
/// readings of the last day (any order), their [`trends`] (which the health
/// check reports too, so they are computed once) and the plant's thresholds.
pub fn trend_advice(
    readings: &[Reading],
    trends: &[MetricTrend],
    thresholds: Option<&crate::Thresholds>,
) -> Vec<TrendAdvice> {
    let mut ordered: Vec<&Reading> = readings.iter().collect();
    ordered.sort_by_key(|reading| reading.time);
    let trend = |metric| trends.iter().find(|t| t.metric == metric);
    let bounds = |metric| thresholds.and_then(|t| t.get(metric)).unwrap_or_default();
    let mut advice = Vec::new();

    let soil = Metric::SoilMoisture;
    if let (Some(slope), Some(now)) = (slope_per_hour(&ordered, soil), trend(soil)) {
        let falling = slope < 0.0 && now.direction == Direction::Falling;
        let to_min = bounds(soil)
            .min
            .filter(|min| now.current > *min && slope < 0.0)
            .map(|min| (min, (now.current - min) / -slope));
        match to_min {
            Some((min, due)) if due <= SOIL_HORIZON_HOURS => advice.push(TrendAdvice {
                metric: soil,
                urgent: due <= URGENT_HOURS,
                action: format!(
                    "Water soon: soil moisture is falling about {} % a day and reaches its minimum ({min} %) in {}",
                    round1(-slope * 24.0),
                    hours(due)
                ),
            }),
            None if falling && bounds(soil).min.is_none() => advice.push(TrendAdvice {
                metric: soil,
                urgent: false,
                action: format!(
                    "Water soon: soil moisture fell from {} % to {} % over the day",
                    round1(now.max_24h),
                    round1(now.current)
                ),
            }),
            _ => {}
        }
    }

    let temperature = Metric::Temperature;
    if let (Some(slope), Some(now)) = (slope_per_hour(&ordered, temperature), trend(temperature)) {
        let to_max = bounds(temperature)
            .max
            .filter(|max| now.current < *max && slope > 0.0)
            .map(|max| (max, (max - now.current) / slope));
        match to_max {
            Some((max, due)) if due <= TEMPERATURE_HORIZON_HOURS => advice.push(TrendAdvice {
                metric: temperature,
                urgent: due <= URGENT_HOURS,
                action: format!(
                    "Temperature is rising about {} °C an hour and reaches its maximum ({max} °C) in {}: move the plant out of heat and direct sun",
                    round1(slope),
                    hours(due)
                ),
            }),
            None if slope > 0.0
                && now.direction == Direction::Rising
                && bounds(temperature).max.is_none() =>
            {
                advice.push(TrendAdvice {
                    metric: temperature,
                    urgent: false,
                    action: format!(
                        "Temperature is rising ({} °C now, {} °C at the day's low): keep the plant out of heat and direct sun",
                        round1(now.current),
                        round1(now.min_24h)
                    ),
                })
            }
            _ => {}
        }
    }
    advice
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

        // A date in words costs no second model call: the plan stands
        // without a next date.
        let mut date_in_words = plan_json();
        date_in_words["watering"]["next_date"] = json!("next Tuesday");
        let plan = CarePlan::from_model_output(&date_in_words.to_string(), at).unwrap();
        assert_eq!(plan.watering.next_date, None);

        let mut empty = plan_json();
        empty["summary"] = json!(" ");
        assert!(CarePlan::from_model_output(&empty.to_string(), at).is_err());
        assert!(CarePlan::from_model_output("no JSON here", at).is_err());
    }

    fn day_of(metric: Metric, values: &[f64]) -> Vec<Reading> {
        let start = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        let step = 24 * 60 / (values.len() as i64 - 1).max(1);
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mut values = Measurements::default();
                match metric {
                    Metric::SoilMoisture => values.soil_moisture = Some(*v),
                    Metric::Temperature => values.temperature = Some(*v),
                    Metric::Humidity => values.humidity = Some(*v),
                    Metric::LightLevel => values.light_level = Some(*v),
                }
                Reading {
                    time: start + chrono::Duration::minutes(i as i64 * step),
                    device_id: Uuid::nil(),
                    plant_id: None,
                    values,
                }
            })
            .collect()
    }

    fn bounds(metric: Metric, min: Option<f64>, max: Option<f64>) -> crate::Thresholds {
        let mut t = crate::Thresholds::default();
        let b = Some(crate::Bounds { min, max });
        match metric {
            Metric::SoilMoisture => t.soil_moisture = b,
            Metric::Temperature => t.temperature = b,
            _ => unreachable!(),
        }
        t
    }

    #[test]
    fn falling_soil_moisture_says_water_soon_with_the_time_to_its_minimum() {
        // 34 % to 32 % over the day, minimum 30 %: a day to go.
        let day = day_of(Metric::SoilMoisture, &[34.0, 33.5, 33.0, 32.5, 32.0]);
        let advice = trend_advice(
            &day,
            &trends(&day),
            Some(&bounds(Metric::SoilMoisture, Some(30.0), None)),
        );
        assert_eq!(advice.len(), 1);
        assert!(!advice[0].urgent);
        assert_eq!(
            advice[0].action,
            "Water soon: soil moisture is falling about 2 % a day and reaches its minimum (30 %) in about 24 h"
        );
        // With no minimum set, the fall itself is the reason.
        let advice = trend_advice(&day, &trends(&day), None);
        assert_eq!(
            advice[0].action,
            "Water soon: soil moisture fell from 34 % to 32 % over the day"
        );
        // Far from the minimum, or steady: nothing to say.
        assert!(trend_advice(
            &day,
            &trends(&day),
            Some(&bounds(Metric::SoilMoisture, Some(5.0), None))
        )
        .is_empty());
        let steady = day_of(Metric::SoilMoisture, &[40.0, 40.0, 40.1, 40.0, 40.0]);
        assert!(trend_advice(&steady, &trends(&steady), None).is_empty());
    }

    #[test]
    fn rising_temperature_near_its_maximum_is_urgent() {
        // 24 °C to 28 °C over the day, maximum 28.5 °C: a few hours away.
        let day = day_of(Metric::Temperature, &[24.0, 25.0, 26.0, 27.0, 28.0]);
        let advice = trend_advice(
            &day,
            &trends(&day),
            Some(&bounds(Metric::Temperature, None, Some(28.5))),
        );
        assert_eq!(advice.len(), 1);
        assert_eq!(advice[0].metric, Metric::Temperature);
        assert!(advice[0].urgent);
        assert!(
            advice[0]
                .action
                .contains("reaches its maximum (28.5 °C) in about 3 h"),
            "{}",
            advice[0].action
        );
        // Too few readings for a trend: no advice rather than a guess.
        assert!(trend_advice(&day[..2], &trends(&day[..2]), None).is_empty());
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

//! What the model is told about a plant.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use plantops_core::alert::Alert;
use plantops_core::care::{MetricTrend, CARE_PLAN_SCHEMA};
use plantops_core::{Metric, Plant, Reading};

/// Everything a care plan is written from.
pub struct PlantContext<'a> {
    pub plant: &'a Plant,
    pub latest: Option<&'a Reading>,
    /// 24 h statistics per metric.
    pub trends: &'a [MetricTrend],
    /// Recent alerts, newest first.
    pub alerts: &'a [Alert],
    pub now: DateTime<Utc>,
}

pub const SYSTEM_PROMPT: &str = "You are a horticulturist who writes short, practical care plans \
for house plants from sensor data. Answer with one JSON object only, no prose and no code fence.";

/// The user message asking for a care plan.
pub fn care_plan_request(context: &PlantContext<'_>) -> String {
    let mut text = String::from("Write a care plan for this plant.\n\n");
    text.push_str(&plant_facts(context));
    let _ = write!(
        text,
        "\nAnswer with a JSON object of exactly this shape:\n{CARE_PLAN_SCHEMA}\n"
    );
    text
}

pub const HEALTH_NOTE_SYSTEM_PROMPT: &str = "You are a horticulturist. From a plant's sensor data \
and the problems already found, give the owner the one most useful thing to do now, in one or \
two plain sentences. No lists, no JSON, no greeting.";

/// The user message asking for a health check's short recommendation.
pub fn health_note_request(context: &PlantContext<'_>, findings: &[String]) -> String {
    let mut text = String::from("What should the owner of this plant do now?\n\n");
    text.push_str(&plant_facts(context));
    let _ = writeln!(text, "\nFound by the rules:");
    if findings.is_empty() {
        let _ = writeln!(text, "- nothing");
    }
    for finding in findings {
        let _ = writeln!(text, "- {finding}");
    }
    text
}

/// The plant, its thresholds, latest reading, last day and recent alerts.
fn plant_facts(context: &PlantContext<'_>) -> String {
    let plant = context.plant;
    let mut text = String::new();
    let _ = writeln!(text, "Plant: {}", plant.name);
    let _ = writeln!(
        text,
        "Species: {}",
        plant.species.as_deref().unwrap_or("unknown")
    );
    let _ = writeln!(text, "Today: {}", context.now.format("%Y-%m-%d"));

    let _ = writeln!(text, "\nThresholds set by the owner:");
    match &plant.thresholds {
        None => {
            let _ = writeln!(text, "- none");
        }
        Some(thresholds) => {
            for metric in Metric::ALL {
                if let Some(bounds) = thresholds.get(metric) {
                    let show = |v: Option<f64>| v.map_or("-".to_string(), |v| v.to_string());
                    let _ = writeln!(
                        text,
                        "- {}: min {}, max {} {}",
                        metric.as_str(),
                        show(bounds.min),
                        show(bounds.max),
                        metric.unit()
                    );
                }
            }
        }
    }

    let _ = writeln!(text, "\nLatest reading:");
    match context.latest {
        None => {
            let _ = writeln!(text, "- no readings yet");
        }
        Some(reading) => {
            let _ = writeln!(text, "- at {}", reading.time.to_rfc3339());
            for metric in Metric::ALL {
                if let Some(value) = reading.values.get(metric) {
                    let _ = writeln!(text, "- {}: {value} {}", metric.as_str(), metric.unit());
                }
            }
        }
    }

    let _ = writeln!(text, "\nLast 24 hours (min / max / mean / trend):");
    if context.trends.is_empty() {
        let _ = writeln!(text, "- no data");
    }
    for trend in context.trends {
        let _ = writeln!(
            text,
            "- {}: {} / {} / {} {} / {:?} ({:+.1} %)",
            trend.metric.as_str(),
            trend.min_24h,
            trend.max_24h,
            trend.mean_24h,
            trend.metric.unit(),
            trend.direction,
            trend.change_percent
        );
    }

    let _ = writeln!(text, "\nRecent alerts:");
    if context.alerts.is_empty() {
        let _ = writeln!(text, "- none");
    }
    for alert in context.alerts.iter().take(10) {
        let _ = writeln!(
            text,
            "- {}: {}",
            alert.created_at.to_rfc3339(),
            alert.message
        );
    }
    text
}

/// The follow-up when an answer was not a valid care plan.
pub fn correction(problem: &str) -> String {
    format!(
        "That answer cannot be used: {problem}. Reply again with only the JSON object, \
         exactly in the shape asked for."
    )
}

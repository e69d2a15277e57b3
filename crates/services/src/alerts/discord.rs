//! Discord webhook messages (docs/api.md: threshold alerts red, offline
//! yellow, recovery and back-online green).

use plantops_core::alert::{Alert, Severity};

use super::send::Notice;
use serde_json::{json, Value};

const RED: u32 = 0xE7_4C_3C;
const YELLOW: u32 = 0xF1_C4_0F;
const GREEN: u32 = 0x2E_CC_71;

/// The webhook body for an alert; `plant_name` when the alert has a plant.
pub fn message(alert: &Alert, plant_name: Option<&str>) -> Value {
    let plant = plant_name.unwrap_or("unassigned device");
    let title = Notice::Alert { alert, plant_name }.title();
    let color = match alert.kind.severity() {
        Severity::Critical => RED,
        Severity::Warning => YELLOW,
        Severity::Info => GREEN,
    };
    let mut fields = Vec::new();
    if let Some(metric) = alert.metric {
        fields.push(json!({"name": "Metric", "value": metric.as_str(), "inline": true}));
    }
    if let Some(value) = alert.value {
        fields.push(json!({"name": "Value", "value": value.to_string(), "inline": true}));
    }
    if let (Some(threshold), Some(side)) = (alert.threshold, alert.direction) {
        let bound = side.as_str();
        fields.push(
            json!({"name": "Threshold", "value": format!("{bound} {threshold}"), "inline": true}),
        );
    }
    if let Some(device) = alert.device_id {
        fields.push(json!({"name": "Device", "value": device.to_string(), "inline": false}));
    }
    if plant_name.is_some() {
        fields.push(json!({"name": "Plant", "value": plant, "inline": true}));
    }
    json!({
        "username": "PlantOps",
        "embeds": [{
            "title": title,
            "description": alert.message,
            "color": color,
            "timestamp": alert.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "fields": fields,
        }]
    })
}

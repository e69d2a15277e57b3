//! Property tests of the parsers that read what devices and models send:
//! whatever arrives, they answer with a value inside the documented bounds
//! or an error, never a panic, and what is valid survives unchanged.

use chrono::{DateTime, Duration, TimeZone, Utc};
use plantops_core::care::CarePlan;
use plantops_core::telemetry;
use plantops_core::topic::{self, TopicKind};
use plantops_core::Metric;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap()
}

/// JSON values of every kind, numbers included at their extremes.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<f64>()
            .prop_map(|n| serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)),
        any::<i64>().prop_map(|n| json!(n)),
        "\\PC{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Objects with the fields devices send (and some they should not).
fn payload_object() -> impl Strategy<Value = Map<String, Value>> {
    let field = prop_oneof![
        Just("soil_moisture".to_string()),
        Just("temperature".to_string()),
        Just("humidity".to_string()),
        Just("light_level".to_string()),
        Just("light".to_string()),
        Just("timestamp".to_string()),
        "\\PC{0,12}",
    ];
    prop::collection::btree_map(field, json_value(), 0..8).prop_map(|m| m.into_iter().collect())
}

/// Topics and filters around a device's own: the right prefix or a near
/// miss, the device, another, a wildcard or nothing, then one of its
/// topics, a wildcard or a stray tail — so that the exact ones come up as
/// often as the others.
fn around_device_topics(device: &'static str) -> impl Strategy<Value = (String, String, String)> {
    let prefix = prop_oneof![
        3 => Just("devices/"),
        1 => Just("devices"),
        1 => Just("device/"),
        1 => Just(""),
        1 => Just("/devices/"),
        1 => Just("Devices/"),
    ];
    let named = prop_oneof![
        3 => Just(device.to_string()),
        1 => Just(format!("{device}x")),
        1 => Just(device[..4].to_string()),
        1 => Just("+".to_string()),
        1 => Just("#".to_string()),
        1 => Just(String::new()),
        1 => Just(format!("{device}/x")),
    ];
    let suffix = prop_oneof![
        2 => Just("/telemetry".to_string()),
        2 => Just("/heartbeat".to_string()),
        1 => Just("/telemetry/".to_string()),
        1 => Just("/#".to_string()),
        1 => Just("/+".to_string()),
        1 => Just(String::new()),
        1 => Just("/".to_string()),
        1 => "[a-z/+#]{0,8}",
    ];
    (prefix, named, suffix).prop_map(|(p, n, s)| (p.to_string(), n, s))
}

proptest! {
    // Failures are printed with their input; nothing is written to disk.
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_payload_parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..6000)) {
        let _ = telemetry::parse(&bytes, now());
    }

    #[test]
    fn a_parsed_payload_holds_only_plausible_values(object in payload_object()) {
        let bytes = serde_json::to_vec(&object).unwrap();
        if let Ok(parsed) = telemetry::parse(&bytes, now()) {
            let mut any = false;
            for metric in Metric::ALL {
                if let Some(value) = parsed.values.get(metric) {
                    let (low, high) = metric.range();
                    prop_assert!(value.is_finite() && (low..=high).contains(&value), "{metric:?} {value}");
                    any = true;
                }
            }
            prop_assert!(any, "an empty reading was accepted");
            // A device clock may be off, but not into another decade.
            prop_assert!((parsed.time - now()).abs() < Duration::days(3660));
        }
    }

    #[test]
    fn valid_readings_arrive_unchanged(
        soil_share in 0.0..=1.0f64,
        temperature_share in 0.0..=1.0f64,
        offset_secs in -86_400i64..=0,
    ) {
        let within = |metric: Metric, share: f64| {
            let (low, high) = metric.range();
            low + (high - low) * share
        };
        let soil = within(Metric::SoilMoisture, soil_share);
        let temperature = within(Metric::Temperature, temperature_share);
        let time = now() + Duration::seconds(offset_secs);
        let payload = json!({"soil_moisture": soil, "temperature": temperature, "timestamp": time.to_rfc3339()});
        let parsed = telemetry::parse(payload.to_string().as_bytes(), now()).unwrap();
        prop_assert_eq!(parsed.values.get(Metric::SoilMoisture), Some(soil));
        prop_assert_eq!(parsed.values.get(Metric::Temperature), Some(temperature));
        prop_assert_eq!(parsed.time, time);
    }

    #[test]
    fn a_topic_is_a_device_topic_exactly_when_it_names_one(
        (prefix, device, suffix) in around_device_topics("0b6f-1c2d"),
    ) {
        let raw = format!("{prefix}{device}{suffix}");
        let is_one = prefix == "devices/"
            && !device.is_empty()
            && !device.contains('/')
            && (suffix == "/telemetry" || suffix == "/heartbeat");
        let parsed = topic::parse(&raw);
        prop_assert_eq!(parsed.is_some(), is_one, "{}", raw);
        if let Some((named, kind)) = parsed {
            prop_assert_eq!(named, device.as_str());
            let rebuilt = match kind {
                TopicKind::Telemetry => topic::telemetry(named),
                TopicKind::Heartbeat => topic::heartbeat(named),
            };
            prop_assert_eq!(&rebuilt, &raw);
        }
    }

    #[test]
    fn own_filters_never_reach_another_device(
        (prefix, device, suffix) in around_device_topics("0b6f-1c2d"),
    ) {
        let filter = format!("{prefix}{device}{suffix}");
        let own = "devices/0b6f-1c2d/";
        let under_own_prefix = filter.starts_with(own) && filter.len() > own.len();
        prop_assert_eq!(topic::is_own_filter("0b6f-1c2d", &filter), under_own_prefix, "{}", filter);
    }

    #[test]
    fn the_care_plan_reader_never_panics(text in "\\PC{0,3000}") {
        let _ = CarePlan::from_model_output(&text, now());
    }

    #[test]
    fn a_care_plan_is_found_wherever_the_model_puts_it(
        before in "[^{}]{0,200}",
        after in "[^{}]{0,200}",
        summary in "[A-Za-z][A-Za-z ,.]{0,60}",
        fenced in any::<bool>(),
    ) {
        let plan = json!({
            "summary": summary,
            "watering": {"frequency": "weekly", "amount": "200 ml", "next_date": null},
            "light": {"current": "dim", "ideal": "bright", "recommendation": "move it"},
            "humidity": {"current": "40 %", "ideal": "60 %", "recommendation": "mist"},
            "temperature": null, "alerts": [], "tips": ["rotate it"]
        });
        let body = if fenced { format!("```json\n{plan}\n```") } else { plan.to_string() };
        let text = format!("{before}{body}{after}");
        let parsed = CarePlan::from_model_output(&text, now()).unwrap();
        prop_assert_eq!(parsed.summary.trim(), summary.trim());
        prop_assert_eq!(parsed.tips, vec!["rotate it".to_string()]);
    }
}

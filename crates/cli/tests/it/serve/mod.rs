//! `plantops serve` as a user runs it: a process driven over HTTP and MQTT.

use crate::common;

use std::time::Duration;

use crate::common::{closed, connect, device_options, publish_acked, Connack, Ports, Server};
use rumqttc::{Event, Packet, QoS};
use serde_json::json;

mod devices;
mod start_up;

/// A complete production configuration, minus what a case takes away.
fn production_env() -> Vec<(&'static str, String)> {
    vec![
        ("PLANTOPS_ENV", "production".into()),
        (
            "DATABASE_URL",
            "postgres://plantops:pw@127.0.0.1:1/plantops".into(),
        ),
        ("ENCRYPTION_KEY", "ab".repeat(32)),
        ("MQTT_HOST", "mosquitto".into()),
        ("MQTT_USE_TLS", "true".into()),
        ("MQTT_CA_CERT", "/certs/ca.pem".into()),
        (
            "MQTT_BACKEND_PASSWORD",
            "backend-password-0123456789".into(),
        ),
        ("MQTT_DYNSEC_USERNAME", "plantops_admin".into()),
        ("MQTT_DYNSEC_PASSWORD", "dynsec-password-0123456789".into()),
    ]
}

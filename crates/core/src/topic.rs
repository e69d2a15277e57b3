//! MQTT topic names of docs/api.md: `devices/{device_id}/telemetry|heartbeat`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    Telemetry,
    Heartbeat,
}

/// Splits a device topic into the device id it names and its kind.
pub fn parse(topic: &str) -> Option<(&str, TopicKind)> {
    let rest = topic.strip_prefix("devices/")?;
    let (device, kind) = rest.split_once('/')?;
    let kind = match kind {
        "telemetry" => TopicKind::Telemetry,
        "heartbeat" => TopicKind::Heartbeat,
        _ => return None,
    };
    (!device.is_empty()).then_some((device, kind))
}

pub fn telemetry(device_id: &str) -> String {
    format!("devices/{device_id}/telemetry")
}

pub fn heartbeat(device_id: &str) -> String {
    format!("devices/{device_id}/heartbeat")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_the_two_device_topics() {
        assert_eq!(
            parse("devices/abc/telemetry"),
            Some(("abc", TopicKind::Telemetry))
        );
        assert_eq!(
            parse("devices/abc/heartbeat"),
            Some(("abc", TopicKind::Heartbeat))
        );
        assert_eq!(parse("devices//telemetry"), None);
        assert_eq!(parse("devices/abc/telemetry/x"), None);
        assert_eq!(parse("device/abc/telemetry"), None);
    }
}

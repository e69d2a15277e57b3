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

/// The kind of `topic` when it is one of `device_id`'s own two topics.
pub fn own_kind(device_id: &str, topic: &str) -> Option<TopicKind> {
    parse(topic)
        .filter(|(named, _)| *named == device_id)
        .map(|(_, kind)| kind)
}

/// Subscription filters for every device's telemetry and heartbeats.
pub const ALL_TELEMETRY: &str = "devices/+/telemetry";
pub const ALL_HEARTBEATS: &str = "devices/+/heartbeat";

/// The client ids a device may use (docs/api.md): its id, `plantops-` and
/// its id, or its username — never another device's.
pub fn is_own_client_id(client_id: &str, device_id: &str, username: &str) -> bool {
    client_id == device_id
        || client_id == username
        || client_id.strip_prefix("plantops-") == Some(device_id)
}

/// Everything under one device's own prefix: what it may subscribe to.
pub fn device_filter(device_id: &str) -> String {
    format!("devices/{device_id}/#")
}

/// Whether `filter` stays inside the device's own prefix (and names more
/// than the prefix itself).
pub fn is_own_filter(device_id: &str, filter: &str) -> bool {
    filter
        .strip_prefix("devices/")
        .and_then(|rest| rest.strip_prefix(device_id))
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|rest| !rest.is_empty())
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
    fn own_filters_stay_under_the_device_prefix() {
        assert!(is_own_filter("abc", "devices/abc/commands"));
        assert!(is_own_filter("abc", &device_filter("abc")));
        assert!(!is_own_filter("abc", "devices/abc/"));
        assert!(!is_own_filter("abc", "devices/abcd/telemetry"));
        assert!(!is_own_filter("abc", "devices/#"));
        assert!(!is_own_filter("abc", ALL_TELEMETRY));
    }

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

    #[test]
    fn own_topics_name_the_device_itself() {
        assert_eq!(
            own_kind("abc", "devices/abc/heartbeat"),
            Some(TopicKind::Heartbeat)
        );
        assert_eq!(own_kind("abc", "devices/abcd/telemetry"), None);
        assert_eq!(own_kind("abc", "devices/ab/telemetry"), None);
        assert_eq!(own_kind("abc", "devices/abc/commands"), None);
    }
}

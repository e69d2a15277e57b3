//! Parsing of telemetry payloads (docs/api.md, MQTT).

use chrono::{DateTime, Duration, NaiveDateTime, SubsecRound, TimeZone, Utc};
use serde_json::{Map, Value};

use crate::{DeviceVitals, Measurements, Metric};

pub const MAX_PAYLOAD_BYTES: usize = 4096;
/// Timestamps further ahead than this are a device clock gone wrong.
pub const MAX_CLOCK_AHEAD: Duration = Duration::minutes(5);

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload of {0} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("payload is not a JSON object")]
    NotAnObject,
    #[error("{field} is not a number")]
    NotANumber { field: &'static str },
    #[error("{field} = {value} is outside {low}..={high}")]
    OutOfRange {
        field: &'static str,
        value: f64,
        low: f64,
        high: f64,
    },
    #[error("payload carries no measurement")]
    Empty,
}

impl PayloadError {
    /// A short stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            PayloadError::TooLarge(_) => "too_large",
            PayloadError::NotAnObject => "malformed",
            PayloadError::NotANumber { .. } | PayloadError::OutOfRange { .. } => "invalid_value",
            PayloadError::Empty => "empty",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Telemetry {
    pub time: DateTime<Utc>,
    /// Whether the device gave the time; else it is the time of arrival.
    pub timestamped: bool,
    pub values: Measurements,
    /// Battery and signal, when the payload carried them.
    pub vitals: Option<DeviceVitals>,
}

/// Parses a telemetry payload received at `now`. The time is kept to the
/// millisecond, the precision readings are stored and deduplicated at.
pub fn parse(payload: &[u8], now: DateTime<Utc>) -> Result<Telemetry, PayloadError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(PayloadError::TooLarge(payload.len()));
    }
    let object: Map<String, Value> =
        serde_json::from_slice(payload).map_err(|_| PayloadError::NotAnObject)?;
    let mut values = Measurements::default();
    for metric in Metric::ALL {
        let mut raw = object.get(metric.as_str());
        if metric == Metric::LightLevel && raw.is_none_or(Value::is_null) {
            raw = object.get("light");
        }
        values.set(metric, number(metric, raw)?);
    }
    if values.is_empty() {
        return Err(PayloadError::Empty);
    }
    let given = object
        .get("timestamp")
        .and_then(timestamp)
        .filter(|t| plausible(*t, now));
    Ok(Telemetry {
        time: given.unwrap_or(now).trunc_subsecs(3),
        timestamped: given.is_some(),
        values,
        vitals: vitals(&object),
    })
}

/// `battery` (percent, 0–100), `battery_voltage` (volts, 0–10) and `rssi`
/// (dBm, −150–0). Leniently: a value that is not a number in its range is
/// left out, never a reason to drop the reading it came with (firmware in
/// the field sends `rssi` already, not always sensibly).
pub fn vitals(object: &Map<String, Value>) -> Option<DeviceVitals> {
    let field = |name: &str, low: f64, high: f64| {
        object
            .get(name)
            .and_then(Value::as_f64)
            .filter(|v| (low..=high).contains(v))
    };
    DeviceVitals::new(
        field("battery", 0.0, 100.0),
        field("battery_voltage", 0.0, 10.0),
        field("rssi", -150.0, 0.0),
    )
}

/// The vitals of a heartbeat, whose payload may be anything.
pub fn heartbeat_vitals(payload: &[u8]) -> Option<DeviceVitals> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return None;
    }
    let object: Map<String, Value> = serde_json::from_slice(payload).ok()?;
    vitals(&object)
}

fn number(metric: Metric, raw: Option<&Value>) -> Result<Option<f64>, PayloadError> {
    let value = match raw {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        Some(_) => None,
    };
    let field = metric.as_str();
    let value = value
        .filter(|v| v.is_finite())
        .ok_or(PayloadError::NotANumber { field })?;
    let (low, high) = metric.range();
    if !(low..=high).contains(&value) {
        return Err(PayloadError::OutOfRange {
            field,
            value,
            low,
            high,
        });
    }
    Ok(Some(value))
}

/// An RFC 3339 time; one without a zone is taken as UTC (docs/api.md).
pub fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        })
}

/// RFC 3339 (a missing zone means UTC), or Unix seconds or milliseconds.
fn timestamp(raw: &Value) -> Option<DateTime<Utc>> {
    match raw {
        Value::String(s) => parse_time(s),
        Value::Number(n) => {
            let n = n.as_f64()?;
            // Seconds since 1970 pass 1e11 only in the year 5138.
            let millis = if n.abs() >= 1e11 { n } else { n * 1000.0 };
            if !millis.is_finite() || millis.abs() > 1e15 {
                return None;
            }
            Utc.timestamp_millis_opt(millis as i64).single()
        }
        _ => None,
    }
}

fn plausible(time: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    let earliest = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).single();
    earliest.is_some_and(|e| time >= e) && time <= now + MAX_CLOCK_AHEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
    }

    #[test]
    fn accepts_every_field_and_the_light_alias() {
        let t = parse(
            br#"{"timestamp":"2026-06-01T11:59:00Z","soil_moisture":41.5,"temperature":21,"humidity":55,"light":1200,"rssi":-60}"#,
            now(),
        )
        .unwrap();
        assert_eq!(t.time, Utc.with_ymd_and_hms(2026, 6, 1, 11, 59, 0).unwrap());
        assert!(t.timestamped);
        assert_eq!(
            t.values,
            Measurements {
                soil_moisture: Some(41.5),
                temperature: Some(21.0),
                humidity: Some(55.0),
                light_level: Some(1200.0),
            }
        );
    }

    #[test]
    fn battery_and_signal_ride_along_and_never_cost_a_reading() {
        let t = parse(br#"{"temperature":21,"battery":82,"rssi":-67}"#, now()).unwrap();
        let vitals = t.vitals.unwrap();
        assert_eq!(
            (
                vitals.battery_percent,
                vitals.battery_volts,
                vitals.rssi_dbm
            ),
            (Some(82.0), None, Some(-67.0))
        );
        let t = parse(br#"{"temperature":21,"battery_voltage":3.75}"#, now()).unwrap();
        let vitals = t.vitals.unwrap();
        assert_eq!(vitals.battery_volts, Some(3.75));
        assert!(
            (vitals.battery_percent.unwrap() - 50.0).abs() < 1e-9,
            "3.75 V of 3.3–4.2 V"
        );
        let t = parse(
            br#"{"temperature":21,"battery":140,"rssi":"strong"}"#,
            now(),
        )
        .unwrap();
        assert_eq!(t.values.temperature, Some(21.0));
        assert_eq!(t.vitals, None, "nonsense is left out");
        assert_eq!(parse(br#"{"temperature":21}"#, now()).unwrap().vitals, None);
        assert_eq!(
            heartbeat_vitals(br#"{"battery":12}"#).and_then(|v| v.battery_percent),
            Some(12.0)
        );
        assert_eq!(heartbeat_vitals(b"alive"), None);
    }

    #[test]
    fn light_level_wins_over_the_alias() {
        let t = parse(br#"{"light_level":10,"light":20}"#, now()).unwrap();
        assert_eq!(t.values.light_level, Some(10.0));
    }

    #[test]
    fn timestamps_in_seconds_millis_and_without_zone() {
        let expected = Utc.with_ymd_and_hms(2026, 6, 1, 11, 0, 0).unwrap();
        for payload in [
            format!(
                r#"{{"temperature":1,"timestamp":{}}}"#,
                expected.timestamp()
            ),
            format!(
                r#"{{"temperature":1,"timestamp":{}}}"#,
                expected.timestamp_millis()
            ),
            r#"{"temperature":1,"timestamp":"2026-06-01T11:00:00"}"#.to_string(),
            r#"{"temperature":1,"timestamp":"2026-06-01T13:00:00+02:00"}"#.to_string(),
        ] {
            assert_eq!(parse(payload.as_bytes(), now()).unwrap().time, expected);
        }
    }

    #[test]
    fn implausible_or_missing_timestamps_mean_now() {
        for payload in [
            r#"{"temperature":1}"#,
            r#"{"temperature":1,"timestamp":12345}"#,
            r#"{"temperature":1,"timestamp":"2019-12-31T23:59:59Z"}"#,
            r#"{"temperature":1,"timestamp":"2026-06-01T12:06:00Z"}"#,
            r#"{"temperature":1,"timestamp":"yesterday"}"#,
            r#"{"temperature":1,"timestamp":1e300}"#,
        ] {
            let t = parse(payload.as_bytes(), now()).unwrap();
            assert_eq!((t.time, t.timestamped), (now(), false), "{payload}");
        }
    }

    #[test]
    fn refuses_bad_payloads_with_a_reason() {
        let big = format!(r#"{{"temperature":1,"pad":"{}"}}"#, "x".repeat(5000));
        let cases: [(&[u8], &str); 7] = [
            (big.as_bytes(), "too_large"),
            (b"not json", "malformed"),
            (b"[1,2]", "malformed"),
            (br#"{"temperature":"hot"}"#, "invalid_value"),
            (br#"{"humidity":101}"#, "invalid_value"),
            (br#"{"temperature":-51}"#, "invalid_value"),
            (br#"{"status":"online"}"#, "empty"),
        ];
        for (payload, reason) in cases {
            let error = parse(payload, now()).unwrap_err();
            assert_eq!(error.reason(), reason, "{error}");
        }
    }
}

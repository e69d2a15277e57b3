//! A stored sensor reading, in docs/api.md's compatible shape.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::Metric;

/// The measured values of one message; each is optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Measurements {
    /// Soil moisture, % (0–100).
    pub soil_moisture: Option<f64>,
    /// Air temperature, °C.
    pub temperature: Option<f64>,
    /// Relative humidity, %.
    pub humidity: Option<f64>,
    /// Illuminance, lux.
    pub light_level: Option<f64>,
}

impl Measurements {
    pub fn get(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::SoilMoisture => self.soil_moisture,
            Metric::Temperature => self.temperature,
            Metric::Humidity => self.humidity,
            Metric::LightLevel => self.light_level,
        }
    }

    pub fn set(&mut self, metric: Metric, value: Option<f64>) {
        let slot = match metric {
            Metric::SoilMoisture => &mut self.soil_moisture,
            Metric::Temperature => &mut self.temperature,
            Metric::Humidity => &mut self.humidity,
            Metric::LightLevel => &mut self.light_level,
        };
        *slot = value;
    }

    pub fn is_empty(&self) -> bool {
        Metric::ALL.iter().all(|m| self.get(*m).is_none())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
pub struct Reading {
    pub time: DateTime<Utc>,
    pub device_id: Uuid,
    /// The plant the device served when the reading arrived.
    pub plant_id: Option<Uuid>,
    #[serde(flatten)]
    pub values: Measurements,
}

/// Written by hand because a history page is 10,000 readings: the derive's
/// `flatten` goes through serde's map path, and chrono formats a time one
/// character at a time. The output is the same as the derive's.
impl Serialize for Reading {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut reading = serializer.serialize_struct("Reading", 7)?;
        reading.serialize_field("time", &Rfc3339(&self.time))?;
        reading.serialize_field("device_id", &self.device_id)?;
        reading.serialize_field("plant_id", &self.plant_id)?;
        reading.serialize_field("soil_moisture", &self.values.soil_moisture)?;
        reading.serialize_field("temperature", &self.values.temperature)?;
        reading.serialize_field("humidity", &self.values.humidity)?;
        reading.serialize_field("light_level", &self.values.light_level)?;
        reading.end()
    }
}

/// A time as chrono serializes it (RFC 3339, `Z`, fraction only when
/// non-zero), formatted without `fmt` for the common whole-millisecond case.
struct Rfc3339<'a>(&'a DateTime<Utc>);

impl Serialize for Rfc3339<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let time = self.0;
        let nanos = time.nanosecond();
        let year = time.year();
        // Leap seconds, sub-millisecond precision and years outside
        // 0000-9999 take chrono's own path.
        if nanos >= 1_000_000_000 || !nanos.is_multiple_of(1_000_000) || !(0..=9999).contains(&year)
        {
            return time.serialize(serializer);
        }
        let mut text = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, value: u32, digits: usize| {
            let mut value = value;
            for position in (at..at + digits).rev() {
                text[position] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, year.unsigned_abs(), 4);
        put(5, time.month(), 2);
        put(8, time.day(), 2);
        put(11, time.hour(), 2);
        put(14, time.minute(), 2);
        put(17, time.second(), 2);
        let length = if nanos == 0 {
            text[19] = b'Z';
            20
        } else {
            put(20, nanos / 1_000_000, 3);
            24
        };
        // Only ASCII digits and separators were written.
        let text = std::str::from_utf8(&text[..length]).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(text)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone};

    use super::*;

    /// What the derive with `flatten` and chrono's serializer produced.
    fn derived_shape(reading: &Reading) -> serde_json::Value {
        serde_json::json!({
            "time": reading.time,
            "device_id": reading.device_id,
            "plant_id": reading.plant_id,
            "soil_moisture": reading.values.soil_moisture,
            "temperature": reading.values.temperature,
            "humidity": reading.values.humidity,
            "light_level": reading.values.light_level,
        })
    }

    #[test]
    fn serializes_like_chrono_and_the_derive() {
        let at = |y, mo, d, h, mi, s, nanos| {
            Utc.from_utc_datetime(
                &NaiveDate::from_ymd_opt(y, mo, d)
                    .and_then(|date| date.and_hms_nano_opt(h, mi, s, nanos))
                    .expect("valid test time"),
            )
        };
        let times = [
            at(2026, 11, 27, 4, 39, 8, 253_000_000),
            at(2026, 1, 2, 3, 4, 5, 0),
            at(2026, 12, 31, 23, 59, 59, 999_000_000),
            at(2026, 6, 30, 23, 59, 59, 1_500_000_000), // leap second
            at(2026, 3, 4, 5, 6, 7, 120_000),           // microseconds
            at(2026, 3, 4, 5, 6, 7, 123_456_789),       // nanoseconds
            at(7, 3, 4, 5, 6, 7, 40_000_000),
            at(12345, 3, 4, 5, 6, 7, 0),
            at(-44, 3, 15, 12, 0, 0, 0),
        ];
        for time in times {
            let reading = Reading {
                time,
                device_id: Uuid::from_u128(0x34a2283c_6108_437e_b872_e6a5fc3b4af4),
                plant_id: (time.nanosecond() == 0).then(|| Uuid::from_u128(7)),
                values: Measurements {
                    soil_moisture: Some(31.6),
                    temperature: Some(0.1 + 0.2),
                    humidity: None,
                    light_level: Some(60000.0),
                },
            };
            let written = serde_json::to_value(&reading).expect("serializable");
            assert_eq!(written, derived_shape(&reading), "{time:?}");
            let back: Reading = serde_json::from_value(written).expect("readable again");
            assert_eq!(back, reading);
        }
    }
}

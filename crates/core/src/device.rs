//! Sensor devices: identity, MAC address rules and connectivity status.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::validation::{Collector, FieldError};
use crate::ValidationErrors;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    /// Registered, never heard from.
    Provisioning,
    Online,
    Offline,
    Error,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Provisioning => "provisioning",
            DeviceStatus::Online => "online",
            DeviceStatus::Offline => "offline",
            DeviceStatus::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            DeviceStatus::Provisioning,
            DeviceStatus::Online,
            DeviceStatus::Offline,
            DeviceStatus::Error,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// A device as the API shows it. The password hash lives only in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Device {
    pub id: Uuid,
    pub mac_address: String,
    pub mqtt_username: String,
    pub plant_id: Option<Uuid>,
    pub status: DeviceStatus,
    pub firmware_version: Option<String>,
    pub sensor_types: Option<Vec<String>>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// How it was registered (`window`: while the enrollment window was
    /// open); absent for devices registered before accounts existed.
    #[serde(default)]
    pub enrollment: Option<crate::account::Enrollment>,
    /// Battery and signal from the last message that carried them.
    #[serde(default)]
    pub vitals: Option<DeviceVitals>,
    /// When the device last sent them.
    #[serde(default)]
    pub vitals_at: Option<DateTime<Utc>>,
}

/// A battery-powered device's battery and radio signal (docs/devices.md):
/// telemetry or heartbeat fields `battery` (percent), `battery_voltage`
/// (volts) and `rssi` (dBm).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceVitals {
    /// Percent, 0–100: as sent, or estimated from the voltage of one
    /// lithium-ion cell (3.3 V = 0 %, 4.2 V = 100 %) when only that came.
    pub battery_percent: Option<f64>,
    pub battery_volts: Option<f64>,
    /// Received signal strength, dBm (−30 is excellent, −90 poor).
    pub rssi_dbm: Option<f64>,
}

impl DeviceVitals {
    /// Lithium-ion cell voltage at empty and full, for the estimate.
    const CELL_EMPTY_VOLTS: f64 = 3.3;
    const CELL_FULL_VOLTS: f64 = 4.2;

    pub fn new(percent: Option<f64>, volts: Option<f64>, rssi_dbm: Option<f64>) -> Option<Self> {
        if percent.is_none() && volts.is_none() && rssi_dbm.is_none() {
            return None;
        }
        let estimated = volts.map(|v| {
            ((v - Self::CELL_EMPTY_VOLTS) / (Self::CELL_FULL_VOLTS - Self::CELL_EMPTY_VOLTS)
                * 100.0)
                .clamp(0.0, 100.0)
        });
        Some(Self {
            battery_percent: percent.or(estimated),
            battery_volts: volts,
            rssi_dbm,
        })
    }
}

/// A MAC address in canonical form: lower-case hex octets joined by `:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MacAddress(String);

impl MacAddress {
    /// Accepts six hex octets separated by `:` or `-` (one separator style).
    pub fn parse(input: &str) -> Option<Self> {
        let input = input.trim();
        let separator = if input.contains(':') { ':' } else { '-' };
        let octets: Vec<&str> = input.split(separator).collect();
        let valid = octets.len() == 6
            && octets
                .iter()
                .all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()));
        valid.then(|| Self(octets.join(":").to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub const MAX_FIRMWARE_CHARS: usize = 64;
pub const MAX_SENSOR_TYPES: usize = 16;
pub const MAX_SENSOR_TYPE_CHARS: usize = 32;

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct RegisterDevice {
    /// Six hex octets, `:` or `-` separated.
    pub mac_address: String,
    #[serde(default)]
    pub firmware_version: Option<String>,
    #[serde(default)]
    pub sensor_types: Option<Vec<String>>,
}

impl RegisterDevice {
    /// Checks the request and returns the canonical MAC.
    pub fn validate(&self) -> Result<MacAddress, ValidationErrors> {
        let mut errors = Collector::default();
        if self
            .firmware_version
            .as_ref()
            .is_some_and(|f| f.chars().count() > MAX_FIRMWARE_CHARS)
        {
            errors.push(FieldError::new(
                &["body", "firmware_version"],
                format!("firmware_version must be at most {MAX_FIRMWARE_CHARS} characters"),
                "value_error.any_str.max_length",
            ));
        }
        if let Some(types) = &self.sensor_types {
            let too_long = types
                .iter()
                .any(|t| t.is_empty() || t.chars().count() > MAX_SENSOR_TYPE_CHARS);
            if types.len() > MAX_SENSOR_TYPES || too_long {
                errors.push(FieldError::new(
                    &["body", "sensor_types"],
                    format!(
                        "sensor_types takes at most {MAX_SENSOR_TYPES} names of 1 to {MAX_SENSOR_TYPE_CHARS} characters"
                    ),
                    "value_error.list",
                ));
            }
        }
        match MacAddress::parse(&self.mac_address) {
            Some(mac) => errors.finish().map(|()| mac),
            None => {
                errors.push(FieldError::new(
                    &["body", "mac_address"],
                    "mac_address must be six hex octets separated by ':' or '-'",
                    "value_error.mac_address",
                ));
                Err(errors.into_errors())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses_are_normalised_to_lower_case_colons() {
        let mac = MacAddress::parse("AA-BB-CC-0d-0E-ff").unwrap();
        assert_eq!(mac.as_str(), "aa:bb:cc:0d:0e:ff");
        assert_eq!(
            MacAddress::parse("aa:bb:cc:dd:ee:ff").unwrap().as_str(),
            "aa:bb:cc:dd:ee:ff"
        );
    }

    #[test]
    fn malformed_mac_addresses_are_refused() {
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:gg",
            "aabbccddeeff",
            "aa:bb-cc:dd:ee:ff",
            "a:bb:cc:dd:ee:fff",
        ] {
            assert!(MacAddress::parse(bad).is_none(), "{bad} accepted");
        }
    }
}

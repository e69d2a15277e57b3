//! One suite, run against SQLite and against the real PostgreSQL server.

use chrono::{DateTime, Duration, TimeZone, Utc};
use plantops_core::account::{ApiToken, Enrollment, EnrollmentKey, Role, Scope, User};
use plantops_core::alert::{Alert, AlertKind, Delivery, MetricState, Severity};
use plantops_core::plant::BoundSide;
use plantops_core::Metric;
use plantops_core::{
    Bounds, Device, DeviceStatus, DeviceVitals, Measurements, Plant, Reading, Thresholds,
};
use plantops_store::{
    AccountChange, AlertFilter, Backend, BatteryLow, DeliveryUpdate, DynStore, Page, PlantOverview,
    Presence, Registration, StateChange, StoredChannel, VitalsSeen,
};
use plantops_testkit::TestDb;
use uuid::Uuid;

mod accounts;
mod alerts;
mod care;
mod cluster;
mod devices;
mod plants;
mod readings;
mod schema;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

fn plant(name: &str, created_at: DateTime<Utc>) -> Plant {
    Plant {
        id: Uuid::new_v4(),
        name: name.to_string(),
        species: Some("Ficus".into()),
        thresholds: Some(Thresholds {
            soil_moisture: Some(Bounds {
                min: Some(20.0),
                max: Some(80.0),
            }),
            ..Default::default()
        }),
        alert_cooldown_minutes: 30,
        low_battery_percent: None,
        created_at,
        updated_at: created_at,
    }
}

fn device(mac: &str, created_at: DateTime<Utc>) -> Device {
    Device {
        id: Uuid::new_v4(),
        mac_address: mac.to_string(),
        mqtt_username: format!("device_{}", &Uuid::new_v4().simple().to_string()[..8]),
        plant_id: None,
        status: DeviceStatus::Provisioning,
        firmware_version: Some("1.2.3".into()),
        sensor_types: Some(vec!["soil_moisture".into(), "temperature".into()]),
        last_seen_at: None,
        created_at,
        enrollment: Some(Enrollment::Window),
        vitals: None,
        vitals_at: None,
    }
}

async fn registered(store: &DynStore, mac: &str) -> Device {
    match store
        .register_device(&device(mac, t0()), "hash")
        .await
        .unwrap()
    {
        Registration::Created(d) => d,
        Registration::Existing(_) => panic!("{mac} already registered"),
    }
}

fn reading(device_id: Uuid, plant_id: Option<Uuid>, time: DateTime<Utc>, soil: f64) -> Reading {
    Reading {
        time,
        device_id,
        plant_id,
        values: Measurements {
            soil_moisture: Some(soil),
            temperature: Some(20.0),
            ..Default::default()
        },
    }
}

//! Long-term history: with PLANTOPS_RETENTION_DAYS, raw readings older than
//! the retention are pruned, and a chart over a longer range answers from
//! the hourly rollups for the pruned part and from the readings for the
//! rest.

use chrono::{Duration, DurationRound, Utc};
use plantops_core::{Device, DeviceStatus, Measurements, Plant, Reading};
use plantops_store::Registration;
use uuid::Uuid;

use crate::common::{Ports, Server};

#[tokio::test]
async fn a_chart_longer_than_the_retention_answers_from_the_hourly_rollups() {
    let data = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", data.path().join("plantops.db").display());
    let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
    drop(
        sqlx::SqlitePool::connect_with(options.create_if_missing(true))
            .await
            .unwrap(),
    );
    let store = plantops_store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let now = Utc::now().duration_trunc(Duration::hours(1)).unwrap();
    let plant = Plant {
        id: Uuid::new_v4(),
        name: "Olive".into(),
        species: None,
        thresholds: None,
        alert_cooldown_minutes: 60,
        low_battery_percent: None,
        created_at: now - Duration::days(100),
        updated_at: now - Duration::days(100),
    };
    store.insert_plant(&plant).await.unwrap();
    let device = Device {
        id: Uuid::new_v4(),
        mac_address: "aa:bb:cc:00:00:91".into(),
        mqtt_username: "device_0000aa91".into(),
        plant_id: None,
        status: DeviceStatus::Provisioning,
        firmware_version: None,
        sensor_types: None,
        last_seen_at: None,
        created_at: now - Duration::days(100),
        enrollment: None,
        vitals: None,
        vitals_at: None,
    };
    let Registration::Created(device) = store.register_device(&device, "hash").await.unwrap()
    else {
        panic!("registered twice")
    };
    // An hour 60 days ago (soil 10, 20, 30, 40) and an hour 2 days ago (50, 60).
    let reading = |time, soil| Reading {
        time,
        device_id: device.id,
        plant_id: Some(plant.id),
        values: Measurements {
            soil_moisture: Some(soil),
            ..Default::default()
        },
    };
    let old = now - Duration::days(60);
    let recent = now - Duration::days(2);
    let readings: Vec<Reading> = [10.0, 20.0, 30.0, 40.0]
        .iter()
        .enumerate()
        .map(|(i, soil)| reading(old + Duration::minutes(10 * i as i64), *soil))
        .chain([
            reading(recent, 50.0),
            reading(recent + Duration::minutes(5), 60.0),
        ])
        .collect();
    store.commit_batch(&readings, &[]).await.unwrap();
    drop(store);

    let env = [("PLANTOPS_RETENTION_DAYS", "30")];
    let server = Server::start(data.path(), &Ports::free(), &env).await;
    let store = plantops_store::connect(&url).await.unwrap();
    // The leader's retention job rolls up, then prunes, at start.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while store.count_readings().await.unwrap() != 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old readings were not pruned"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let path = format!("/api/plants/{}/series?hours=2160", plant.id);
    let (status, series) = server.get(&path).await;
    assert_eq!(status, 200, "{series}");
    let bucket = series["bucket_seconds"].as_i64().unwrap();
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 2, "{series}");
    let (rolled, raw) = (&points[0], &points[1]);
    let bucket_of = |t: chrono::DateTime<Utc>| t.timestamp() / bucket * bucket;
    let time = |point: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(point["time"].as_str().unwrap())
            .unwrap()
            .timestamp()
    };
    assert_eq!(time(rolled), bucket_of(old), "{series}");
    assert_eq!(time(raw), bucket_of(recent), "{series}");
    assert_eq!(rolled["count"], 4);
    assert_eq!(rolled["soil_moisture"]["min"], 10.0);
    assert_eq!(rolled["soil_moisture"]["avg"], 25.0);
    assert_eq!(rolled["soil_moisture"]["max"], 40.0);
    assert_eq!(raw["count"], 2);
    assert_eq!(raw["soil_moisture"]["avg"], 55.0);

    // Past the API's year: refused, naming the limit.
    let (status, problem) = server
        .get(&format!("/api/plants/{}/series?hours=9000", plant.id))
        .await;
    assert_eq!(status, 422, "{problem}");
}

//! `plantops backup` / `plantops restore` round trips on both backends: the
//! data after a restore is the data at backup time, and a bad backup file is
//! refused with the current database left as it was.

use crate::common;

use std::path::Path;

use chrono::{DateTime, Duration, TimeZone, Utc};
use plantops_core::{Bounds, Device, DeviceStatus, Measurements, Plant, Reading, Thresholds};
use plantops_store::{DynStore, Page, Registration};
use plantops_testkit::TestDb;
use uuid::Uuid;

plantops_testkit::for_each_backend!(
    restore_brings_back_exactly_the_backed_up_data,
    a_file_that_is_not_a_backup_is_refused_and_nothing_changes,
    an_update_applies_the_new_migrations_and_keeps_the_data,
);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 8, 0, 0).unwrap()
}

async fn populate(store: &DynStore, plants: usize, readings_per_plant: i64) {
    for p in 0..plants {
        let plant = Plant {
            id: Uuid::new_v4(),
            name: format!("Plant {p}"),
            species: Some("Monstera".into()),
            thresholds: Some(Thresholds {
                soil_moisture: Some(Bounds {
                    min: Some(25.0),
                    max: Some(75.0),
                }),
                ..Default::default()
            }),
            alert_cooldown_minutes: 45,
            created_at: t0(),
            updated_at: t0(),
        };
        store.insert_plant(&plant).await.unwrap();
        let device = Device {
            id: Uuid::new_v4(),
            mac_address: mac(),
            mqtt_username: format!("device_{}", &Uuid::new_v4().simple().to_string()[..8]),
            plant_id: None,
            status: DeviceStatus::Provisioning,
            firmware_version: Some("2.0.1".into()),
            sensor_types: None,
            last_seen_at: None,
            created_at: t0(),
            enrollment: None,
        };
        let Registration::Created(device) = store.register_device(&device, "hash").await.unwrap()
        else {
            panic!("registered twice");
        };
        store
            .assign_device(device.id, Some(plant.id))
            .await
            .unwrap();
        let readings: Vec<Reading> = (0..readings_per_plant)
            .map(|i| Reading {
                time: t0() + Duration::minutes(i),
                device_id: device.id,
                plant_id: Some(plant.id),
                values: Measurements {
                    soil_moisture: Some(40.0 + (i % 7) as f64),
                    temperature: Some(21.5),
                    humidity: Some(55.0),
                    light_level: Some(1200.0 + i as f64),
                },
            })
            .collect();
        store.commit_batch(&readings, &[]).await.unwrap();
    }
    store
        .put_setting("notifications", Some("{\"sealed\":\"abc\"}"))
        .await
        .unwrap();
}

fn mac() -> String {
    let bytes = Uuid::new_v4();
    let octets: Vec<String> = bytes.as_bytes()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    octets.join(":")
}

/// Everything a user would miss, as one comparable value.
async fn snapshot(store: &DynStore) -> serde_json::Value {
    let page = Page {
        limit: 1000,
        offset: 0,
    };
    let (plants, _) = store.list_plants(page).await.unwrap();
    let mut history = Vec::new();
    for plant in &plants {
        let readings = store
            .plant_history(plant.id, t0() - Duration::days(1), 100_000)
            .await
            .unwrap();
        history.push(serde_json::to_value(readings).unwrap());
    }
    let (devices, _) = store.list_devices(page, None).await.unwrap();
    serde_json::json!({
        "plants": plants,
        "devices": devices,
        "history": history,
        "readings": store.count_readings().await.unwrap(),
        "setting": store.get_setting("notifications").await.unwrap(),
    })
}

async fn plantops(db: &TestDb, args: &[&str], file: &Path) -> std::process::Output {
    common::plantops()
        .args(args)
        .arg(file)
        .env("DATABASE_URL", db.url())
        .output()
        .await
        .unwrap()
}

async fn restore_brings_back_exactly_the_backed_up_data(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plantops.backup");
    let store = db.store().await;
    populate(&store, 3, 500).await;
    let before = snapshot(&store).await;
    assert_eq!(before["readings"], 1500);

    let backup = plantops(db, &["backup", "--output"], &file).await;
    assert!(backup.status.success(), "{backup:?}");
    assert!(std::fs::metadata(&file).unwrap().len() > 0);

    // Life goes on after the backup: a plant deleted, readings added.
    let victim = before["plants"][0]["id"].as_str().unwrap().parse().unwrap();
    store.delete_plant(victim).await.unwrap();
    populate(&store, 1, 10).await;
    assert_ne!(snapshot(&store).await, before);
    drop(store);

    let restore = plantops(db, &["restore"], &file).await;
    assert!(restore.status.success(), "{restore:?}");
    if matches!(db, TestDb::Sqlite { .. }) {
        // The replaced database is moved aside, not deleted.
        let stdout = String::from_utf8_lossy(&restore.stdout);
        assert!(stdout.contains("previous database was kept"), "{stdout}");
    }
    let store = db.store().await;
    assert_eq!(snapshot(&store).await, before);
}

async fn a_file_that_is_not_a_backup_is_refused_and_nothing_changes(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let store = db.store().await;
    populate(&store, 1, 20).await;
    let before = snapshot(&store).await;
    drop(store);

    let bogus = dir.path().join("notes.txt");
    std::fs::write(&bogus, "this is not a database").unwrap();
    let restore = plantops(db, &["restore"], &bogus).await;
    assert!(!restore.status.success());
    let stderr = String::from_utf8_lossy(&restore.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let missing = plantops(db, &["restore"], &dir.path().join("absent.backup")).await;
    assert!(!missing.status.success());

    let store = db.store().await;
    assert_eq!(snapshot(&store).await, before);
}

/// The update docs/upgrading.md describes, on a database the previous
/// version left (every migration but the newest): back up, start the new
/// binary, which applies the newest migration; the data from before is all
/// there, and the backup restores it.
async fn an_update_applies_the_new_migrations_and_keeps_the_data(db: &TestDb) {
    let sqlite = matches!(db, TestDb::Sqlite { .. });
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../store/migrations")
        .join(if sqlite { "sqlite" } else { "postgres" });
    let mut previous = sqlx::migrate::Migrator::new(migrations).await.unwrap();
    let newest = previous.iter().map(|m| m.version).max().unwrap();
    let older: Vec<_> = previous
        .iter()
        .filter(|m| m.version < newest)
        .cloned()
        .collect();
    previous.migrations = older.into();
    if sqlite {
        let options: sqlx::sqlite::SqliteConnectOptions = db.url().parse().unwrap();
        let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true))
            .await
            .unwrap();
        previous.run(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
        previous.run(&pool).await.unwrap();
        pool.close().await;
    }
    let store = plantops_store::connect(db.url()).await.unwrap();
    assert!(
        !store.is_migrated().await.unwrap(),
        "the newest migration is not applied yet"
    );
    populate(&store, 2, 50).await;
    // No sealed secret: the server would check it against its key.
    store.put_setting("notifications", None).await.unwrap();
    let before = snapshot(&store).await;
    drop(store);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("before-upgrade.backup");
    let backup = plantops(db, &["backup", "--output"], &file).await;
    assert!(backup.status.success(), "{backup:?}");

    let data = tempfile::tempdir().unwrap();
    let env = [
        ("DATABASE_URL", db.url()),
        ("ENCRYPTION_KEY", "12".repeat(32).leak()),
    ];
    let mut server = common::Server::start(data.path(), &common::Ports::free(), &env).await;
    let store = plantops_store::connect(db.url()).await.unwrap();
    assert!(
        store.is_migrated().await.unwrap(),
        "the new binary migrated the database"
    );
    let after = snapshot(&store).await;
    assert_eq!(after["plants"], before["plants"]);
    assert_eq!(after["history"], before["history"]);
    assert_eq!(after["readings"], before["readings"]);
    let plant_id = before["plants"][0]["id"].as_str().unwrap();
    let (status, plant) = server.get(&format!("/api/plants/{plant_id}")).await;
    assert_eq!(
        (status, &plant["name"]),
        (200, &before["plants"][0]["name"])
    );
    server.kill().await;
    drop(store);

    // Going back means restoring the backup taken before.
    let restore = plantops(db, &["restore"], &file).await;
    assert!(restore.status.success(), "{restore:?}");
    let store = plantops_store::connect(db.url()).await.unwrap();
    assert!(
        !store.is_migrated().await.unwrap(),
        "the backup holds the old schema"
    );
    assert_eq!(snapshot(&store).await["readings"], before["readings"]);
}

//! `plantops backup` / `plantops restore` round trips on both backends: the
//! data after a restore is the data at backup time, and a bad backup file is
//! refused with the current database left as it was.

use crate::common;

use std::path::Path;

use chrono::{DateTime, Duration, TimeZone, Utc};
use plantops_core::alert::AlertKind;
use plantops_core::{Bounds, Device, DeviceStatus, Measurements, Plant, Reading, Thresholds};
use plantops_services::ops::backups::{self, BackupPlan, BackupStatus};
use plantops_store::{AlertFilter, DynStore, Page, Registration};
use plantops_testkit::TestDb;
use uuid::Uuid;

plantops_testkit::for_each_backend!(
    restore_brings_back_exactly_the_backed_up_data,
    a_file_that_is_not_a_backup_is_refused_and_nothing_changes,
    an_update_applies_the_new_migrations_and_keeps_the_data,
    backups_are_verified_recorded_and_pruned,
    a_failing_backup_raises_one_alert_until_a_backup_succeeds,
    a_backup_that_restores_to_other_counts_is_not_verified,
    the_backup_service_takes_a_missed_backup_at_start,
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
            low_battery_percent: None,
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
            vitals: None,
            vitals_at: None,
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
    let (devices, _) = store.list_devices(page, None).await.unwrap();
    let mut snapshot = data_snapshot(store).await;
    snapshot["devices"] = serde_json::to_value(devices).unwrap();
    snapshot
}

/// Plants, their readings and a setting: what this binary's store reads
/// the same from the previous version's schema too (devices have gained
/// columns since).
async fn data_snapshot(store: &DynStore) -> serde_json::Value {
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
    serde_json::json!({
        "plants": plants,
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
    let before = data_snapshot(&store).await;
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
    let after = data_snapshot(&store).await;
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
    assert_eq!(data_snapshot(&store).await["readings"], before["readings"]);
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// What Mosquitto's dynamic-security plugin keeps: the devices' accounts.
fn broker_file(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("dynamic-security.json");
    let accounts = serde_json::json!({
        "clients": [{"username": "device_0a1b2c3d", "password": "c2FsdA==", "roles": []}],
        "groups": [],
        "roles": [],
    });
    std::fs::write(&file, accounts.to_string()).unwrap();
    file
}

/// `plantops backup --status`, the backup service's health check.
async fn backup_status(db: &TestDb) -> std::process::Output {
    common::plantops()
        .args(["backup", "--status"])
        .env("DATABASE_URL", db.url())
        .output()
        .await
        .unwrap()
}

fn plan(dir: &Path, broker: Option<std::path::PathBuf>) -> BackupPlan {
    BackupPlan {
        schedule: "0 3 * * *".parse().unwrap(),
        keep: 2,
        dir: dir.to_path_buf(),
        broker_file: broker,
    }
}

async fn backups_are_verified_recorded_and_pruned(db: &TestDb) {
    let store = db.store().await;
    populate(&store, 2, 100).await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("backups");
    let broker = broker_file(work.path());

    for day in 1..=3 {
        let taken = backups::take(db.url(), &dir, Some(&broker), t0() + Duration::days(day))
            .await
            .unwrap();
        assert_eq!(taken.rows["readings"], 200);
        assert_eq!(taken.rows["plants"], 2);
        assert!(taken.bytes > 0);
        assert_eq!(
            std::fs::read(taken.broker_file.unwrap()).unwrap(),
            std::fs::read(&broker).unwrap()
        );
    }
    let extension = if matches!(db, TestDb::Sqlite { .. }) {
        "sqlite3"
    } else {
        "dump"
    };
    let removed = backups::prune(&dir, 2).unwrap();
    assert_eq!(removed.len(), 2, "the oldest backup and its broker file");
    assert_eq!(
        file_names(&dir),
        [
            "dynamic-security-20260503T080000Z.json".to_string(),
            "dynamic-security-20260504T080000Z.json".to_string(),
            format!("plantops-20260503T080000Z.{extension}"),
            format!("plantops-20260504T080000Z.{extension}"),
        ]
    );
    if cfg!(unix) {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(format!("plantops-20260504T080000Z.{extension}")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "a backup holds password hashes");
    }

    // A scheduled run: taken now, the oldest pruned, the outcome recorded
    // for /api/health and /metrics.
    let raised = backups::run_once(&store, db.url(), &plan(&dir, Some(broker)))
        .await
        .unwrap();
    assert!(raised.is_none());
    let status = BackupStatus::read(&store).await.unwrap();
    let last = status.last_success.expect("recorded");
    assert!(status.last_failure.is_none());
    let total: i64 = 2 + 2 + 200 + 1; // plants, devices, readings, the notifications setting
    assert!(last.rows > total, "{} rows counted", last.rows);
    let names = file_names(&dir);
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.contains(&last.file), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("20260503")), "{names:?}");
}

async fn a_failing_backup_raises_one_alert_until_a_backup_succeeds(db: &TestDb) {
    let store = db.store().await;
    populate(&store, 1, 10).await;
    let work = tempfile::tempdir().unwrap();
    // A regular file where the backup directory should be.
    let blocked = work.path().join("backups");
    std::fs::write(&blocked, "not a directory").unwrap();
    let failing = plan(&blocked.join("nightly"), None);
    let working = plan(&work.path().join("ok"), None);
    let backup_alerts = || async {
        let filter = AlertFilter {
            kind: Some(AlertKind::BackupFailed),
            ..Default::default()
        };
        let page = Page {
            limit: 100,
            offset: 0,
        };
        store.list_alerts(&filter, page).await.unwrap().0
    };

    let alert = backups::run_once(&store, db.url(), &failing)
        .await
        .unwrap()
        .expect("the first failure is an alert");
    assert_eq!(alert.kind, AlertKind::BackupFailed);
    assert!(
        alert.message.contains("cannot create the backup directory"),
        "{}",
        alert.message
    );
    let again = backups::run_once(&store, db.url(), &failing).await.unwrap();
    assert!(again.is_none(), "a run of failures is one alert");
    assert_eq!(backup_alerts().await.len(), 1);
    let status = BackupStatus::read(&store).await.unwrap();
    assert!(status.last_success.is_none());
    assert!(status
        .last_failure
        .unwrap()
        .error
        .contains("backup directory"));
    let health_check = backup_status(db).await;
    assert!(!health_check.status.success(), "{health_check:?}");
    let stdout = String::from_utf8_lossy(&health_check.stdout);
    assert!(stdout.contains("last failed backup"), "{stdout}");

    assert!(backups::run_once(&store, db.url(), &working)
        .await
        .unwrap()
        .is_none());
    assert!(BackupStatus::read(&store)
        .await
        .unwrap()
        .last_success
        .is_some());
    let health_check = backup_status(db).await;
    assert!(health_check.status.success(), "{health_check:?}");
    // Failing again after a success is news again.
    let alert = backups::run_once(&store, db.url(), &failing).await.unwrap();
    assert!(alert.is_some(), "a new failure after a success");
    assert_eq!(backup_alerts().await.len(), 2);
}

async fn a_backup_that_restores_to_other_counts_is_not_verified(db: &TestDb) {
    let store = db.store().await;
    populate(&store, 1, 30).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plantops.backup");
    let target = backups::database::Target::of(db.url()).unwrap();
    let mut rows = target.write(&file).await.unwrap();
    assert_eq!(rows["readings"], 30);
    target.verify(&file, &rows).await.unwrap();

    // Counts the file does not restore to: as if rows were lost on the way.
    *rows.get_mut("readings").unwrap() += 1;
    let error = format!("{:#}", target.verify(&file, &rows).await.unwrap_err());
    assert!(error.contains("readings: 31 rows, 30 restored"), "{error}");
    // The scratch copy is gone either way.
    assert_eq!(file_names(dir.path()), ["plantops.backup"]);

    let bogus = dir.path().join("bogus.backup");
    std::fs::write(&bogus, "not a backup").unwrap();
    assert!(target.verify(&bogus, &rows).await.is_err());
}

/// `plantops backup --scheduled`, the production stack's backup service:
/// no backup on record, so one is taken at start, with the broker's
/// accounts beside it, and reported through the database.
async fn the_backup_service_takes_a_missed_backup_at_start(db: &TestDb) {
    let store = db.store().await;
    populate(&store, 1, 10).await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("backups");
    let broker = broker_file(work.path());
    let mut service = common::plantops()
        .args(["backup", "--scheduled"])
        .env("DATABASE_URL", db.url())
        .env("PLANTOPS_BACKUP_SCHEDULE", "30 2 * * 0")
        .env("PLANTOPS_BACKUP_DIR", &dir)
        .env("PLANTOPS_BACKUP_BROKER_FILE", &broker)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let last = loop {
        if let Some(last) = BackupStatus::read(&store).await.unwrap().last_success {
            break last;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no backup recorded within 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    service.kill().await.unwrap();
    let names = file_names(&dir);
    assert!(names.contains(&last.file), "{names:?}");
    let stamp = &last.file["plantops-".len().."plantops-".len() + 16];
    assert!(
        names.contains(&format!("dynamic-security-{stamp}.json")),
        "{names:?}"
    );

    let refused = common::plantops()
        .args(["backup", "--scheduled"])
        .env("DATABASE_URL", db.url())
        .env("PLANTOPS_BACKUP_SCHEDULE", "0 3 * *")
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("PLANTOPS_BACKUP_SCHEDULE"), "{stderr}");
    assert!(stderr.contains("five"), "{stderr}");
}

/// The one binary with PLANTOPS_BACKUP_SCHEDULE: the backup the schedule
/// missed (there is none yet) is taken at start, verified, and shown in
/// /api/health and /metrics.
#[tokio::test]
async fn serve_takes_scheduled_backups_and_reports_them() {
    let data = tempfile::tempdir().unwrap();
    let env = [("PLANTOPS_BACKUP_SCHEDULE", "0 3 * * *")];
    let server = common::Server::start(data.path(), &common::Ports::free(), &env).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let last = loop {
        let (status, health) = server.get("/api/health").await;
        assert_eq!(status, 200);
        let last = &health["components"]["backup"]["last_success"];
        if !last.is_null() {
            break last.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no backup within 60 s: {health}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let file = data
        .path()
        .join("backups")
        .join(last["file"].as_str().unwrap());
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        last["bytes"].as_u64().unwrap()
    );
    let at: DateTime<Utc> = serde_json::from_value(last["at"].clone()).unwrap();
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(&format!(
            "plantops_backup_last_success_timestamp_seconds {}",
            at.timestamp()
        )),
        "{metrics}"
    );
}

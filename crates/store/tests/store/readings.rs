//! Readings: batches, vitals, history, series, rollups, retention.

use super::*;

plantops_testkit::for_each_backend!(
    batches_are_idempotent_and_mark_devices_seen,
    history_is_newest_first_and_bounded,
    series_aggregates_per_bucket,
    retention_prunes_only_old_readings,
    battery_and_signal_are_kept_and_a_low_battery_judged_once,
    hourly_rollups_answer_like_the_readings_and_outlive_them,
);

async fn batches_are_idempotent_and_mark_devices_seen(db: &TestDb) {
    let store = db.store().await;
    let d = registered(&store, "aa:bb:cc:dd:ee:05").await;
    let batch: Vec<_> = (0..3)
        .map(|i| reading(d.id, None, t0() + Duration::seconds(i), 30.0 + i as f64))
        .collect();
    let seen = [Presence {
        device_id: d.id,
        seen_at: t0() + Duration::seconds(2),
        vitals: None,
    }];
    let first = store.commit_batch(&batch, &seen).await.unwrap();
    assert_eq!(first.inserted, 3);
    assert_eq!(
        first.came_online,
        vec![(d.id, DeviceStatus::Provisioning)],
        "the first message brings a new device online"
    );
    let again = store.commit_batch(&batch, &seen).await.unwrap();
    assert_eq!(again.inserted, 0);
    assert!(again.came_online.is_empty(), "already online");
    assert_eq!(store.count_readings().await.unwrap(), 3);
    // What a batch met at its keys, to tell a resend from a conflict.
    let keys: Vec<_> = batch[1..]
        .iter()
        .map(|r| (r.device_id, r.time))
        .chain([(d.id, t0() + Duration::seconds(60))])
        .collect();
    let mut held = store.readings_at(&keys).await.unwrap();
    held.sort_by_key(|r| r.time);
    assert_eq!(held, batch[1..]);

    let stored = store.get_device(d.id).await.unwrap().unwrap();
    assert_eq!(stored.status, DeviceStatus::Online);
    assert_eq!(stored.last_seen_at, Some(t0() + Duration::seconds(2)));
    // An older presence never moves last_seen back.
    let older = [Presence {
        device_id: d.id,
        seen_at: t0(),
        vitals: None,
    }];
    store.commit_batch(&[], &older).await.unwrap();
    let stored = store.get_device(d.id).await.unwrap().unwrap();
    assert_eq!(stored.last_seen_at, Some(t0() + Duration::seconds(2)));

    // Silent since before its last message: stays online.
    let silent = store.mark_silent_offline(t0()).await.unwrap();
    assert!(silent.is_empty());
    let silent = store
        .mark_silent_offline(t0() + Duration::seconds(3))
        .await
        .unwrap();
    assert_eq!(silent.len(), 1);
    assert_eq!(
        (silent[0].device_id, silent[0].last_seen_at),
        (d.id, Some(t0() + Duration::seconds(2)))
    );
    assert!(
        store
            .mark_silent_offline(t0() + Duration::seconds(3))
            .await
            .unwrap()
            .is_empty(),
        "marked once"
    );
    let back = store.commit_batch(&[], &seen).await.unwrap();
    assert_eq!(back.came_online, vec![(d.id, DeviceStatus::Offline)]);

    let latest = store.latest_device_reading(d.id).await.unwrap().unwrap();
    assert_eq!(latest, batch[2]);
    assert!(store
        .latest_device_reading(Uuid::new_v4())
        .await
        .unwrap()
        .is_none());
}

async fn history_is_newest_first_and_bounded(db: &TestDb) {
    let store = db.store().await;
    let p = plant("Aloe", t0());
    store.insert_plant(&p).await.unwrap();
    let d = Uuid::new_v4();
    let batch: Vec<_> = (0..10)
        .map(|i| reading(d, Some(p.id), t0() + Duration::minutes(i), i as f64))
        .collect();
    store.commit_batch(&batch, &[]).await.unwrap();

    let history = store
        .plant_history(p.id, t0() + Duration::minutes(5), 3)
        .await
        .unwrap();
    let soil: Vec<_> = history.iter().map(|r| r.values.soil_moisture).collect();
    assert_eq!(soil, vec![Some(9.0), Some(8.0), Some(7.0)]);
    let all = store.plant_history(p.id, t0(), 100).await.unwrap();
    assert_eq!(all.len(), 10);
    let latest = store
        .latest_plant_readings(&[p.id, Uuid::new_v4()])
        .await
        .unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[&p.id], batch[9]);

    // Every bit of a value and every field come back as stored.
    let mut exact = reading(d, Some(p.id), t0() + Duration::hours(1), 41.123456789012345);
    exact.values.temperature = Some(0.1 + 0.2);
    exact.values.humidity = None;
    exact.values.light_level = Some(1e-7);
    exact.time += Duration::milliseconds(687);
    store.commit_batch(&[exact.clone()], &[]).await.unwrap();
    let newest = store.plant_history(p.id, t0(), 1).await.unwrap();
    assert_eq!(newest, vec![exact]);
}

async fn series_aggregates_per_bucket(db: &TestDb) {
    let store = db.store().await;
    let p = Uuid::new_v4();
    let d = Uuid::new_v4();
    // Two buckets of 5 minutes: soil 0..4 then 5..9.
    let batch: Vec<_> = (0..10)
        .map(|i| reading(d, Some(p), t0() + Duration::minutes(i), i as f64))
        .collect();
    store.commit_batch(&batch, &[]).await.unwrap();
    let points = store
        .plant_series(p, t0(), t0() + Duration::minutes(10), 300)
        .await
        .unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(points[0].time, t0());
    assert_eq!(points[1].time, t0() + Duration::minutes(5));
    assert_eq!(points[0].count, 5);
    let soil = points[1].soil_moisture.unwrap();
    assert_eq!((soil.min, soil.avg, soil.max), (5.0, 7.0, 9.0));
    assert!(points[0].humidity.is_none());
    let temp = points[0].temperature.unwrap();
    assert_eq!(temp.avg, 20.0);
}

async fn retention_prunes_only_old_readings(db: &TestDb) {
    let store = db.store().await;
    let d = Uuid::new_v4();
    let batch: Vec<_> = (0..5)
        .map(|i| reading(d, None, t0() + Duration::days(i), i as f64))
        .collect();
    store.commit_batch(&batch, &[]).await.unwrap();
    assert_eq!(
        store
            .prune_readings(t0() + Duration::days(3))
            .await
            .unwrap(),
        3
    );
    assert_eq!(store.count_readings().await.unwrap(), 2);
    let latest = store.latest_device_reading(d).await.unwrap().unwrap();
    assert_eq!(latest, batch[4]);
}

/// Battery and signal travel with a batch's presences and are stored in
/// its transaction; a battery falling below its limit is reported once.
async fn battery_and_signal_are_kept_and_a_low_battery_judged_once(db: &TestDb) {
    let store = db.store().await;
    let pot = plant("Pothos", t0());
    store.insert_plant(&pot).await.unwrap();
    let device = registered(&store, "aa:bb:cc:dd:ee:71").await;
    store.assign_device(device.id, Some(pot.id)).await.unwrap();
    let limit = Some(15.0);
    let at = |minutes: i64| t0() + Duration::minutes(minutes);
    let battery = |percent: f64| DeviceVitals::new(Some(percent), None, None).unwrap();
    // Commits a batch that brings `vitals` for `device_id`; returns the
    // batteries it found newly low.
    let record = |device_id: Uuid, vitals: DeviceVitals, minute: i64| {
        let store = store.clone();
        async move {
            let seen = [Presence {
                device_id,
                seen_at: at(minute),
                vitals: Some(VitalsSeen {
                    vitals,
                    at: at(minute),
                    low_below: limit,
                }),
            }];
            store.commit_batch(&[], &seen).await.unwrap().low_battery
        }
    };

    assert_eq!(record(Uuid::new_v4(), battery(5.0), 0).await, []);
    let full = DeviceVitals::new(Some(50.0), Some(3.8), Some(-61.0)).unwrap();
    assert_eq!(record(device.id, full, 1).await, []);
    let stored = store.get_device(device.id).await.unwrap().unwrap();
    assert_eq!(stored.vitals, Some(full));
    assert_eq!(stored.vitals_at, Some(at(1)));

    // Falling below the limit alerts once; wobbling near it does not again.
    let steps = [
        (12.0, true),
        (10.0, false),
        (18.0, false),
        (14.0, false),
        (21.0, false),
        (9.0, true),
    ];
    for (minute, (percent, expected)) in (2..).zip(steps) {
        let low = record(device.id, battery(percent), minute).await;
        assert_eq!(!low.is_empty(), expected, "{percent} %");
        if expected {
            assert_eq!(
                low,
                [BatteryLow {
                    device_id: device.id,
                    plant_id: Some(pot.id),
                    percent,
                    limit: 15.0
                }]
            );
        }
    }
    // Only the signal: the battery keeps its last value.
    let signal = DeviceVitals::new(None, None, Some(-80.0)).unwrap();
    record(device.id, signal, 20).await;
    // A late message from before: ignored.
    record(device.id, battery(99.0), 10).await;
    let vitals = store
        .get_device(device.id)
        .await
        .unwrap()
        .unwrap()
        .vitals
        .unwrap();
    assert_eq!(vitals.battery_percent, Some(9.0));
    assert_eq!(vitals.battery_volts, Some(3.8));
    assert_eq!(vitals.rssi_dbm, Some(-80.0));

    // The plant's own limit comes first; 0 never alerts.
    let mut own = pot.clone();
    own.low_battery_percent = Some(50);
    store.update_plant(&own).await.unwrap();
    assert_eq!(
        store
            .get_plant(pot.id)
            .await
            .unwrap()
            .unwrap()
            .low_battery_percent,
        Some(50)
    );
    record(device.id, battery(90.0), 30).await;
    let low = record(device.id, battery(40.0), 31).await;
    assert_eq!(low.iter().map(|l| l.limit).collect::<Vec<_>>(), [50.0]);
    own.low_battery_percent = Some(0);
    store.update_plant(&own).await.unwrap();
    record(device.id, battery(90.0), 32).await;
    assert_eq!(record(device.id, battery(1.0), 33).await, []);
}

async fn hourly_rollups_answer_like_the_readings_and_outlive_them(db: &TestDb) {
    let store = db.store().await;
    let p = Uuid::new_v4();
    let d = Uuid::new_v4();
    // Three hours, a reading every 10 minutes: soil 0..17.
    let batch: Vec<_> = (0..18)
        .map(|i| reading(d, Some(p), t0() + Duration::minutes(10 * i), i as f64))
        .collect();
    store.commit_batch(&batch, &[]).await.unwrap();
    let (from, to) = (t0(), t0() + Duration::hours(3));
    assert_eq!(store.refresh_rollups(p, from, to).await.unwrap(), 3);
    for bucket in [3600, 7200, 86400] {
        let raw = store.plant_series(p, from, to, bucket).await.unwrap();
        let rolled = store.rollup_series(p, from, to, bucket).await.unwrap();
        assert_eq!(rolled, raw, "{bucket} s buckets");
    }
    let hours = store.rollup_series(p, from, to, 3600).await.unwrap();
    let soil = hours[1].soil_moisture.unwrap();
    assert_eq!(
        (hours[1].count, soil.min, soil.avg, soil.max),
        (6, 6.0, 8.5, 11.0)
    );

    // A late reading in the first hour: refreshing that hour takes it in.
    let late = reading(d, Some(p), t0() + Duration::minutes(5), 100.0);
    store.commit_batch(&[late], &[]).await.unwrap();
    let (minute, after) = (t0() + Duration::minutes(5), t0() + Duration::minutes(6));
    store.refresh_rollups(p, minute, after).await.unwrap();
    let first = store.rollup_series(p, from, to, 3600).await.unwrap()[0].clone();
    assert_eq!((first.count, first.soil_moisture.unwrap().max), (7, 100.0));

    // Raw readings pruned: the rollups still answer.
    store.prune_readings(to).await.unwrap();
    assert!(store
        .plant_series(p, from, to, 3600)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.rollup_series(p, from, to, 3600).await.unwrap().len(),
        3
    );
    // A refresh of hours whose readings are gone keeps their rollups.
    store.refresh_rollups(p, from, to).await.unwrap();
    assert_eq!(
        store.rollup_series(p, from, to, 3600).await.unwrap().len(),
        3
    );
    // Rollups have a retention of their own.
    assert_eq!(
        store
            .prune_rollups(t0() + Duration::hours(1))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.rollup_series(p, from, to, 3600).await.unwrap().len(),
        2
    );
}

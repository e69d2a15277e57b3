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

plantops_testkit::for_each_backend!(
    migrations_are_recorded_and_harmless_twice,
    concurrent_migrations_apply_once,
    plants_round_trip_and_list_newest_first,
    deleting_a_plant_unassigns_devices_and_keeps_readings,
    registration_is_unique_per_mac,
    device_credentials_and_password_rotation,
    assignment_needs_an_existing_plant,
    devices_filter_by_status_and_paginate,
    batches_are_idempotent_and_mark_devices_seen,
    battery_and_signal_are_kept_and_a_low_battery_judged_once,
    history_is_newest_first_and_bounded,
    series_aggregates_per_bucket,
    hourly_rollups_answer_like_the_readings_and_outlive_them,
    retention_prunes_only_old_readings,
    alerts_states_and_outbox,
    each_channel_has_its_own_outbox_from_its_severity_up,
    judging_a_plant_is_serialised,
    readings_not_judged_are_found_past_the_high_water_mark,
    one_instance_leads_at_a_time,
    live_events_reach_every_instance,
    instances_are_known_until_forgotten,
    settings_round_trip,
    care_plans_keep_their_history,
    accounts_keep_one_admin_at_least,
    sessions_end_with_logout_password_change_and_expiry,
    api_tokens_belong_to_their_user,
    enrollment_keys_count_their_uses,
);

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

async fn migrations_are_recorded_and_harmless_twice(db: &TestDb) {
    let store = plantops_store::connect(db.url()).await.unwrap();
    assert!(!store.is_migrated().await.unwrap());
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert!(store.is_migrated().await.unwrap());
}

async fn concurrent_migrations_apply_once(db: &TestDb) {
    let a = plantops_store::connect(db.url()).await.unwrap();
    let b = plantops_store::connect(db.url()).await.unwrap();
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    // SQLite serialises the two through its write lock; the loser may see
    // the winner's work and fail cleanly, never corrupt the schema.
    if a.backend() == plantops_store::Backend::Postgres {
        ra.unwrap();
        rb.unwrap();
    }
    a.migrate().await.unwrap();
    assert!(b.is_migrated().await.unwrap());
    a.insert_plant(&plant("after", t0())).await.unwrap();
}

async fn plants_round_trip_and_list_newest_first(db: &TestDb) {
    let store = db.store().await;
    let older = plant("Older", t0());
    let newer = plant("Newer", t0() + Duration::minutes(1));
    store.insert_plant(&older).await.unwrap();
    store.insert_plant(&newer).await.unwrap();

    assert_eq!(
        store.get_plant(older.id).await.unwrap(),
        Some(older.clone())
    );
    let list = |limit, offset| store.list_plants(Page { limit, offset });
    assert_eq!(list(1, 0).await.unwrap(), (vec![newer.clone()], 2));
    assert_eq!(list(10, 1).await.unwrap(), (vec![older.clone()], 2));
    // Past the end: no plants, still the total.
    assert_eq!(list(10, 5).await.unwrap(), (vec![], 2));

    let mut changed = older.clone();
    changed.name = "Renamed".into();
    changed.thresholds = None;
    changed.updated_at = t0() + Duration::hours(1);
    assert!(store.update_plant(&changed).await.unwrap());
    assert_eq!(store.get_plant(older.id).await.unwrap(), Some(changed));
    assert!(!store.update_plant(&plant("ghost", t0())).await.unwrap());
    assert_eq!(store.get_plant(Uuid::new_v4()).await.unwrap(), None);

    // The plant list: each plant with its newest reading and device count.
    let changed = store.get_plant(older.id).await.unwrap().unwrap();
    let d = registered(&store, "aa:bb:cc:dd:ee:02").await;
    let e = registered(&store, "aa:bb:cc:dd:ee:03").await;
    store.assign_device(d.id, Some(older.id)).await.unwrap();
    store.assign_device(e.id, Some(older.id)).await.unwrap();
    let newest = reading(d.id, Some(older.id), t0() + Duration::minutes(5), 41.5);
    store
        .commit_batch(
            &[reading(e.id, Some(older.id), t0(), 40.0), newest.clone()],
            &[],
        )
        .await
        .unwrap();
    let (overview, total) = store
        .plant_overview(Page {
            limit: 10,
            offset: 0,
        })
        .await
        .unwrap();
    assert_eq!(total, 2);
    assert_eq!(
        overview,
        vec![
            PlantOverview {
                plant: newer.clone(),
                latest: None,
                device_count: 0
            },
            PlantOverview {
                plant: changed,
                latest: Some(newest),
                device_count: 2
            },
        ]
    );
    let (rest, total) = store
        .plant_overview(Page {
            limit: 10,
            offset: 1,
        })
        .await
        .unwrap();
    assert_eq!((rest.len(), total), (1, 2));
}

async fn deleting_a_plant_unassigns_devices_and_keeps_readings(db: &TestDb) {
    let store = db.store().await;
    let p = plant("Basil", t0());
    store.insert_plant(&p).await.unwrap();
    let d = registered(&store, "aa:bb:cc:dd:ee:01").await;
    assert!(store.assign_device(d.id, Some(p.id)).await.unwrap());
    store
        .commit_batch(&[reading(d.id, Some(p.id), t0(), 40.0)], &[])
        .await
        .unwrap();
    assert_eq!(
        store.device_counts(&[p.id]).await.unwrap().get(&p.id),
        Some(&1)
    );

    assert!(store.delete_plant(p.id).await.unwrap());
    assert!(!store.delete_plant(p.id).await.unwrap());
    assert_eq!(
        store.get_device(d.id).await.unwrap().unwrap().plant_id,
        None
    );
    assert_eq!(store.count_readings().await.unwrap(), 1);
}

async fn registration_is_unique_per_mac(db: &TestDb) {
    let store = db.store().await;
    let first = registered(&store, "aa:bb:cc:dd:ee:02").await;
    let again = device("aa:bb:cc:dd:ee:02", t0() + Duration::minutes(5));
    match store.register_device(&again, "other").await.unwrap() {
        Registration::Existing(existing) => assert_eq!(existing, first),
        Registration::Created(_) => panic!("MAC registered twice"),
    }
    let (devices, total) = store
        .list_devices(
            Page {
                limit: 10,
                offset: 0,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!((devices, total), (vec![first], 1));
}

async fn device_credentials_and_password_rotation(db: &TestDb) {
    let store = db.store().await;
    let d = registered(&store, "aa:bb:cc:dd:ee:03").await;
    let creds = store
        .device_credentials(&d.mqtt_username)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (creds.device_id, creds.password_hash.as_str()),
        (d.id, "hash")
    );
    assert!(store.set_device_password(d.id, "new").await.unwrap());
    let creds = store
        .device_credentials(&d.mqtt_username)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(creds.password_hash, "new");
    assert!(store.delete_device(d.id).await.unwrap());
    assert!(store
        .device_credentials(&d.mqtt_username)
        .await
        .unwrap()
        .is_none());
    assert!(!store.delete_device(d.id).await.unwrap());
}

async fn assignment_needs_an_existing_plant(db: &TestDb) {
    let store = db.store().await;
    let d = registered(&store, "aa:bb:cc:dd:ee:04").await;
    assert!(!store
        .assign_device(d.id, Some(Uuid::new_v4()))
        .await
        .unwrap());
    assert!(!store.assign_device(Uuid::new_v4(), None).await.unwrap());
    let p = plant("Mint", t0());
    store.insert_plant(&p).await.unwrap();
    assert!(store.assign_device(d.id, Some(p.id)).await.unwrap());
    assert_eq!(store.plant_devices(p.id).await.unwrap().len(), 1);
    let map = store.device_plants(&[d.id, Uuid::new_v4()]).await.unwrap();
    assert_eq!(map.len(), 1);
    assert_eq!(map[&d.id], Some(p.id));
    assert!(store.assign_device(d.id, None).await.unwrap());
    assert!(store.plant_devices(p.id).await.unwrap().is_empty());
}

async fn devices_filter_by_status_and_paginate(db: &TestDb) {
    let store = db.store().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let d = device(&format!("aa:bb:cc:dd:ee:1{i}"), t0() + Duration::minutes(i));
        store.register_device(&d, "h").await.unwrap();
        ids.push(d.id);
    }
    // Two devices heard from once, then silent: the offline check marks them.
    let seen: Vec<Presence> = ids[..2]
        .iter()
        .map(|&device_id| Presence {
            device_id,
            seen_at: t0(),
            vitals: None,
        })
        .collect();
    store.commit_batch(&[], &seen).await.unwrap();
    assert_eq!(
        store
            .mark_silent_offline(t0() + Duration::seconds(1))
            .await
            .unwrap()
            .len(),
        2
    );
    let page = Page {
        limit: 100,
        offset: 0,
    };
    let (offline, total) = store
        .list_devices(page, Some(DeviceStatus::Offline))
        .await
        .unwrap();
    assert_eq!(total, 2);
    assert_eq!(
        offline.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![ids[1], ids[0]]
    );
    let all_offline = store
        .all_devices(Some(DeviceStatus::Offline))
        .await
        .unwrap();
    assert_eq!(all_offline, offline);
    assert_eq!(store.all_devices(None).await.unwrap().len(), 5);
    let (page2, total) = store
        .list_devices(
            Page {
                limit: 2,
                offset: 2,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(total, 5);
    assert_eq!(
        page2.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![ids[2], ids[1]]
    );
    // A page past the end still tells the filtered total.
    let past_end = Page {
        limit: 10,
        offset: 50,
    };
    let (none, total) = store
        .list_devices(past_end, Some(DeviceStatus::Offline))
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(total, 2);
}

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

fn alert(plant_id: Option<Uuid>, kind: AlertKind, created_at: DateTime<Utc>) -> Alert {
    Alert {
        id: Uuid::new_v4(),
        plant_id,
        device_id: None,
        kind,
        metric: Some(Metric::SoilMoisture),
        value: Some(12.5),
        threshold: Some(20.0),
        direction: Some(BoundSide::Min),
        message: "Soil moisture 12.5 % is below 20 %".into(),
        created_at,
        delivery: Delivery::Pending,
        acknowledged_at: None,
    }
}

async fn alerts_states_and_outbox(db: &TestDb) {
    let store = db.store().await;
    let p = plant("Thyme", t0());
    store.insert_plant(&p).await.unwrap();
    let state = MetricState {
        breached: Some(BoundSide::Min),
        notified: true,
        last_notified_at: Some(t0()),
        changed_at: Some(t0()),
    };
    let first = alert(Some(p.id), AlertKind::Threshold, t0());
    let second = alert(
        Some(p.id),
        AlertKind::Recovered,
        t0() + Duration::minutes(5),
    );
    let other = alert(None, AlertKind::DeviceOffline, t0() + Duration::minutes(1));
    let change = StateChange {
        plant_id: p.id,
        metric: Metric::SoilMoisture,
        state,
    };
    store
        .record_alerts(&[change], std::slice::from_ref(&first))
        .await
        .unwrap();
    store
        .record_alerts(&[], &[second.clone(), other.clone()])
        .await
        .unwrap();
    assert_eq!(
        store.metric_states(p.id).await.unwrap()[&Metric::SoilMoisture],
        state
    );
    let cleared = StateChange {
        state: MetricState {
            breached: None,
            notified: false,
            ..state
        },
        ..change
    };
    store.record_alerts(&[cleared], &[]).await.unwrap();
    assert_eq!(
        store.metric_states(p.id).await.unwrap()[&Metric::SoilMoisture],
        cleared.state
    );

    let page = Page {
        limit: 10,
        offset: 0,
    };
    let (all, total) = store
        .list_alerts(&AlertFilter::default(), page)
        .await
        .unwrap();
    assert_eq!(total, 3);
    assert_eq!(all, vec![second.clone(), other.clone(), first.clone()]);
    let by_plant = AlertFilter {
        plant_id: Some(p.id),
        ..Default::default()
    };
    assert_eq!(store.list_alerts(&by_plant, page).await.unwrap().1, 2);
    let past_end = Page {
        limit: 10,
        offset: 50,
    };
    let (none, total) = store.list_alerts(&by_plant, past_end).await.unwrap();
    assert!(none.is_empty());
    assert_eq!(total, 2);
    let by_kind = AlertFilter {
        kind: Some(AlertKind::DeviceOffline),
        ..Default::default()
    };
    assert_eq!(
        store.list_alerts(&by_kind, page).await.unwrap().0,
        vec![other.clone()]
    );
    let since = AlertFilter {
        since: Some(t0() + Duration::minutes(2)),
        ..Default::default()
    };
    assert_eq!(
        store.list_alerts(&since, page).await.unwrap().0,
        vec![second.clone()]
    );

    let acked = store
        .acknowledge_alert(first.id, t0() + Duration::hours(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acked.acknowledged_at, Some(t0() + Duration::hours(1)));
    let again = store
        .acknowledge_alert(first.id, t0() + Duration::hours(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.acknowledged_at, acked.acknowledged_at,
        "first acknowledgement kept"
    );
    assert!(store
        .acknowledge_alert(Uuid::new_v4(), t0())
        .await
        .unwrap()
        .is_none());

    let claim = |now, lease| {
        let store = store.clone();
        async move {
            store
                .claim_due_alerts(now, lease, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|q| (q.alert.id, q.attempts))
                .collect::<Vec<_>>()
        }
    };
    let at = |minutes| t0() + Duration::minutes(minutes);
    assert_eq!(
        claim(at(2), at(3)).await,
        vec![(first.id, 0), (other.id, 0)]
    );
    assert!(
        claim(at(2), at(3)).await.is_empty(),
        "claimed alerts are leased to their notifier"
    );
    store
        .update_delivery(&DeliveryUpdate {
            id: first.id,
            delivery: Delivery::Pending,
            attempts: 1,
            next_attempt_at: t0() + Duration::hours(1),
        })
        .await
        .unwrap();
    store
        .update_delivery(&DeliveryUpdate {
            id: other.id,
            delivery: Delivery::Sent,
            attempts: 1,
            next_attempt_at: t0(),
        })
        .await
        .unwrap();
    assert_eq!(claim(at(10), at(11)).await, vec![(second.id, 0)]);
    // The notifier that claimed `second` never reported back: after its
    // lease another takes it, along with `first`'s retry.
    assert_eq!(
        claim(at(120), at(121)).await,
        vec![(first.id, 1), (second.id, 0)]
    );
}

/// What the evaluator's catch-up reads: readings of plants with thresholds
/// stored after their plant's judged high-water mark, oldest first; the
/// mark only rises.
async fn readings_not_judged_are_found_past_the_high_water_mark(db: &TestDb) {
    let store = db.store().await;
    let watched = plant("Basil", t0());
    let unwatched = Plant {
        thresholds: None,
        ..plant("Mint", t0())
    };
    store.insert_plant(&watched).await.unwrap();
    store.insert_plant(&unwatched).await.unwrap();
    let d = registered(&store, "aa:bb:cc:dd:ee:31").await;
    let e = registered(&store, "aa:bb:cc:dd:ee:32").await;
    let at = |minutes| t0() + Duration::minutes(minutes);
    store
        .commit_batch(
            &[
                reading(d.id, Some(watched.id), at(3), 10.0),
                reading(d.id, Some(watched.id), at(1), 10.0),
                reading(d.id, Some(watched.id), at(2), 10.0),
                reading(e.id, Some(unwatched.id), at(1), 10.0),
                reading(e.id, None, at(1), 10.0),
            ],
            &[],
        )
        .await
        .unwrap();
    let unjudged = |since| {
        let store = store.clone();
        async move {
            store
                .unjudged_readings(since, 100)
                .await
                .unwrap()
                .iter()
                .map(|r| r.time)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(unjudged(t0()).await, [at(1), at(2), at(3)]);
    assert_eq!(store.unjudged_readings(t0(), 2).await.unwrap().len(), 2);
    assert_eq!(unjudged(at(1)).await, [at(2), at(3)], "none before `since`");

    let nothing: plantops_store::Judge = Box::new(|_| (Vec::new(), Vec::new()));
    store
        .judge_plants(&[(watched.id, at(2))], nothing)
        .await
        .unwrap();
    assert_eq!(unjudged(t0()).await, [at(3)]);
    let nothing: plantops_store::Judge = Box::new(|_| (Vec::new(), Vec::new()));
    store
        .judge_plants(&[(watched.id, at(1))], nothing)
        .await
        .unwrap();
    assert_eq!(unjudged(t0()).await, [at(3)], "the mark never goes back");
}

/// Judging is serialised per plant: concurrent judges of one plant each
/// see the state the previous one stored (on PostgreSQL through the
/// plant's row lock; SQLite has one writer).
async fn judging_a_plant_is_serialised(db: &TestDb) {
    let store = db.store().await;
    let p = plant("Basil", t0());
    store.insert_plant(&p).await.unwrap();
    let judges = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let judge: plantops_store::Judge = Box::new(move |plants| {
                let judged = &plants[0];
                assert_eq!(judged.plant.name, "Basil");
                let state = judged
                    .states
                    .get(&Metric::SoilMoisture)
                    .copied()
                    .unwrap_or_default();
                // A counter: each judge adds a minute to what it read.
                let count = state.changed_at.map_or(Duration::zero(), |at| at - t0())
                    + Duration::minutes(1);
                let next = MetricState {
                    changed_at: Some(t0() + count),
                    ..state
                };
                let change = StateChange {
                    plant_id: judged.plant.id,
                    metric: Metric::SoilMoisture,
                    state: next,
                };
                (
                    vec![change],
                    vec![alert(Some(judged.plant.id), AlertKind::Threshold, t0())],
                )
            });
            store
                .judge_plants(&[(p.id, t0()), (Uuid::new_v4(), t0())], judge)
                .await
                .unwrap()
        })
    });
    for judge in judges.collect::<Vec<_>>() {
        assert_eq!(judge.await.unwrap().len(), 1);
    }
    let state = store.metric_states(p.id).await.unwrap()[&Metric::SoilMoisture];
    assert_eq!(
        state.changed_at,
        Some(t0() + Duration::minutes(8)),
        "no judge saw a stale state"
    );
    let page = Page {
        limit: 100,
        offset: 0,
    };
    assert_eq!(
        store
            .list_alerts(&AlertFilter::default(), page)
            .await
            .unwrap()
            .1,
        8
    );
}

async fn one_instance_leads_at_a_time(db: &TestDb) {
    let store = db.store().await;
    let lead = store.try_lead().await.unwrap();
    assert!(lead.is_some());
    // Another instance: its own pool on the same database.
    let other = db.store().await;
    if store.backend() == Backend::Sqlite {
        // SQLite serves one instance, which always leads: there is no
        // other to keep out.
        assert!(other.try_lead().await.unwrap().is_some());
        return;
    }
    assert!(other.try_lead().await.unwrap().is_none());
    drop(lead);
    // The lock goes with its connection, once the server has noticed.
    let taken_over = async {
        loop {
            if let Some(lead) = other.try_lead().await.unwrap() {
                return lead;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    let _lead = tokio::time::timeout(std::time::Duration::from_secs(30), taken_over)
        .await
        .expect("the lead passes on when its holder goes");
    assert!(store.try_lead().await.unwrap().is_none());
}

async fn instances_are_known_until_forgotten(db: &TestDb) {
    let store = db.store().await;
    store.touch_instance("a", t0()).await.unwrap();
    store.touch_instance("b", t0()).await.unwrap();
    store
        .touch_instance("a", t0() + Duration::minutes(5))
        .await
        .unwrap();
    let stale = store
        .stale_instances(t0() + Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(stale, vec!["b".to_string()]);
    let live = store
        .live_instances(t0() + Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(live, vec!["a".to_string()]);
    store.forget_instance("b").await.unwrap();
    assert!(store
        .stale_instances(t0() + Duration::minutes(1))
        .await
        .unwrap()
        .is_empty());
}

async fn live_events_reach_every_instance(db: &TestDb) {
    use futures::StreamExt;
    let store = db.store().await;
    let feed = store.live_feed().await.unwrap();
    if store.backend() == Backend::Sqlite {
        // One instance: events stay in its process, and publishing to the
        // (absent) feed is accepted and goes nowhere.
        assert!(feed.is_none(), "SQLite has no feed");
        store.publish_live("ignored").await.unwrap();
        return;
    }
    let mut feed = feed.expect("PostgreSQL shares live events through the database");
    let other = db.store().await;
    other.publish_live(r#"{"kind":"reading"}"#).await.unwrap();
    store.publish_live("own").await.unwrap();
    let mut received = Vec::new();
    for _ in 0..2 {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), feed.next())
            .await
            .unwrap()
            .unwrap();
        // Numbered by the database: the same number on every instance.
        let (number, payload) = message.split_once('\n').unwrap();
        received.push((number.parse::<u64>().unwrap(), payload.to_string()));
    }
    let (first, payload) = received[0].clone();
    assert_eq!(payload, r#"{"kind":"reading"}"#);
    let (second, payload) = received[1].clone();
    assert_eq!(payload, "own");
    assert!(second > first);
}

async fn settings_round_trip(db: &TestDb) {
    let store = db.store().await;
    assert_eq!(store.get_setting("discord_webhook").await.unwrap(), None);
    store
        .put_setting("discord_webhook", Some("v1:abc"))
        .await
        .unwrap();
    store
        .put_setting("discord_webhook", Some("v1:def"))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_setting("discord_webhook")
            .await
            .unwrap()
            .as_deref(),
        Some("v1:def")
    );
    store.put_setting("discord_webhook", None).await.unwrap();
    assert_eq!(store.get_setting("discord_webhook").await.unwrap(), None);
}

async fn care_plans_keep_their_history(db: &TestDb) {
    let store = db.store().await;
    let fern = plant("Fern", t0());
    store.insert_plant(&fern).await.unwrap();
    assert!(store.care_plans(fern.id, 10).await.unwrap().is_empty());
    let plan = |summary: &str, at: DateTime<Utc>| plantops_store::StoredCarePlan {
        id: Uuid::new_v4(),
        plant_id: fern.id,
        plan: serde_json::from_value(serde_json::json!({
            "summary": summary,
            "watering": {"frequency": "weekly", "amount": "1 cup", "next_date": null},
            "light": {"current": "a", "ideal": "b", "recommendation": "c"},
            "humidity": {"current": "a", "ideal": "b", "recommendation": "c"},
            "temperature": null,
            "alerts": [],
            "tips": ["t"],
            "generated_at": at,
        }))
        .unwrap(),
        provider: "anthropic".into(),
        model: "claude".into(),
        reason: "request".into(),
        created_at: at,
        input_tokens: Some(1_234),
        output_tokens: Some(456),
        duration_ms: Some(4_200),
    };
    let older = plan("first", t0());
    let newer = plan("second", t0() + chrono::Duration::hours(1));
    store.insert_care_plan(&older).await.unwrap();
    store.insert_care_plan(&newer).await.unwrap();
    assert_eq!(
        store.care_plans(fern.id, 10).await.unwrap(),
        vec![newer.clone(), older]
    );
    assert_eq!(
        store.care_plans(fern.id, 1).await.unwrap(),
        vec![newer.clone()]
    );
    let ages = store.care_plan_ages().await.unwrap();
    assert_eq!(ages.get(&fern.id), Some(&newer.created_at));
    // A deleted plant takes its plans with it.
    store.delete_plant(fern.id).await.unwrap();
    assert!(store.care_plans(fern.id, 10).await.unwrap().is_empty());
}

fn user(name: &str, role: Role) -> User {
    User {
        id: Uuid::new_v4(),
        username: name.to_string(),
        role,
        created_at: t0(),
    }
}

async fn accounts_keep_one_admin_at_least(db: &TestDb) {
    let store = &db.store().await;
    let first = user("first", Role::Admin);
    assert_eq!(store.count_users().await.unwrap(), 0);
    assert_eq!(
        store.insert_user(&first, "hash-1", true).await.unwrap(),
        AccountChange::Done
    );
    // Setup happens once: a second "first user" is refused.
    let late = user("late", Role::Admin);
    assert_eq!(
        store.insert_user(&late, "hash", true).await.unwrap(),
        AccountChange::Conflict
    );
    let taken = user("first", Role::Viewer);
    assert_eq!(
        store.insert_user(&taken, "hash", false).await.unwrap(),
        AccountChange::Conflict
    );
    let viewer = user("viewer", Role::Viewer);
    store.insert_user(&viewer, "hash-2", false).await.unwrap();
    assert_eq!(store.count_users().await.unwrap(), 2);

    let found = store.user_by_name("first").await.unwrap().unwrap();
    assert_eq!(
        (found.user, found.password_hash.as_str()),
        (first.clone(), "hash-1")
    );
    assert!(store.user_by_name("nobody").await.unwrap().is_none());
    let names: Vec<String> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["first", "viewer"]);

    assert_eq!(
        store.set_user_role(first.id, Role::Viewer).await.unwrap(),
        AccountChange::LastAdmin
    );
    assert_eq!(
        store.delete_user(first.id).await.unwrap(),
        AccountChange::LastAdmin
    );
    assert_eq!(
        store.set_user_role(viewer.id, Role::Admin).await.unwrap(),
        AccountChange::Done
    );
    assert_eq!(
        store.set_user_role(first.id, Role::Viewer).await.unwrap(),
        AccountChange::Done
    );
    assert_eq!(
        store.delete_user(viewer.id).await.unwrap(),
        AccountChange::LastAdmin
    );
    assert_eq!(
        store.delete_user(first.id).await.unwrap(),
        AccountChange::Done
    );
    assert_eq!(
        store.delete_user(first.id).await.unwrap(),
        AccountChange::NotFound
    );
    assert_eq!(
        store.set_user_role(first.id, Role::Admin).await.unwrap(),
        AccountChange::NotFound
    );
}

async fn sessions_end_with_logout_password_change_and_expiry(db: &TestDb) {
    let store = &db.store().await;
    let admin = user("admin", Role::Admin);
    store.insert_user(&admin, "hash", false).await.unwrap();
    store.insert_session("a", admin.id, t0()).await.unwrap();
    store.insert_session("b", admin.id, t0()).await.unwrap();
    store.insert_session("c", admin.id, t0()).await.unwrap();
    let session = store.session("a").await.unwrap().unwrap();
    assert_eq!(session.user, admin);
    assert_eq!((session.created_at, session.last_seen_at), (t0(), t0()));

    store
        .touch_session("a", t0() + Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(
        store.session("a").await.unwrap().unwrap().last_seen_at,
        t0() + Duration::hours(2)
    );
    store.delete_session("b").await.unwrap();
    assert!(store.session("b").await.unwrap().is_none());
    // Idle since before t0+1h: "c" goes, "a" (seen at t0+2h) stays.
    let removed = store
        .delete_expired_sessions(t0() + Duration::hours(1), t0() - Duration::days(1))
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert!(store.session("a").await.unwrap().is_some());
    assert!(store.set_user_password(admin.id, "new-hash").await.unwrap());
    assert!(
        store.session("a").await.unwrap().is_none(),
        "a new password ends every session"
    );
    assert_eq!(
        store
            .user_by_name("admin")
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "new-hash"
    );
}

async fn api_tokens_belong_to_their_user(db: &TestDb) {
    let store = &db.store().await;
    let admin = user("admin", Role::Admin);
    let other = user("other", Role::Viewer);
    store.insert_user(&admin, "hash", false).await.unwrap();
    store.insert_user(&other, "hash", false).await.unwrap();
    let token = ApiToken {
        id: Uuid::new_v4(),
        user_id: admin.id,
        name: "prometheus".into(),
        scope: Scope::Read,
        created_at: t0(),
        last_used_at: None,
    };
    store.insert_api_token(&token, "digest-1").await.unwrap();
    let (found, owner) = store.api_token("digest-1").await.unwrap().unwrap();
    assert_eq!((found, owner), (token.clone(), admin.clone()));
    store
        .touch_api_token(token.id, t0() + Duration::minutes(5))
        .await
        .unwrap();
    let listed = store.api_tokens(admin.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_used_at, Some(t0() + Duration::minutes(5)));
    assert!(store.api_tokens(other.id).await.unwrap().is_empty());
    assert!(
        !store.delete_api_token(token.id, other.id).await.unwrap(),
        "not theirs"
    );
    assert!(store.delete_api_token(token.id, admin.id).await.unwrap());
    assert!(store.api_token("digest-1").await.unwrap().is_none());

    // A deleted user's tokens and sessions go with it.
    store
        .insert_api_token(
            &ApiToken {
                id: Uuid::new_v4(),
                user_id: other.id,
                ..token
            },
            "digest-2",
        )
        .await
        .unwrap();
    store.insert_session("s", other.id, t0()).await.unwrap();
    assert_eq!(
        store.delete_user(other.id).await.unwrap(),
        AccountChange::Done
    );
    assert!(store.api_token("digest-2").await.unwrap().is_none());
    assert!(store.session("s").await.unwrap().is_none());
}

async fn enrollment_keys_count_their_uses(db: &TestDb) {
    let store = &db.store().await;
    let key = EnrollmentKey {
        id: Uuid::new_v4(),
        name: "greenhouse".into(),
        created_at: t0(),
        expires_at: Some(t0() + Duration::days(1)),
        max_uses: Some(2),
        uses: 0,
        revoked_at: None,
    };
    store
        .insert_enrollment_key(&key, "key-digest")
        .await
        .unwrap();
    assert_eq!(
        store.enrollment_key("key-digest").await.unwrap(),
        Some(key.clone())
    );
    assert!(store.use_enrollment_key(key.id, t0()).await.unwrap());
    assert!(store.use_enrollment_key(key.id, t0()).await.unwrap());
    assert!(
        !store.use_enrollment_key(key.id, t0()).await.unwrap(),
        "used up"
    );
    assert_eq!(store.enrollment_keys().await.unwrap()[0].uses, 2);

    let unlimited = EnrollmentKey {
        id: Uuid::new_v4(),
        max_uses: None,
        ..key.clone()
    };
    store
        .insert_enrollment_key(&unlimited, "other-digest")
        .await
        .unwrap();
    assert!(
        !store
            .use_enrollment_key(unlimited.id, t0() + Duration::days(2))
            .await
            .unwrap(),
        "expired"
    );
    assert!(store.use_enrollment_key(unlimited.id, t0()).await.unwrap());
    assert!(store
        .revoke_enrollment_key(unlimited.id, t0())
        .await
        .unwrap());
    assert!(
        !store.use_enrollment_key(unlimited.id, t0()).await.unwrap(),
        "revoked"
    );
    let listed = store.enrollment_keys().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed
        .iter()
        .any(|k| k.id == unlimited.id && k.revoked_at == Some(t0())));
    assert!(!store
        .revoke_enrollment_key(Uuid::new_v4(), t0())
        .await
        .unwrap());
}

/// A caller cancelled at any moment — a client that hung up, a timeout —
/// never leaves a pooled PostgreSQL connection inside a transaction (sqlx
/// 0.8's cancelled `BEGIN`, transact-rs/sqlx#4393), where the next
/// borrower's writes would stay uncommitted, invisible and holding locks.
/// Thousands of transactions are cut off at staggered moments, each
/// followed by a plain write that another connection must then see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_transactions_never_swallow_later_writes() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    let first = plant("Cancelled", t0());
    store.insert_plant(&first).await.unwrap();
    let change = StateChange {
        plant_id: first.id,
        metric: Metric::SoilMoisture,
        state: MetricState::default(),
    };
    let mut cancelled = 0;
    let mut written = 1;
    for round in 0..2000u64 {
        // 0–399 µs: some calls are cut before BEGIN is sent, some while it
        // is in flight, some mid-transaction, some not at all.
        let budget = std::time::Duration::from_micros((round * 7919) % 400);
        if tokio::time::timeout(budget, store.record_alerts(&[change], &[]))
            .await
            .is_err()
        {
            cancelled += 1;
        }
        store.insert_plant(&plant("Later", t0())).await.unwrap();
        written += 1;
    }
    assert!(cancelled > 100, "only {cancelled} calls were cut off");
    let outside = sqlx::PgPool::connect(db.url()).await.unwrap();
    let visible: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM plants")
        .fetch_one(&outside)
        .await
        .unwrap();
    assert_eq!(visible, written, "writes stuck in a stale transaction");
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

fn channel(kind: &str, min_severity: Severity) -> StoredChannel {
    StoredChannel {
        id: Uuid::new_v4(),
        kind: kind.into(),
        name: format!("{kind} channel"),
        min_severity,
        config_sealed: format!("sealed {kind}"),
        created_at: t0(),
        updated_at: t0(),
        last_error: None,
        last_error_at: None,
        pending: 0,
    }
}

async fn each_channel_has_its_own_outbox_from_its_severity_up(db: &TestDb) {
    let store = db.store().await;
    let everything = channel("ntfy", Severity::Info);
    let urgent = StoredChannel {
        created_at: t0() + Duration::seconds(1),
        ..channel("telegram", Severity::Critical)
    };
    store.insert_channel(&everything).await.unwrap();
    store.insert_channel(&urgent).await.unwrap();
    let listed = store.list_channels().await.unwrap();
    assert_eq!(listed, vec![everything.clone(), urgent.clone()]);

    let mut breach = Alert::pending(None, None, AlertKind::Threshold, "too dry".into());
    breach.created_at = t0();
    let mut recovery = Alert::pending(None, None, AlertKind::Recovered, "fine".into());
    recovery.created_at = t0() + Duration::minutes(1);
    store
        .record_alerts(&[], &[breach.clone(), recovery.clone()])
        .await
        .unwrap();

    // Both alerts wait for the info channel, only the breach for the other.
    let now = t0() + Duration::minutes(2);
    let lease = now + Duration::minutes(1);
    let claimed = store
        .claim_due_deliveries(everything.id, now, lease, 10)
        .await
        .unwrap();
    let ids: Vec<Uuid> = claimed.iter().map(|q| q.alert.id).collect();
    assert_eq!(ids, vec![breach.id, recovery.id], "oldest first");
    assert!(
        store
            .claim_due_deliveries(everything.id, now, lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    let claimed = store
        .claim_due_deliveries(urgent.id, now, lease, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!((claimed[0].alert.id, claimed[0].attempts), (breach.id, 0));
    assert_eq!(store.count_pending_alerts().await.unwrap(), 2 + 3);

    // One channel failing leaves the other's record alone.
    store
        .update_channel_delivery(
            urgent.id,
            &DeliveryUpdate {
                id: breach.id,
                delivery: Delivery::Pending,
                attempts: 1,
                next_attempt_at: now + Duration::seconds(2),
            },
        )
        .await
        .unwrap();
    store
        .record_channel_error(urgent.id, Some("503"), now)
        .await
        .unwrap();
    for id in [breach.id, recovery.id] {
        store
            .update_channel_delivery(
                everything.id,
                &DeliveryUpdate {
                    id,
                    delivery: Delivery::Sent,
                    attempts: 1,
                    next_attempt_at: now,
                },
            )
            .await
            .unwrap();
    }
    let failing = store.get_channel(urgent.id).await.unwrap().unwrap();
    assert_eq!(
        (failing.pending, failing.last_error.as_deref()),
        (1, Some("503"))
    );
    assert_eq!(
        store
            .get_channel(everything.id)
            .await
            .unwrap()
            .unwrap()
            .pending,
        0
    );
    let later = now + Duration::seconds(3);
    let retried = store
        .claim_due_deliveries(urgent.id, later, later, 10)
        .await
        .unwrap();
    assert_eq!((retried.len(), retried[0].attempts), (1, 1));
    store
        .record_channel_error(urgent.id, None, later)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_channel(urgent.id)
            .await
            .unwrap()
            .unwrap()
            .last_error,
        None
    );

    // A channel added later gets only later alerts; an update keeps the
    // outbox; a removed one takes its outbox along.
    let late = channel("webhook", Severity::Info);
    store.insert_channel(&late).await.unwrap();
    assert!(store
        .claim_due_deliveries(late.id, later, later, 10)
        .await
        .unwrap()
        .is_empty());
    let renamed = StoredChannel {
        name: "renamed".into(),
        updated_at: later,
        ..urgent.clone()
    };
    assert!(store.update_channel(&renamed).await.unwrap());
    assert_eq!(
        store.get_channel(urgent.id).await.unwrap().unwrap().pending,
        1
    );
    assert!(store.delete_channel(urgent.id).await.unwrap());
    assert!(!store.delete_channel(urgent.id).await.unwrap());
    assert!(store.get_channel(urgent.id).await.unwrap().is_none());
    assert_eq!(store.count_pending_alerts().await.unwrap(), 2);

    // Settings and channel configurations change together.
    store
        .put_sealed(
            &[("a_secret", Some("new"))],
            &[(late.id, "resealed".into())],
        )
        .await
        .unwrap();
    assert_eq!(
        store.get_setting("a_secret").await.unwrap().as_deref(),
        Some("new")
    );
    assert_eq!(
        store
            .get_channel(late.id)
            .await
            .unwrap()
            .unwrap()
            .config_sealed,
        "resealed"
    );
}

//! Devices: registration, credentials, assignment, listing.

use super::*;

plantops_testkit::for_each_backend!(
    registration_is_unique_per_mac,
    device_credentials_and_password_rotation,
    assignment_needs_an_existing_plant,
    devices_filter_by_status_and_paginate,
);

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

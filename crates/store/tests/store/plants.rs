//! Plants, settings and care plans.

use super::*;

plantops_testkit::for_each_backend!(
    plants_round_trip_and_list_newest_first,
    deleting_a_plant_unassigns_devices_and_keeps_readings,
    settings_round_trip,
    care_plans_keep_their_history,
);

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

//! Alerts: states, the outboxes, judgement and what is left to judge.

use super::*;

plantops_testkit::for_each_backend!(
    alerts_states_and_outbox,
    readings_not_judged_are_found_past_the_high_water_mark,
    judging_a_plant_is_serialised,
    each_channel_has_its_own_outbox_from_its_severity_up,
);

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

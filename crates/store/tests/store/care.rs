//! The care journal and care schedules.

use plantops_core::journal::{AmountUnit, CareEvent, CareEventKind, CareSource, CareTaskRule};

use super::*;

plantops_testkit::for_each_backend!(
    the_journal_pages_by_time_and_a_person_overrules_detection,
    a_schedule_keeps_its_tasks_by_name_and_announces_each_due_date_once,
);

fn event(plant_id: Uuid, kind: CareEventKind, at: DateTime<Utc>, source: CareSource) -> CareEvent {
    CareEvent {
        id: Uuid::new_v4(),
        plant_id,
        kind,
        at,
        amount: Some(250.0),
        unit: Some(AmountUnit::Ml),
        text: Some("rain water".into()),
        task: None,
        source,
        recorded_by: Some("ada".into()),
        created_at: at,
    }
}

async fn the_journal_pages_by_time_and_a_person_overrules_detection(db: &TestDb) {
    let store = db.store().await;
    let basil = plant("Basil", t0());
    store.insert_plant(&basil).await.unwrap();
    let at = |minutes| t0() + Duration::minutes(minutes);
    let hour = Duration::hours(1);
    let fed = event(basil.id, CareEventKind::Fertilized, at(0), CareSource::User);
    store.insert_care_event(&fed, hour).await.unwrap();
    let mut detected = event(
        basil.id,
        CareEventKind::Watered,
        at(100),
        CareSource::Detected,
    );
    detected.recorded_by = None;
    assert!(store
        .insert_detected_watering(&detected, hour)
        .await
        .unwrap());
    // The same rise seen again (or by the next check) is not a second one.
    let again = CareEvent {
        id: Uuid::new_v4(),
        at: at(110),
        ..detected.clone()
    };
    assert!(!store.insert_detected_watering(&again, hour).await.unwrap());

    let page = store.care_events(basil.id, None, 10).await.unwrap();
    assert_eq!(
        page,
        vec![detected.clone(), fed.clone()],
        "newest first, as stored"
    );
    let older = store
        .care_events(basil.id, Some(at(100)), 10)
        .await
        .unwrap();
    assert_eq!(older, vec![fed.clone()]);

    // Someone records the watering 30 minutes later: theirs stands alone.
    let manual = event(basil.id, CareEventKind::Watered, at(130), CareSource::User);
    store.insert_care_event(&manual, hour).await.unwrap();
    let page = store.care_events(basil.id, None, 10).await.unwrap();
    assert_eq!(page, vec![manual.clone(), fed.clone()]);
    // And no detection within the hour of it is stored afterwards.
    let late = CareEvent {
        id: Uuid::new_v4(),
        at: at(150),
        ..detected.clone()
    };
    assert!(!store.insert_detected_watering(&late, hour).await.unwrap());

    let between = store
        .care_events_between(basil.id, at(0), at(130))
        .await
        .unwrap();
    assert_eq!(between, vec![fed.clone()], "[from, to), oldest first");
    let last = store.last_care().await.unwrap();
    assert!(last.contains(&plantops_store::LastCare {
        plant_id: basil.id,
        kind: CareEventKind::Watered,
        task: None,
        at: at(130),
    }));
    assert!(store.delete_care_event(basil.id, fed.id).await.unwrap());
    assert!(
        !store
            .delete_care_event(Uuid::new_v4(), manual.id)
            .await
            .unwrap(),
        "another plant's event"
    );
    assert_eq!(
        store.care_events(basil.id, None, 10).await.unwrap(),
        vec![manual]
    );
    // A plant's journal goes with it.
    store.delete_plant(basil.id).await.unwrap();
    assert!(store.last_care().await.unwrap().is_empty());
}

fn rule(task: &str, every_days: u32) -> CareTaskRule {
    CareTaskRule {
        task: task.into(),
        every_days,
        when_soil_below_min_minutes: None,
        winter_months: Vec::new(),
        winter_factor: None,
    }
}

async fn a_schedule_keeps_its_tasks_by_name_and_announces_each_due_date_once(db: &TestDb) {
    let store = db.store().await;
    let basil = plant("Basil", t0());
    store.insert_plant(&basil).await.unwrap();
    store
        .put_care_schedule(basil.id, &[rule("water", 7), rule("fertilize", 30)])
        .await
        .unwrap();
    let tasks = store.care_tasks(Some(basil.id)).await.unwrap();
    let names: Vec<&str> = tasks.iter().map(|t| t.rule.task.as_str()).collect();
    assert_eq!(names, ["water", "fertilize"], "in the order given");
    let water = tasks[0].clone();

    let due = t0() + Duration::days(7);
    let notice = || {
        Alert::pending(
            Some(basil.id),
            None,
            AlertKind::CareDue,
            "Basil: water".into(),
        )
    };
    assert!(store
        .announce_care_due(water.id, due, &notice())
        .await
        .unwrap());
    assert!(
        !store
            .announce_care_due(water.id, due, &notice())
            .await
            .unwrap(),
        "once per due date"
    );
    let (alerts, total) = store
        .list_alerts(
            &AlertFilter::default(),
            Page {
                limit: 10,
                offset: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(total, 1);
    assert_eq!(alerts[0].kind, AlertKind::CareDue);
    assert!(store
        .snooze_care_task(water.id, Some(due + Duration::hours(4)))
        .await
        .unwrap());

    // Water kept (its id, snooze and announcement), fertilize dropped, repot new.
    store
        .put_care_schedule(basil.id, &[rule("water", 3), rule("repot", 365)])
        .await
        .unwrap();
    let tasks = store.care_tasks(Some(basil.id)).await.unwrap();
    assert_eq!(tasks.len(), 2);
    let kept = store.care_task(water.id).await.unwrap().unwrap();
    assert_eq!(kept.rule.every_days, 3);
    assert_eq!(kept.announced_due_at, Some(due));
    assert_eq!(kept.snoozed_until, Some(due + Duration::hours(4)));
    assert!(tasks.iter().any(|t| t.rule.task == "repot"));
    // A new due date is announced again.
    assert!(store
        .announce_care_due(water.id, due + Duration::days(3), &notice())
        .await
        .unwrap());
    store.put_care_schedule(basil.id, &[]).await.unwrap();
    assert!(store.care_tasks(None).await.unwrap().is_empty());
    assert!(store.care_task(water.id).await.unwrap().is_none());
}

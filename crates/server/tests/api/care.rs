//! The care journal, schedules, due tasks and their reminders.

use chrono::DateTime;
use plantops_core::alert::AlertKind;

use super::*;

plantops_testkit::for_each_backend!(
    the_journal_records_pages_and_refuses_bad_input_storing_nothing,
    due_tasks_are_listed_done_snoozed_and_reminded_once,
    a_soil_moisture_rise_is_a_watering_until_someone_records_theirs,
);

async fn journal(app: &TestApp, plant_id: &str, query: &str) -> Value {
    let (status, page) = app
        .call(
            Method::GET,
            &format!("/api/plants/{plant_id}/care-events{query}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page
}

async fn the_journal_records_pages_and_refuses_bad_input_storing_nothing(db: &TestDb) {
    let app = TestApp::new(db).await;
    let plant = app.plant("Basil").await;
    let id = plant["id"].as_str().unwrap();
    let uri = format!("/api/plants/{id}/care-events");
    let yesterday = (Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let (status, watered) = app
        .call(
            Method::POST,
            &uri,
            Some(json!({"kind": "watered", "amount": 250, "unit": "ml", "text": " rain water ", "at": yesterday})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{watered}");
    assert_eq!(watered["text"], "rain water");
    assert_eq!(watered["source"], "token", "recorded with an API token");
    assert_eq!(watered["recorded_by"], "admin");
    let (status, note) = app
        .call(
            Method::POST,
            &uri,
            Some(json!({"kind": "note", "text": "new leaves"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{note}");

    let future = (Utc::now() + chrono::Duration::hours(3)).to_rfc3339();
    for (body, loc) in [
        (
            json!({"kind": "watered", "at": future}),
            json!(["body", "at"]),
        ),
        (
            json!({"kind": "watered", "amount": 250}),
            json!(["body", "unit"]),
        ),
        (
            json!({"kind": "watered", "amount": -1, "unit": "ml"}),
            json!(["body", "amount"]),
        ),
        (
            json!({"kind": "note", "text": "x".repeat(2001)}),
            json!(["body", "text"]),
        ),
        (json!({"kind": "sang"}), json!(["body", "kind"])),
        (
            json!({"kind": "note", "colour": "green"}),
            json!(["body", "colour"]),
        ),
    ] {
        let (status, problem) = app.call(Method::POST, &uri, Some(body.clone())).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} → {problem}"
        );
        assert_eq!(problem["detail"][0]["loc"], loc, "{body} → {problem}");
    }
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/plants/{}/care-events", Uuid::new_v4()),
            Some(json!({"kind": "note"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Newest first, a page at a time; nothing refused was stored.
    let page = journal(&app, id, "?limit=1").await;
    assert_eq!(page["events"][0]["id"], note["id"]);
    let next = page["next_before"].as_str().unwrap();
    let page = journal(
        &app,
        id,
        &format!("?limit=1&before={}", next.replace('+', "%2B")),
    )
    .await;
    assert_eq!(page["events"][0]["id"], watered["id"]);
    let all = journal(&app, id, "").await;
    assert_eq!(all["events"].as_array().unwrap().len(), 2, "{all}");
    assert_eq!(all["next_before"], Value::Null);
    let (status, _) = app.call(Method::GET, &format!("{uri}?limit=0"), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let one = format!("{uri}/{}", note["id"].as_str().unwrap());
    assert_eq!(
        app.call(Method::DELETE, &one, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call(Method::DELETE, &one, None).await.0,
        StatusCode::NOT_FOUND
    );
    let other_plant = app.plant("Mint").await;
    let elsewhere = format!(
        "/api/plants/{}/care-events/{}",
        other_plant["id"].as_str().unwrap(),
        watered["id"].as_str().unwrap()
    );
    assert_eq!(
        app.call(Method::DELETE, &elsewhere, None).await.0,
        StatusCode::NOT_FOUND
    );
    let all = journal(&app, id, "").await;
    assert_eq!(all["events"].as_array().unwrap().len(), 1);
}

async fn care_due_count(app: &TestApp) -> usize {
    let (alerts, _) = app
        .store
        .list_alerts(
            &plantops_store::AlertFilter {
                kind: Some(AlertKind::CareDue),
                ..Default::default()
            },
            plantops_store::Page {
                limit: 100,
                offset: 0,
            },
        )
        .await
        .unwrap();
    alerts.len()
}

async fn due_tasks_are_listed_done_snoozed_and_reminded_once(db: &TestDb) {
    let app = TestApp::new(db).await;
    let plant = app.plant("Fern").await;
    let id = plant["id"].as_str().unwrap();
    let schedule_uri = format!("/api/plants/{id}/care-schedule");
    let schedule = json!({"tasks": [
        {"task": "water", "every_days": 7, "winter_months": [12, 1], "winter_factor": 1},
        {"task": "mist leaves", "every_days": 1}
    ]});
    let (status, saved) = app.call(Method::PUT, &schedule_uri, Some(schedule)).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!(saved["tasks"].as_array().unwrap().len(), 2);

    // A bad schedule names its field and leaves the stored one alone.
    let bad = json!({"tasks": [{"task": "water", "every_days": 0}]});
    let (status, problem) = app.call(Method::PUT, &schedule_uri, Some(bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        problem["detail"][0]["loc"],
        json!(["body", "tasks", "0", "every_days"])
    );
    let (_, kept) = app.call(Method::GET, &schedule_uri, None).await;
    assert_eq!(kept["tasks"], saved["tasks"]);

    // Watered eight days ago: watering is overdue; misting not due yet.
    let eight_days_ago = (Utc::now() - chrono::Duration::days(8)).to_rfc3339();
    app.call(
        Method::POST,
        &format!("/api/plants/{id}/care-events"),
        Some(json!({"kind": "watered", "at": eight_days_ago})),
    )
    .await;
    let (status, due) = app.call(Method::GET, "/api/tasks", None).await;
    assert_eq!(status, StatusCode::OK, "{due}");
    let tasks = due["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{due}");
    assert_eq!(
        (tasks[0]["task"].as_str(), tasks[0]["overdue"].as_bool()),
        (Some("water"), Some(true))
    );
    assert_eq!(tasks[0]["plant_name"], "Fern");
    let water_task = tasks[0]["id"].as_str().unwrap().to_string();
    let tomorrow = (Utc::now() + chrono::Duration::days(2))
        .to_rfc3339()
        .replace('+', "%2B");
    let (_, soon) = app
        .call(
            Method::GET,
            &format!("/api/tasks?due_before={tomorrow}"),
            None,
        )
        .await;
    assert_eq!(soon["tasks"].as_array().unwrap().len(), 2, "{soon}");

    // One notice per due date, however often the reminders look.
    let reminders = &app.server.state().care_tasks;
    for _ in 0..3 {
        reminders.remind(Utc::now()).await.unwrap();
    }
    assert_eq!(care_due_count(&app).await, 1);
    let (alerts, _) = app
        .store
        .list_alerts(
            &Default::default(),
            plantops_store::Page {
                limit: 10,
                offset: 0,
            },
        )
        .await
        .unwrap();
    let notice = alerts
        .iter()
        .find(|a| a.kind == AlertKind::CareDue)
        .unwrap();
    assert_eq!(notice.kind.severity(), plantops_core::alert::Severity::Info);
    assert!(notice.message.contains("Fern: water"), "{}", notice.message);

    // Snoozed: not due, not reminded.
    let (status, problem) = app
        .call(
            Method::POST,
            &format!("/api/tasks/{water_task}/snooze"),
            Some(json!({"hours": 0})),
        )
        .await;
    assert_eq!(
        (status, problem["detail"][0]["loc"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!(["body", "hours"]))
    );
    let (status, snoozed) = app
        .call(
            Method::POST,
            &format!("/api/tasks/{water_task}/snooze"),
            Some(json!({"hours": 24})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{snoozed}");
    let (_, due) = app.call(Method::GET, "/api/tasks", None).await;
    assert!(due["tasks"].as_array().unwrap().is_empty(), "{due}");
    reminders.remind(Utc::now()).await.unwrap();
    assert_eq!(care_due_count(&app).await, 1);

    // Done: the journal has the watering, the next one is a week away.
    let (status, event) = app
        .call(Method::POST, &format!("/api/tasks/{water_task}/done"), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{event}");
    assert_eq!(
        (event["kind"].as_str(), event["source"].as_str()),
        (Some("watered"), Some("token"))
    );
    let (_, schedule) = app.call(Method::GET, &schedule_uri, None).await;
    let water = schedule["due"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == "water")
        .unwrap()
        .clone();
    let next: DateTime<Utc> = water["due_at"].as_str().unwrap().parse().unwrap();
    assert!(next > Utc::now() + chrono::Duration::days(6), "{water}");
    assert_eq!(water["snoozed_until"], Value::Null, "done ends the snooze");
    // A custom task's entry is a note naming it.
    let mist = schedule["due"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == "mist leaves")
        .unwrap()
        .clone();
    let (_, event) = app
        .call(
            Method::POST,
            &format!("/api/tasks/{}/done", mist["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(
        (event["kind"].as_str(), event["task"].as_str()),
        (Some("note"), Some("mist leaves"))
    );
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/tasks/{}/done", Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .call(Method::POST, "/api/tasks/not-a-task/done", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn a_soil_moisture_rise_is_a_watering_until_someone_records_theirs(db: &TestDb) {
    let app = TestApp::new(db).await;
    let plant = app.plant("Orchid").await;
    let id = plant["id"].as_str().unwrap();
    let plant_id: Uuid = id.parse().unwrap();
    let now = plantops_core::now();
    let soil = |minutes_ago: i64, value: f64| Reading {
        time: now - chrono::Duration::minutes(minutes_ago),
        device_id: Uuid::nil(),
        plant_id: Some(plant_id),
        values: Measurements {
            soil_moisture: Some(value),
            ..Default::default()
        },
    };
    let readings = [
        soil(90, 31.0),
        soil(80, 30.0),
        soil(70, 33.0),
        soil(60, 44.0),
        soil(50, 47.0),
    ];
    app.store.commit_batch(&readings, &[]).await.unwrap();
    for _ in 0..2 {
        app.server.state().journal.detect(now).await.unwrap();
    }
    let events = journal(&app, id, "").await["events"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(events.len(), 1, "one rise, one watering: {events:?}");
    assert_eq!(
        (events[0]["kind"].as_str(), events[0]["source"].as_str()),
        (Some("watered"), Some("detected"))
    );
    let at: DateTime<Utc> = events[0]["at"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        at, readings[3].time,
        "at the reading that completed the rise"
    );

    // Someone records the watering they did: theirs replaces the guess.
    let theirs = (now - chrono::Duration::minutes(65)).to_rfc3339();
    app.call(
        Method::POST,
        &format!("/api/plants/{id}/care-events"),
        Some(json!({"kind": "watered", "amount": 300, "unit": "ml", "at": theirs})),
    )
    .await;
    app.server.state().journal.detect(now).await.unwrap();
    let events = journal(&app, id, "").await["events"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["source"], "token");
}

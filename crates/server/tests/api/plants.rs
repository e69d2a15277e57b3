//! Plants: the original scripts' shapes, validation, history, series, exports and
//! pagination.

use super::*;

plantops_testkit::for_each_backend!(
    thresholds_scripts_for_the_original_set_are_accepted,
    malformed_ids_answer_404_like_the_original,
    plants_crud,
    invalid_input_is_422_and_changes_nothing,
    exports_stream_every_reading_of_the_range,
    history_series_and_status,
    pagination_bounds,
);

/// Scripts written for the original set bounds no sensor reports (a
/// `temperature.max` of 100); the reading ranges stay narrower.
async fn thresholds_scripts_for_the_original_set_are_accepted(db: &TestDb) {
    let app = TestApp::new(db).await;
    let plant = app.plant("Cactus").await;
    let uri = format!("/api/plants/{}", plant["id"].as_str().unwrap());
    let wide = json!({"thresholds": {"temperature": {"min": -60, "max": 100},
                                     "light_level": {"max": 500000}}});
    let (status, updated) = app.call(Method::PUT, &uri, Some(wide)).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["thresholds"]["temperature"]["max"], 100.0);
    let absurd = json!({"thresholds": {"temperature": {"max": 1000}}});
    let (status, body) = app.call(Method::PUT, &uri, Some(absurd)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["detail"][0]["loc"],
        json!(["body", "thresholds", "temperature", "max"])
    );
    let (_, stored) = app.call(Method::GET, &uri, None).await;
    assert_eq!(stored["thresholds"]["temperature"]["max"], 100.0);
}

/// An id that is not a UUID names nothing: 404 with the original's
/// `detail`, which clients written for it show as text (not a 422 list).
async fn malformed_ids_answer_404_like_the_original(db: &TestDb) {
    let app = TestApp::new(db).await;
    let plant = app.plant("Fern").await;
    let plant_id = plant["id"].as_str().unwrap();
    let (_, registered) = app
        .call(
            Method::POST,
            "/api/devices/register",
            Some(json!({"mac_address": "aa:bb:cc:00:00:99"})),
        )
        .await;
    let device_id = registered["device_id"].as_str().unwrap();
    let cases = [
        (
            Method::GET,
            "/api/plants/abc".to_string(),
            None,
            "Plant not found",
        ),
        (
            Method::PUT,
            "/api/plants/abc".into(),
            Some(json!({"name": "x"})),
            "Plant not found",
        ),
        (
            Method::DELETE,
            "/api/plants/abc".into(),
            None,
            "Plant not found",
        ),
        (
            Method::GET,
            "/api/plants/abc/history".into(),
            None,
            "Plant not found",
        ),
        (
            Method::POST,
            "/api/plants/abc/health-check".into(),
            None,
            "Plant not found",
        ),
        (
            Method::GET,
            "/api/devices/abc".into(),
            None,
            "Device not found",
        ),
        (
            Method::GET,
            "/api/devices/abc/telemetry/latest".into(),
            None,
            "Device not found",
        ),
        (
            Method::DELETE,
            "/api/devices/abc".into(),
            None,
            "Device not found",
        ),
        (
            Method::POST,
            "/api/devices/abc/provision".into(),
            Some(json!({"plant_id": plant_id})),
            "Device not found",
        ),
        (
            Method::POST,
            format!("/api/devices/{device_id}/provision"),
            Some(json!({"plant_id": ""})),
            "Plant not found",
        ),
        (
            Method::POST,
            format!("/api/devices/{device_id}/provision"),
            Some(json!({"plant_id": "abc"})),
            "Plant not found",
        ),
        (
            Method::POST,
            "/api/alerts/nope/acknowledge".into(),
            None,
            "Alert not found",
        ),
    ];
    for (method, uri, body, detail) in cases {
        let (status, problem) = app.call(method.clone(), &uri, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {problem}");
        assert_eq!(problem, json!({ "detail": detail }), "{method} {uri}");
    }
    // A malformed body is still a 422, and nothing changed.
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/devices/{device_id}/provision"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, device) = app
        .call(Method::GET, &format!("/api/devices/{device_id}"), None)
        .await;
    assert_eq!(device["plant_id"], Value::Null);
    let (_, plants) = app.call(Method::GET, "/api/plants", None).await;
    assert_eq!(plants["total"], 1);
}

async fn plants_crud(db: &TestDb) {
    let app = TestApp::new(db).await;
    let (status, created) = app
        .call(
            Method::POST,
            "/api/plants",
            Some(
                json!({"name": "  Monstera ", "species": "Monstera deliciosa",
                "thresholds": {"temperature": {"min": 18, "max": 27}}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["name"], "Monstera");
    assert_eq!(created["alert_cooldown_minutes"], 60);
    assert_eq!(created["status"], "unknown");
    assert_eq!(created["device_count"], 0);
    assert_eq!(created["latest_telemetry"], Value::Null);
    assert_eq!(created["thresholds"]["temperature"]["max"], 27.0);
    let id = created["id"].as_str().unwrap().to_string();

    let second = app.plant("Basil").await;
    let (status, list) = app.call(Method::GET, "/api/plants", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 2);
    assert_eq!(list["plants"][0]["id"], second["id"], "newest first");

    let (status, updated) = app
        .call(
            Method::PUT,
            &format!("/api/plants/{id}"),
            Some(json!({"thresholds": {"humidity": {"min": 40, "max": null}}, "alert_cooldown_minutes": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["name"], "Monstera", "absent fields are kept");
    assert_eq!(updated["species"], "Monstera deliciosa");
    assert_eq!(
        updated["thresholds"]["temperature"],
        Value::Null,
        "thresholds replaced whole"
    );
    assert_eq!(updated["thresholds"]["humidity"]["min"], 40.0);
    assert_eq!(updated["alert_cooldown_minutes"], 5);
    let (_, fetched) = app
        .call(Method::GET, &format!("/api/plants/{id}"), None)
        .await;
    assert_eq!(fetched["thresholds"], updated["thresholds"]);

    let (status, _) = app
        .call(Method::DELETE, &format!("/api/plants/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app
        .call(Method::GET, &format!("/api/plants/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"detail": "Plant not found"}));
    let (status, _) = app
        .call(Method::DELETE, &format!("/api/plants/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn invalid_input_is_422_and_changes_nothing(db: &TestDb) {
    let app = TestApp::new(db).await;
    let plant = app.plant("Fern").await;
    let id = plant["id"].as_str().unwrap();
    let cases: Vec<(Method, String, Option<&str>, Vec<&str>)> = vec![
        (
            Method::POST,
            "/api/plants".into(),
            Some(r#"{"species":"x"}"#),
            vec!["body", "name"],
        ),
        (
            Method::POST,
            "/api/plants".into(),
            Some(r#"{"name":""}"#),
            vec!["body", "name"],
        ),
        (
            Method::POST,
            "/api/plants".into(),
            Some(r#"{"name":"#),
            vec!["body", "name"],
        ),
        (
            Method::POST,
            "/api/plants".into(),
            Some("not json"),
            vec!["body"],
        ),
        (
            Method::POST,
            "/api/plants".into(),
            Some(r#"{"name":"a","thresholds":{"soil_moisture":{"min":70,"max":20}}}"#),
            vec!["body", "thresholds", "soil_moisture"],
        ),
        (
            Method::POST,
            "/api/plants".into(),
            Some(r#"{"name":"a","thresholds":{"humidity":{"max":"wet"}}}"#),
            vec!["body", "thresholds", "humidity", "max"],
        ),
        (
            Method::PUT,
            format!("/api/plants/{id}"),
            Some(r#"{"thresholds":{"light_level":{"min":-1}}}"#),
            vec!["body", "thresholds", "light_level", "min"],
        ),
        (
            Method::PUT,
            format!("/api/plants/{id}"),
            Some(r#"{"name":"x","alert_cooldown_minutes":-5}"#),
            vec!["body", "alert_cooldown_minutes"],
        ),
        (
            Method::GET,
            format!("/api/plants/{id}/history?hours=0"),
            None,
            vec!["query", "hours"],
        ),
        (
            Method::GET,
            format!("/api/plants/{id}/history?hours=721"),
            None,
            vec!["query", "hours"],
        ),
        (
            Method::GET,
            format!("/api/plants/{id}/history?hours=abc"),
            None,
            vec!["query", "hours"],
        ),
        (
            Method::GET,
            format!("/api/plants/{id}/series?points=5000"),
            None,
            vec!["query", "points"],
        ),
        (
            Method::POST,
            "/api/devices/register".into(),
            Some(r#"{"mac_address":"zz:bb:cc:dd:ee:ff"}"#),
            vec!["body", "mac_address"],
        ),
        (
            Method::GET,
            "/api/devices?status=sleeping".into(),
            None,
            vec!["query", "status"],
        ),
        (
            Method::GET,
            "/api/alerts?kind=bogus".into(),
            None,
            vec!["query", "kind"],
        ),
        (
            Method::GET,
            "/api/alerts?since=yesterday".into(),
            None,
            vec!["query", "since"],
        ),
        (
            Method::GET,
            "/api/alerts?plant_id=nope".into(),
            None,
            vec!["query", "plant_id"],
        ),
    ];
    for (method, uri, body, loc) in cases {
        let (status, _, problem) = app.call_with(method.clone(), &uri, body, &[]).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{method} {uri} {body:?}: {problem}"
        );
        let first = &problem["detail"][0];
        assert_eq!(
            first["loc"],
            json!(loc),
            "{method} {uri} {body:?}: {problem}"
        );
        assert!(first["msg"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(first["type"].is_string());
    }
    let (_, list) = app.call(Method::GET, "/api/plants", None).await;
    assert_eq!(list["total"], 1);
    let (_, fetched) = app
        .call(Method::GET, &format!("/api/plants/{id}"), None)
        .await;
    assert_eq!(fetched["name"], "Fern");
    assert_eq!(fetched["thresholds"], plant["thresholds"]);
    let (_, devices) = app.call(Method::GET, "/api/devices", None).await;
    assert_eq!(devices["total"], 0);
}

/// Two devices reading at the same moments, more rows than one page:
/// every reading once, in (time, device) order, across page boundaries.
async fn exports_stream_every_reading_of_the_range(db: &TestDb) {
    const EACH: i64 = 6000;
    let app = TestApp::new(db).await;
    let plant = app.plant("Orchid Nº 1").await;
    let plant_id: Uuid = plant["id"].as_str().unwrap().parse().unwrap();
    let devices = [Uuid::new_v4(), Uuid::new_v4()];
    let t0 = Utc::now() - chrono::Duration::days(1);
    let t0 = t0 - chrono::Duration::nanoseconds(t0.timestamp_subsec_nanos().into());
    let readings: Vec<Reading> = (0..EACH)
        .flat_map(|i| {
            devices.map(|device| Reading {
                time: t0 + chrono::Duration::seconds(i),
                device_id: device,
                plant_id: Some(plant_id),
                values: Measurements {
                    soil_moisture: Some(40.5),
                    temperature: (i % 2 == 0).then_some(21.25),
                    ..Default::default()
                },
            })
        })
        .collect();
    for chunk in readings.chunks(1000) {
        app.store.commit_batch(chunk, &[]).await.unwrap();
    }

    let (status, headers, csv) = app
        .get_text(&format!("/api/plants/{plant_id}/export"))
        .await;
    assert_eq!(status, StatusCode::OK, "{csv}");
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"orchid-n-1-readings-")
            && disposition.ends_with(".csv\""),
        "{disposition}"
    );
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("time,device_id,plant_id,soil_moisture,temperature,humidity,light_level")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len() as i64, 2 * EACH);
    let keys: Vec<(&str, &str)> = rows.iter().map(|r| (r[0], r[1])).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "ordered, no repeats");
    assert_eq!(rows[0][3], "40.5");
    assert_eq!(rows[0][4], "21.25");
    assert_eq!(rows[2][4], "", "a missing value is empty");

    let from = (t0 + chrono::Duration::seconds(100)).to_rfc3339();
    let to = (t0 + chrono::Duration::seconds(200)).to_rfc3339();
    let (status, headers, jsonl) = app
        .get_text(&format!(
            "/api/plants/{plant_id}/export?format=jsonl&from={}&to={}",
            urlencode(&from),
            urlencode(&to)
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 200, "100 seconds of two devices, [from, to)");
    assert_eq!(lines[0]["soil_moisture"], 40.5);
    assert_eq!(lines[0]["plant_id"], plant_id.to_string());

    // The care journal merged in by time: in the middle of a page, and
    // after the last reading.
    let journal = format!("/api/plants/{plant_id}/care-events");
    for (seconds, text) in [(150, "=SUM(A1), \"tap\" water"), (EACH + 10, "after")] {
        let at = (t0 + chrono::Duration::milliseconds(seconds * 1000 + 500)).to_rfc3339();
        let body = json!({"kind": "watered", "amount": 250, "unit": "ml", "text": text, "at": at});
        let (status, event) = app.call(Method::POST, &journal, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{event}");
    }
    let (status, _, csv) = app
        .get_text(&format!("/api/plants/{plant_id}/export?include=care"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].ends_with(",light_level,care_kind,care_amount,care_unit,care_text"));
    assert_eq!(lines.len() as i64, 1 + 2 * EACH + 2);
    // Header, 151 seconds of two devices, then the entry.
    let care_row = lines[1 + 2 * 151];
    assert!(
        care_row.ends_with(",watered,250,ml,\"'=SUM(A1), \"\"tap\"\" water\""),
        "quoted, never a formula: {care_row}"
    );
    assert!(
        lines[1].ends_with(",,,,"),
        "readings leave the care columns empty"
    );
    assert!(lines.last().unwrap().ends_with(",watered,250,ml,after"));
    let (_, _, jsonl) = app
        .get_text(&format!(
            "/api/plants/{plant_id}/export?format=jsonl&include=care&from={}&to={}",
            urlencode(&from),
            urlencode(&to)
        ))
        .await;
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 201);
    assert_eq!(
        lines[102]["care_event"]["kind"], "watered",
        "{}",
        lines[102]
    );

    for bad in [
        "format=xml",
        "include=photos",
        "from=yesterday",
        "from=2026-12-02&to=2026-12-01",
    ] {
        let (status, _, body) = app
            .get_text(&format!("/api/plants/{plant_id}/export?{bad}"))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }
    let (status, _, _) = app
        .get_text(&format!("/api/plants/{}/export", Uuid::new_v4()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

fn urlencode(raw: &str) -> String {
    raw.replace('+', "%2B").replace(':', "%3A")
}

async fn history_series_and_status(db: &TestDb) {
    let app = TestApp::new(db).await;
    let plant = app.plant("Orchid").await;
    let plant_id: Uuid = plant["id"].as_str().unwrap().parse().unwrap();
    let device = Uuid::new_v4();
    let now = plantops_core::now();
    let readings: Vec<Reading> = (0..120)
        .map(|i| Reading {
            time: now - chrono::Duration::minutes(119 - i),
            device_id: device,
            plant_id: Some(plant_id),
            values: Measurements {
                soil_moisture: Some(50.0 - i as f64 * 0.3),
                ..Default::default()
            },
        })
        .collect();
    app.store.commit_batch(&readings, &[]).await.unwrap();

    let (status, history) = app
        .call(
            Method::GET,
            &format!("/api/plants/{plant_id}/history?hours=1"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let count = history["count"].as_u64().unwrap();
    assert!((60..=61).contains(&count), "{count}");
    let first = history["records"][0]["time"].as_str().unwrap();
    let second = history["records"][1]["time"].as_str().unwrap();
    assert!(first > second, "newest first");

    let (status, series) = app
        .call(
            Method::GET,
            &format!("/api/plants/{plant_id}/series?hours=2&points=10"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let points = series["points"].as_array().unwrap();
    assert!(points.len() <= 10 && points.len() >= 8, "{}", points.len());
    assert_eq!(series["bucket_seconds"], 900);
    let total: u64 = points.iter().map(|p| p["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 120);
    let soil = &points[0]["soil_moisture"];
    assert!(soil["min"].as_f64().unwrap() <= soil["avg"].as_f64().unwrap());

    // The last value (14.3) is below the minimum of 20.
    let (_, view) = app
        .call(Method::GET, &format!("/api/plants/{plant_id}"), None)
        .await;
    assert_eq!(view["status"], "critical");
    assert_eq!(
        view["latest_telemetry"]["soil_moisture"]
            .as_f64()
            .unwrap()
            .round(),
        14.0
    );
    let stale = Reading {
        time: Utc::now() - chrono::Duration::hours(3),
        ..readings[0].clone()
    };
    let other = app.plant("Stale").await;
    let other_id: Uuid = other["id"].as_str().unwrap().parse().unwrap();
    app.store
        .commit_batch(
            &[Reading {
                plant_id: Some(other_id),
                device_id: Uuid::new_v4(),
                ..stale
            }],
            &[],
        )
        .await
        .unwrap();
    let (_, view) = app
        .call(Method::GET, &format!("/api/plants/{other_id}"), None)
        .await;
    assert_eq!(view["status"], "offline");
}

async fn pagination_bounds(db: &TestDb) {
    let app = TestApp::new(db).await;
    for i in 0..3 {
        app.plant(&format!("P{i}")).await;
    }
    let (_, page) = app
        .call(Method::GET, "/api/plants?limit=2&offset=2", None)
        .await;
    assert_eq!(
        (
            page["total"].as_u64(),
            page["plants"].as_array().map(Vec::len)
        ),
        (Some(3), Some(1))
    );
    for query in ["limit=0", "limit=1001", "offset=-1", "limit=x"] {
        for path in ["/api/plants", "/api/devices"] {
            let (status, body) = app
                .call(Method::GET, &format!("{path}?{query}"), None)
                .await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{path}?{query}: {body}"
            );
        }
    }
}

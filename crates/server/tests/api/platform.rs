//! What every route shares: correlation ids, health and readiness, the OpenAPI
//! document, live events, notification settings.

use super::*;

plantops_testkit::for_each_backend!(notification_settings_are_sealed_and_masked,);

#[tokio::test]
async fn correlation_ids_are_reused_or_generated() {
    let db = TestDb::sqlite().await;
    let app = TestApp::new(&db).await;
    let (_, headers, _) = app
        .call_with(
            Method::GET,
            "/api/health",
            None,
            &[("x-correlation-id", "abc-123")],
        )
        .await;
    assert_eq!(headers["x-correlation-id"], "abc-123");
    let (_, headers, _) = app
        .call_with(
            Method::GET,
            "/api/plants",
            None,
            &[("x-request-id", "req-9")],
        )
        .await;
    assert_eq!(headers["x-correlation-id"], "req-9");
    let (_, headers, _) = app.call_with(Method::GET, "/api/nope", None, &[]).await;
    let generated = headers["x-correlation-id"].to_str().unwrap();
    assert!(Uuid::parse_str(generated).is_ok());
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let db = TestDb::sqlite().await;
    let app = TestApp::new(&db).await;
    let (status, health) = app.call(Method::GET, "/api/health", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["components"]["database"]["status"], "connected");
    assert_eq!(health["components"]["mqtt"]["status"], "connected");
    let (status, ready) = app.call(Method::GET, "/api/ready", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ready,
        json!({"ready": true, "checks": {"database": true, "mqtt": true}})
    );

    let response = app
        .router
        .clone()
        .oneshot(
            Request::get("/metrics")
                .header("authorization", format!("Bearer {}", app.token))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/api/ready",status="200"}"#),
        "{text}"
    );
    assert!(text.contains("http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn ready_is_503_until_migrations_are_applied() {
    let db = TestDb::sqlite().await;
    let app = TestApp::new(&db).await;
    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(&sqlx::SqlitePool::connect(db.url()).await.unwrap())
        .await
        .unwrap();
    let (status, ready) = app.call(Method::GET, "/api/ready", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["checks"]["database"], false);
    let (status, health) = app.call(Method::GET, "/api/health", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "unhealthy");
}

/// Every documented operation is routed, and every route is documented.
#[tokio::test]
async fn openapi_describes_every_route() {
    let db = TestDb::sqlite().await;
    let app = TestApp::new(&db).await;
    let (status, spec) = app.call(Method::GET, "/api/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let paths = spec["paths"].as_object().unwrap();
    let mut operations = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            operations.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    operations.sort();
    let expected = [
        "DELETE /devices/{id}",
        "DELETE /enrollment-keys/{id}",
        "DELETE /enrollment/window",
        "DELETE /notification-channels/{id}",
        "DELETE /plants/{id}",
        "DELETE /plants/{id}/care-events/{event_id}",
        "DELETE /tokens/{id}",
        "DELETE /users/{id}",
        "GET /alerts",
        "GET /auth/me",
        "GET /auth/status",
        "GET /devices",
        "GET /devices/{id}",
        "GET /devices/{id}/esphome",
        "GET /devices/{id}/telemetry/latest",
        "GET /enrollment-keys",
        "GET /enrollment/window",
        "GET /events",
        "GET /health",
        "GET /mqtt/ca",
        "GET /notification-channels",
        "GET /plants",
        "GET /plants/{id}",
        "GET /plants/{id}/care-events",
        "GET /plants/{id}/care-plan",
        "GET /plants/{id}/care-plans",
        "GET /plants/{id}/care-schedule",
        "GET /plants/{id}/devices",
        "GET /plants/{id}/export",
        "GET /plants/{id}/history",
        "GET /plants/{id}/series",
        "GET /ready",
        "GET /settings/home-assistant",
        "GET /settings/llm",
        "GET /settings/notifications",
        "GET /tasks",
        "GET /tokens",
        "GET /users",
        "POST /alerts/{id}/acknowledge",
        "POST /auth/login",
        "POST /auth/logout",
        "POST /auth/setup",
        "POST /devices/register",
        "POST /devices/{id}/provision",
        "POST /devices/{id}/rotate-credentials",
        "POST /devices/{id}/unassign",
        "POST /enrollment-keys",
        "POST /enrollment/window",
        "POST /mqtt/acl",
        "POST /mqtt/auth",
        "POST /mqtt/superuser",
        "POST /notification-channels",
        "POST /notification-channels/{id}/test",
        "POST /plants",
        "POST /plants/{id}/analyze",
        "POST /plants/{id}/care-events",
        "POST /plants/{id}/health-check",
        "POST /settings/llm/test",
        "POST /settings/notifications/test",
        "POST /tasks/{id}/done",
        "POST /tasks/{id}/snooze",
        "POST /tokens",
        "POST /users",
        "PUT /auth/password",
        "PUT /notification-channels/{id}",
        "PUT /plants/{id}",
        "PUT /plants/{id}/care-schedule",
        "PUT /settings/home-assistant",
        "PUT /settings/llm",
        "PUT /settings/notifications",
        "PUT /users/{id}",
    ];
    assert_eq!(operations, expected);
    for operation in operations.iter().filter(|o| *o != "GET /events") {
        let (method, path) = operation.split_once(' ').unwrap();
        let uri = format!("/api{}", path.replace("{id}", &Uuid::new_v4().to_string()));
        let (status, _, body) = app
            .call_with(method.parse().unwrap(), &uri, Some("{}"), &[])
            .await;
        assert!(
            !(status == StatusCode::NOT_FOUND && body["detail"] == "Not found")
                && status != StatusCode::METHOD_NOT_ALLOWED,
            "{operation} is documented but not routed"
        );
    }
}

/// Reads SSE frames from a streaming body until `count` events arrived.
async fn sse_events(body: Body, count: usize) -> Vec<(String, String, Value)> {
    let mut stream = body.into_data_stream();
    let mut text = String::new();
    let mut events = Vec::new();
    while events.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(10), futures_next(&mut stream))
            .await
            .expect("an event within 10 s")
            .expect("stream open");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}:")))
                    .map(|v| v.trim().to_string())
            };
            if let (Some(id), Some(kind), Some(data)) = (field("id"), field("event"), field("data"))
            {
                events.push((id, kind, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    events
}

async fn futures_next(stream: &mut axum::body::BodyDataStream) -> Option<axum::body::Bytes> {
    use futures::StreamExt;
    stream.next().await.and_then(Result::ok)
}

#[tokio::test]
async fn live_events_stream_and_resume_after_last_event_id() {
    use plantops_core::event::{DeviceStatusChange, Event};
    let db = TestDb::sqlite().await;
    let app = TestApp::new(&db).await;
    let response = app
        .router
        .clone()
        .oneshot(
            Request::get("/api/events")
                .header("authorization", format!("Bearer {}", app.token))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");

    // The server judges what passes on its event bus, as `plantops serve`
    // does: the offline change below becomes an alert.
    let mut bus = app.events.subscribe();
    let device = Uuid::new_v4();
    let reading = Reading {
        time: plantops_core::now(),
        device_id: device,
        plant_id: None,
        values: Measurements {
            humidity: Some(55.0),
            ..Default::default()
        },
    };
    app.events.send(Event::Reading(reading)).unwrap();
    app.events
        .send(Event::DeviceStatus(DeviceStatusChange {
            device_id: device,
            plant_id: None,
            status: plantops_core::DeviceStatus::Offline,
            previous: plantops_core::DeviceStatus::Online,
            last_seen_at: None,
        }))
        .unwrap();
    while !matches!(bus.recv().await, Ok(Event::Alert(_))) {}
    // A plant created through the API is announced too.
    let plant = app.plant("Live").await;
    let events = sse_events(response.into_body(), 4).await;
    assert_eq!(events[0].1, "reading");
    assert_eq!(events[0].2["humidity"], 55.0);
    assert_eq!(events[1].1, "device_status");
    assert_eq!(events[1].2["status"], "offline");
    assert_eq!(events[2].1, "alert");
    assert_eq!(events[2].2["kind"], "device_offline");
    assert_eq!(events[3].1, "plant");
    assert_eq!(events[3].2["plant_id"], plant["id"]);

    // Reconnecting after the first event replays the three that followed.
    let response = app
        .router
        .clone()
        .oneshot(
            Request::get("/api/events")
                .header("authorization", format!("Bearer {}", app.token))
                .header("last-event-id", events[0].0.as_str())
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let replayed = sse_events(response.into_body(), 3).await;
    assert_eq!(
        replayed.iter().map(|e| e.0.clone()).collect::<Vec<_>>(),
        [
            events[1].0.clone(),
            events[2].0.clone(),
            events[3].0.clone()
        ]
    );
}

async fn notification_settings_are_sealed_and_masked(db: &TestDb) {
    let app = TestApp::new(db).await;
    let (status, view) = app
        .call(Method::GET, "/api/settings/notifications", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        view,
        json!({"discord_webhook_set": false, "discord_webhook_masked": null})
    );
    let (status, result) = app
        .call(Method::POST, "/api/settings/notifications/test", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(result["success"], false);

    let url = "https://discord.com/api/webhooks/42/very-secret-token";
    let (status, view) = app
        .call(
            Method::PUT,
            "/api/settings/notifications",
            Some(json!({"discord_webhook_url": url})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        view,
        json!({"discord_webhook_set": true, "discord_webhook_masked": "...oken"})
    );
    let stored = app
        .store
        .get_setting("discord_webhook")
        .await
        .unwrap()
        .unwrap();
    assert!(
        !stored.contains("secret") && !stored.contains("discord"),
        "{stored}"
    );

    // Only Discord's webhook URLs: the server would post alerts (and, on a
    // test, its answer) anywhere else an admin's browser was tricked into.
    for refused in [
        "ftp://x",
        "http://discord.com/api/webhooks/1/token",
        "https://discord.example/api/webhooks/1/token",
        "https://discord.com.evil.example/api/webhooks/1/token",
        "https://discord.com@evil.example/api/webhooks/1/token",
        "http://169.254.169.254/latest/meta-data/",
    ] {
        let (status, problem) = app
            .call(
                Method::PUT,
                "/api/settings/notifications",
                Some(json!({ "discord_webhook_url": refused })),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
        assert_eq!(
            problem["detail"][0]["loc"],
            json!(["body", "discord_webhook_url"])
        );
    }
    let (_, view) = app
        .call(Method::GET, "/api/settings/notifications", None)
        .await;
    assert_eq!(
        view["discord_webhook_set"], true,
        "a rejected update changes nothing"
    );

    let (_, view) = app
        .call(
            Method::PUT,
            "/api/settings/notifications",
            Some(json!({"discord_webhook_url": null})),
        )
        .await;
    assert_eq!(view["discord_webhook_set"], false);
}

/// Open event streams are bounded (`max_event_streams`, 3 here): the next
/// is refused with 503 until one closes.
#[tokio::test]
async fn event_streams_are_bounded() {
    let db = TestDb::sqlite().await;
    let app = TestApp::new(&db).await;
    let open = || async {
        app.router
            .clone()
            .oneshot(
                Request::get("/api/events")
                    .header("authorization", format!("Bearer {}", app.token))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap()
    };
    let mut streams = Vec::new();
    for _ in 0..3 {
        let response = open().await;
        assert_eq!(response.status(), StatusCode::OK);
        streams.push(response);
    }
    let refused = open().await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    drop(streams.pop());
    assert_eq!(
        open().await.status(),
        StatusCode::OK,
        "a closed stream frees its place"
    );
}

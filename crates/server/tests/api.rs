//! The HTTP API through the real router, on SQLite and on PostgreSQL, with
//! the real built-in broker behind it.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use chrono::Utc;
use http_body_util::BodyExt;
use plantops_core::account::{hash_user_password, Role, Scope, User};
use plantops_core::{Measurements, Reading};
use plantops_server::accounts::create_api_token;
use plantops_server::auth::AuthSettings;
use plantops_server::launch::{BrokerConfig, BuiltinBrokerConfig, Server, ServerConfig};
use plantops_store::DynStore;
use plantops_testkit::TestDb;
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

plantops_testkit::for_each_backend!(
    plants_crud,
    invalid_input_is_422_and_changes_nothing,
    device_lifecycle,
    history_series_and_status,
    exports_stream_every_reading_of_the_range,
    pagination_bounds,
    notification_settings_are_sealed_and_masked,
    thresholds_scripts_for_the_original_set_are_accepted,
    malformed_ids_answer_404_like_the_original,
    viewers_and_read_tokens_only_read,
    sessions_need_our_origin_and_end_with_logout_or_a_new_password,
    setup_token_creates_one_admin_once,
    registration_needs_a_key_the_window_or_an_admin,
);

struct TestApp {
    router: Router,
    store: DynStore,
    events: tokio::sync::broadcast::Sender<plantops_core::event::Event>,
    /// The admin's API token, sent unless a call brings its own credentials.
    token: String,
    _server: Server,
    _data_dir: tempfile::TempDir,
}

impl TestApp {
    /// The server as `plantops serve` starts it, in-process, with the
    /// built-in broker on a free port.
    async fn without_accounts(db: &TestDb) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let plain = format!("127.0.0.1:{}", plantops_testkit::free_port());
        let server = Server::start(ServerConfig {
            data_dir: data_dir.path().to_path_buf(),
            database_url: db.url().to_string(),
            encryption_key: Some("ab".repeat(32)),
            broker: BrokerConfig::Builtin(BuiltinBrokerConfig {
                plain: Some(plain.parse().unwrap()),
                tls: None,
                certificate: None,
                tls_sans: Vec::new(),
                limits: Default::default(),
            }),
            mqtt_public_host: None,
            heartbeat_interval_secs: 60,
            max_event_streams: 3,
            http: Default::default(),
            device_rate: Default::default(),
            instance_id: None,
            instance_timeout: std::time::Duration::from_secs(90),
            mqtt_auth_secret: None,
            backups: None,
            home_assistant: Default::default(),
            low_battery_percent: Some(15.0),
            rollup_retention_days: 0,
            discord_webhook_prefixes: plantops_server::alerts::settings::DISCORD_WEBHOOK_PREFIXES
                .map(String::from)
                .to_vec(),
            retention_days: 0,
            discord_webhook_url: None,
            notification_services: Default::default(),
            llm: plantops_advisor::Endpoints::default(),
            auth: AuthSettings::default(),
        })
        .await
        .unwrap();
        Self {
            router: server.router(),
            store: server.state().store.clone(),
            events: server.state().events.clone(),
            token: String::new(),
            _server: server,
            _data_dir: data_dir,
        }
    }

    /// The server with an admin (`admin` / `admin-password`) whose full API
    /// token every `call` sends.
    async fn new(db: &TestDb) -> Self {
        let mut app = Self::without_accounts(db).await;
        let admin = app.add_user("admin", Role::Admin).await;
        app.token = create_api_token(&app.store, admin.id, "tests".into(), Scope::Full)
            .await
            .unwrap()
            .secret;
        app
    }

    async fn add_user(&self, username: &str, role: Role) -> User {
        let user = User {
            id: Uuid::new_v4(),
            username: username.into(),
            role,
            created_at: plantops_core::now(),
        };
        let hash = hash_user_password(&format!("{username}-password"));
        self.store.insert_user(&user, &hash, false).await.unwrap();
        user
    }

    async fn call_with(
        &self,
        method: Method,
        uri: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "plants.lan:8000");
        let own_credentials = headers.iter().any(|(name, _)| {
            name.eq_ignore_ascii_case("authorization") || name.eq_ignore_ascii_case("cookie")
        });
        if !own_credentials && !self.token.is_empty() {
            request = request.header("authorization", format!("Bearer {}", self.token));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(body.map(|b| Body::from(b.to_string())).unwrap_or_default())
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, headers, value)
    }

    /// A GET whose body is not JSON: status, headers and the body as text.
    async fn get_text(&self, uri: &str) -> (StatusCode, HeaderMap, String) {
        let request = Request::builder()
            .uri(uri)
            .header("host", "plants.lan:8000")
            .header("authorization", format!("Bearer {}", self.token))
            .body(Body::empty())
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let body = body.map(|b| b.to_string());
        let (status, _, value) = self.call_with(method, uri, body.as_deref(), &[]).await;
        (status, value)
    }

    async fn plant(&self, name: &str) -> Value {
        let (status, plant) = self
            .call(
                Method::POST,
                "/api/plants",
                Some(
                    json!({"name": name, "thresholds": {"soil_moisture": {"min": 20, "max": 80}}}),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        plant
    }
}

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

async fn device_lifecycle(db: &TestDb) {
    let app = TestApp::new(db).await;
    let (status, reg) = app
        .call(
            Method::POST,
            "/api/devices/register",
            Some(json!({"mac_address": "AA-BB-CC-DD-EE-0F", "firmware_version": "2.1", "sensor_types": ["soil_moisture"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let id = reg["device_id"].as_str().unwrap().to_string();
    let password = reg["mqtt_password"].as_str().unwrap();
    assert!(password.len() >= 32);
    assert!(reg["mqtt_username"]
        .as_str()
        .unwrap()
        .starts_with("device_"));
    assert_eq!(
        reg["mqtt_host"], "plants.lan",
        "host the device used for HTTP"
    );
    assert!(reg["mqtt_port"].as_u64().is_some());

    let (status, again) = app
        .call(
            Method::POST,
            "/api/devices/register",
            Some(json!({"mac_address": "aa:bb:cc:dd:ee:0f"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["device_id"], reg["device_id"]);
    assert_eq!(again["mqtt_username"], reg["mqtt_username"]);
    assert_eq!(again["mqtt_password"], "<stored_securely>");

    let (_, device) = app
        .call(Method::GET, &format!("/api/devices/{id}"), None)
        .await;
    assert_eq!(device["mac_address"], "aa:bb:cc:dd:ee:0f");
    assert_eq!(device["status"], "provisioning");
    assert_eq!(device["sensor_types"], json!(["soil_moisture"]));
    assert!(device.get("password_hash").is_none());
    let (_, listed) = app
        .call(Method::GET, "/api/devices?status=provisioning", None)
        .await;
    assert_eq!(listed["total"], 1);
    let (_, listed) = app
        .call(Method::GET, "/api/devices?status=online", None)
        .await;
    assert_eq!(listed["total"], 0);

    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/devices/{id}/provision"),
            Some(json!({"plant_id": Uuid::new_v4()})),
        )
        .await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (StatusCode::NOT_FOUND, Some("Plant not found"))
    );
    let plant = app.plant("Cactus").await;
    let plant_id = plant["id"].as_str().unwrap();
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/devices/{}/provision", Uuid::new_v4()),
            Some(json!({"plant_id": plant_id})),
        )
        .await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (StatusCode::NOT_FOUND, Some("Device not found"))
    );
    let (status, provisioned) = app
        .call(
            Method::POST,
            &format!("/api/devices/{id}/provision"),
            Some(json!({"plant_id": plant_id})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(provisioned["plant_id"], plant_id);
    assert_eq!(provisioned["status"], "provisioning", "not forced online");
    let (_, plant_devices) = app
        .call(
            Method::GET,
            &format!("/api/plants/{plant_id}/devices"),
            None,
        )
        .await;
    assert_eq!(plant_devices["total"], 1);
    let (_, plant_view) = app
        .call(Method::GET, &format!("/api/plants/{plant_id}"), None)
        .await;
    assert_eq!(plant_view["device_count"], 1);

    let (status, rotated) = app
        .call(
            Method::POST,
            &format!("/api/devices/{id}/rotate-credentials"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(rotated["mqtt_password"].as_str(), Some(password));
    let creds = app
        .store
        .device_credentials(reg["mqtt_username"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(plantops_core::credentials::verify_password(
        rotated["mqtt_password"].as_str().unwrap(),
        &creds.password_hash
    ));
    assert!(!plantops_core::credentials::verify_password(
        password,
        &creds.password_hash
    ));

    let (status, body) = app
        .call(
            Method::GET,
            &format!("/api/devices/{id}/telemetry/latest"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["detail"].is_string());

    let (status, _) = app
        .call(Method::POST, &format!("/api/devices/{id}/unassign"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, plant_devices) = app
        .call(
            Method::GET,
            &format!("/api/plants/{plant_id}/devices"),
            None,
        )
        .await;
    assert_eq!(plant_devices["total"], 0);

    let (status, body) = app
        .call(Method::DELETE, &format!("/api/devices/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["message"].is_string());
    let (status, _) = app
        .call(Method::DELETE, &format!("/api/devices/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .call(Method::POST, &format!("/api/devices/{id}/unassign"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
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

    for bad in [
        "format=xml",
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
        "GET /plants/{id}/care-plan",
        "GET /plants/{id}/care-plans",
        "GET /plants/{id}/devices",
        "GET /plants/{id}/export",
        "GET /plants/{id}/history",
        "GET /plants/{id}/series",
        "GET /ready",
        "GET /settings/home-assistant",
        "GET /settings/llm",
        "GET /settings/notifications",
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
        "POST /plants/{id}/health-check",
        "POST /settings/llm/test",
        "POST /settings/notifications/test",
        "POST /tokens",
        "POST /users",
        "PUT /auth/password",
        "PUT /notification-channels/{id}",
        "PUT /plants/{id}",
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

/// An OpenAPI operation's name ("POST /mqtt/auth") for a route of the
/// server's lists.
fn operation(route: &(Method, &str)) -> String {
    let (method, path) = route;
    format!("{method} {}", path.strip_prefix("/api").unwrap_or(path))
}

/// Walks every documented operation without credentials, so a new route
/// cannot slip through unprotected: the server's public routes answer,
/// those that check a credential of their own (registration) answer 401
/// themselves, everything else in the OpenAPI document (and `/metrics`)
/// answers 401 at the sign-in rule.
#[tokio::test]
async fn every_route_but_the_public_ones_needs_credentials() {
    let db = TestDb::sqlite().await;
    let app = TestApp::new(&db).await;
    let (_, spec) = app.call(Method::GET, "/api/openapi.json", None).await;
    let public: Vec<String> = plantops_server::auth::PUBLIC_ROUTES
        .iter()
        .map(operation)
        .collect();
    let self_checked: Vec<String> = plantops_server::auth::SELF_CHECKED_ROUTES
        .iter()
        .map(operation)
        .collect();
    let mut walked = 0;
    let mut seen_public = Vec::new();
    let anonymous = [("authorization", "Bearer pot_not-a-real-token")];
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let operation = format!("{} {path}", method.to_uppercase());
            let uri = format!("/api{}", path.replace("{id}", &Uuid::new_v4().to_string()));
            let (status, headers, body) = app
                .call_with(
                    method.to_uppercase().parse().unwrap(),
                    &uri,
                    Some("{}"),
                    &anonymous,
                )
                .await;
            if public.contains(&operation) {
                assert_ne!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{operation} must stay public: {body}"
                );
                seen_public.push(operation);
                continue;
            }
            if self_checked.contains(&operation) {
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{operation} checks its own credential: {body}"
                );
                seen_public.push(operation);
                continue;
            }
            walked += 1;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{operation} answered without credentials"
            );
            assert_eq!(headers["www-authenticate"], "Bearer", "{operation}");
            assert!(body["detail"].is_string(), "{operation}: {body}");
        }
    }
    assert!(walked >= 40, "walked only {walked} operations");
    // A listed route the document leaves out (the document itself) is
    // called on its own.
    for (method, path) in plantops_server::auth::PUBLIC_ROUTES {
        if seen_public.contains(&operation(&(method.clone(), path))) {
            continue;
        }
        let (status, _, body) = app.call_with(method.clone(), path, None, &anonymous).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
    }

    let (status, headers, _) = app
        .call_with(Method::GET, "/metrics", None, &anonymous)
        .await;
    assert_eq!(
        (status, &headers["www-authenticate"]),
        (StatusCode::UNAUTHORIZED, &"Bearer".parse().unwrap())
    );
    // The UI's files stay public.
    let (status, _, _) = app
        .call_with(Method::GET, "/devices", None, &anonymous)
        .await;
    assert_ne!(status, StatusCode::UNAUTHORIZED);
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

/// No credentials at all (an empty header stops `call_with` adding the admin's token).
const ANONYMOUS: [(&str, &str); 1] = [("authorization", "")];
const ORIGIN: (&str, &str) = ("origin", "http://plants.lan:8000");

impl TestApp {
    /// Signs in through the API and returns the session cookie (`name=value`).
    async fn login(&self, username: &str, password: &str) -> String {
        let body = json!({"username": username, "password": password}).to_string();
        let (status, headers, user) = self
            .call_with(Method::POST, "/api/auth/login", Some(&body), &ANONYMOUS)
            .await;
        assert_eq!(status, StatusCode::OK, "{user}");
        assert_eq!(user["username"], username);
        session_cookie(&headers)
    }

    async fn call_bearer(
        &self,
        method: Method,
        uri: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let bearer = format!("Bearer {token}");
        let body = body.map(|b| b.to_string());
        let (status, _, value) = self
            .call_with(method, uri, body.as_deref(), &[("authorization", &bearer)])
            .await;
        (status, value)
    }

    /// Registers a MAC address with an enrollment key.
    async fn register_with(&self, key: &str, mac: &str) -> (StatusCode, Value) {
        self.call_bearer(
            Method::POST,
            "/api/devices/register",
            key,
            Some(json!({ "mac_address": mac })),
        )
        .await
    }

    async fn token_for(&self, cookie: &str, scope: &str) -> String {
        let body = json!({"name": format!("{scope} token"), "scope": scope}).to_string();
        let (status, _, issued) = self
            .call_with(
                Method::POST,
                "/api/tokens",
                Some(&body),
                &[("cookie", cookie), ORIGIN],
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{issued}");
        assert_eq!(issued["scope"], scope);
        issued["token"].as_str().unwrap().to_string()
    }
}

fn session_cookie(headers: &HeaderMap) -> String {
    let set_cookie = headers["set-cookie"].to_str().unwrap();
    set_cookie.split(';').next().unwrap().to_string()
}

async fn viewers_and_read_tokens_only_read(db: &TestDb) {
    let app = TestApp::new(db).await;
    let plant = app.plant("Fern").await;
    let plant_uri = format!("/api/plants/{}", plant["id"].as_str().unwrap());
    let (status, viewer) = app
        .call(
            Method::POST,
            "/api/users",
            Some(json!({"username": "guest", "password": "guest-password", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{viewer}");
    let cookie = app.login("guest", "guest-password").await;
    let as_viewer = [("cookie", cookie.as_str()), ORIGIN];

    let (status, _, listed) = app
        .call_with(Method::GET, "/api/plants", None, &as_viewer)
        .await;
    assert_eq!(
        (status, listed["total"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    let (status, _, me) = app
        .call_with(Method::GET, "/api/auth/me", None, &as_viewer)
        .await;
    assert_eq!(
        (status, me["role"].as_str()),
        (StatusCode::OK, Some("viewer"))
    );
    for (method, uri, body) in [
        (
            Method::POST,
            "/api/plants".to_string(),
            json!({"name": "Nope"}),
        ),
        (Method::PUT, plant_uri.clone(), json!({"thresholds": null})),
        (Method::DELETE, plant_uri.clone(), json!({})),
        (
            Method::PUT,
            "/api/settings/notifications".to_string(),
            json!({"discord_webhook_url": "https://evil.example/hook"}),
        ),
        (
            Method::POST,
            "/api/enrollment/window".to_string(),
            json!({"minutes": 5}),
        ),
        (
            Method::POST,
            "/api/notification-channels".to_string(),
            json!({"kind": "webhook", "name": "x", "url": "https://evil.example/hook",
                "secret": "0123456789abcdef"}),
        ),
        (
            Method::POST,
            format!("/api/notification-channels/{}/test", Uuid::new_v4()),
            json!({}),
        ),
        (
            Method::DELETE,
            format!("/api/notification-channels/{}", Uuid::new_v4()),
            json!({}),
        ),
        (
            Method::POST,
            "/api/users".to_string(),
            json!({"username": "x", "password": "12345678", "role": "admin"}),
        ),
    ] {
        let body = body.to_string();
        let (status, _, problem) = app
            .call_with(method.clone(), &uri, Some(&body), &as_viewer)
            .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "viewer {method} {uri}: {problem}"
        );
        assert!(problem["detail"].is_string());
    }
    // A viewer manages its own tokens; even a `full` one stays a viewer's.
    let full = app.token_for(&cookie, "full").await;
    let (status, _) = app
        .call_bearer(
            Method::POST,
            "/api/plants",
            &full,
            Some(json!({"name": "Nope"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // An admin's read token may only GET.
    let (status, issued) = app
        .call(
            Method::POST,
            "/api/tokens",
            Some(json!({"name": "grafana", "scope": "read"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let read = issued["token"].as_str().unwrap();
    let (status, _) = app.call_bearer(Method::GET, &plant_uri, read, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, problem) = app
        .call_bearer(Method::DELETE, &plant_uri, read, None)
        .await;
    assert_eq!(
        (status, problem["detail"].as_str()),
        (StatusCode::FORBIDDEN, Some("This API token is read-only"))
    );
    let (status, _) = app
        .call_bearer(
            Method::POST,
            "/api/tokens",
            read,
            Some(json!({"name": "n", "scope": "full"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a read token cannot mint a full one"
    );
    let (_, stored) = app.call(Method::GET, &plant_uri, None).await;
    assert_eq!(stored["name"], "Fern", "nothing changed");

    // Revoking a token takes effect on the next request.
    let (_, tokens) = app.call(Method::GET, "/api/tokens", None).await;
    let grafana = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "grafana")
        .unwrap();
    assert!(
        grafana.get("token").is_none(),
        "a listed token never shows its secret"
    );
    assert!(grafana["last_used_at"].is_string(), "{grafana}");
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/tokens/{}", grafana["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.call_bearer(Method::GET, &plant_uri, read, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The last admin can be neither removed nor demoted.
    let (_, users) = app.call(Method::GET, "/api/users", None).await;
    let admin_id = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let admin_uri = format!("/api/users/{admin_id}");
    let (status, _) = app
        .call(Method::PUT, &admin_uri, Some(json!({"role": "viewer"})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = app.call(Method::DELETE, &admin_uri, None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Removing the viewer ends its session and tokens.
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/users/{}", viewer["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = app
        .call_with(Method::GET, "/api/plants", None, &as_viewer)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .call_bearer(Method::GET, "/api/plants", &full, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn sessions_need_our_origin_and_end_with_logout_or_a_new_password(db: &TestDb) {
    let app = TestApp::new(db).await;
    let body = json!({"username": "admin", "password": "admin-password"}).to_string();
    let (status, headers, _) = app
        .call_with(
            Method::POST,
            "/api/auth/login",
            Some(&body),
            &[ANONYMOUS[0], ("x-forwarded-proto", "https")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let set_cookie = headers["set-cookie"].to_str().unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = app.login("admin", "admin-password").await;
    let (status, headers, _) = app
        .call_with(Method::POST, "/api/auth/login", Some(&body), &ANONYMOUS)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !headers["set-cookie"].to_str().unwrap().contains("Secure"),
        "plain HTTP: no Secure flag"
    );
    let other_browser = session_cookie(&headers);

    // Changes need our own Origin (or Referer): a page elsewhere cannot ride the cookie.
    let plant = json!({"name": "Origin"}).to_string();
    for headers in [
        vec![("cookie", cookie.as_str())],
        vec![
            ("cookie", cookie.as_str()),
            ("origin", "http://evil.example"),
        ],
        vec![
            ("cookie", cookie.as_str()),
            ("referer", "http://evil.example/plants.lan:8000"),
        ],
    ] {
        let (status, _, _) = app
            .call_with(Method::POST, "/api/plants", Some(&plant), &headers)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}");
    }
    let (status, _, _) = app
        .call_with(
            Method::POST,
            "/api/plants",
            Some(&plant),
            &[
                ("cookie", &cookie),
                ("referer", "http://plants.lan:8000/devices"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, plants) = app.call(Method::GET, "/api/plants", None).await;
    assert_eq!(
        plants["total"], 1,
        "only the same-origin request created a plant"
    );

    // Logout ends this session at once.
    let (status, headers, _) = app
        .call_with(
            Method::POST,
            "/api/auth/logout",
            None,
            &[("cookie", &cookie), ORIGIN],
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(headers["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let (status, headers, _) = app
        .call_with(Method::GET, "/api/plants", None, &[("cookie", &cookie)])
        .await;
    assert_eq!(
        (status, &headers["www-authenticate"]),
        (StatusCode::UNAUTHORIZED, &"Bearer".parse().unwrap())
    );

    // A new password ends every other session; this browser gets a new one.
    let mine = app.login("admin", "admin-password").await;
    let change =
        json!({"current_password": "wrong-password", "new_password": "a-new-password"}).to_string();
    let (status, _, _) = app
        .call_with(
            Method::PUT,
            "/api/auth/password",
            Some(&change),
            &[("cookie", &mine), ORIGIN],
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the current password is checked"
    );
    let change = json!({"current_password": "admin-password", "new_password": "short"}).to_string();
    let (status, _, problem) = app
        .call_with(
            Method::PUT,
            "/api/auth/password",
            Some(&change),
            &[("cookie", &mine), ORIGIN],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["detail"][0]["loc"], json!(["body", "new_password"]));
    let change =
        json!({"current_password": "admin-password", "new_password": "a-new-password"}).to_string();
    let (status, headers, _) = app
        .call_with(
            Method::PUT,
            "/api/auth/password",
            Some(&change),
            &[("cookie", &mine), ORIGIN],
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let renewed = session_cookie(&headers);
    for (cookie, expected) in [
        (&other_browser, StatusCode::UNAUTHORIZED),
        (&mine, StatusCode::UNAUTHORIZED),
        (&renewed, StatusCode::OK),
    ] {
        let (status, _, _) = app
            .call_with(Method::GET, "/api/auth/me", None, &[("cookie", cookie)])
            .await;
        assert_eq!(status, expected, "{cookie}");
    }
    let body = json!({"username": "admin", "password": "admin-password"}).to_string();
    let (status, _, _) = app
        .call_with(Method::POST, "/api/auth/login", Some(&body), &ANONYMOUS)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old password is gone");
    app.login("admin", "a-new-password").await;
}

/// Failed logins slow down; the right password gets in once the delay is over.
#[tokio::test]
async fn logins_are_throttled_without_locking_out_for_good() {
    let db = TestDb::sqlite().await;
    let app = TestApp::new(&db).await;
    let wrong = json!({"username": "admin", "password": "not-the-password"}).to_string();
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let (status, headers, _) = app
            .call_with(Method::POST, "/api/auth/login", Some(&wrong), &ANONYMOUS)
            .await;
        statuses.push(status.as_u16());
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=2).contains(&retry), "{retry}");
        }
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 401, 429]);
    // Even the right password waits out the delay, then gets in.
    let right = json!({"username": "admin", "password": "admin-password"}).to_string();
    let (status, headers, _) = app
        .call_with(Method::POST, "/api/auth/login", Some(&right), &ANONYMOUS)
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    tokio::time::sleep(Duration::from_secs(retry)).await;
    app.login("admin", "admin-password").await;
}

async fn setup_token_creates_one_admin_once(db: &TestDb) {
    let app = TestApp::without_accounts(db).await;
    let (status, _, auth) = app
        .call_with(Method::GET, "/api/auth/status", None, &ANONYMOUS)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        auth,
        json!({"setup_required": true, "auth": true, "enrollment_open": false})
    );
    let token_file = app._data_dir.path().join("setup-token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    let setup = |token: &str, username: &str| {
        json!({"token": token, "username": username, "password": "first-admin-pw"}).to_string()
    };

    let (status, _, _) = app
        .call_with(
            Method::POST,
            "/api/auth/setup",
            Some(&setup("wrong", "owner")),
            &ANONYMOUS,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let short = json!({"token": token, "username": "owner", "password": "short"}).to_string();
    let (status, _, _) = app
        .call_with(Method::POST, "/api/auth/setup", Some(&short), &ANONYMOUS)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, headers, user) = app
        .call_with(
            Method::POST,
            "/api/auth/setup",
            Some(&setup(&token, "owner")),
            &ANONYMOUS,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(user["role"], "admin");
    let cookie = session_cookie(&headers);
    let (status, _, me) = app
        .call_with(Method::GET, "/api/auth/me", None, &[("cookie", &cookie)])
        .await;
    assert_eq!(
        (status, me["username"].as_str()),
        (StatusCode::OK, Some("owner"))
    );

    assert!(!token_file.exists(), "the token file goes with the token");
    let (status, _, _) = app
        .call_with(
            Method::POST,
            "/api/auth/setup",
            Some(&setup(&token, "intruder")),
            &ANONYMOUS,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, _, auth) = app
        .call_with(Method::GET, "/api/auth/status", None, &ANONYMOUS)
        .await;
    assert_eq!(auth["setup_required"], false);
    assert_eq!(app.store.list_users().await.unwrap().len(), 1);
}

async fn registration_needs_a_key_the_window_or_an_admin(db: &TestDb) {
    let app = TestApp::new(db).await;
    let register = |mac: &str| json!({"mac_address": mac}).to_string();
    let (status, headers, problem) = app
        .call_with(
            Method::POST,
            "/api/devices/register",
            Some(&register("aa:00:00:00:00:01")),
            &ANONYMOUS,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    assert_eq!(headers["www-authenticate"], "Bearer");

    let (status, key) = app
        .call(
            Method::POST,
            "/api/enrollment-keys",
            Some(json!({"name": "shelf", "max_uses": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let secret = key["key"].as_str().unwrap().to_string();
    assert!(secret.starts_with("pek_"));
    let (status, first) = app.register_with(&secret, "aa:00:00:00:00:01").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_ne!(first["mqtt_password"], "<stored_securely>");
    // Used up: a new device is refused, a known one still re-registers (without its password).
    let (status, _) = app.register_with(&secret, "aa:00:00:00:00:02").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, again) = app.register_with(&secret, "aa:00:00:00:00:01").await;
    assert_eq!(
        (status, again["mqtt_password"].as_str()),
        (StatusCode::OK, Some("<stored_securely>"))
    );

    // A revoked key stops at once.
    let (_, unlimited) = app
        .call(
            Method::POST,
            "/api/enrollment-keys",
            Some(json!({"name": "bulk"})),
        )
        .await;
    let bulk = unlimited["key"].as_str().unwrap().to_string();
    let (status, _) = app.register_with(&bulk, "aa:00:00:00:00:03").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/enrollment-keys/{}", unlimited["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.register_with(&bulk, "aa:00:00:00:00:04").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, keys) = app.call(Method::GET, "/api/enrollment-keys", None).await;
    let listed = keys["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed.iter().all(|k| k.get("key").is_none()),
        "listed keys never show their secret"
    );
    assert!(listed
        .iter()
        .any(|k| k["name"] == "shelf" && k["uses"] == 1));

    // The window lets any device in until it closes; such devices are marked.
    let (status, window) = app
        .call(
            Method::POST,
            "/api/enrollment/window",
            Some(json!({"minutes": 0})),
        )
        .await;
    assert_eq!(
        (status, window["detail"][0]["loc"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!(["body", "minutes"]))
    );
    let (status, window) = app
        .call(
            Method::POST,
            "/api/enrollment/window",
            Some(json!({"minutes": 5})),
        )
        .await;
    assert_eq!(
        (status, window["open"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (status, _, windowed) = app
        .call_with(
            Method::POST,
            "/api/devices/register",
            Some(&register("aa:00:00:00:00:05")),
            &ANONYMOUS,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{windowed}");
    let (status, window) = app
        .call(Method::DELETE, "/api/enrollment/window", None)
        .await;
    assert_eq!(
        (status, window["open"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    let (status, _, _) = app
        .call_with(
            Method::POST,
            "/api/devices/register",
            Some(&register("aa:00:00:00:00:06")),
            &ANONYMOUS,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // An admin (the UI's Register button) registers directly.
    let (status, _) = app
        .call(
            Method::POST,
            "/api/devices/register",
            Some(json!({"mac_address": "aa:00:00:00:00:07"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, devices) = app.call(Method::GET, "/api/devices", None).await;
    let enrollment = |mac: &str| {
        devices["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["mac_address"] == mac)
            .unwrap()["enrollment"]
            .clone()
    };
    assert_eq!(enrollment("aa:00:00:00:00:01"), "key");
    assert_eq!(enrollment("aa:00:00:00:00:05"), "window");
    assert_eq!(enrollment("aa:00:00:00:00:07"), "admin");
    assert_eq!(devices["total"], 4, "refused registrations stored nothing");
}

/// A session unused past the idle limit, or older than the lifetime, is refused and removed.
#[tokio::test]
async fn sessions_expire_when_idle_or_too_old() {
    use plantops_core::account::secret_digest;
    let db = TestDb::sqlite().await;
    let app = TestApp::new(&db).await;
    let defaults = AuthSettings::default();
    let idle = chrono::Duration::from_std(defaults.session_idle).unwrap();
    let lifetime = chrono::Duration::from_std(defaults.session_lifetime).unwrap();

    let cookie = app.login("admin", "admin-password").await;
    let digest = secret_digest(cookie.split_once('=').unwrap().1);
    let now = plantops_core::now();
    // The database is changed behind the server's back, as another process
    // would: the server's few seconds of credential cache are dropped.
    let forget = || app._server.state().auth.forget_credentials();
    app.store
        .touch_session(&digest, now - idle + chrono::Duration::minutes(5))
        .await
        .unwrap();
    forget();
    let (status, _, _) = app
        .call_with(Method::GET, "/api/auth/me", None, &[("cookie", &cookie)])
        .await;
    assert_eq!(status, StatusCode::OK, "idle, but not for long enough");
    app.store
        .touch_session(&digest, now - idle - chrono::Duration::minutes(1))
        .await
        .unwrap();
    forget();
    let (status, _, _) = app
        .call_with(Method::GET, "/api/auth/me", None, &[("cookie", &cookie)])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        app.store.session(&digest).await.unwrap().is_none(),
        "removed"
    );

    // In use all along, but signed in longer ago than the lifetime.
    let cookie = app.login("admin", "admin-password").await;
    let digest = secret_digest(cookie.split_once('=').unwrap().1);
    let admin = app.store.user_by_name("admin").await.unwrap().unwrap().user;
    app.store.delete_session(&digest).await.unwrap();
    app.store
        .insert_session(
            &digest,
            admin.id,
            now - lifetime - chrono::Duration::minutes(1),
        )
        .await
        .unwrap();
    app.store.touch_session(&digest, now).await.unwrap();
    forget();
    let (status, _, _) = app
        .call_with(Method::GET, "/api/auth/me", None, &[("cookie", &cookie)])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Anonymous callers see the overall status only; counters need credentials.
#[tokio::test]
async fn health_counters_need_credentials() {
    let db = TestDb::sqlite().await;
    let app = TestApp::new(&db).await;
    let (status, _, health) = app
        .call_with(Method::GET, "/api/health", None, &ANONYMOUS)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "healthy");
    assert!(health.get("components").is_none(), "{health}");
    let (_, health) = app.call(Method::GET, "/api/health", None).await;
    assert!(
        health["components"]["ingest"]["received"].is_u64(),
        "{health}"
    );
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

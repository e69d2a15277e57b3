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
use plantops_server::auth::AuthSettings;
use plantops_server::launch::{Server, ServerConfig};
use plantops_services::accounts::create_api_token;
use plantops_services::start::{BrokerConfig, BuiltinBrokerConfig, ServicesConfig};
use plantops_store::DynStore;
use plantops_testkit::TestDb;
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

mod access;
mod care;
mod devices;
mod plants;
mod platform;

struct TestApp {
    router: Router,
    store: DynStore,
    events: tokio::sync::broadcast::Sender<plantops_core::event::Event>,
    /// The admin's API token, sent unless a call brings its own credentials.
    token: String,
    server: Server,
    _data_dir: tempfile::TempDir,
}

impl TestApp {
    /// The server as `plantops serve` starts it, in-process, with the
    /// built-in broker on a free port.
    async fn without_accounts(db: &TestDb) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let plain = format!("127.0.0.1:{}", plantops_testkit::free_port());
        let server = Server::start(ServerConfig {
            services: ServicesConfig {
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
                device_rate: Default::default(),
                instance_id: None,
                instance_timeout: std::time::Duration::from_secs(90),
                backups: None,
                home_assistant: Default::default(),
                watering_detection: Default::default(),
                low_battery_percent: Some(15.0),
                rollup_retention_days: 0,
                discord_webhook_prefixes:
                    plantops_services::alerts::settings::DISCORD_WEBHOOK_PREFIXES
                        .map(String::from)
                        .to_vec(),
                retention_days: 0,
                discord_webhook_url: None,
                notification_services: Default::default(),
                llm: plantops_advisor::Endpoints::default(),
            },
            max_event_streams: 3,
            http: Default::default(),
            mqtt_auth_secret: None,
            auth: AuthSettings::default(),
        })
        .await
        .unwrap();
        Self {
            router: server.router(),
            store: server.state().store.clone(),
            events: server.state().events.clone(),
            token: String::new(),
            server,
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

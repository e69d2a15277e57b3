//! A local HTTP server that speaks three notification services' wire
//! formats: ntfy's JSON publishing (`POST /` with `topic`), Telegram's Bot
//! API `sendMessage` (`POST /bot<token>/sendMessage`), and a webhook
//! receiver that checks `X-PlantOps-Signature` (`POST /hook`). Each
//! service's replies can be scripted; what each accepted is recorded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::mpsc;

pub const NTFY_TOKEN: &str = "tk_plantops_test_token";
pub const BOT_TOKEN: &str = "123456:ABC-plantops_test";
pub const WEBHOOK_SECRET: &str = "webhook-secret-0123456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Ntfy,
    Telegram,
    Webhook,
}

#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// 429 asking for this many seconds, as the service says it.
    RateLimited(u64),
}

/// One accepted message: its body and headers.
#[derive(Debug)]
pub struct Received {
    pub body: Value,
    pub headers: HeaderMap,
}

#[derive(Clone)]
struct Shared {
    scripts: Arc<Mutex<HashMap<Service, VecDeque<Reply>>>>,
    /// Services that answer 503 to everything until this is cleared.
    down: Arc<Mutex<Vec<Service>>>,
    attempts: Arc<Mutex<HashMap<Service, usize>>>,
    accepted: Arc<Mutex<HashMap<Service, mpsc::UnboundedSender<Received>>>>,
}

pub struct Services {
    /// The server's root: ntfy's server and Telegram's API base.
    pub base: String,
    shared: Shared,
    received: HashMap<Service, mpsc::UnboundedReceiver<Received>>,
}

impl Shared {
    /// The scripted reply for this attempt, if any.
    fn scripted(&self, service: Service) -> Option<Response> {
        *self.attempts.lock().unwrap().entry(service).or_default() += 1;
        if self.down.lock().unwrap().contains(&service) {
            return Some((StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response());
        }
        let reply = self
            .scripts
            .lock()
            .unwrap()
            .get_mut(&service)
            .and_then(VecDeque::pop_front)?;
        Some(match (service, reply) {
            (Service::Telegram, Reply::RateLimited(seconds)) => (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({"ok": false, "error_code": 429,
                    "description": format!("Too Many Requests: retry after {seconds}"),
                    "parameters": {"retry_after": seconds}})),
            )
                .into_response(),
            (_, Reply::RateLimited(seconds)) => (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", seconds.to_string())],
                "slow down",
            )
                .into_response(),
        })
    }

    fn accept(&self, service: Service, body: Value, headers: HeaderMap) {
        let senders = self.accepted.lock().unwrap();
        let _ = senders[&service].send(Received { body, headers });
    }
}

async fn ntfy(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {NTFY_TOKEN}"))
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"code": 40101, "http": 401,
            "error": "unauthorized"})),
        )
            .into_response();
    }
    if !body["topic"].is_string() || !body["message"].is_string() {
        return (StatusCode::BAD_REQUEST, "topic and message required").into_response();
    }
    if let Some(reply) = shared.scripted(Service::Ntfy) {
        return reply;
    }
    shared.accept(Service::Ntfy, body.clone(), headers);
    Json(
        json!({"id": "abc123", "time": 1, "event": "message", "topic": body["topic"],
        "message": body["message"]}),
    )
    .into_response()
}

async fn telegram(
    State(shared): State<Shared>,
    Path(token): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if token != format!("bot{BOT_TOKEN}") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"ok": false, "error_code": 401,
            "description": "Unauthorized"})),
        )
            .into_response();
    }
    if !body["text"].is_string() || body["chat_id"].is_null() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"ok": false, "error_code": 400,
            "description": "Bad Request: message text is empty"})),
        )
            .into_response();
    }
    if let Some(reply) = shared.scripted(Service::Telegram) {
        return reply;
    }
    shared.accept(Service::Telegram, body.clone(), headers);
    Json(
        json!({"ok": true, "result": {"message_id": 1, "chat": {"id": body["chat_id"]},
        "text": body["text"]}}),
    )
    .into_response()
}

/// Checks the signature as a receiver would: HMAC-SHA256 over the raw body.
async fn webhook(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    if headers
        .get("x-plantops-signature")
        .and_then(|v| v.to_str().ok())
        != Some(expected.as_str())
    {
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    if let Some(reply) = shared.scripted(Service::Webhook) {
        return reply;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    shared.accept(Service::Webhook, body, headers);
    StatusCode::NO_CONTENT.into_response()
}

impl Services {
    pub async fn start() -> Services {
        let mut senders = HashMap::new();
        let mut received = HashMap::new();
        for service in [Service::Ntfy, Service::Telegram, Service::Webhook] {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.insert(service, tx);
            received.insert(service, rx);
        }
        let shared = Shared {
            scripts: Arc::default(),
            down: Arc::default(),
            attempts: Arc::default(),
            accepted: Arc::new(Mutex::new(senders)),
        };
        let app = Router::new()
            .route("/", post(ntfy))
            .route("/{token}/sendMessage", post(telegram))
            .route("/hook", post(webhook))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Services {
            base,
            shared,
            received,
        }
    }

    /// The next message `service` accepted.
    pub async fn next(&mut self, service: Service) -> Received {
        let receiver = self.received.get_mut(&service).unwrap();
        tokio::time::timeout(Duration::from_secs(30), receiver.recv())
            .await
            .unwrap_or_else(|_| panic!("{service:?} received nothing within 30 s"))
            .expect("services running")
    }

    /// What `service` accepted and nobody read yet.
    pub fn unread(&mut self, service: Service) -> Vec<Received> {
        let receiver = self.received.get_mut(&service).unwrap();
        std::iter::from_fn(|| receiver.try_recv().ok()).collect()
    }

    pub fn script(&self, service: Service, replies: &[Reply]) {
        self.shared
            .scripts
            .lock()
            .unwrap()
            .insert(service, replies.iter().copied().collect());
    }

    /// `service` answers 503 to everything until `up` is called.
    pub fn down(&self, service: Service) {
        self.shared.down.lock().unwrap().push(service);
    }

    pub fn up(&self, service: Service) {
        self.shared.down.lock().unwrap().retain(|s| *s != service);
    }

    pub fn attempts(&self, service: Service) -> usize {
        self.shared
            .attempts
            .lock()
            .unwrap()
            .get(&service)
            .copied()
            .unwrap_or(0)
    }
}

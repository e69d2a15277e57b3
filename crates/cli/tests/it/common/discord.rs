//! A local HTTP server that answers like Discord's webhook endpoint: 204 on
//! success, 429 with `retry_after`, or 500, as a test scripts it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub enum Reply {
    NoContent,
    RateLimited(f64),
    ServerError,
    /// 307 to the URL of another `Discord`.
    Redirect(String),
    /// 429 with this `Retry-After` header and no JSON body.
    RateLimitedHeader(&'static str),
}

#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<VecDeque<Reply>>>,
    attempts: Arc<AtomicUsize>,
    delivered: mpsc::UnboundedSender<Value>,
}

pub struct Discord {
    pub url: String,
    shared: Shared,
    delivered: mpsc::UnboundedReceiver<Value>,
}

async fn webhook(State(shared): State<Shared>, Json(body): Json<Value>) -> Response {
    shared.attempts.fetch_add(1, Ordering::SeqCst);
    let reply = shared
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Reply::NoContent);
    match reply {
        Reply::NoContent => {
            let _ = shared.delivered.send(body);
            StatusCode::NO_CONTENT.into_response()
        }
        Reply::RateLimited(seconds) => (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"message": "You are being rate limited.", "retry_after": seconds, "global": false})),
        )
            .into_response(),
        Reply::ServerError => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Reply::RateLimitedHeader(retry_after) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", retry_after)],
            "slow down",
        )
            .into_response(),
        Reply::Redirect(to) => (StatusCode::TEMPORARY_REDIRECT, [("location", to)]).into_response(),
    }
}

impl Discord {
    pub async fn start(script: &[Reply]) -> Discord {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Shared {
            script: Arc::new(Mutex::new(script.iter().cloned().collect())),
            attempts: Arc::default(),
            delivered: tx,
        };
        let app = Router::new()
            .route("/api/webhooks/123/secret-token", post(webhook))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/api/webhooks/123/secret-token",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Discord {
            url,
            shared,
            delivered: rx,
        }
    }

    /// The next message Discord accepted.
    pub async fn next_delivered(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(20), self.delivered.recv())
            .await
            .expect("a delivered notification within 20 s")
            .expect("discord stub running")
    }

    pub fn attempts(&self) -> usize {
        self.shared.attempts.load(Ordering::SeqCst)
    }

    pub fn script(&self, replies: &[Reply]) {
        *self.shared.script.lock().unwrap() = replies.iter().cloned().collect();
    }
}

//! A local HTTP server that answers like the Anthropic Messages API
//! (`POST /v1/messages`) and the OpenAI Chat Completions API
//! (`POST /v1/chat/completions`), as a test scripts it, and records every
//! request it receives.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with this text as the model's answer.
    Text(String),
    /// 401 with the provider's own error body.
    BadKey,
    /// 429 with `retry-after: 0`.
    RateLimited,
    /// No answer for this long.
    Stall(Duration),
    /// 307 to this URL.
    Redirect(String),
}

/// A request as the provider received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The text of the last user message.
    pub fn last_user_text(&self) -> String {
        let messages = self.body["messages"].as_array().unwrap();
        let last = messages.iter().rev().find(|m| m["role"] == "user").unwrap();
        last["content"].as_str().unwrap().to_string()
    }
}

#[derive(Clone, Default)]
struct Shared {
    script: Arc<Mutex<VecDeque<Reply>>>,
    received: Arc<Mutex<Vec<Received>>>,
}

pub struct LlmProvider {
    /// For ANTHROPIC_BASE_URL.
    pub anthropic_url: String,
    /// For OPENAI_BASE_URL (with `/v1`, as the OpenAI SDK expects).
    pub openai_url: String,
    shared: Shared,
}

pub fn valid_plan() -> Value {
    json!({
        "summary": "A healthy Monstera that needs water soon.",
        "watering": {"frequency": "every 7 days", "amount": "500 ml", "next_date": "2026-12-01"},
        "light": {"current": "bright indirect", "ideal": "bright indirect", "recommendation": "keep it where it is"},
        "humidity": {"current": "55 %", "ideal": "60 %", "recommendation": "mist weekly"},
        "temperature": {"current": "21 °C", "ideal": "18–27 °C", "recommendation": "no change"},
        "alerts": ["soil is drying"],
        "tips": ["wipe the leaves monthly"]
    })
}

async fn answer(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let anthropic = uri.path() == "/v1/messages";
    shared.received.lock().unwrap().push(Received {
        path: uri.path().to_string(),
        headers,
        body: body.clone(),
    });
    let reply = shared
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| Reply::Text(valid_plan().to_string()));
    let model = body["model"].clone();
    match reply {
        Reply::Text(text) if anthropic => Json(json!({
            "id": "msg_01test",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": 400, "output_tokens": 200}
        }))
        .into_response(),
        Reply::Text(text) => Json(json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 1_764_000_000,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": 400, "completion_tokens": 200, "total_tokens": 600}
        }))
        .into_response(),
        Reply::BadKey if anthropic => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})),
        )
            .into_response(),
        Reply::BadKey => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {
                "message": "Incorrect API key provided: sk-bad. You can find your API key at https://platform.openai.com/account/api-keys.",
                "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})),
        )
            .into_response(),
        Reply::RateLimited if anthropic => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "0")],
            Json(json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}})),
        )
            .into_response(),
        Reply::RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "0")],
            Json(json!({"error": {"message": "Rate limit reached for gpt-4o", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})),
        )
            .into_response(),
        Reply::Stall(duration) => {
            tokio::time::sleep(duration).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Reply::Redirect(to) => (StatusCode::TEMPORARY_REDIRECT, [("location", to)]).into_response(),
    }
}

impl LlmProvider {
    pub async fn start() -> LlmProvider {
        let shared = Shared::default();
        let app = Router::new()
            .route("/v1/messages", post(answer))
            .route("/v1/chat/completions", post(answer))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        LlmProvider {
            anthropic_url: base.clone(),
            openai_url: format!("{base}/v1"),
            shared,
        }
    }

    /// The replies for the next requests (then valid plans again).
    pub fn script(&self, replies: &[Reply]) {
        *self.shared.script.lock().unwrap() = replies.iter().cloned().collect();
    }

    /// Every request so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }
}

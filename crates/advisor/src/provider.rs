//! The two provider wire formats behind one `complete` call.

use std::time::{Duration, Instant};

use plantops_core::backoff::Backoff;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Anthropic,
    #[serde(rename = "openai")]
    OpenAi,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::OpenAi => "openai",
        }
    }

    /// docs/api.md's default model per provider.
    pub fn default_model(self) -> &'static str {
        match self {
            Provider::Anthropic => "claude-sonnet-4-20250514",
            Provider::OpenAi => "gpt-4o",
        }
    }
}

/// Where the providers are reached. Base URLs follow the providers' own
/// SDKs: Anthropic's without `/v1`, OpenAI's with it (so an
/// OpenAI-compatible server such as Ollama is `http://host:11434/v1`).
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub anthropic_base_url: String,
    pub openai_base_url: String,
    /// Per attempt.
    pub timeout: Duration,
    /// Attempts for 429 and 5xx answers (1 = no retry).
    pub attempts: u32,
}

impl Default for Endpoints {
    fn default() -> Self {
        Self {
            anthropic_base_url: "https://api.anthropic.com".into(),
            openai_base_url: "https://api.openai.com/v1".into(),
            timeout: Duration::from_secs(60),
            attempts: 3,
        }
    }
}

/// Anthropic's API version header value.
const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Longest we honour a provider's `retry-after`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// 401/403: the key is wrong or lacks access; the provider's reason.
    #[error("the provider refused the API key: {0}")]
    Unauthorized(String),
    /// 400/404/422: e.g. an unknown model; the provider's reason.
    #[error("the provider rejected the request: {0}")]
    Rejected(String),
    #[error("the provider is rate limiting requests: {0}")]
    RateLimited(String),
    #[error("the provider failed ({status}): {message}")]
    Unavailable { status: u16, message: String },
    #[error("no answer from the provider within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the provider: {0}")]
    Network(String),
    #[error("the provider's answer has an unexpected shape: {0}")]
    Malformed(String),
}

impl LlmError {
    fn retryable(&self) -> bool {
        matches!(
            self,
            LlmError::RateLimited(_) | LlmError::Unavailable { .. } | LlmError::Network(_)
        )
    }
}

/// A conversation turn; the advisor's corrective retry adds turns.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub from_model: bool,
    pub text: String,
}

#[derive(Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    endpoints: Endpoints,
}

pub struct Completion {
    pub text: String,
    pub latency: Duration,
    /// Tokens billed, when the provider reports them.
    pub usage: Option<Usage>,
}

/// Tokens a model call was billed for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
}

impl std::ops::Add for Usage {
    type Output = Usage;
    fn add(self, other: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.saturating_add(other.input_tokens),
            output_tokens: self.output_tokens.saturating_add(other.output_tokens),
        }
    }
}

/// Anthropic's `usage.input_tokens/output_tokens`, OpenAI's
/// `usage.prompt_tokens/completion_tokens`.
fn usage(provider: Provider, answer: &Value) -> Option<Usage> {
    let usage = &answer["usage"];
    let (input, output) = match provider {
        Provider::Anthropic => ("input_tokens", "output_tokens"),
        Provider::OpenAi => ("prompt_tokens", "completion_tokens"),
    };
    let count = |field: &str| {
        usage[field]
            .as_u64()
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    Some(Usage {
        input_tokens: count(input)?,
        output_tokens: count(output)?,
    })
}

impl LlmClient {
    pub fn new(endpoints: Endpoints) -> Result<Self, LlmError> {
        let http = reqwest::Client::builder()
            .timeout(endpoints.timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("plantops/", env!("CARGO_PKG_VERSION")))
            // A redirect would carry the API key to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| LlmError::Network(error.to_string()))?;
        Ok(Self { http, endpoints })
    }

    /// How long one request may take (PLANTOPS_LLM_TIMEOUT_SECS).
    pub fn timeout(&self) -> Duration {
        self.endpoints.timeout
    }

    /// One answer from the model, retrying 429 and 5xx with backoff.
    pub async fn complete(
        &self,
        provider: Provider,
        model: &str,
        api_key: &str,
        system: &str,
        turns: &[Turn],
        max_tokens: u32,
    ) -> Result<Completion, LlmError> {
        let started = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(500), MAX_RETRY_AFTER);
        let mut attempt = 1;
        loop {
            match self
                .attempt(provider, model, api_key, system, turns, max_tokens)
                .await
            {
                Ok((text, usage)) => {
                    return Ok(Completion {
                        text,
                        latency: started.elapsed(),
                        usage,
                    })
                }
                Err((error, retry_after))
                    if error.retryable() && attempt < self.endpoints.attempts =>
                {
                    let delay = backoff.next_delay();
                    let wait = retry_after.unwrap_or(delay).min(MAX_RETRY_AFTER);
                    tracing::warn!(provider = provider.as_str(), %error, attempt, retry_in_ms = wait.as_millis() as u64, "LLM request failed; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// A failure to send the request or read the answer.
    fn transport_error(&self, error: &reqwest::Error) -> LlmError {
        if error.is_timeout() {
            LlmError::Timeout(self.endpoints.timeout)
        } else {
            LlmError::Network(without_url(error))
        }
    }

    async fn attempt(
        &self,
        provider: Provider,
        model: &str,
        api_key: &str,
        system: &str,
        turns: &[Turn],
        max_tokens: u32,
    ) -> Result<(String, Option<Usage>), (LlmError, Option<Duration>)> {
        let request = match provider {
            Provider::Anthropic => {
                let messages: Vec<Value> = turns
                    .iter()
                    .map(|turn| {
                        json!({
                            "role": if turn.from_model { "assistant" } else { "user" },
                            "content": turn.text,
                        })
                    })
                    .collect();
                self.http
                    .post(format!(
                        "{}/v1/messages",
                        self.endpoints.anthropic_base_url.trim_end_matches('/')
                    ))
                    .header("x-api-key", api_key)
                    .header("anthropic-version", ANTHROPIC_VERSION)
                    .json(&json!({
                        "model": model,
                        "max_tokens": max_tokens,
                        "system": system,
                        "messages": messages,
                    }))
            }
            Provider::OpenAi => {
                let mut messages = vec![json!({"role": "system", "content": system})];
                messages.extend(turns.iter().map(|turn| {
                    json!({
                        "role": if turn.from_model { "assistant" } else { "user" },
                        "content": turn.text,
                    })
                }));
                self.http
                    .post(format!(
                        "{}/chat/completions",
                        self.endpoints.openai_base_url.trim_end_matches('/')
                    ))
                    .bearer_auth(api_key)
                    .json(&json!({
                        "model": model,
                        "max_tokens": max_tokens,
                        "messages": messages,
                    }))
            }
        };
        let response = request
            .send()
            .await
            .map_err(|error| (self.transport_error(&error), None))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<f64>().ok())
            .filter(|secs| secs.is_finite() && *secs >= 0.0)
            // Bounded before the conversion, which panics past u64 seconds.
            .map(|secs| Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())));
        let body = response
            .text()
            .await
            .map_err(|error| (self.transport_error(&error), None))?;
        if !status.is_success() {
            let reason = provider_reason(&body).unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("unknown error")
                    .to_string()
            });
            let error = match status.as_u16() {
                401 | 403 => LlmError::Unauthorized(reason),
                429 => LlmError::RateLimited(reason),
                code @ 500..=599 => LlmError::Unavailable {
                    status: code,
                    message: reason,
                },
                _ => LlmError::Rejected(format!("{} {reason}", status.as_u16())),
            };
            return Err((error, retry_after));
        }
        let value: Value = serde_json::from_str(&body)
            .map_err(|error| (LlmError::Malformed(error.to_string()), None))?;
        let text = match provider {
            Provider::Anthropic => value["content"].as_array().map(|blocks| {
                blocks
                    .iter()
                    .filter(|block| block["type"] == "text")
                    .filter_map(|block| block["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("")
            }),
            Provider::OpenAi => value["choices"][0]["message"]["content"]
                .as_str()
                .map(str::to_string),
        };
        let text =
            text.ok_or_else(|| (LlmError::Malformed("no text in the answer".into()), None))?;
        Ok((text, usage(provider, &value)))
    }
}

/// The provider's own explanation from an error body: both APIs answer
/// `{"error": {"message": ...}}` (Anthropic adds `"type": "error"`).
fn provider_reason(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    let message = value["error"]["message"].as_str()?;
    Some(message.chars().take(300).collect())
}

/// reqwest's errors name the URL; ours must not carry query strings or
/// anything a user put in a base URL into logs, so only the cause is kept.
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "<provider>");
    }
    text
}

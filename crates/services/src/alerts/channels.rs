//! Notification channels beside the settings' Discord webhook: more Discord
//! webhooks, ntfy, Telegram, a signed webhook and email. A channel's fields
//! are kept as one JSON document sealed for that channel alone; the API
//! shows a summary without its secrets.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use plantops_core::alert::Severity;
use plantops_core::secret::{mask, SecretBox, SecretError};
use plantops_core::validation::{Collector, FieldError};
use plantops_core::ValidationErrors;
use plantops_store::{ChannelStore, StoredChannel};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use super::settings::WebhookDestinations;
use crate::keys::channel_purpose;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Discord,
    Ntfy,
    Telegram,
    Webhook,
    Email,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Discord => "discord",
            ChannelKind::Ntfy => "ntfy",
            ChannelKind::Telegram => "telegram",
            ChannelKind::Webhook => "webhook",
            ChannelKind::Email => "email",
        }
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, required (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption (a relay on the same host or network); never with a
    /// password.
    None,
}

impl SmtpSecurity {
    fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        }
    }
}

/// A Discord webhook's fields. Each kind's fields are described once, here:
/// the API's validation takes their names and which are required from these
/// schemas, and the UI builds its form from them in the OpenAPI document
/// (a field's description up to its first full stop is its label, its
/// example the placeholder, `writeOnly` a secret).
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DiscordChannel {
    /// Webhook URL. Held to `PLANTOPS_DISCORD_WEBHOOK_PREFIXES`.
    #[schema(example = "https://discord.com/api/webhooks/…", write_only)]
    pub url: String,
}

#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NtfyChannel {
    /// Server and topic. As ntfy publishes to them; the topic is letters,
    /// digits, `-` and `_`.
    #[schema(example = "https://ntfy.sh/my-plants")]
    pub url: String,
    /// Access token. Sent as `Authorization: Bearer`.
    #[schema(write_only)]
    pub token: Option<String>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TelegramChannel {
    /// Bot token. From BotFather.
    #[schema(example = "123456:ABC…", write_only)]
    pub bot_token: String,
    /// Chat id. A number (negative for groups) or `@channelname`.
    #[schema(example = "-1001234567890 or @channel")]
    pub chat_id: String,
}

#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookChannel {
    /// URL. Where to POST (http or https, no credentials in it).
    #[schema(example = "https://automation.example.com/plantops")]
    pub url: String,
    /// Signing secret (16+ characters). The HMAC-SHA256 key of
    /// `X-PlantOps-Signature`, 16–256 characters.
    #[schema(write_only)]
    pub secret: String,
}

#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EmailChannel {
    /// SMTP server. Its host name.
    #[schema(example = "smtp.example.com")]
    pub smtp_host: String,
    /// Security. Default `starttls`.
    #[schema(required = false)]
    pub smtp_security: SmtpSecurity,
    /// Port. Default 587 (starttls), 465 (tls) or 25 (none).
    #[schema(example = 587, required = false)]
    pub smtp_port: u16,
    /// User name.
    pub smtp_username: Option<String>,
    /// Password. Never sent unencrypted.
    #[schema(write_only)]
    pub smtp_password: Option<String>,
    /// From. The sender address.
    #[schema(example = "PlantOps <plants@example.com>")]
    pub from: String,
    /// To (comma-separated). 1–10 recipient addresses.
    #[schema(example = json!(["me@example.com"]))]
    pub to: Vec<String>,
}

/// A channel's own fields, as sealed.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChannelConfig {
    Discord(DiscordChannel),
    Ntfy(NtfyChannel),
    Telegram(TelegramChannel),
    Webhook(WebhookChannel),
    Email(EmailChannel),
}

/// Secrets stay out of logs: only the kind shows.
impl std::fmt::Debug for ChannelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChannelConfig({})", self.kind().as_str())
    }
}

impl ChannelConfig {
    pub fn kind(&self) -> ChannelKind {
        match self {
            ChannelConfig::Discord(DiscordChannel { .. }) => ChannelKind::Discord,
            ChannelConfig::Ntfy(NtfyChannel { .. }) => ChannelKind::Ntfy,
            ChannelConfig::Telegram(TelegramChannel { .. }) => ChannelKind::Telegram,
            ChannelConfig::Webhook(WebhookChannel { .. }) => ChannelKind::Webhook,
            ChannelConfig::Email(EmailChannel { .. }) => ChannelKind::Email,
        }
    }

    /// Where notices go, without secrets: for the API and the UI.
    pub fn summary(&self) -> String {
        match self {
            ChannelConfig::Discord(DiscordChannel { url }) => {
                format!("Discord webhook {}", mask(url))
            }
            ChannelConfig::Ntfy(NtfyChannel { url, token }) => {
                // A topic on a public server is as good as a password.
                let host = host_of(url);
                let auth = if token.is_some() {
                    ", with a token"
                } else {
                    ""
                };
                format!("ntfy on {host}, topic {}{auth}", mask(url))
            }
            ChannelConfig::Telegram(TelegramChannel { chat_id, .. }) => {
                format!("Telegram chat {chat_id}")
            }
            ChannelConfig::Webhook(WebhookChannel { url, .. }) => {
                format!("POST to {} (signed)", host_of(url))
            }
            ChannelConfig::Email(EmailChannel {
                smtp_host,
                smtp_port,
                to,
                ..
            }) => format!("email to {} via {smtp_host}:{smtp_port}", to.join(", ")),
        }
    }
}

fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}

/// A channel as the API takes it: `kind`, `name`, `min_severity` and the
/// kind's own fields. On update, fields left out keep their stored values
/// (the UI never sees the secrets it would have to send back).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelInput {
    pub kind: ChannelKind,
    /// 1–100 characters.
    pub name: String,
    /// The least urgent alerts this channel takes; default `info` (all).
    pub min_severity: Option<Severity>,
    /// discord: the webhook URL; ntfy: server and topic as ntfy publishes
    /// to them (`https://ntfy.sh/my-plants`); webhook: where to POST.
    pub url: Option<String>,
    /// ntfy: an access token (optional).
    pub token: Option<String>,
    /// telegram: the bot's token from BotFather.
    pub bot_token: Option<String>,
    /// telegram: the chat's id (a number, negative for groups) or
    /// `@channelname`.
    pub chat_id: Option<String>,
    /// webhook: the HMAC-SHA256 key for `X-PlantOps-Signature` (16–256
    /// characters).
    pub secret: Option<String>,
    /// email: the SMTP server's host name.
    pub smtp_host: Option<String>,
    /// email: default 587 (starttls), 465 (tls) or 25 (none).
    pub smtp_port: Option<u16>,
    /// email: default `starttls`.
    pub smtp_security: Option<SmtpSecurity>,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<String>,
    /// email: the sender address (`PlantOps <plants@example.com>`).
    pub from: Option<String>,
    /// email: 1–10 recipient addresses.
    pub to: Option<Vec<String>>,
}

/// A channel as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChannelView {
    pub id: Uuid,
    pub kind: ChannelKind,
    pub name: String,
    pub min_severity: Severity,
    /// Where notices go, secrets masked.
    pub target: String,
    /// Notices waiting for this channel.
    pub pending: u64,
    /// Why the last attempt failed, until a delivery succeeds.
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A channel opened for delivery.
#[derive(Debug, Clone)]
pub struct Channel {
    pub id: Uuid,
    pub name: String,
    pub min_severity: Severity,
    pub config: ChannelConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error(transparent)]
    Store(#[from] plantops_store::StoreError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("stored channel configuration unreadable: {0}")]
    Corrupt(String),
}

/// The channels in the database, sealed and opened.
pub struct Channels {
    store: Arc<dyn ChannelStore>,
    secrets: SecretBox,
}

impl Channels {
    pub fn new(store: Arc<dyn ChannelStore>, secrets: SecretBox) -> Self {
        Self { store, secrets }
    }

    pub fn open(&self, stored: &StoredChannel) -> Result<Channel, ChannelError> {
        let json = self
            .secrets
            .open(&channel_purpose(stored.id), &stored.config_sealed)?;
        let config: ChannelConfig =
            serde_json::from_str(&json).map_err(|e| ChannelError::Corrupt(e.to_string()))?;
        Ok(Channel {
            id: stored.id,
            name: stored.name.clone(),
            min_severity: stored.min_severity,
            config,
        })
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Channel>, ChannelError> {
        match self.store.get_channel(id).await? {
            Some(stored) => Ok(Some(self.open(&stored)?)),
            None => Ok(None),
        }
    }

    pub fn view(&self, stored: &StoredChannel) -> Result<ChannelView, ChannelError> {
        let channel = self.open(stored)?;
        Ok(ChannelView {
            id: stored.id,
            kind: channel.config.kind(),
            name: stored.name.clone(),
            min_severity: stored.min_severity,
            target: channel.config.summary(),
            pending: stored.pending,
            last_error: stored.last_error.clone(),
            last_error_at: stored.last_error_at,
            created_at: stored.created_at,
            updated_at: stored.updated_at,
        })
    }

    pub async fn list(&self) -> Result<Vec<ChannelView>, ChannelError> {
        let stored = self.store.list_channels().await?;
        stored.iter().map(|s| self.view(s)).collect()
    }

    /// Seals a checked channel for storage.
    pub fn seal(&self, channel: &Channel, created_at: DateTime<Utc>) -> StoredChannel {
        let json = serde_json::to_string(&channel.config).unwrap_or_default();
        StoredChannel {
            id: channel.id,
            kind: channel.config.kind().as_str().to_string(),
            name: channel.name.clone(),
            min_severity: channel.min_severity,
            config_sealed: self.secrets.seal(&channel_purpose(channel.id), &json),
            created_at,
            updated_at: Utc::now(),
            last_error: None,
            last_error_at: None,
            pending: 0,
        }
    }
}

/// Limits on what a channel may hold.
const MAX_NAME: usize = 100;
const MAX_URL: usize = 2048;
const MAX_SECRET: usize = 256;
const MIN_WEBHOOK_SECRET: usize = 16;
const MAX_RECIPIENTS: usize = 10;

impl ChannelInput {
    /// Checks the input and builds the channel; `stored` (an update of a
    /// channel of the same kind) fills in the fields left out. Every bad
    /// field is named.
    pub fn into_channel(
        self,
        id: Uuid,
        stored: Option<&Channel>,
        discord: &WebhookDestinations,
    ) -> Result<Channel, ValidationErrors> {
        let mut errors = Collector::default();
        let name = self.name.trim().to_string();
        if name.is_empty() || name.chars().count() > MAX_NAME {
            errors.push(field_error(
                "name",
                "name must be 1–100 characters",
                "value_error",
            ));
        }
        let min_severity = self
            .min_severity
            .or(stored.map(|c| c.min_severity))
            .unwrap_or(Severity::Info);
        let previous = stored.map(|c| &c.config).filter(|c| c.kind() == self.kind);
        let config = self.config(previous, discord, &mut errors);
        errors.finish()?;
        let config = config
            .ok_or_else(|| ValidationErrors::single(&["body"], "invalid channel", "value_error"))?;
        Ok(Channel {
            id,
            name,
            min_severity,
            config,
        })
    }

    /// The channel's fields: the stored ones (same kind), overlaid with the
    /// given ones, defaults filled in; each checked, then read as the kind's
    /// configuration.
    fn config(
        self,
        previous: Option<&ChannelConfig>,
        discord: &WebhookDestinations,
        errors: &mut Collector,
    ) -> Option<ChannelConfig> {
        let kind = self.kind;
        let trimmed = |v: Option<String>| v.map(|s| Value::from(s.trim()));
        // Secrets are taken as typed: a space may belong to a password.
        let given: [(&str, Option<Value>); 12] = [
            ("url", trimmed(self.url)),
            ("token", trimmed(self.token)),
            ("bot_token", trimmed(self.bot_token)),
            ("chat_id", trimmed(self.chat_id)),
            ("secret", self.secret.map(Value::from)),
            ("smtp_host", trimmed(self.smtp_host)),
            ("smtp_port", self.smtp_port.map(Value::from)),
            (
                "smtp_security",
                self.smtp_security.map(|s| serde_json::json!(s)),
            ),
            ("smtp_username", trimmed(self.smtp_username)),
            ("smtp_password", self.smtp_password.map(Value::from)),
            ("from", trimmed(self.from)),
            (
                "to",
                self.to
                    .map(|to| to.iter().map(|a| a.trim()).collect::<Vec<_>>().into()),
            ),
        ];
        let fields = kind.fields();
        let mut merged = match previous.map(serde_json::to_value) {
            Some(Ok(Value::Object(stored))) => stored,
            _ => Map::new(),
        };
        for (field, value) in given {
            let Some(value) = value else { continue };
            match fields.iter().find(|(name, _, _)| name == field) {
                None => errors.push(field_error(
                    field,
                    format!("{field} is not a field of a {} channel", kind.as_str()),
                    "value_error.extra",
                )),
                // An empty optional field removes it.
                Some((_, false, _)) if value.as_str() == Some("") => {
                    merged.remove(field);
                }
                Some(_) => {
                    merged.insert(field.to_string(), value);
                }
            }
        }
        if kind == ChannelKind::Email {
            let security = merged
                .entry("smtp_security")
                .or_insert_with(|| serde_json::json!(SmtpSecurity::Starttls))
                .clone();
            let port = serde_json::from_value::<SmtpSecurity>(security)
                .map_or(587, SmtpSecurity::default_port);
            merged.entry("smtp_port").or_insert_with(|| port.into());
        }
        let mut missing = Vec::new();
        for (field, required, list) in &fields {
            let empty = match merged.get(field.as_str()) {
                None | Some(Value::Null) => true,
                Some(Value::String(s)) => s.is_empty(),
                Some(Value::Array(list)) => list.is_empty(),
                Some(_) => false,
            };
            if *required && empty {
                errors.push(field_error(
                    field,
                    format!("{field} is required"),
                    "value_error.missing",
                ));
                // Empty for now, so the fields that are there are checked too.
                let empty = if *list {
                    Value::Array(Vec::new())
                } else {
                    Value::from("")
                };
                merged.insert(field.clone(), empty);
                missing.push(field.clone());
            }
        }
        merged.insert("kind".into(), kind.as_str().into());
        let config: ChannelConfig = serde_json::from_value(Value::Object(merged)).ok()?;
        let mut problems = Collector::default();
        config.check(discord, &mut problems);
        for problem in problems.into_errors().0 {
            // A missing field is named once, as missing.
            if !problem
                .loc
                .get(1)
                .is_some_and(|field| missing.contains(field))
            {
                errors.push(problem);
            }
        }
        if !missing.is_empty() {
            return None;
        }
        Some(config)
    }
}

impl ChannelKind {
    /// The kind's own fields, whether each must be set and whether it is a
    /// list: read from the kind's schema, the one description of its fields.
    fn fields(self) -> Vec<(String, bool, bool)> {
        let schema = match self {
            ChannelKind::Discord => DiscordChannel::schema(),
            ChannelKind::Ntfy => NtfyChannel::schema(),
            ChannelKind::Telegram => TelegramChannel::schema(),
            ChannelKind::Webhook => WebhookChannel::schema(),
            ChannelKind::Email => EmailChannel::schema(),
        };
        match schema {
            RefOr::T(Schema::Object(object)) => object
                .properties
                .iter()
                .map(|(name, property)| {
                    let list = matches!(property, RefOr::T(Schema::Array(_)));
                    (name.clone(), object.required.contains(name), list)
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl ChannelConfig {
    /// Checks every field of the channel; every problem is named.
    fn check(&self, discord: &WebhookDestinations, errors: &mut Collector) {
        let mut problem = |field: &str, message: Option<String>, kind: &str| {
            if let Some(message) = message {
                errors.push(field_error(field, message, kind));
            }
        };
        match self {
            ChannelConfig::Discord(DiscordChannel { url }) => problem(
                "url",
                (url.len() > MAX_URL || !discord.allows(url)).then(|| {
                    format!(
                        "url must be a Discord webhook URL (starting with one of: {})",
                        discord.describe()
                    )
                }),
                "value_error.url",
            ),
            ChannelConfig::Ntfy(NtfyChannel { url, token }) => {
                problem("url", ntfy_topic_url(url).err(), "value_error.url");
                problem(
                    "token",
                    token
                        .as_deref()
                        .is_some_and(|t| t.len() > MAX_SECRET || !is_printable(t))
                        .then(|| "token must be up to 256 printable characters".to_string()),
                    "value_error",
                );
            }
            ChannelConfig::Telegram(TelegramChannel { bot_token, chat_id }) => {
                problem(
                    "bot_token",
                    (!is_bot_token(bot_token)).then(|| {
                        "bot_token must look like 123456:ABC-DEF… (from BotFather)".to_string()
                    }),
                    "value_error",
                );
                problem(
                    "chat_id",
                    (!is_chat_id(chat_id)).then(|| {
                        "chat_id must be a number (negative for groups) or @channelname".to_string()
                    }),
                    "value_error",
                );
            }
            ChannelConfig::Webhook(WebhookChannel { url, secret }) => {
                problem("url", http_url(url).err(), "value_error.url");
                problem(
                    "secret",
                    (secret.chars().count() < MIN_WEBHOOK_SECRET || secret.len() > MAX_SECRET)
                        .then(|| "secret must be 16–256 characters".to_string()),
                    "value_error",
                );
            }
            ChannelConfig::Email(email) => email.check(errors),
        }
    }
}

impl EmailChannel {
    fn check(&self, errors: &mut Collector) {
        let mut problem = |field: &str, message: Option<&str>, kind: &str| {
            if let Some(message) = message {
                errors.push(field_error(field, message, kind));
            }
        };
        problem(
            "smtp_host",
            (self.smtp_host.len() > 253 || self.smtp_host.contains(char::is_whitespace))
                .then_some("smtp_host must be a host name"),
            "value_error",
        );
        problem(
            "smtp_port",
            (self.smtp_port == 0).then_some("smtp_port must be 1–65535"),
            "value_error",
        );
        problem(
            "from",
            self.from
                .parse::<lettre::message::Mailbox>()
                .is_err()
                .then_some("from must be an email address"),
            "value_error.email",
        );
        problem(
            "to",
            (self.to.len() > MAX_RECIPIENTS).then_some("to must list 1–10 email addresses"),
            "value_error",
        );
        problem(
            "smtp_password",
            (self.smtp_username.is_some() != self.smtp_password.is_some())
                .then_some("smtp_username and smtp_password go together"),
            "value_error",
        );
        problem(
            "smtp_security",
            (self.smtp_security == SmtpSecurity::None && self.smtp_password.is_some())
                .then_some("a password is never sent unencrypted: use starttls or tls"),
            "value_error",
        );
        for (n, address) in self.to.iter().enumerate() {
            if address.parse::<lettre::message::Mailbox>().is_err() {
                errors.push(FieldError::new(
                    &["body", "to", &n.to_string()],
                    format!("{address:?} is not an email address"),
                    "value_error.email",
                ));
            }
        }
    }
}

fn field_error(field: &str, message: impl Into<String>, kind: &str) -> FieldError {
    FieldError::new(&["body", field], message, kind)
}

fn is_printable(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_graphic())
}

/// An http(s) URL without credentials in it.
fn http_url(candidate: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(candidate).map_err(|e| format!("url is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("url must be an http:// or https:// URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() || candidate.len() > MAX_URL {
        return Err(
            "url must not hold a user name or password, and be at most 2048 characters".into(),
        );
    }
    Ok(url)
}

/// The ntfy server and topic of `https://ntfy.sh/my-plants`.
pub fn ntfy_topic_url(candidate: &str) -> Result<(reqwest::Url, String), String> {
    let mut url = http_url(candidate)?;
    let topic = url
        .path_segments()
        .and_then(|mut segments| segments.next_back().map(str::to_string))
        .unwrap_or_default();
    let valid = !topic.is_empty()
        && topic.len() <= 64
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid || url.query().is_some() {
        return Err(
            "url must be the ntfy server and topic, e.g. https://ntfy.sh/my-plants (topic: letters, digits, - and _)"
                .into(),
        );
    }
    // The server is everything before the topic (ntfy may live under a path).
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop();
    }
    if !url.path().ends_with('/') {
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push("");
        }
    }
    Ok((url, topic))
}

fn is_bot_token(token: &str) -> bool {
    let Some((bot, key)) = token.split_once(':') else {
        return false;
    };
    !bot.is_empty()
        && bot.chars().all(|c| c.is_ascii_digit())
        && !key.is_empty()
        && key.len() <= 100
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_chat_id(chat: &str) -> bool {
    let numeric = chat.strip_prefix('-').unwrap_or(chat);
    (!numeric.is_empty() && numeric.len() <= 20 && numeric.chars().all(|c| c.is_ascii_digit()))
        || chat.strip_prefix('@').is_some_and(|name| {
            (5..=32).contains(&name.len())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(kind: ChannelKind) -> ChannelInput {
        ChannelInput {
            kind,
            name: "Phone".into(),
            min_severity: None,
            url: None,
            token: None,
            bot_token: None,
            chat_id: None,
            secret: None,
            smtp_host: None,
            smtp_port: None,
            smtp_security: None,
            smtp_username: None,
            smtp_password: None,
            from: None,
            to: None,
        }
    }

    fn fields(errors: ValidationErrors) -> Vec<String> {
        errors.0.into_iter().map(|e| e.loc.join(".")).collect()
    }

    #[test]
    fn ntfy_urls_split_into_server_and_topic() {
        let (server, topic) = ntfy_topic_url("https://ntfy.sh/my-plants").unwrap();
        assert_eq!(
            (server.as_str(), topic.as_str()),
            ("https://ntfy.sh/", "my-plants")
        );
        let (server, topic) = ntfy_topic_url("http://10.0.0.2:8080/ntfy/garden_1").unwrap();
        assert_eq!(server.as_str(), "http://10.0.0.2:8080/ntfy/");
        assert_eq!(topic, "garden_1");
        for bad in [
            "https://ntfy.sh/",
            "https://ntfy.sh",
            "ftp://ntfy.sh/x",
            "https://u:p@ntfy.sh/x",
            "https://ntfy.sh/a b",
            "https://ntfy.sh/x?auth=1",
        ] {
            assert!(ntfy_topic_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_bad_field_is_named_and_foreign_fields_are_refused() {
        let discord = WebhookDestinations::discord();
        let mut telegram = input(ChannelKind::Telegram);
        telegram.bot_token = Some("not a token".into());
        telegram.url = Some("https://example.com".into());
        let errors = fields(
            telegram
                .into_channel(Uuid::nil(), None, &discord)
                .unwrap_err(),
        );
        assert_eq!(errors, ["body.url", "body.chat_id", "body.bot_token"]);

        let mut email = input(ChannelKind::Email);
        email.smtp_host = Some("smtp.example.com".into());
        email.smtp_security = Some(SmtpSecurity::None);
        email.smtp_username = Some("me".into());
        email.smtp_password = Some("pw".into());
        email.from = Some("plants@example.com".into());
        email.to = Some(vec!["me@example.com".into(), "nobody".into()]);
        let errors = fields(email.into_channel(Uuid::nil(), None, &discord).unwrap_err());
        assert_eq!(errors, ["body.smtp_security", "body.to.1"]);

        let mut hook = input(ChannelKind::Webhook);
        hook.url = Some("https://hooks.example.com/plants".into());
        hook.secret = Some("short".into());
        assert_eq!(
            fields(hook.into_channel(Uuid::nil(), None, &discord).unwrap_err()),
            ["body.secret"]
        );

        let mut discord_channel = input(ChannelKind::Discord);
        discord_channel.url = Some("https://evil.example/api/webhooks/1/x".into());
        assert_eq!(
            fields(
                discord_channel
                    .into_channel(Uuid::nil(), None, &discord)
                    .unwrap_err()
            ),
            ["body.url"]
        );
    }

    #[test]
    fn an_update_keeps_the_secrets_it_leaves_out() {
        let discord = WebhookDestinations::discord();
        let mut create = input(ChannelKind::Telegram);
        create.bot_token = Some("123456:ABC-def_1".into());
        create.chat_id = Some("-1001".into());
        create.min_severity = Some(Severity::Warning);
        let stored = create.into_channel(Uuid::nil(), None, &discord).unwrap();

        let mut rename = input(ChannelKind::Telegram);
        rename.name = "Family group".into();
        rename.chat_id = Some("@plant_family".into());
        let updated = rename
            .into_channel(Uuid::nil(), Some(&stored), &discord)
            .unwrap();
        assert_eq!(updated.name, "Family group");
        assert_eq!(updated.min_severity, Severity::Warning);
        assert_eq!(
            updated.config,
            ChannelConfig::Telegram(TelegramChannel {
                bot_token: "123456:ABC-def_1".into(),
                chat_id: "@plant_family".into()
            })
        );
        // Another kind starts afresh.
        let mut ntfy = input(ChannelKind::Ntfy);
        ntfy.token = Some("tk".into());
        assert_eq!(
            fields(
                ntfy.into_channel(Uuid::nil(), Some(&stored), &discord)
                    .unwrap_err()
            ),
            ["body.url"]
        );
    }

    #[test]
    fn email_ports_follow_the_security_and_an_empty_optional_field_removes_it() {
        let discord = WebhookDestinations::discord();
        let mut email = input(ChannelKind::Email);
        email.smtp_host = Some(" smtp.example.com ".into());
        email.smtp_security = Some(SmtpSecurity::Tls);
        email.smtp_username = Some("me".into());
        email.smtp_password = Some(" pass word ".into());
        email.from = Some("plants@example.com".into());
        email.to = Some(vec![" me@example.com".into()]);
        let stored = email.into_channel(Uuid::nil(), None, &discord).unwrap();
        assert_eq!(
            stored.config,
            ChannelConfig::Email(EmailChannel {
                smtp_host: "smtp.example.com".into(),
                smtp_port: 465,
                smtp_security: SmtpSecurity::Tls,
                smtp_username: Some("me".into()),
                smtp_password: Some(" pass word ".into()),
                from: "plants@example.com".into(),
                to: vec!["me@example.com".into()],
            })
        );

        let mut ntfy = input(ChannelKind::Ntfy);
        ntfy.url = Some("https://ntfy.sh/plants".into());
        ntfy.token = Some("tk_1".into());
        let stored = ntfy.into_channel(Uuid::nil(), None, &discord).unwrap();
        let mut without_token = input(ChannelKind::Ntfy);
        without_token.token = Some(String::new());
        let updated = without_token
            .into_channel(Uuid::nil(), Some(&stored), &discord)
            .unwrap();
        assert_eq!(
            updated.config,
            ChannelConfig::Ntfy(NtfyChannel {
                url: "https://ntfy.sh/plants".into(),
                token: None
            })
        );
    }

    #[test]
    fn summaries_and_debug_output_hide_secrets() {
        let config = ChannelConfig::Ntfy(NtfyChannel {
            url: "https://ntfy.sh/secret-topic-abcd".into(),
            token: Some("tk_secret".into()),
        });
        let summary = config.summary();
        assert!(
            summary.contains("ntfy.sh") && summary.ends_with("with a token"),
            "{summary}"
        );
        assert!(!summary.contains("secret"), "{summary}");
        assert!(!format!("{config:?}").contains("secret"));
        let hook = ChannelConfig::Webhook(WebhookChannel {
            url: "https://hooks.example.com/T0/secret".into(),
            secret: "0123456789abcdef".into(),
        });
        assert_eq!(hook.summary(), "POST to hooks.example.com (signed)");
    }
}

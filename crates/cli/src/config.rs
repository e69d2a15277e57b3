//! Settings: each an environment variable (docs/api.md) and a flag. A
//! malformed value stops start-up with one line naming the variable.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use clap::Args;

/// A listener address that an empty value turns off.
#[derive(Debug, Clone, Copy)]
pub struct OptionalAddr(pub Option<SocketAddr>);

/// Parses `host:port`, or an empty value meaning "off".
fn optional_addr(variable: &'static str) -> impl Fn(&str) -> Result<OptionalAddr, String> + Clone {
    move |raw: &str| {
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(OptionalAddr(None));
        }
        raw.to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .map(|a| OptionalAddr(Some(a)))
            .ok_or_else(|| {
                format!("{variable} must be host:port (e.g. 0.0.0.0:1883), or empty to turn it off")
            })
    }
}

fn addr(variable: &'static str) -> impl Fn(&str) -> Result<SocketAddr, String> + Clone {
    move |raw: &str| {
        raw.trim()
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| format!("{variable} must be host:port, e.g. 0.0.0.0:8000"))
    }
}

fn whole_number<T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy>(
    variable: &'static str,
    min: T,
    max: T,
) -> impl Fn(&str) -> Result<T, String> + Clone {
    move |raw: &str| match raw.trim().parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(format!(
            "{variable} must be a whole number from {min} to {max}"
        )),
    }
}

fn boolean(variable: &'static str) -> impl Fn(&str) -> Result<bool, String> + Clone {
    move |raw: &str| match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("{variable} must be true or false")),
    }
}

fn one_of(
    variable: &'static str,
    allowed: &'static [&'static str],
) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |raw: &str| {
        let value = raw.trim().to_ascii_lowercase();
        if allowed.contains(&value.as_str()) {
            Ok(value)
        } else {
            Err(format!("{variable} must be one of {}", allowed.join(", ")))
        }
    }
}

/// One of an enum's values, named as in the docs (case and surrounding
/// blanks aside); else an error naming the variable and the choices.
fn choice<T: clap::ValueEnum>(
    variable: &'static str,
) -> impl Fn(&str) -> Result<T, String> + Clone {
    move |raw: &str| {
        T::from_str(raw.trim(), true).map_err(|_| {
            let allowed: Vec<String> = T::value_variants()
                .iter()
                .filter_map(clap::ValueEnum::to_possible_value)
                .map(|value| value.get_name().to_string())
                .collect();
            format!("{variable} must be one of {}", allowed.join(", "))
        })
    }
}

/// `PLANTOPS_ENV`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Environment {
    Development,
    Production,
}

/// `PLANTOPS_AUTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Auth {
    On,
    Off,
}

/// `PLANTOPS_ENROLLMENT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Enrollment {
    Keys,
    Open,
}

/// `LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Console,
    Json,
}

fn webhook_url(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.starts_with("https://") || raw.starts_with("http://") {
        Ok(raw.to_string())
    } else {
        Err("DISCORD_WEBHOOK_URL must be an http(s) URL".into())
    }
}

fn http_url(variable: &'static str) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |raw| {
        let raw = raw.trim().trim_end_matches('/');
        if (raw.starts_with("http://") || raw.starts_with("https://"))
            && raw.parse::<axum::http::Uri>().is_ok()
        {
            Ok(raw.to_string())
        } else {
            Err(format!("{variable} must be an http(s) URL"))
        }
    }
}

/// A URL prefix, kept exactly (its trailing slash matters).
fn url_prefix(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    match reqwest::Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
            Ok(raw.to_string())
        }
        _ => Err("PLANTOPS_DISCORD_WEBHOOK_PREFIXES must list http(s) URLs".into()),
    }
}

fn encryption_key(raw: &str) -> Result<String, String> {
    plantops_core::secret::SecretBox::from_hex(raw)
        .map(|_| raw.trim().to_string())
        .map_err(|_| {
            "ENCRYPTION_KEY must be 64 hexadecimal characters (openssl rand -hex 32)".into()
        })
}

fn database_url(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.starts_with("postgres://")
        || raw.starts_with("postgresql://")
        || raw.starts_with("sqlite:")
    {
        Ok(raw.to_string())
    } else {
        Err("DATABASE_URL must start with postgres://, postgresql:// or sqlite:".into())
    }
}

#[derive(Debug, Clone, Args)]
pub struct LogSettings {
    /// Log level: trace, debug, info, warn or error.
    #[arg(long, env = "LOG_LEVEL", default_value = "info",
        value_parser = one_of("LOG_LEVEL", &["trace", "debug", "info", "warn", "error"]))]
    pub log_level: String,

    /// Log format: `console` (readable) or `json` (one object per line).
    #[arg(long, env = "LOG_FORMAT", default_value = "console",
        value_parser = choice::<LogFormat>("LOG_FORMAT"))]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseSettings {
    /// Where PlantOps keeps its SQLite database, generated TLS material and keys.
    #[arg(long, env = "PLANTOPS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// `postgres://user:pass@host/db` selects PostgreSQL (TimescaleDB when
    /// installed); `sqlite://path` or unset selects SQLite in the data directory.
    #[arg(long, env = "DATABASE_URL", value_parser = database_url, hide_env_values = true)]
    pub database_url: Option<String>,
}

impl DatabaseSettings {
    pub fn url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("plantops.db").display()))
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeSettings {
    /// `production` refuses to start without the settings a production
    /// stack must not run without (see `check_production`); `development`
    /// fills in local defaults.
    #[arg(long = "env", env = "PLANTOPS_ENV", default_value = "development",
        value_parser = choice::<Environment>("PLANTOPS_ENV"))]
    pub environment: Environment,

    #[command(flatten)]
    pub database: DatabaseSettings,

    /// HTTP listen address (API and web UI).
    #[arg(long, env = "PLANTOPS_HTTP_ADDR", default_value = "0.0.0.0:8000",
        value_parser = addr("PLANTOPS_HTTP_ADDR"))]
    pub http_addr: SocketAddr,

    /// Built-in broker's plain MQTT listener; empty turns it off.
    #[arg(long, env = "PLANTOPS_MQTT_ADDR", default_value = "0.0.0.0:1883",
        value_parser = optional_addr("PLANTOPS_MQTT_ADDR"))]
    pub mqtt_addr: OptionalAddr,

    /// Built-in broker's TLS listener; empty turns it off.
    #[arg(long, env = "PLANTOPS_MQTTS_ADDR", default_value = "0.0.0.0:8883",
        value_parser = optional_addr("PLANTOPS_MQTTS_ADDR"))]
    pub mqtts_addr: OptionalAddr,

    /// Broker server certificate (PEM); generated into the data directory when unset.
    #[arg(long, env = "PLANTOPS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key of PLANTOPS_TLS_CERT (PEM).
    #[arg(long, env = "PLANTOPS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Extra names (comma-separated) the generated broker certificate covers,
    /// besides localhost, 127.0.0.1 and the host name.
    #[arg(long, env = "PLANTOPS_TLS_SANS", value_delimiter = ',')]
    pub tls_sans: Vec<String>,

    /// Broker host name handed to devices at registration; by default the
    /// host the device used to reach this server.
    #[arg(long, env = "PLANTOPS_MQTT_PUBLIC_HOST")]
    pub mqtt_public_host: Option<String>,

    /// This instance's id when several share one PostgreSQL database and
    /// broker (docs/scaling.md): 1–64 letters, digits, '.', '_' or '-'. By
    /// default the host name plus a random suffix kept in the data
    /// directory (the host name alone where that cannot be written).
    #[arg(long, env = "PLANTOPS_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Seconds an instance may go without a sign of life in the database
    /// before the leader takes over its broker session (the messages
    /// queued for it). Longer than a restart takes.
    #[arg(long, env = "PLANTOPS_INSTANCE_TIMEOUT_SECS", default_value = "90",
        value_parser = whole_number::<u64>("PLANTOPS_INSTANCE_TIMEOUT_SECS", 3, 86_400))]
    pub instance_timeout_secs: u64,

    /// Expected device heartbeat interval; a device is offline after 3 missed.
    #[arg(long, env = "PLANTOPS_HEARTBEAT_INTERVAL_SECS", default_value = "60",
        value_parser = whole_number::<u64>("PLANTOPS_HEARTBEAT_INTERVAL_SECS", 1, 86_400))]
    pub heartbeat_interval_secs: u64,

    /// Open live-event streams (`/api/events`, one per browser tab) allowed
    /// at once; more answer 503 until one closes.
    #[arg(long, env = "PLANTOPS_MAX_EVENT_STREAMS", default_value = "256",
        value_parser = whole_number::<usize>("PLANTOPS_MAX_EVENT_STREAMS", 1, 100_000))]
    pub max_event_streams: usize,

    /// Device connections the built-in broker holds at once.
    #[arg(long, env = "PLANTOPS_MQTT_MAX_CONNECTIONS", default_value = "10000",
        value_parser = whole_number::<usize>("PLANTOPS_MQTT_MAX_CONNECTIONS", 1, 1_000_000))]
    pub mqtt_max_connections: usize,

    /// Connections to the built-in broker not yet logged in, at once; kept
    /// apart from the device connections.
    #[arg(long, env = "PLANTOPS_MQTT_MAX_PENDING_LOGINS", default_value = "512",
        value_parser = whole_number::<usize>("PLANTOPS_MQTT_MAX_PENDING_LOGINS", 1, 1_000_000))]
    pub mqtt_max_pending_logins: usize,

    /// Connections to the built-in broker not yet logged in from one
    /// address (IPv6: one /64), at once.
    #[arg(long, env = "PLANTOPS_MQTT_MAX_PENDING_LOGINS_PER_ADDRESS", default_value = "32",
        value_parser = whole_number::<usize>("PLANTOPS_MQTT_MAX_PENDING_LOGINS_PER_ADDRESS", 1, 1_000_000))]
    pub mqtt_max_pending_logins_per_address: usize,

    /// Longest keep-alive (seconds) a device may ask the built-in broker
    /// for; MQTT 5 clients asking for longer, or 0, are told this one,
    /// MQTT 3.1.1 clients are refused.
    #[arg(long, env = "PLANTOPS_MQTT_MAX_KEEPALIVE_SECS", default_value = "3600",
        value_parser = whole_number::<u16>("PLANTOPS_MQTT_MAX_KEEPALIVE_SECS", 10, 65535))]
    pub mqtt_max_keepalive_secs: u16,

    /// QoS 1 messages one device connection may have unacknowledged on the
    /// built-in broker (MQTT 5 receive maximum); each is acknowledged once
    /// it is stored.
    #[arg(long, env = "PLANTOPS_MQTT_MAX_INFLIGHT", default_value = "64",
        value_parser = whole_number::<u16>("PLANTOPS_MQTT_MAX_INFLIGHT", 1, 65535))]
    pub mqtt_max_inflight: u16,

    /// Messages (readings and heartbeats) one device may send per second,
    /// sustained; the built-in broker slows a faster device, through
    /// Mosquitto readings denser by their own times are dropped
    /// (`rate_limited`).
    #[arg(long, env = "PLANTOPS_DEVICE_MESSAGES_PER_SEC", default_value = "10",
        value_parser = whole_number::<u32>("PLANTOPS_DEVICE_MESSAGES_PER_SEC", 1, 10_000_000))]
    pub device_messages_per_sec: u32,

    /// Messages one device may send at once above its rate (e.g. readings
    /// it buffered while offline).
    #[arg(long, env = "PLANTOPS_DEVICE_MESSAGE_BURST", default_value = "600",
        value_parser = whole_number::<u32>("PLANTOPS_DEVICE_MESSAGE_BURST", 1, 10_000_000))]
    pub device_message_burst: u32,

    /// Seconds a client has to send a request's headers; also how long an
    /// idle keep-alive connection stays open.
    #[arg(long, env = "PLANTOPS_HTTP_HEADER_TIMEOUT_SECS", default_value = "30",
        value_parser = whole_number::<u64>("PLANTOPS_HTTP_HEADER_TIMEOUT_SECS", 1, 3600))]
    pub http_header_timeout_secs: u64,

    /// HTTP connections open at once; more wait until one closes.
    #[arg(long, env = "PLANTOPS_HTTP_MAX_CONNECTIONS", default_value = "1024",
        value_parser = whole_number::<usize>("PLANTOPS_HTTP_MAX_CONNECTIONS", 1, 1_000_000))]
    pub http_max_connections: usize,

    /// HTTP requests handled at once; more are answered 503 with Retry-After.
    #[arg(long, env = "PLANTOPS_HTTP_MAX_CONCURRENT_REQUESTS", default_value = "256",
        value_parser = whole_number::<usize>("PLANTOPS_HTTP_MAX_CONCURRENT_REQUESTS", 1, 1_000_000))]
    pub http_max_concurrent_requests: usize,

    /// Host names the UI and API answer to (comma-separated), besides
    /// localhost; unset = any. Guards against DNS rebinding.
    #[arg(long, env = "PLANTOPS_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// A device battery below this percentage is an alert (once per
    /// discharge); 0 turns the alert off.
    #[arg(long, env = "PLANTOPS_LOW_BATTERY_PERCENT", default_value = "15",
        value_parser = whole_number::<u8>("PLANTOPS_LOW_BATTERY_PERCENT", 0, 100))]
    pub low_battery_percent: u8,

    /// Soil-moisture points a plant's moisture must rise within an hour to
    /// be recorded as a watering in its care journal; 0 turns detection off.
    #[arg(long, env = "PLANTOPS_WATERING_RISE", default_value = "10",
        value_parser = whole_number::<u8>("PLANTOPS_WATERING_RISE", 0, 100))]
    pub watering_rise: u8,

    /// Days of readings to keep; older ones are deleted hourly (TimescaleDB:
    /// whole chunks dropped). 0 keeps everything.
    #[arg(long, env = "PLANTOPS_RETENTION_DAYS", default_value = "0",
        value_parser = whole_number::<u32>("PLANTOPS_RETENTION_DAYS", 0, 36_500))]
    pub retention_days: u32,

    /// Days of hourly rollups (min/avg/max per metric, kept after raw
    /// readings are pruned) to keep; 0 keeps them forever.
    #[arg(long, env = "PLANTOPS_ROLLUP_RETENTION_DAYS", default_value = "0",
        value_parser = whole_number::<u32>("PLANTOPS_ROLLUP_RETENTION_DAYS", 0, 36_500))]
    pub rollup_retention_days: u32,

    /// Discord webhook that receives alerts; alerts are stored either way.
    #[arg(long, env = "DISCORD_WEBHOOK_URL", hide_env_values = true, value_parser = webhook_url)]
    pub discord_webhook_url: Option<String>,

    /// URL prefixes (comma-separated) a webhook set through the API or UI
    /// must start with; DISCORD_WEBHOOK_URL is not held to them.
    #[arg(long, env = "PLANTOPS_DISCORD_WEBHOOK_PREFIXES", value_delimiter = ',',
        default_value = "https://discord.com/api/webhooks/,https://discordapp.com/api/webhooks/,https://ptb.discord.com/api/webhooks/,https://canary.discord.com/api/webhooks/",
        value_parser = url_prefix)]
    pub discord_webhook_prefixes: Vec<String>,

    /// Telegram's Bot API, for Telegram notification channels (tests,
    /// proxies, a self-hosted Bot API server).
    #[arg(
        long,
        env = "PLANTOPS_TELEGRAM_API_URL",
        default_value = "https://api.telegram.org"
    )]
    pub telegram_api_url: String,

    /// A CA certificate (PEM) that email channels' SMTP servers may chain
    /// to, besides the public roots (a mail server with a private CA).
    #[arg(long, env = "PLANTOPS_SMTP_CA")]
    pub smtp_ca: Option<PathBuf>,

    /// 64 hex characters: the AES-256 key sealing stored secrets. Required
    /// with PostgreSQL; with SQLite one is generated into the data directory.
    #[arg(long, env = "ENCRYPTION_KEY", hide_env_values = true, value_parser = encryption_key)]
    pub encryption_key: Option<String>,

    /// Anthropic API base URL (tests, proxies).
    #[arg(long, env = "ANTHROPIC_BASE_URL", default_value = "https://api.anthropic.com",
        value_parser = http_url("ANTHROPIC_BASE_URL"))]
    pub anthropic_base_url: String,

    /// OpenAI API base URL, including `/v1`; an OpenAI-compatible server
    /// (Ollama: http://localhost:11434/v1) works too.
    #[arg(long, env = "OPENAI_BASE_URL", default_value = "https://api.openai.com/v1",
        value_parser = http_url("OPENAI_BASE_URL"))]
    pub openai_base_url: String,

    /// Seconds one LLM request may take (local models can be slow).
    #[arg(long, env = "PLANTOPS_LLM_TIMEOUT_SECS", default_value = "60",
        value_parser = whole_number::<u64>("PLANTOPS_LLM_TIMEOUT_SECS", 1, 3600))]
    pub llm_timeout_secs: u64,

    #[command(flatten)]
    pub access: AccessSettings,

    #[command(flatten)]
    pub backups: BackupSettings,

    #[command(flatten)]
    pub home_assistant: HomeAssistantSettings,

    #[command(flatten)]
    pub external: ExternalBrokerSettings,

    #[command(flatten)]
    pub log: LogSettings,
}

/// A backup schedule that an empty value turns off.
#[derive(Debug, Clone)]
pub struct OptionalSchedule(pub Option<plantops_services::ops::backups::Schedule>);

fn backup_schedule(raw: &str) -> Result<OptionalSchedule, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(OptionalSchedule(None));
    }
    raw.parse()
        .map(|schedule| OptionalSchedule(Some(schedule)))
        .map_err(|error| format!("PLANTOPS_BACKUP_SCHEDULE: {error}"))
}

/// Scheduled, verified backups (docs/deployment.md).
#[derive(Debug, Clone, Args)]
pub struct BackupSettings {
    /// When to take a backup: a five-field cron expression (minute hour
    /// day-of-month month day-of-week) in the server's local time zone,
    /// e.g. `0 3 * * *` for 03:00 daily. Each backup is verified by a
    /// restore into a scratch database. Unset or empty: none scheduled.
    #[arg(long, env = "PLANTOPS_BACKUP_SCHEDULE", default_value = "",
        value_parser = backup_schedule, hide_default_value = true)]
    pub backup_schedule: OptionalSchedule,

    /// Verified backups kept; older ones are deleted after each new one.
    #[arg(long, env = "PLANTOPS_BACKUP_KEEP", default_value = "7",
        value_parser = whole_number::<usize>("PLANTOPS_BACKUP_KEEP", 1, 100_000))]
    pub backup_keep: usize,

    /// Directory of scheduled backups; by default `backups` in the data
    /// directory.
    #[arg(long, env = "PLANTOPS_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,

    /// A file copied beside each backup: Mosquitto's dynamic-security.json
    /// (the devices' broker accounts) where PlantOps runs with Mosquitto.
    #[arg(long, env = "PLANTOPS_BACKUP_BROKER_FILE")]
    pub backup_broker_file: Option<PathBuf>,
}

impl BackupSettings {
    /// The plan, when a schedule is set.
    pub fn plan(&self, data_dir: &Path) -> Option<plantops_services::ops::backups::BackupPlan> {
        let schedule = self.backup_schedule.0.clone()?;
        Some(plantops_services::ops::backups::BackupPlan {
            schedule,
            keep: self.backup_keep,
            dir: self
                .backup_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("backups")),
            broker_file: self.backup_broker_file.clone(),
        })
    }
}

/// An optional URL that an empty value leaves unset.
#[derive(Debug, Clone)]
pub struct OptionalUrl(pub Option<String>);

fn home_assistant_url(raw: &str) -> Result<OptionalUrl, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(OptionalUrl(None));
    }
    plantops_services::home_assistant::parse_link(raw, "homeassistant", None)
        .map(|_| OptionalUrl(Some(raw.to_string())))
        .map_err(|error| format!("PLANTOPS_HA_MQTT_URL {error}"))
}

fn discovery_prefix(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    plantops_services::home_assistant::check_prefix(raw)
        .map(|()| raw.to_string())
        .map_err(|error| format!("PLANTOPS_HA_DISCOVERY_PREFIX {error}"))
}

/// Home Assistant through MQTT discovery (docs/integrations.md).
#[derive(Debug, Clone, Args)]
pub struct HomeAssistantSettings {
    /// The broker Home Assistant listens to:
    /// `mqtt://user:password@host:1883` or `mqtts://…`. PlantOps publishes
    /// each plant's discovery config, state and availability there. One set
    /// in the UI takes precedence. Unset or empty: off.
    #[arg(long, env = "PLANTOPS_HA_MQTT_URL", default_value = "", hide_default_value = true,
        hide_env_values = true, value_parser = home_assistant_url)]
    pub ha_mqtt_url: OptionalUrl,

    /// Home Assistant's MQTT discovery prefix.
    #[arg(long, env = "PLANTOPS_HA_DISCOVERY_PREFIX", default_value = "homeassistant",
        value_parser = discovery_prefix)]
    pub ha_discovery_prefix: String,

    /// A CA certificate (PEM) to trust for an `mqtts://` broker besides the
    /// system's.
    #[arg(long, env = "PLANTOPS_HA_MQTT_CA")]
    pub ha_mqtt_ca: Option<PathBuf>,
}

/// Who may use the API and register devices (docs/security.md).
#[derive(Debug, Clone, Args)]
pub struct AccessSettings {
    /// `on`: every API call needs a session or a token. `off`: anyone who
    /// can reach the server can do anything (a trusted network, or the
    /// original's unmodified scripts); refused with PLANTOPS_ENV=production.
    #[arg(long = "auth", env = "PLANTOPS_AUTH", default_value = "on",
        value_parser = choice::<Auth>("PLANTOPS_AUTH"))]
    pub auth: Auth,

    /// `keys`: devices register with an enrollment key or while the
    /// enrollment window is open. `open`: any device may register (original
    /// firmware that cannot send a key); refused with PLANTOPS_ENV=production.
    #[arg(long = "enrollment", env = "PLANTOPS_ENROLLMENT", default_value = "keys",
        value_parser = choice::<Enrollment>("PLANTOPS_ENROLLMENT"))]
    pub enrollment: Enrollment,

    /// Hours a signed-in browser may stay idle before its session ends.
    #[arg(long, env = "PLANTOPS_SESSION_IDLE_HOURS", default_value = "168",
        value_parser = whole_number::<u64>("PLANTOPS_SESSION_IDLE_HOURS", 1, 8760))]
    pub session_idle_hours: u64,

    /// Hours after sign-in when a session ends, used or not.
    #[arg(long, env = "PLANTOPS_SESSION_LIFETIME_HOURS", default_value = "720",
        value_parser = whole_number::<u64>("PLANTOPS_SESSION_LIFETIME_HOURS", 1, 87_600))]
    pub session_lifetime_hours: u64,

    /// Behind a reverse proxy: take the client address (login throttling)
    /// from the last `X-Forwarded-For` entry. Only when the proxy is the
    /// sole way in.
    #[arg(long, env = "PLANTOPS_TRUST_PROXY", default_value = "false",
        value_parser = boolean("PLANTOPS_TRUST_PROXY"))]
    pub trust_proxy: bool,
}

impl AccessSettings {
    pub fn auth_settings(&self) -> plantops_server::auth::AuthSettings {
        plantops_server::auth::AuthSettings {
            required: self.auth == Auth::On,
            enrollment_open: self.enrollment == Enrollment::Open,
            session_idle: std::time::Duration::from_secs(self.session_idle_hours * 3600),
            session_lifetime: std::time::Duration::from_secs(self.session_lifetime_hours * 3600),
            trust_proxy: self.trust_proxy,
        }
    }
}

/// Passwords shorter than this are refused in production.
const MIN_PRODUCTION_PASSWORD: usize = 16;

impl ExternalBrokerSettings {
    /// With an external broker: the provisioning admin, a different account
    /// from the backend's. Mosquitto binds each client id to its username
    /// (`use_username_as_clientid`), so one account holding both links
    /// would have each connection kick the other off forever.
    pub fn check(&self) -> Result<(), String> {
        if let Some(secret) = &self.mqtt_auth_secret {
            if secret.chars().count() < MIN_PRODUCTION_PASSWORD {
                return Err(format!(
                    "PLANTOPS_MQTT_AUTH_SECRET must be at least {MIN_PRODUCTION_PASSWORD} characters (openssl rand -hex 24)"
                ));
            }
        }
        if self.mqtt_host.is_none() {
            return Ok(());
        }
        match &self.mqtt_dynsec_username {
            None if self.mqtt_auth_secret.is_some() => Ok(()),
            None => Err("MQTT_HOST requires MQTT_DYNSEC_USERNAME and MQTT_DYNSEC_PASSWORD (Mosquitto's dynamic-security admin that provisions devices), or PLANTOPS_MQTT_AUTH_SECRET for a broker that asks PlantOps over HTTP (docs/scaling.md)".into()),
            Some(admin) if *admin == self.mqtt_backend_username => Err(format!(
                "MQTT_DYNSEC_USERNAME and MQTT_BACKEND_USERNAME must name different accounts (both are {admin}): \
                 Mosquitto ties client ids to usernames, so one account cannot hold the ingest and provisioning links; \
                 the backend creates its own account through dynamic security"
            )),
            Some(_) => Ok(()),
        }
    }
}

impl ServeSettings {
    /// With PLANTOPS_ENV=production: the first required setting that is
    /// missing or too weak, as one line naming the variable. Malformed values
    /// were already refused by the parsers above.
    pub fn check_production(&self) -> Result<(), String> {
        if self.environment != Environment::Production {
            return Ok(());
        }
        let missing = |variable: &str, hint: &str| {
            Err(format!(
                "PLANTOPS_ENV=production requires {variable} ({hint})"
            ))
        };
        if self.access.auth == Auth::Off {
            return Err("PLANTOPS_ENV=production refuses PLANTOPS_AUTH=off: create an admin (plantops user add) instead".into());
        }
        if self.access.enrollment == Enrollment::Open {
            return Err("PLANTOPS_ENV=production refuses PLANTOPS_ENROLLMENT=open: give devices an enrollment key".into());
        }
        let external = &self.external;
        match &self.database.database_url {
            Some(url) if !url.starts_with("sqlite:") => {}
            _ => return missing("DATABASE_URL", "postgres://user:password@host/database"),
        }
        if self.encryption_key.is_none() {
            return missing(
                "ENCRYPTION_KEY",
                "64 hexadecimal characters: openssl rand -hex 32",
            );
        }
        if external.mqtt_host.is_none() {
            return missing("MQTT_HOST", "the Mosquitto host, e.g. mosquitto");
        }
        if !external.mqtt_use_tls {
            return missing("MQTT_USE_TLS=true", "the broker link must be encrypted");
        }
        if external.mqtt_ca_cert.is_none() {
            return missing(
                "MQTT_CA_CERT",
                "the CA that signed the broker's certificate: plantops certs",
            );
        }
        let mut passwords = vec![("MQTT_BACKEND_PASSWORD", &external.mqtt_backend_password)];
        if external.mqtt_dynsec_username.is_some() {
            passwords.push(("MQTT_DYNSEC_PASSWORD", &external.mqtt_dynsec_password));
        }
        for (variable, password) in passwords {
            match password {
                None => return missing(variable, "generate one with: openssl rand -hex 24"),
                Some(p) if p.chars().count() < MIN_PRODUCTION_PASSWORD => {
                    return Err(format!(
                        "{variable} must be at least {MIN_PRODUCTION_PASSWORD} characters in production (openssl rand -hex 24)"
                    ))
                }
                Some(_) => {}
            }
        }
        external.check()
    }
}

/// An external Mosquitto (production). Setting MQTT_HOST selects it.
#[derive(Debug, Clone, Args)]
pub struct ExternalBrokerSettings {
    /// External broker host; when set, the built-in broker is not started.
    #[arg(long, env = "MQTT_HOST")]
    pub mqtt_host: Option<String>,

    /// External broker plain port.
    #[arg(long, env = "MQTT_PORT", default_value = "1883",
        value_parser = whole_number::<u16>("MQTT_PORT", 1, 65535))]
    pub mqtt_port: u16,

    /// External broker TLS port.
    #[arg(long, env = "MQTT_TLS_PORT", default_value = "8883",
        value_parser = whole_number::<u16>("MQTT_TLS_PORT", 1, 65535))]
    pub mqtt_tls_port: u16,

    /// Connect to the external broker over TLS (MQTT_TLS_PORT).
    #[arg(long, env = "MQTT_USE_TLS", default_value = "false", value_parser = boolean("MQTT_USE_TLS"))]
    pub mqtt_use_tls: bool,

    /// CA certificate (PEM) that signed the external broker's certificate.
    #[arg(long, env = "MQTT_CA_CERT")]
    pub mqtt_ca_cert: Option<PathBuf>,

    /// The backend's own account on the external broker.
    #[arg(
        long,
        env = "MQTT_BACKEND_USERNAME",
        default_value = "plantops_backend"
    )]
    pub mqtt_backend_username: String,

    /// Password of MQTT_BACKEND_USERNAME.
    #[arg(long, env = "MQTT_BACKEND_PASSWORD", hide_env_values = true)]
    pub mqtt_backend_password: Option<String>,

    /// Dynamic-security admin used to provision devices; required with
    /// MQTT_HOST and never the backend's own account.
    #[arg(long, env = "MQTT_DYNSEC_USERNAME")]
    pub mqtt_dynsec_username: Option<String>,

    /// Password of MQTT_DYNSEC_USERNAME.
    #[arg(long, env = "MQTT_DYNSEC_PASSWORD", hide_env_values = true)]
    pub mqtt_dynsec_password: Option<String>,

    /// Shared secret of the broker authentication endpoints
    /// (`/api/mqtt/auth`, `/api/mqtt/acl`, `/api/mqtt/superuser`), for
    /// brokers that ask PlantOps over HTTP (mosquitto-go-auth, EMQX); at
    /// least 16 characters. Unset: the endpoints do not exist.
    #[arg(long, env = "PLANTOPS_MQTT_AUTH_SECRET", hide_env_values = true)]
    pub mqtt_auth_secret: Option<String>,
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn choices_are_typed_and_refusals_name_the_variable_and_the_values() {
        assert_eq!(
            choice::<Environment>("PLANTOPS_ENV")(" Production "),
            Ok(Environment::Production)
        );
        assert_eq!(choice::<Auth>("PLANTOPS_AUTH")("OFF"), Ok(Auth::Off));
        assert_eq!(
            choice::<Enrollment>("PLANTOPS_ENROLLMENT")("opened"),
            Err("PLANTOPS_ENROLLMENT must be one of keys, open".to_string())
        );
        assert_eq!(
            choice::<LogFormat>("LOG_FORMAT")("yaml"),
            Err("LOG_FORMAT must be one of console, json".to_string())
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn numbers_outside_their_range_are_refused(
            n in prop_oneof![0u64..=0, 3601u64..=u64::MAX, 1u64..=3600],
            pad in " {0,2}",
        ) {
            let answer = whole_number::<u64>("X", 1, 3600)(&format!("{pad}{n}{pad}"));
            if (1..=3600).contains(&n) {
                prop_assert_eq!(answer, Ok(n));
            } else {
                prop_assert_eq!(answer, Err("X must be a whole number from 1 to 3600".to_string()));
            }
        }

        #[test]
        fn what_is_not_a_whole_number_is_refused(raw in "[-+.eE0-9a-z ]{0,12}") {
            let answer = whole_number::<u64>("X", 1, 3600)(&raw);
            match raw.trim().parse::<u64>() {
                Ok(n) if (1..=3600).contains(&n) => prop_assert_eq!(answer, Ok(n)),
                _ => prop_assert!(answer.is_err(), "{raw:?} was taken"),
            }
        }

        #[test]
        fn numbers_inside_their_range_are_accepted(n in 1u32..=10_000_000, pad in " {0,2}") {
            let raw = format!("{pad}{n}{pad}");
            prop_assert_eq!(whole_number::<u32>("X", 1, 10_000_000)(&raw), Ok(n));
        }

        #[test]
        fn the_other_parsers_answer_everything_without_panicking(raw in "\\PC{0,80}") {
            let _ = boolean("X")(&raw);
            let _ = choice::<Enrollment>("X")(&raw);
            let _ = webhook_url(&raw);
            let _ = encryption_key(&raw);
            let _ = database_url(&raw);
            if let Ok(prefix) = url_prefix(&raw) {
                prop_assert!(prefix.starts_with("http://") || prefix.starts_with("https://"), "{prefix}");
            }
        }
    }
}

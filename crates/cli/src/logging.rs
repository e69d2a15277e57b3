//! Structured logs: readable by default, JSON lines with LOG_FORMAT=json.
//! Span fields (request id, device id) appear on every line of their span.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogFormat, LogSettings};

pub fn init(settings: &LogSettings) {
    // Our crates log at the chosen level; chatty dependencies one step up.
    let filter = EnvFilter::new(format!(
        "warn,plantops={level},plantops_server={level},plantops_mqtt={level},plantops_store={level},sqlx=warn",
        level = settings.log_level
    ));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if settings.log_format == LogFormat::Json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()
    } else {
        registry.with(fmt::layer().with_target(false)).try_init()
    };
    if let Err(error) = result {
        eprintln!("logging already initialised: {error}");
    }
}

/// Client tools (simulate, bench) print their own progress; logs only
/// report trouble.
pub fn init_for_tool() {
    init(&LogSettings {
        log_level: "warn".into(),
        log_format: LogFormat::Console,
    });
}

//! Per-request observability: correlation id, one log line, Prometheus
//! counters and latency histograms by route.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;

pub const CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The caller's id when it is a sane token; a new one otherwise.
fn correlation_id(request: &Request) -> String {
    [&CORRELATION_ID, &REQUEST_ID]
        .into_iter()
        .filter_map(|name| request.headers().get(name))
        .filter_map(|value| value.to_str().ok())
        .map(str::trim)
        .find(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

pub async fn observe(request: Request, next: Next) -> Response {
    let id = correlation_id(&request);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = method_label(request.method()).to_string();
    let span = tracing::info_span!("request", request_id = %id, %method, %route);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();

    let labels = [("method", method), ("route", route)];
    metrics::histogram!("http_request_duration_seconds", &labels).record(seconds);
    let mut counted = labels.to_vec();
    counted.push(("status", status.to_string()));
    metrics::counter!("http_requests_total", &counted).increment(1);
    span.in_scope(|| {
        tracing::info!(status, latency_ms = seconds * 1000.0, "request finished");
    });

    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(CORRELATION_ID, value);
    }
    response
}

/// Methods as metric labels: any other method name a client invents is
/// `other`, so requests cannot create new time series without bound.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Gauges read at each scrape: what another process may have changed (the
/// backup service's last backup, alerts any instance queued) and this
/// process's resident memory.
pub async fn refresh_gauges(state: &crate::AppState) {
    match plantops_services::ops::backups::BackupStatus::read(&state.store).await {
        Ok(status) => status.publish_gauges(),
        Err(error) => tracing::warn!(%error, "cannot read the backup status"),
    }
    match state.store.count_pending_alerts().await {
        Ok(pending) => metrics::gauge!("plantops_notifier_backlog").set(pending as f64),
        Err(error) => tracing::warn!(%error, "cannot count pending alerts"),
    }
    if let Some(bytes) = resident_bytes() {
        metrics::gauge!("process_resident_memory_bytes").set(bytes as f64);
    }
}

/// `VmRSS` of /proc/self/status (Linux), in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                // From an alert's creation to its notification: retries
                // after an outage take minutes.
                .set_buckets_for_metric(
                    Matcher::Full("plantops_alert_delivery_seconds".into()),
                    &[
                        0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                    ],
                )
                .expect("static bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0,
                    ],
                )
                .expect("static bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests embedding
            // several servers); the handle then renders nothing of ours.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

//! The HTTP server: the router served over hyper with the limits that
//! `axum::serve` does not offer — a deadline for a request's headers (which
//! also closes idle keep-alive connections), a cap on open connections and
//! on requests in progress — and the optional Host allowlist.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::error::Problem;

/// How much one client, or all of them, may hold of the server.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Time a client has to send a request's headers, and the longest an
    /// idle keep-alive connection stays open (PLANTOPS_HTTP_HEADER_TIMEOUT_SECS).
    pub header_timeout: Duration,
    /// Open connections; further clients wait in the listen backlog
    /// (PLANTOPS_HTTP_MAX_CONNECTIONS).
    pub max_connections: usize,
    /// Requests being handled at once; more are answered 503 at once
    /// (PLANTOPS_HTTP_MAX_CONCURRENT_REQUESTS). An event stream counts only
    /// until its headers are sent.
    pub max_concurrent_requests: usize,
    /// Host names the server answers to besides loopback names; empty =
    /// any (PLANTOPS_ALLOWED_HOSTS).
    pub allowed_hosts: Vec<String>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_concurrent_requests: 256,
            allowed_hosts: Vec::new(),
        }
    }
}

/// How long shutdown waits for requests in progress.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` completes, then lets the
/// requests in progress finish (up to [`DRAIN_TIMEOUT`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let requests = Arc::new(Semaphore::new(limits.max_concurrent_requests));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let next = async {
            let permit = connections.clone().acquire_owned().await;
            (permit, listener.accept().await)
        };
        let (permit, accepted) = tokio::select! {
            () = &mut shutdown => break,
            next = next => next,
        };
        let Ok(permit) = permit else { break };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!(%error, "cannot accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = {
            let (router, requests) = (router.clone(), requests.clone());
            hyper::service::service_fn(move |request: Request<Incoming>| {
                let (router, requests) = (router.clone(), requests.clone());
                async move {
                    // Held until the response's headers are ready.
                    let Ok(_request_slot) = requests.try_acquire() else {
                        metrics::counter!("http_requests_shed_total").increment(1);
                        return Ok::<_, Infallible>(overloaded());
                    };
                    let mut request = request.map(Body::new);
                    request.extensions_mut().insert(ConnectInfo(peer));
                    router.oneshot(request).await
                }
            })
        };
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_secs = DRAIN_TIMEOUT.as_secs(),
            "requests still running at shutdown were cut off"
        );
    }
}

fn overloaded() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(Problem {
            detail: "The server is busy; try again in a second".into(),
        }),
    )
        .into_response()
}

/// The names a request may address the server by.
#[derive(Debug, Clone)]
pub struct AllowedHosts(Arc<[String]>);

impl AllowedHosts {
    pub fn new(names: &[String]) -> Self {
        Self(names.iter().map(|n| n.to_ascii_lowercase()).collect())
    }

    /// Loopback names are always allowed: a rebinding attack needs a name
    /// of the attacker's, and local health checks use these.
    fn allows(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        self.0.is_empty()
            || matches!(name.as_str(), "localhost" | "127.0.0.1" | "[::1]")
            || self.0.contains(&name)
    }
}

/// `host[:port]` without the port (IPv6 literals keep their brackets).
fn host_name(host: &str) -> &str {
    match host.rfind(':') {
        Some(colon) if !host[colon..].contains(']') => &host[..colon],
        _ => host,
    }
}

/// Refuses requests addressed to a name not in PLANTOPS_ALLOWED_HOSTS, so a
/// web page whose own name was rebound to this server's address cannot
/// talk to it from a browser on the LAN.
pub async fn check_host(
    State(allowed): State<AllowedHosts>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default();
    if allowed.allows(host) {
        return next.run(request).await;
    }
    tracing::warn!(
        host,
        "request for a host name not in PLANTOPS_ALLOWED_HOSTS"
    );
    (
        StatusCode::MISDIRECTED_REQUEST,
        Json(Problem {
            detail: "This server does not answer to that host name (PLANTOPS_ALLOWED_HOSTS)".into(),
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_compared_without_port_and_case() {
        let allowed = AllowedHosts::new(&["Plants.Home.Lan".into(), "192.168.1.20".into()]);
        for host in ["plants.home.lan", "PLANTS.home.lan:8443", "192.168.1.20:80"] {
            assert!(allowed.allows(host), "{host}");
        }
        for host in ["localhost:8000", "127.0.0.1", "[::1]:8000"] {
            assert!(allowed.allows(host), "loopback {host}");
        }
        for host in [
            "evil.example",
            "plants.home.lan.evil.example",
            "",
            "[::2]:80",
        ] {
            assert!(!allowed.allows(host), "{host}");
        }
        assert!(AllowedHosts::new(&[]).allows("anything.example"));
    }
}

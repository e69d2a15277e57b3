//! The HTTP server's limits, driven over raw TCP and HTTP: slow or idle
//! clients are cut off, a saturated server sheds load instead of queueing
//! it, foreign Host names and cross-site form posts are refused.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Ports, Server};

async fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> (Server, String) {
    let server = Server::start(dir, &Ports::free(), env).await;
    let address = server.http.trim_start_matches("http://").to_string();
    (server, address)
}

/// Reads until the server closes the connection; what it sent meanwhile.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut received))
        .await
        .expect("the server kept the connection open")
        .expect("read");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, address) = start(dir.path(), &[("PLANTOPS_HTTP_HEADER_TIMEOUT_SECS", "1")]).await;

    // Slow-loris: half a request, then silence.
    let mut slow = TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nX-Wait: ")
        .await
        .unwrap();
    let answer = read_until_closed(&mut slow).await;
    assert!(!answer.contains("200 OK"), "{answer}");

    // An idle keep-alive connection is closed the same way.
    let mut idle = TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_saturated_server_answers_503_at_once_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = start(
        dir.path(),
        &[("PLANTOPS_HTTP_MAX_CONCURRENT_REQUESTS", "1")],
    )
    .await;
    let token = server.token.clone().unwrap();

    // A request whose body never finishes holds the only request slot.
    let head = format!(
        "POST /api/plants HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 40\r\n\r\n{{\"name\":"
    );
    let mut holder: Option<TcpStream> = None;
    let mut shed = None;
    for _ in 0..400 {
        if holder.is_none() {
            let mut stream = TcpStream::connect(&address).await.unwrap();
            stream.write_all(head.as_bytes()).await.unwrap();
            holder = Some(stream);
        }
        let (status, body) = server.get("/api/plants").await;
        if status == 503 {
            shed = Some(body);
            break;
        }
        // On a busy machine a probe can win the slot first and the holder
        // be the one turned away: then it is answered, so start it again.
        if let Some(stream) = holder.as_mut() {
            let mut answered = [0u8; 64];
            let read = tokio::time::timeout(Duration::from_millis(1), stream.read(&mut answered));
            if let Ok(Ok(_)) = read.await {
                holder = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let shed = shed.expect("a second request was served while the slot was held");
    assert!(shed["detail"].as_str().unwrap().contains("busy"), "{shed}");

    // The slow client finishes: its request succeeds, and so do others.
    let mut holder = holder.expect("the request holding the slot");
    let rest = format!("{:<31}}}", "\"Fern\"");
    holder.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = [0u8; 12];
    holder.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 201");
    let (status, plants) = server.get("/api/plants").await;
    assert_eq!(status, 200);
    assert_eq!(plants["plants"][0]["name"], "Fern", "{plants}");
    let metrics = server.metrics().await;
    assert!(metrics.contains("http_requests_shed_total"), "{metrics}");
}

#[tokio::test]
async fn only_allowed_host_names_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = start(
        dir.path(),
        &[("PLANTOPS_ALLOWED_HOSTS", "plants.example, 10.0.0.7")],
    )
    .await;
    let client = reqwest::Client::new();
    let status_for = |host: &'static str| {
        let (client, url) = (client.clone(), format!("http://{address}/api/health"));
        async move {
            client
                .get(url)
                .header("Host", host)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // A rebound name of an attacker's page is refused; the server's own
    // names and loopback are answered.
    assert_eq!(status_for("attacker.example").await, 421);
    assert_eq!(status_for("attacker.example:8000").await, 421);
    assert_eq!(status_for("plants.example:8000").await, 200);
    assert_eq!(status_for("10.0.0.7").await, 200);
    assert_eq!(status_for("localhost:8000").await, 200);
    let (status, _) = server.get("/api/health").await;
    assert_eq!(status, 200);
}

/// A cross-site HTML form can post `text/plain` without a CORS preflight;
/// JSON endpoints refuse anything but `application/json`.
#[tokio::test]
async fn json_endpoints_refuse_other_content_types() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = start(dir.path(), &[("PLANTOPS_AUTH", "off")]).await;
    let client = reqwest::Client::new();
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let response = client
            .post(format!("{}/api/plants", server.http))
            .header("Content-Type", content_type)
            .body(r#"{"name": "Planted by a form"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 415, "{content_type}");
    }
    let (_, plants) = server.get("/api/plants").await;
    assert_eq!(plants["total"], 0, "{plants}");
    // Firmware that sends no content type at all is still understood.
    let response = client
        .post(format!("{}/api/plants", server.http))
        .body(r#"{"name": "Posted by firmware"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
}

/// Method names are labels of the request metrics: invented ones are
/// counted as `other`, never as a new series each.
#[tokio::test]
async fn invented_methods_do_not_create_metric_series() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    for i in 0..5 {
        let method = reqwest::Method::from_bytes(format!("FLOOD{i}").as_bytes()).unwrap();
        client
            .request(method, format!("{}/api/health", server.http))
            .send()
            .await
            .unwrap();
    }
    let metrics = server.metrics().await;
    assert!(!metrics.contains("FLOOD"), "{metrics}");
    assert!(metrics.contains("method=\"other\""), "{metrics}");
}

//! The production stack without Docker: the (release) binary in production
//! mode on PostgreSQL, the repository's Mosquitto configuration run by a
//! real `mosquitto` (TLS only, dynamic security), and the repository's
//! nginx.conf run by a real nginx over the built UI. A device registers
//! through nginx, publishes over TLS, and its reading is read back through
//! nginx, live and stored.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::common::{connect, device_options, publish_acked, Connack, Credentials};
use futures::StreamExt;
use plantops_testkit::{free_port, TestDb};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

const DYNSEC_ADMIN: &str = "plantops_admin";
const DYNSEC_PASSWORD: &str = "dynsec-password-for-the-smoke-test";
const BACKEND_USER: &str = "plantops_backend";
const BACKEND_PASSWORD: &str = "backend-password-for-the-smoke-test";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `make check` builds the release binary and names it here; a plain
/// `cargo test` uses the binary under test.
fn binary() -> PathBuf {
    match std::env::var_os("PLANTOPS_SMOKE_BINARY") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_plantops")),
    }
}

/// Spawns `command` and returns once it listens on `port`.
async fn spawn_listening(command: &mut Command, port: u16, what: &str) -> Child {
    let mut child = command
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{what} (Debian package {what}): {e}"));
    wait_for_port(port, what, &mut child).await;
    child
}

async fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} did not listen on {port}");
}

/// deploy/mosquitto/mosquitto.conf with the container's paths and port
/// replaced by this test's.
async fn start_mosquitto(dir: &Path, certs: &Path) -> (Child, u16) {
    let port = free_port();
    let data = dir.join("mosquitto-data");
    std::fs::create_dir_all(&data).unwrap();
    let dynsec = data.join("dynamic-security.json");
    // What deploy/mosquitto/entrypoint.sh does on first start.
    common::mosquitto::init_dynsec(&dynsec, DYNSEC_ADMIN, DYNSEC_PASSWORD).await;
    let original = std::fs::read_to_string(repo().join("deploy/mosquitto/mosquitto.conf")).unwrap();
    let mut config = original
        .replace("/mosquitto/data/", &format!("{}/", data.display()))
        .replace("/mosquitto/tls/", &format!("{}/", certs.display()))
        .replace(
            "/usr/lib/mosquitto_dynamic_security.so",
            common::mosquitto::DYNSEC_PLUGIN,
        )
        .replace("listener 8883", &format!("listener {port} 127.0.0.1"));
    assert_ne!(config, original);
    if common::mosquitto::is_root() {
        // The image drops to its mosquitto user; here the files are root's.
        config.insert_str(0, "user root\n");
    }
    let path = dir.join("mosquitto.conf");
    std::fs::write(&path, config).unwrap();
    let child = spawn_listening(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null()),
        port,
        "mosquitto",
    )
    .await;
    (child, port)
}

/// deploy/nginx.conf inside a minimal main configuration, with the
/// backend's address, the ports, the certificates and the UI folder
/// substituted. Returns nginx, its HTTPS port and its plain HTTP port.
async fn start_nginx(dir: &Path, backend_port: u16, certs: &Path) -> (Child, u16, u16) {
    let port = free_port();
    let plain_port = free_port();
    let dist = repo().join("frontend/dist");
    assert!(
        dist.join("index.html").exists(),
        "the UI is not built: run make ui"
    );
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(&prefix).unwrap();
    let original = std::fs::read_to_string(repo().join("deploy/nginx.conf")).unwrap();
    let site = original
        .replace(
            "http://backend:8000",
            &format!("http://127.0.0.1:{backend_port}"),
        )
        .replace("listen 80;", &format!("listen 127.0.0.1:{plain_port};"))
        .replace(
            "listen 443 ssl http2;",
            &format!("listen 127.0.0.1:{port} ssl http2;"),
        )
        .replace("/etc/nginx/tls/", &format!("{}/", certs.display()))
        .replace(
            "root /usr/share/nginx/html;",
            &format!("root {};", dist.canonicalize().unwrap().display()),
        );
    assert_eq!(
        site.matches(&format!("127.0.0.1:{backend_port}")).count(),
        1
    );
    std::fs::write(prefix.join("site.conf"), site).unwrap();
    let user = if common::mosquitto::is_root() {
        "user root;\n"
    } else {
        ""
    };
    let p = prefix.display();
    let main = format!(
        "{user}worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  include /etc/nginx/mime.types;\n  default_type application/octet-stream;\n\
         access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
         fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
         include {p}/site.conf;\n}}\n"
    );
    std::fs::write(prefix.join("nginx.conf"), main).unwrap();
    let child = spawn_listening(
        Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-e")
            .arg(prefix.join("error.log"))
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            // One process: killing it leaves no worker behind.
            .args(["-g", "daemon off; master_process off;"]),
        port,
        "nginx",
    )
    .await;
    (child, port, plain_port)
}

async fn run(command: &mut Command) -> std::process::Output {
    let output = command.output().await.unwrap();
    assert!(output.status.success(), "{command:?}: {output:?}");
    output
}

#[tokio::test]
async fn a_device_reaches_the_production_stack_through_nginx_and_tls() {
    plantops_mqtt::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::postgres().await;
    let certs = dir.path().join("certs");
    run(Command::new(binary())
        .args(["certs", "--out"])
        .arg(&certs)
        .args(["--san", "mosquitto"]))
    .await;
    let (_mosquitto, mqtt_port) = start_mosquitto(dir.path(), &certs).await;

    let http_port = free_port();
    let mut backend_command = Command::new(binary());
    backend_command
        .arg("serve")
        .env_clear()
        .env("PLANTOPS_ENV", "production")
        .env("DATABASE_URL", db.url())
        .env("ENCRYPTION_KEY", "7f".repeat(32))
        .env("PLANTOPS_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("PLANTOPS_DATA_DIR", dir.path().join("backend-data"))
        .env("MQTT_HOST", "localhost")
        .env("MQTT_USE_TLS", "true")
        .env("MQTT_TLS_PORT", mqtt_port.to_string())
        .env("MQTT_CA_CERT", certs.join("ca.pem"))
        .env("MQTT_BACKEND_USERNAME", BACKEND_USER)
        .env("MQTT_BACKEND_PASSWORD", BACKEND_PASSWORD)
        .env("MQTT_DYNSEC_USERNAME", DYNSEC_ADMIN)
        .env("MQTT_DYNSEC_PASSWORD", DYNSEC_PASSWORD)
        .env("LOG_FORMAT", "json")
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut backend = backend_command.spawn().unwrap();
    // The container's health check: ready once the database and the broker
    // link (with the backend's own account, created through dynsec) are up.
    let mut ready = false;
    for _ in 0..600 {
        let check = Command::new(binary())
            .arg("healthcheck")
            .env("PLANTOPS_HTTP_ADDR", format!("0.0.0.0:{http_port}"))
            .output()
            .await
            .unwrap();
        if check.status.success() {
            ready = true;
            break;
        }
        if let Ok(Some(status)) = backend.try_wait() {
            panic!("the backend exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "plantops healthcheck never passed");

    let (_nginx, nginx_port, plain_port) = start_nginx(dir.path(), http_port, &certs).await;
    // "localhost", not 127.0.0.1: nginx must pass the Host header on, since
    // the backend tells devices the broker host they used for the API.
    let gateway = format!("https://localhost:{nginx_port}");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs.join("ca.pem")).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .build()
        .unwrap();

    // Plain HTTP answers nothing but a redirect to HTTPS that keeps the
    // method (a device's registration POST is repeated over TLS, never
    // answered in clear) — and the container's health check.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirected = plain
        .post(format!(
            "http://localhost:{plain_port}/api/devices/register"
        ))
        .json(&json!({"mac_address": "dd:00:00:00:00:01"}))
        .send()
        .await
        .unwrap();
    assert_eq!(redirected.status(), 308);
    assert_eq!(
        redirected.headers()["location"],
        "https://localhost/api/devices/register"
    );
    let plain_health = plain
        .get(format!("http://127.0.0.1:{plain_port}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain_health.status(), 200);
    // An HTTPS client that does not trust the stack's CA gets nothing.
    assert!(reqwest::get(format!("{gateway}/api/health")).await.is_err());
    let get = |path: &str| http.get(format!("{gateway}{path}")).send();

    // The UI: index revalidated, hashed assets cached for good, client-side
    // routes answered with the index, security headers everywhere.
    let index = get("/").await.unwrap();
    assert_eq!(index.status(), 200);
    let headers = index.headers().clone();
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["strict-transport-security"], "max-age=31536000");
    assert!(headers.contains_key("content-security-policy"));
    let html = index.text().await.unwrap();
    assert!(html.contains("<div id=\"root\">"), "{html}");
    let asset = html
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a script in index.html")
        .to_string();
    assert!(asset.starts_with("/assets/"), "{asset}");
    let script = http
        .get(format!("{gateway}{asset}"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(script.headers()["content-encoding"], "gzip");
    assert_eq!(script.headers()["x-frame-options"], "DENY");
    let route = get("/plants/some-id").await.unwrap();
    assert_eq!(route.status(), 200);
    assert_eq!(route.text().await.unwrap(), html);
    let missing_asset = get("/assets/nope.js").await.unwrap();
    assert_eq!(missing_asset.status(), 404);
    let gateway_health = get("/health").await.unwrap();
    assert_eq!(gateway_health.status(), 200);

    let api_health: Value = get("/api/health").await.unwrap().json().await.unwrap();
    assert_eq!(api_health["status"], "healthy", "{api_health}");
    assert!(
        api_health.get("components").is_none(),
        "anonymous: status only"
    );
    let anonymous = get("/api/plants").await.unwrap();
    assert_eq!(
        anonymous.status(),
        401,
        "the API needs sign-in behind nginx too"
    );

    // The first admin, created with the CLI on the stack's database (as
    // docs/deployment.md says), signs in through nginx.
    let mut user_add = Command::new(binary());
    user_add
        .args([
            "user",
            "add",
            "admin",
            "--role",
            "admin",
            "--password-stdin",
        ])
        .env_clear()
        .env("DATABASE_URL", db.url())
        .env("PLANTOPS_DATA_DIR", dir.path().join("backend-data"));
    let mut child = user_add
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"production-admin-pw\n").await.unwrap();
    }
    assert!(child.wait().await.unwrap().success());
    let login = http
        .post(format!("{gateway}/api/auth/login"))
        .json(&json!({"username": "admin", "password": "production-admin-pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    // nginx passes the browser's Host with its port, so our Origin matches.
    let key: Value = http
        .post(format!("{gateway}/api/enrollment-keys"))
        .header("cookie", &cookie)
        .header("origin", &gateway)
        .json(&json!({"name": "smoke", "max_uses": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let enrollment_key = key["key"].as_str().unwrap_or_else(|| panic!("{key}"));

    // A device registers through nginx with the enrollment key.
    let response = http
        .post(format!("{gateway}/api/devices/register"))
        .bearer_auth(enrollment_key)
        .json(&json!({"mac_address": "02:00:00:5e:10:01", "firmware_version": "1.0.0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-correlation-id"));
    let registration: Value = response.json().await.unwrap();
    assert_eq!(registration["mqtt_host"], "localhost", "{registration}");
    assert_eq!(registration["mqtt_tls_port"], mqtt_port);
    let credentials = Credentials {
        device_id: registration["device_id"].as_str().unwrap().to_string(),
        username: registration["mqtt_username"].as_str().unwrap().to_string(),
        password: registration["mqtt_password"].as_str().unwrap().to_string(),
    };

    // The live stream through nginx, opened before the reading exists.
    let events = http
        .get(format!("{gateway}/api/events"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let mut stream = events.bytes_stream();

    // Plain MQTT is not offered at all; TLS with the generated CA is.
    let ca = std::fs::read(certs.join("ca.pem")).unwrap();
    let plain = device_options(&credentials, mqtt_port, None, "smoke-plain");
    let (_, _, refused) = connect(plain).await;
    assert_ne!(refused, Connack::Accepted);
    let options = device_options(&credentials, mqtt_port, Some(ca), "smoke-device");
    let (client, mut eventloop, outcome) = connect(options).await;
    assert_eq!(outcome, Connack::Accepted);
    publish_acked(
        &client,
        &mut eventloop,
        &format!("devices/{}/telemetry", credentials.device_id),
        json!({"soil_moisture": 41.5, "temperature": 22.25, "humidity": 48, "light_level": 830}),
    )
    .await;

    let mut seen = String::new();
    let live = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = stream.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if seen.contains("event: reading") && seen.contains(&credentials.device_id) {
                return;
            }
        }
    })
    .await;
    assert!(
        live.is_ok(),
        "no reading on /api/events through nginx: {seen}"
    );

    // Stored: the same reading through nginx's /api/. The live event above
    // is sent after the commit, so this is no race.
    let latest: Value = http
        .get(format!(
            "{gateway}/api/devices/{}/telemetry/latest",
            credentials.device_id
        ))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(latest["soil_moisture"], 41.5, "{latest}");
    assert_eq!(latest["temperature"], 22.25);
    assert_eq!(latest["light_level"], 830.0);

    drop(backend);
}

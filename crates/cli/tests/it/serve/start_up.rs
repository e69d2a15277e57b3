//! Starting, configuring and stopping `plantops serve`: settings refused in one line,
//! production checks, the first admin, logs, migrations, versions, signals.

use super::*;

#[tokio::test]
async fn malformed_settings_stop_start_up_with_one_line() {
    for (variable, value) in [
        ("PLANTOPS_HTTP_ADDR", "not-an-address"),
        ("PLANTOPS_HEARTBEAT_INTERVAL_SECS", "often"),
        ("DATABASE_URL", "mysql://localhost/db"),
        ("LOG_FORMAT", "xml"),
    ] {
        let output = common::plantops()
            .arg("serve")
            .env(variable, value)
            .output()
            .await
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(variable), "{stderr}");
    }
}

#[tokio::test]
async fn production_refuses_a_missing_or_malformed_setting_in_one_line() {
    let secret_looking = "f".repeat(63);
    let cases: [(&str, Option<&str>); 10] = [
        ("DATABASE_URL", None),
        ("DATABASE_URL", Some("sqlite://plantops.db")),
        ("ENCRYPTION_KEY", None),
        ("ENCRYPTION_KEY", Some(&secret_looking)),
        ("MQTT_HOST", None),
        ("MQTT_USE_TLS", Some("false")),
        ("MQTT_CA_CERT", Some("")),
        ("MQTT_BACKEND_PASSWORD", Some("short")),
        ("MQTT_DYNSEC_PASSWORD", None),
        // The backend's own account cannot also be the admin.
        ("MQTT_DYNSEC_USERNAME", Some("plantops_backend")),
    ];
    for (variable, value) in cases {
        let mut command = common::plantops();
        command.arg("serve");
        for (name, default) in production_env() {
            command.env(name, default);
        }
        match value {
            Some(value) => command.env(variable, value),
            None => command.env_remove(variable),
        };
        let output = command.output().await.unwrap();
        assert!(!output.status.success(), "{variable}={value:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(variable), "{variable}: {stderr}");
        assert!(
            !stderr.contains(&secret_looking),
            "a refused value is echoed: {stderr}"
        );
    }
}

#[tokio::test]
async fn empty_optional_variables_count_as_unset() {
    // Compose passes `DISCORD_WEBHOOK_URL=` when the user leaves it out.
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let server = Server::start(
        dir.path(),
        &ports,
        &[
            ("DISCORD_WEBHOOK_URL", ""),
            ("ENCRYPTION_KEY", ""),
            ("MQTT_HOST", ""),
        ],
    )
    .await;
    let (status, health) = server.get("/api/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["components"]["database"]["status"], "connected");
}

#[tokio::test]
async fn healthcheck_exits_zero_only_while_the_server_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let healthcheck = || {
        let mut command = common::plantops();
        command
            .arg("healthcheck")
            .env("PLANTOPS_HTTP_ADDR", format!("0.0.0.0:{}", ports.http));
        command
    };
    let refused = healthcheck().output().await.unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("did not answer"));

    let server = Server::start(dir.path(), &ports, &[]).await;
    let ready = healthcheck().output().await.unwrap();
    assert!(ready.status.success(), "{ready:?}");
    drop(server);
}

#[tokio::test]
async fn a_taken_mqtt_port_is_named_with_its_setting() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let output = common::plantops()
        .arg("serve")
        .env("PLANTOPS_DATA_DIR", dir.path())
        .env(
            "PLANTOPS_HTTP_ADDR",
            format!("127.0.0.1:{}", plantops_testkit::free_port()),
        )
        .env("PLANTOPS_MQTT_ADDR", format!("127.0.0.1:{port}"))
        .env("PLANTOPS_MQTTS_ADDR", "")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("PLANTOPS_MQTT_ADDR"), "{stderr}");
}

#[tokio::test]
async fn migrate_applies_and_is_harmless_twice() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let status = common::plantops()
            .arg("migrate")
            .env("PLANTOPS_DATA_DIR", dir.path())
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }
    let store = plantops_store::connect(&format!(
        "sqlite://{}",
        dir.path().join("plantops.db").display()
    ))
    .await
    .unwrap();
    assert!(store.is_migrated().await.unwrap());
}

/// With LOG_FORMAT=json every line is a JSON object; request lines carry
/// the correlation id; no password ever appears.
#[tokio::test]
async fn json_logs_carry_request_ids_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let mut command = Server::command(
        dir.path(),
        &ports,
        &[("LOG_FORMAT", "json"), ("LOG_LEVEL", "debug")],
    );
    command.stdout(std::process::Stdio::piped());
    let mut server = Server::launch(command, &ports).await;
    let mut stdout = server.child.stdout.take().unwrap();
    let device = server.register("aa:00:00:00:00:07").await;
    let response = server
        .client
        .get(format!("{}/api/plants", server.http))
        .header("x-correlation-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (_, _, outcome) = connect(device_options(
        &device,
        server.mqtt_port,
        None,
        &device.device_id,
    ))
    .await;
    assert_eq!(outcome, Connack::Accepted);
    let mut wrong = device.clone();
    wrong.password = "a-wrong-secret-password".into();
    connect(device_options(&wrong, server.mqtt_port, None, "x")).await;
    let (_, rotated) = server
        .post(
            &format!("/api/devices/{}/rotate-credentials", device.device_id),
            json!({}),
        )
        .await;
    // Accounts, tokens and keys: none of their secrets may be logged either.
    let sign_in = |password: &str| {
        server
            .client
            .post(format!("{}/api/auth/login", server.http))
            .json(&json!({"username": "admin", "password": password}))
            .send()
    };
    assert_eq!(
        sign_in("a-wrong-admin-password").await.unwrap().status(),
        401
    );
    let login = sign_in(common::ADMIN_PASSWORD).await.unwrap();
    assert_eq!(login.status(), 200);
    let session = login.headers()["set-cookie"].to_str().unwrap().to_string();
    let session = session
        .split(';')
        .next()
        .unwrap()
        .split('=')
        .nth(1)
        .unwrap()
        .to_string();
    let (_, token) = server
        .post("/api/tokens", json!({"name": "logged?", "scope": "read"}))
        .await;
    let (_, key) = server
        .post("/api/enrollment-keys", json!({"name": "logged?"}))
        .await;
    let key = key["key"].as_str().unwrap().to_string();
    let keyed = server
        .client
        .post(format!("{}/api/devices/register", server.http))
        .bearer_auth(&key)
        .json(&json!({"mac_address": "aa:00:00:00:00:08"}))
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 200);

    server.kill().await;
    let mut logs = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut logs)
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(lines
        .iter()
        .all(|l| l["timestamp"].is_string() && l["level"].is_string()));
    assert!(lines
        .iter()
        .any(|l| l["span"]["request_id"] == "trace-me-42" && l["message"] == "request finished"));
    assert!(lines
        .iter()
        .any(|l| l["device_id"] == device.device_id.as_str()));
    for secret in [
        device.password.as_str(),
        "a-wrong-secret-password",
        rotated["mqtt_password"].as_str().unwrap(),
        common::ADMIN_PASSWORD,
        "a-wrong-admin-password",
        &session,
        token["token"].as_str().unwrap(),
        server.token.as_deref().unwrap(),
        &key,
    ] {
        assert!(
            !logs.contains(secret),
            "a secret reached the logs: {secret}"
        );
    }
    assert!(lines.iter().any(|l| l["message"] == "signed in"));
    assert!(lines.iter().any(|l| l["message"] == "failed sign-in"));
}

/// First start without an account: a setup link in the log and the token
/// in the data directory; `plantops user add` (while the server runs)
/// makes both useless.
#[tokio::test]
async fn first_start_logs_a_setup_link_that_the_first_admin_retires() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let mut command = Server::command(dir.path(), &ports, &[("LOG_FORMAT", "json")]);
    command.stdout(std::process::Stdio::piped());
    // Not Server::launch: that would add the tests' admin at once.
    let mut child = command.spawn().unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let link = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("a setup link before the log ends");
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
        if let Some(link) = entry["setup_link"].as_str() {
            break link.to_string();
        }
    };
    let token = std::fs::read_to_string(dir.path().join("setup-token")).unwrap();
    assert_eq!(
        link,
        format!(
            "http://127.0.0.1:{}/setup?token={}",
            ports.http,
            token.trim()
        )
    );
    let http = reqwest::Client::new();
    let status: serde_json::Value = http
        .get(format!("http://127.0.0.1:{}/api/auth/status", ports.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["setup_required"], true);

    let added = common::run_like(
        &command,
        &[
            "user",
            "add",
            "owner",
            "--role",
            "admin",
            "--password-stdin",
        ],
        "owner-password\n",
    )
    .await;
    assert!(added.contains("added owner (admin)"), "{added}");
    assert!(!dir.path().join("setup-token").exists());
    let setup = http
        .post(format!("http://127.0.0.1:{}/api/auth/setup", ports.http))
        .json(&json!({"token": token.trim(), "username": "late", "password": "late-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(setup.status(), 409, "the token died with the first admin");
    let listed = common::run_like(&command, &["user", "list"], "").await;
    assert!(listed.starts_with("owner\tadmin\t"), "{listed}");

    // Recovery: a new password from the command line while the server runs.
    let login = |password: &'static str| {
        http.post(format!("http://127.0.0.1:{}/api/auth/login", ports.http))
            .json(&json!({"username": "owner", "password": password}))
            .send()
    };
    assert_eq!(login("owner-password").await.unwrap().status(), 200);
    common::run_like(
        &command,
        &["user", "passwd", "owner", "--password-stdin"],
        "recovered-pw\n",
    )
    .await;
    assert_eq!(login("owner-password").await.unwrap().status(), 401);
    assert_eq!(login("recovered-pw").await.unwrap().status(), 200);
    child.kill().await.unwrap();
}

/// The opt-outs work, warn at every start, show in /api/auth/status, and
/// production refuses them.
#[tokio::test]
async fn auth_off_and_open_enrollment_are_loud_and_refused_in_production() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let mut command = Server::command(
        dir.path(),
        &ports,
        &[
            ("PLANTOPS_AUTH", "off"),
            ("LOG_FORMAT", "json"),
            ("LOG_LEVEL", "warn"),
        ],
    );
    command.stdout(std::process::Stdio::piped());
    let mut server = Server::launch(command, &ports).await;
    assert!(server.token.is_none());
    let (status, plants) = server.get("/api/plants").await;
    assert_eq!(
        (status, plants["total"].as_u64()),
        (200, Some(0)),
        "no credentials needed"
    );
    server.register("aa:00:00:00:00:09").await;
    let (_, auth) = server.get("/api/auth/status").await;
    assert_eq!(
        auth,
        json!({"setup_required": false, "auth": false, "enrollment_open": true})
    );
    let mut stdout = server.child.stdout.take().unwrap();
    server.kill().await;
    let mut logs = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut logs)
        .await
        .unwrap();
    assert!(logs.contains("PLANTOPS_AUTH=off"), "{logs}");
    assert!(!logs.contains("setup_link"), "no setup while auth is off");

    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let server = Server::start(dir.path(), &ports, &[("PLANTOPS_ENROLLMENT", "open")]).await;
    let anonymous = reqwest::Client::new()
        .post(format!("{}/api/devices/register", server.http))
        .json(&json!({"mac_address": "aa:00:00:00:00:0a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        anonymous.status(),
        200,
        "original firmware registers without a key"
    );
    let (_, devices) = server.get("/api/devices").await;
    assert_eq!(devices["devices"][0]["enrollment"], "open");
    let plants = reqwest::Client::new()
        .get(format!("{}/api/plants", server.http))
        .send()
        .await
        .unwrap();
    assert_eq!(plants.status(), 401, "only enrollment is open");

    for (variable, value) in [("PLANTOPS_AUTH", "off"), ("PLANTOPS_ENROLLMENT", "open")] {
        let output = common::plantops()
            .arg("serve")
            .envs(production_env())
            .env(variable, value)
            .output()
            .await
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("refuses {variable}={value}")),
            "{stderr}"
        );
    }
}

/// With SQLite and no ENCRYPTION_KEY a key is generated (owner-only); a
/// different key later is refused rather than silently losing secrets.
#[tokio::test]
async fn a_wrong_encryption_key_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let mut server = Server::start(dir.path(), &ports, &[]).await;
    let key_file = dir.path().join("encryption.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let key = std::fs::read_to_string(&key_file).unwrap();
    server.kill().await;

    let wrong = "0".repeat(64);
    assert_ne!(key.trim(), wrong);
    let output = Server::command(dir.path(), &ports, &[("ENCRYPTION_KEY", &wrong)])
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ENCRYPTION_KEY does not match"), "{stderr}");

    // The right key, given explicitly, works.
    Server::start(dir.path(), &ports, &[("ENCRYPTION_KEY", key.trim())]).await;
}

#[tokio::test]
async fn sigterm_ends_open_event_streams_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &Ports::free(), &[]).await;
    let mut stream = server
        .client
        .get(format!("{}/api/events", server.http))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    server.signal_stop();
    // The stream ends instead of holding graceful shutdown open forever.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the event stream stayed open after SIGTERM");
    let exit = tokio::time::timeout(Duration::from_secs(10), server.child.wait())
        .await
        .expect("plantops exits after SIGTERM with a browser connected")
        .unwrap();
    assert!(exit.success(), "{exit}");
}

/// A database a newer PlantOps migrated is refused at once, in one line
/// saying what to do; nothing is touched (no downgrade damage).
#[tokio::test]
async fn a_database_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let mut server = Server::start(dir.path(), &ports, &[]).await;
    server.kill().await;
    let file = dir.path().join("plantops.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'from the future', 1, x'00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let mut serve = Server::command(dir.path(), &ports, &[]);
    let mut migrate = common::plantops();
    migrate.arg("migrate").env("PLANTOPS_DATA_DIR", dir.path());
    for command in [&mut serve, &mut migrate] {
        let output = tokio::time::timeout(
            Duration::from_secs(30),
            command.stderr(std::process::Stdio::piped()).output(),
        )
        .await
        .expect("refused at once, not retried")
        .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("migrated by a newer PlantOps"), "{stderr}");
    }
}

/// `--version` names the version and the commit; completions and the
/// manual page come from the same command definition the parser uses.
#[tokio::test]
async fn version_completions_and_manual_page() {
    let run = |args: &'static [&'static str]| async move {
        let output = common::plantops().args(args).output().await.unwrap();
        assert!(output.status.success(), "{args:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let version = run(&["--version"]).await;
    let expected = format!("plantops {} (", env!("CARGO_PKG_VERSION"));
    assert!(version.starts_with(&expected), "{version}");
    assert!(version.trim_end().ends_with(')'), "{version}");
    let bash = run(&["completions", "bash"]).await;
    assert!(bash.contains("complete -F _plantops"), "{bash}");
    assert!(bash.contains("rotate-key"));
    let zsh = run(&["completions", "zsh"]).await;
    assert!(zsh.starts_with("#compdef plantops"));
    let manual = run(&["manpage"]).await;
    assert!(manual.contains(".TH plantops 1"));
    assert!(manual.contains("serve"));
}

/// Health and metrics tell when the broker's certificate and its CA end;
/// a generated server certificate lives 397 days (Apple's platforms refuse
/// longer ones) and is renewed from the same CA within 30 days of its end.
#[tokio::test]
async fn certificate_ends_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Ports::free(), &[]).await;
    let (_, health) = server.get("/api/health").await;
    let certificates = &health["components"]["certificates"];
    assert_eq!(certificates["broker"]["status"], "ok", "{certificates}");
    assert_eq!(certificates["broker"]["days_left"], 396, "{certificates}");
    assert_eq!(certificates["ca"]["status"], "ok");
    assert!(certificates["ca"]["days_left"].as_i64().unwrap() > 365 * 20);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("plantops_certificate_expiry_timestamp_seconds{certificate=\"broker\"}"),
        "{metrics}"
    );
}

/// SQLite serves one instance: a second `plantops serve` on the same data
/// directory refuses to start, says why and where to go instead, and the
/// first one goes on serving.
#[tokio::test]
async fn a_second_server_on_the_same_data_directory_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(dir.path(), &Ports::free(), &[]).await;
    let mut second = Server::command(dir.path(), &Ports::free(), &[]);
    second.stderr(std::process::Stdio::piped());
    let output = tokio::time::timeout(Duration::from_secs(30), second.output())
        .await
        .expect("the second server gives up at once")
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("another PlantOps is running on the data directory")
            && stderr.contains("docs/scaling.md"),
        "{stderr}"
    );
    let (status, _) = first.get("/api/ready").await;
    assert_eq!(status, 200);
}

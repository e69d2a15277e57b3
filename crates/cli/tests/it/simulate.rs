//! `plantops simulate` and `plantops bench` against a real `plantops serve`.

use std::process::Output;

use crate::common::{plantops, Ports, Server};
use serde_json::Value;

async fn run(args: &[&str]) -> Output {
    let output = plantops()
        .args(args)
        .env_remove("PLANTOPS_URL")
        .output()
        .await
        .expect("run plantops");
    assert!(
        output.status.success(),
        "plantops {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn last_json_line(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().expect("some output");
    serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"))
}

async fn history_counts(server: &Server) -> Vec<u64> {
    let (_, plants) = server.get("/api/plants").await;
    let mut counts = Vec::new();
    for plant in plants["plants"].as_array().unwrap() {
        let id = plant["id"].as_str().unwrap();
        let (status, history) = server
            .get(&format!("/api/plants/{id}/history?hours=1"))
            .await;
        assert_eq!(status, 200);
        counts.push(history["count"].as_u64().unwrap());
    }
    counts
}

#[tokio::test]
async fn simulated_devices_register_create_plants_and_deliver_every_reading() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Ports::free(), &[]).await;
    let credentials = dir.path().join("devices.json");
    let credentials_arg = credentials.to_str().unwrap();
    // Devices enroll with a key; plants are created with the admin's token.
    let (status, key) = server
        .post(
            "/api/enrollment-keys",
            serde_json::json!({"name": "simulator"}),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let token = server.token.clone().unwrap();
    let common_args = [
        "simulate",
        "--token",
        &token,
        "--enrollment-key",
        key["key"].as_str().unwrap(),
        "--url",
        &server.http,
        "--devices",
        "3",
        "--interval",
        "0.02",
        "--heartbeat-interval",
        "0.05",
        "--seed",
        "9",
        "--credentials",
        credentials_arg,
    ];

    // Without credentials the simulator says what it needs.
    let output = plantops()
        .args(["simulate", "--url", &server.http, "--count", "1"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("--enrollment-key"),
        "{stderr}"
    );

    let mut first = common_args.to_vec();
    first.extend(["--count", "5", "--create-plants"]);
    let output = run(&first).await;
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(
        summary.contains("15 readings (15 acknowledged)"),
        "{summary}"
    );

    let (_, plants) = server.get("/api/plants").await;
    assert_eq!(plants["total"], 3);
    for plant in plants["plants"].as_array().unwrap() {
        assert_eq!(plant["device_count"], 1, "{plant}");
        assert!(plant["species"].is_string());
    }
    assert_eq!(history_counts(&server).await, vec![5, 5, 5]);
    let (_, devices) = server.get("/api/devices").await;
    for device in devices["devices"].as_array().unwrap() {
        assert_eq!(device["enrollment"], "key", "{device}");
    }

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&credentials)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "credentials file is private");
    }
    let saved: Value = serde_json::from_slice(&std::fs::read(&credentials).unwrap()).unwrap();
    assert_eq!(saved.as_array().unwrap().len(), 3);

    // Second run: same devices from the file, over TLS with the server's CA,
    // no new plants.
    let mut second = common_args.to_vec();
    second.extend(["--count", "2", "--create-plants", "--tls"]);
    run(&second).await;
    let (_, devices) = server.get("/api/devices").await;
    assert_eq!(devices["total"], 3, "the same devices were reused");
    let (_, plants) = server.get("/api/plants").await;
    assert_eq!(plants["total"], 3, "no second plant per device");
    assert_eq!(history_counts(&server).await, vec![7, 7, 7]);
    let saved_again: Value = serde_json::from_slice(&std::fs::read(&credentials).unwrap()).unwrap();
    assert_eq!(saved, saved_again, "the saved password still works");
}

#[tokio::test]
async fn simulate_names_an_unreachable_server() {
    let port = plantops_testkit::free_port();
    let output = plantops()
        .args([
            "simulate",
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--count",
            "1",
        ])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is `plantops serve` running"), "{stderr}");
}

#[tokio::test]
async fn bench_ingest_reports_what_the_database_stored() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let output = run(&[
        "bench",
        "ingest",
        "--connections",
        "4",
        "--warmup",
        "0.3",
        "--duration",
        "1",
        "--json",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ])
    .await;
    let result = last_json_line(&output);
    assert_eq!(result["backend"], "sqlite+builtin");

    let store = plantops_store::connect(&format!(
        "sqlite://{}",
        data_dir.join("plantops.db").display()
    ))
    .await
    .unwrap();
    let rows = store.count_readings().await.unwrap();
    assert!(rows > 0, "the benchmark published something");
    assert_eq!(
        result["stored"], rows,
        "reported rows are the stored rows: {result}"
    );
    assert_eq!(
        result["acknowledged"], rows,
        "every acknowledged reading stored: {result}"
    );
    assert_eq!(result["published"], rows, "{result}");
    assert_eq!(result["lost"], 0, "{result}");
    assert!(result["readings_per_sec"].as_f64().unwrap() > 0.0);
    assert!(result["p99_ms"].as_f64().unwrap() >= result["p50_ms"].as_f64().unwrap());
    assert!(result["rss_mb"].as_f64().unwrap() > 0.0);
    // CPU per reading, for the server and the load generator: both spent
    // some (the value itself is a measurement, reported, not asserted).
    for cpu in ["server_cpu_us_per_reading", "loadgen_cpu_us_per_reading"] {
        assert!(result[cpu].as_f64().unwrap() > 0.0, "{cpu}: {result}");
    }
}

#[tokio::test]
async fn bench_api_seeds_the_volume_it_reports() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let output = run(&[
        "bench",
        "api",
        "--plants",
        "2",
        "--days",
        "1",
        "--requests",
        "20",
        "--json",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ])
    .await;
    let result = last_json_line(&output);
    assert_eq!(result["rows"], 2 * 1440);
    let store = plantops_store::connect(&format!(
        "sqlite://{}",
        data_dir.join("plantops.db").display()
    ))
    .await
    .unwrap();
    assert_eq!(store.count_readings().await.unwrap(), 2 * 1440);
    for query in ["list_plants", "plant_detail", "history_30d", "series_30d"] {
        assert_eq!(result["queries"][query]["requests"], 20, "{query}");
        assert!(result["queries"][query]["p99_ms"].as_f64().unwrap() > 0.0);
    }
    // A day of one-a-minute readings: the history answer carries all 1,440.
    assert!(
        result["queries"]["history_30d"]["bytes_per_response"]
            .as_u64()
            .unwrap()
            > 1440 * 100
    );
}

#[tokio::test]
async fn bench_connections_holds_every_connection() {
    let output = run(&["bench", "connections", "--connections", "50", "--json"]).await;
    let result = last_json_line(&output);
    assert_eq!(result["connections"], 50);
    assert!(result["rss_mb"].as_f64().unwrap() > 0.0);
}

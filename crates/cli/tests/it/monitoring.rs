//! The monitoring profile against a real Prometheus (Debian's package):
//! the shipped scrape job, with a read-scope token, scrapes a running
//! `plantops serve` linked to Mosquitto; the shipped alert rules evaluate
//! without error; every query of the shipped Grafana dashboard returns data.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::Command;

use crate::common::{self, mosquitto::Mosquitto, Ports, Server};

fn monitoring(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/monitoring")
        .join(file)
}

/// The repository's Prometheus configuration, pointed at this test's
/// server: its `plantops` job as shipped, but a static target instead of
/// the compose service name, and one-second intervals.
fn prometheus_config(target: &str, token_file: &Path) -> Value {
    let shipped: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(monitoring("prometheus.yml")).unwrap())
            .unwrap();
    let mut job = shipped["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["job_name"] == "plantops")
        .expect("a plantops job")
        .clone();
    assert_eq!(job["authorization"]["type"], "Bearer");
    let job_fields = job.as_object_mut().unwrap();
    job_fields.remove("dns_sd_configs").expect("every replica");
    job_fields.insert("static_configs".into(), json!([{ "targets": [target] }]));
    job["authorization"]["credentials_file"] = json!(token_file);
    json!({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [monitoring("rules.yml")],
        "scrape_configs": [job],
    })
}

struct Prometheus {
    _child: tokio::process::Child,
    url: String,
    client: reqwest::Client,
}

impl Prometheus {
    async fn start(dir: &Path, config: &Value) -> Prometheus {
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, serde_yaml_ng::to_string(config).unwrap()).unwrap();
        let check = Command::new("promtool")
            .args(["check", "config"])
            .arg(&config_file)
            .output()
            .await
            .expect("promtool (package prometheus)");
        assert!(check.status.success(), "{check:?}");
        let port = Ports::free().http;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus (package prometheus)");
        let prometheus = Prometheus {
            _child: child,
            url: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        };
        prometheus
            .until("Prometheus ready", || async {
                let ready = prometheus
                    .client
                    .get(format!("{}/-/ready", prometheus.url))
                    .send()
                    .await;
                ready.is_ok_and(|r| r.status().is_success()).then_some(())
            })
            .await;
        prometheus
    }

    /// Polls `check` until it gives a value, for up to a minute.
    async fn until<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The result vector of an instant query.
    async fn query(&self, expr: &str) -> Vec<Value> {
        let answer: Value = self
            .client
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn prometheus_scrapes_plantops_and_every_dashboard_query_has_data() {
    let dir = tempfile::tempdir().unwrap();
    let broker_dir = dir.path().join("broker");
    std::fs::create_dir_all(&broker_dir).unwrap();
    let broker = Mosquitto::start(&broker_dir, Ports::free().mqtt).await;
    let mut env: Vec<(&str, String)> = broker.backend_env();
    env.push(("PLANTOPS_BACKUP_SCHEDULE", "0 3 * * *".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let data = dir.path().join("data");
    let ports = Ports::free();
    let serve = Server::command(&data, &ports, &env);
    let server = Server::launch(Server::command(&data, &ports, &env), &ports).await;
    let token = common::run_like(
        &serve,
        &[
            "token",
            "create",
            "--user",
            "admin",
            "--name",
            "prometheus",
            "--scope",
            "read",
        ],
        "",
    )
    .await;
    let token_file = dir.path().join("plantops.token");
    std::fs::write(&token_file, token.trim()).unwrap();
    // Something for the ingest panels to count: a reading and a message
    // that is dropped.
    let device = server.register("aa:bb:cc:00:00:51").await;
    let ca = std::fs::read(&broker.ca).unwrap();
    let options = common::device_options(&device, broker.port, Some(ca), &device.username);
    let (client, mut eventloop, _) = common::connect(options).await;
    let telemetry = format!("devices/{}/telemetry", device.device_id);
    let reading = json!({"soil_moisture": 41.5, "temperature": 21.0});
    common::publish_acked(&client, &mut eventloop, &telemetry, reading).await;
    // A JSON string, not a reading object.
    common::publish_acked(&client, &mut eventloop, &telemetry, json!("not a reading")).await;

    let target = server.http.trim_start_matches("http://").to_string();
    let prometheus = Prometheus::start(dir.path(), &prometheus_config(&target, &token_file)).await;

    prometheus
        .until("the backend scraped", || async {
            let up = prometheus.query(r#"up{job="plantops"}"#).await;
            (up.first()?["value"][1] == "1").then_some(())
        })
        .await;

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring("grafana/plantops.json")).unwrap(),
    )
    .unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert_eq!(
            panel["datasource"]["uid"], "prometheus",
            "{}",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            queries.push((
                panel["title"].clone(),
                target["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert!(queries.len() >= 12, "{queries:?}");
    for (title, expr) in &queries {
        let result = prometheus
            .until(&format!("{title}: {expr}"), || async {
                let result = prometheus.query(expr).await;
                (!result.is_empty()).then_some(result)
            })
            .await;
        assert!(!result.is_empty(), "{title}");
    }
    let stored = prometheus
        .query(r#"sum(plantops_readings_committed_total)"#)
        .await;
    assert_eq!(stored[0]["value"][1], "1", "the one reading");
    let dropped = prometheus.query("sum(plantops_ingest_dropped_total)").await;
    assert_eq!(
        dropped[0]["value"][1], "1",
        "the message that was no reading"
    );
    let clients = prometheus
        .query("max(plantops_broker_clients_connected)")
        .await;
    let clients: f64 = clients[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(clients >= 2.0, "the device and the backend: {clients}");

    // The shipped rules load and evaluate against real series; none fires
    // on a healthy server.
    let rules = prometheus
        .until("every rule evaluated", || async {
            let answer = prometheus.get("/api/v1/rules").await;
            let rules: Vec<Value> = answer["data"]["groups"]
                .as_array()?
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            let evaluated = rules.iter().all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            });
            (!rules.is_empty() && evaluated).then_some(rules)
        })
        .await;
    assert_eq!(rules.len(), 7);
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
        assert_eq!(rule["state"], "inactive", "{rule}");
    }
    let _ = client.disconnect().await;
}

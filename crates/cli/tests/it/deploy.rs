//! Invariants of the production stack in deploy/: what a home-server owner
//! relies on without reading the compose file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn compose() -> Value {
    serde_yaml_ng::from_str(&read("deploy/docker-compose.prod.yml")).expect("valid YAML")
}

fn services(compose: &Value) -> Vec<(String, Value)> {
    compose["services"]
        .as_object()
        .expect("services")
        .iter()
        .map(|(name, service)| (name.clone(), service.clone()))
        .collect()
}

#[test]
fn the_stack_has_its_services() {
    let names: BTreeSet<String> = services(&compose()).into_iter().map(|(n, _)| n).collect();
    let expected: BTreeSet<String> = [
        "db",
        "mosquitto",
        "backend",
        "backup",
        "frontend",
        "prometheus",
        "postgres-exporter",
        "grafana",
    ]
    .map(String::from)
    .into();
    assert_eq!(names, expected);
    // Monitoring is opt-in: `--profile monitoring`.
    for (name, service) in services(&compose()) {
        let monitoring = ["prometheus", "postgres-exporter", "grafana"].contains(&name.as_str());
        let expected = if monitoring {
            serde_json::json!(["monitoring"])
        } else {
            Value::Null
        };
        assert_eq!(service["profiles"], expected, "{name}");
        if monitoring {
            for port in service["ports"].as_array().into_iter().flatten() {
                let port = port.as_str().unwrap();
                assert!(
                    port.starts_with("127.0.0.1:"),
                    "{name} publishes {port} beyond this host"
                );
            }
        }
    }
}

/// The backup service reads the broker's accounts, never changes them, and
/// reaches only the database.
#[test]
fn the_backup_service_reads_the_broker_volume_and_writes_only_its_own() {
    let compose = compose();
    let backup = &compose["services"]["backup"];
    let volumes: Vec<&str> = backup["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        volumes,
        ["backups:/backups", "mosquitto-data:/mosquitto-data:ro"]
    );
    assert_eq!(backup["networks"], serde_json::json!(["data"]));
    assert_eq!(backup["read_only"], true);
    assert_eq!(backup["build"]["target"], "backup");
    let dockerfile = read("deploy/backend.Dockerfile");
    assert!(
        dockerfile.contains("postgresql-client-15"),
        "pg_dump of the db's major version"
    );
    assert!(
        read("deploy/docker-compose.prod.yml").contains("timescale/timescaledb:2.17.2-pg15"),
        "the client matches the server's major version"
    );
}

/// The UI container cannot reach the database or the broker: only the
/// backend sits on both networks.
#[test]
fn the_ui_reaches_only_the_backend() {
    let compose = compose();
    let networks = |service: &str| -> BTreeSet<String> {
        compose["services"][service]["networks"]
            .as_array()
            .unwrap_or_else(|| panic!("{service} names its networks"))
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    };
    let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(networks("frontend"), set(&["edge"]));
    assert_eq!(networks("backend"), set(&["data", "edge"]));
    assert_eq!(networks("db"), set(&["data"]));
    assert_eq!(networks("mosquitto"), set(&["data"]));
}

#[test]
fn every_service_restarts_has_limits_reservations_and_a_health_check() {
    for (name, service) in services(&compose()) {
        assert_eq!(service["restart"], "always", "{name}");
        let resources = &service["deploy"]["resources"];
        for kind in ["limits", "reservations"] {
            for key in ["cpus", "memory"] {
                assert!(
                    resources[kind][key].is_string(),
                    "{name} has no {kind}.{key}"
                );
            }
        }
        let health = &service["healthcheck"];
        assert!(health["test"].is_array(), "{name} has no health check");
        assert!(
            health["start_period"].is_string(),
            "{name}: no start_period"
        );
        assert!(
            !service["logging"].is_null(),
            "{name}: logs are not rotated"
        );
        if let Some(dependencies) = service["depends_on"].as_object() {
            for (dependency, condition) in dependencies {
                assert_eq!(
                    condition["condition"], "service_healthy",
                    "{name} waits for {dependency} only to start"
                );
            }
        }
    }
}

#[test]
fn the_backend_waits_for_healthy_db_and_broker_and_nginx_for_the_backend() {
    let compose = compose();
    let waits = |service: &str| -> BTreeSet<String> {
        compose["services"][service]["depends_on"]
            .as_object()
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(
        waits("backend"),
        ["db", "mosquitto"].map(String::from).into()
    );
    assert_eq!(waits("frontend"), ["backend"].map(String::from).into());
}

#[test]
fn mosquitto_publishes_only_the_tls_port_and_nothing_publishes_plain_mqtt() {
    let compose = compose();
    for (name, service) in services(&compose) {
        for port in service["ports"].as_array().into_iter().flatten() {
            let port = port.as_str().expect("short port syntax");
            let container_port = port.rsplit(':').next().unwrap();
            assert_ne!(container_port, "1883", "{name} publishes plain MQTT");
            if name == "mosquitto" {
                assert_eq!(container_port, "8883", "mosquitto publishes {port}");
            }
        }
    }
    assert_eq!(
        compose["services"]["mosquitto"]["ports"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(
        compose["services"]["db"]["ports"].is_null(),
        "the database is published"
    );
    assert!(
        compose["services"]["backend"]["ports"].is_null(),
        "the backend bypasses nginx"
    );

    let config = read("deploy/mosquitto/mosquitto.conf");
    let directives: Vec<&str> = config
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let listeners: Vec<&&str> = directives
        .iter()
        .filter(|l| l.starts_with("listener"))
        .collect();
    assert_eq!(listeners, [&"listener 8883"], "TLS is the only listener");
    for required in [
        "certfile ",
        "keyfile ",
        "plugin ",
        "plugin_opt_config_file ",
    ] {
        assert!(
            directives.iter().any(|l| l.starts_with(required)),
            "no {required}"
        );
    }
    assert!(directives.contains(&"allow_anonymous false"));
    assert!(directives.contains(&"persistence true"));
    assert!(
        directives
            .iter()
            .any(|l| l.starts_with("plugin ") && l.ends_with("mosquitto_dynamic_security.so")),
        "dynamic security is not loaded"
    );
}

/// What Mosquitto acknowledged while the backend was away must fit its
/// memory limit and survive the broker's own restart as far as it can:
/// queue bounds in messages and bytes under the container's memory, and
/// persistence saved at least every 60 s.
#[test]
fn mosquitto_queues_for_the_backend_within_its_memory_and_saves_often() {
    let config = read("deploy/mosquitto/mosquitto.conf");
    let setting = |name: &str| -> u64 {
        config
            .lines()
            .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("mosquitto.conf sets no {name}"))
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number"))
    };
    assert!(config.lines().any(|l| l.trim() == "persistence true"));
    let autosave = setting("autosave_interval");
    assert!((1..=60).contains(&autosave), "autosave_interval {autosave}");
    assert!(!config
        .lines()
        .any(|l| l.trim() == "autosave_on_changes true"));
    // 15 minutes of 1,000 devices publishing once a minute.
    assert!(setting("max_queued_messages") >= 15_000);
    let memory = compose()["services"]["mosquitto"]["deploy"]["resources"]["limits"]["memory"]
        .as_str()
        .and_then(|m| m.strip_suffix('m'))
        .and_then(|m| m.parse::<u64>().ok())
        .expect("mosquitto's memory limit in MiB")
        * 1024
        * 1024;
    assert!(
        setting("max_queued_bytes") <= memory / 2,
        "payloads alone could fill the container"
    );
}

#[test]
fn data_lives_in_named_volumes_and_bind_mounts_are_read_only_configuration() {
    let compose = compose();
    let named: BTreeSet<String> = compose["volumes"]
        .as_object()
        .expect("named volumes")
        .keys()
        .cloned()
        .collect();
    for (name, service) in services(&compose) {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let volume = volume.as_str().expect("short volume syntax");
            let source = volume.split(':').next().unwrap();
            if named.contains(source) {
                continue;
            }
            assert!(volume.ends_with(":ro"), "{name}: {volume} is writable");
            let allowed = source.starts_with("./certs/")
                || source.starts_with("./mosquitto/")
                || source.starts_with("./monitoring/");
            assert!(
                allowed,
                "{name} mounts {source}: only certificates and configuration"
            );
            assert!(
                Path::new(source).extension().is_some(),
                "{name} mounts the folder {source}, not a file"
            );
            assert!(
                !volume.contains("ca-key.pem"),
                "{name} can read the CA's key"
            );
        }
    }
    assert!(named.contains("db-data") && named.contains("mosquitto-data"));
}

#[test]
fn the_backend_is_not_root_logs_json_and_runs_read_only() {
    let compose = compose();
    let backend = &compose["services"]["backend"];
    let user = backend["user"].as_str().expect("backend user");
    assert!(
        !user.starts_with("0") && !user.starts_with("root"),
        "{user}"
    );
    assert_eq!(backend["read_only"], true);
    assert_eq!(backend["environment"]["LOG_FORMAT"], "json");
    assert_eq!(backend["environment"]["PLANTOPS_ENV"], "production");

    let dockerfile = read("deploy/backend.Dockerfile");
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(runtime.contains("\nUSER 1000:1000"), "runtime stage user");
    assert!(
        runtime.contains("plantops\", \"healthcheck\"]"),
        "health check"
    );
    let instructions = dockerfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'));
    assert!(
        !instructions.clone().any(|l| l.contains("curl")),
        "the image needs no curl"
    );
}

/// Variables that hold secrets: they must never get a default.
fn is_secret(variable: &str) -> bool {
    ["PASSWORD", "KEY", "SECRET", "TOKEN", "WEBHOOK"]
        .iter()
        .any(|word| variable.contains(word))
}

#[test]
fn no_secret_has_a_default_and_every_variable_is_documented() {
    let text = read("deploy/docker-compose.prod.yml");
    let example = read("deploy/.env.prod.example");
    let documented: BTreeSet<&str> = example
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(name, _)| name.trim()))
        .collect();
    let mut referenced = BTreeSet::new();
    for reference in text.split("${").skip(1) {
        let body = reference.split('}').next().unwrap();
        let variable: String = body
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let rest = &body[variable.len()..];
        if is_secret(&variable) {
            assert!(
                rest.starts_with(":?") || rest == ":-",
                "{variable} has a default: ${{{body}}}"
            );
        }
        referenced.insert(variable);
    }
    for variable in &referenced {
        assert!(
            documented.contains(variable.as_str()),
            "{variable} is not in .env.prod.example"
        );
    }
    for line in example.lines().filter(|l| !l.starts_with('#')) {
        if let Some((name, value)) = line.split_once('=') {
            if is_secret(name) {
                assert!(value.trim().is_empty(), "the example sets {name}");
            }
        }
    }
}

/// Docker Compose itself (Debian's docker-compose) reads the file: valid
/// with the secrets given, refused naming the secret when one is missing.
#[test]
fn docker_compose_accepts_the_file_and_refuses_a_missing_secret() {
    let secrets = [
        ("POSTGRES_PASSWORD", "check"),
        ("ENCRYPTION_KEY", "00"),
        ("MQTT_DYNSEC_PASSWORD", "check"),
        ("MQTT_BACKEND_PASSWORD", "check"),
    ];
    let config = |skip: Option<&str>| {
        let mut command = std::process::Command::new("docker-compose");
        command
            .current_dir(repo())
            .args(["--env-file", "deploy/.env.prod.example"])
            .args(["-f", "deploy/docker-compose.prod.yml", "config", "-q"]);
        for (name, value) in secrets {
            if Some(name) != skip {
                command.env(name, value);
            } else {
                command.env_remove(name);
            }
        }
        command
            .output()
            .expect("docker-compose (Debian package docker-compose)")
    };
    let valid = config(None);
    assert!(valid.status.success(), "{valid:?}");
    for (name, _) in secrets {
        let refused = config(Some(name));
        assert!(!refused.status.success(), "accepted without {name}");
        assert!(String::from_utf8_lossy(&refused.stderr).contains(name));
    }
}

/// The file as Docker Compose resolves it (anchors merged): every container
/// drops all capabilities and cannot gain privileges; only those that start
/// as root get a few back, the backend none. The UI is served over HTTPS.
#[test]
fn containers_run_with_least_privilege_and_the_ui_over_https() {
    let output = std::process::Command::new("docker-compose")
        .current_dir(repo())
        .args(["--env-file", "deploy/.env.prod.example"])
        .args(["-f", "deploy/docker-compose.prod.yml", "config"])
        .envs([
            ("POSTGRES_PASSWORD", "check"),
            ("ENCRYPTION_KEY", "00"),
            ("MQTT_DYNSEC_PASSWORD", "check"),
            ("MQTT_BACKEND_PASSWORD", "check"),
        ])
        .output()
        .expect("docker-compose (Debian package docker-compose)");
    assert!(output.status.success(), "{output:?}");
    let resolved: Value = serde_yaml_ng::from_slice(&output.stdout).unwrap();
    for (name, service) in services(&resolved) {
        assert_eq!(service["cap_drop"], serde_json::json!(["ALL"]), "{name}");
        assert_eq!(
            service["security_opt"],
            serde_json::json!(["no-new-privileges:true"]),
            "{name}"
        );
        let added: Vec<&str> = service["cap_add"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            !added
                .iter()
                .any(|c| ["SYS_ADMIN", "NET_ADMIN", "NET_RAW", "ALL"].contains(c)),
            "{name}: {added:?}"
        );
        if name == "backend" {
            assert!(added.is_empty(), "the backend needs no capability");
        }
    }
    let frontend = &resolved["services"]["frontend"];
    let published: Vec<String> = frontend["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["target"]
                .as_u64()
                .map(|t| t.to_string())
                .unwrap_or_else(|| p.to_string())
        })
        .collect();
    assert!(
        published.iter().any(|p| p.ends_with("443")),
        "{published:?}"
    );
    let mounts = frontend["volumes"].to_string();
    assert!(mounts.contains("/etc/nginx/tls/server-key.pem"), "{mounts}");

    let nginx = read("deploy/nginx.conf");
    assert!(nginx.contains("listen 443 ssl"));
    assert!(nginx.contains("return 308 https://$host$request_uri;"));
    assert!(nginx.contains("Strict-Transport-Security"));
}

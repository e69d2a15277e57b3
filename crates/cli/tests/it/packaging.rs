//! The package and the container, checked without dpkg or Docker: the
//! settings file documents every setting, the systemd unit is hardened, and
//! the all-in-one Dockerfile's entrypoint, environment and health check
//! work when run as the image would run them. (`make deb-check` installs
//! the real package on the machine.)

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::common::{plantops, Ports};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap()
}

/// Every environment variable `plantops serve` reads.
fn settings() -> Vec<String> {
    let source = read("crates/cli/src/config.rs");
    let mut names: Vec<String> = source
        .split("env = \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() > 30, "{names:?}");
    names
}

#[test]
fn the_packaged_settings_file_lists_every_setting() {
    let env = read("packaging/deb/plantops.env");
    for name in settings() {
        assert!(
            env.lines()
                .any(|l| l.trim_start_matches('#').starts_with(&format!("{name}="))),
            "{name} is missing from packaging/deb/plantops.env"
        );
    }
    // The one active line: where the service keeps its data.
    let active: Vec<&str> = env
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(active, ["PLANTOPS_DATA_DIR=/var/lib/plantops"]);
}

#[test]
fn the_systemd_unit_runs_unprivileged_and_confined() {
    let unit = read("packaging/deb/plantops.service");
    for directive in [
        "User=plantops",
        "EnvironmentFile=/etc/plantops/plantops.env",
        "ExecStart=/usr/bin/plantops serve",
        "Restart=on-failure",
        "StateDirectory=plantops",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
    ] {
        assert!(unit.lines().any(|l| l == directive), "{directive}");
    }
    let postrm = read("packaging/deb/postrm");
    assert!(
        postrm.contains("\"$1\" = purge"),
        "data is deleted on purge only"
    );
}

/// The JSON array of the first line starting with `start` (`CMD ["a"]`).
fn exec_form(dockerfile: &str, start: &str) -> Vec<String> {
    let line = dockerfile
        .lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?}"));
    let json = &line[line.find('[').unwrap()..];
    serde_json::from_str(json).unwrap()
}

#[tokio::test]
async fn the_all_in_one_image_starts_and_reports_healthy() {
    let dockerfile = read("Dockerfile");
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "{user}"
    );
    assert!(dockerfile.contains("VOLUME [\"/data\"]"));
    assert!(dockerfile.contains("EXPOSE 8000 1883 8883"));
    // The ENV block, as the image sets it.
    let env_block = &dockerfile[dockerfile.find("\nENV ").unwrap() + 5..];
    let env: Vec<(String, String)> = env_block
        .lines()
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("VOLUME"))
        .map(|l| l.trim().trim_end_matches('\\').trim())
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(env.len(), 4, "{env:?}");
    assert!(env.contains(&("PLANTOPS_DATA_DIR".into(), "/data".into())));
    let entrypoint = exec_form(&dockerfile, "ENTRYPOINT");
    let cmd = exec_form(&dockerfile, "CMD [");
    // HEALTHCHECK's own CMD is on its continuation line.
    let health = exec_form(&dockerfile, "    CMD [");
    assert_eq!(entrypoint, ["/usr/local/bin/plantops"]);
    assert_eq!(cmd, ["serve"]);

    // Run it as the image would, with the volume and the ports (taken here
    // by other services) moved.
    let data = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let moved = |name: &str, value: &str| -> String {
        match name {
            "PLANTOPS_DATA_DIR" => data.path().display().to_string(),
            "PLANTOPS_HTTP_ADDR" => format!("127.0.0.1:{}", ports.http),
            "PLANTOPS_MQTT_ADDR" => format!("127.0.0.1:{}", ports.mqtt),
            "PLANTOPS_MQTTS_ADDR" => format!("127.0.0.1:{}", ports.mqtts),
            _ => value.to_string(),
        }
    };
    let image_command = |args: &[String]| {
        let mut command = plantops();
        command.env_clear().args(args);
        for (name, value) in &env {
            command.env(name, moved(name, value));
        }
        command
    };
    let mut server = image_command(&cmd)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut healthy = false;
    for _ in 0..200 {
        let status = image_command(&health[1..])
            .stdout(Stdio::null())
            .status()
            .await
            .unwrap();
        if status.success() {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healthy, "the image's health check never passed");
    assert!(
        data.path().join("plantops.db").exists(),
        "the database is not in the volume"
    );
    server.kill().await.unwrap();
}

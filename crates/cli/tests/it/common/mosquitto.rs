//! A real Mosquitto for tests: TLS-only listener, dynamic-security plugin,
//! an admin account the backend uses, on a free port.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub const ADMIN: &str = "plantops_admin";
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
/// The backend's own account, which it creates through dynamic security.
pub const BACKEND: &str = "plantops_backend";
pub const BACKEND_PASSWORD: &str = "backend-password-for-tests";
/// Debian's path of the dynamic-security plugin.
pub const DYNSEC_PLUGIN: &str = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so";

pub struct Mosquitto {
    child: Child,
    pub port: u16,
    pub ca: PathBuf,
}

impl Mosquitto {
    /// Starts (or restarts, keeping its state) a Mosquitto in `dir`.
    pub async fn start(dir: &Path, port: u16) -> Mosquitto {
        let dynsec = dir.join("dynamic-security.json");
        if !dynsec.exists() {
            init_dynsec(&dynsec, ADMIN, ADMIN_PASSWORD).await;
        }
        let tls = plantops_mqtt::certs::ensure(
            &dir.join("tls"),
            &plantops_mqtt::certs::default_sans(&[]),
        )
        .expect("test certificates");
        let persistence = dir.join("persistence");
        std::fs::create_dir_all(&persistence).unwrap();
        let user = if is_root() { "user root\n" } else { "" };
        let config = format!(
            "{user}per_listener_settings false\nallow_anonymous false\n\
             persistence true\npersistence_location {}/\nmax_queued_messages 100000\n\
             max_packet_size 65536\nmax_keepalive 3600\nsys_interval 1\n\
             listener {port} 127.0.0.1\ncertfile {}\nkeyfile {}\nuse_username_as_clientid true\n\
             plugin {DYNSEC_PLUGIN}\nplugin_opt_config_file {}\n",
            persistence.display(),
            tls.cert.display(),
            tls.key.display(),
            dynsec.display()
        );
        let config_path = dir.join("mosquitto.conf");
        std::fs::write(&config_path, config).unwrap();
        let child = spawn(&config_path, port).await;
        Mosquitto {
            child,
            port,
            ca: tls.ca_cert,
        }
    }

    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Stops it gracefully (SIGTERM: it saves its persistent state).
    pub async fn terminate(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }

    /// The environment that points `plantops serve` at this broker.
    pub fn backend_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("MQTT_HOST", "localhost".into()),
            ("MQTT_USE_TLS", "true".into()),
            ("MQTT_TLS_PORT", self.port.to_string()),
            ("MQTT_CA_CERT", self.ca.display().to_string()),
            ("MQTT_BACKEND_USERNAME", BACKEND.into()),
            ("MQTT_BACKEND_PASSWORD", BACKEND_PASSWORD.into()),
            ("MQTT_DYNSEC_USERNAME", ADMIN.into()),
            ("MQTT_DYNSEC_PASSWORD", ADMIN_PASSWORD.into()),
        ]
    }

    /// Runs `mosquitto_ctrl dynsec …` as the admin; returns stdout. A
    /// failed command fails the test (an empty answer would pass for "no
    /// such client").
    pub async fn ctrl(&self, args: &[&str]) -> String {
        let output = Command::new("mosquitto_ctrl")
            .args(["-h", "localhost", "-p", &self.port.to_string(), "--cafile"])
            .arg(&self.ca)
            .args(["-u", ADMIN, "-P", ADMIN_PASSWORD, "dynsec"])
            .args(args)
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "mosquitto_ctrl dynsec {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    }
}

/// Runs `mosquitto -c config` and waits until it listens on `port`.
pub async fn spawn(config: &Path, port: u16) -> Child {
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto (package mosquitto)");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("mosquitto did not start on port {port}");
}

/// Creates a dynamic-security file with one admin, as Mosquitto's own
/// tooling does on a broker's first start.
pub async fn init_dynsec(file: &Path, admin: &str, password: &str) {
    let status = Command::new("mosquitto_ctrl")
        .args(["dynsec", "init"])
        .arg(file)
        .args([admin, password])
        .stdout(Stdio::null())
        .status()
        .await
        .expect("mosquitto_ctrl (package mosquitto-clients)");
    assert!(status.success());
}

/// Root runs Mosquitto and nginx with `user root`: they would otherwise
/// drop to a user that cannot read the test's files.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

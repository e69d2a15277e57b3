//! The server a benchmark measures: one it starts (a child `plantops serve`)
//! or one already running.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use plantops_store::DynStore;

use crate::api_client::Api;

#[derive(Debug, clap::Args)]
pub struct ServerOptions {
    /// Measure a running server at this address instead of starting one.
    /// Starting one passes this process's environment on (DATABASE_URL,
    /// MQTT_HOST, ... select PostgreSQL or Mosquitto).
    #[arg(long)]
    pub url: Option<String>,
    /// The measured server's database, where stored rows are counted
    /// (default: the started server's).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Process id of a running server, to read its memory use.
    #[arg(long, requires = "url")]
    pub server_pid: Option<u32>,
    /// Data directory of the started server (default: a temporary one,
    /// removed afterwards).
    #[arg(long, conflicts_with_all = ["url", "instances"])]
    pub data_dir: Option<PathBuf>,
    /// Instances to start on one PostgreSQL database and one Mosquitto
    /// (DATABASE_URL and MQTT_HOST set; docs/scaling.md); the load goes
    /// through the broker, the server's CPU is theirs summed.
    #[arg(long, default_value_t = 1, conflicts_with = "url",
        value_parser = clap::value_parser!(u32).range(1..=16))]
    pub instances: u32,
    /// Credentials for a running server (--url); a started server gets an
    /// admin account and token of its own.
    #[command(flatten)]
    pub credentials: crate::api_client::ApiCredentials,
}

pub struct ServerUnderTest {
    pub api: Api,
    pub store: DynStore,
    pub pid: Option<u32>,
    /// `database+broker`, e.g. `sqlite+builtin`.
    pub backend: String,
    child: Option<tokio::process::Child>,
    /// Further instances started beside the first (`--instances`).
    others: Vec<tokio::process::Child>,
    _temporary: Vec<tempfile::TempDir>,
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("no free local port")?;
    Ok(listener.local_addr()?.port())
}

impl ServerUnderTest {
    pub async fn start(options: &ServerOptions) -> anyhow::Result<Self> {
        Self::start_with(options, &[]).await
    }

    /// Starts the server with settings of its own (`env`) over the bench's.
    pub async fn start_with(options: &ServerOptions, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut others = Vec::new();
        let mut ports = Vec::new();
        let (api, child, temporary, database_url) = match &options.url {
            Some(url) => {
                let database_url = options.database_url.clone().context(
                    "--url needs --database-url (or DATABASE_URL) to count the stored rows",
                )?;
                (
                    Api::new(url, &options.credentials)?,
                    None,
                    Vec::new(),
                    database_url,
                )
            }
            None => {
                if options.instances > 1
                    && (std::env::var_os("MQTT_HOST").is_none()
                        || !options
                            .database_url
                            .as_deref()
                            .is_some_and(|url| url.starts_with("postgres")))
                {
                    bail!("--instances needs PostgreSQL and Mosquitto: set DATABASE_URL=postgres://… and MQTT_HOST (docs/scaling.md)");
                }
                let mut temporary = Vec::new();
                let mut children = Vec::new();
                let mut first_dir = None;
                for _ in 0..options.instances {
                    let data_dir = match &options.data_dir {
                        Some(dir) => dir.clone(),
                        None => {
                            let dir =
                                tempfile::tempdir().context("cannot create a data directory")?;
                            let path = dir.path().to_path_buf();
                            temporary.push(dir);
                            path
                        }
                    };
                    let (child, http_port) = spawn_serve(&data_dir, env)?;
                    children.push(child);
                    ports.push(http_port);
                    first_dir.get_or_insert(data_dir);
                }
                let (Some(&http_port), Some(data_dir)) = (ports.first(), first_dir) else {
                    bail!("no instance to start");
                };
                let database_url = options.database_url.clone().unwrap_or_else(|| {
                    format!("sqlite://{}", data_dir.join("plantops.db").display())
                });
                let api = Api::new(
                    &format!("http://127.0.0.1:{http_port}"),
                    &Default::default(),
                )?;
                let mut children = children.into_iter();
                let first = children.next();
                others = children.collect();
                (api, first, temporary, database_url)
            }
        };
        api.wait_ready(Duration::from_secs(60)).await?;
        for port in ports.iter().skip(1) {
            Api::new(&format!("http://127.0.0.1:{port}"), &Default::default())?
                .wait_ready(Duration::from_secs(60))
                .await?;
        }
        let store = plantops_store::connect(&database_url)
            .await
            .context("cannot open the server's database to count rows")?;
        let api = match &child {
            Some(_) => Api::new(api.base(), &own_admin_token(&store).await?)?,
            None => api,
        };
        let health = api.get("/health").await?;
        let part = |component: &str, separator: char| {
            health["components"][component]["message"]
                .as_str()
                .and_then(|message| message.split(separator).next())
                .unwrap_or("unknown")
                .to_string()
        };
        let backend = format!("{}+{}", part("database", ' '), part("mqtt", ':'));
        let pid = match &child {
            Some(child) => child.id(),
            None => options.server_pid,
        };
        Ok(Self {
            api,
            store,
            pid,
            backend,
            child,
            others,
            _temporary: temporary,
        })
    }

    /// Resident memory of the server now and at its peak, in MB.
    pub fn memory(&self) -> Option<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        let field = |name: &str| -> Option<f64> {
            let line = status.lines().find(|line| line.starts_with(name))?;
            let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb / 1024.0)
        };
        Some(Memory {
            rss_mb: field("VmRSS:")?,
            peak_mb: field("VmHWM:")?,
        })
    }

    /// CPU seconds the server has used so far (user + system), every
    /// instance's summed.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let mut total = process_cpu_seconds(&self.pid?.to_string())?;
        for other in &self.others {
            total += process_cpu_seconds(&other.id()?.to_string())?;
        }
        Some(total)
    }

    /// How many instances serve.
    pub fn instances(&self) -> usize {
        1 + self.others.len()
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        let children = self.child.iter_mut().chain(self.others.iter_mut());
        for child in children {
            if let Some(pid) = child.id() {
                // SIGTERM: let the server shut down as it would in service.
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
                Ok(status) => {
                    let status = status?;
                    if !status.success() {
                        bail!("plantops serve exited with {status}");
                    }
                }
                Err(_) => child.kill().await?,
            }
        }
        Ok(())
    }
}

/// Starts `plantops serve` on `data_dir` with free local ports and this
/// process's environment; returns it and its HTTP port.
fn spawn_serve(
    data_dir: &std::path::Path,
    env: &[(&str, &str)],
) -> anyhow::Result<(tokio::process::Child, u16)> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let http_port = free_port()?;
    let mut command = tokio::process::Command::new(
        std::env::current_exe().context("cannot find the plantops binary")?,
    );
    command
        .arg("serve")
        .env("PLANTOPS_DATA_DIR", data_dir)
        .env("PLANTOPS_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("PLANTOPS_MQTT_ADDR", format!("127.0.0.1:{}", free_port()?))
        .env("PLANTOPS_MQTTS_ADDR", "")
        .env("PLANTOPS_MQTT_PUBLIC_HOST", "127.0.0.1")
        // Each benchmark device sends far above a real device's rate: the
        // bench measures the server, not the limit.
        .env("PLANTOPS_DEVICE_MESSAGES_PER_SEC", "10000000")
        .env("PLANTOPS_DEVICE_MESSAGE_BURST", "10000000")
        // Every benchmark device logs in from this one host.
        .env("PLANTOPS_MQTT_MAX_PENDING_LOGINS_PER_ADDRESS", "1000000")
        .env(
            "LOG_LEVEL",
            std::env::var("LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command.envs(env.iter().copied());
    let child = command.spawn().context("cannot start plantops serve")?;
    Ok((child, http_port))
}

#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_mb: f64,
    pub peak_mb: f64,
}

/// The `q`-quantile of sorted samples.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Registers `count` devices concurrently; numbered within `prefix`.
pub async fn register_devices(
    api: &Api,
    prefix: u16,
    count: u32,
) -> anyhow::Result<(
    Vec<crate::api_client::DeviceCredentials>,
    crate::api_client::BrokerEndpoint,
)> {
    use futures::stream::{self, StreamExt, TryStreamExt};
    let registered: Vec<_> = stream::iter(1..=count)
        .map(|index| async move {
            let mac = crate::api_client::simulated_mac(prefix, index);
            api.device_credentials(&mac, None).await
        })
        .buffer_unordered(32)
        .try_collect()
        .await?;
    let endpoint = registered
        .first()
        .map(|(_, endpoint)| endpoint.clone())
        .context("no device registered")?;
    Ok((
        registered.into_iter().map(|(device, _)| device).collect(),
        endpoint,
    ))
}

/// An admin and a full token on the server the benchmark started, made as
/// `plantops user add` and `plantops token create` make them.
async fn own_admin_token(store: &DynStore) -> anyhow::Result<crate::api_client::ApiCredentials> {
    let admin = plantops_core::account::User {
        id: uuid::Uuid::new_v4(),
        username: format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        role: plantops_core::account::Role::Admin,
        created_at: plantops_core::now(),
    };
    // Nobody signs in with it: an unguessable password.
    let password = plantops_core::account::issue_secret("").plain;
    let hash =
        tokio::task::spawn_blocking(move || plantops_core::account::hash_user_password(&password))
            .await?;
    store.insert_user(&admin, &hash, false).await?;
    let issued = plantops_services::accounts::create_api_token(
        store,
        admin.id,
        "plantops bench".into(),
        plantops_core::account::Scope::Full,
    )
    .await?;
    Ok(crate::api_client::ApiCredentials {
        token: Some(issued.secret),
        enrollment_key: None,
    })
}

/// CPU seconds (user + system) a process has used so far: `self` or a pid.
pub fn process_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // Linux reports in USER_HZ, 100 per second on every architecture.
    Some(ticks / 100.0)
}

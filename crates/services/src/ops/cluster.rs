//! Running as one of several instances on one PostgreSQL database and one
//! broker (docs/scaling.md): each instance's id, the lock that keeps a
//! SQLite data directory to one instance, and the lead — the one instance
//! that runs the jobs that must not run twice.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use plantops_store::DynStore;
use tokio::task::JoinHandle;

use crate::ops::supervise::{supervise, TaskHealth};

/// Where an instance keeps its generated id.
pub const INSTANCE_ID_FILE: &str = "instance-id";
/// Held while an instance serves a data directory.
pub const DATA_DIR_LOCK_FILE: &str = "plantops.lock";
/// How often an instance that does not lead tries to: the bound on
/// failover once the leader's database connection is gone.
pub const LEAD_RETRY: Duration = Duration::from_secs(5);

/// Whether `id` can name an instance: it becomes part of the broker
/// account and client id, so letters, digits, `.`, `_` and `-`, at most 64.
pub fn valid_instance_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The instance's id: `configured` (PLANTOPS_INSTANCE_ID), else the one kept
/// in the data directory, else a new one — the host name and a random
/// suffix — kept there for the next start. Where the data directory cannot
/// be written (a read-only container), the host name alone: it stays the
/// same across restarts of the container, which is what keeps the broker
/// session (and the messages queued in it) the instance's own.
pub fn instance_id(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<String> {
    if let Some(id) = configured {
        anyhow::ensure!(
            valid_instance_id(id),
            "PLANTOPS_INSTANCE_ID {id:?}: use 1 to 64 letters, digits, '.', '_' or '-'"
        );
        return Ok(id.to_string());
    }
    let file = data_dir.join(INSTANCE_ID_FILE);
    if let Ok(kept) = std::fs::read_to_string(&file) {
        let kept = kept.trim();
        if valid_instance_id(kept) {
            return Ok(kept.to_string());
        }
    }
    let host = host_name();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let id = format!("{host}-{}", &suffix[..6]);
    let kept = std::fs::create_dir_all(data_dir).and_then(|()| std::fs::write(&file, &id));
    match kept {
        Ok(()) => Ok(id),
        Err(error) => {
            tracing::info!(%error, instance_id = %host, "cannot keep an instance id in the data directory; using the host name");
            Ok(host)
        }
    }
}

/// The host name, cut to what an instance id may hold.
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(48)
        .collect();
    if name.is_empty() {
        "plantops".into()
    } else {
        name
    }
}

/// Exclusive locks on what one instance alone may serve; released when
/// dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct InstanceLock {
    _files: Vec<File>,
}

/// The SQLite database file a URL names, if it names one.
fn sqlite_file(database_url: &str) -> Option<PathBuf> {
    let rest = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.starts_with(':')).then(|| PathBuf::from(path))
}

fn lock(path: &Path) -> anyhow::Result<Option<File>> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

impl InstanceLock {
    /// Locks the data directory (with SQLite, also the database file):
    /// a second `plantops serve` on either refuses to start. With
    /// PostgreSQL a data directory that cannot be written is no error.
    pub fn acquire(data_dir: &Path, database_url: &str) -> anyhow::Result<Self> {
        let mut files = Vec::new();
        let sqlite = sqlite_file(database_url);
        let data_dir_lock = data_dir.join(DATA_DIR_LOCK_FILE);
        let writable = std::fs::create_dir_all(data_dir).is_ok();
        if writable || sqlite.is_some() {
            match lock(&data_dir_lock) {
                Ok(Some(file)) => files.push(file),
                Ok(None) => anyhow::bail!(
                    "another PlantOps is running on the data directory {} (PLANTOPS_DATA_DIR): \
                     stop it first, or give this one its own data directory; several instances \
                     share a PostgreSQL database, not a data directory (docs/scaling.md)",
                    data_dir.display()
                ),
                Err(error) if sqlite.is_none() => {
                    tracing::debug!(%error, "data directory not locked");
                }
                Err(error) => return Err(error),
            }
        }
        if let Some(database) = sqlite {
            let mut name = database.clone().into_os_string();
            name.push(".plantops-lock");
            match lock(Path::new(&name))? {
                Some(file) => files.push(file),
                None => anyhow::bail!(
                    "another PlantOps is running on the SQLite database {}: SQLite serves one \
                     instance; to run several, use PostgreSQL and an external MQTT broker \
                     (docs/scaling.md)",
                    database.display()
                ),
            }
        }
        Ok(Self { _files: files })
    }
}

/// This instance, as the health endpoint tells it.
#[derive(Debug)]
pub struct Instance {
    pub id: String,
    /// Whether this instance runs the singleton jobs now.
    pub leading: Arc<AtomicBool>,
}

/// A job only the leader runs, started afresh each time this instance
/// takes the lead.
pub struct LeaderJob {
    pub name: &'static str,
    pub start: Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>,
}

impl LeaderJob {
    pub fn new<F, Fut>(name: &'static str, start: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        Self {
            name,
            start: Arc::new(move || Box::pin(start())),
        }
    }
}

/// Tries to lead every [`LEAD_RETRY`]; while leading, runs `jobs` (each
/// supervised) and stops them as soon as the lead is lost. `leading` tells
/// the health endpoint.
pub async fn lead(
    store: DynStore,
    jobs: Vec<LeaderJob>,
    health: Arc<TaskHealth>,
    leading: Arc<AtomicBool>,
) {
    loop {
        let lead = match store.try_lead().await {
            Ok(lead) => lead,
            Err(error) => {
                tracing::warn!(%error, "cannot ask the database for the lead");
                None
            }
        };
        let Some(mut lead) = lead else {
            tokio::time::sleep(LEAD_RETRY).await;
            continue;
        };
        tracing::info!(
            "this instance leads: running offline detection, retention and weekly care plans"
        );
        leading.store(true, Ordering::Release);
        metrics::gauge!("plantops_leader").set(1.0);
        let running: Vec<JoinHandle<()>> = jobs
            .iter()
            .map(|job| {
                let start = job.start.clone();
                supervise(job.name, health.clone(), move || start())
            })
            .collect();
        lead.lost().await;
        for job in &running {
            job.abort();
        }
        leading.store(false, Ordering::Release);
        metrics::gauge!("plantops_leader").set(0.0);
        tracing::warn!("this instance lost the lead");
    }
}

/// This instance's row among the instances sharing one broker: touched
/// often enough that the instance is never taken for stopped while it runs,
/// and marked stopped first thing at a graceful stop.
pub struct InstanceRecord {
    store: DynStore,
    id: String,
    timeout: Duration,
    stopping: AtomicBool,
}

impl InstanceRecord {
    pub fn new(store: DynStore, id: String, timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            store,
            id,
            timeout,
            stopping: AtomicBool::new(false),
        })
    }

    /// Touches the row until the instance stops.
    pub async fn heartbeat(self: Arc<Self>) {
        let mut ticks = tokio::time::interval((self.timeout / 6).max(Duration::from_secs(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if self.stopping.load(Ordering::Acquire) {
                // Ending would count as a failure and be restarted.
                return std::future::pending().await;
            }
            if let Err(error) = self
                .store
                .touch_instance(&self.id, chrono::Utc::now())
                .await
            {
                tracing::warn!(%error, "cannot record that this instance runs");
            }
        }
    }

    /// At a graceful stop: records that this instance no longer runs, then
    /// says whether another one still does and will take the devices'
    /// messages. Only then may this instance leave the shared
    /// subscription: with nobody subscribed the broker would discard what
    /// devices send; the last instance keeps its session, so the broker
    /// queues for it until it (or another instance) is back.
    ///
    /// Marking first, then looking, means that of two instances stopping
    /// together at least one sees the other stopped and keeps its session.
    pub async fn others_remain(&self) -> bool {
        self.stopping.store(true, Ordering::Release);
        let stopped = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        if let Err(error) = self.store.touch_instance(&self.id, stopped).await {
            tracing::warn!(%error, "cannot record that this instance stops; keeping its broker session");
            return false;
        }
        let Ok(timeout) = chrono::Duration::from_std(self.timeout) else {
            return false;
        };
        match self
            .store
            .live_instances(chrono::Utc::now() - timeout)
            .await
        {
            Ok(live) => live.iter().any(|id| *id != self.id),
            Err(error) => {
                tracing::warn!(%error, "cannot list running instances; keeping this one's broker session");
                false
            }
        }
    }
}

/// The leader's care for broker sessions nobody reads: the session of the
/// single backend a version before scale-out left behind (once), and those
/// of instances silent for longer than `timeout`. Mosquitto queues a
/// shared subscription's messages for a member that is away; taken over,
/// they are stored rather than left waiting for an instance that may
/// never return.
pub async fn take_over_sessions(
    store: DynStore,
    broker: Arc<plantops_mqtt::mosquitto::MosquittoBroker>,
    own_id: String,
    timeout: Duration,
) {
    let mut legacy_done = false;
    let mut ticks = tokio::time::interval((timeout / 3).max(Duration::from_secs(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if !legacy_done {
            match broker.retire(None).await {
                Ok(_) => legacy_done = true,
                Err(error) => {
                    tracing::warn!(%error, "cannot look at the pre-scale-out backend session yet")
                }
            }
        }
        let Ok(timeout) = chrono::Duration::from_std(timeout) else {
            continue;
        };
        let stale = match store.stale_instances(chrono::Utc::now() - timeout).await {
            Ok(stale) => stale,
            Err(error) => {
                tracing::warn!(%error, "cannot list stopped instances");
                continue;
            }
        };
        for id in stale.into_iter().filter(|id| *id != own_id) {
            match broker.retire(Some(&id)).await {
                Ok(drained) => {
                    tracing::info!(instance_id = %id, drained, "took over a stopped instance's broker session");
                    if let Err(error) = store.forget_instance(&id).await {
                        tracing::warn!(%error, "cannot forget a stopped instance");
                    }
                }
                Err(error) => {
                    tracing::warn!(instance_id = %id, %error, "cannot take over a stopped instance's session yet")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_kept_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let first = instance_id(None, dir.path()).unwrap();
        assert!(valid_instance_id(&first), "{first}");
        assert_eq!(instance_id(None, dir.path()).unwrap(), first, "kept");
        let other = tempfile::tempdir().unwrap();
        assert_ne!(instance_id(None, other.path()).unwrap(), first);
        assert_eq!(
            instance_id(Some("backend-2"), dir.path()).unwrap(),
            "backend-2"
        );
        let error = instance_id(Some("a b"), dir.path()).unwrap_err();
        assert!(error.to_string().contains("PLANTOPS_INSTANCE_ID"));
        assert!(!valid_instance_id(&"x".repeat(65)));
    }

    #[test]
    fn a_data_directory_serves_one_instance() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/plantops.db", dir.path().display());
        let held = InstanceLock::acquire(dir.path(), &url).unwrap();
        let error = InstanceLock::acquire(dir.path(), &url).unwrap_err();
        assert!(error.to_string().contains("another PlantOps"), "{error}");
        // The same database from another data directory: refused too.
        let elsewhere = tempfile::tempdir().unwrap();
        let error = InstanceLock::acquire(elsewhere.path(), &url).unwrap_err();
        assert!(
            error.to_string().contains("SQLite serves one instance"),
            "{error}"
        );
        drop(held);
        InstanceLock::acquire(dir.path(), &url).unwrap();
    }

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_file("sqlite:///var/lib/plantops/plantops.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/plantops/plantops.db"))
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://db/plantops"), None);
    }
}

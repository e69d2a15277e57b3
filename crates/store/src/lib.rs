//! Storage: role traits ([`PlantStore`], [`DeviceStore`], [`ReadingStore`],
//! [`AlertStore`], [`CarePlanStore`], [`SettingStore`]) that together make a
//! [`Store`], implemented for SQLite (the embedded default) and PostgreSQL
//! (TimescaleDB when the extension is available). The SQL both share is
//! written once in `sql.rs`; the backend files hold only what really differs.
//! Each backend has its own versioned migrations under `migrations/`.
//! Business rules live in `plantops-core`; this crate only stores and fetches.

#![deny(unsafe_code)]

mod accounts;
mod alerts;
mod care;
mod care_plans;
mod channels;
mod devices;
mod plants;
mod postgres;
mod readings;
mod settings;
mod sql;
mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use plantops_core::account::{ApiToken, EnrollmentKey, Role, StoredUser, User};
use plantops_core::alert::{Alert, AlertKind, Delivery, MetricState};
use plantops_core::care::CarePlan;

pub use care::{CareStore, LastCare, StoredCareTask};
use plantops_core::{Device, DeviceStatus, Metric, Plant, Reading};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

pub use channels::StoredChannel;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// From the few reads that bypass sqlx (see `SqliteStore::plant_history`).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// The runtime shut down under a transaction's task.
    #[error("the database task was stopped")]
    Stopped,
    /// The database holds migrations this binary does not know: it was
    /// upgraded by a newer PlantOps. Running on would risk damaging it.
    #[error("the database was migrated by a newer PlantOps (schema version {found}; this binary knows up to {known}): run the newer version, or restore the backup taken before the upgrade")]
    NewerSchema { found: i64, known: i64 },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Runs a transaction on a task of its own. A caller cancelled between
/// `BEGIN` and its answer (a client that hung up, a timeout, an aborted
/// task) would otherwise hand the connection back to the pool still inside
/// the transaction, and the next borrower's writes would stay uncommitted,
/// unseen and holding their locks: sqlx 0.8 on PostgreSQL,
/// transact-rs/sqlx#4393, fixed upstream after the 0.9.0 release. On its own
/// task the transaction always runs to its end; the caller only stops
/// waiting for it.
pub(crate) async fn uncancellable<T, F>(transaction: F) -> Result<T>
where
    F: std::future::Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    match tokio::spawn(transaction).await {
        Ok(result) => result,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => Err(StoreError::Stopped),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: u32,
    pub offset: u64,
}

/// The outcome of registering a MAC address.
#[derive(Debug, Clone, PartialEq)]
pub enum Registration {
    Created(Device),
    /// The MAC was registered before; its device is returned unchanged.
    Existing(Device),
}

/// The login data of a device's broker account.
#[derive(Debug, Clone)]
pub struct DeviceCredentials {
    pub device_id: Uuid,
    pub password_hash: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct Aggregate {
    pub min: f64,
    pub avg: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SeriesPoint {
    /// Start of the bucket.
    pub time: DateTime<Utc>,
    pub count: u64,
    pub soil_moisture: Option<Aggregate>,
    pub temperature: Option<Aggregate>,
    pub humidity: Option<Aggregate>,
    pub light_level: Option<Aggregate>,
}

/// What committing a batch did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommittedBatch {
    /// New readings (a duplicate (device, time) is skipped).
    pub inserted: u64,
    /// Devices the batch brought online, with the status they had before.
    /// Decided under the devices' row locks, so with several instances
    /// each change is reported by exactly one of them.
    pub came_online: Vec<(Uuid, DeviceStatus)>,
    /// Batteries the batch's vitals found newly low.
    pub low_battery: Vec<BatteryLow>,
}

/// A device the offline check found silent and marked offline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SilentDevice {
    pub device_id: Uuid,
    pub plant_id: Option<Uuid>,
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// A plant as the alert evaluator judges it: its thresholds and the
/// remembered state of each metric.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgedPlant {
    pub plant: Plant,
    pub states: HashMap<Metric, MetricState>,
}

/// Judges readings against locked plants: returns the state changes and
/// the alerts to store with them.
pub type Judge = Box<dyn FnOnce(Vec<JudgedPlant>) -> (Vec<StateChange>, Vec<Alert>) + Send>;

/// The lead among instances sharing a database: held until dropped or
/// until [`Lead::lost`] resolves.
#[async_trait]
pub trait Lead: Send {
    /// Resolves when the lead is gone (its database connection broke).
    async fn lost(&mut self);
}

/// Live events from every instance sharing the database.
pub type LiveFeed = std::pin::Pin<Box<dyn futures::Stream<Item = String> + Send>>;

/// When a device was last heard from (a batch keeps the latest per device).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Presence {
    pub device_id: Uuid,
    pub seen_at: DateTime<Utc>,
    /// The newest battery and signal the batch brought for the device,
    /// stored in the batch's transaction.
    pub vitals: Option<VitalsSeen>,
}

/// A device's battery and signal as a message brought them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VitalsSeen {
    pub vitals: plantops_core::DeviceVitals,
    /// When the message carrying them arrived.
    pub at: DateTime<Utc>,
    /// The low-battery limit (percent) when the device's plant sets none
    /// (`PLANTOPS_LOW_BATTERY_PERCENT`).
    pub low_below: Option<f64>,
}

/// A battery that fell below its limit with a committed batch: alert once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatteryLow {
    pub device_id: Uuid,
    pub plant_id: Option<Uuid>,
    pub percent: f64,
    pub limit: f64,
}

/// `[from, to)` widened to whole hours (UTC).
pub fn whole_hours(from: DateTime<Utc>, to: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    use chrono::DurationRound;
    let hour = chrono::Duration::hours(1);
    let start = from.duration_trunc(hour).unwrap_or(from);
    let end = to.duration_trunc(hour).unwrap_or(to);
    let end = if end < to { end + hour } else { end };
    (start, end)
}

/// Percentage points above the low-battery limit a battery must reach
/// before a new discharge can alert again (a voltage wobbling around the
/// limit alerts once).
pub const BATTERY_RECOVERY_MARGIN: f64 = 5.0;

#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub plant_id: Option<Uuid>,
    pub kind: Option<AlertKind>,
    pub since: Option<DateTime<Utc>>,
}

/// The new state of one (plant, metric) pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StateChange {
    pub plant_id: Uuid,
    pub metric: Metric,
    pub state: MetricState,
}

/// An alert waiting in the outbox, with its delivery attempts so far.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedAlert {
    pub alert: Alert,
    pub attempts: u32,
}

/// Outbox bookkeeping after a delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeliveryUpdate {
    pub id: Uuid,
    pub delivery: Delivery,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
}

/// A care plan as kept: the plan and who wrote it, when and why.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StoredCarePlan {
    pub id: Uuid,
    pub plant_id: Uuid,
    pub plan: CarePlan,
    /// `anthropic` or `openai`.
    pub provider: String,
    pub model: String,
    /// `request`, `weekly` or `critical_alert`.
    pub reason: String,
    pub created_at: DateTime<Utc>,
    /// Tokens the provider billed for the plan (every call, the corrective
    /// retry included), when it reports them.
    pub input_tokens: Option<u32>,
    pub output_tokens: Option<u32>,
    /// How long writing the plan took, in milliseconds.
    pub duration_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A plant as the plant list shows it: with its newest reading and how many
/// devices it has.
#[derive(Debug, Clone, PartialEq)]
pub struct PlantOverview {
    pub plant: Plant,
    pub latest: Option<Reading>,
    pub device_count: u64,
}

/// The database itself: which one, its migrations, whether it answers.
#[async_trait]
pub trait Store:
    PlantStore
    + DeviceStore
    + ReadingStore
    + AlertStore
    + CarePlanStore
    + CareStore
    + SettingStore
    + AccountStore
    + ChannelStore
{
    fn backend(&self) -> Backend;

    /// A page of plants, newest first, each with its newest reading and
    /// device count, and the total: the plant list in one call.
    async fn plant_overview(&self, page: Page) -> Result<(Vec<PlantOverview>, u64)>;

    /// Applies pending migrations; harmless when run twice or concurrently.
    async fn migrate(&self) -> Result<()>;
    /// Whether every migration this build knows is applied.
    async fn is_migrated(&self) -> Result<bool>;
    async fn ping(&self) -> Result<()>;

    /// Tries to become the instance that runs the singleton jobs (offline
    /// detection, retention, weekly care plans). `None`: another instance
    /// leads. On PostgreSQL an advisory lock held by a connection of its
    /// own, released when that connection ends; SQLite serves one instance,
    /// which always leads.
    async fn try_lead(&self) -> Result<Option<Box<dyn Lead>>>;
    /// Hands a live event to every instance's [`Store::live_feed`]
    /// (PostgreSQL `NOTIFY`, at most 7,900 bytes); nothing on SQLite.
    async fn publish_live(&self, payload: &str) -> Result<()>;
    /// Live events published by any instance, this one included; `None`
    /// on SQLite. Events sent while the listening connection is being
    /// re-established are missed.
    async fn live_feed(&self) -> Result<Option<LiveFeed>>;
    /// Records that instance `id` runs at `at`.
    async fn touch_instance(&self, id: &str, at: DateTime<Utc>) -> Result<()>;
    /// Instances not seen since `seen_before`.
    async fn stale_instances(&self, seen_before: DateTime<Utc>) -> Result<Vec<String>>;
    async fn forget_instance(&self, id: &str) -> Result<()>;
    /// Instances seen at or after `seen_since`.
    async fn live_instances(&self, seen_since: DateTime<Utc>) -> Result<Vec<String>>;
}

#[async_trait]
pub trait PlantStore: Send + Sync + 'static {
    async fn insert_plant(&self, plant: &Plant) -> Result<()>;
    async fn list_plants(&self, page: Page) -> Result<(Vec<Plant>, u64)>;
    /// Every plant, read page by page.
    async fn all_plants(&self) -> Result<Vec<Plant>> {
        let mut all = Vec::new();
        loop {
            let page = Page {
                limit: 1000,
                offset: all.len() as u64,
            };
            let (plants, _) = self.list_plants(page).await?;
            if plants.is_empty() {
                return Ok(all);
            }
            all.extend(plants);
        }
    }
    async fn get_plant(&self, id: Uuid) -> Result<Option<Plant>>;
    /// Replaces the stored plant's fields; false when it does not exist.
    async fn update_plant(&self, plant: &Plant) -> Result<bool>;
    /// Deletes a plant and unassigns its devices; readings stay.
    async fn delete_plant(&self, id: Uuid) -> Result<bool>;
}

#[async_trait]
pub trait DeviceStore: Send + Sync + 'static {
    /// Stores `device` unless its MAC address is already registered.
    async fn register_device(&self, device: &Device, password_hash: &str) -> Result<Registration>;
    async fn list_devices(
        &self,
        page: Page,
        status: Option<DeviceStatus>,
    ) -> Result<(Vec<Device>, u64)>;
    /// Every device (optionally of one status), read page by page.
    async fn all_devices(&self, status: Option<DeviceStatus>) -> Result<Vec<Device>> {
        let mut all = Vec::new();
        loop {
            let page = Page {
                limit: 1000,
                offset: all.len() as u64,
            };
            let (devices, _) = self.list_devices(page, status).await?;
            if devices.is_empty() {
                return Ok(all);
            }
            all.extend(devices);
        }
    }
    async fn get_device(&self, id: Uuid) -> Result<Option<Device>>;
    async fn plant_devices(&self, plant_id: Uuid) -> Result<Vec<Device>>;
    /// Number of devices assigned to each of `plant_ids` (absent = none).
    async fn device_counts(&self, plant_ids: &[Uuid]) -> Result<HashMap<Uuid, u64>>;
    async fn device_credentials(&self, mqtt_username: &str) -> Result<Option<DeviceCredentials>>;
    async fn set_device_password(&self, id: Uuid, password_hash: &str) -> Result<bool>;
    async fn delete_device(&self, id: Uuid) -> Result<bool>;
    /// Points the device at a plant (or none); false when the device or
    /// the plant does not exist.
    async fn assign_device(&self, id: Uuid, plant_id: Option<Uuid>) -> Result<bool>;
    /// The plant each existing device among `ids` serves now.
    async fn device_plants(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Option<Uuid>>>;
    /// Marks offline every online device not seen since `silent_since`;
    /// returns those it changed (each exactly once across instances).
    async fn mark_silent_offline(&self, silent_since: DateTime<Utc>) -> Result<Vec<SilentDevice>>;
}

#[async_trait]
pub trait ReadingStore: Send + Sync + 'static {
    /// Stores readings (a duplicate (device, time) is skipped) and marks the
    /// devices seen and online, in one transaction.
    async fn commit_batch(&self, readings: &[Reading], seen: &[Presence])
        -> Result<CommittedBatch>;
    /// The stored readings of these (device, time) keys: what a batch that
    /// inserted fewer rows than it held met in the table.
    async fn readings_at(&self, keys: &[(Uuid, DateTime<Utc>)]) -> Result<Vec<Reading>>;
    /// Recomputes, from its readings, the hourly rollups of a plant's whole
    /// hours covering `[from, to)`; an hour without readings keeps its
    /// rollup (its readings were pruned). Returns the hours written. Only
    /// hours whose readings are all still there may be refreshed.
    async fn refresh_rollups(
        &self,
        plant_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64>;
    /// Min/avg/max per bucket from the hourly rollups of `[from, to)`
    /// (hours starting in it), shaped as [`ReadingStore::plant_series`].
    async fn rollup_series(
        &self,
        plant_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket_seconds: i64,
    ) -> Result<Vec<SeriesPoint>>;
    /// Deletes rollups of hours before `before`.
    async fn prune_rollups(&self, before: DateTime<Utc>) -> Result<u64>;
    async fn latest_device_reading(&self, device_id: Uuid) -> Result<Option<Reading>>;
    async fn latest_plant_readings(&self, plant_ids: &[Uuid]) -> Result<HashMap<Uuid, Reading>>;
    /// Readings of a plant since `since`, newest first.
    async fn plant_history(
        &self,
        plant_id: Uuid,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Reading>>;
    /// Min/avg/max per bucket of `bucket_seconds` in `[from, to)`, oldest first.
    async fn plant_series(
        &self,
        plant_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket_seconds: i64,
    ) -> Result<Vec<SeriesPoint>>;
    /// One page of a plant's readings in `[from, to)`, oldest first, after
    /// `after` (a reading's time and device) in that order: keyset pages
    /// for exports of any length in constant memory.
    async fn plant_readings_page(
        &self,
        plant_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: u32,
    ) -> Result<Vec<Reading>>;
    async fn count_readings(&self) -> Result<u64>;
    /// Deletes readings older than `before` (retention); returns how many
    /// went, where the backend can tell (TimescaleDB drops whole chunks).
    async fn prune_readings(&self, before: DateTime<Utc>) -> Result<u64>;
}

#[async_trait]
pub trait AlertStore: Send + Sync + 'static {
    /// The remembered threshold state of each metric of a plant.
    async fn metric_states(&self, plant_id: Uuid) -> Result<HashMap<Metric, MetricState>>;
    /// Saves state changes and the alerts they caused, in one transaction.
    async fn record_alerts(&self, states: &[StateChange], alerts: &[Alert]) -> Result<()>;
    /// Alerts, newest first.
    async fn list_alerts(&self, filter: &AlertFilter, page: Page) -> Result<(Vec<Alert>, u64)>;
    async fn acknowledge_alert(&self, id: Uuid, at: DateTime<Utc>) -> Result<Option<Alert>>;
    /// Judges readings of plants in one transaction: the plants are locked
    /// (PostgreSQL: one instance at a time per plant), `judge` gets their
    /// current settings and threshold states, and the changes and alerts it
    /// returns are stored before the locks go, with each plant's judged
    /// high-water mark raised to the time of its newest reading judged
    /// (`newest`: plant id and that time). Returns the alerts.
    async fn judge_plants(
        &self,
        newest: &[(Uuid, DateTime<Utc>)],
        judge: Judge,
    ) -> Result<Vec<Alert>>;
    /// Stored readings of plants with thresholds that are newer than the
    /// plant's judged high-water mark and than `since`, oldest first, at
    /// most `limit`: those an instance committed and did not judge.
    async fn unjudged_readings(&self, since: DateTime<Utc>, limit: u32) -> Result<Vec<Reading>>;
    /// Claims up to `limit` pending alerts due at `now`, oldest first, for
    /// one delivery attempt: they are not due again before `lease_until`,
    /// so other notifiers pass them by (PostgreSQL: `SKIP LOCKED`), and an
    /// instance that dies mid-delivery leaves them to the others after it.
    async fn claim_due_alerts(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<QueuedAlert>>;
    async fn update_delivery(&self, update: &DeliveryUpdate) -> Result<()>;
    /// Notices waiting for delivery, to the settings' Discord webhook and
    /// to every channel (the notifier's backlog).
    async fn count_pending_alerts(&self) -> Result<u64>;
}

#[async_trait]
pub trait CarePlanStore: Send + Sync + 'static {
    async fn insert_care_plan(&self, plan: &StoredCarePlan) -> Result<()>;
    /// A plant's care plans, newest first.
    async fn care_plans(&self, plant_id: Uuid, limit: u32) -> Result<Vec<StoredCarePlan>>;
    /// When each plant's newest care plan was written (plants with one).
    async fn care_plan_ages(&self) -> Result<HashMap<Uuid, DateTime<Utc>>>;
}

#[async_trait]
pub trait SettingStore: Send + Sync + 'static {
    async fn get_setting(&self, key: &str) -> Result<Option<String>>;
    /// Stores a setting; `None` removes it.
    async fn put_setting(&self, key: &str, value: Option<&str>) -> Result<()> {
        self.put_settings(&[(key, value)]).await
    }
    /// Stores (or, with `None`, removes) several settings in one transaction.
    async fn put_settings(&self, changes: &[(&str, Option<&str>)]) -> Result<()>;
}

/// Notification channels and their outbox.
#[async_trait]
pub trait ChannelStore: Send + Sync + 'static {
    /// Every channel, oldest first, with its pending count.
    async fn list_channels(&self) -> Result<Vec<StoredChannel>>;
    async fn get_channel(&self, id: Uuid) -> Result<Option<StoredChannel>>;
    async fn insert_channel(&self, channel: &StoredChannel) -> Result<()>;
    /// Replaces kind, name, severity and configuration (clearing the last
    /// error); false when there is no such channel.
    async fn update_channel(&self, channel: &StoredChannel) -> Result<bool>;
    /// Removes the channel and its outbox; false when there was none.
    async fn delete_channel(&self, id: Uuid) -> Result<bool>;
    /// Claims up to `limit` of this channel's pending deliveries due at
    /// `now`, oldest alert first, as [`AlertStore::claim_due_alerts`] does.
    async fn claim_due_deliveries(
        &self,
        channel: Uuid,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<QueuedAlert>>;
    async fn update_channel_delivery(&self, channel: Uuid, update: &DeliveryUpdate) -> Result<()>;
    /// Remembers why the channel's last attempt failed (`None`: it worked).
    async fn record_channel_error(
        &self,
        channel: Uuid,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<()>;
    /// Stores settings and channel configurations in one transaction (a
    /// key rotation re-seals them all or none).
    async fn put_sealed(
        &self,
        settings: &[(&str, Option<&str>)],
        channels: &[(Uuid, String)],
    ) -> Result<()>;
}

/// A signed-in browser's session and its user.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub user: User,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

/// What a change to accounts did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountChange {
    Done,
    NotFound,
    /// Refused: no admin would be left.
    LastAdmin,
    /// Refused: the username is taken (or, for the first user, a user exists).
    Conflict,
}

/// Accounts, their browser sessions and API tokens, and device enrollment
/// keys. Secrets are looked up by digest; the store never sees them.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    async fn count_users(&self) -> Result<u64>;
    /// Adds a user unless the name is taken; with `only_if_none`, only while
    /// no user exists at all (first-start setup), decided atomically.
    async fn insert_user(
        &self,
        user: &User,
        password_hash: &str,
        only_if_none: bool,
    ) -> Result<AccountChange>;
    async fn user_by_name(&self, username: &str) -> Result<Option<StoredUser>>;
    async fn get_user(&self, id: Uuid) -> Result<Option<User>>;
    /// Every user, by name.
    async fn list_users(&self) -> Result<Vec<User>>;
    /// Refused with [`AccountChange::LastAdmin`] when it would demote the last admin.
    async fn set_user_role(&self, id: Uuid, role: Role) -> Result<AccountChange>;
    /// Refused with [`AccountChange::LastAdmin`] for the last admin; the
    /// user's sessions and tokens go with it.
    async fn delete_user(&self, id: Uuid) -> Result<AccountChange>;
    /// Replaces the password and ends every session of the user.
    async fn set_user_password(&self, id: Uuid, password_hash: &str) -> Result<bool>;

    async fn insert_session(&self, digest: &str, user_id: Uuid, at: DateTime<Utc>) -> Result<()>;
    async fn session(&self, digest: &str) -> Result<Option<Session>>;
    async fn touch_session(&self, digest: &str, at: DateTime<Utc>) -> Result<()>;
    async fn delete_session(&self, digest: &str) -> Result<()>;
    /// Removes sessions idle since `idle_before` or created before `created_before`.
    async fn delete_expired_sessions(
        &self,
        idle_before: DateTime<Utc>,
        created_before: DateTime<Utc>,
    ) -> Result<u64>;

    async fn insert_api_token(&self, token: &ApiToken, digest: &str) -> Result<()>;
    /// A user's tokens, oldest first.
    async fn api_tokens(&self, user_id: Uuid) -> Result<Vec<ApiToken>>;
    /// The token with this digest and its owner.
    async fn api_token(&self, digest: &str) -> Result<Option<(ApiToken, User)>>;
    async fn touch_api_token(&self, id: Uuid, at: DateTime<Utc>) -> Result<()>;
    /// Deletes one of `user_id`'s tokens.
    async fn delete_api_token(&self, id: Uuid, user_id: Uuid) -> Result<bool>;

    async fn insert_enrollment_key(&self, key: &EnrollmentKey, digest: &str) -> Result<()>;
    /// Every key, newest first, revoked and used-up ones included.
    async fn enrollment_keys(&self) -> Result<Vec<EnrollmentKey>>;
    async fn enrollment_key(&self, digest: &str) -> Result<Option<EnrollmentKey>>;
    async fn revoke_enrollment_key(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool>;
    /// Counts one use of the key if it is usable at `now`; false otherwise.
    async fn use_enrollment_key(&self, id: Uuid, now: DateTime<Utc>) -> Result<bool>;
}

pub type DynStore = Arc<dyn Store>;

/// Opens the store a URL names: `postgres://…` or `sqlite://…`.
pub async fn connect(url: &str) -> Result<DynStore> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else {
        Err(StoreError::InvalidUrl(
            "expected postgres://… or sqlite://…".into(),
        ))
    }
}

//! What both backends share: column lists, row mapping and the queries whose
//! SQL is the same on SQLite and PostgreSQL (SQLite takes `$1` placeholders
//! too). Rows map the same way on both because times travel as
//! [`Timestamp`] (Unix milliseconds on SQLite, `timestamptz` on PostgreSQL)
//! and JSON columns as [`sqlx::types::Json`] (text on SQLite, `jsonb` on
//! PostgreSQL).

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use plantops_core::account::Enrollment;
use plantops_core::alert::{Alert, AlertKind, Delivery, MetricState};
use plantops_core::care::CarePlan;
use plantops_core::plant::BoundSide;
use plantops_core::{Device, DeviceStatus, Measurements, Metric, Plant, Reading, Thresholds};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentValue, SqliteTypeInfo, SqliteValueRef};
use sqlx::types::Json;
use sqlx::{Decode, Encode, FromRow, Postgres, Sqlite, Type};
use uuid::Uuid;

use crate::{Aggregate, QueuedAlert, Result, SeriesPoint, StoreError, StoredCarePlan};

/// A point in time as both backends store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timestamp(pub DateTime<Utc>);

impl Type<Sqlite> for Timestamp {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for Timestamp {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<Sqlite>>::encode(self.0.timestamp_millis(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Timestamp {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let millis = <i64 as Decode<Sqlite>>::decode(value)?;
        from_millis(millis)
            .map(Timestamp)
            .map_err(|e| Box::new(e) as BoxDynError)
    }
}

impl Type<Postgres> for Timestamp {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Postgres> for Timestamp {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Timestamp {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        <DateTime<Utc> as Decode<Postgres>>::decode(value).map(Timestamp)
    }
}

pub(crate) fn from_millis(ms: i64) -> Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms}")))
}

pub(crate) fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

fn corrupt(what: &str, raw: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {raw:?}"))
}

fn parse_side(raw: Option<&str>) -> Result<Option<BoundSide>> {
    raw.map(|side| BoundSide::parse(side).ok_or_else(|| corrupt("bound side", side)))
        .transpose()
}

fn parse_metric(raw: &str) -> Result<Metric> {
    Metric::parse(raw).ok_or_else(|| corrupt("metric", raw))
}

/// The most ids one `IN (…)` list binds: below SQLite's 32,766 parameters
/// and PostgreSQL's 65,535.
pub(crate) const IDS_PER_STATEMENT: usize = 30_000;

pub(crate) const DEVICE_COLUMNS: &str = "id, mac_address, mqtt_username, plant_id, status, \
                                         firmware_version, sensor_types, last_seen_at, created_at, \
                                         enrollment, battery_percent, battery_volts, rssi_dbm, \
                                         vitals_at";
pub(crate) const READING_COLUMNS: &str =
    "time, device_id, plant_id, soil_moisture, temperature, humidity, light_level";
/// [`READING_COLUMNS`] of a query that names the readings table `r`.
pub(crate) const READING_COLUMNS_OF_R: &str =
    "r.time, r.device_id, r.plant_id, r.soil_moisture, r.temperature, r.humidity, r.light_level";
pub(crate) const ALERT_COLUMNS: &str = "id, plant_id, device_id, kind, metric, value, threshold, \
                                        direction, message, created_at, delivery, acknowledged_at";
pub(crate) const CARE_PLAN_COLUMNS: &str =
    "id, plant_id, plan, provider, model, reason, created_at, \
                                            input_tokens, output_tokens, duration_ms";
/// Min, average and max of every metric per bucket, named as [`SeriesRow`]
/// reads them; the backends differ only in how they compute the bucket.
pub(crate) const SERIES_AGGREGATES: &str = "COUNT(*) AS n, \
     MIN(soil_moisture) AS soil_moisture_min, AVG(soil_moisture) AS soil_moisture_avg, \
     MAX(soil_moisture) AS soil_moisture_max, \
     MIN(temperature) AS temperature_min, AVG(temperature) AS temperature_avg, \
     MAX(temperature) AS temperature_max, \
     MIN(humidity) AS humidity_min, AVG(humidity) AS humidity_avg, MAX(humidity) AS humidity_max, \
     MIN(light_level) AS light_level_min, AVG(light_level) AS light_level_avg, \
     MAX(light_level) AS light_level_max";

/// One hour of one plant's readings, for `reading_rollups` (grouped by
/// plant and hour).
pub(crate) const ROLLUP_AGGREGATES: &str = "COUNT(*), \
     MIN(soil_moisture), MAX(soil_moisture), SUM(soil_moisture), COUNT(soil_moisture), \
     MIN(temperature), MAX(temperature), SUM(temperature), COUNT(temperature), \
     MIN(humidity), MAX(humidity), SUM(humidity), COUNT(humidity), \
     MIN(light_level), MAX(light_level), SUM(light_level), COUNT(light_level)";

pub(crate) const ROLLUP_COLUMNS: &str = "plant_id, hour, n, \
     soil_moisture_min, soil_moisture_max, soil_moisture_sum, soil_moisture_count, \
     temperature_min, temperature_max, temperature_sum, temperature_count, \
     humidity_min, humidity_max, humidity_sum, humidity_count, \
     light_level_min, light_level_max, light_level_sum, light_level_count";

/// Rollup hours merged into longer buckets, shaped as [`SERIES_AGGREGATES`].
pub(crate) const ROLLUP_SERIES_AGGREGATES: &str = "CAST(SUM(n) AS BIGINT) AS n, \
     MIN(soil_moisture_min) AS soil_moisture_min, \
     SUM(soil_moisture_sum) / NULLIF(SUM(soil_moisture_count), 0) AS soil_moisture_avg, \
     MAX(soil_moisture_max) AS soil_moisture_max, \
     MIN(temperature_min) AS temperature_min, \
     SUM(temperature_sum) / NULLIF(SUM(temperature_count), 0) AS temperature_avg, \
     MAX(temperature_max) AS temperature_max, \
     MIN(humidity_min) AS humidity_min, \
     SUM(humidity_sum) / NULLIF(SUM(humidity_count), 0) AS humidity_avg, \
     MAX(humidity_max) AS humidity_max, \
     MIN(light_level_min) AS light_level_min, \
     SUM(light_level_sum) / NULLIF(SUM(light_level_count), 0) AS light_level_avg, \
     MAX(light_level_max) AS light_level_max";

/// Where a chart series is aggregated from.
#[derive(Clone, Copy)]
pub(crate) enum SeriesSource {
    Readings,
    /// The hourly rollups, for what the readings no longer cover.
    Rollups,
}

impl SeriesSource {
    /// Table, time column, aggregates shaped as [`SeriesRow`].
    pub(crate) fn parts(self) -> (&'static str, &'static str, &'static str) {
        match self {
            SeriesSource::Readings => ("readings", "time", SERIES_AGGREGATES),
            SeriesSource::Rollups => ("reading_rollups", "hour", ROLLUP_SERIES_AGGREGATES),
        }
    }
}

#[derive(FromRow)]
pub(crate) struct PlantRow {
    id: Uuid,
    name: String,
    species: Option<String>,
    thresholds: Option<Json<Thresholds>>,
    alert_cooldown_minutes: i32,
    low_battery_percent: Option<i32>,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl From<PlantRow> for Plant {
    fn from(row: PlantRow) -> Self {
        Plant {
            id: row.id,
            name: row.name,
            species: row.species,
            thresholds: row.thresholds.map(|Json(t)| t),
            alert_cooldown_minutes: u32::try_from(row.alert_cooldown_minutes).unwrap_or_default(),
            low_battery_percent: row.low_battery_percent.and_then(|p| u8::try_from(p).ok()),
            created_at: row.created_at.0,
            updated_at: row.updated_at.0,
        }
    }
}

/// A page of plants with the table's total riding along (one statement, one
/// snapshot).
#[derive(FromRow)]
pub(crate) struct PlantPageRow {
    #[sqlx(flatten)]
    pub plant: PlantRow,
    pub total: i64,
}

#[derive(FromRow)]
pub(crate) struct DeviceRow {
    id: Uuid,
    mac_address: String,
    mqtt_username: String,
    plant_id: Option<Uuid>,
    status: String,
    firmware_version: Option<String>,
    sensor_types: Option<Json<Vec<String>>>,
    last_seen_at: Option<Timestamp>,
    created_at: Timestamp,
    enrollment: Option<String>,
    battery_percent: Option<f64>,
    battery_volts: Option<f64>,
    rssi_dbm: Option<f64>,
    vitals_at: Option<Timestamp>,
}

impl TryFrom<DeviceRow> for Device {
    type Error = StoreError;
    fn try_from(row: DeviceRow) -> Result<Self> {
        Ok(Device {
            status: DeviceStatus::parse(&row.status)
                .ok_or_else(|| corrupt("device status", &row.status))?,
            id: row.id,
            mac_address: row.mac_address,
            mqtt_username: row.mqtt_username,
            plant_id: row.plant_id,
            firmware_version: row.firmware_version,
            sensor_types: row.sensor_types.map(|Json(t)| t),
            last_seen_at: row.last_seen_at.map(|t| t.0),
            created_at: row.created_at.0,
            enrollment: row
                .enrollment
                .as_deref()
                .map(|e| Enrollment::parse(e).ok_or_else(|| corrupt("enrollment", e)))
                .transpose()?,
            vitals: plantops_core::DeviceVitals::new(
                row.battery_percent,
                row.battery_volts,
                row.rssi_dbm,
            ),
            vitals_at: row.vitals_at.map(|t| t.0),
        })
    }
}

#[derive(FromRow)]
pub(crate) struct DevicePageRow {
    #[sqlx(flatten)]
    pub device: DeviceRow,
    pub total: i64,
}

#[derive(FromRow)]
pub(crate) struct ReadingRow {
    time: Timestamp,
    device_id: Uuid,
    plant_id: Option<Uuid>,
    soil_moisture: Option<f64>,
    temperature: Option<f64>,
    humidity: Option<f64>,
    light_level: Option<f64>,
}

impl From<ReadingRow> for Reading {
    fn from(row: ReadingRow) -> Self {
        Reading {
            time: row.time.0,
            device_id: row.device_id,
            plant_id: row.plant_id,
            values: Measurements {
                soil_moisture: row.soil_moisture,
                temperature: row.temperature,
                humidity: row.humidity,
                light_level: row.light_level,
            },
        }
    }
}

#[derive(FromRow)]
pub(crate) struct AlertRow {
    id: Uuid,
    plant_id: Option<Uuid>,
    device_id: Option<Uuid>,
    kind: String,
    metric: Option<String>,
    value: Option<f64>,
    threshold: Option<f64>,
    direction: Option<String>,
    message: String,
    created_at: Timestamp,
    delivery: String,
    acknowledged_at: Option<Timestamp>,
}

impl TryFrom<AlertRow> for Alert {
    type Error = StoreError;
    fn try_from(row: AlertRow) -> Result<Self> {
        Ok(Alert {
            kind: AlertKind::parse(&row.kind).ok_or_else(|| corrupt("alert kind", &row.kind))?,
            metric: row.metric.as_deref().map(parse_metric).transpose()?,
            direction: parse_side(row.direction.as_deref())?,
            delivery: Delivery::parse(&row.delivery)
                .ok_or_else(|| corrupt("delivery", &row.delivery))?,
            id: row.id,
            plant_id: row.plant_id,
            device_id: row.device_id,
            value: row.value,
            threshold: row.threshold,
            message: row.message,
            created_at: row.created_at.0,
            acknowledged_at: row.acknowledged_at.map(|t| t.0),
        })
    }
}

#[derive(FromRow)]
pub(crate) struct AlertPageRow {
    #[sqlx(flatten)]
    pub alert: AlertRow,
    pub total: i64,
}

#[derive(FromRow)]
pub(crate) struct QueuedAlertRow {
    #[sqlx(flatten)]
    alert: AlertRow,
    attempts: i32,
}

impl TryFrom<QueuedAlertRow> for QueuedAlert {
    type Error = StoreError;
    fn try_from(row: QueuedAlertRow) -> Result<Self> {
        Ok(QueuedAlert {
            alert: row.alert.try_into()?,
            attempts: u32::try_from(row.attempts).unwrap_or_default(),
        })
    }
}

/// The threshold states of one plant (`$1`), as [`MetricStateRow`] reads them.
pub(crate) const PLANT_METRIC_STATES: &str =
    "SELECT metric, breached, notified, last_notified_at, changed_at \
     FROM alert_states WHERE plant_id = $1";

/// The states of several plants' metrics, read in one statement.
pub(crate) const PLANTS_METRIC_STATES: &str =
    "SELECT plant_id, metric, breached, notified, last_notified_at, changed_at \
     FROM alert_states WHERE plant_id IN (";

#[derive(FromRow)]
pub(crate) struct PlantMetricStateRow {
    pub(crate) plant_id: Uuid,
    #[sqlx(flatten)]
    pub(crate) state: MetricStateRow,
}

#[derive(FromRow)]
pub(crate) struct MetricStateRow {
    metric: String,
    breached: Option<String>,
    notified: bool,
    last_notified_at: Option<Timestamp>,
    changed_at: Option<Timestamp>,
}

impl TryFrom<MetricStateRow> for (Metric, MetricState) {
    type Error = StoreError;
    fn try_from(row: MetricStateRow) -> Result<Self> {
        let state = MetricState {
            breached: parse_side(row.breached.as_deref())?,
            notified: row.notified,
            last_notified_at: row.last_notified_at.map(|t| t.0),
            changed_at: row.changed_at.map(|t| t.0),
        };
        Ok((parse_metric(&row.metric)?, state))
    }
}

#[derive(FromRow)]
pub(crate) struct CarePlanRow {
    id: Uuid,
    plant_id: Uuid,
    plan: Json<CarePlan>,
    provider: String,
    model: String,
    reason: String,
    created_at: Timestamp,
    input_tokens: Option<i32>,
    output_tokens: Option<i32>,
    duration_ms: Option<i64>,
}

impl From<CarePlanRow> for StoredCarePlan {
    fn from(row: CarePlanRow) -> Self {
        StoredCarePlan {
            id: row.id,
            plant_id: row.plant_id,
            plan: row.plan.0,
            provider: row.provider,
            model: row.model,
            reason: row.reason,
            created_at: row.created_at.0,
            input_tokens: row.input_tokens.and_then(|n| u32::try_from(n).ok()),
            output_tokens: row.output_tokens.and_then(|n| u32::try_from(n).ok()),
            duration_ms: row.duration_ms.and_then(|n| u64::try_from(n).ok()),
        }
    }
}

#[derive(FromRow)]
pub(crate) struct SeriesRow {
    bucket: Timestamp,
    n: i64,
    soil_moisture_min: Option<f64>,
    soil_moisture_avg: Option<f64>,
    soil_moisture_max: Option<f64>,
    temperature_min: Option<f64>,
    temperature_avg: Option<f64>,
    temperature_max: Option<f64>,
    humidity_min: Option<f64>,
    humidity_avg: Option<f64>,
    humidity_max: Option<f64>,
    light_level_min: Option<f64>,
    light_level_avg: Option<f64>,
    light_level_max: Option<f64>,
}

/// A bucket where the metric was never measured has no aggregate.
fn aggregate(min: Option<f64>, avg: Option<f64>, max: Option<f64>) -> Option<Aggregate> {
    Some(Aggregate {
        min: min?,
        avg: avg?,
        max: max?,
    })
}

impl From<SeriesRow> for SeriesPoint {
    fn from(row: SeriesRow) -> Self {
        SeriesPoint {
            time: row.bucket.0,
            count: to_u64(row.n),
            soil_moisture: aggregate(
                row.soil_moisture_min,
                row.soil_moisture_avg,
                row.soil_moisture_max,
            ),
            temperature: aggregate(
                row.temperature_min,
                row.temperature_avg,
                row.temperature_max,
            ),
            humidity: aggregate(row.humidity_min, row.humidity_avg, row.humidity_max),
            light_level: aggregate(
                row.light_level_min,
                row.light_level_avg,
                row.light_level_max,
            ),
        }
    }
}

/// Splits a page of rows that carry the total into the items and the
/// total; a page past the end carries none, so it is counted apart.
pub(crate) async fn page_with_total<R, T, F>(
    rows: Vec<R>,
    split: impl Fn(R) -> (Result<T>, i64),
    count: F,
) -> Result<(Vec<T>, u64)>
where
    F: std::future::Future<Output = Result<i64>>,
{
    let mut total = None;
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let (item, n) = split(row);
        items.push(item?);
        total = Some(n);
    }
    let total = match total {
        Some(n) => n,
        None => count.await?,
    };
    Ok((items, to_u64(total)))
}

/// Implements the role traits for a backend whose store holds its pool in
/// `self.pool`. Shared SQL is written here once; the few statements that
/// differ are the backend's own inherent methods, which the generated impls
/// call: `insert_batch`, `latest_per_plant`, `history`, `series_rows` and
/// `prune`.
/// A device's stored battery state, as a batch's vitals are judged
/// against it.
#[derive(FromRow)]
pub(crate) struct StoredVitals {
    id: Uuid,
    plant_id: Option<Uuid>,
    battery_low: bool,
    vitals_at: Option<Timestamp>,
    /// The plant's own low-battery limit (0: never).
    plant_limit: Option<i32>,
}

/// One device's vitals as a batch writes them.
pub(crate) struct VitalsWrite {
    pub(crate) device_id: Uuid,
    pub(crate) vitals: plantops_core::DeviceVitals,
    pub(crate) at: DateTime<Utc>,
    pub(crate) low: bool,
}

/// Judges each device's newest vitals against its stored state: what to
/// write (nothing for a device deleted meanwhile, or for vitals older than
/// the stored ones) and which batteries became low. A battery is low below
/// the plant's limit, else the batch's; it stays low until it is back
/// [`crate::BATTERY_RECOVERY_MARGIN`] above.
pub(crate) fn judge_vitals(
    stored: &[StoredVitals],
    seen: &[crate::Presence],
) -> (Vec<VitalsWrite>, Vec<crate::BatteryLow>) {
    let stored: HashMap<Uuid, &StoredVitals> = stored.iter().map(|s| (s.id, s)).collect();
    let mut writes = Vec::new();
    let mut became_low = Vec::new();
    for presence in seen {
        let (Some(seen), Some(device)) = (&presence.vitals, stored.get(&presence.device_id)) else {
            continue;
        };
        if device.vitals_at.is_some_and(|last| last.0 > seen.at) {
            // An older message, arriving late: the newer values stay.
            continue;
        }
        let limit = match device.plant_limit {
            Some(0) => None,
            Some(percent) => Some(f64::from(percent)),
            None => seen.low_below,
        };
        let low = match (seen.vitals.battery_percent, limit) {
            (Some(percent), Some(limit)) if percent < limit => true,
            (Some(percent), Some(limit)) if percent >= limit + crate::BATTERY_RECOVERY_MARGIN => {
                false
            }
            (_, None) => false,
            _ => device.battery_low,
        };
        if let (true, false, Some(percent), Some(limit)) =
            (low, device.battery_low, seen.vitals.battery_percent, limit)
        {
            became_low.push(crate::BatteryLow {
                device_id: presence.device_id,
                plant_id: device.plant_id,
                percent,
                limit,
            });
        }
        writes.push(VitalsWrite {
            device_id: presence.device_id,
            vitals: seen.vitals,
            at: seen.at,
            low,
        });
    }
    (writes, became_low)
}

/// Implements the store for a backend: [`crate::Store`] here, each
/// aggregate's trait from its own file (`plants.rs`, `devices.rs`,
/// `readings.rs`, `alerts.rs`, `care_plans.rs`, `settings.rs`).
macro_rules! shared_store {
    ($store:ty, $db:ty, $backend:expr, $migrator:expr) => {
        #[async_trait::async_trait]
        impl $crate::Store for $store {
            fn backend(&self) -> $crate::Backend {
                $backend
            }

            async fn plant_overview(
                &self,
                page: $crate::Page,
            ) -> $crate::Result<(Vec<$crate::PlantOverview>, u64)> {
                self.overview(page).await
            }

            async fn migrate(&self) -> $crate::Result<()> {
                // A downgrade: refuse before touching anything.
                let known = $migrator.iter().map(|m| m.version).max().unwrap_or(0);
                let applied: Option<i64> = match sqlx::query_scalar(
                    "SELECT MAX(version) FROM _sqlx_migrations WHERE success",
                )
                .fetch_one(&self.pool)
                .await
                {
                    Ok(version) => version,
                    // A new database has no migrations table yet.
                    Err(sqlx::Error::Database(_)) => None,
                    Err(e) => return Err(e.into()),
                };
                if let Some(found) = applied.filter(|found| *found > known) {
                    return Err($crate::StoreError::NewerSchema { found, known });
                }
                // On PostgreSQL sqlx holds an advisory lock while it
                // migrates, so two processes starting together apply each
                // migration once.
                $migrator.run(&self.pool).await?;
                Ok(())
            }

            async fn is_migrated(&self) -> $crate::Result<bool> {
                let applied: Vec<i64> =
                    match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                        .fetch_all(&self.pool)
                        .await
                    {
                        Ok(versions) => versions,
                        Err(sqlx::Error::Database(_)) => return Ok(false),
                        Err(e) => return Err(e.into()),
                    };
                Ok($migrator.iter().all(|m| applied.contains(&m.version)))
            }

            async fn ping(&self) -> $crate::Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn try_lead(&self) -> $crate::Result<Option<Box<dyn $crate::Lead>>> {
                self.lead().await
            }

            async fn publish_live(&self, payload: &str) -> $crate::Result<()> {
                self.notify_live(payload).await
            }

            async fn live_feed(&self) -> $crate::Result<Option<$crate::LiveFeed>> {
                self.listen_live().await
            }

            async fn touch_instance(
                &self,
                id: &str,
                at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<()> {
                sqlx::query(
                    "INSERT INTO instances (id, started_at, seen_at) VALUES ($1, $2, $2) \
                     ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
                )
                .bind(id)
                .bind($crate::sql::Timestamp(at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn stale_instances(
                &self,
                seen_before: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Vec<String>> {
                Ok(
                    sqlx::query_scalar("SELECT id FROM instances WHERE seen_at < $1 ORDER BY id")
                        .bind($crate::sql::Timestamp(seen_before))
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            async fn live_instances(
                &self,
                seen_since: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Vec<String>> {
                Ok(
                    sqlx::query_scalar("SELECT id FROM instances WHERE seen_at >= $1 ORDER BY id")
                        .bind($crate::sql::Timestamp(seen_since))
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            async fn forget_instance(&self, id: &str) -> $crate::Result<()> {
                sqlx::query("DELETE FROM instances WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        }
        $crate::plants::plant_store!($store, $db);
        $crate::devices::device_store!($store, $db);
        $crate::readings::reading_store!($store, $db);
        $crate::alerts::alert_store!($store, $db);
        $crate::care_plans::care_plan_store!($store, $db);
        $crate::care::care_store!($store, $db);
        $crate::settings::setting_store!($store, $db);
    };
}

pub(crate) use shared_store;

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

macro_rules! shared_store {
    ($store:ty, $db:ty, $backend:expr, $migrator:expr) => {
        impl $store {
            /// Stores the vitals a batch brought, in its transaction (two
            /// statements however many devices); returns the batteries
            /// that became low. On PostgreSQL the batch holds the devices'
            /// rows already.
            async fn write_batch_vitals(
                tx: &mut sqlx::Transaction<'static, $db>,
                seen: &[$crate::Presence],
            ) -> $crate::Result<Vec<$crate::BatteryLow>> {
                let ids: Vec<uuid::Uuid> = seen
                    .iter()
                    .filter(|p| p.vitals.is_some())
                    .map(|p| p.device_id)
                    .collect();
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut stored: Vec<$crate::sql::StoredVitals> = Vec::with_capacity(ids.len());
                for chunk in ids.chunks($crate::sql::IDS_PER_STATEMENT) {
                    let mut query = sqlx::QueryBuilder::<$db>::new(
                        "SELECT d.id, d.plant_id, d.battery_low, d.vitals_at, \
                         p.low_battery_percent AS plant_limit \
                         FROM devices d LEFT JOIN plants p ON p.id = d.plant_id WHERE d.id IN (",
                    );
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    query.push(")");
                    stored.extend(
                        query
                            .build_query_as::<$crate::sql::StoredVitals>()
                            .persistent(false)
                            .fetch_all(&mut **tx)
                            .await?,
                    );
                }
                let (writes, low) = $crate::sql::judge_vitals(&stored, seen);
                Self::update_vitals(tx, &writes).await?;
                Ok(low)
            }

            /// Saves threshold state changes and the alerts they caused.
            async fn write_alerts(
                tx: &mut sqlx::Transaction<'static, $db>,
                states: &[$crate::StateChange],
                alerts: &[plantops_core::alert::Alert],
            ) -> $crate::Result<()> {
                for change in states {
                    sqlx::query(
                        "INSERT INTO alert_states (plant_id, metric, breached, notified, \
                         last_notified_at, changed_at) VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (plant_id, metric) DO UPDATE SET \
                         breached = excluded.breached, notified = excluded.notified, \
                         last_notified_at = excluded.last_notified_at, \
                         changed_at = excluded.changed_at",
                    )
                    .bind(change.plant_id)
                    .bind(change.metric.as_str())
                    .bind(change.state.breached.map(plantops_core::plant::BoundSide::as_str))
                    .bind(change.state.notified)
                    .bind(change.state.last_notified_at.map($crate::sql::Timestamp))
                    .bind(change.state.changed_at.map($crate::sql::Timestamp))
                    .execute(&mut **tx)
                    .await?;
                }
                for alert in alerts {
                    // The first delivery attempt is due when the alert is made.
                    sqlx::query(&format!(
                        "INSERT INTO alerts ({}, attempts, next_attempt_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, $10)",
                        $crate::sql::ALERT_COLUMNS
                    ))
                    .bind(alert.id)
                    .bind(alert.plant_id)
                    .bind(alert.device_id)
                    .bind(alert.kind.as_str())
                    .bind(alert.metric.map(plantops_core::Metric::as_str))
                    .bind(alert.value)
                    .bind(alert.threshold)
                    .bind(alert.direction.map(plantops_core::plant::BoundSide::as_str))
                    .bind(&alert.message)
                    .bind($crate::sql::Timestamp(alert.created_at))
                    .bind(alert.delivery.as_str())
                    .bind(alert.acknowledged_at.map($crate::sql::Timestamp))
                    .execute(&mut **tx)
                    .await?;
                    // Its place in every channel's outbox that takes it.
                    sqlx::query(
                        "INSERT INTO channel_deliveries \
                         (channel_id, alert_id, delivery, attempts, next_attempt_at) \
                         SELECT id, $1, 'pending', 0, $2 FROM notification_channels \
                         WHERE min_severity_level <= $3",
                    )
                    .bind(alert.id)
                    .bind($crate::sql::Timestamp(alert.created_at))
                    .bind(alert.kind.severity().level())
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            }
        }

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
                Ok(sqlx::query_scalar("SELECT id FROM instances WHERE seen_at < $1 ORDER BY id")
                    .bind($crate::sql::Timestamp(seen_before))
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn live_instances(
                &self,
                seen_since: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Vec<String>> {
                Ok(sqlx::query_scalar("SELECT id FROM instances WHERE seen_at >= $1 ORDER BY id")
                    .bind($crate::sql::Timestamp(seen_since))
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn forget_instance(&self, id: &str) -> $crate::Result<()> {
                sqlx::query("DELETE FROM instances WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::PlantStore for $store {
            async fn insert_plant(&self, plant: &plantops_core::Plant) -> $crate::Result<()> {
                sqlx::query(
                    "INSERT INTO plants (id, name, species, thresholds, alert_cooldown_minutes, \
                     created_at, updated_at, low_battery_percent) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(plant.id)
                .bind(&plant.name)
                .bind(&plant.species)
                .bind(plant.thresholds.map(sqlx::types::Json))
                .bind(plant.alert_cooldown_minutes as i32)
                .bind($crate::sql::Timestamp(plant.created_at))
                .bind($crate::sql::Timestamp(plant.updated_at))
                .bind(plant.low_battery_percent.map(i32::from))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_plants(
                &self,
                page: $crate::Page,
            ) -> $crate::Result<(Vec<plantops_core::Plant>, u64)> {
                // The total rides along with the page: one statement, one
                // snapshot, one round trip.
                let rows: Vec<$crate::sql::PlantPageRow> = sqlx::query_as(
                    "SELECT *, (SELECT COUNT(*) FROM plants) AS total FROM plants \
                     ORDER BY created_at DESC, id LIMIT $1 OFFSET $2",
                )
                .bind(i64::from(page.limit))
                .bind(page.offset as i64)
                .fetch_all(&self.pool)
                .await?;
                let count = async {
                    Ok::<i64, $crate::StoreError>(
                        sqlx::query_scalar("SELECT COUNT(*) FROM plants")
                            .fetch_one(&self.pool)
                            .await?,
                    )
                };
                $crate::sql::page_with_total(rows, |row| (Ok(row.plant.into()), row.total), count)
                    .await
            }

            async fn get_plant(
                &self,
                id: uuid::Uuid,
            ) -> $crate::Result<Option<plantops_core::Plant>> {
                let row: Option<$crate::sql::PlantRow> =
                    sqlx::query_as("SELECT * FROM plants WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(Into::into))
            }

            async fn update_plant(&self, plant: &plantops_core::Plant) -> $crate::Result<bool> {
                let result = sqlx::query(
                    "UPDATE plants SET name = $1, species = $2, thresholds = $3, \
                     alert_cooldown_minutes = $4, updated_at = $5, low_battery_percent = $7 \
                     WHERE id = $6",
                )
                .bind(&plant.name)
                .bind(&plant.species)
                .bind(plant.thresholds.map(sqlx::types::Json))
                .bind(plant.alert_cooldown_minutes as i32)
                .bind($crate::sql::Timestamp(plant.updated_at))
                .bind(plant.id)
                .bind(plant.low_battery_percent.map(i32::from))
                .execute(&self.pool)
                .await?;
                Ok(result.rows_affected() == 1)
            }

            async fn delete_plant(&self, id: uuid::Uuid) -> $crate::Result<bool> {
                // ON DELETE SET NULL unassigns the plant's devices.
                let result = sqlx::query("DELETE FROM plants WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(result.rows_affected() == 1)
            }
        }

        #[async_trait::async_trait]
        impl $crate::DeviceStore for $store {
            async fn register_device(
                &self,
                device: &plantops_core::Device,
                password_hash: &str,
            ) -> $crate::Result<$crate::Registration> {
                let inserted = sqlx::query(
                    "INSERT INTO devices (id, mac_address, mqtt_username, password_hash, \
                     plant_id, status, firmware_version, sensor_types, last_seen_at, created_at, \
                     enrollment) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                     ON CONFLICT (mac_address) DO NOTHING",
                )
                .bind(device.id)
                .bind(&device.mac_address)
                .bind(&device.mqtt_username)
                .bind(password_hash)
                .bind(device.plant_id)
                .bind(device.status.as_str())
                .bind(&device.firmware_version)
                .bind(device.sensor_types.as_ref().map(sqlx::types::Json))
                .bind(device.last_seen_at.map($crate::sql::Timestamp))
                .bind($crate::sql::Timestamp(device.created_at))
                .bind(device.enrollment.map(plantops_core::account::Enrollment::as_str))
                .execute(&self.pool)
                .await?;
                if inserted.rows_affected() == 1 {
                    return Ok($crate::Registration::Created(device.clone()));
                }
                let row: $crate::sql::DeviceRow = sqlx::query_as(&format!(
                    "SELECT {} FROM devices WHERE mac_address = $1",
                    $crate::sql::DEVICE_COLUMNS
                ))
                .bind(&device.mac_address)
                .fetch_one(&self.pool)
                .await?;
                Ok($crate::Registration::Existing(row.try_into()?))
            }

            async fn list_devices(
                &self,
                page: $crate::Page,
                status: Option<plantops_core::DeviceStatus>,
            ) -> $crate::Result<(Vec<plantops_core::Device>, u64)> {
                let status = status.map(plantops_core::DeviceStatus::as_str);
                let filter = |query: &mut sqlx::QueryBuilder<'_, $db>| {
                    if let Some(status) = status {
                        query.push(" WHERE status = ").push_bind(status);
                    }
                };
                // The total rides along with the page, as for plants.
                let mut query = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {}, (SELECT COUNT(*) FROM devices",
                    $crate::sql::DEVICE_COLUMNS
                ));
                filter(&mut query);
                query.push(") AS total FROM devices");
                filter(&mut query);
                query
                    .push(" ORDER BY created_at DESC, id LIMIT ")
                    .push_bind(i64::from(page.limit))
                    .push(" OFFSET ")
                    .push_bind(page.offset as i64);
                let rows: Vec<$crate::sql::DevicePageRow> =
                    query.build_query_as().fetch_all(&self.pool).await?;
                let count = async {
                    let mut query = sqlx::QueryBuilder::<$db>::new("SELECT COUNT(*) FROM devices");
                    filter(&mut query);
                    Ok::<i64, $crate::StoreError>(
                        query.build_query_scalar().fetch_one(&self.pool).await?,
                    )
                };
                $crate::sql::page_with_total(rows, |row| (row.device.try_into(), row.total), count)
                    .await
            }

            async fn get_device(
                &self,
                id: uuid::Uuid,
            ) -> $crate::Result<Option<plantops_core::Device>> {
                let row: Option<$crate::sql::DeviceRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM devices WHERE id = $1",
                    $crate::sql::DEVICE_COLUMNS
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn plant_devices(
                &self,
                plant_id: uuid::Uuid,
            ) -> $crate::Result<Vec<plantops_core::Device>> {
                let rows: Vec<$crate::sql::DeviceRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM devices WHERE plant_id = $1 ORDER BY created_at DESC, id",
                    $crate::sql::DEVICE_COLUMNS
                ))
                .bind(plant_id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn device_counts(
                &self,
                plant_ids: &[uuid::Uuid],
            ) -> $crate::Result<std::collections::HashMap<uuid::Uuid, u64>> {
                let mut counts = std::collections::HashMap::new();
                for chunk in plant_ids.chunks($crate::sql::IDS_PER_STATEMENT) {
                    let mut query = sqlx::QueryBuilder::<$db>::new(
                        "SELECT plant_id, COUNT(*) FROM devices WHERE plant_id IN (",
                    );
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    query.push(") GROUP BY plant_id");
                    let rows: Vec<(uuid::Uuid, i64)> =
                        query.build_query_as().persistent(false).fetch_all(&self.pool).await?;
                    counts.extend(
                        rows.into_iter()
                            .map(|(id, n)| (id, $crate::sql::to_u64(n))),
                    );
                }
                Ok(counts)
            }

            async fn device_credentials(
                &self,
                mqtt_username: &str,
            ) -> $crate::Result<Option<$crate::DeviceCredentials>> {
                let row: Option<(uuid::Uuid, String)> =
                    sqlx::query_as("SELECT id, password_hash FROM devices WHERE mqtt_username = $1")
                        .bind(mqtt_username)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(|(device_id, password_hash)| $crate::DeviceCredentials {
                    device_id,
                    password_hash,
                }))
            }

            async fn set_device_password(
                &self,
                id: uuid::Uuid,
                password_hash: &str,
            ) -> $crate::Result<bool> {
                let result = sqlx::query("UPDATE devices SET password_hash = $1 WHERE id = $2")
                    .bind(password_hash)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(result.rows_affected() == 1)
            }

            async fn delete_device(&self, id: uuid::Uuid) -> $crate::Result<bool> {
                let result = sqlx::query("DELETE FROM devices WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(result.rows_affected() == 1)
            }

            async fn assign_device(
                &self,
                id: uuid::Uuid,
                plant_id: Option<uuid::Uuid>,
            ) -> $crate::Result<bool> {
                let result = match plant_id {
                    Some(plant_id) => sqlx::query(
                        "UPDATE devices SET plant_id = $1 WHERE id = $2 \
                         AND EXISTS (SELECT 1 FROM plants WHERE id = $1)",
                    )
                    .bind(plant_id)
                    .bind(id),
                    None => sqlx::query("UPDATE devices SET plant_id = NULL WHERE id = $1").bind(id),
                }
                .execute(&self.pool)
                .await?;
                Ok(result.rows_affected() == 1)
            }

            async fn device_plants(
                &self,
                ids: &[uuid::Uuid],
            ) -> $crate::Result<std::collections::HashMap<uuid::Uuid, Option<uuid::Uuid>>> {
                let mut plants = std::collections::HashMap::with_capacity(ids.len());
                for chunk in ids.chunks($crate::sql::IDS_PER_STATEMENT) {
                    let mut query =
                        sqlx::QueryBuilder::<$db>::new("SELECT id, plant_id FROM devices WHERE id IN (");
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    query.push(")");
                    let rows: Vec<(uuid::Uuid, Option<uuid::Uuid>)> =
                        query.build_query_as().persistent(false).fetch_all(&self.pool).await?;
                    plants.extend(rows);
                }
                Ok(plants)
            }

            async fn mark_silent_offline(
                &self,
                silent_since: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Vec<$crate::SilentDevice>> {
                // One statement: a batch that saw the device meanwhile
                // either committed first (the row no longer matches) or
                // waits for this one and brings the device back online.
                let rows: Vec<(uuid::Uuid, Option<uuid::Uuid>, Option<$crate::sql::Timestamp>)> =
                    sqlx::query_as(
                        "UPDATE devices SET status = 'offline' WHERE status = 'online'                          AND last_seen_at < $1 RETURNING id, plant_id, last_seen_at",
                    )
                    .bind($crate::sql::Timestamp(silent_since))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|(device_id, plant_id, last_seen_at)| $crate::SilentDevice {
                        device_id,
                        plant_id,
                        last_seen_at: last_seen_at.map(|t| t.0),
                    })
                    .collect())
            }
        }

        #[async_trait::async_trait]
        impl $crate::ReadingStore for $store {
            async fn commit_batch(
                &self,
                readings: &[plantops_core::Reading],
                seen: &[$crate::Presence],
            ) -> $crate::Result<$crate::CommittedBatch> {
                self.insert_batch(readings, seen).await
            }

            async fn refresh_rollups(
                &self,
                plant_id: uuid::Uuid,
                from: chrono::DateTime<chrono::Utc>,
                to: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<u64> {
                let (from, to) = $crate::whole_hours(from, to);
                // An upsert: an hour with no readings left (pruned) keeps
                // its rollup.
                let updates: Vec<String> = $crate::sql::ROLLUP_COLUMNS
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !matches!(*c, "plant_id" | "hour"))
                    .map(|c| format!("{c} = excluded.{c}"))
                    .collect();
                let refreshed = sqlx::query(&format!(
                    "INSERT INTO reading_rollups ({}) SELECT plant_id, {} AS hour, {} \
                     FROM readings WHERE plant_id = $1 AND time >= $2 AND time < $3 \
                     GROUP BY plant_id, hour \
                     ON CONFLICT (plant_id, hour) DO UPDATE SET {}",
                    $crate::sql::ROLLUP_COLUMNS,
                    Self::HOUR_OF_TIME,
                    $crate::sql::ROLLUP_AGGREGATES,
                    updates.join(", ")
                ))
                .bind(plant_id)
                .bind($crate::sql::Timestamp(from))
                .bind($crate::sql::Timestamp(to))
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(refreshed)
            }

            async fn rollup_series(
                &self,
                plant_id: uuid::Uuid,
                from: chrono::DateTime<chrono::Utc>,
                to: chrono::DateTime<chrono::Utc>,
                bucket_seconds: i64,
            ) -> $crate::Result<Vec<$crate::SeriesPoint>> {
                let rows = self
                    .series_rows($crate::sql::SeriesSource::Rollups, plant_id, from, to, bucket_seconds)
                    .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn prune_rollups(
                &self,
                before: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<u64> {
                let result = sqlx::query("DELETE FROM reading_rollups WHERE hour < $1")
                    .bind($crate::sql::Timestamp(before))
                    .execute(&self.pool)
                    .await?;
                Ok(result.rows_affected())
            }

            async fn readings_at(
                &self,
                keys: &[(uuid::Uuid, chrono::DateTime<chrono::Utc>)],
            ) -> $crate::Result<Vec<plantops_core::Reading>> {
                let mut readings = Vec::with_capacity(keys.len());
                for chunk in keys.chunks($crate::sql::IDS_PER_STATEMENT / 2) {
                    let mut query = sqlx::QueryBuilder::<$db>::new(format!(
                        "SELECT {} FROM readings WHERE (device_id, time) IN (",
                        $crate::sql::READING_COLUMNS
                    ));
                    let mut list = query.separated(", ");
                    for (device_id, time) in chunk {
                        list.push("(")
                            .push_bind_unseparated(*device_id)
                            .push_unseparated(", ")
                            .push_bind_unseparated($crate::sql::Timestamp(*time))
                            .push_unseparated(")");
                    }
                    query.push(")");
                    let rows: Vec<$crate::sql::ReadingRow> =
                        query.build_query_as().persistent(false).fetch_all(&self.pool).await?;
                    readings.extend(rows.into_iter().map(plantops_core::Reading::from));
                }
                Ok(readings)
            }

            async fn latest_device_reading(
                &self,
                device_id: uuid::Uuid,
            ) -> $crate::Result<Option<plantops_core::Reading>> {
                let row: Option<$crate::sql::ReadingRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM readings WHERE device_id = $1 ORDER BY time DESC LIMIT 1",
                    $crate::sql::READING_COLUMNS
                ))
                .bind(device_id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Into::into))
            }

            async fn latest_plant_readings(
                &self,
                plant_ids: &[uuid::Uuid],
            ) -> $crate::Result<std::collections::HashMap<uuid::Uuid, plantops_core::Reading>> {
                self.latest_per_plant(plant_ids).await
            }

            async fn plant_history(
                &self,
                plant_id: uuid::Uuid,
                since: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> $crate::Result<Vec<plantops_core::Reading>> {
                self.history(plant_id, since, limit).await
            }

            async fn plant_series(
                &self,
                plant_id: uuid::Uuid,
                from: chrono::DateTime<chrono::Utc>,
                to: chrono::DateTime<chrono::Utc>,
                bucket_seconds: i64,
            ) -> $crate::Result<Vec<$crate::SeriesPoint>> {
                let rows = self
                    .series_rows($crate::sql::SeriesSource::Readings, plant_id, from, to, bucket_seconds)
                    .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn plant_readings_page(
                &self,
                plant_id: uuid::Uuid,
                from: chrono::DateTime<chrono::Utc>,
                to: chrono::DateTime<chrono::Utc>,
                after: Option<(chrono::DateTime<chrono::Utc>, uuid::Uuid)>,
                limit: u32,
            ) -> $crate::Result<Vec<plantops_core::Reading>> {
                // Before the first page: just before `from`, any device (no
                // device id is the nil UUID).
                let (after_time, after_device) = after.unwrap_or((from, uuid::Uuid::nil()));
                let rows: Vec<$crate::sql::ReadingRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM readings WHERE plant_id = $1 AND time >= $2 AND time < $3 \
                     AND (time > $4 OR (time = $4 AND device_id > $5)) \
                     ORDER BY time, device_id LIMIT $6",
                    $crate::sql::READING_COLUMNS
                ))
                .bind(plant_id)
                .bind($crate::sql::Timestamp(from))
                .bind($crate::sql::Timestamp(to))
                .bind($crate::sql::Timestamp(after_time))
                .bind(after_device)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn count_readings(&self) -> $crate::Result<u64> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM readings")
                    .fetch_one(&self.pool)
                    .await?;
                Ok($crate::sql::to_u64(n))
            }

            async fn prune_readings(
                &self,
                before: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<u64> {
                self.prune(before).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::AlertStore for $store {
            async fn metric_states(
                &self,
                plant_id: uuid::Uuid,
            ) -> $crate::Result<
                std::collections::HashMap<plantops_core::Metric, plantops_core::alert::MetricState>,
            > {
                let rows: Vec<$crate::sql::MetricStateRow> =
                    sqlx::query_as($crate::sql::PLANT_METRIC_STATES)
                .bind(plant_id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn record_alerts(
                &self,
                states: &[$crate::StateChange],
                alerts: &[plantops_core::alert::Alert],
            ) -> $crate::Result<()> {
                let (pool, states, alerts) = (self.pool.clone(), states.to_vec(), alerts.to_vec());
                $crate::uncancellable(async move {
                    let mut tx = pool.begin().await?;
                    Self::write_alerts(&mut tx, &states, &alerts).await?;
                    tx.commit().await?;
                    Ok(())
                })
                .await
            }

            async fn judge_plants(
                &self,
                newest: &[(uuid::Uuid, chrono::DateTime<chrono::Utc>)],
                judge: $crate::Judge,
            ) -> $crate::Result<Vec<plantops_core::alert::Alert>> {
                let newest = newest.to_vec();
                let mut plant_ids: Vec<uuid::Uuid> = newest.iter().map(|(id, _)| *id).collect();
                // One order for every instance: no two wait on each other.
                plant_ids.sort_unstable();
                plant_ids.dedup();
                let pool = self.pool.clone();
                $crate::uncancellable(async move {
                    let mut tx = Self::begin_write(&pool).await?;
                    let mut judged = Vec::with_capacity(plant_ids.len());
                    for chunk in plant_ids.chunks($crate::sql::IDS_PER_STATEMENT) {
                        let mut query =
                            sqlx::QueryBuilder::<$db>::new("SELECT * FROM plants WHERE id IN (");
                        let mut list = query.separated(", ");
                        for id in chunk {
                            list.push_bind(*id);
                        }
                        query.push(") ORDER BY id").push(Self::LOCK_FOR_UPDATE);
                        let rows: Vec<$crate::sql::PlantRow> = query
                            .build_query_as()
                            .persistent(false)
                            .fetch_all(&mut *tx)
                            .await?;
                        judged.extend(rows.into_iter().map(plantops_core::Plant::from));
                    }
                    let mut states: std::collections::HashMap<
                        uuid::Uuid,
                        std::collections::HashMap<plantops_core::Metric, plantops_core::alert::MetricState>,
                    > = std::collections::HashMap::new();
                    for chunk in plant_ids.chunks($crate::sql::IDS_PER_STATEMENT) {
                        let mut query =
                            sqlx::QueryBuilder::<$db>::new($crate::sql::PLANTS_METRIC_STATES);
                        let mut list = query.separated(", ");
                        for id in chunk {
                            list.push_bind(*id);
                        }
                        query.push(")");
                        let rows: Vec<$crate::sql::PlantMetricStateRow> = query
                            .build_query_as()
                            .persistent(false)
                            .fetch_all(&mut *tx)
                            .await?;
                        for row in rows {
                            let (metric, state) = row.state.try_into()?;
                            states.entry(row.plant_id).or_default().insert(metric, state);
                        }
                    }
                    let plants = judged
                        .into_iter()
                        .map(|plant| $crate::JudgedPlant {
                            states: states.remove(&plant.id).unwrap_or_default(),
                            plant,
                        })
                        .collect();
                    let (states, alerts) = judge(plants);
                    Self::write_alerts(&mut tx, &states, &alerts).await?;
                    Self::raise_judged_marks(&mut tx, &newest).await?;
                    tx.commit().await?;
                    Ok(alerts)
                })
                .await
            }

            async fn unjudged_readings(
                &self,
                since: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> $crate::Result<Vec<plantops_core::Reading>> {
                let rows: Vec<$crate::sql::ReadingRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM readings r JOIN plants p ON p.id = r.plant_id \
                     WHERE p.thresholds IS NOT NULL AND r.time > $1 \
                     AND r.time > COALESCE(p.readings_judged_through, $1) \
                     ORDER BY r.time LIMIT $2",
                    $crate::sql::READING_COLUMNS_OF_R
                ))
                .bind($crate::sql::Timestamp(since))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn list_alerts(
                &self,
                filter: &$crate::AlertFilter,
                page: $crate::Page,
            ) -> $crate::Result<(Vec<plantops_core::alert::Alert>, u64)> {
                let conditions = |query: &mut sqlx::QueryBuilder<'_, $db>| {
                    query.push(" WHERE TRUE");
                    if let Some(plant_id) = filter.plant_id {
                        query.push(" AND plant_id = ").push_bind(plant_id);
                    }
                    if let Some(kind) = filter.kind {
                        query.push(" AND kind = ").push_bind(kind.as_str());
                    }
                    if let Some(since) = filter.since {
                        query
                            .push(" AND created_at >= ")
                            .push_bind($crate::sql::Timestamp(since));
                    }
                };
                let mut query = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {}, (SELECT COUNT(*) FROM alerts",
                    $crate::sql::ALERT_COLUMNS
                ));
                conditions(&mut query);
                query.push(") AS total FROM alerts");
                conditions(&mut query);
                query
                    .push(" ORDER BY created_at DESC, id LIMIT ")
                    .push_bind(i64::from(page.limit))
                    .push(" OFFSET ")
                    .push_bind(page.offset as i64);
                let rows: Vec<$crate::sql::AlertPageRow> =
                    query.build_query_as().fetch_all(&self.pool).await?;
                let count = async {
                    let mut query = sqlx::QueryBuilder::<$db>::new("SELECT COUNT(*) FROM alerts");
                    conditions(&mut query);
                    Ok::<i64, $crate::StoreError>(
                        query.build_query_scalar().fetch_one(&self.pool).await?,
                    )
                };
                $crate::sql::page_with_total(rows, |row| (row.alert.try_into(), row.total), count)
                    .await
            }

            async fn acknowledge_alert(
                &self,
                id: uuid::Uuid,
                at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Option<plantops_core::alert::Alert>> {
                let row: Option<$crate::sql::AlertRow> = sqlx::query_as(&format!(
                    "UPDATE alerts SET acknowledged_at = COALESCE(acknowledged_at, $1) \
                     WHERE id = $2 RETURNING {}",
                    $crate::sql::ALERT_COLUMNS
                ))
                .bind($crate::sql::Timestamp(at))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn claim_due_alerts(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                lease_until: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> $crate::Result<Vec<$crate::QueuedAlert>> {
                let rows: Vec<$crate::sql::QueuedAlertRow> = sqlx::query_as(&format!(
                    "UPDATE alerts SET next_attempt_at = $1 WHERE id IN \
                     (SELECT id FROM alerts WHERE delivery = 'pending' AND next_attempt_at <= $2 \
                      ORDER BY created_at, id LIMIT $3{}) \
                     RETURNING {}, attempts",
                    Self::SKIP_LOCKED,
                    $crate::sql::ALERT_COLUMNS
                ))
                .bind($crate::sql::Timestamp(lease_until))
                .bind($crate::sql::Timestamp(now))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                let mut claimed = rows
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<$crate::Result<Vec<$crate::QueuedAlert>>>()?;
                // RETURNING keeps no order.
                claimed.sort_by_key(|q| (q.alert.created_at, q.alert.id));
                Ok(claimed)
            }

            async fn update_delivery(&self, update: &$crate::DeliveryUpdate) -> $crate::Result<()> {
                sqlx::query(
                    "UPDATE alerts SET delivery = $1, attempts = $2, next_attempt_at = $3 \
                     WHERE id = $4",
                )
                .bind(update.delivery.as_str())
                .bind(i32::try_from(update.attempts).unwrap_or(i32::MAX))
                .bind($crate::sql::Timestamp(update.next_attempt_at))
                .bind(update.id)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn count_pending_alerts(&self) -> $crate::Result<u64> {
                let pending: i64 =
                    sqlx::query_scalar(
                        "SELECT (SELECT count(*) FROM alerts WHERE delivery = 'pending') \
                         + (SELECT count(*) FROM channel_deliveries WHERE delivery = 'pending')",
                    )
                        .fetch_one(&self.pool)
                        .await?;
                Ok(u64::try_from(pending).unwrap_or(0))
            }
        }

        #[async_trait::async_trait]
        impl $crate::CarePlanStore for $store {
            async fn insert_care_plan(&self, plan: &$crate::StoredCarePlan) -> $crate::Result<()> {
                sqlx::query(&format!(
                    "INSERT INTO care_plans ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    $crate::sql::CARE_PLAN_COLUMNS
                ))
                .bind(plan.id)
                .bind(plan.plant_id)
                .bind(sqlx::types::Json(&plan.plan))
                .bind(&plan.provider)
                .bind(&plan.model)
                .bind(&plan.reason)
                .bind($crate::sql::Timestamp(plan.created_at))
                .bind(plan.input_tokens.map(|n| i32::try_from(n).unwrap_or(i32::MAX)))
                .bind(plan.output_tokens.map(|n| i32::try_from(n).unwrap_or(i32::MAX)))
                .bind(plan.duration_ms.map(|n| i64::try_from(n).unwrap_or(i64::MAX)))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn care_plans(
                &self,
                plant_id: uuid::Uuid,
                limit: u32,
            ) -> $crate::Result<Vec<$crate::StoredCarePlan>> {
                let rows: Vec<$crate::sql::CarePlanRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM care_plans WHERE plant_id = $1 \
                     ORDER BY created_at DESC LIMIT $2",
                    $crate::sql::CARE_PLAN_COLUMNS
                ))
                .bind(plant_id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn care_plan_ages(
                &self,
            ) -> $crate::Result<std::collections::HashMap<uuid::Uuid, chrono::DateTime<chrono::Utc>>>
            {
                let rows: Vec<(uuid::Uuid, $crate::sql::Timestamp)> = sqlx::query_as(
                    "SELECT plant_id, MAX(created_at) FROM care_plans GROUP BY plant_id",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(|(plant_id, at)| (plant_id, at.0)).collect())
            }
        }

        #[async_trait::async_trait]
        impl $crate::SettingStore for $store {
            async fn get_setting(&self, key: &str) -> $crate::Result<Option<String>> {
                Ok(sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn put_settings(&self, changes: &[(&str, Option<&str>)]) -> $crate::Result<()> {
                $crate::ChannelStore::put_sealed(self, changes, &[]).await
            }
        }
    };
}

pub(crate) use shared_store;

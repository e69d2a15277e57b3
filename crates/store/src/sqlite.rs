//! SQLite backend: the one-binary default. WAL mode so readers never wait
//! for the ingest writer; times are stored as Unix milliseconds.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use plantops_core::{Device, DeviceStatus, Measurements, Plant, Reading, Thresholds};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use uuid::Uuid;

use crate::{
    parse_delivery, parse_kind, parse_metric, parse_side, parse_status, side_str, to_u64,
    Aggregate, AlertFilter, Backend, DeliveryUpdate, DeviceCredentials, Page, Presence,
    QueuedAlert, Registration, Result, SeriesPoint, StateChange, Store, StoreError, StoredCarePlan,
    ALERT_COLUMNS,
};
use plantops_core::alert::{Alert, MetricState};
use plantops_core::Metric;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite allows 32766 bound parameters per statement.
const MAX_BINDS: usize = 32766;
const READINGS_PER_INSERT: usize = MAX_BINDS / 7;

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_millis(ms: i64) -> Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms}")))
}

fn json<T: serde::Serialize>(value: &Option<T>) -> Result<Option<String>> {
    value
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(raw: Option<String>) -> Result<Option<T>> {
    raw.map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The page of [`Store::plant_history`], read on a connection sqlx holds
/// locked for us.
fn read_history(
    connection: &rusqlite::Connection,
    plant_id: Uuid,
    since: i64,
    limit: u32,
) -> Result<Vec<Reading>> {
    let mut statement = connection.prepare(
        "SELECT time, device_id, soil_moisture, temperature, humidity, light_level \
             FROM readings WHERE plant_id = ?1 AND time >= ?2 ORDER BY time DESC LIMIT ?3",
    )?;
    let mut rows = statement.query(rusqlite::params![
        plant_id.as_bytes().as_slice(),
        since,
        limit
    ])?;
    let mut readings = Vec::new();
    while let Some(row) = rows.next()? {
        let device: [u8; 16] = row.get(1)?;
        readings.push(Reading {
            time: from_millis(row.get(0)?)?,
            device_id: Uuid::from_bytes(device),
            plant_id: Some(plant_id),
            values: Measurements {
                soil_moisture: row.get(2)?,
                temperature: row.get(3)?,
                humidity: row.get(4)?,
                light_level: row.get(5)?,
            },
        });
    }
    Ok(readings)
}

fn plant_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Plant> {
    Ok(Plant {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        species: row.try_get("species")?,
        thresholds: from_json::<Thresholds>(row.try_get("thresholds")?)?,
        alert_cooldown_minutes: row.try_get::<i64, _>("alert_cooldown_minutes")? as u32,
        created_at: from_millis(row.try_get("created_at")?)?,
        updated_at: from_millis(row.try_get("updated_at")?)?,
    })
}

const DEVICE_COLUMNS: &str = "id, mac_address, mqtt_username, plant_id, status, firmware_version, \
                              sensor_types, last_seen_at, created_at";

fn device_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Device> {
    Ok(Device {
        id: row.try_get("id")?,
        mac_address: row.try_get("mac_address")?,
        mqtt_username: row.try_get("mqtt_username")?,
        plant_id: row.try_get("plant_id")?,
        status: parse_status(row.try_get("status")?)?,
        firmware_version: row.try_get("firmware_version")?,
        sensor_types: from_json(row.try_get("sensor_types")?)?,
        last_seen_at: row
            .try_get::<Option<i64>, _>("last_seen_at")?
            .map(from_millis)
            .transpose()?,
        created_at: from_millis(row.try_get("created_at")?)?,
    })
}

const READING_COLUMNS: &str =
    "time, device_id, plant_id, soil_moisture, temperature, humidity, light_level";

fn reading_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Reading> {
    Ok(Reading {
        time: from_millis(row.try_get("time")?)?,
        device_id: row.try_get("device_id")?,
        plant_id: row.try_get("plant_id")?,
        values: Measurements {
            soil_moisture: row.try_get("soil_moisture")?,
            temperature: row.try_get("temperature")?,
            humidity: row.try_get("humidity")?,
            light_level: row.try_get("light_level")?,
        },
    })
}

fn alert_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Alert> {
    Ok(Alert {
        id: row.try_get("id")?,
        plant_id: row.try_get("plant_id")?,
        device_id: row.try_get("device_id")?,
        kind: parse_kind(row.try_get("kind")?)?,
        metric: parse_metric(row.try_get("metric")?)?,
        value: row.try_get("value")?,
        threshold: row.try_get("threshold")?,
        direction: parse_side(row.try_get("direction")?)?,
        message: row.try_get("message")?,
        created_at: from_millis(row.try_get("created_at")?)?,
        delivery: parse_delivery(row.try_get("delivery")?)?,
        acknowledged_at: row
            .try_get::<Option<i64>, _>("acknowledged_at")?
            .map(from_millis)
            .transpose()?,
    })
}

fn aggregate(row: &sqlx::sqlite::SqliteRow, metric: &str) -> Result<Option<Aggregate>> {
    let min: Option<f64> = row.try_get(format!("{metric}_min").as_str())?;
    let avg: Option<f64> = row.try_get(format!("{metric}_avg").as_str())?;
    let max: Option<f64> = row.try_get(format!("{metric}_max").as_str())?;
    Ok(Aggregate::from_parts(min, avg, max))
}

fn push_ids<'a>(builder: &mut QueryBuilder<'a, Sqlite>, ids: &'a [Uuid]) {
    builder.push("(");
    let mut list = builder.separated(", ");
    for id in ids {
        list.push_bind(id);
    }
    list.push_unseparated(")");
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn is_migrated(&self) -> Result<bool> {
        let applied: Vec<i64> =
            match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
            {
                Ok(versions) => versions,
                Err(sqlx::Error::Database(_)) => return Ok(false),
                Err(e) => return Err(e.into()),
            };
        Ok(MIGRATOR.iter().all(|m| applied.contains(&m.version)))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_plant(&self, plant: &Plant) -> Result<()> {
        sqlx::query(
            "INSERT INTO plants (id, name, species, thresholds, alert_cooldown_minutes, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(plant.id)
        .bind(&plant.name)
        .bind(&plant.species)
        .bind(json(&plant.thresholds)?)
        .bind(i64::from(plant.alert_cooldown_minutes))
        .bind(millis(plant.created_at))
        .bind(millis(plant.updated_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_plants(&self, page: Page) -> Result<(Vec<Plant>, u64)> {
        // The total rides along with the page: one statement, one snapshot,
        // one round trip to sqlx's worker instead of a transaction's four.
        let rows = sqlx::query(
            "SELECT *, (SELECT COUNT(*) FROM plants) AS total FROM plants \
             ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
        )
        .bind(i64::from(page.limit))
        .bind(page.offset as i64)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = match rows.first() {
            Some(row) => row.try_get("total")?,
            // A page past the end carries no total.
            None => {
                sqlx::query_scalar("SELECT COUNT(*) FROM plants")
                    .fetch_one(&self.pool)
                    .await?
            }
        };
        let plants = rows.iter().map(plant_from_row).collect::<Result<_>>()?;
        Ok((plants, to_u64(total)))
    }

    async fn get_plant(&self, id: Uuid) -> Result<Option<Plant>> {
        sqlx::query("SELECT * FROM plants WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(plant_from_row)
            .transpose()
    }

    async fn update_plant(&self, plant: &Plant) -> Result<bool> {
        let result = sqlx::query(
            "UPDATE plants SET name = ?, species = ?, thresholds = ?, alert_cooldown_minutes = ?, \
             updated_at = ? WHERE id = ?",
        )
        .bind(&plant.name)
        .bind(&plant.species)
        .bind(json(&plant.thresholds)?)
        .bind(i64::from(plant.alert_cooldown_minutes))
        .bind(millis(plant.updated_at))
        .bind(plant.id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn delete_plant(&self, id: Uuid) -> Result<bool> {
        // ON DELETE SET NULL unassigns the plant's devices.
        let result = sqlx::query("DELETE FROM plants WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn register_device(&self, device: &Device, password_hash: &str) -> Result<Registration> {
        let inserted = sqlx::query(
            "INSERT INTO devices (id, mac_address, mqtt_username, password_hash, plant_id, status, \
             firmware_version, sensor_types, last_seen_at, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (mac_address) DO NOTHING",
        )
        .bind(device.id)
        .bind(&device.mac_address)
        .bind(&device.mqtt_username)
        .bind(password_hash)
        .bind(device.plant_id)
        .bind(device.status.as_str())
        .bind(&device.firmware_version)
        .bind(json(&device.sensor_types)?)
        .bind(device.last_seen_at.map(millis))
        .bind(millis(device.created_at))
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Registration::Created(device.clone()));
        }
        let row = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE mac_address = ?"
        ))
        .bind(&device.mac_address)
        .fetch_one(&self.pool)
        .await?;
        Ok(Registration::Existing(device_from_row(&row)?))
    }

    async fn list_devices(
        &self,
        page: Page,
        status: Option<DeviceStatus>,
    ) -> Result<(Vec<Device>, u64)> {
        // One read transaction: the page and the total see the same snapshot.
        let mut tx = self.pool.begin().await?;
        let status = status.map(DeviceStatus::as_str);
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE ?1 IS NULL OR status = ?1 \
             ORDER BY created_at DESC, id LIMIT ?2 OFFSET ?3"
        ))
        .bind(status)
        .bind(i64::from(page.limit))
        .bind(page.offset as i64)
        .fetch_all(&mut *tx)
        .await?;
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE ?1 IS NULL OR status = ?1")
                .bind(status)
                .fetch_one(&mut *tx)
                .await?;
        let devices = rows.iter().map(device_from_row).collect::<Result<_>>()?;
        tx.commit().await?;
        Ok((devices, to_u64(total)))
    }

    async fn get_device(&self, id: Uuid) -> Result<Option<Device>> {
        sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(device_from_row)
        .transpose()
    }

    async fn plant_devices(&self, plant_id: Uuid) -> Result<Vec<Device>> {
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE plant_id = ? ORDER BY created_at DESC, id"
        ))
        .bind(plant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device_from_row).collect()
    }

    async fn device_counts(&self, plant_ids: &[Uuid]) -> Result<HashMap<Uuid, u64>> {
        if plant_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut query =
            QueryBuilder::new("SELECT plant_id, COUNT(*) AS n FROM devices WHERE plant_id IN ");
        push_ids(&mut query, plant_ids);
        query.push(" GROUP BY plant_id");
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| Ok((row.try_get("plant_id")?, to_u64(row.try_get("n")?))))
            .collect()
    }

    async fn device_credentials(&self, mqtt_username: &str) -> Result<Option<DeviceCredentials>> {
        let row = sqlx::query("SELECT id, password_hash FROM devices WHERE mqtt_username = ?")
            .bind(mqtt_username)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(DeviceCredentials {
                device_id: row.try_get("id")?,
                password_hash: row.try_get("password_hash")?,
            })
        })
        .transpose()
    }

    async fn set_device_password(&self, id: Uuid, password_hash: &str) -> Result<bool> {
        let result = sqlx::query("UPDATE devices SET password_hash = ? WHERE id = ?")
            .bind(password_hash)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn delete_device(&self, id: Uuid) -> Result<bool> {
        let result = sqlx::query("DELETE FROM devices WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn assign_device(&self, id: Uuid, plant_id: Option<Uuid>) -> Result<bool> {
        let result = sqlx::query(
            "UPDATE devices SET plant_id = ?1 WHERE id = ?2 \
             AND (?1 IS NULL OR EXISTS (SELECT 1 FROM plants WHERE id = ?1))",
        )
        .bind(plant_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn device_plants(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Option<Uuid>>> {
        let mut map = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_BINDS - 1) {
            let mut query = QueryBuilder::new("SELECT id, plant_id FROM devices WHERE id IN ");
            push_ids(&mut query, chunk);
            // One id list per batch: not worth a cached statement each.
            for row in query
                .build()
                .persistent(false)
                .fetch_all(&self.pool)
                .await?
            {
                map.insert(row.try_get("id")?, row.try_get("plant_id")?);
            }
        }
        Ok(map)
    }

    async fn set_devices_status(&self, ids: &[Uuid], status: DeviceStatus) -> Result<()> {
        for chunk in ids.chunks(MAX_BINDS - 1) {
            let mut query = QueryBuilder::new("UPDATE devices SET status = ");
            query.push_bind(status.as_str());
            query.push(" WHERE id IN ");
            push_ids(&mut query, chunk);
            query.build().persistent(false).execute(&self.pool).await?;
        }
        Ok(())
    }

    async fn commit_batch(&self, readings: &[Reading], seen: &[Presence]) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut inserted = 0;
        for chunk in readings.chunks(READINGS_PER_INSERT) {
            let mut query =
                QueryBuilder::<Sqlite>::new(format!("INSERT INTO readings ({READING_COLUMNS}) "));
            query.push_values(chunk, |mut row, r| {
                row.push_bind(millis(r.time))
                    .push_bind(r.device_id)
                    .push_bind(r.plant_id)
                    .push_bind(r.values.soil_moisture)
                    .push_bind(r.values.temperature)
                    .push_bind(r.values.humidity)
                    .push_bind(r.values.light_level);
            });
            query.push(" ON CONFLICT (device_id, time) DO NOTHING");
            // Not cached: batch lengths vary, and every cached multi-row
            // statement keeps its compiled program (tens of MB under load).
            inserted += query
                .build()
                .persistent(false)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        // One statement per batch: each is a round trip to sqlx's SQLite
        // thread.
        for chunk in seen.chunks(MAX_BINDS / 2) {
            let mut query = QueryBuilder::<Sqlite>::new("WITH seen (id, seen_at) AS (");
            query.push_values(chunk, |mut row, presence| {
                row.push_bind(presence.device_id)
                    .push_bind(millis(presence.seen_at));
            });
            query.push(
                ") UPDATE devices SET status = 'online', \
                 last_seen_at = MAX(COALESCE(devices.last_seen_at, 0), seen.seen_at) \
                 FROM seen WHERE devices.id = seen.id",
            );
            query.build().persistent(false).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn latest_device_reading(&self, device_id: Uuid) -> Result<Option<Reading>> {
        sqlx::query(&format!(
            "SELECT {READING_COLUMNS} FROM readings WHERE device_id = ? ORDER BY time DESC LIMIT 1"
        ))
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(reading_from_row)
        .transpose()
    }

    async fn latest_plant_readings(&self, plant_ids: &[Uuid]) -> Result<HashMap<Uuid, Reading>> {
        let mut latest = HashMap::with_capacity(plant_ids.len());
        // One statement, one indexed probe per plant inside SQLite: a round
        // trip per plant costs more than the probes themselves.
        for chunk in plant_ids.chunks(MAX_BINDS - 1) {
            let mut query = QueryBuilder::<Sqlite>::new("WITH wanted (id) AS (");
            query.push_values(chunk, |mut row, id| {
                row.push_bind(id);
            });
            query.push(format!(
                ") SELECT {READING_COLUMNS} FROM wanted JOIN readings \
                 ON readings.plant_id = wanted.id AND readings.time = \
                 (SELECT MAX(time) FROM readings WHERE plant_id = wanted.id)"
            ));
            for row in query
                .build()
                .persistent(false)
                .fetch_all(&self.pool)
                .await?
            {
                let reading = reading_from_row(&row)?;
                if let Some(plant_id) = reading.plant_id {
                    latest.insert(plant_id, reading);
                }
            }
        }
        Ok(latest)
    }

    async fn plant_history(
        &self,
        plant_id: Uuid,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Reading>> {
        // sqlx hands SQLite rows over one by one from its worker thread, a
        // channel send, a wake-up and an allocation per row: for a page of
        // 10,000 readings that costs several times the query. Reading the
        // page through the same pooled connection with rusqlite, on a
        // blocking thread, steps through the rows directly.
        let mut connection = self.pool.acquire().await?;
        let since = millis(since);
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let mut locked = runtime.block_on(connection.lock_handle())?;
            // SAFETY: the handle stays valid and exclusively ours while
            // `locked` holds the connection's lock, which outlives `raw`
            // (dropped at the end of this block); `from_handle` never closes it.
            let raw =
                unsafe { rusqlite::Connection::from_handle(locked.as_raw_handle().as_ptr()) }?;
            read_history(&raw, plant_id, since, limit)
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("history reader stopped: {e}")))?
    }

    async fn plant_series(
        &self,
        plant_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket_seconds: i64,
    ) -> Result<Vec<SeriesPoint>> {
        let rows = sqlx::query(
            "SELECT (time / ?1) * ?1 AS bucket, COUNT(*) AS n, \
             MIN(soil_moisture) AS soil_moisture_min, AVG(soil_moisture) AS soil_moisture_avg, MAX(soil_moisture) AS soil_moisture_max, \
             MIN(temperature) AS temperature_min, AVG(temperature) AS temperature_avg, MAX(temperature) AS temperature_max, \
             MIN(humidity) AS humidity_min, AVG(humidity) AS humidity_avg, MAX(humidity) AS humidity_max, \
             MIN(light_level) AS light_level_min, AVG(light_level) AS light_level_avg, MAX(light_level) AS light_level_max \
             FROM readings WHERE plant_id = ?2 AND time >= ?3 AND time < ?4 \
             GROUP BY bucket ORDER BY bucket",
        )
        .bind(bucket_seconds * 1000)
        .bind(plant_id)
        .bind(millis(from))
        .bind(millis(to))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SeriesPoint {
                    time: from_millis(row.try_get("bucket")?)?,
                    count: to_u64(row.try_get("n")?),
                    soil_moisture: aggregate(row, "soil_moisture")?,
                    temperature: aggregate(row, "temperature")?,
                    humidity: aggregate(row, "humidity")?,
                    light_level: aggregate(row, "light_level")?,
                })
            })
            .collect()
    }

    async fn count_readings(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM readings")
            .fetch_one(&self.pool)
            .await?;
        Ok(to_u64(n))
    }

    async fn prune_readings(&self, before: DateTime<Utc>) -> Result<u64> {
        let result = sqlx::query("DELETE FROM readings WHERE time < ?")
            .bind(millis(before))
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    async fn metric_states(&self, plant_id: Uuid) -> Result<HashMap<Metric, MetricState>> {
        let rows = sqlx::query("SELECT * FROM alert_states WHERE plant_id = ?")
            .bind(plant_id)
            .fetch_all(&self.pool)
            .await?;
        let mut states = HashMap::new();
        for row in rows {
            if let Some(metric) = parse_metric(row.try_get("metric")?)? {
                let state = MetricState {
                    breached: parse_side(row.try_get("breached")?)?,
                    notified: row.try_get::<i64, _>("notified")? != 0,
                    last_notified_at: row
                        .try_get::<Option<i64>, _>("last_notified_at")?
                        .map(from_millis)
                        .transpose()?,
                };
                states.insert(metric, state);
            }
        }
        Ok(states)
    }

    async fn record_alerts(&self, states: &[StateChange], alerts: &[Alert]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for change in states {
            sqlx::query(
                "INSERT INTO alert_states (plant_id, metric, breached, notified, last_notified_at) \
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (plant_id, metric) DO UPDATE SET \
                 breached = excluded.breached, notified = excluded.notified, \
                 last_notified_at = excluded.last_notified_at",
            )
            .bind(change.plant_id)
            .bind(change.metric.name())
            .bind(change.state.breached.map(side_str))
            .bind(i64::from(change.state.notified))
            .bind(change.state.last_notified_at.map(millis))
            .execute(&mut *tx)
            .await?;
        }
        for alert in alerts {
            sqlx::query(&format!(
                "INSERT INTO alerts ({ALERT_COLUMNS}, attempts, next_attempt_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)"
            ))
            .bind(alert.id)
            .bind(alert.plant_id)
            .bind(alert.device_id)
            .bind(alert.kind.as_str())
            .bind(alert.metric.map(Metric::name))
            .bind(alert.value)
            .bind(alert.threshold)
            .bind(alert.direction.map(side_str))
            .bind(&alert.message)
            .bind(millis(alert.created_at))
            .bind(alert.delivery.as_str())
            .bind(alert.acknowledged_at.map(millis))
            .bind(millis(alert.created_at))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_alerts(&self, filter: &AlertFilter, page: Page) -> Result<(Vec<Alert>, u64)> {
        // One read transaction: the page and the total see the same snapshot.
        let mut tx = self.pool.begin().await?;
        const WHERE: &str = "(?1 IS NULL OR plant_id = ?1) AND (?2 IS NULL OR kind = ?2) \
                             AND (?3 IS NULL OR created_at >= ?3)";
        let kind = filter.kind.map(|k| k.as_str());
        let since = filter.since.map(millis);
        let rows = sqlx::query(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE {WHERE} \
             ORDER BY created_at DESC, id LIMIT ?4 OFFSET ?5"
        ))
        .bind(filter.plant_id)
        .bind(kind)
        .bind(since)
        .bind(i64::from(page.limit))
        .bind(page.offset as i64)
        .fetch_all(&mut *tx)
        .await?;
        let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM alerts WHERE {WHERE}"))
            .bind(filter.plant_id)
            .bind(kind)
            .bind(since)
            .fetch_one(&mut *tx)
            .await?;
        let alerts = rows.iter().map(alert_from_row).collect::<Result<_>>()?;
        tx.commit().await?;
        Ok((alerts, to_u64(total)))
    }

    async fn acknowledge_alert(&self, id: Uuid, at: DateTime<Utc>) -> Result<Option<Alert>> {
        sqlx::query(
            "UPDATE alerts SET acknowledged_at = COALESCE(acknowledged_at, ?) WHERE id = ?",
        )
        .bind(millis(at))
        .bind(id)
        .execute(&self.pool)
        .await?;
        sqlx::query(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(alert_from_row)
            .transpose()
    }

    async fn due_alerts(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<QueuedAlert>> {
        let rows = sqlx::query(&format!(
            "SELECT {ALERT_COLUMNS}, attempts FROM alerts \
             WHERE delivery = 'pending' AND next_attempt_at <= ? \
             ORDER BY created_at, id LIMIT ?"
        ))
        .bind(millis(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(QueuedAlert {
                    alert: alert_from_row(row)?,
                    attempts: row.try_get::<i64, _>("attempts")? as u32,
                })
            })
            .collect()
    }

    async fn update_delivery(&self, update: &DeliveryUpdate) -> Result<()> {
        sqlx::query(
            "UPDATE alerts SET delivery = ?, attempts = ?, next_attempt_at = ? WHERE id = ?",
        )
        .bind(update.delivery.as_str())
        .bind(i64::from(update.attempts))
        .bind(millis(update.next_attempt_at))
        .bind(update.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn insert_care_plan(&self, plan: &StoredCarePlan) -> Result<()> {
        sqlx::query(
            "INSERT INTO care_plans (id, plant_id, plan, provider, model, reason, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(plan.id)
        .bind(plan.plant_id)
        .bind(json(&Some(&plan.plan))?)
        .bind(&plan.provider)
        .bind(&plan.model)
        .bind(&plan.reason)
        .bind(millis(plan.created_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn care_plans(&self, plant_id: Uuid, limit: u32) -> Result<Vec<StoredCarePlan>> {
        let rows = sqlx::query(
            "SELECT id, plant_id, plan, provider, model, reason, created_at FROM care_plans \
             WHERE plant_id = ? ORDER BY created_at DESC LIMIT ?",
        )
        .bind(plant_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredCarePlan {
                    id: row.try_get("id")?,
                    plant_id: row.try_get("plant_id")?,
                    plan: from_json(row.try_get("plan")?)?
                        .ok_or_else(|| StoreError::Corrupt("empty care plan".into()))?,
                    provider: row.try_get("provider")?,
                    model: row.try_get("model")?,
                    reason: row.try_get("reason")?,
                    created_at: from_millis(row.try_get("created_at")?)?,
                })
            })
            .collect()
    }

    async fn care_plan_ages(&self) -> Result<HashMap<Uuid, DateTime<Utc>>> {
        let rows: Vec<(Uuid, i64)> =
            sqlx::query_as("SELECT plant_id, MAX(created_at) FROM care_plans GROUP BY plant_id")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(plant_id, at)| Ok((plant_id, from_millis(at)?)))
            .collect()
    }

    async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn put_setting(&self, key: &str, value: Option<&str>) -> Result<()> {
        match value {
            Some(value) => sqlx::query(
                "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(key)
            .bind(value)
            .bind(millis(Utc::now())),
            None => sqlx::query("DELETE FROM settings WHERE key = ?").bind(key),
        }
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

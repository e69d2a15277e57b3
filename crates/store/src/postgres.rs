//! PostgreSQL backend. Readings become a TimescaleDB hypertable when the
//! extension is available (see the migrations); the queries here run on
//! both plain PostgreSQL and TimescaleDB.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use plantops_core::{Device, DeviceStatus, Measurements, Plant, Reading, Thresholds};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::Row;
use uuid::Uuid;

use crate::{
    parse_delivery, parse_kind, parse_metric, parse_side, parse_status, side_str, to_u64,
    Aggregate, AlertFilter, Backend, DeliveryUpdate, DeviceCredentials, Page, Presence,
    QueuedAlert, Registration, Result, SeriesPoint, StateChange, Store, StoredCarePlan,
    ALERT_COLUMNS,
};
use plantops_core::alert::{Alert, MetricState};
use plantops_core::Metric;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A read-only transaction with one snapshot, so a page of rows and
    /// its total agree.
    async fn snapshot(&self) -> Result<sqlx::Transaction<'_, sqlx::Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

fn plant_from_row(row: &PgRow) -> Result<Plant> {
    Ok(Plant {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        species: row.try_get("species")?,
        thresholds: row
            .try_get::<Option<Json<Thresholds>>, _>("thresholds")?
            .map(|j| j.0),
        alert_cooldown_minutes: row.try_get::<i32, _>("alert_cooldown_minutes")? as u32,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

const DEVICE_COLUMNS: &str = "id, mac_address, mqtt_username, plant_id, status, firmware_version, \
                              sensor_types, last_seen_at, created_at";

fn device_from_row(row: &PgRow) -> Result<Device> {
    Ok(Device {
        id: row.try_get("id")?,
        mac_address: row.try_get("mac_address")?,
        mqtt_username: row.try_get("mqtt_username")?,
        plant_id: row.try_get("plant_id")?,
        status: parse_status(row.try_get("status")?)?,
        firmware_version: row.try_get("firmware_version")?,
        sensor_types: row
            .try_get::<Option<Json<Vec<String>>>, _>("sensor_types")?
            .map(|j| j.0),
        last_seen_at: row.try_get("last_seen_at")?,
        created_at: row.try_get("created_at")?,
    })
}

const READING_COLUMNS: &str =
    "time, device_id, plant_id, soil_moisture, temperature, humidity, light_level";

fn reading_from_row(row: &PgRow) -> Result<Reading> {
    Ok(Reading {
        time: row.try_get("time")?,
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

fn alert_from_row(row: &PgRow) -> Result<Alert> {
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
        created_at: row.try_get("created_at")?,
        delivery: parse_delivery(row.try_get("delivery")?)?,
        acknowledged_at: row.try_get("acknowledged_at")?,
    })
}

fn aggregate(row: &PgRow, metric: &str) -> Result<Option<Aggregate>> {
    let min: Option<f64> = row.try_get(format!("{metric}_min").as_str())?;
    let avg: Option<f64> = row.try_get(format!("{metric}_avg").as_str())?;
    let max: Option<f64> = row.try_get(format!("{metric}_max").as_str())?;
    Ok(Aggregate::from_parts(min, avg, max))
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> Result<()> {
        // sqlx holds a PostgreSQL advisory lock while it migrates, so two
        // processes starting together apply each migration once.
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
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(plant.id)
        .bind(&plant.name)
        .bind(&plant.species)
        .bind(plant.thresholds.map(Json))
        .bind(plant.alert_cooldown_minutes as i32)
        .bind(plant.created_at)
        .bind(plant.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_plants(&self, page: Page) -> Result<(Vec<Plant>, u64)> {
        let mut tx = self.snapshot().await?;
        let rows =
            sqlx::query("SELECT * FROM plants ORDER BY created_at DESC, id LIMIT $1 OFFSET $2")
                .bind(i64::from(page.limit))
                .bind(page.offset as i64)
                .fetch_all(&mut *tx)
                .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM plants")
            .fetch_one(&mut *tx)
            .await?;
        let plants = rows.iter().map(plant_from_row).collect::<Result<_>>()?;
        tx.commit().await?;
        Ok((plants, to_u64(total)))
    }

    async fn get_plant(&self, id: Uuid) -> Result<Option<Plant>> {
        sqlx::query("SELECT * FROM plants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(plant_from_row)
            .transpose()
    }

    async fn update_plant(&self, plant: &Plant) -> Result<bool> {
        let result = sqlx::query(
            "UPDATE plants SET name = $1, species = $2, thresholds = $3, alert_cooldown_minutes = $4, \
             updated_at = $5 WHERE id = $6",
        )
        .bind(&plant.name)
        .bind(&plant.species)
        .bind(plant.thresholds.map(Json))
        .bind(plant.alert_cooldown_minutes as i32)
        .bind(plant.updated_at)
        .bind(plant.id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn delete_plant(&self, id: Uuid) -> Result<bool> {
        // ON DELETE SET NULL unassigns the plant's devices.
        let result = sqlx::query("DELETE FROM plants WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn register_device(&self, device: &Device, password_hash: &str) -> Result<Registration> {
        let inserted = sqlx::query(
            "INSERT INTO devices (id, mac_address, mqtt_username, password_hash, plant_id, status, \
             firmware_version, sensor_types, last_seen_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (mac_address) DO NOTHING",
        )
        .bind(device.id)
        .bind(&device.mac_address)
        .bind(&device.mqtt_username)
        .bind(password_hash)
        .bind(device.plant_id)
        .bind(device.status.as_str())
        .bind(&device.firmware_version)
        .bind(device.sensor_types.as_ref().map(Json))
        .bind(device.last_seen_at)
        .bind(device.created_at)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Registration::Created(device.clone()));
        }
        let row = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE mac_address = $1"
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
        let mut tx = self.snapshot().await?;
        let status = status.map(DeviceStatus::as_str);
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE $1::text IS NULL OR status = $1 \
             ORDER BY created_at DESC, id LIMIT $2 OFFSET $3"
        ))
        .bind(status)
        .bind(i64::from(page.limit))
        .bind(page.offset as i64)
        .fetch_all(&mut *tx)
        .await?;
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM devices WHERE $1::text IS NULL OR status = $1",
        )
        .bind(status)
        .fetch_one(&mut *tx)
        .await?;
        let devices = rows.iter().map(device_from_row).collect::<Result<_>>()?;
        tx.commit().await?;
        Ok((devices, to_u64(total)))
    }

    async fn get_device(&self, id: Uuid) -> Result<Option<Device>> {
        sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"
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
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE plant_id = $1 ORDER BY created_at DESC, id"
        ))
        .bind(plant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device_from_row).collect()
    }

    async fn device_counts(&self, plant_ids: &[Uuid]) -> Result<HashMap<Uuid, u64>> {
        let rows = sqlx::query(
            "SELECT plant_id, COUNT(*) AS n FROM devices WHERE plant_id = ANY($1) GROUP BY plant_id",
        )
        .bind(plant_ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("plant_id")?, to_u64(row.try_get("n")?))))
            .collect()
    }

    async fn device_credentials(&self, mqtt_username: &str) -> Result<Option<DeviceCredentials>> {
        let row = sqlx::query("SELECT id, password_hash FROM devices WHERE mqtt_username = $1")
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
        let result = sqlx::query("UPDATE devices SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn delete_device(&self, id: Uuid) -> Result<bool> {
        let result = sqlx::query("DELETE FROM devices WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn assign_device(&self, id: Uuid, plant_id: Option<Uuid>) -> Result<bool> {
        let result = sqlx::query(
            "UPDATE devices SET plant_id = $1 WHERE id = $2 \
             AND ($1::uuid IS NULL OR EXISTS (SELECT 1 FROM plants WHERE id = $1))",
        )
        .bind(plant_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn device_plants(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Option<Uuid>>> {
        let rows = sqlx::query("SELECT id, plant_id FROM devices WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("id")?, row.try_get("plant_id")?)))
            .collect()
    }

    async fn set_devices_status(&self, ids: &[Uuid], status: DeviceStatus) -> Result<()> {
        sqlx::query("UPDATE devices SET status = $1 WHERE id = ANY($2)")
            .bind(status.as_str())
            .bind(ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn commit_batch(&self, readings: &[Reading], seen: &[Presence]) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        // One statement per batch: columns travel as arrays.
        let column = |f: fn(&Reading) -> Option<f64>| readings.iter().map(f).collect::<Vec<_>>();
        let inserted = sqlx::query(&format!(
            "INSERT INTO readings ({READING_COLUMNS}) \
             SELECT * FROM UNNEST($1::timestamptz[], $2::uuid[], $3::uuid[], \
             $4::float8[], $5::float8[], $6::float8[], $7::float8[]) \
             ON CONFLICT (device_id, time) DO NOTHING"
        ))
        .bind(readings.iter().map(|r| r.time).collect::<Vec<_>>())
        .bind(readings.iter().map(|r| r.device_id).collect::<Vec<_>>())
        .bind(readings.iter().map(|r| r.plant_id).collect::<Vec<_>>())
        .bind(column(|r| r.values.soil_moisture))
        .bind(column(|r| r.values.temperature))
        .bind(column(|r| r.values.humidity))
        .bind(column(|r| r.values.light_level))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if !seen.is_empty() {
            // Sorted so concurrent batches lock device rows in one order.
            let mut seen = seen.to_vec();
            seen.sort_by_key(|p| p.device_id);
            sqlx::query(
                "UPDATE devices AS d SET status = 'online', \
                 last_seen_at = GREATEST(d.last_seen_at, v.seen_at) \
                 FROM UNNEST($1::uuid[], $2::timestamptz[]) AS v(id, seen_at) WHERE d.id = v.id",
            )
            .bind(seen.iter().map(|p| p.device_id).collect::<Vec<_>>())
            .bind(seen.iter().map(|p| p.seen_at).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn latest_device_reading(&self, device_id: Uuid) -> Result<Option<Reading>> {
        sqlx::query(&format!(
            "SELECT {READING_COLUMNS} FROM readings WHERE device_id = $1 ORDER BY time DESC LIMIT 1"
        ))
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(reading_from_row)
        .transpose()
    }

    async fn latest_plant_readings(&self, plant_ids: &[Uuid]) -> Result<HashMap<Uuid, Reading>> {
        // A lateral index probe per plant, not a scan of all readings.
        let rows = sqlx::query(
            "SELECT r.* FROM UNNEST($1::uuid[]) AS p(id) CROSS JOIN LATERAL \
             (SELECT time, device_id, plant_id, soil_moisture, temperature, humidity, light_level \
              FROM readings WHERE plant_id = p.id ORDER BY time DESC LIMIT 1) AS r",
        )
        .bind(plant_ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let reading = reading_from_row(row)?;
                Ok((reading.plant_id.unwrap_or_default(), reading))
            })
            .collect()
    }

    async fn plant_history(
        &self,
        plant_id: Uuid,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Reading>> {
        let rows = sqlx::query(&format!(
            "SELECT {READING_COLUMNS} FROM readings WHERE plant_id = $1 AND time >= $2 \
             ORDER BY time DESC LIMIT $3"
        ))
        .bind(plant_id)
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(reading_from_row).collect()
    }

    async fn plant_series(
        &self,
        plant_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket_seconds: i64,
    ) -> Result<Vec<SeriesPoint>> {
        let rows = sqlx::query(
            "SELECT to_timestamp(floor(extract(epoch FROM time) / $1) * $1) AS bucket, COUNT(*) AS n, \
             MIN(soil_moisture) AS soil_moisture_min, AVG(soil_moisture) AS soil_moisture_avg, MAX(soil_moisture) AS soil_moisture_max, \
             MIN(temperature) AS temperature_min, AVG(temperature) AS temperature_avg, MAX(temperature) AS temperature_max, \
             MIN(humidity) AS humidity_min, AVG(humidity) AS humidity_avg, MAX(humidity) AS humidity_max, \
             MIN(light_level) AS light_level_min, AVG(light_level) AS light_level_avg, MAX(light_level) AS light_level_max \
             FROM readings WHERE plant_id = $2 AND time >= $3 AND time < $4 \
             GROUP BY bucket ORDER BY bucket",
        )
        .bind(bucket_seconds as f64)
        .bind(plant_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SeriesPoint {
                    time: row.try_get("bucket")?,
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
        let hypertable: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') \
             AND EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                         JOIN pg_inherits i ON i.inhparent = c.oid WHERE c.relname = 'readings')",
        )
        .fetch_one(&self.pool)
        .await?;
        if hypertable {
            // Dropping whole chunks is TimescaleDB's cheap retention.
            sqlx::query("SELECT drop_chunks('readings', older_than => $1)")
                .bind(before)
                .execute(&self.pool)
                .await?;
            return Ok(0);
        }
        let result = sqlx::query("DELETE FROM readings WHERE time < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    async fn metric_states(&self, plant_id: Uuid) -> Result<HashMap<Metric, MetricState>> {
        let rows = sqlx::query("SELECT * FROM alert_states WHERE plant_id = $1")
            .bind(plant_id)
            .fetch_all(&self.pool)
            .await?;
        let mut states = HashMap::new();
        for row in rows {
            if let Some(metric) = parse_metric(row.try_get("metric")?)? {
                let state = MetricState {
                    breached: parse_side(row.try_get("breached")?)?,
                    notified: row.try_get("notified")?,
                    last_notified_at: row.try_get("last_notified_at")?,
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
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (plant_id, metric) DO UPDATE SET \
                 breached = excluded.breached, notified = excluded.notified, \
                 last_notified_at = excluded.last_notified_at",
            )
            .bind(change.plant_id)
            .bind(change.metric.name())
            .bind(change.state.breached.map(side_str))
            .bind(change.state.notified)
            .bind(change.state.last_notified_at)
            .execute(&mut *tx)
            .await?;
        }
        for alert in alerts {
            sqlx::query(&format!(
                "INSERT INTO alerts ({ALERT_COLUMNS}, attempts, next_attempt_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, $10)"
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
            .bind(alert.created_at)
            .bind(alert.delivery.as_str())
            .bind(alert.acknowledged_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_alerts(&self, filter: &AlertFilter, page: Page) -> Result<(Vec<Alert>, u64)> {
        let mut tx = self.snapshot().await?;
        const WHERE: &str =
            "($1::uuid IS NULL OR plant_id = $1) AND ($2::text IS NULL OR kind = $2) \
                             AND ($3::timestamptz IS NULL OR created_at >= $3)";
        let kind = filter.kind.map(|k| k.as_str());
        let rows = sqlx::query(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE {WHERE} \
             ORDER BY created_at DESC, id LIMIT $4 OFFSET $5"
        ))
        .bind(filter.plant_id)
        .bind(kind)
        .bind(filter.since)
        .bind(i64::from(page.limit))
        .bind(page.offset as i64)
        .fetch_all(&mut *tx)
        .await?;
        let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM alerts WHERE {WHERE}"))
            .bind(filter.plant_id)
            .bind(kind)
            .bind(filter.since)
            .fetch_one(&mut *tx)
            .await?;
        let alerts = rows.iter().map(alert_from_row).collect::<Result<_>>()?;
        tx.commit().await?;
        Ok((alerts, to_u64(total)))
    }

    async fn acknowledge_alert(&self, id: Uuid, at: DateTime<Utc>) -> Result<Option<Alert>> {
        sqlx::query(&format!(
            "UPDATE alerts SET acknowledged_at = COALESCE(acknowledged_at, $1) WHERE id = $2 \
             RETURNING {ALERT_COLUMNS}"
        ))
        .bind(at)
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
             WHERE delivery = 'pending' AND next_attempt_at <= $1 \
             ORDER BY created_at, id LIMIT $2"
        ))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(QueuedAlert {
                    alert: alert_from_row(row)?,
                    attempts: row.try_get::<i32, _>("attempts")? as u32,
                })
            })
            .collect()
    }

    async fn update_delivery(&self, update: &DeliveryUpdate) -> Result<()> {
        sqlx::query(
            "UPDATE alerts SET delivery = $1, attempts = $2, next_attempt_at = $3 WHERE id = $4",
        )
        .bind(update.delivery.as_str())
        .bind(update.attempts as i32)
        .bind(update.next_attempt_at)
        .bind(update.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn insert_care_plan(&self, plan: &StoredCarePlan) -> Result<()> {
        sqlx::query(
            "INSERT INTO care_plans (id, plant_id, plan, provider, model, reason, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(plan.id)
        .bind(plan.plant_id)
        .bind(Json(&plan.plan))
        .bind(&plan.provider)
        .bind(&plan.model)
        .bind(&plan.reason)
        .bind(plan.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn care_plans(&self, plant_id: Uuid, limit: u32) -> Result<Vec<StoredCarePlan>> {
        let rows = sqlx::query(
            "SELECT id, plant_id, plan, provider, model, reason, created_at FROM care_plans \
             WHERE plant_id = $1 ORDER BY created_at DESC LIMIT $2",
        )
        .bind(plant_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let Json(plan) = row.try_get("plan")?;
                Ok(StoredCarePlan {
                    id: row.try_get("id")?,
                    plant_id: row.try_get("plant_id")?,
                    plan,
                    provider: row.try_get("provider")?,
                    model: row.try_get("model")?,
                    reason: row.try_get("reason")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn care_plan_ages(&self) -> Result<HashMap<Uuid, DateTime<Utc>>> {
        let rows: Vec<(Uuid, DateTime<Utc>)> =
            sqlx::query_as("SELECT plant_id, MAX(created_at) FROM care_plans GROUP BY plant_id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn put_setting(&self, key: &str, value: Option<&str>) -> Result<()> {
        match value {
            Some(value) => sqlx::query(
                "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(key)
            .bind(value)
            .bind(Utc::now()),
            None => sqlx::query("DELETE FROM settings WHERE key = $1").bind(key),
        }
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

//! SQLite backend: the one-binary default. WAL mode so readers never wait
//! for the ingest writer; times are stored as Unix milliseconds. The SQL it
//! shares with PostgreSQL is in `sql.rs`; here is only what differs.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use plantops_core::{Measurements, Reading};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use uuid::Uuid;

use crate::sql::{
    from_millis, shared_store, ReadingRow, SeriesRow, SeriesSource, Timestamp, VitalsWrite,
    READING_COLUMNS,
};
use crate::{Backend, CommittedBatch, Lead, LiveFeed, Presence, Result, StoreError};

/// The one instance a SQLite database serves always leads.
struct SoleInstance;

#[async_trait::async_trait]
impl Lead for SoleInstance {
    async fn lost(&mut self) {
        std::future::pending::<()>().await
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite allows 32766 bound parameters per statement.
const MAX_BINDS: usize = 32766;
const READINGS_PER_INSERT: usize = MAX_BINDS / 7;

pub struct SqliteStore {
    pool: SqlitePool,
}

shared_store!(SqliteStore, Sqlite, Backend::Sqlite, MIGRATOR);
crate::accounts::account_store!(SqliteStore);
crate::channels::channel_store!(SqliteStore);

impl SqliteStore {
    /// One writer at a time already: nothing to lock row by row.
    const LOCK_FOR_UPDATE: &'static str = "";
    /// A reading's hour (times are Unix milliseconds).
    const HOUR_OF_TIME: &'static str = "(time / 3600000) * 3600000";
    const SKIP_LOCKED: &'static str = "";

    /// A transaction that reads before it writes takes the write lock at
    /// once: taken later, a write committed meanwhile by another
    /// connection would fail it (`SQLITE_BUSY`) instead of waiting.
    async fn begin_write(pool: &SqlitePool) -> Result<sqlx::Transaction<'static, Sqlite>> {
        Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn lead(&self) -> Result<Option<Box<dyn Lead>>> {
        Ok(Some(Box::new(SoleInstance)))
    }

    async fn notify_live(&self, _payload: &str) -> Result<()> {
        Ok(())
    }

    async fn listen_live(&self) -> Result<Option<LiveFeed>> {
        Ok(None)
    }

    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // A commit is synced to disk before it returns: readings are
            // acknowledged after their commit, and in WAL mode NORMAL may
            // lose the last commits on power loss (a board on an SD card).
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    async fn insert_batch(
        &self,
        readings: &[Reading],
        seen: &[Presence],
    ) -> Result<CommittedBatch> {
        let mut tx = Self::begin_write(&self.pool).await?;
        let mut inserted = 0;
        for chunk in readings.chunks(READINGS_PER_INSERT) {
            let mut query =
                QueryBuilder::<Sqlite>::new(format!("INSERT INTO readings ({READING_COLUMNS}) "));
            query.push_values(chunk, |mut row, r| {
                row.push_bind(Timestamp(r.time))
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
        let mut came_online = Vec::new();
        for chunk in seen.chunks(MAX_BINDS) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "SELECT id, status FROM devices WHERE status <> 'online' AND id IN (",
            );
            let mut list = query.separated(", ");
            for presence in chunk {
                list.push_bind(presence.device_id);
            }
            query.push(")");
            let rows: Vec<(Uuid, String)> = query
                .build_query_as()
                .persistent(false)
                .fetch_all(&mut *tx)
                .await?;
            for (id, status) in rows {
                let status = plantops_core::DeviceStatus::parse(&status)
                    .ok_or_else(|| StoreError::Corrupt(format!("device status {status:?}")))?;
                came_online.push((id, status));
            }
        }
        // One statement per batch: each is a round trip to sqlx's SQLite
        // thread.
        for chunk in seen.chunks(MAX_BINDS / 2) {
            let mut query = QueryBuilder::<Sqlite>::new("WITH seen (id, seen_at) AS (");
            query.push_values(chunk, |mut row, presence| {
                row.push_bind(presence.device_id)
                    .push_bind(Timestamp(presence.seen_at));
            });
            query.push(
                ") UPDATE devices SET status = 'online', \
                 last_seen_at = MAX(COALESCE(devices.last_seen_at, 0), seen.seen_at) \
                 FROM seen WHERE devices.id = seen.id",
            );
            query.build().persistent(false).execute(&mut *tx).await?;
        }
        let low_battery = Self::write_batch_vitals(&mut tx, seen).await?;
        tx.commit().await?;
        Ok(CommittedBatch {
            inserted,
            came_online,
            low_battery,
        })
    }

    /// Raises each plant's judged high-water mark to the time given (never
    /// lowers it), one statement per chunk of plants.
    async fn raise_judged_marks(
        tx: &mut sqlx::Transaction<'static, Sqlite>,
        newest: &[(Uuid, DateTime<Utc>)],
    ) -> Result<()> {
        for chunk in newest.chunks(MAX_BINDS / 2) {
            let mut query = QueryBuilder::<Sqlite>::new("WITH v (id, judged) AS (");
            query.push_values(chunk, |mut row, (id, time)| {
                row.push_bind(*id).push_bind(Timestamp(*time));
            });
            query.push(
                ") UPDATE plants SET readings_judged_through = v.judged FROM v \
                 WHERE plants.id = v.id AND (plants.readings_judged_through IS NULL \
                 OR plants.readings_judged_through < v.judged)",
            );
            query.build().persistent(false).execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Writes a batch's vitals in one statement per chunk of devices.
    async fn update_vitals(
        tx: &mut sqlx::Transaction<'static, Sqlite>,
        writes: &[VitalsWrite],
    ) -> Result<()> {
        for chunk in writes.chunks(MAX_BINDS / 6) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "WITH v (id, battery_percent, battery_volts, rssi_dbm, vitals_at, battery_low) AS (",
            );
            query.push_values(chunk, |mut row, write| {
                row.push_bind(write.device_id)
                    .push_bind(write.vitals.battery_percent)
                    .push_bind(write.vitals.battery_volts)
                    .push_bind(write.vitals.rssi_dbm)
                    .push_bind(Timestamp(write.at))
                    .push_bind(write.low);
            });
            query.push(
                ") UPDATE devices SET \
                 battery_percent = COALESCE(v.battery_percent, devices.battery_percent), \
                 battery_volts = COALESCE(v.battery_volts, devices.battery_volts), \
                 rssi_dbm = COALESCE(v.rssi_dbm, devices.rssi_dbm), \
                 vitals_at = v.vitals_at, battery_low = v.battery_low \
                 FROM v WHERE devices.id = v.id",
            );
            query.build().persistent(false).execute(&mut **tx).await?;
        }
        Ok(())
    }

    async fn latest_per_plant(&self, plant_ids: &[Uuid]) -> Result<HashMap<Uuid, Reading>> {
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
            let rows: Vec<ReadingRow> = query
                .build_query_as()
                .persistent(false)
                .fetch_all(&self.pool)
                .await?;
            for reading in rows.into_iter().map(Reading::from) {
                if let Some(plant_id) = reading.plant_id {
                    latest.insert(plant_id, reading);
                }
            }
        }
        Ok(latest)
    }

    /// Runs `read` with rusqlite on a pooled connection, on a blocking
    /// thread. sqlx hands SQLite rows over one by one from its worker thread
    /// (a channel send, a wake-up and an allocation per row): for a page of
    /// 10,000 readings, or the plant list's three statements, that costs
    /// several times the queries; rusqlite steps through the rows directly.
    async fn read_directly<T, F>(&self, what: &'static str, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    {
        let mut connection = self.pool.acquire().await?;
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let mut locked = runtime.block_on(connection.lock_handle())?;
            // The crate's one unsafe block.
            // SAFETY: the handle stays valid and exclusively ours while
            // `locked` holds the connection's lock, which outlives `raw`
            // (dropped at the end of this block); `from_handle` never closes it.
            #[allow(unsafe_code)]
            let raw =
                unsafe { rusqlite::Connection::from_handle(locked.as_raw_handle().as_ptr()) }?;
            read(&raw)
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("{what} reader stopped: {e}")))?
    }

    async fn overview(&self, page: crate::Page) -> Result<(Vec<crate::PlantOverview>, u64)> {
        self.read_directly("plant list", move |raw| read_overview(raw, page))
            .await
    }

    async fn history(
        &self,
        plant_id: Uuid,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Reading>> {
        let since = since.timestamp_millis();
        self.read_directly("history", move |raw| {
            read_history(raw, plant_id, since, limit)
        })
        .await
    }

    async fn series_rows(
        &self,
        source: SeriesSource,
        plant_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket_seconds: i64,
    ) -> Result<Vec<SeriesRow>> {
        let (table, time, aggregates) = source.parts();
        Ok(sqlx::query_as(&format!(
            "SELECT ({time} / $1) * $1 AS bucket, {aggregates} \
             FROM {table} WHERE plant_id = $2 AND {time} >= $3 AND {time} < $4 \
             GROUP BY bucket ORDER BY bucket"
        ))
        .bind(bucket_seconds * 1000)
        .bind(plant_id)
        .bind(Timestamp(from))
        .bind(Timestamp(to))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn prune(&self, before: DateTime<Utc>) -> Result<u64> {
        let result = sqlx::query("DELETE FROM readings WHERE time < $1")
            .bind(Timestamp(before))
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }
}

/// [`crate::Store::plant_overview`], read on a connection sqlx holds locked
/// for us: one read transaction, so page, total, readings and counts agree.
fn read_overview(
    connection: &rusqlite::Connection,
    page: crate::Page,
) -> Result<(Vec<crate::PlantOverview>, u64)> {
    use rusqlite::OptionalExtension;
    let read = connection.unchecked_transaction()?;
    let mut plants = read.prepare(
        "SELECT id, name, species, thresholds, alert_cooldown_minutes, low_battery_percent, \
         created_at, updated_at FROM plants ORDER BY created_at DESC, id LIMIT ?1 OFFSET ?2",
    )?;
    let mut latest = read.prepare(
        "SELECT time, device_id, soil_moisture, temperature, humidity, light_level \
         FROM readings WHERE plant_id = ?1 ORDER BY time DESC LIMIT 1",
    )?;
    let mut devices = read.prepare("SELECT COUNT(*) FROM devices WHERE plant_id = ?1")?;
    let offset = i64::try_from(page.offset).unwrap_or(i64::MAX);
    let mut rows = plants.query(rusqlite::params![page.limit, offset])?;
    let mut overview = Vec::new();
    while let Some(row) = rows.next()? {
        let id = Uuid::from_bytes(row.get::<_, [u8; 16]>(0)?);
        let thresholds: Option<String> = row.get(3)?;
        let plant = plantops_core::Plant {
            id,
            name: row.get(1)?,
            species: row.get(2)?,
            thresholds: thresholds
                .map(|json| serde_json::from_str(&json))
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("thresholds of plant {id}: {e}")))?,
            alert_cooldown_minutes: u32::try_from(row.get::<_, i64>(4)?).unwrap_or_default(),
            low_battery_percent: row
                .get::<_, Option<i64>>(5)?
                .and_then(|p| u8::try_from(p).ok()),
            created_at: from_millis(row.get(6)?)?,
            updated_at: from_millis(row.get(7)?)?,
        };
        let key = id.as_bytes().as_slice();
        let newest = latest
            .query_row([key], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, [u8; 16]>(1)?,
                    Measurements {
                        soil_moisture: row.get(2)?,
                        temperature: row.get(3)?,
                        humidity: row.get(4)?,
                        light_level: row.get(5)?,
                    },
                ))
            })
            .optional()?;
        let latest = match newest {
            Some((time, device, values)) => Some(Reading {
                time: from_millis(time)?,
                device_id: Uuid::from_bytes(device),
                plant_id: Some(id),
                values,
            }),
            None => None,
        };
        let device_count: i64 = devices.query_row([key], |row| row.get(0))?;
        overview.push(crate::PlantOverview {
            plant,
            latest,
            device_count: crate::sql::to_u64(device_count),
        });
    }
    drop(rows);
    let total: i64 = read.query_row("SELECT COUNT(*) FROM plants", [], |row| row.get(0))?;
    Ok((overview, crate::sql::to_u64(total)))
}

/// The page of [`crate::ReadingStore::plant_history`], read on a connection
/// sqlx holds locked for us.
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

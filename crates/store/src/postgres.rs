//! PostgreSQL backend. Readings become a TimescaleDB hypertable when the
//! extension is available (see the migrations); the queries here run on
//! both plain PostgreSQL and TimescaleDB. The SQL it shares with SQLite is
//! in `sql.rs`; here is only what differs.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use plantops_core::Reading;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Postgres;
use uuid::Uuid;

use crate::sql::{shared_store, ReadingRow, SeriesRow, SeriesSource, VitalsWrite, READING_COLUMNS};
use crate::{Backend, CommittedBatch, Lead, LiveFeed, Presence, Result, StoreError};

/// The advisory lock key of the lead ("plantops" in ASCII).
const LEAD_LOCK: i64 = 0x706c_616e_746f_7073;
/// How often the leader checks that its lock's connection still lives.
const LEAD_CHECK: Duration = Duration::from_secs(2);
/// The NOTIFY channel of live events.
const LIVE_CHANNEL: &str = "plantops_live";

/// The lead, held as long as this connection lives.
struct PgLead {
    connection: sqlx::PgConnection,
}

#[async_trait::async_trait]
impl Lead for PgLead {
    async fn lost(&mut self) {
        loop {
            tokio::time::sleep(LEAD_CHECK).await;
            let check = sqlx::query("SELECT 1").execute(&mut self.connection);
            match tokio::time::timeout(Duration::from_secs(5), check).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "the lead's database connection broke");
                    return;
                }
                Err(_) => {
                    tracing::warn!("the lead's database connection stopped answering");
                    return;
                }
            }
        }
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub struct PostgresStore {
    pool: PgPool,
}

shared_store!(PostgresStore, Postgres, Backend::Postgres, MIGRATOR);
crate::accounts::account_store!(PostgresStore);
crate::channels::channel_store!(PostgresStore);

impl PostgresStore {
    /// Plants judged by one instance at a time; `NO KEY` lets readings that
    /// reference the plant be inserted meanwhile.
    const LOCK_FOR_UPDATE: &'static str = " FOR NO KEY UPDATE";
    /// A reading's hour, in UTC whatever the session's time zone.
    const HOUR_OF_TIME: &'static str =
        "to_timestamp(floor(extract(epoch FROM time) / 3600) * 3600)";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";

    async fn begin_write(pool: &PgPool) -> Result<sqlx::Transaction<'static, Postgres>> {
        Ok(pool.begin().await?)
    }

    async fn lead(&self) -> Result<Option<Box<dyn Lead>>> {
        use sqlx::Connection;
        // A connection of its own: a pooled one would go back to the pool
        // with the lock still held.
        let mut connection = sqlx::PgConnection::connect_with(&self.pool.connect_options()).await?;
        let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEAD_LOCK)
            .fetch_one(&mut connection)
            .await?;
        if !acquired {
            let _ = connection.close().await;
            return Ok(None);
        }
        // The server notices a leader whose host vanished within about
        // 25 s (idle 10 s, then 3 probes 5 s apart) and frees the lock,
        // instead of after the system's two hours.
        sqlx::query(
            "SELECT set_config('tcp_keepalives_idle', '10', false), \
             set_config('tcp_keepalives_interval', '5', false), \
             set_config('tcp_keepalives_count', '3', false)",
        )
        .execute(&mut connection)
        .await?;
        Ok(Some(Box::new(PgLead { connection })))
    }

    async fn notify_live(&self, payload: &str) -> Result<()> {
        // Numbered by one sequence, so every instance names a message alike.
        sqlx::query("SELECT pg_notify($1, nextval('live_event_batches')::text || E'\\n' || $2)")
            .bind(LIVE_CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn listen_live(&self) -> Result<Option<LiveFeed>> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(LIVE_CHANNEL).await?;
        let feed = futures::stream::unfold(listener, |mut listener| async move {
            loop {
                match listener.recv().await {
                    Ok(notification) => {
                        return Some((notification.payload().to_string(), listener))
                    }
                    // Reconnecting failed: the database is down. Try on.
                    Err(error) => {
                        tracing::warn!(%error, "live event feed interrupted");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Some(Box::pin(feed)))
    }

    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(Self { pool })
    }

    /// Raises each plant's judged high-water mark to the time given (never
    /// lowers it), in one statement.
    async fn raise_judged_marks(
        tx: &mut sqlx::Transaction<'static, Postgres>,
        newest: &[(Uuid, DateTime<Utc>)],
    ) -> Result<()> {
        if newest.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE plants AS p SET readings_judged_through = v.judged \
             FROM UNNEST($1::uuid[], $2::timestamptz[]) AS v(id, judged) \
             WHERE p.id = v.id AND (p.readings_judged_through IS NULL \
             OR p.readings_judged_through < v.judged)",
        )
        .bind(newest.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(newest.iter().map(|(_, time)| *time).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Writes a batch's vitals in one statement: columns travel as arrays.
    async fn update_vitals(
        tx: &mut sqlx::Transaction<'static, Postgres>,
        writes: &[VitalsWrite],
    ) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let column = |f: fn(&VitalsWrite) -> Option<f64>| writes.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "UPDATE devices AS d SET \
             battery_percent = COALESCE(v.battery_percent, d.battery_percent), \
             battery_volts = COALESCE(v.battery_volts, d.battery_volts), \
             rssi_dbm = COALESCE(v.rssi_dbm, d.rssi_dbm), \
             vitals_at = v.vitals_at, battery_low = v.battery_low \
             FROM UNNEST($1::uuid[], $2::float8[], $3::float8[], $4::float8[], \
             $5::timestamptz[], $6::bool[]) \
             AS v(id, battery_percent, battery_volts, rssi_dbm, vitals_at, battery_low) \
             WHERE d.id = v.id",
        )
        .bind(writes.iter().map(|w| w.device_id).collect::<Vec<_>>())
        .bind(column(|w| w.vitals.battery_percent))
        .bind(column(|w| w.vitals.battery_volts))
        .bind(column(|w| w.vitals.rssi_dbm))
        .bind(writes.iter().map(|w| w.at).collect::<Vec<_>>())
        .bind(writes.iter().map(|w| w.low).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn insert_batch(
        &self,
        readings: &[Reading],
        seen: &[Presence],
    ) -> Result<CommittedBatch> {
        // One statement per batch: columns travel as arrays.
        let column = |f: fn(&Reading) -> Option<f64>| readings.iter().map(f).collect::<Vec<_>>();
        let times: Vec<DateTime<Utc>> = readings.iter().map(|r| r.time).collect();
        let devices: Vec<Uuid> = readings.iter().map(|r| r.device_id).collect();
        let plants: Vec<Option<Uuid>> = readings.iter().map(|r| r.plant_id).collect();
        let values = [
            column(|r| r.values.soil_moisture),
            column(|r| r.values.temperature),
            column(|r| r.values.humidity),
            column(|r| r.values.light_level),
        ];
        // Sorted so concurrent batches lock device rows in one order.
        let mut seen = seen.to_vec();
        seen.sort_by_key(|p| p.device_id);
        let pool = self.pool.clone();
        crate::uncancellable(async move {
            let mut tx = pool.begin().await?;
            let [soil_moisture, temperature, humidity, light_level] = values;
            let inserted = sqlx::query(&format!(
                "INSERT INTO readings ({READING_COLUMNS}) \
                 SELECT * FROM UNNEST($1::timestamptz[], $2::uuid[], $3::uuid[], \
                 $4::float8[], $5::float8[], $6::float8[], $7::float8[]) \
                 ON CONFLICT (device_id, time) DO NOTHING"
            ))
            .bind(times)
            .bind(devices)
            .bind(plants)
            .bind(soil_moisture)
            .bind(temperature)
            .bind(humidity)
            .bind(light_level)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let mut came_online = Vec::new();
            if !seen.is_empty() {
                let ids: Vec<Uuid> = seen.iter().map(|p| p.device_id).collect();
                // Locked in one order before the update, so a status change
                // is seen by exactly one of several instances' batches.
                let before: Vec<(Uuid, String)> = sqlx::query_as(
                    "SELECT id, status FROM devices WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
                )
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
                for (id, status) in before {
                    let status = plantops_core::DeviceStatus::parse(&status)
                        .ok_or_else(|| StoreError::Corrupt(format!("device status {status:?}")))?;
                    if status != plantops_core::DeviceStatus::Online {
                        came_online.push((id, status));
                    }
                }
                sqlx::query(
                    "UPDATE devices AS d SET status = 'online', \
                     last_seen_at = GREATEST(d.last_seen_at, v.seen_at) \
                     FROM UNNEST($1::uuid[], $2::timestamptz[]) AS v(id, seen_at) WHERE d.id = v.id",
                )
                .bind(ids)
                .bind(seen.iter().map(|p| p.seen_at).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
            }
            let low_battery = Self::write_batch_vitals(&mut tx, &seen).await?;
            tx.commit().await?;
            Ok(CommittedBatch {
                inserted,
                came_online,
                low_battery,
            })
        })
        .await
    }

    /// The plant list: the page, then the newest readings and device
    /// counts of its plants, one statement each.
    async fn overview(&self, page: crate::Page) -> Result<(Vec<crate::PlantOverview>, u64)> {
        use crate::{DeviceStore, PlantStore};
        let (plants, total) = self.list_plants(page).await?;
        let ids: Vec<Uuid> = plants.iter().map(|p| p.id).collect();
        let mut latest = self.latest_per_plant(&ids).await?;
        let counts = self.device_counts(&ids).await?;
        let overview = plants
            .into_iter()
            .map(|plant| crate::PlantOverview {
                latest: latest.remove(&plant.id),
                device_count: counts.get(&plant.id).copied().unwrap_or(0),
                plant,
            })
            .collect();
        Ok((overview, total))
    }

    async fn latest_per_plant(&self, plant_ids: &[Uuid]) -> Result<HashMap<Uuid, Reading>> {
        // A lateral index probe per plant, not a scan of all readings.
        let rows: Vec<ReadingRow> = sqlx::query_as(&format!(
            "SELECT r.* FROM UNNEST($1::uuid[]) AS p(id) CROSS JOIN LATERAL \
             (SELECT {READING_COLUMNS} FROM readings WHERE plant_id = p.id \
              ORDER BY time DESC LIMIT 1) AS r"
        ))
        .bind(plant_ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(Reading::from)
            .filter_map(|reading| Some((reading.plant_id?, reading)))
            .collect())
    }

    async fn history(
        &self,
        plant_id: Uuid,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Reading>> {
        let rows: Vec<ReadingRow> = sqlx::query_as(&format!(
            "SELECT {READING_COLUMNS} FROM readings WHERE plant_id = $1 AND time >= $2 \
             ORDER BY time DESC LIMIT $3"
        ))
        .bind(plant_id)
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Reading::from).collect())
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
            "SELECT to_timestamp(floor(extract(epoch FROM {time}) / $1) * $1) AS bucket, \
             {aggregates} \
             FROM {table} WHERE plant_id = $2 AND {time} >= $3 AND {time} < $4 \
             GROUP BY bucket ORDER BY bucket"
        ))
        .bind(bucket_seconds as f64)
        .bind(plant_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn prune(&self, before: DateTime<Utc>) -> Result<u64> {
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
}

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

use crate::sql::{shared_store, ReadingRow, SeriesRow, READING_COLUMNS, SERIES_AGGREGATES};
use crate::{Backend, Presence, Result};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub struct PostgresStore {
    pool: PgPool,
}

shared_store!(PostgresStore, Postgres, Backend::Postgres, MIGRATOR);
crate::accounts::account_store!(PostgresStore);

impl PostgresStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(Self { pool })
    }

    async fn insert_batch(&self, readings: &[Reading], seen: &[Presence]) -> Result<u64> {
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
            if !seen.is_empty() {
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
        })
        .await
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
        plant_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket_seconds: i64,
    ) -> Result<Vec<SeriesRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT to_timestamp(floor(extract(epoch FROM time) / $1) * $1) AS bucket, \
             {SERIES_AGGREGATES} \
             FROM readings WHERE plant_id = $2 AND time >= $3 AND time < $4 \
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

//! Readings: batches (with the vitals they bring), history, series and rollups: the SQL is the same
//! on both backends, so it is written once here, one block for the aggregate (like `accounts.rs`).

/// Implements [`crate::ReadingStore`] for a backend whose pool is `self.pool`.
macro_rules! reading_store {
    ($store:ty, $db:ty) => {
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
    };
}

pub(crate) use reading_store;

//! Devices: registration, credentials, assignment and presence: the SQL is the same on both
//! backends, so it is written once here, one block for the aggregate (like `accounts.rs`).

/// Implements [`crate::DeviceStore`] for a backend whose pool is `self.pool`.
macro_rules! device_store {
    ($store:ty, $db:ty) => {
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
    };
}

pub(crate) use device_store;

//! Plants: the SQL is the same on both backends, so it is written once here, one block for the
//! aggregate (like `accounts.rs`).

/// Implements [`crate::PlantStore`] for a backend whose pool is `self.pool`.
macro_rules! plant_store {
    ($store:ty, $db:ty) => {
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
    };
}

pub(crate) use plant_store;

//! Care plans and their history: the SQL is the same on both backends, so it is written once here,
//! one block for the aggregate (like `accounts.rs`).

/// Implements [`crate::CarePlanStore`] for a backend whose pool is `self.pool`.
macro_rules! care_plan_store {
    ($store:ty, $db:ty) => {
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
    };
}

pub(crate) use care_plan_store;

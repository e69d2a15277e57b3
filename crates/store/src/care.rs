//! The care journal (`care_events`) and care schedules (`care_tasks`): the
//! SQL is the same on both backends, so it is written once here, one block
//! for the aggregate (like `accounts.rs`).

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use plantops_core::alert::Alert;
use plantops_core::journal::{AmountUnit, CareEvent, CareEventKind, CareSource, CareTaskRule};
use sqlx::types::Json;
use sqlx::FromRow;
use uuid::Uuid;

use crate::sql::Timestamp;
use crate::{Result, StoreError};

/// A task of a plant's care schedule, with what its reminders remember.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCareTask {
    pub id: Uuid,
    pub plant_id: Uuid,
    pub rule: CareTaskRule,
    /// Not due before this time, when set.
    pub snoozed_until: Option<DateTime<Utc>>,
    /// The due date whose `care_due` notice was raised last.
    pub announced_due_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// The newest journal entry of a kind (and custom task) for a plant.
#[derive(Debug, Clone, PartialEq)]
pub struct LastCare {
    pub plant_id: Uuid,
    pub kind: CareEventKind,
    pub task: Option<String>,
    pub at: DateTime<Utc>,
}

#[async_trait]
pub trait CareStore: Send + Sync + 'static {
    /// Stores a journal entry. A watering recorded by someone removes the
    /// waterings detected within `supersedes` of it: the person knows.
    async fn insert_care_event(&self, event: &CareEvent, supersedes: Duration) -> Result<()>;
    /// Stores a detected watering unless a watering is recorded within
    /// `window` of it (either side); returns whether it was stored.
    async fn insert_detected_watering(&self, event: &CareEvent, window: Duration) -> Result<bool>;
    /// A plant's journal, newest first, before `before` when given.
    async fn care_events(
        &self,
        plant_id: Uuid,
        before: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<CareEvent>>;
    /// A plant's journal in `[from, to)`, oldest first (exports).
    async fn care_events_between(
        &self,
        plant_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<CareEvent>>;
    async fn delete_care_event(&self, plant_id: Uuid, id: Uuid) -> Result<bool>;
    /// The newest entry per plant, kind and custom task.
    async fn last_care(&self) -> Result<Vec<LastCare>>;
    /// Every plant's tasks (or one plant's), in the plant's order.
    async fn care_tasks(&self, plant_id: Option<Uuid>) -> Result<Vec<StoredCareTask>>;
    async fn care_task(&self, id: Uuid) -> Result<Option<StoredCareTask>>;
    /// Replaces a plant's schedule; a task kept by name keeps its id,
    /// snooze and announced due date.
    async fn put_care_schedule(&self, plant_id: Uuid, rules: &[CareTaskRule]) -> Result<()>;
    async fn snooze_care_task(&self, id: Uuid, until: Option<DateTime<Utc>>) -> Result<bool>;
    /// Raises a task's `care_due` notice for `due`, once: in one
    /// transaction, the announced due date moves to `due` and the alert is
    /// stored (with its deliveries) only if it was not already there.
    async fn announce_care_due(
        &self,
        task_id: Uuid,
        due: DateTime<Utc>,
        alert: &Alert,
    ) -> Result<bool>;
}

pub(crate) const CARE_EVENT_COLUMNS: &str =
    "id, plant_id, kind, at, amount, unit, text, task, source, recorded_by, created_at";
pub(crate) const CARE_TASK_COLUMNS: &str =
    "id, plant_id, rule, snoozed_until, announced_due_at, created_at";

#[derive(FromRow)]
pub(crate) struct CareEventRow {
    id: Uuid,
    plant_id: Uuid,
    kind: String,
    at: Timestamp,
    amount: Option<f64>,
    unit: Option<String>,
    text: Option<String>,
    task: Option<String>,
    source: String,
    recorded_by: Option<String>,
    created_at: Timestamp,
}

impl TryFrom<CareEventRow> for CareEvent {
    type Error = StoreError;
    fn try_from(row: CareEventRow) -> Result<Self> {
        let corrupt =
            |what: &str, value: &str| StoreError::Corrupt(format!("care event {what} {value}"));
        Ok(CareEvent {
            kind: CareEventKind::parse(&row.kind).ok_or_else(|| corrupt("kind", &row.kind))?,
            source: CareSource::parse(&row.source).ok_or_else(|| corrupt("source", &row.source))?,
            unit: match row.unit {
                Some(unit) => Some(AmountUnit::parse(&unit).ok_or_else(|| corrupt("unit", &unit))?),
                None => None,
            },
            id: row.id,
            plant_id: row.plant_id,
            at: row.at.0,
            amount: row.amount,
            text: row.text,
            task: row.task,
            recorded_by: row.recorded_by,
            created_at: row.created_at.0,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct CareTaskRow {
    id: Uuid,
    plant_id: Uuid,
    rule: Json<CareTaskRule>,
    snoozed_until: Option<Timestamp>,
    announced_due_at: Option<Timestamp>,
    created_at: Timestamp,
}

impl From<CareTaskRow> for StoredCareTask {
    fn from(row: CareTaskRow) -> Self {
        StoredCareTask {
            id: row.id,
            plant_id: row.plant_id,
            rule: row.rule.0,
            snoozed_until: row.snoozed_until.map(|t| t.0),
            announced_due_at: row.announced_due_at.map(|t| t.0),
            created_at: row.created_at.0,
        }
    }
}

#[derive(FromRow)]
pub(crate) struct LastCareRow {
    plant_id: Uuid,
    kind: String,
    task: Option<String>,
    at: Timestamp,
}

impl TryFrom<LastCareRow> for LastCare {
    type Error = StoreError;
    fn try_from(row: LastCareRow) -> Result<Self> {
        Ok(LastCare {
            kind: CareEventKind::parse(&row.kind)
                .ok_or_else(|| StoreError::Corrupt(format!("care event kind {}", row.kind)))?,
            plant_id: row.plant_id,
            task: row.task,
            at: row.at.0,
        })
    }
}

/// Implements [`CareStore`] for a backend whose pool is `self.pool`.
macro_rules! care_store {
    ($store:ty, $db:ty) => {
        impl $store {
            fn bind_care_event<'q>(
                query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
                event: &'q plantops_core::journal::CareEvent,
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>> {
                query
                    .bind(event.id)
                    .bind(event.plant_id)
                    .bind(event.kind.as_str())
                    .bind($crate::sql::Timestamp(event.at))
                    .bind(event.amount)
                    .bind(event.unit.map(|u| u.as_str()))
                    .bind(event.text.as_deref())
                    .bind(event.task.as_deref())
                    .bind(event.source.as_str())
                    .bind(event.recorded_by.as_deref())
                    .bind($crate::sql::Timestamp(event.created_at))
            }
        }

        #[async_trait::async_trait]
        impl $crate::CareStore for $store {
            async fn insert_care_event(
                &self,
                event: &plantops_core::journal::CareEvent,
                supersedes: chrono::Duration,
            ) -> $crate::Result<()> {
                let (pool, event) = (self.pool.clone(), event.clone());
                $crate::uncancellable(async move {
                    let mut tx = pool.begin().await?;
                    let sql = format!(
                        "INSERT INTO care_events ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                        $crate::care::CARE_EVENT_COLUMNS
                    );
                    Self::bind_care_event(sqlx::query(&sql), &event)
                        .execute(&mut *tx)
                        .await?;
                    let watered = plantops_core::journal::CareEventKind::Watered;
                    let detected = plantops_core::journal::CareSource::Detected;
                    if event.kind == watered && event.source != detected {
                        sqlx::query(
                            "DELETE FROM care_events WHERE plant_id = $1 AND kind = $2 \
                             AND source = $3 AND at > $4 AND at < $5",
                        )
                        .bind(event.plant_id)
                        .bind(watered.as_str())
                        .bind(detected.as_str())
                        .bind($crate::sql::Timestamp(event.at - supersedes))
                        .bind($crate::sql::Timestamp(event.at + supersedes))
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                })
                .await
            }

            async fn insert_detected_watering(
                &self,
                event: &plantops_core::journal::CareEvent,
                window: chrono::Duration,
            ) -> $crate::Result<bool> {
                let sql = format!(
                    "INSERT INTO care_events ({}) \
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 \
                     WHERE NOT EXISTS (SELECT 1 FROM care_events WHERE plant_id = $2 \
                     AND kind = $3 AND at > $12 AND at < $13)",
                    $crate::care::CARE_EVENT_COLUMNS
                );
                let inserted = Self::bind_care_event(sqlx::query(&sql), event)
                    .bind($crate::sql::Timestamp(event.at - window))
                    .bind($crate::sql::Timestamp(event.at + window))
                    .execute(&self.pool)
                    .await?;
                Ok(inserted.rows_affected() == 1)
            }

            async fn care_events(
                &self,
                plant_id: uuid::Uuid,
                before: Option<chrono::DateTime<chrono::Utc>>,
                limit: u32,
            ) -> $crate::Result<Vec<plantops_core::journal::CareEvent>> {
                let mut query = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM care_events WHERE plant_id = ",
                    $crate::care::CARE_EVENT_COLUMNS
                ));
                query.push_bind(plant_id);
                if let Some(before) = before {
                    query.push(" AND at < ").push_bind($crate::sql::Timestamp(before));
                }
                query
                    .push(" ORDER BY at DESC, id LIMIT ")
                    .push_bind(i64::from(limit));
                let rows: Vec<$crate::care::CareEventRow> =
                    query.build_query_as().fetch_all(&self.pool).await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn care_events_between(
                &self,
                plant_id: uuid::Uuid,
                from: chrono::DateTime<chrono::Utc>,
                to: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Vec<plantops_core::journal::CareEvent>> {
                let rows: Vec<$crate::care::CareEventRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM care_events WHERE plant_id = $1 AND at >= $2 AND at < $3 \
                     ORDER BY at, id",
                    $crate::care::CARE_EVENT_COLUMNS
                ))
                .bind(plant_id)
                .bind($crate::sql::Timestamp(from))
                .bind($crate::sql::Timestamp(to))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn delete_care_event(
                &self,
                plant_id: uuid::Uuid,
                id: uuid::Uuid,
            ) -> $crate::Result<bool> {
                let deleted = sqlx::query("DELETE FROM care_events WHERE plant_id = $1 AND id = $2")
                    .bind(plant_id)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(deleted.rows_affected() == 1)
            }

            async fn last_care(&self) -> $crate::Result<Vec<$crate::LastCare>> {
                let rows: Vec<$crate::care::LastCareRow> = sqlx::query_as(
                    "SELECT plant_id, kind, task, MAX(at) AS at FROM care_events \
                     GROUP BY plant_id, kind, task",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn care_tasks(
                &self,
                plant_id: Option<uuid::Uuid>,
            ) -> $crate::Result<Vec<$crate::StoredCareTask>> {
                let mut query = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM care_tasks",
                    $crate::care::CARE_TASK_COLUMNS
                ));
                if let Some(plant_id) = plant_id {
                    query.push(" WHERE plant_id = ").push_bind(plant_id);
                }
                query.push(" ORDER BY plant_id, created_at, id");
                let rows: Vec<$crate::care::CareTaskRow> =
                    query.build_query_as().fetch_all(&self.pool).await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn care_task(
                &self,
                id: uuid::Uuid,
            ) -> $crate::Result<Option<$crate::StoredCareTask>> {
                let row: Option<$crate::care::CareTaskRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM care_tasks WHERE id = $1",
                    $crate::care::CARE_TASK_COLUMNS
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Into::into))
            }

            async fn put_care_schedule(
                &self,
                plant_id: uuid::Uuid,
                rules: &[plantops_core::journal::CareTaskRule],
            ) -> $crate::Result<()> {
                let (pool, rules) = (self.pool.clone(), rules.to_vec());
                $crate::uncancellable(async move {
                    let mut tx = Self::begin_write(&pool).await?;
                    let mut keep = sqlx::QueryBuilder::<$db>::new(
                        "DELETE FROM care_tasks WHERE plant_id = ",
                    );
                    keep.push_bind(plant_id);
                    if !rules.is_empty() {
                        keep.push(" AND task NOT IN (");
                        let mut names = keep.separated(", ");
                        for rule in &rules {
                            names.push_bind(rule.task.clone());
                        }
                        keep.push(")");
                    }
                    keep.build().execute(&mut *tx).await?;
                    let now = chrono::Utc::now();
                    for (n, rule) in rules.iter().enumerate() {
                        // The list's order, kept through created_at.
                        let created_at = now + chrono::Duration::milliseconds(n as i64);
                        sqlx::query(
                            "INSERT INTO care_tasks (id, plant_id, task, rule, created_at) \
                             VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (plant_id, task) DO UPDATE SET rule = excluded.rule",
                        )
                        .bind(uuid::Uuid::new_v4())
                        .bind(plant_id)
                        .bind(&rule.task)
                        .bind(sqlx::types::Json(rule))
                        .bind($crate::sql::Timestamp(created_at))
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                })
                .await
            }

            async fn snooze_care_task(
                &self,
                id: uuid::Uuid,
                until: Option<chrono::DateTime<chrono::Utc>>,
            ) -> $crate::Result<bool> {
                let updated = sqlx::query("UPDATE care_tasks SET snoozed_until = $1 WHERE id = $2")
                    .bind(until.map($crate::sql::Timestamp))
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(updated.rows_affected() == 1)
            }

            async fn announce_care_due(
                &self,
                task_id: uuid::Uuid,
                due: chrono::DateTime<chrono::Utc>,
                alert: &plantops_core::alert::Alert,
            ) -> $crate::Result<bool> {
                let (pool, alert) = (self.pool.clone(), alert.clone());
                $crate::uncancellable(async move {
                    let mut tx = Self::begin_write(&pool).await?;
                    let marked = sqlx::query(
                        "UPDATE care_tasks SET announced_due_at = $1 WHERE id = $2 \
                         AND (announced_due_at IS NULL OR announced_due_at <> $1)",
                    )
                    .bind($crate::sql::Timestamp(due))
                    .bind(task_id)
                    .execute(&mut *tx)
                    .await?;
                    if marked.rows_affected() != 1 {
                        return Ok(false);
                    }
                    Self::write_alerts(&mut tx, &[], std::slice::from_ref(&alert)).await?;
                    tx.commit().await?;
                    Ok(true)
                })
                .await
            }
        }
    };
}

pub(crate) use care_store;

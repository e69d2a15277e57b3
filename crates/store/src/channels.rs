//! Notification channels and their outbox (`channel_deliveries`): the SQL
//! is the same on both backends, so it is written once here, like `sql.rs`.
//! An alert gets a delivery row for every channel whose minimum severity it
//! meets in the transaction that stores it (`record_alerts`).

use chrono::{DateTime, Utc};
use plantops_core::alert::Severity;
use sqlx::FromRow;
use uuid::Uuid;

use crate::sql::{to_u64, Timestamp};
use crate::{Result, StoreError};

pub(crate) const CHANNEL_COLUMNS: &str = "id, kind, name, min_severity_level, config_sealed, \
                                          created_at, updated_at, last_error, last_error_at";

/// A notification channel as kept: its kind's fields are one sealed JSON
/// document the store never opens.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChannel {
    pub id: Uuid,
    /// `discord`, `ntfy`, `telegram`, `webhook` or `email`.
    pub kind: String,
    pub name: String,
    pub min_severity: Severity,
    pub config_sealed: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Why the last attempt failed, until a delivery succeeds.
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// Notices waiting for this channel (read, never written).
    pub pending: u64,
}

#[derive(FromRow)]
pub(crate) struct ChannelRow {
    id: Uuid,
    kind: String,
    name: String,
    min_severity_level: i32,
    config_sealed: String,
    created_at: Timestamp,
    updated_at: Timestamp,
    last_error: Option<String>,
    last_error_at: Option<Timestamp>,
    pending: i64,
}

impl TryFrom<ChannelRow> for StoredChannel {
    type Error = StoreError;
    fn try_from(row: ChannelRow) -> Result<Self> {
        Ok(StoredChannel {
            min_severity: Severity::from_level(i64::from(row.min_severity_level)).ok_or_else(
                || StoreError::Corrupt(format!("severity level {}", row.min_severity_level)),
            )?,
            id: row.id,
            kind: row.kind,
            name: row.name,
            config_sealed: row.config_sealed,
            created_at: row.created_at.0,
            updated_at: row.updated_at.0,
            last_error: row.last_error,
            last_error_at: row.last_error_at.map(|t| t.0),
            pending: to_u64(row.pending),
        })
    }
}

/// The channel columns and its pending count, from `notification_channels c`.
pub(crate) fn select_channels(filter: &str) -> String {
    format!(
        "SELECT {CHANNEL_COLUMNS}, (SELECT COUNT(*) FROM channel_deliveries d \
         WHERE d.channel_id = c.id AND d.delivery = 'pending') AS pending \
         FROM notification_channels c {filter} ORDER BY created_at, id"
    )
}

#[derive(FromRow)]
pub(crate) struct ClaimedRow {
    pub alert_id: Uuid,
    pub attempts: i32,
}

/// Implements [`crate::ChannelStore`] for a backend whose pool is `self.pool`.
macro_rules! channel_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::ChannelStore for $store {
            async fn list_channels(&self) -> $crate::Result<Vec<$crate::StoredChannel>> {
                let rows: Vec<$crate::channels::ChannelRow> =
                    sqlx::query_as(&$crate::channels::select_channels(""))
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn get_channel(&self, id: uuid::Uuid) -> $crate::Result<Option<$crate::StoredChannel>> {
                let row: Option<$crate::channels::ChannelRow> =
                    sqlx::query_as(&$crate::channels::select_channels("WHERE c.id = $1"))
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn insert_channel(&self, channel: &$crate::StoredChannel) -> $crate::Result<()> {
                sqlx::query(&format!(
                    "INSERT INTO notification_channels ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    $crate::channels::CHANNEL_COLUMNS
                ))
                .bind(channel.id)
                .bind(&channel.kind)
                .bind(&channel.name)
                .bind(channel.min_severity.level())
                .bind(&channel.config_sealed)
                .bind($crate::sql::Timestamp(channel.created_at))
                .bind($crate::sql::Timestamp(channel.updated_at))
                .bind(&channel.last_error)
                .bind(channel.last_error_at.map($crate::sql::Timestamp))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn update_channel(&self, channel: &$crate::StoredChannel) -> $crate::Result<bool> {
                let updated = sqlx::query(
                    "UPDATE notification_channels SET kind = $1, name = $2, \
                     min_severity_level = $3, config_sealed = $4, updated_at = $5, \
                     last_error = NULL, last_error_at = NULL WHERE id = $6",
                )
                .bind(&channel.kind)
                .bind(&channel.name)
                .bind(channel.min_severity.level())
                .bind(&channel.config_sealed)
                .bind($crate::sql::Timestamp(channel.updated_at))
                .bind(channel.id)
                .execute(&self.pool)
                .await?;
                Ok(updated.rows_affected() == 1)
            }

            async fn delete_channel(&self, id: uuid::Uuid) -> $crate::Result<bool> {
                let deleted = sqlx::query("DELETE FROM notification_channels WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(deleted.rows_affected() == 1)
            }

            async fn claim_due_deliveries(
                &self,
                channel: uuid::Uuid,
                now: chrono::DateTime<chrono::Utc>,
                lease_until: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> $crate::Result<Vec<$crate::QueuedAlert>> {
                let claimed: Vec<$crate::channels::ClaimedRow> = sqlx::query_as(&format!(
                    "UPDATE channel_deliveries SET next_attempt_at = $1 \
                     WHERE channel_id = $2 AND alert_id IN \
                     (SELECT alert_id FROM channel_deliveries WHERE channel_id = $2 \
                      AND delivery = 'pending' AND next_attempt_at <= $3 \
                      ORDER BY next_attempt_at, alert_id LIMIT $4{}) \
                     RETURNING alert_id, attempts",
                    Self::SKIP_LOCKED
                ))
                .bind($crate::sql::Timestamp(lease_until))
                .bind(channel)
                .bind($crate::sql::Timestamp(now))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                if claimed.is_empty() {
                    return Ok(Vec::new());
                }
                let placeholders: Vec<String> =
                    (1..=claimed.len()).map(|n| format!("${n}")).collect();
                let sql = format!(
                    "SELECT {} FROM alerts WHERE id IN ({})",
                    $crate::sql::ALERT_COLUMNS,
                    placeholders.join(", ")
                );
                let mut query = sqlx::query_as::<_, $crate::sql::AlertRow>(&sql);
                for row in &claimed {
                    query = query.bind(row.alert_id);
                }
                let alerts = query.fetch_all(&self.pool).await?;
                let mut queued = Vec::with_capacity(alerts.len());
                for row in alerts {
                    let alert: plantops_core::alert::Alert = row.try_into()?;
                    let attempts = claimed
                        .iter()
                        .find(|c| c.alert_id == alert.id)
                        .map_or(0, |c| u32::try_from(c.attempts).unwrap_or_default());
                    queued.push($crate::QueuedAlert { alert, attempts });
                }
                queued.sort_by_key(|q| (q.alert.created_at, q.alert.id));
                Ok(queued)
            }

            async fn update_channel_delivery(
                &self,
                channel: uuid::Uuid,
                update: &$crate::DeliveryUpdate,
            ) -> $crate::Result<()> {
                sqlx::query(
                    "UPDATE channel_deliveries SET delivery = $1, attempts = $2, \
                     next_attempt_at = $3 WHERE channel_id = $4 AND alert_id = $5",
                )
                .bind(update.delivery.as_str())
                .bind(i32::try_from(update.attempts).unwrap_or(i32::MAX))
                .bind($crate::sql::Timestamp(update.next_attempt_at))
                .bind(channel)
                .bind(update.id)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn record_channel_error(
                &self,
                channel: uuid::Uuid,
                error: Option<&str>,
                at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<()> {
                // A success writes only when there is an error to clear.
                sqlx::query(
                    "UPDATE notification_channels SET last_error = $1, last_error_at = $2 \
                     WHERE id = $3 AND ($1 IS NOT NULL OR last_error IS NOT NULL)",
                )
                .bind(error)
                .bind(error.map(|_| $crate::sql::Timestamp(at)))
                .bind(channel)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn put_sealed(
                &self,
                settings: &[(&str, Option<&str>)],
                channels: &[(uuid::Uuid, String)],
            ) -> $crate::Result<()> {
                let pool = self.pool.clone();
                let settings: Vec<(String, Option<String>)> = settings
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                    .collect();
                let channels = channels.to_vec();
                $crate::uncancellable(async move {
                    let mut tx = pool.begin().await?;
                    for (key, value) in &settings {
                        match value {
                            Some(value) => sqlx::query(
                                "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
                                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                                 updated_at = excluded.updated_at",
                            )
                            .bind(key)
                            .bind(value)
                            .bind($crate::sql::Timestamp(chrono::Utc::now())),
                            None => sqlx::query("DELETE FROM settings WHERE key = $1").bind(key),
                        }
                        .execute(&mut *tx)
                        .await?;
                    }
                    for (id, sealed) in &channels {
                        sqlx::query(
                            "UPDATE notification_channels SET config_sealed = $1 WHERE id = $2",
                        )
                        .bind(sealed)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                })
                .await
            }
        }
    };
}

pub(crate) use channel_store;

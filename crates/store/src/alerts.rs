//! Alerts: threshold states, judgement, the outbox: the SQL is the same on both backends, so it is
//! written once here, one block for the aggregate (like `accounts.rs`).

/// Implements [`crate::AlertStore`] for a backend whose pool is `self.pool`.
macro_rules! alert_store {
    ($store:ty, $db:ty) => {
        impl $store {
            /// Saves threshold state changes and the alerts they caused.
            async fn write_alerts(
                tx: &mut sqlx::Transaction<'static, $db>,
                states: &[$crate::StateChange],
                alerts: &[plantops_core::alert::Alert],
            ) -> $crate::Result<()> {
                for change in states {
                    sqlx::query(
                        "INSERT INTO alert_states (plant_id, metric, breached, notified, \
                         last_notified_at, changed_at) VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (plant_id, metric) DO UPDATE SET \
                         breached = excluded.breached, notified = excluded.notified, \
                         last_notified_at = excluded.last_notified_at, \
                         changed_at = excluded.changed_at",
                    )
                    .bind(change.plant_id)
                    .bind(change.metric.as_str())
                    .bind(change.state.breached.map(plantops_core::plant::BoundSide::as_str))
                    .bind(change.state.notified)
                    .bind(change.state.last_notified_at.map($crate::sql::Timestamp))
                    .bind(change.state.changed_at.map($crate::sql::Timestamp))
                    .execute(&mut **tx)
                    .await?;
                }
                for alert in alerts {
                    // The first delivery attempt is due when the alert is made.
                    sqlx::query(&format!(
                        "INSERT INTO alerts ({}, attempts, next_attempt_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, $10)",
                        $crate::sql::ALERT_COLUMNS
                    ))
                    .bind(alert.id)
                    .bind(alert.plant_id)
                    .bind(alert.device_id)
                    .bind(alert.kind.as_str())
                    .bind(alert.metric.map(plantops_core::Metric::as_str))
                    .bind(alert.value)
                    .bind(alert.threshold)
                    .bind(alert.direction.map(plantops_core::plant::BoundSide::as_str))
                    .bind(&alert.message)
                    .bind($crate::sql::Timestamp(alert.created_at))
                    .bind(alert.delivery.as_str())
                    .bind(alert.acknowledged_at.map($crate::sql::Timestamp))
                    .execute(&mut **tx)
                    .await?;
                    // Its place in every channel's outbox that takes it.
                    sqlx::query(
                        "INSERT INTO channel_deliveries \
                         (channel_id, alert_id, delivery, attempts, next_attempt_at) \
                         SELECT id, $1, 'pending', 0, $2 FROM notification_channels \
                         WHERE min_severity_level <= $3",
                    )
                    .bind(alert.id)
                    .bind($crate::sql::Timestamp(alert.created_at))
                    .bind(alert.kind.severity().level())
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::AlertStore for $store {
            async fn metric_states(
                &self,
                plant_id: uuid::Uuid,
            ) -> $crate::Result<
                std::collections::HashMap<plantops_core::Metric, plantops_core::alert::MetricState>,
            > {
                let rows: Vec<$crate::sql::MetricStateRow> =
                    sqlx::query_as($crate::sql::PLANT_METRIC_STATES)
                .bind(plant_id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn record_alerts(
                &self,
                states: &[$crate::StateChange],
                alerts: &[plantops_core::alert::Alert],
            ) -> $crate::Result<()> {
                let (pool, states, alerts) = (self.pool.clone(), states.to_vec(), alerts.to_vec());
                $crate::uncancellable(async move {
                    let mut tx = pool.begin().await?;
                    Self::write_alerts(&mut tx, &states, &alerts).await?;
                    tx.commit().await?;
                    Ok(())
                })
                .await
            }

            async fn judge_plants(
                &self,
                newest: &[(uuid::Uuid, chrono::DateTime<chrono::Utc>)],
                judge: $crate::Judge,
            ) -> $crate::Result<Vec<plantops_core::alert::Alert>> {
                let newest = newest.to_vec();
                let mut plant_ids: Vec<uuid::Uuid> = newest.iter().map(|(id, _)| *id).collect();
                // One order for every instance: no two wait on each other.
                plant_ids.sort_unstable();
                plant_ids.dedup();
                let pool = self.pool.clone();
                $crate::uncancellable(async move {
                    let mut tx = Self::begin_write(&pool).await?;
                    let mut judged = Vec::with_capacity(plant_ids.len());
                    for chunk in plant_ids.chunks($crate::sql::IDS_PER_STATEMENT) {
                        let mut query =
                            sqlx::QueryBuilder::<$db>::new("SELECT * FROM plants WHERE id IN (");
                        let mut list = query.separated(", ");
                        for id in chunk {
                            list.push_bind(*id);
                        }
                        query.push(") ORDER BY id").push(Self::LOCK_FOR_UPDATE);
                        let rows: Vec<$crate::sql::PlantRow> = query
                            .build_query_as()
                            .persistent(false)
                            .fetch_all(&mut *tx)
                            .await?;
                        judged.extend(rows.into_iter().map(plantops_core::Plant::from));
                    }
                    let mut states: std::collections::HashMap<
                        uuid::Uuid,
                        std::collections::HashMap<plantops_core::Metric, plantops_core::alert::MetricState>,
                    > = std::collections::HashMap::new();
                    for chunk in plant_ids.chunks($crate::sql::IDS_PER_STATEMENT) {
                        let mut query =
                            sqlx::QueryBuilder::<$db>::new($crate::sql::PLANTS_METRIC_STATES);
                        let mut list = query.separated(", ");
                        for id in chunk {
                            list.push_bind(*id);
                        }
                        query.push(")");
                        let rows: Vec<$crate::sql::PlantMetricStateRow> = query
                            .build_query_as()
                            .persistent(false)
                            .fetch_all(&mut *tx)
                            .await?;
                        for row in rows {
                            let (metric, state) = row.state.try_into()?;
                            states.entry(row.plant_id).or_default().insert(metric, state);
                        }
                    }
                    let plants = judged
                        .into_iter()
                        .map(|plant| $crate::JudgedPlant {
                            states: states.remove(&plant.id).unwrap_or_default(),
                            plant,
                        })
                        .collect();
                    let (states, alerts) = judge(plants);
                    Self::write_alerts(&mut tx, &states, &alerts).await?;
                    Self::raise_judged_marks(&mut tx, &newest).await?;
                    tx.commit().await?;
                    Ok(alerts)
                })
                .await
            }

            async fn unjudged_readings(
                &self,
                since: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> $crate::Result<Vec<plantops_core::Reading>> {
                let rows: Vec<$crate::sql::ReadingRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM readings r JOIN plants p ON p.id = r.plant_id \
                     WHERE p.thresholds IS NOT NULL AND r.time > $1 \
                     AND r.time > COALESCE(p.readings_judged_through, $1) \
                     ORDER BY r.time LIMIT $2",
                    $crate::sql::READING_COLUMNS_OF_R
                ))
                .bind($crate::sql::Timestamp(since))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn list_alerts(
                &self,
                filter: &$crate::AlertFilter,
                page: $crate::Page,
            ) -> $crate::Result<(Vec<plantops_core::alert::Alert>, u64)> {
                let conditions = |query: &mut sqlx::QueryBuilder<'_, $db>| {
                    query.push(" WHERE TRUE");
                    if let Some(plant_id) = filter.plant_id {
                        query.push(" AND plant_id = ").push_bind(plant_id);
                    }
                    if let Some(kind) = filter.kind {
                        query.push(" AND kind = ").push_bind(kind.as_str());
                    }
                    if let Some(since) = filter.since {
                        query
                            .push(" AND created_at >= ")
                            .push_bind($crate::sql::Timestamp(since));
                    }
                };
                let mut query = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {}, (SELECT COUNT(*) FROM alerts",
                    $crate::sql::ALERT_COLUMNS
                ));
                conditions(&mut query);
                query.push(") AS total FROM alerts");
                conditions(&mut query);
                query
                    .push(" ORDER BY created_at DESC, id LIMIT ")
                    .push_bind(i64::from(page.limit))
                    .push(" OFFSET ")
                    .push_bind(page.offset as i64);
                let rows: Vec<$crate::sql::AlertPageRow> =
                    query.build_query_as().fetch_all(&self.pool).await?;
                let count = async {
                    let mut query = sqlx::QueryBuilder::<$db>::new("SELECT COUNT(*) FROM alerts");
                    conditions(&mut query);
                    Ok::<i64, $crate::StoreError>(
                        query.build_query_scalar().fetch_one(&self.pool).await?,
                    )
                };
                $crate::sql::page_with_total(rows, |row| (row.alert.try_into(), row.total), count)
                    .await
            }

            async fn acknowledge_alert(
                &self,
                id: uuid::Uuid,
                at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Option<plantops_core::alert::Alert>> {
                let row: Option<$crate::sql::AlertRow> = sqlx::query_as(&format!(
                    "UPDATE alerts SET acknowledged_at = COALESCE(acknowledged_at, $1) \
                     WHERE id = $2 RETURNING {}",
                    $crate::sql::ALERT_COLUMNS
                ))
                .bind($crate::sql::Timestamp(at))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn claim_due_alerts(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                lease_until: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> $crate::Result<Vec<$crate::QueuedAlert>> {
                let rows: Vec<$crate::sql::QueuedAlertRow> = sqlx::query_as(&format!(
                    "UPDATE alerts SET next_attempt_at = $1 WHERE id IN \
                     (SELECT id FROM alerts WHERE delivery = 'pending' AND next_attempt_at <= $2 \
                      ORDER BY created_at, id LIMIT $3{}) \
                     RETURNING {}, attempts",
                    Self::SKIP_LOCKED,
                    $crate::sql::ALERT_COLUMNS
                ))
                .bind($crate::sql::Timestamp(lease_until))
                .bind($crate::sql::Timestamp(now))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                let mut claimed = rows
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<$crate::Result<Vec<$crate::QueuedAlert>>>()?;
                // RETURNING keeps no order.
                claimed.sort_by_key(|q| (q.alert.created_at, q.alert.id));
                Ok(claimed)
            }

            async fn update_delivery(&self, update: &$crate::DeliveryUpdate) -> $crate::Result<()> {
                sqlx::query(
                    "UPDATE alerts SET delivery = $1, attempts = $2, next_attempt_at = $3 \
                     WHERE id = $4",
                )
                .bind(update.delivery.as_str())
                .bind(i32::try_from(update.attempts).unwrap_or(i32::MAX))
                .bind($crate::sql::Timestamp(update.next_attempt_at))
                .bind(update.id)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn count_pending_alerts(&self) -> $crate::Result<u64> {
                let pending: i64 =
                    sqlx::query_scalar(
                        "SELECT (SELECT count(*) FROM alerts WHERE delivery = 'pending') \
                         + (SELECT count(*) FROM channel_deliveries WHERE delivery = 'pending')",
                    )
                        .fetch_one(&self.pool)
                        .await?;
                Ok(u64::try_from(pending).unwrap_or(0))
            }
        }
    };
}

pub(crate) use alert_store;

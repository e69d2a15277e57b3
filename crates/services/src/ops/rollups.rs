//! Long-term history: hourly rollups (min/max/sum/count per metric) of
//! each plant's readings, kept when `PLANTOPS_RETENTION_DAYS` prunes the
//! raw readings, so a chart over a year still has its year.
//!
//! Every instance refreshes the hours of the readings it stores (from the
//! event bus) every [`FLUSH`]; at start it refreshes every hour since the
//! last refresh on record, so what was stored while nothing ran is rolled up
//! too. A refresh recomputes whole hours from the raw readings, which is
//! why raw readings are pruned at whole hours only, and never an hour
//! older than the last prune is refreshed.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeZone, Utc};
use plantops_core::event::Event;
use plantops_store::{DynStore, SeriesPoint};
use tokio::sync::broadcast;
use uuid::Uuid;

/// How often the hours of new readings are rolled up: the lag of the
/// rolled-up part of a chart.
pub const FLUSH: Duration = Duration::from_secs(60);
/// Rolled up up to here (every hour before it is current).
const THROUGH: &str = "rollups.through";
/// Raw readings before this were pruned: their hours are final.
const PRUNED_BEFORE: &str = "rollups.pruned_before";

fn hour_of(time: DateTime<Utc>) -> DateTime<Utc> {
    time.duration_trunc(chrono::Duration::hours(1))
        .unwrap_or(time)
}

async fn read_time(store: &DynStore, key: &str) -> plantops_store::Result<Option<DateTime<Utc>>> {
    Ok(store
        .get_setting(key)
        .await?
        .and_then(|raw| DateTime::parse_from_rfc3339(&raw).ok())
        .map(|t| t.with_timezone(&Utc)))
}

/// Refreshes every plant's hours in `[from, to)`, never before the last
/// prune.
pub async fn refresh_all(
    store: &DynStore,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> plantops_store::Result<()> {
    let from = match read_time(store, PRUNED_BEFORE).await? {
        Some(pruned) => from.max(pruned),
        None => from,
    };
    if from >= to {
        return Ok(());
    }
    for plant in store.all_plants().await? {
        store.refresh_rollups(plant.id, from, to).await?;
    }
    Ok(())
}

/// Rolls up every hour before `before` and then prunes the raw readings
/// before it (a whole hour): the retention job.
pub async fn prune_raw(store: &DynStore, before: DateTime<Utc>) -> plantops_store::Result<u64> {
    let before = hour_of(before);
    let since = read_time(store, PRUNED_BEFORE)
        .await?
        .unwrap_or_else(|| Utc.timestamp_opt(0, 0).single().unwrap_or(before));
    refresh_all(store, since, before).await?;
    store
        .put_setting(PRUNED_BEFORE, Some(&before.to_rfc3339()))
        .await?;
    store.prune_readings(before).await
}

/// Keeps the rollups current, as the module describes.
pub async fn maintain(store: DynStore, events: broadcast::Sender<Event>) {
    let mut received = events.subscribe();
    let started = Utc::now();
    let since = match read_time(&store, THROUGH).await {
        Ok(Some(through)) => through - chrono::Duration::hours(1),
        Ok(None) => Utc.timestamp_opt(0, 0).single().unwrap_or(started),
        Err(error) => {
            tracing::warn!(%error, "cannot read the rollups' progress");
            return;
        }
    };
    let mut everything_since = Some(since);
    let mut dirty: BTreeSet<(Uuid, DateTime<Utc>)> = BTreeSet::new();
    let mut flush = tokio::time::interval(FLUSH);
    loop {
        tokio::select! {
            event = received.recv() => match event {
                Ok(Event::Reading(reading)) => {
                    if let Some(plant) = reading.plant_id {
                        dirty.insert((plant, hour_of(reading.time)));
                    }
                }
                Ok(_) => {}
                // Readings went by unseen: everything since the last flush.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    everything_since.get_or_insert(Utc::now() - FLUSH * 2);
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = flush.tick() => {
                let now = Utc::now();
                let flushed = flush_dirty(&store, everything_since, &dirty, now).await;
                match flushed {
                    Ok(()) => {
                        everything_since = None;
                        dirty.clear();
                    }
                    Err(error) => tracing::warn!(%error, "cannot refresh the hourly rollups"),
                }
            }
        }
    }
}

async fn flush_dirty(
    store: &DynStore,
    everything_since: Option<DateTime<Utc>>,
    dirty: &BTreeSet<(Uuid, DateTime<Utc>)>,
    now: DateTime<Utc>,
) -> plantops_store::Result<()> {
    if everything_since.is_none() && dirty.is_empty() {
        // Nothing stored since the last flush: no write (an SD card's sake).
        return Ok(());
    }
    if let Some(since) = everything_since {
        refresh_all(store, since, now).await?;
    }
    let pruned = read_time(store, PRUNED_BEFORE).await?;
    for (plant, hour) in dirty {
        if pruned.is_some_and(|pruned| *hour < pruned) {
            continue;
        }
        let end = *hour + chrono::Duration::hours(1);
        store.refresh_rollups(*plant, *hour, end).await?;
    }
    store.put_setting(THROUGH, Some(&now.to_rfc3339())).await
}

/// A plant's series over `[from, to)`. Buckets of whole hours come from
/// the rollups for every hour they hold for certain — settled hours (ended
/// more than two refreshes before `now`), and hours whose raw readings were
/// pruned (before `raw_since`) — and from the readings for the rest: a
/// month's chart reads 720 rollup rows instead of 43,200 readings. Shorter
/// buckets read the readings, and the rollups only where the readings are
/// gone. Buckets split between the two are merged.
pub async fn series(
    store: &DynStore,
    plant: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket_seconds: i64,
    raw_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> plantops_store::Result<Vec<SeriesPoint>> {
    let pruned = raw_since.filter(|since| *since > from);
    // Rolled up from here: the whole hour after `from` while the readings
    // before it are there (they answer the partial hour), else `from`.
    let rolled_from = match pruned {
        Some(_) => from,
        None => hour_of(from + chrono::Duration::hours(1) - chrono::Duration::nanoseconds(1)),
    };
    let whole_hours = bucket_seconds % 3600 == 0;
    let settled = hour_of(now - chrono::Duration::from_std(FLUSH * 2).unwrap_or_default());
    let mut rolled_until = if whole_hours { settled.min(to) } else { from };
    if let Some(since) = pruned {
        // The first whole hour from which every reading is still there.
        rolled_until = rolled_until.max((hour_of(since) + chrono::Duration::hours(1)).min(to));
    }
    if rolled_until <= rolled_from {
        return store.plant_series(plant, from, to, bucket_seconds).await;
    }
    let mut points = Vec::new();
    if rolled_from > from {
        points = store
            .plant_series(plant, from, rolled_from, bucket_seconds)
            .await?;
    }
    let rolled = store
        .rollup_series(plant, rolled_from, rolled_until, bucket_seconds)
        .await?;
    let recent = store
        .plant_series(plant, rolled_until, to, bucket_seconds)
        .await?;
    for point in rolled.into_iter().chain(recent) {
        match points.last_mut() {
            Some(last) if last.time == point.time => merge(last, &point),
            _ => points.push(point),
        }
    }
    Ok(points)
}

/// Two partial aggregates of one bucket as one.
fn merge(into: &mut SeriesPoint, other: &SeriesPoint) {
    let (a, b) = (into.count as f64, other.count as f64);
    let combine =
        |x: Option<plantops_store::Aggregate>, y: Option<plantops_store::Aggregate>| match (x, y) {
            (Some(x), Some(y)) => Some(plantops_store::Aggregate {
                min: x.min.min(y.min),
                max: x.max.max(y.max),
                // Weighted by the bucket's readings: exact when every reading
                // carries the metric, close otherwise.
                avg: (x.avg * a + y.avg * b) / (a + b).max(1.0),
            }),
            (x, y) => x.or(y),
        };
    into.soil_moisture = combine(into.soil_moisture, other.soil_moisture);
    into.temperature = combine(into.temperature, other.temperature);
    into.humidity = combine(into.humidity, other.humidity);
    into.light_level = combine(into.light_level, other.light_level);
    into.count += other.count;
}

#[cfg(test)]
mod tests {
    use super::*;
    use plantops_core::{Measurements, Reading};
    use plantops_testkit::TestDb;

    fn at(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() + chrono::Duration::minutes(minutes)
    }

    fn same(rolled: &[SeriesPoint], raw: &[SeriesPoint]) {
        assert_eq!(rolled.len(), raw.len());
        for (a, b) in rolled.iter().zip(raw) {
            assert_eq!((a.time, a.count), (b.time, b.count));
            let (x, y) = (a.soil_moisture.unwrap(), b.soil_moisture.unwrap());
            assert_eq!((x.min, x.max), (y.min, y.max), "{}", a.time);
            assert!(
                (x.avg - y.avg).abs() < 1e-9,
                "{}: {} vs {}",
                a.time,
                x.avg,
                y.avg
            );
        }
    }

    /// Whole-hour buckets read the settled hours from the rollups and the
    /// partial first hour and the unsettled last ones from the readings:
    /// the same answer as the readings alone.
    #[tokio::test]
    async fn whole_hour_buckets_come_from_the_rollups_and_answer_like_the_readings() {
        let db = TestDb::sqlite().await;
        let store = db.store().await;
        let device = Uuid::new_v4();
        let plant = plantops_core::Plant {
            id: Uuid::new_v4(),
            name: "Fern".into(),
            species: None,
            thresholds: None,
            alert_cooldown_minutes: 60,
            low_battery_percent: None,
            created_at: at(0),
            updated_at: at(0),
        };
        store.insert_plant(&plant).await.unwrap();
        let plant = plant.id;
        // Three days, a reading every 7 minutes.
        let readings: Vec<Reading> = (0..(3 * 24 * 60 / 7))
            .map(|i| Reading {
                time: at(i * 7),
                device_id: device,
                plant_id: Some(plant),
                values: Measurements {
                    soil_moisture: Some((i % 97) as f64),
                    ..Default::default()
                },
            })
            .collect();
        store.commit_batch(&readings, &[]).await.unwrap();
        let now = at(3 * 24 * 60);
        refresh_all(&store, at(0), now).await.unwrap();

        // From mid-hour, to now; two-hour buckets.
        let (from, to) = (at(95), now);
        let rolled = series(&store, plant, from, to, 7200, None, now)
            .await
            .unwrap();
        let raw = store.plant_series(plant, from, to, 7200).await.unwrap();
        same(&rolled, &raw);

        // A reading stored in a settled hour after its refresh is not in the
        // answer until the next refresh: proof the rollups answered.
        let late = Reading {
            time: at(600),
            ..readings[0].clone()
        };
        store.commit_batch(&[late], &[]).await.unwrap();
        let stale = series(&store, plant, from, to, 7200, None, now)
            .await
            .unwrap();
        same(&stale, &rolled);
        refresh_all(&store, at(540), at(660)).await.unwrap();
        let fresh = series(&store, plant, from, to, 7200, None, now)
            .await
            .unwrap();
        same(
            &fresh,
            &store.plant_series(plant, from, to, 7200).await.unwrap(),
        );

        // Buckets shorter than an hour read the readings.
        let short = series(&store, plant, from, to, 1800, None, now)
            .await
            .unwrap();
        same(
            &short,
            &store.plant_series(plant, from, to, 1800).await.unwrap(),
        );
    }
}

//! Care schedules and reminders: when each task of a plant is due, the list
//! of due tasks across plants, marking one done or snoozing it, and the
//! leader's job that raises one `care_due` notice per due date.

use std::collections::HashMap;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use plantops_core::alert::{Alert, AlertKind};
use plantops_core::journal::{CareEvent, CareEventKind, CareSource, TaskName};
use plantops_core::{Metric, Plant, Reading};
use plantops_store::{DynStore, LastCare, StoreError, StoredCareTask};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::journal::Journal;
use crate::alerts::Announcer;

/// How often the leader looks for tasks that became due.
const REMIND_INTERVAL: StdDuration = StdDuration::from_secs(60);
/// How far back the soil moisture is read to find when a dry spell began.
const DRY_SPELL_LOOKBACK: Duration = Duration::days(7);
const DRY_SPELL_READINGS: u32 = 10_000;
/// Longest snooze, in hours (two weeks).
pub const MAX_SNOOZE_HOURS: u32 = 336;

/// When a plant was last watered and when watering is due next.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Watering {
    pub last: Option<DateTime<Utc>>,
    pub next: Option<DateTime<Utc>>,
}

/// Why a task is due when it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DueReason {
    /// Its interval since it was last done (or since it was scheduled).
    Interval,
    /// The soil moisture stayed below the plant's minimum long enough.
    SoilBelowMin,
}

/// A scheduled task with when it is due.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    pub id: Uuid,
    pub plant_id: Uuid,
    pub plant_name: String,
    pub task: String,
    /// When it is due (after a snooze, when the snooze ends).
    pub due_at: DateTime<Utc>,
    pub reason: DueReason,
    pub overdue: bool,
    pub snoozed_until: Option<DateTime<Utc>>,
    /// When it was last done, from the journal.
    pub last_done_at: Option<DateTime<Utc>>,
    pub every_days: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("no such task")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Due dates, the task list and the reminders.
#[derive(Clone)]
pub struct Tasks {
    store: DynStore,
    journal: Journal,
    announcer: Announcer,
}

impl Tasks {
    pub fn new(store: DynStore, journal: Journal, announcer: Announcer) -> Self {
        Self {
            store,
            journal,
            announcer,
        }
    }

    /// Every scheduled task (or one plant's), with its due date, soonest first.
    pub async fn list(
        &self,
        plant_id: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> Result<Vec<TaskView>, StoreError> {
        let last = self.store.last_care().await?;
        self.views(plant_id, &last, now).await
    }

    /// Every plant's last watering (from the journal) and next one due
    /// (its schedule's water task), with the journal read once.
    pub async fn watering(
        &self,
        now: DateTime<Utc>,
    ) -> Result<HashMap<Uuid, Watering>, StoreError> {
        let last = self.store.last_care().await?;
        let mut watering: HashMap<Uuid, Watering> = HashMap::new();
        for entry in last.iter().filter(|l| l.kind == CareEventKind::Watered) {
            let plant = watering.entry(entry.plant_id).or_default();
            plant.last = plant.last.max(Some(entry.at));
        }
        for task in self.views(None, &last, now).await? {
            if task.task == TaskName::Water.as_str() {
                watering.entry(task.plant_id).or_default().next = Some(task.due_at);
            }
        }
        Ok(watering)
    }

    async fn views(
        &self,
        plant_id: Option<Uuid>,
        last: &[LastCare],
        now: DateTime<Utc>,
    ) -> Result<Vec<TaskView>, StoreError> {
        let tasks = self.store.care_tasks(plant_id).await?;
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let plants: HashMap<Uuid, Plant> = match plant_id {
            Some(id) => self
                .store
                .get_plant(id)
                .await?
                .into_iter()
                .map(|p| (p.id, p))
                .collect(),
            None => self
                .store
                .all_plants()
                .await?
                .into_iter()
                .map(|p| (p.id, p))
                .collect(),
        };
        let mut views = Vec::with_capacity(tasks.len());
        for task in tasks {
            let Some(plant) = plants.get(&task.plant_id) else {
                continue;
            };
            let Some(name) = TaskName::parse(&task.rule.task) else {
                continue;
            };
            let dry_since = match (task.rule.when_soil_below_min_minutes, soil_min(plant)) {
                (Some(_), Some(min)) => {
                    let readings = self
                        .store
                        .plant_history(plant.id, now - DRY_SPELL_LOOKBACK, DRY_SPELL_READINGS)
                        .await?;
                    dry_spell_start(&readings, min)
                }
                _ => None,
            };
            views.push(due(
                &task,
                plant,
                &name,
                last_done(last, plant.id, &name),
                dry_since,
                now,
            ));
        }
        views.sort_by_key(|v| v.due_at);
        Ok(views)
    }

    /// Records the task's journal entry and ends its snooze.
    pub async fn done(
        &self,
        id: Uuid,
        source: CareSource,
        recorded_by: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<CareEvent, TaskError> {
        let task = self.store.care_task(id).await?.ok_or(TaskError::NotFound)?;
        let name = TaskName::parse(&task.rule.task).ok_or(TaskError::NotFound)?;
        let custom = matches!(name, TaskName::Custom(_));
        let event = CareEvent {
            id: Uuid::new_v4(),
            plant_id: task.plant_id,
            kind: name.event_kind(),
            at: now,
            amount: None,
            unit: None,
            text: custom.then(|| name.as_str().to_string()),
            task: custom.then(|| name.as_str().to_string()),
            source,
            recorded_by,
            created_at: now,
        };
        self.journal.record(&event).await?;
        self.store.snooze_care_task(id, None).await?;
        Ok(event)
    }

    /// Puts a task off for `hours` from now.
    pub async fn snooze(
        &self,
        id: Uuid,
        hours: u32,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, TaskError> {
        let until = now + Duration::hours(i64::from(hours));
        if self.store.snooze_care_task(id, Some(until)).await? {
            Ok(until)
        } else {
            Err(TaskError::NotFound)
        }
    }

    /// Raises the notices of tasks that became due once a minute (leader
    /// only: one notice however many instances run).
    pub async fn remind_periodically(self) {
        super::every(REMIND_INTERVAL, "care reminders", |now| self.remind(now)).await
    }

    /// One `care_due` notice for each task due by `now` whose due date was
    /// not announced yet; returns how many were raised.
    pub async fn remind(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut raised = Vec::new();
        for task in self.list(None, now).await? {
            if task.due_at > now {
                break;
            }
            let message = match task.reason {
                DueReason::Interval => format!("{}: {} is due", task.plant_name, task.task),
                DueReason::SoilBelowMin => format!(
                    "{}: {} is due (the soil has stayed below its minimum)",
                    task.plant_name, task.task
                ),
            };
            let alert = Alert::pending(Some(task.plant_id), None, AlertKind::CareDue, message);
            if self
                .store
                .announce_care_due(task.id, task.due_at, &alert)
                .await?
            {
                raised.push(alert);
            }
        }
        let count = raised.len();
        self.announcer.announce(raised);
        Ok(count)
    }
}

fn soil_min(plant: &Plant) -> Option<f64> {
    plant.thresholds?.get(Metric::SoilMoisture)?.min
}

fn last_done(last: &[LastCare], plant_id: Uuid, name: &TaskName) -> Option<DateTime<Utc>> {
    last.iter()
        .filter(|l| l.plant_id == plant_id && name.completed_by(l.kind, l.task.as_deref()))
        .map(|l| l.at)
        .max()
}

/// When the soil moisture fell below `min` and stayed there until the
/// newest reading; `None` when the newest reading is at or above it.
pub fn dry_spell_start(readings: &[Reading], min: f64) -> Option<DateTime<Utc>> {
    let mut soil: Vec<(DateTime<Utc>, f64)> = readings
        .iter()
        .filter_map(|r| r.values.get(Metric::SoilMoisture).map(|v| (r.time, v)))
        .collect();
    soil.sort_by_key(|(time, _)| std::cmp::Reverse(*time));
    soil.iter()
        .take_while(|(_, value)| *value < min)
        .last()
        .map(|(time, _)| *time)
}

/// When `task` is due: its interval after it was last done (or scheduled),
/// sooner when the soil has stayed dry long enough, later while snoozed.
fn due(
    task: &StoredCareTask,
    plant: &Plant,
    name: &TaskName,
    last_done_at: Option<DateTime<Utc>>,
    dry_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> TaskView {
    let from = last_done_at.unwrap_or(task.created_at);
    let mut due_at = from + task.rule.interval_from(from);
    let mut reason = DueReason::Interval;
    if let (Some(minutes), Some(since)) = (task.rule.when_soil_below_min_minutes, dry_since) {
        // A spell that began before the last watering is not this one's.
        let dry_due = since.max(from) + Duration::minutes(i64::from(minutes));
        if dry_due < due_at {
            due_at = dry_due;
            reason = DueReason::SoilBelowMin;
        }
    }
    if let Some(until) = task.snoozed_until.filter(|until| *until > due_at) {
        due_at = until;
    }
    TaskView {
        id: task.id,
        plant_id: plant.id,
        plant_name: plant.name.clone(),
        task: name.as_str().to_string(),
        due_at,
        reason,
        overdue: due_at <= now,
        snoozed_until: task.snoozed_until.filter(|until| *until > now),
        last_done_at,
        every_days: task.rule.every_days,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use plantops_core::journal::CareTaskRule;
    use plantops_core::{Bounds, Measurements, Thresholds};

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
    }

    fn plant() -> Plant {
        Plant {
            id: Uuid::new_v4(),
            name: "Basil".into(),
            species: None,
            thresholds: Some(Thresholds {
                soil_moisture: Some(Bounds {
                    min: Some(30.0),
                    max: None,
                }),
                ..Default::default()
            }),
            alert_cooldown_minutes: 30,
            low_battery_percent: None,
            created_at: t0(),
            updated_at: t0(),
        }
    }

    fn water(plant: &Plant, below_minutes: Option<u32>) -> StoredCareTask {
        StoredCareTask {
            id: Uuid::new_v4(),
            plant_id: plant.id,
            rule: CareTaskRule {
                task: "water".into(),
                every_days: 7,
                when_soil_below_min_minutes: below_minutes,
                winter_months: Vec::new(),
                winter_factor: None,
            },
            snoozed_until: None,
            announced_due_at: None,
            created_at: t0(),
        }
    }

    fn soil(minutes: i64, value: f64) -> Reading {
        Reading {
            time: t0() + Duration::minutes(minutes),
            device_id: Uuid::nil(),
            plant_id: None,
            values: Measurements {
                soil_moisture: Some(value),
                ..Default::default()
            },
        }
    }

    #[test]
    fn a_task_is_due_its_interval_after_it_was_last_done_and_later_while_snoozed() {
        let plant = plant();
        let mut task = water(&plant, None);
        let now = t0() + Duration::days(3);
        let never_done = due(&task, &plant, &TaskName::Water, None, None, now);
        assert_eq!(
            never_done.due_at,
            t0() + Duration::days(7),
            "from when it was scheduled"
        );
        let done = t0() + Duration::days(2);
        let view = due(&task, &plant, &TaskName::Water, Some(done), None, now);
        assert_eq!(view.due_at, done + Duration::days(7));
        assert!(!view.overdue);
        task.snoozed_until = Some(done + Duration::days(8));
        let view = due(&task, &plant, &TaskName::Water, Some(done), None, now);
        assert_eq!(view.due_at, done + Duration::days(8));
    }

    #[test]
    fn dry_soil_for_long_enough_makes_watering_due_sooner() {
        let plant = plant();
        let task = water(&plant, Some(60));
        let readings = [
            soil(0, 40.0),
            soil(10, 29.0),
            soil(20, 28.0),
            soil(30, 27.0),
        ];
        let since = dry_spell_start(&readings, 30.0);
        assert_eq!(since, Some(readings[1].time));
        let view = due(
            &task,
            &plant,
            &TaskName::Water,
            None,
            since,
            t0() + Duration::minutes(30),
        );
        assert_eq!(view.due_at, readings[1].time + Duration::minutes(60));
        assert_eq!(view.reason, DueReason::SoilBelowMin);
        // Back above the minimum: no dry spell.
        let wet = [soil(0, 29.0), soil(10, 35.0)];
        assert_eq!(dry_spell_start(&wet, 30.0), None);
    }

    #[test]
    fn a_custom_task_counts_only_its_own_entries() {
        let plant = plant();
        let at = t0() + Duration::days(1);
        let last = [
            LastCare {
                plant_id: plant.id,
                kind: plantops_core::journal::CareEventKind::Note,
                task: None,
                at,
            },
            LastCare {
                plant_id: plant.id,
                kind: plantops_core::journal::CareEventKind::Note,
                task: Some("mist".into()),
                at: at + Duration::hours(1),
            },
        ];
        let mist = TaskName::parse("mist").unwrap();
        assert_eq!(
            last_done(&last, plant.id, &mist),
            Some(at + Duration::hours(1))
        );
        assert_eq!(last_done(&last, plant.id, &TaskName::Water), None);
    }
}

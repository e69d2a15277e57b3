//! The care journal (what was done to a plant, by whom) and the care
//! schedule (what is due when): the types both the API and the store share,
//! and the rules that decide when a task is due.

use chrono::{DateTime, Datelike, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::validation::{Collector, FieldError};
use crate::ValidationErrors;

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CareEventKind {
    Watered,
    Fertilized,
    Repotted,
    Pruned,
    Treated,
    Note,
}

impl CareEventKind {
    pub const ALL: [CareEventKind; 6] = [
        CareEventKind::Watered,
        CareEventKind::Fertilized,
        CareEventKind::Repotted,
        CareEventKind::Pruned,
        CareEventKind::Treated,
        CareEventKind::Note,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CareEventKind::Watered => "watered",
            CareEventKind::Fertilized => "fertilized",
            CareEventKind::Repotted => "repotted",
            CareEventKind::Pruned => "pruned",
            CareEventKind::Treated => "treated",
            CareEventKind::Note => "note",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Who recorded an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CareSource {
    /// A signed-in user (browser session).
    User,
    /// An API token.
    Token,
    /// PlantOps itself (Home Assistant's button, a watering run).
    Automation,
    /// Read from the readings: a soil-moisture rise.
    Detected,
}

impl CareSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CareSource::User => "user",
            CareSource::Token => "token",
            CareSource::Automation => "automation",
            CareSource::Detected => "detected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            CareSource::User,
            CareSource::Token,
            CareSource::Automation,
            CareSource::Detected,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// The unit of an amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AmountUnit {
    Ml,
    G,
}

impl AmountUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            AmountUnit::Ml => "ml",
            AmountUnit::G => "g",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [AmountUnit::Ml, AmountUnit::G]
            .into_iter()
            .find(|u| u.as_str() == s)
    }
}

/// One entry of a plant's care journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CareEvent {
    pub id: Uuid,
    pub plant_id: Uuid,
    pub kind: CareEventKind,
    /// When it was done.
    pub at: DateTime<Utc>,
    pub amount: Option<f64>,
    pub unit: Option<AmountUnit>,
    pub text: Option<String>,
    /// The custom task this event completed, when it did.
    pub task: Option<String>,
    pub source: CareSource,
    /// The user or token name that recorded it; `None` for PlantOps itself.
    pub recorded_by: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Longest text of a journal entry, in characters.
pub const MAX_CARE_TEXT: usize = 2000;
/// Largest amount (ml or g).
pub const MAX_CARE_AMOUNT: f64 = 1_000_000.0;

/// A journal entry as the API takes it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCareEvent {
    pub kind: CareEventKind,
    /// Default: now; never in the future.
    pub at: Option<DateTime<Utc>>,
    /// 0–1,000,000, with `unit`.
    pub amount: Option<f64>,
    pub unit: Option<AmountUnit>,
    /// Up to 2,000 characters.
    pub text: Option<String>,
}

impl NewCareEvent {
    /// The event to store, or every problem named by its field.
    pub fn validated(
        self,
        plant_id: Uuid,
        source: CareSource,
        recorded_by: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<CareEvent, ValidationErrors> {
        let mut errors = Collector::default();
        // A little slack for a phone whose clock runs ahead.
        let at = self.at.unwrap_or(now);
        if at > now + Duration::minutes(1) {
            errors.push(FieldError::new(
                &["body", "at"],
                "at must not be in the future",
                "value_error.future",
            ));
        }
        if let Some(amount) = self.amount {
            if !amount.is_finite() || !(0.0..=MAX_CARE_AMOUNT).contains(&amount) {
                errors.push(FieldError::new(
                    &["body", "amount"],
                    "amount must be between 0 and 1000000",
                    "value_error.number",
                ));
            }
            if self.unit.is_none() {
                errors.push(FieldError::new(
                    &["body", "unit"],
                    "unit is required with an amount (ml or g)",
                    "value_error.missing",
                ));
            }
        } else if self.unit.is_some() {
            errors.push(FieldError::new(
                &["body", "amount"],
                "amount is required with a unit",
                "value_error.missing",
            ));
        }
        let text = self
            .text
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        if text
            .as_ref()
            .is_some_and(|t| t.chars().count() > MAX_CARE_TEXT)
        {
            errors.push(FieldError::new(
                &["body", "text"],
                "text must be at most 2000 characters",
                "value_error.str.max_length",
            ));
        }
        errors.finish()?;
        Ok(CareEvent {
            id: Uuid::new_v4(),
            plant_id,
            kind: self.kind,
            at: at.min(now),
            amount: self.amount,
            unit: self.unit,
            text,
            task: None,
            source,
            recorded_by,
            created_at: now,
        })
    }
}

/// What a scheduled task asks for: one of the three the journal knows, or
/// a named custom task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskName {
    Water,
    Fertilize,
    Repot,
    Custom(String),
}

/// Longest custom task name, in characters.
pub const MAX_TASK_NAME: usize = 60;

impl TaskName {
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        match s {
            "water" => Some(TaskName::Water),
            "fertilize" => Some(TaskName::Fertilize),
            "repot" => Some(TaskName::Repot),
            _ if !s.is_empty()
                && s.chars().count() <= MAX_TASK_NAME
                && !s.chars().any(char::is_control) =>
            {
                Some(TaskName::Custom(s.to_string()))
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            TaskName::Water => "water",
            TaskName::Fertilize => "fertilize",
            TaskName::Repot => "repot",
            TaskName::Custom(name) => name,
        }
    }

    /// The journal entry that completes it.
    pub fn event_kind(&self) -> CareEventKind {
        match self {
            TaskName::Water => CareEventKind::Watered,
            TaskName::Fertilize => CareEventKind::Fertilized,
            TaskName::Repot => CareEventKind::Repotted,
            TaskName::Custom(_) => CareEventKind::Note,
        }
    }

    /// Whether a journal entry of `kind`, completing the custom task
    /// `task` when named, completes this task.
    pub fn completed_by(&self, kind: CareEventKind, task: Option<&str>) -> bool {
        match self {
            TaskName::Custom(name) => task == Some(name.as_str()),
            _ => kind == self.event_kind(),
        }
    }
}

/// One task of a plant's care schedule, as the API shows and takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CareTaskRule {
    /// `water`, `fertilize`, `repot`, or a custom name (up to 60 characters).
    pub task: String,
    /// Due this many days (1–730) after the last time it was done.
    pub every_days: u32,
    /// `water` only: also due once the soil moisture has stayed below the
    /// plant's minimum this many minutes (5–10080).
    #[serde(default)]
    pub when_soil_below_min_minutes: Option<u32>,
    /// Months (1–12) in which the interval is multiplied by `winter_factor`.
    #[serde(default)]
    pub winter_months: Vec<u32>,
    /// 1–10; required with `winter_months`.
    #[serde(default)]
    pub winter_factor: Option<f64>,
}

/// A plant's whole schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CareSchedule {
    pub tasks: Vec<CareTaskRule>,
}

/// Most tasks one plant may have.
pub const MAX_TASKS: usize = 20;

impl CareSchedule {
    /// Checks every task; every problem is named by its place.
    pub fn validated(self) -> Result<Vec<(TaskName, CareTaskRule)>, ValidationErrors> {
        let mut errors = Collector::default();
        if self.tasks.len() > MAX_TASKS {
            errors.push(FieldError::new(
                &["body", "tasks"],
                "at most 20 tasks per plant",
                "value_error.list.max_items",
            ));
        }
        let mut seen = Vec::new();
        let mut tasks = Vec::new();
        for (n, rule) in self.tasks.into_iter().enumerate() {
            let n = n.to_string();
            let push = |errors: &mut Collector, field: &str, msg: &str, kind: &str| {
                errors.push(FieldError::new(&["body", "tasks", &n, field], msg, kind));
            };
            let Some(name) = TaskName::parse(&rule.task) else {
                push(
                    &mut errors,
                    "task",
                    "task must be water, fertilize, repot or a name of 1–60 characters",
                    "value_error",
                );
                continue;
            };
            if seen.contains(&name) {
                push(
                    &mut errors,
                    "task",
                    "each task once per plant",
                    "value_error.duplicate",
                );
            }
            seen.push(name.clone());
            if !(1..=730).contains(&rule.every_days) {
                push(
                    &mut errors,
                    "every_days",
                    "every_days must be 1–730",
                    "value_error.number",
                );
            }
            if let Some(minutes) = rule.when_soil_below_min_minutes {
                if name != TaskName::Water {
                    push(
                        &mut errors,
                        "when_soil_below_min_minutes",
                        "only the water task follows the soil moisture",
                        "value_error",
                    );
                } else if !(5..=10_080).contains(&minutes) {
                    push(
                        &mut errors,
                        "when_soil_below_min_minutes",
                        "when_soil_below_min_minutes must be 5–10080",
                        "value_error.number",
                    );
                }
            }
            if rule.winter_months.iter().any(|m| !(1..=12).contains(m)) {
                push(
                    &mut errors,
                    "winter_months",
                    "months are 1–12",
                    "value_error.number",
                );
            }
            match rule.winter_factor {
                Some(f) if !f.is_finite() || !(1.0..=10.0).contains(&f) => push(
                    &mut errors,
                    "winter_factor",
                    "winter_factor must be 1–10",
                    "value_error.number",
                ),
                None if !rule.winter_months.is_empty() => push(
                    &mut errors,
                    "winter_factor",
                    "winter_factor is required with winter_months",
                    "value_error.missing",
                ),
                _ => {}
            }
            let mut rule = rule;
            rule.task = name.as_str().to_string();
            rule.winter_months.sort_unstable();
            rule.winter_months.dedup();
            tasks.push((name, rule));
        }
        errors.finish()?;
        Ok(tasks)
    }
}

impl CareTaskRule {
    /// The interval that applies to a task last done at `from`: longer in
    /// the winter months (of `from`'s month, in UTC).
    pub fn interval_from(&self, from: DateTime<Utc>) -> Duration {
        let days = f64::from(self.every_days);
        let factor = match self.winter_factor {
            Some(f) if self.winter_months.contains(&from.month()) => f,
            _ => 1.0,
        };
        Duration::seconds((days * factor * 86_400.0).round() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn rule(task: &str) -> CareTaskRule {
        CareTaskRule {
            task: task.into(),
            every_days: 7,
            when_soil_below_min_minutes: None,
            winter_months: Vec::new(),
            winter_factor: None,
        }
    }

    #[test]
    fn winter_months_stretch_the_interval() {
        let mut water = rule("water");
        water.winter_months = vec![12, 1];
        water.winter_factor = Some(2.0);
        let june = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        let december = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        assert_eq!(water.interval_from(june), Duration::days(7));
        assert_eq!(water.interval_from(december), Duration::days(14));
    }

    #[test]
    fn a_schedule_names_each_bad_field() {
        let mut bad = rule("fertilize");
        bad.every_days = 0;
        bad.when_soil_below_min_minutes = Some(60);
        bad.winter_months = vec![13];
        let errors = CareSchedule {
            tasks: vec![bad, rule("water"), rule("water")],
        }
        .validated()
        .unwrap_err();
        let places: Vec<String> = errors.0.iter().map(|e| e.loc.join(".")).collect();
        for expected in [
            "body.tasks.0.every_days",
            "body.tasks.0.when_soil_below_min_minutes",
            "body.tasks.0.winter_months",
            "body.tasks.0.winter_factor",
            "body.tasks.2.task",
        ] {
            assert!(
                places.contains(&expected.to_string()),
                "{expected} in {places:?}"
            );
        }
        assert_eq!(places.len(), 5, "{places:?}");
    }

    #[test]
    fn a_custom_task_is_completed_by_its_own_notes_only() {
        let task = TaskName::parse("mist leaves").unwrap();
        let now = Utc::now();
        let mut note = NewCareEvent {
            kind: CareEventKind::Note,
            at: None,
            amount: None,
            unit: None,
            text: None,
        }
        .validated(Uuid::new_v4(), CareSource::User, None, now)
        .unwrap();
        assert!(!task.completed_by(note.kind, note.task.as_deref()));
        note.task = Some("mist leaves".into());
        assert!(task.completed_by(note.kind, note.task.as_deref()));
        assert!(TaskName::Water.completed_by(CareEventKind::Watered, note.task.as_deref()));
    }

    #[test]
    fn an_event_in_the_future_or_with_an_amount_but_no_unit_is_refused() {
        let now = Utc::now();
        let errors = NewCareEvent {
            kind: CareEventKind::Watered,
            at: Some(now + Duration::hours(2)),
            amount: Some(250.0),
            unit: None,
            text: Some("x".repeat(MAX_CARE_TEXT + 1)),
        }
        .validated(Uuid::new_v4(), CareSource::User, None, now)
        .unwrap_err();
        let places: Vec<String> = errors.0.iter().map(|e| e.loc.join(".")).collect();
        assert_eq!(places, ["body.at", "body.unit", "body.text"]);
    }
}

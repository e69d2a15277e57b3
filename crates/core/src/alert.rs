//! Alerts and the per-(plant, metric) threshold state machine:
//! ok → breached (alert) → recovered (a "back to normal" notice), with
//! hysteresis so a value hovering at a bound does not flap, and a cooldown
//! so a repeated breach does not notify again too soon.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::plant::BoundSide;
use crate::{Bounds, Metric};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    Threshold,
    Recovered,
    DeviceOffline,
    DeviceOnline,
    /// A TLS certificate PlantOps serves or trusts ends within 30 days.
    CertificateExpiring,
    /// A backup failed or did not restore to what the database held.
    BackupFailed,
    /// A device's battery fell below PLANTOPS_LOW_BATTERY_PERCENT.
    LowBattery,
    /// A task of a plant's care schedule is due (docs/care.md).
    CareDue,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Threshold => "threshold",
            AlertKind::Recovered => "recovered",
            AlertKind::DeviceOffline => "device_offline",
            AlertKind::DeviceOnline => "device_online",
            AlertKind::CertificateExpiring => "certificate_expiring",
            AlertKind::BackupFailed => "backup_failed",
            AlertKind::LowBattery => "low_battery",
            AlertKind::CareDue => "care_due",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            AlertKind::Threshold | AlertKind::BackupFailed => Severity::Critical,
            AlertKind::DeviceOffline | AlertKind::CertificateExpiring | AlertKind::LowBattery => {
                Severity::Warning
            }
            AlertKind::Recovered | AlertKind::DeviceOnline | AlertKind::CareDue => Severity::Info,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            AlertKind::Threshold,
            AlertKind::Recovered,
            AlertKind::DeviceOffline,
            AlertKind::DeviceOnline,
            AlertKind::CertificateExpiring,
            AlertKind::BackupFailed,
            AlertKind::LowBattery,
            AlertKind::CareDue,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// How urgent an alert is; a notification channel takes alerts from its
/// minimum severity up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Good news: back to normal, back online.
    Info,
    /// Needs attention soon: offline, battery, certificate.
    Warning,
    /// Needs attention now: a threshold breached, a backup failed.
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Its rank, stored beside a channel so the outbox can compare in SQL.
    pub fn level(self) -> i32 {
        self as i32
    }

    pub fn from_level(level: i64) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|v| i64::from(v.level()) == level)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    Pending,
    Sent,
    Failed,
    /// No notification channel was configured.
    Disabled,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Pending => "pending",
            Delivery::Sent => "sent",
            Delivery::Failed => "failed",
            Delivery::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Delivery::Pending,
            Delivery::Sent,
            Delivery::Failed,
            Delivery::Disabled,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    pub id: Uuid,
    pub plant_id: Option<Uuid>,
    pub device_id: Option<Uuid>,
    pub kind: AlertKind,
    pub metric: Option<Metric>,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub direction: Option<BoundSide>,
    pub message: String,
    pub created_at: DateTime<Utc>,
    pub delivery: Delivery,
    pub acknowledged_at: Option<DateTime<Utc>>,
}

impl Alert {
    /// A new alert waiting for delivery (the notifier marks it disabled if
    /// no channel is set); the caller adds metric, value and bounds.
    pub fn pending(
        plant_id: Option<Uuid>,
        device_id: Option<Uuid>,
        kind: AlertKind,
        message: String,
    ) -> Self {
        Alert {
            id: Uuid::new_v4(),
            plant_id,
            device_id,
            kind,
            metric: None,
            value: None,
            threshold: None,
            direction: None,
            message,
            created_at: crate::now(),
            delivery: Delivery::Pending,
            acknowledged_at: None,
        }
    }
}

/// What the state machine remembers per (plant, metric); persisted so a
/// restart neither repeats nor forgets a notified breach.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MetricState {
    /// The bound currently breached, if any.
    pub breached: Option<BoundSide>,
    /// Whether the current breach was notified (cooldown may suppress it).
    pub notified: bool,
    /// When a breach of this metric was last notified.
    pub last_notified_at: Option<DateTime<Utc>>,
    /// The time of the reading that last changed this state. Readings taken
    /// at or before it are not judged: with several instances, or a
    /// redelivery, readings arrive out of order, and an older reading must
    /// not undo what a newer one decided.
    pub changed_at: Option<DateTime<Utc>>,
}

/// What a reading caused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    /// A bound is newly breached and should be notified.
    Breach { side: BoundSide, threshold: f64 },
    /// Newly breached, but within the cooldown of the last notice.
    SuppressedBreach { side: BoundSide },
    /// Back inside the bounds (with margin) after a notified breach.
    Recovery { side: BoundSide, threshold: f64 },
    /// Back inside after a breach that was never notified.
    SilentRecovery,
}

/// The share of the band (or of the metric's range, for one-sided bounds)
/// a value must come back inside a bound before it counts as recovered.
pub const HYSTERESIS: f64 = 0.02;

fn margin(metric: Metric, bounds: &Bounds) -> f64 {
    match (bounds.min, bounds.max) {
        (Some(min), Some(max)) => (max - min) * HYSTERESIS,
        _ => {
            let (low, high) = metric.range();
            (high - low) * HYSTERESIS
        }
    }
}

impl MetricState {
    /// Applies one value measured `at`; returns the new state and the
    /// transition, if any. A value measured no later than the last change
    /// is ignored.
    pub fn observe(
        self,
        metric: Metric,
        bounds: &Bounds,
        value: f64,
        at: DateTime<Utc>,
        cooldown: Duration,
    ) -> (MetricState, Option<Transition>) {
        if self.changed_at.is_some_and(|changed| at <= changed) {
            return (self, None);
        }
        let (next, transition) = self.judge(metric, bounds, value, at, cooldown);
        if next == self {
            return (self, transition);
        }
        let next = MetricState {
            changed_at: Some(at),
            ..next
        };
        (next, transition)
    }

    fn judge(
        self,
        metric: Metric,
        bounds: &Bounds,
        value: f64,
        at: DateTime<Utc>,
        cooldown: Duration,
    ) -> (MetricState, Option<Transition>) {
        match self.breached {
            None => match bounds.violation(value) {
                None => (self, None),
                Some((side, threshold)) => {
                    let cooling = self
                        .last_notified_at
                        .is_some_and(|last| at - last < cooldown);
                    if cooling {
                        let state = MetricState {
                            breached: Some(side),
                            notified: false,
                            ..self
                        };
                        (state, Some(Transition::SuppressedBreach { side }))
                    } else {
                        let state = MetricState {
                            breached: Some(side),
                            notified: true,
                            last_notified_at: Some(at),
                            ..self
                        };
                        (state, Some(Transition::Breach { side, threshold }))
                    }
                }
            },
            Some(side) => {
                let margin = margin(metric, bounds);
                let recovered = match side {
                    BoundSide::Min => bounds.min.is_none_or(|min| value >= min + margin),
                    BoundSide::Max => bounds.max.is_none_or(|max| value <= max - margin),
                };
                // Crossing to the other bound is a new breach of that side.
                if let Some((other, threshold)) =
                    bounds.violation(value).filter(|(s, _)| *s != side)
                {
                    let state = MetricState {
                        breached: Some(other),
                        notified: true,
                        last_notified_at: Some(at),
                        ..self
                    };
                    return (
                        state,
                        Some(Transition::Breach {
                            side: other,
                            threshold,
                        }),
                    );
                }
                if !recovered {
                    return (self, None);
                }
                let state = MetricState {
                    breached: None,
                    notified: false,
                    ..self
                };
                let threshold = match side {
                    BoundSide::Min => bounds.min,
                    BoundSide::Max => bounds.max,
                };
                match (self.notified, threshold) {
                    (true, Some(threshold)) => {
                        (state, Some(Transition::Recovery { side, threshold }))
                    }
                    _ => (state, Some(Transition::SilentRecovery)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 1, 8, 0, 0).unwrap() + Duration::minutes(minutes)
    }

    const SOIL: Bounds = Bounds {
        min: Some(20.0),
        max: Some(80.0),
    };

    fn run(values: &[(i64, f64)]) -> Vec<Option<Transition>> {
        let mut state = MetricState::default();
        values
            .iter()
            .map(|(minute, value)| {
                let (next, transition) = state.observe(
                    Metric::SoilMoisture,
                    &SOIL,
                    *value,
                    t(*minute),
                    Duration::minutes(60),
                );
                state = next;
                transition
            })
            .collect()
    }

    #[test]
    fn a_breach_alerts_once_and_recovers_once() {
        let transitions = run(&[
            (0, 50.0),
            (1, 15.0),
            (2, 14.0),
            (3, 10.0),
            (4, 30.0),
            (5, 31.0),
        ]);
        assert_eq!(transitions[0], None);
        assert_eq!(
            transitions[1],
            Some(Transition::Breach {
                side: BoundSide::Min,
                threshold: 20.0
            })
        );
        assert_eq!(&transitions[2..4], &[None, None]);
        assert_eq!(
            transitions[4],
            Some(Transition::Recovery {
                side: BoundSide::Min,
                threshold: 20.0
            })
        );
        assert_eq!(transitions[5], None);
    }

    #[test]
    fn a_reading_older_than_the_last_change_is_not_judged() {
        // Minute 2's breach arrives first; minute 1's normal value, late,
        // must not count as a recovery, nor a duplicate minute 2 as news.
        let transitions = run(&[(2, 10.0), (1, 50.0), (2, 50.0), (3, 9.0), (4, 50.0)]);
        assert!(matches!(transitions[0], Some(Transition::Breach { .. })));
        assert_eq!(&transitions[1..4], &[None, None, None]);
        assert!(matches!(transitions[4], Some(Transition::Recovery { .. })));
    }

    #[test]
    fn hovering_at_the_bound_does_not_flap() {
        // Margin is 2 % of 60 = 1.2: 20.5 is not yet recovered.
        let transitions = run(&[(0, 19.9), (1, 20.5), (2, 19.8), (3, 20.9), (4, 21.3)]);
        assert!(matches!(transitions[0], Some(Transition::Breach { .. })));
        assert_eq!(&transitions[1..4], &[None, None, None]);
        assert!(matches!(transitions[4], Some(Transition::Recovery { .. })));
    }

    #[test]
    fn a_repeated_breach_within_the_cooldown_is_not_notified() {
        let transitions = run(&[(0, 10.0), (5, 50.0), (10, 10.0), (20, 50.0), (70, 10.0)]);
        assert!(matches!(transitions[0], Some(Transition::Breach { .. })));
        assert!(matches!(transitions[1], Some(Transition::Recovery { .. })));
        assert_eq!(
            transitions[2],
            Some(Transition::SuppressedBreach {
                side: BoundSide::Min
            })
        );
        assert_eq!(transitions[3], Some(Transition::SilentRecovery));
        assert!(
            matches!(transitions[4], Some(Transition::Breach { .. })),
            "cooldown over"
        );
    }

    #[test]
    fn jumping_to_the_other_bound_is_a_new_breach() {
        let transitions = run(&[(0, 10.0), (1, 95.0)]);
        assert_eq!(
            transitions[1],
            Some(Transition::Breach {
                side: BoundSide::Max,
                threshold: 80.0
            })
        );
    }
}

//! Alerting: the evaluator turns committed readings and device status
//! changes into stored alerts; the notifier delivers them from the outbox.

pub mod certificates;
pub mod channels;
pub mod discord;
pub mod evaluator;
pub mod notifier;
pub mod send;
pub mod settings;

use std::sync::Arc;

use plantops_core::alert::Alert;
use plantops_core::event::Event;
use tokio::sync::{broadcast, Notify};

/// What every source of alerts (readings, device status, batteries,
/// certificates, backups) does once its alerts are stored: log and count
/// them, show them live, and wake the notifier. One place, so no source
/// forgets a step.
#[derive(Clone)]
pub struct Announcer {
    events: broadcast::Sender<Event>,
    /// Wakes the notifier.
    outbox: Arc<Notify>,
}

impl Announcer {
    pub fn new(events: broadcast::Sender<Event>, outbox: Arc<Notify>) -> Self {
        Self { events, outbox }
    }

    /// Announces alerts already stored.
    pub fn announce(&self, alerts: Vec<Alert>) {
        if alerts.is_empty() {
            return;
        }
        for alert in alerts {
            tracing::info!(plant_id = ?alert.plant_id, device_id = ?alert.device_id, kind = alert.kind.as_str(), message = %alert.message, "alert raised");
            metrics::counter!("plantops_alerts_total", "kind" => alert.kind.as_str()).increment(1);
            let _ = self.events.send(Event::Alert(alert));
        }
        self.outbox.notify_one();
    }
}

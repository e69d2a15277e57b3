//! Alerting: the evaluator turns committed readings and device status
//! changes into stored alerts; the notifier delivers them from the outbox.

pub mod certificates;
pub mod channels;
pub mod discord;
pub mod evaluator;
pub mod notifier;
pub mod send;
pub mod settings;

//! PlantOps' domain services and the background work that serves them,
//! between the HTTP API (`plantops-server`) and the store, the broker and
//! the advisor. [`start::Services::start`] opens the store, starts the
//! broker, ingestion and every worker; the HTTP crate and the CLI call the
//! services here, never each other's modules.
//!
//! * [`alerts`]: judging readings and device status, raising alerts, and
//!   delivering them through the notification channels.
//! * [`keys`]: the installation key and the secrets sealed with it.
//! * [`care`]: the care advisor (care plans, health checks).
//! * [`home_assistant`]: the settings and the MQTT discovery bridge.
//! * [`accounts`]: users' API tokens.
//! * [`ops`]: backups, rollups, retention, leader jobs, supervision.

#![forbid(unsafe_code)]

pub mod accounts;
pub mod alerts;
pub mod care;
pub mod home_assistant;
pub mod keys;
pub mod ops;
pub mod start;

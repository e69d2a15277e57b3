//! In-process events: what ingestion, evaluation and the API tell each other
//! (and the UI, through the SSE stream).

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::alert::Alert;
use crate::{DeviceStatus, Reading};

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DeviceStatusChange {
    pub device_id: Uuid,
    pub plant_id: Option<Uuid>,
    pub status: DeviceStatus,
    /// The status before this change.
    pub previous: DeviceStatus,
    pub last_seen_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A reading was committed to the store.
    Reading(Reading),
    DeviceStatus(DeviceStatusChange),
    /// An alert was raised (and stored).
    Alert(Alert),
    /// A plant was created, changed or removed.
    PlantChanged {
        plant_id: Uuid,
        removed: bool,
    },
}

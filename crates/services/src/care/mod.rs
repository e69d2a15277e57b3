//! Caring for plants: the care journal, schedules and their reminders, and
//! the advisor's care plans and health checks.

pub mod advisor;
pub mod journal;
pub mod tasks;

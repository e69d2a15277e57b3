//! Caring for plants: the care journal, schedules and their reminders, and
//! the advisor's care plans and health checks.

pub mod advisor;
pub mod journal;
pub mod tasks;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use plantops_store::StoreError;

/// The care jobs' loop: `step` now, then every `interval`, each time saying
/// how many things it did (when any) or why it failed.
async fn every<F, Fut>(interval: Duration, job: &'static str, step: F)
where
    F: Fn(DateTime<Utc>) -> Fut,
    Fut: Future<Output = Result<usize, StoreError>>,
{
    loop {
        match step(Utc::now()).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(job, count, "care job done"),
            Err(error) => tracing::error!(job, %error, "care job failed"),
        }
        tokio::time::sleep(interval).await;
    }
}

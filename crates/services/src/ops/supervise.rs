//! Background work that outlives a panic: each task runs under a supervisor
//! that logs and counts the panic (or an unexpected end), restarts the task
//! with backoff, and remembers it for `/api/health`. One bad alert or
//! reading must not silence alerting for good.

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use plantops_core::backoff::Backoff;
use tokio::task::{AbortHandle, JoinHandle};

/// A task that ran this long without failing starts its backoff afresh.
const STABLE_AFTER: Duration = Duration::from_secs(600);
/// How long a failure keeps a task on the health page.
const REMEMBERED_FOR: chrono::Duration = chrono::Duration::minutes(30);

#[derive(Debug, Clone, PartialEq)]
pub struct TaskFailure {
    pub restarts: u64,
    pub last_failure: DateTime<Utc>,
    pub reason: String,
}

/// What the supervisors saw, by task name.
#[derive(Debug, Default)]
pub struct TaskHealth {
    failures: Mutex<BTreeMap<&'static str, TaskFailure>>,
}

impl TaskHealth {
    fn failures(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, TaskFailure>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, task: &'static str, reason: String) {
        let mut failures = self.failures();
        let entry = failures.entry(task).or_insert(TaskFailure {
            restarts: 0,
            last_failure: Utc::now(),
            reason: String::new(),
        });
        entry.restarts += 1;
        entry.last_failure = Utc::now();
        entry.reason = reason;
    }

    /// Tasks that failed recently, with how often and why.
    pub fn recent(&self) -> BTreeMap<&'static str, TaskFailure> {
        let since = Utc::now() - REMEMBERED_FOR;
        self.failures()
            .iter()
            .filter(|(_, failure)| failure.last_failure >= since)
            .map(|(task, failure)| (*task, failure.clone()))
            .collect()
    }
}

fn panic_reason(payload: Box<dyn Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}

/// Aborts the running attempt when the supervisor itself is aborted.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the task `start` makes, and again whenever it panics or ends.
pub fn supervise<F, Fut>(
    task: &'static str,
    health: std::sync::Arc<TaskHealth>,
    start: F,
) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            let started = tokio::time::Instant::now();
            let attempt = tokio::spawn(start());
            let guard = AbortOnDrop(attempt.abort_handle());
            let reason = match attempt.await {
                Ok(()) => "ended unexpectedly".to_string(),
                Err(error) if error.is_panic() => panic_reason(error.into_panic()),
                // Aborted from outside: shutting down.
                Err(_) => return,
            };
            drop(guard);
            metrics::counter!("plantops_task_restarts_total", "task" => task).increment(1);
            health.record(task, reason.clone());
            if started.elapsed() >= STABLE_AFTER {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            tracing::error!(task, %reason, restart_in_ms = delay.as_millis() as u64, "background task failed; restarting");
            tokio::time::sleep(delay).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_restarted_and_reported() {
        let health = Arc::new(TaskHealth::default());
        let starts = Arc::new(AtomicU32::new(0));
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
        let counter = starts.clone();
        let supervisor = supervise("notifier", health.clone(), move || {
            let attempt = counter.fetch_add(1, Ordering::SeqCst);
            let done = done.clone();
            async move {
                if attempt < 2 {
                    panic!("Retry-After: NaN");
                }
                let _ = done.send(attempt);
                std::future::pending::<()>().await;
            }
        });
        assert_eq!(finished.recv().await, Some(2), "the third start runs");
        let failures = health.recent();
        let failure = &failures["notifier"];
        assert_eq!(failure.restarts, 2);
        assert_eq!(failure.reason, "Retry-After: NaN");

        // Aborting the supervisor stops the running attempt too.
        supervisor.abort();
        let _ = supervisor.await;
        assert!(finished.recv().await.is_none(), "the attempt was dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ends_is_started_again() {
        let health = Arc::new(TaskHealth::default());
        let (started, mut starts) = tokio::sync::mpsc::unbounded_channel();
        let _supervisor = supervise("retention", health.clone(), move || {
            let started = started.clone();
            async move {
                let _ = started.send(());
            }
        });
        for _ in 0..3 {
            starts.recv().await.unwrap();
        }
        assert!(health.recent()["retention"].restarts >= 2);
    }
}

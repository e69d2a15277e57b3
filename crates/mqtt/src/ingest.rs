//! Ingestion: parsed messages are batched (by size or a few milliseconds),
//! written in one transaction, and only then acknowledged to their sender.
//! The channel in front of the batcher is bounded, so a slow store slows the
//! broker connections instead of growing memory.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use plantops_core::alert::{Alert, AlertKind};
use plantops_core::backoff::Backoff;
use plantops_core::event::{DeviceStatusChange, Event};
use plantops_core::telemetry::{self, PayloadError, Telemetry};
use plantops_core::topic::{self, TopicKind};
use plantops_core::{DeviceStatus, DeviceVitals, Measurements, Reading};
use plantops_store::{
    AlertStore, BatteryLow, CommittedBatch, DeviceStore, DynStore, Presence, ReadingStore,
    VitalsSeen,
};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Most messages in one transaction.
    pub max_rows: usize,
    /// How long the first message of a batch waits for company. Zero is
    /// group commit: a batch is whatever queued up during the previous
    /// commit, so latency stays low when idle and batches grow under load.
    pub linger: Duration,
    /// Messages queued in front of the batcher before senders wait.
    pub queue: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_rows: 5000,
            linger: Duration::ZERO,
            queue: 20_000,
        }
    }
}

/// How many messages (readings and heartbeats) one device may send: a
/// sustained rate and a burst on top (a device flushing what it buffered
/// offline). The built-in broker holds a device to it by reading its
/// connection no faster (nothing it acknowledged is dropped); on Mosquitto,
/// which acknowledged the messages already, it is judged by the readings'
/// own times ([`Rate::ByReadingTime`]).
#[derive(Debug, Clone, Copy)]
pub struct DeviceRateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Default for DeviceRateLimit {
    fn default() -> Self {
        Self {
            per_second: NonZeroU32::new(10).expect("non-zero"),
            burst: NonZeroU32::new(600).expect("non-zero"),
        }
    }
}

/// How a message is held to its device's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// The broker already paced the device ([`Ingest::pace`]): every
    /// message it hands over is within the rate.
    Paced,
    /// Judged by the message's own time (a reading's timestamp, else its
    /// arrival): a backlog a broker queued during an outage carries the
    /// times it was measured at and passes whole; a device that really
    /// floods is bounded, its excess dropped as `rate_limited`.
    ByReadingTime,
}

/// Judges committed readings against their plants' thresholds (alerting).
/// The batcher calls it after each commit and before the batch's PUBACKs:
/// a reading is acknowledged only once judged, so one whose judgement an
/// instance's death interrupted is sent again by its device (or redelivered
/// by Mosquitto) and judged then. Judging a reading twice changes nothing
/// (a plant's state ignores readings no newer than its last change), and
/// an in-memory event that is never seen loses no judgement.
#[async_trait::async_trait]
pub trait ReadingJudge: Send + Sync + 'static {
    /// Judges the readings that belong to plants (the others are passed
    /// over); an error is retried.
    async fn judge(&self, readings: &[Reading]) -> plantops_store::Result<()>;
    /// Stores and announces alerts a batch raised besides its readings'
    /// (a battery newly low).
    async fn raise(&self, alerts: Vec<Alert>) -> plantops_store::Result<()>;
}

/// Per-device token buckets on the wall clock, pruned now and then of
/// devices that are full.
struct DeviceRates {
    limiter: governor::DefaultKeyedRateLimiter<Uuid>,
    checks: AtomicU64,
}

impl DeviceRates {
    const PRUNE_EVERY: u64 = 1 << 16;

    fn new(limit: DeviceRateLimit) -> Self {
        let quota = governor::Quota::per_second(limit.per_second).allow_burst(limit.burst);
        Self {
            limiter: governor::RateLimiter::keyed(quota),
            checks: AtomicU64::new(0),
        }
    }

    /// `None`: go ahead (a token is taken); else how long to wait.
    fn wait(&self, device_id: Uuid) -> Option<Duration> {
        use governor::clock::Clock;
        if self.checks.fetch_add(1, Ordering::Relaxed) % Self::PRUNE_EVERY == Self::PRUNE_EVERY - 1
        {
            self.limiter.retain_recent();
        }
        match self.limiter.check_key(&device_id) {
            Ok(()) => None,
            Err(not_until) => Some(not_until.wait_time_from(self.limiter.clock().now())),
        }
    }
}

/// Per-device buckets whose clock is the device's newest message time
/// (GCRA): the same sustained rate and burst as [`DeviceRates`], judged by
/// when the readings were taken instead of when they arrived.
struct ReadingTimeRates {
    /// Milliseconds one message costs.
    interval: f64,
    /// How far ahead of the device's clock its bucket may run: the burst.
    tolerance: f64,
    devices: Mutex<HashMap<Uuid, ReadingClock>>,
}

struct ReadingClock {
    /// The newest message time seen, in Unix milliseconds: an older
    /// reading (sent out of order) is charged at this time.
    newest: i64,
    /// When the bucket is full again (theoretical arrival time).
    full_at: f64,
}

impl ReadingTimeRates {
    const PRUNE_ABOVE: usize = 100_000;

    fn new(limit: DeviceRateLimit) -> Self {
        let interval = 1000.0 / f64::from(limit.per_second.get());
        Self {
            interval,
            tolerance: interval * f64::from(limit.burst.get() - 1),
            devices: Mutex::default(),
        }
    }

    fn allows(&self, device_id: Uuid, time: DateTime<Utc>) -> bool {
        let time = time.timestamp_millis();
        let mut devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        if devices.len() > Self::PRUNE_ABOVE {
            devices.retain(|_, clock| clock.full_at > clock.newest as f64);
        }
        let clock = devices.entry(device_id).or_insert(ReadingClock {
            newest: time,
            full_at: time as f64,
        });
        clock.newest = clock.newest.max(time);
        let now = clock.newest as f64;
        let full_at = clock.full_at.max(now);
        if full_at - now > self.tolerance {
            return false;
        }
        clock.full_at = full_at + self.interval;
        true
    }
}

/// The times given to readings that came without one of their own: kept
/// strictly increasing per device, so two readings that arrive in the same
/// millisecond (the precision readings are stored at) are both kept
/// instead of sharing one key.
#[derive(Default)]
struct ArrivalTimes(Mutex<HashMap<Uuid, DateTime<Utc>>>);

impl ArrivalTimes {
    const PRUNE_ABOVE: usize = 100_000;

    fn unique(&self, device_id: Uuid, arrival: DateTime<Utc>) -> DateTime<Utc> {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if last.len() > Self::PRUNE_ABOVE {
            let settled = arrival - chrono::Duration::seconds(1);
            last.retain(|_, time| *time > settled);
        }
        let time = match last.get(&device_id) {
            Some(previous) if *previous >= arrival => *previous + chrono::Duration::milliseconds(1),
            _ => arrival,
        };
        last.insert(device_id, time);
        time
    }
}

/// Why a message was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    TooLarge,
    Malformed,
    InvalidValue,
    Empty,
    UnknownDevice,
    TopicMismatch,
    RateLimited,
    /// A reading whose (device, time) is stored already with other values.
    DuplicateTime,
}

impl DropReason {
    pub const ALL: [DropReason; 8] = [
        DropReason::TooLarge,
        DropReason::Malformed,
        DropReason::InvalidValue,
        DropReason::Empty,
        DropReason::UnknownDevice,
        DropReason::TopicMismatch,
        DropReason::RateLimited,
        DropReason::DuplicateTime,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::TooLarge => "too_large",
            DropReason::Malformed => "malformed",
            DropReason::InvalidValue => "invalid_value",
            DropReason::Empty => "empty",
            DropReason::UnknownDevice => "unknown_device",
            DropReason::TopicMismatch => "topic_mismatch",
            DropReason::RateLimited => "rate_limited",
            DropReason::DuplicateTime => "duplicate_time",
        }
    }

    fn from_payload(error: &PayloadError) -> Self {
        match error {
            PayloadError::TooLarge(_) => DropReason::TooLarge,
            PayloadError::NotAnObject => DropReason::Malformed,
            PayloadError::NotANumber { .. } | PayloadError::OutOfRange { .. } => {
                DropReason::InvalidValue
            }
            PayloadError::Empty => DropReason::Empty,
        }
    }
}

/// Counters for `/api/health`; `/metrics` gets the same through `metrics`.
#[derive(Debug, Default)]
pub struct IngestStats {
    received: AtomicU64,
    stored: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IngestSnapshot {
    pub received: u64,
    pub stored: u64,
    pub dropped: HashMap<&'static str, u64>,
}

impl IngestStats {
    pub fn snapshot(&self) -> IngestSnapshot {
        IngestSnapshot {
            received: self.received.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
            dropped: DropReason::ALL
                .iter()
                .enumerate()
                .map(|(i, r)| (r.as_str(), self.dropped[i].load(Ordering::Relaxed)))
                .collect(),
        }
    }

    fn count_drop(&self, reason: DropReason) {
        let index = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.dropped[index].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("plantops_ingest_dropped_total", "reason" => reason.as_str())
            .increment(1);
    }
}

/// Logs a device's dropped messages at most once a minute.
#[derive(Default)]
struct DropLog(Mutex<HashMap<String, Instant>>);

impl DropLog {
    const EVERY: Duration = Duration::from_secs(60);

    fn log(&self, device: &str, reason: DropReason, detail: &str) {
        let now = Instant::now();
        let Ok(mut last) = self.0.lock() else { return };
        if last
            .get(device)
            .is_some_and(|at| now.duration_since(*at) < Self::EVERY)
        {
            return;
        }
        if last.len() > 100_000 {
            last.retain(|_, at| now.duration_since(*at) < Self::EVERY);
        }
        last.insert(device.to_string(), now);
        tracing::warn!(
            device = device,
            reason = reason.as_str(),
            detail,
            "message dropped (further drops of this device are not logged for a minute)"
        );
    }
}

struct Envelope {
    device_id: Uuid,
    /// `None` for a heartbeat: it only marks the device seen.
    telemetry: Option<Telemetry>,
    /// Battery and signal, stored in the batch's transaction.
    vitals: Option<DeviceVitals>,
    received_at: DateTime<Utc>,
    /// Resolved once the message's batch is committed: stored, or refused
    /// as a duplicate time.
    committed: Option<oneshot::Sender<Outcome>>,
}

/// The ingestion front door, shared by every broker connection.
#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Envelope>,
    stats: Arc<IngestStats>,
    drops: Arc<DropLog>,
    rates: Arc<DeviceRates>,
    reading_time_rates: Arc<ReadingTimeRates>,
    arrival_times: Arc<ArrivalTimes>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Committed to the store (telemetry) or recorded (heartbeat).
    Stored,
    /// Refused for a reason counted in the stats; acknowledge and forget.
    Dropped(DropReason),
    /// Ingestion is shutting down: do not acknowledge.
    ShuttingDown,
}

/// A message checked by [`Ingest::check`], ready for [`Ingest::queue`].
pub enum Checked {
    /// Dropped for a reason counted in the stats; nothing to queue.
    Refused(Outcome),
    /// A payload that carries no reading; its device is marked seen.
    Invalid {
        device_id: Uuid,
        received_at: DateTime<Utc>,
        dropped: Outcome,
    },
    Accepted {
        device_id: Uuid,
        /// `None` for a heartbeat.
        telemetry: Option<Telemetry>,
        vitals: Option<DeviceVitals>,
        received_at: DateTime<Utc>,
    },
}

/// A message handed to ingestion; [`Submitted::outcome`] resolves once it
/// is durable (or was refused).
pub struct Submitted(Step);

enum Step {
    Done(Outcome),
    Queued(Commit),
}

enum Commit {
    /// Ingestion is stopping: nothing was queued.
    Refused,
    /// Queued without waiting for the commit (QoS 0).
    Queued,
    Waiting(oneshot::Receiver<Outcome>),
}

enum Queued<'a> {
    Now(Commit),
    WaitingForRoom(std::pin::Pin<Box<dyn std::future::Future<Output = Commit> + Send + 'a>>),
}

impl Queued<'_> {
    async fn wait(self) -> Commit {
        match self {
            Queued::Now(commit) => commit,
            Queued::WaitingForRoom(queued) => queued.await,
        }
    }
}

impl From<Outcome> for Submitted {
    fn from(outcome: Outcome) -> Self {
        Submitted(Step::Done(outcome))
    }
}

impl Submitted {
    pub async fn outcome(self) -> Outcome {
        match self.0 {
            Step::Done(outcome) => outcome,
            Step::Queued(Commit::Refused) => Outcome::ShuttingDown,
            Step::Queued(Commit::Queued) => Outcome::Stored,
            Step::Queued(Commit::Waiting(done)) => done.await.unwrap_or(Outcome::ShuttingDown),
        }
    }
}

impl Ingest {
    /// The front door and the batcher behind it; the caller runs the
    /// batcher ([`IngestBatcher::run`]), which ends when every `Ingest`
    /// clone is dropped.
    pub fn new(
        store: &DynStore,
        events: broadcast::Sender<Event>,
        config: BatchConfig,
        rate: DeviceRateLimit,
        low_battery_percent: Option<f64>,
        judge: Option<Arc<dyn ReadingJudge>>,
    ) -> (Ingest, IngestBatcher) {
        let (tx, rx) = mpsc::channel(config.queue);
        let stats = Arc::new(IngestStats::default());
        // Every series exists from the start at zero, so a rate or an
        // alert rule sees the first increase, not a series appearing.
        for reason in DropReason::ALL {
            metrics::counter!("plantops_ingest_dropped_total", "reason" => reason.as_str())
                .increment(0);
        }
        for kind in ["telemetry", "heartbeat"] {
            metrics::counter!("plantops_ingest_messages_total", "kind" => kind).increment(0);
        }
        metrics::counter!("plantops_readings_committed_total").increment(0);
        let batcher = Batcher {
            readings: store.clone(),
            devices: store.clone(),
            alerts: store.clone(),
            low_battery_percent,
            judge,
            events,
            config,
            stats: stats.clone(),
        };
        let batcher = IngestBatcher {
            batcher: Arc::new(batcher),
            queue: Arc::new(tokio::sync::Mutex::new(rx)),
        };
        let ingest = Ingest {
            tx,
            stats,
            drops: Arc::default(),
            rates: Arc::new(DeviceRates::new(rate)),
            reading_time_rates: Arc::new(ReadingTimeRates::new(rate)),
            arrival_times: Arc::default(),
        };
        (ingest, batcher)
    }

    pub fn stats(&self) -> Arc<IngestStats> {
        self.stats.clone()
    }

    /// Holds a device to its rate by time of arrival: `None`, go ahead
    /// (the message is counted); else how long to wait before handing it
    /// over. The built-in broker reads no more of a device's connection
    /// meanwhile, so a device over its rate is slowed, never dropped.
    pub fn pace(&self, device_id: Uuid) -> Option<Duration> {
        self.rates.wait(device_id)
    }

    /// Checks one message from an authenticated device and queues it for
    /// the batcher, waiting only while the queue is full. The answer
    /// resolves once the message is durable (with `wait_for_commit`), so a
    /// connection can hand over its next messages before the first commits.
    pub async fn submit(
        &self,
        device_id: Uuid,
        topic: &str,
        payload: &[u8],
        wait_for_commit: bool,
        rate: Rate,
    ) -> Submitted {
        let checked = self.check(device_id, topic, payload, rate);
        self.queue(checked, wait_for_commit).await
    }

    /// What [`Ingest::submit`] does before it waits: the topic, the payload
    /// and the device's rate. Called in the order the messages arrived, so
    /// that a device's rate by reading time is judged in that order even
    /// when the messages are then queued concurrently ([`Ingest::queue`]).
    pub fn check(&self, device_id: Uuid, topic: &str, payload: &[u8], rate: Rate) -> Checked {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let received_at = plantops_core::now();
        let mut own_id = Uuid::encode_buffer();
        let own_id = device_id.hyphenated().encode_lower(&mut own_id);
        let kind = match topic::own_kind(own_id, topic) {
            Some(kind) => kind,
            None => {
                return Checked::Refused(self.drop(device_id, DropReason::TopicMismatch, topic))
            }
        };
        metrics::counter!("plantops_ingest_messages_total", "kind" => match kind {
            TopicKind::Telemetry => "telemetry",
            TopicKind::Heartbeat => "heartbeat",
        })
        .increment(1);
        let parsed = match kind {
            TopicKind::Heartbeat => None,
            TopicKind::Telemetry => Some(telemetry::parse(payload, received_at)),
        };
        if rate == Rate::ByReadingTime {
            let time = match &parsed {
                Some(Ok(telemetry)) => telemetry.time,
                _ => received_at,
            };
            if !self.reading_time_rates.allows(device_id, time) {
                return Checked::Refused(self.drop(
                    device_id,
                    DropReason::RateLimited,
                    "over PLANTOPS_DEVICE_MESSAGES_PER_SEC by the readings' own times",
                ));
            }
        }
        let telemetry = match parsed {
            None => None,
            Some(Ok(mut telemetry)) => {
                if !telemetry.timestamped {
                    telemetry.time = self.arrival_times.unique(device_id, telemetry.time);
                }
                Some(telemetry)
            }
            Some(Err(error)) => {
                let dropped = self.drop(
                    device_id,
                    DropReason::from_payload(&error),
                    &error.to_string(),
                );
                return Checked::Invalid {
                    device_id,
                    received_at,
                    dropped,
                };
            }
        };
        let vitals = match &telemetry {
            Some(telemetry) => telemetry.vitals,
            None => telemetry::heartbeat_vitals(payload),
        };
        Checked::Accepted {
            device_id,
            telemetry,
            vitals,
            received_at,
        }
    }

    /// Queues a checked message for the batcher, waiting only while the
    /// queue is full.
    pub async fn queue(&self, checked: Checked, wait_for_commit: bool) -> Submitted {
        let (device_id, telemetry, vitals, received_at) = match checked {
            Checked::Refused(outcome) => return outcome.into(),
            Checked::Invalid {
                device_id,
                received_at,
                dropped,
            } => {
                // The device is alive even when its payload is not.
                self.enqueue(device_id, None, None, received_at, false)
                    .wait()
                    .await;
                return dropped.into();
            }
            Checked::Accepted {
                device_id,
                telemetry,
                vitals,
                received_at,
            } => (device_id, telemetry, vitals, received_at),
        };
        let commit = self
            .enqueue(device_id, telemetry, vitals, received_at, wait_for_commit)
            .wait()
            .await;
        Submitted(Step::Queued(commit))
    }

    /// Queues a message for the batcher: at once when the queue has room,
    /// else the wait for room, boxed — the rare case, kept out of the
    /// future every broker connection holds.
    fn enqueue(
        &self,
        device_id: Uuid,
        telemetry: Option<Telemetry>,
        vitals: Option<DeviceVitals>,
        received_at: DateTime<Utc>,
        wait_for_commit: bool,
    ) -> Queued<'_> {
        let (done, committed) = if wait_for_commit {
            let (tx, rx) = oneshot::channel();
            (Some(rx), Some(tx))
        } else {
            (None, None)
        };
        let envelope = Envelope {
            device_id,
            telemetry,
            vitals,
            received_at,
            committed,
        };
        let commit = |queued: bool| match (queued, done) {
            (false, _) => Commit::Refused,
            (true, None) => Commit::Queued,
            (true, Some(done)) => Commit::Waiting(done),
        };
        match self.tx.try_send(envelope) {
            Ok(()) => Queued::Now(commit(true)),
            Err(mpsc::error::TrySendError::Closed(_)) => Queued::Now(commit(false)),
            Err(mpsc::error::TrySendError::Full(envelope)) => {
                Queued::WaitingForRoom(Box::pin(async move {
                    commit(self.tx.send(envelope).await.is_ok())
                }))
            }
        }
    }

    fn drop(&self, device_id: Uuid, reason: DropReason, detail: &str) -> Outcome {
        self.stats.count_drop(reason);
        self.drops.log(&device_id.to_string(), reason, detail);
        Outcome::Dropped(reason)
    }
}

/// The batcher's runs: a run that panics loses only its batch in hand
/// (never acknowledged, so brokers deliver it again); the next run takes
/// over the same queue.
#[derive(Clone)]
pub struct IngestBatcher {
    batcher: Arc<Batcher>,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Envelope>>>,
}

impl IngestBatcher {
    pub async fn run(self) {
        let mut queue = self.queue.lock().await;
        self.batcher.run(&mut queue).await;
    }
}

struct Batcher {
    readings: Arc<dyn ReadingStore>,
    /// Which plant each device serves when its readings are stored.
    devices: Arc<dyn DeviceStore>,
    /// Where low-battery alerts go when no judge raises them.
    alerts: Arc<dyn AlertStore>,
    /// `PLANTOPS_LOW_BATTERY_PERCENT`; `None`: no alert.
    low_battery_percent: Option<f64>,
    judge: Option<Arc<dyn ReadingJudge>>,
    events: broadcast::Sender<Event>,
    config: BatchConfig,
    stats: Arc<IngestStats>,
}

impl Batcher {
    async fn run(&self, rx: &mut mpsc::Receiver<Envelope>) {
        let mut batch = Vec::with_capacity(self.config.max_rows);
        while let Some(first) = rx.recv().await {
            batch.push(first);
            let deadline = tokio::time::Instant::now() + self.config.linger;
            while batch.len() < self.config.max_rows {
                // Take what is already queued without waiting.
                match rx.try_recv() {
                    Ok(envelope) => {
                        batch.push(envelope);
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) if self.config.linger.is_zero() => break,
                    Err(mpsc::error::TryRecvError::Empty) => {}
                }
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(envelope)) => batch.push(envelope),
                    Ok(None) | Err(_) => break,
                }
            }
            self.commit(&mut batch).await;
        }
    }

    /// Writes one batch, retrying with backoff until the store takes it: a
    /// message is acknowledged only once it is durable.
    async fn commit(&self, batch: &mut Vec<Envelope>) {
        let started = Instant::now();
        let mut ids: Vec<Uuid> = batch.iter().map(|e| e.device_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        let (mut readings, committed, seen, plants, unknown) = loop {
            match self.prepare_and_commit(batch, &ids).await {
                Ok(done) => break done,
                Err(error) => {
                    let wait = backoff.next_delay();
                    tracing::error!(%error, rows = batch.len(), retry_in_ms = wait.as_millis() as u64, "batch commit failed");
                    metrics::counter!("plantops_ingest_commit_failures_total").increment(1);
                    tokio::time::sleep(wait).await;
                }
            }
        };
        for _ in 0..unknown {
            self.stats.count_drop(DropReason::UnknownDevice);
        }
        let held = if (committed.inserted as usize) < readings.len() {
            self.held_values(&readings).await
        } else {
            HashMap::new()
        };
        let refused = |device_id: Uuid, time: DateTime<Utc>, values: &Measurements| {
            held.get(&(device_id, time))
                .is_some_and(|held| held != values)
        };
        readings.retain(|r| !refused(r.device_id, r.time, &r.values));
        // Live events first, so that what follows the stream (the browser,
        // Home Assistant) sees a reading before the alert it raises.
        for (device_id, previous) in committed.came_online {
            let _ = self.events.send(Event::DeviceStatus(DeviceStatusChange {
                device_id,
                plant_id: plants.get(&device_id).copied().flatten(),
                status: DeviceStatus::Online,
                previous,
                last_seen_at: seen.get(&device_id).copied(),
            }));
        }
        for reading in &readings {
            let _ = self.events.send(Event::Reading(reading.clone()));
        }
        self.judge(&readings).await;
        self.raise_low_batteries(&committed.low_battery).await;
        self.stats
            .stored
            .fetch_add(readings.len() as u64, Ordering::Relaxed);
        metrics::counter!("plantops_readings_committed_total").increment(readings.len() as u64);
        metrics::histogram!("plantops_ingest_batch_seconds")
            .record(started.elapsed().as_secs_f64());
        for envelope in batch.drain(..) {
            let outcome = match envelope.telemetry {
                Some(t) if refused(envelope.device_id, t.time, &t.values) => {
                    self.stats.count_drop(DropReason::DuplicateTime);
                    Outcome::Dropped(DropReason::DuplicateTime)
                }
                _ => Outcome::Stored,
            };
            if let Some(done) = envelope.committed {
                let _ = done.send(outcome);
            }
        }
    }

    /// Judges the batch's readings of plants before they are acknowledged,
    /// retrying with backoff until it succeeds (as the commit does).
    async fn judge(&self, readings: &[Reading]) {
        let Some(judge) = &self.judge else { return };
        if !readings.iter().any(|r| r.plant_id.is_some()) {
            return;
        }
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        while let Err(error) = judge.judge(readings).await {
            let wait = backoff.next_delay();
            tracing::error!(%error, readings = readings.len(), retry_in_ms = wait.as_millis() as u64, "judging a committed batch failed");
            tokio::time::sleep(wait).await;
        }
    }

    /// Raises one alert per battery the batch found newly low.
    async fn raise_low_batteries(&self, low: &[BatteryLow]) {
        if low.is_empty() {
            return;
        }
        let alerts: Vec<Alert> = low
            .iter()
            .map(|low| Alert {
                value: Some(low.percent),
                threshold: Some(low.limit),
                ..Alert::pending(
                    low.plant_id,
                    Some(low.device_id),
                    AlertKind::LowBattery,
                    format!(
                        "Battery low: {:.0} % (below {:.0} %); recharge or replace it",
                        low.percent, low.limit
                    ),
                )
            })
            .collect();
        let raised = match &self.judge {
            Some(judge) => judge.raise(alerts).await,
            None => {
                let stored = self.alerts.record_alerts(&[], &alerts).await;
                if stored.is_ok() {
                    for alert in alerts {
                        let _ = self.events.send(Event::Alert(alert));
                    }
                }
                stored
            }
        };
        if let Err(error) = raised {
            tracing::warn!(%error, devices = low.len(), "cannot store low-battery alerts");
        }
    }

    /// What the table holds for the batch's (device, time) keys, once
    /// the batch inserted fewer rows than it had: a reading resent with the
    /// same values is stored (once); one with other values is refused, not
    /// counted as stored. Unknown (the store did not answer): none refused.
    async fn held_values(
        &self,
        readings: &[Reading],
    ) -> HashMap<(Uuid, DateTime<Utc>), Measurements> {
        let keys: Vec<(Uuid, DateTime<Utc>)> =
            readings.iter().map(|r| (r.device_id, r.time)).collect();
        match self.readings.readings_at(&keys).await {
            Ok(held) => held
                .into_iter()
                .map(|r| ((r.device_id, r.time), r.values))
                .collect(),
            Err(error) => {
                tracing::warn!(%error, "cannot tell resent readings from conflicting ones; counting all as stored");
                HashMap::new()
            }
        }
    }

    async fn prepare_and_commit(
        &self,
        batch: &[Envelope],
        ids: &[Uuid],
    ) -> plantops_store::Result<Committed> {
        // Plant context as of now; a device deleted meanwhile stores nothing.
        let plants = self.devices.device_plants(ids).await?;
        let mut readings = Vec::with_capacity(batch.len());
        let mut last_seen: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
        let mut vitals: HashMap<Uuid, VitalsSeen> = HashMap::new();
        let mut unknown = 0;
        for envelope in batch {
            let Some(plant_id) = plants.get(&envelope.device_id) else {
                unknown += 1;
                continue;
            };
            let seen = last_seen
                .entry(envelope.device_id)
                .or_insert(envelope.received_at);
            *seen = (*seen).max(envelope.received_at);
            if let Some(brought) = envelope.vitals {
                let newest = VitalsSeen {
                    vitals: brought,
                    at: envelope.received_at,
                    low_below: self.low_battery_percent,
                };
                vitals
                    .entry(envelope.device_id)
                    .and_modify(|held| {
                        if held.at <= newest.at {
                            *held = newest;
                        }
                    })
                    .or_insert(newest);
            }
            if let Some(t) = envelope.telemetry {
                readings.push(Reading {
                    time: t.time,
                    device_id: envelope.device_id,
                    plant_id: *plant_id,
                    values: t.values,
                });
            }
        }
        let seen: Vec<Presence> = last_seen
            .iter()
            .map(|(&device_id, &seen_at)| Presence {
                device_id,
                seen_at,
                vitals: vitals.get(&device_id).copied(),
            })
            .collect();
        let committed = self.readings.commit_batch(&readings, &seen).await?;
        Ok((readings, committed, last_seen, plants, unknown))
    }
}

/// Readings written, what the commit did, when each device was seen, the
/// devices' plants, messages of unknown devices.
type Committed = (
    Vec<Reading>,
    CommittedBatch,
    HashMap<Uuid, DateTime<Utc>>,
    HashMap<Uuid, Option<Uuid>>,
    usize,
);

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: u32, burst: u32) -> DeviceRateLimit {
        DeviceRateLimit {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    fn at(millis: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_780_000_000_000 + millis).unwrap()
    }

    #[test]
    fn readings_without_a_time_of_their_own_never_share_one() {
        let times = ArrivalTimes::default();
        let (device, other) = (Uuid::new_v4(), Uuid::new_v4());
        let given: Vec<_> = (0..3).map(|_| times.unique(device, at(0))).collect();
        assert_eq!(given, [at(0), at(1), at(2)]);
        assert_eq!(times.unique(device, at(1)), at(3), "never back in time");
        assert_eq!(times.unique(device, at(50)), at(50));
        assert_eq!(times.unique(other, at(0)), at(0));
    }

    #[test]
    fn a_backlog_measured_within_the_rate_passes_whole_however_fast_it_arrives() {
        let rates = ReadingTimeRates::new(limit(10, 5));
        let device = Uuid::new_v4();
        // A reading every second for an hour, handed over all at once.
        let allowed = (0..3600)
            .filter(|s| rates.allows(device, at(s * 1000)))
            .count();
        assert_eq!(allowed, 3600);
        // Then the device's live readings go on.
        assert!(rates.allows(device, at(3_600_000)));
    }

    #[test]
    fn a_flood_is_bounded_by_the_burst_and_then_the_rate_of_its_own_times() {
        let rates = ReadingTimeRates::new(limit(10, 5));
        let (flooder, other) = (Uuid::new_v4(), Uuid::new_v4());
        let allowed = (0..1000).filter(|_| rates.allows(flooder, at(0))).count();
        assert_eq!(allowed, 5, "the burst");
        // 300 ms later by the readings' times, three more.
        let allowed = (0..1000).filter(|_| rates.allows(flooder, at(300))).count();
        assert_eq!(allowed, 3, "the rate");
        // Older times are charged at the newest: no way round by going back.
        assert!(!rates.allows(flooder, at(-60_000)));
        // Another device is judged alone.
        assert!(rates.allows(other, at(0)));
    }
}

//! The ingest link: a persistent session subscribed to every device's
//! topics, each QoS 1 message acknowledged only after its batch commits.
//! The subscriptions are shared (`$share/plantops/…`): with several
//! instances, the broker hands each message to one of them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use plantops_core::topic;
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS, SubscribeFilter};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::connection::{all_granted, nodelay, options, reconnect_backoff};
use super::{set_state, MosquittoConfig};
use crate::ingest::{Ingest, Outcome, Rate};
use crate::{BrokerError, LinkState};

/// Messages being committed at once before the link stops reading.
const MAX_OUTSTANDING: usize = 10_000;
/// Room in the link's request queue: one acknowledgement for every message
/// in hand and a few other requests. Only polling the event loop empties
/// the queue, and the loop stops polling while every message place is
/// taken: were the queue smaller, those messages' tasks would wait on it
/// for ever and the link would read nothing more (the stall one backend
/// under overload showed, with 1.3 MB unread in its socket).
const REQUESTS: usize = MAX_OUTSTANDING + 16;
/// How long a stopping link waits to hand over a request: a link that is
/// down takes none, and a stop must not wait for it.
const REQUEST_WAIT: Duration = Duration::from_secs(2);
/// The shared-subscription group of every PlantOps instance: the broker
/// hands each device message to one of the group's members.
const SHARE_GROUP: &str = "plantops";

/// `filter` as a subscription shared by all instances.
pub(super) fn shared(filter: &str) -> String {
    format!("$share/{SHARE_GROUP}/{filter}")
}

/// The ingest link. Each run connects afresh with the same client id, so a
/// run that replaces a failed one resumes the broker's persistent session.
#[derive(Clone)]
pub struct IngestLink {
    options: MqttOptions,
    target: String,
    ingest: Ingest,
    state: Arc<RwLock<LinkState>>,
    control: Arc<LinkControl>,
}

/// What a graceful stop needs of the running link.
#[derive(Default)]
pub(super) struct LinkControl {
    running: std::sync::Mutex<Option<(AsyncClient, Arc<Semaphore>)>>,
    leaving: AtomicBool,
    /// Messages that arrive from now on are left unacknowledged in the
    /// session, for the broker to deliver again.
    refusing: AtomicBool,
    left: tokio::sync::Notify,
}

impl LinkControl {
    /// Lets the messages in hand commit and be acknowledged, and
    /// disconnects. With `others_remain`, leaves the shared subscriptions
    /// first, so the broker hands this instance's share to the others;
    /// else keeps them: the persistent session stays subscribed and the
    /// broker queues the devices' messages for it (with nobody subscribed
    /// it would discard them), and what arrives while stopping stays
    /// unacknowledged, to be delivered again.
    pub(super) async fn leave(&self, others_remain: bool) {
        self.leaving.store(true, Ordering::Release);
        if !others_remain {
            self.refusing.store(true, Ordering::Release);
        }
        let running = self.running.lock().map(|r| r.clone()).unwrap_or_default();
        let Some((client, outstanding)) = running else {
            return;
        };
        if others_remain {
            for filter in [topic::ALL_TELEMETRY, topic::ALL_HEARTBEATS] {
                let _ =
                    tokio::time::timeout(REQUEST_WAIT, client.unsubscribe(shared(filter))).await;
            }
        }
        let settled = async {
            while outstanding.available_permits() < MAX_OUTSTANDING {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), settled).await;
        let left = self.left.notified();
        let _ = tokio::time::timeout(REQUEST_WAIT, client.disconnect()).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), left).await;
    }
}

impl IngestLink {
    pub(super) fn new(
        config: &MosquittoConfig,
        username: &str,
        ingest: Ingest,
        state: Arc<RwLock<LinkState>>,
    ) -> Result<Self, BrokerError> {
        let mut options = options(config, username, config.password.as_deref())?;
        options.set_clean_session(false);
        options.set_manual_acks(true);
        options.set_inflight(1000);
        Ok(Self {
            options,
            target: format!("{}:{}", config.host, config.port),
            ingest,
            state,
            control: Arc::default(),
        })
    }

    pub(super) fn control(&self) -> Arc<LinkControl> {
        self.control.clone()
    }

    /// Connects and keeps reconnecting, reporting how it is doing in the
    /// link state; runs until aborted.
    pub async fn run(self) {
        let Self {
            options,
            target,
            ingest,
            state,
            control,
        } = self;
        set_state(&state, false, format!("connecting to {target}"));
        let (client, mut eventloop) = AsyncClient::new(options, REQUESTS);
        nodelay(&mut eventloop);
        let outstanding = Arc::new(Semaphore::new(MAX_OUTSTANDING));
        if let Ok(mut running) = control.running.lock() {
            *running = Some((client.clone(), outstanding.clone()));
        }
        let mut backoff = reconnect_backoff();
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff.reset();
                    tracing::info!(broker = %target, session_present = ack.session_present, "connected to Mosquitto");
                    let topics = [topic::ALL_TELEMETRY, topic::ALL_HEARTBEATS]
                        .map(|topic| SubscribeFilter::new(shared(topic), QoS::AtLeastOnce));
                    let _ = client.subscribe_many(topics).await;
                    set_state(&state, false, format!("subscribing at {target}"));
                }
                // Ready only once device topics are granted: a backend
                // account without its role connects but receives nothing.
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let granted = all_granted(&ack);
                    if granted {
                        set_state(&state, true, format!("connected to {target}"));
                    } else {
                        tracing::warn!(broker = %target, "Mosquitto refused the device topics to MQTT_BACKEND_USERNAME; waiting for its role");
                        set_state(&state, false, format!("{target} refused the device topics: the backend account has no access yet"));
                    }
                }
                Ok(Event::Incoming(Packet::Publish(_)))
                    if control.refusing.load(Ordering::Acquire) => {}
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let Ok(permit) = outstanding.clone().acquire_owned().await else {
                        break;
                    };
                    let stored = ingest_and_ack(&ingest, &client, publish);
                    tokio::spawn(async move {
                        stored.await;
                        drop(permit);
                    });
                }
                Ok(_) => {}
                Err(_) if control.leaving.load(Ordering::Acquire) => {
                    set_state(&state, false, "stopping".into());
                    control.left.notify_waiters();
                    // Stopping: no reconnect, which would subscribe again.
                    std::future::pending::<()>().await;
                }
                Err(error) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(broker = %target, %error, retry_in_ms = wait.as_millis() as u64, "Mosquitto link down");
                    set_state(&state, false, format!("cannot reach {target}: {error}"));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// Checks a device message where it arrives (in order: its device's rate
/// is judged by reading time in that order), then, in a task of its own,
/// stores it and acknowledges it to the broker. Not acknowledged (ingestion
/// is stopping), the broker sends it again to this session after a
/// reconnect.
fn ingest_and_ack(
    ingest: &Ingest,
    client: &AsyncClient,
    publish: rumqttc::Publish,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let device = topic::parse(&publish.topic)
        .and_then(|(id, _)| Uuid::parse_str(id).ok())
        .unwrap_or_default();
    let checked = ingest.check(
        device,
        &publish.topic,
        &publish.payload,
        Rate::ByReadingTime,
    );
    let wait = publish.qos != QoS::AtMostOnce;
    let (ingest, client) = (ingest.clone(), client.clone());
    async move {
        let outcome = ingest.queue(checked, wait).await.outcome().await;
        if outcome != Outcome::ShuttingDown {
            let _ = client.ack(&publish).await;
        }
    }
}

/// How long a drained session may stay quiet before it counts as empty.
const DRAIN_IDLE: Duration = Duration::from_secs(2);

/// Takes over the persistent session of an account no instance uses any
/// more (an instance that stopped for good, or the single backend of a
/// version before scale-out): stops its subscriptions, stores and
/// acknowledges every message queued in it, then ends the session. The
/// broker queues shared-subscription messages for a member that is away,
/// so without this they would wait for an instance that never returns.
/// Returns how many messages it stored; an account the broker refuses has
/// nothing to give.
pub(super) async fn drain_session(
    config: &MosquittoConfig,
    username: &str,
    ingest: &Ingest,
) -> Result<u64, BrokerError> {
    let mut options = options(config, username, config.password.as_deref())?;
    options.set_clean_session(false);
    options.set_manual_acks(true);
    let (client, mut eventloop) = AsyncClient::new(options, REQUESTS);
    nodelay(&mut eventloop);
    let mut handling = tokio::task::JoinSet::new();
    let mut drained = 0;
    loop {
        let event = match tokio::time::timeout(DRAIN_IDLE, eventloop.poll()).await {
            // Quiet, and every message handed out handled: empty.
            Err(_) if handling.is_empty() => break,
            // Quiet, messages still in hand: their acknowledgements go
            // out only while the event loop is polled, so poll on.
            Err(_) => {
                while handling.try_join_next().is_some() {}
                continue;
            }
            Ok(Err(ConnectionError::ConnectionRefused(_))) => return Ok(0),
            Ok(Err(error)) => {
                return Err(BrokerError::Unavailable(format!(
                    "cannot take over the session of {username}: {error}"
                )))
            }
            Ok(Ok(event)) => event,
        };
        match event {
            Event::Incoming(Packet::ConnAck(ack)) if !ack.session_present => break,
            Event::Incoming(Packet::ConnAck(_)) => {
                // New messages go to the instances still running; what is
                // queued comes anyway.
                for filter in [topic::ALL_TELEMETRY, topic::ALL_HEARTBEATS] {
                    let _ = client.unsubscribe(shared(filter)).await;
                    let _ = client.unsubscribe(filter).await;
                }
            }
            Event::Incoming(Packet::Publish(publish)) => {
                drained += 1;
                handling.spawn(ingest_and_ack(ingest, &client, publish));
            }
            _ => {}
        }
    }
    // The acknowledgements go out before the goodbye.
    let _ = client.disconnect().await;
    let flushed = async { while eventloop.poll().await.is_ok() {} };
    let _ = tokio::time::timeout(Duration::from_secs(5), flushed).await;
    end_session(config, username).await;
    Ok(drained)
}

/// A clean connection discards the account's persistent session.
async fn end_session(config: &MosquittoConfig, username: &str) {
    let Ok(mut options) = options(config, username, config.password.as_deref()) else {
        return;
    };
    options.set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(options, 8);
    let ended = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.disconnect().await;
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), ended).await;
}

//! The ingest link: a persistent session subscribed to every device's
//! topics, each QoS 1 message acknowledged only after its batch commits.
//! The subscriptions are shared (`$share/plantops/…`): with several
//! instances, the broker hands each message to one of them.

use std::sync::{Arc, RwLock};

use plantops_core::topic;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeFilter};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::connection::{all_granted, nodelay, options, reconnect_backoff};
use super::{set_state, MosquittoConfig};
use crate::ingest::{Ingest, Outcome};
use crate::{BrokerError, LinkState};

/// Messages being committed at once before the link stops reading.
const MAX_OUTSTANDING: usize = 10_000;
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
        })
    }

    /// Connects and keeps reconnecting, reporting how it is doing in the
    /// link state; runs until aborted.
    pub async fn run(self) {
        let Self {
            options,
            target,
            ingest,
            state,
        } = self;
        set_state(&state, false, format!("connecting to {target}"));
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        nodelay(&mut eventloop);
        let outstanding = Arc::new(Semaphore::new(MAX_OUTSTANDING));
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
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let Ok(permit) = outstanding.clone().acquire_owned().await else {
                        break;
                    };
                    let ingest = ingest.clone();
                    let client = client.clone();
                    tokio::spawn(async move {
                        let device = topic::parse(&publish.topic)
                            .and_then(|(id, _)| Uuid::parse_str(id).ok())
                            .unwrap_or_default();
                        let wait = publish.qos != QoS::AtMostOnce;
                        let outcome = ingest
                            .handle(device, &publish.topic, &publish.payload, wait)
                            .await;
                        // Unacknowledged, the broker sends it again after a reconnect.
                        if outcome != Outcome::ShuttingDown {
                            let _ = client.ack(&publish).await;
                        }
                        drop(permit);
                    });
                }
                Ok(_) => {}
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

//! The dynamic-security RPC: commands published to Mosquitto's control
//! topic, answers matched by correlation data on the response topic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, QoS, SubscribeFilter, SubscribeReasonCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::connection::{nodelay, options, reconnect_backoff};
use super::MosquittoConfig;
use crate::BrokerError;

const CONTROL_TOPIC: &str = "$CONTROL/dynamic-security/v1";
const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Mosquitto's own statistics, published every `sys_interval` (10 s by
/// default) to subscribers allowed `$SYS/#`, as the admin is.
const BROKER_STATISTICS: &str = "$SYS/broker/#";

/// A `$SYS` topic and the metric it becomes; counters are Mosquitto's
/// totals since it started.
fn broker_metric(topic: &str, value: f64) {
    let Some(statistic) = topic.strip_prefix("$SYS/broker/") else {
        return;
    };
    match statistic {
        "clients/connected" => metrics::gauge!("plantops_broker_clients_connected").set(value),
        "store/messages/count" => metrics::gauge!("plantops_broker_stored_messages").set(value),
        "subscriptions/count" => metrics::gauge!("plantops_broker_subscriptions").set(value),
        "heap/current" => metrics::gauge!("plantops_broker_heap_bytes").set(value),
        "messages/received" => {
            metrics::counter!("plantops_broker_messages_received_total").absolute(value as u64)
        }
        "messages/sent" => {
            metrics::counter!("plantops_broker_messages_sent_total").absolute(value as u64)
        }
        "publish/messages/dropped" => {
            metrics::counter!("plantops_broker_messages_dropped_total").absolute(value as u64)
        }
        _ => {}
    }
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Vec<Value>>>>>;

/// Sends dynamic-security commands and waits for their responses.
pub(super) struct Dynsec {
    client: AsyncClient,
    pending: Pending,
    /// True while the response topic is subscribed: a command sent before
    /// that would have its answer dropped by the broker.
    listening: tokio::sync::watch::Receiver<bool>,
    /// The connection's event loop, ended with the link.
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for Dynsec {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Dynsec {
    /// A link logged in as `username` with the dynamic-security admin's
    /// password.
    pub(super) fn start(config: &MosquittoConfig, username: &str) -> Result<Self, BrokerError> {
        let mut options = options(config, username, config.dynsec_password.as_deref())?;
        options.set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        nodelay(&mut eventloop);
        let pending: Pending = Arc::default();
        let routes = pending.clone();
        let subscriber = client.clone();
        let (listening_tx, listening) = tokio::sync::watch::channel(false);
        let connection = tokio::spawn(async move {
            let mut backoff = reconnect_backoff();
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        backoff.reset();
                        let topics = [
                            SubscribeFilter::new(RESPONSE_TOPIC.into(), QoS::AtLeastOnce),
                            SubscribeFilter::new(BROKER_STATISTICS.into(), QoS::AtMostOnce),
                        ];
                        let _ = subscriber.subscribe_many(topics).await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        // The statistics are a bonus; the response topic is needed.
                        let granted = ack
                            .return_codes
                            .first()
                            .is_some_and(|code| matches!(code, SubscribeReasonCode::Success(_)));
                        if !granted {
                            tracing::warn!("Mosquitto refused the dynamic-security response topic to MQTT_DYNSEC_USERNAME");
                        }
                        listening_tx.send_replace(granted);
                    }
                    Ok(Event::Incoming(Packet::Publish(publish)))
                        if publish.topic.starts_with("$SYS/") =>
                    {
                        let value = std::str::from_utf8(&publish.payload)
                            .ok()
                            .and_then(|text| text.split_whitespace().next()?.parse::<f64>().ok());
                        if let Some(value) = value {
                            broker_metric(&publish.topic, value);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let Ok(body) = serde_json::from_slice::<Value>(&publish.payload) else {
                            continue;
                        };
                        let responses = body["responses"].as_array().cloned().unwrap_or_default();
                        let key = responses
                            .first()
                            .and_then(|r| r["correlationData"].as_str())
                            .map(str::to_string);
                        let waiter = key.and_then(|k| routes.lock().ok()?.remove(&k));
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(responses);
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        // Answers to requests sent on the lost connection
                        // will not come: fail them now so callers retry.
                        listening_tx.send_replace(false);
                        if let Ok(mut waiting) = routes.lock() {
                            waiting.clear();
                        }
                        tracing::warn!(%error, "dynamic-security link down");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        });
        Ok(Self {
            client,
            pending,
            listening,
            connection,
        })
    }

    /// Whether commands can be sent now.
    pub(super) fn is_listening(&self) -> bool {
        *self.listening.borrow()
    }

    /// Runs commands in one message; returns the plugin's responses.
    pub(super) async fn run(&self, mut commands: Vec<Value>) -> Result<Vec<Value>, BrokerError> {
        let mut listening = self.listening.clone();
        let subscribed = async { listening.wait_for(|up| *up).await.is_ok() };
        if !tokio::time::timeout(COMMAND_TIMEOUT, subscribed)
            .await
            .unwrap_or(false)
        {
            return Err(BrokerError::Unavailable(
                "no dynamic-security link to Mosquitto (MQTT_DYNSEC_USERNAME)".into(),
            ));
        }
        let key = Uuid::new_v4().to_string();
        for command in &mut commands {
            command["correlationData"] = json!(key);
        }
        let (tx, rx) = oneshot::channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(key.clone(), tx);
        }
        let payload = json!({ "commands": commands }).to_string();
        let sent = self
            .client
            .publish(CONTROL_TOPIC, QoS::AtLeastOnce, false, payload)
            .await;
        let answer = match sent {
            Ok(()) => tokio::time::timeout(COMMAND_TIMEOUT, rx).await,
            Err(e) => {
                self.forget(&key);
                return Err(BrokerError::Unavailable(e.to_string()));
            }
        };
        match answer {
            Ok(Ok(responses)) => Ok(responses),
            _ => {
                self.forget(&key);
                Err(BrokerError::Unavailable(
                    "Mosquitto's dynamic-security plugin did not answer".into(),
                ))
            }
        }
    }

    pub(super) fn forget(&self, key: &str) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(key);
        }
    }

    /// Runs commands; errors other than the tolerated ones fail the call.
    pub(super) async fn run_checked(
        &self,
        commands: Vec<Value>,
        tolerated: &[&str],
    ) -> Result<(), BrokerError> {
        let names: Vec<String> = commands
            .iter()
            .map(|c| c["command"].as_str().unwrap_or_default().to_string())
            .collect();
        let responses = self.run(commands).await?;
        for (name, response) in names.iter().zip(responses) {
            if let Some(error) = response["error"].as_str() {
                if !tolerated.iter().any(|t| error.contains(t)) {
                    return Err(BrokerError::Refused(format!("{name}: {error}")));
                }
            }
        }
        Ok(())
    }
}

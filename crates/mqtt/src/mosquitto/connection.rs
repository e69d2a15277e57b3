//! Client options for both links to Mosquitto: TLS with the configured CA,
//! keep-alive, packet size, socket settings and the reconnect schedule.

use std::time::Duration;

use plantops_core::backoff::Backoff;
use rumqttc::{EventLoop, MqttOptions, SubscribeReasonCode};

use super::MosquittoConfig;
use crate::BrokerError;

/// The client id is the username: Mosquitto is configured to replace any
/// client id with the username (`use_username_as_clientid`), and using the
/// same one elsewhere keeps the persistent session's identity stable.
pub(super) fn options(
    config: &MosquittoConfig,
    username: &str,
    password: Option<&str>,
) -> Result<MqttOptions, BrokerError> {
    let mut options = MqttOptions::new(username, &config.host, config.port);
    options.set_credentials(username, password.unwrap_or_default());
    options.set_keep_alive(Duration::from_secs(30));
    // Oversized device payloads must reach ingestion to be counted, not
    // break the link.
    options.set_max_packet_size(256 * 1024, 256 * 1024);
    if config.use_tls {
        options.set_transport(crate::tls_transport(
            config.ca_cert.as_deref(),
            "MQTT_CA_CERT",
        )?);
    }
    Ok(options)
}

/// Whether the broker granted every filter of a SUBSCRIBE (it answers a
/// denied one with a failure code, not an error).
pub(super) fn all_granted(ack: &rumqttc::SubAck) -> bool {
    ack.return_codes
        .iter()
        .all(|code| matches!(code, SubscribeReasonCode::Success(_)))
}

pub(super) fn nodelay(eventloop: &mut EventLoop) {
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    // Also bounds every write: a broker busy with a burst of devices may
    // take longer than the default 5 s to read our acknowledgements, and
    // dropping the link then only adds redeliveries.
    network.set_connection_timeout(30);
    eventloop.set_network_options(network);
}

/// Reconnect delays, jittered so many backends do not reconnect in step.
/// Short at most: Mosquitto does not restore shared subscriptions from its
/// persistence, so after its restart what devices publish before the
/// backend subscribes again reaches nobody (and is dropped).
pub(super) fn reconnect_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(200), Duration::from_secs(2)).with_jitter()
}

//! Who may connect to the built-in broker: a device with its generated
//! credentials and one of its own client ids.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mqtt5_protocol::packet::connect::ConnectPacket;
use mqtt5_protocol::ReasonCode;
use plantops_core::credentials::verify_password;
use plantops_core::topic::is_own_client_id;
use plantops_store::DeviceStore;
use uuid::Uuid;

pub(super) struct DeviceAuth {
    pub(super) store: Arc<dyn DeviceStore>,
    pub(super) failures: FailedLogins,
    pub(super) max_keep_alive_secs: u16,
}

impl DeviceAuth {
    /// The device a CONNECT logs in as, or the reason it is refused.
    pub(super) async fn authenticate(
        &self,
        connect: &ConnectPacket,
        client_addr: SocketAddr,
    ) -> Result<Uuid, ReasonCode> {
        if connect.keep_alive == 0 || connect.keep_alive > self.max_keep_alive_secs {
            // As Mosquitto's max_keepalive does for MQTT 3.1.1 clients.
            tracing::info!(%client_addr, keep_alive = connect.keep_alive, "keep-alive out of bounds refused");
            return Err(ReasonCode::ClientIdentifierNotValid);
        }
        if connect.properties.get_authentication_method().is_some() {
            // MQTT 5 enhanced authentication: devices log in with a password.
            return Err(ReasonCode::BadAuthenticationMethod);
        }
        let (Some(username), Some(password)) = (&connect.username, &connect.password) else {
            return Err(ReasonCode::BadUsernameOrPassword);
        };
        let Ok(password) = std::str::from_utf8(password) else {
            return Err(ReasonCode::BadUsernameOrPassword);
        };
        match self.store.device_credentials(username).await {
            Ok(Some(creds)) if verify_password(password, &creds.password_hash) => {
                let device = creds.device_id.to_string();
                if !is_own_client_id(&connect.client_id, &device, username) {
                    // Another device's id would take over its session.
                    tracing::info!(%client_addr, device_id = %device, client_id = %connect.client_id, "foreign client id refused");
                    return Err(ReasonCode::ClientIdentifierNotValid);
                }
                Ok(creds.device_id)
            }
            Ok(_) => {
                tracing::info!(%client_addr, username = %username, "device login refused");
                tokio::time::sleep(self.failures.failed(client_addr.ip())).await;
                Err(ReasonCode::BadUsernameOrPassword)
            }
            Err(error) => {
                tracing::error!(%error, "device login: store unavailable");
                Err(ReasonCode::ServerUnavailable)
            }
        }
    }
}

/// Failed logins per source address within a minute: past a few, each
/// further failure is answered only after a growing pause (up to 5 s), so
/// guessing from one address is slow. A right password is never delayed
/// or refused — locking a username (or an address) out would let anyone
/// who knows a device's username keep it off the network.
#[derive(Default)]
pub(super) struct FailedLogins {
    by_address: Mutex<HashMap<IpAddr, (u32, tokio::time::Instant)>>,
}

const FREE_LOGIN_FAILURES: u32 = 5;
const LOGIN_FAILURE_WINDOW: Duration = Duration::from_secs(60);
const MAX_LOGIN_FAILURE_PAUSE: Duration = Duration::from_secs(5);
/// Past this many remembered addresses, quiet ones are swept out.
const FAILED_LOGINS_SWEEP_ABOVE: usize = 4096;

impl FailedLogins {
    /// Counts a failure; returns how long to wait before answering it.
    fn failed(&self, address: IpAddr) -> Duration {
        let now = tokio::time::Instant::now();
        let mut by_address = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        if by_address.len() > FAILED_LOGINS_SWEEP_ABOVE {
            by_address.retain(|_, (_, since)| now.duration_since(*since) < LOGIN_FAILURE_WINDOW);
        }
        let (count, since) = by_address.entry(address).or_insert((0, now));
        if now.duration_since(*since) >= LOGIN_FAILURE_WINDOW {
            (*count, *since) = (0, now);
        }
        *count += 1;
        let over = count.saturating_sub(FREE_LOGIN_FAILURES);
        (Duration::from_millis(250) * over).min(MAX_LOGIN_FAILURE_PAUSE)
    }
}

#[cfg(test)]
mod tests {
    use super::FailedLogins;
    use plantops_core::topic::is_own_client_id;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn failed_logins_slow_down_an_address_and_recover() {
        let failures = FailedLogins::default();
        let home = "192.168.1.20".parse().unwrap();
        let pauses: Vec<Duration> = (0..8).map(|_| failures.failed(home)).collect();
        assert_eq!(pauses[..5], [Duration::ZERO; 5]);
        assert_eq!(pauses[5..], [250, 500, 750].map(Duration::from_millis));
        for _ in 0..30 {
            failures.failed(home);
        }
        assert_eq!(failures.failed(home), Duration::from_secs(5), "bounded");
        assert_eq!(
            failures.failed("10.0.0.9".parse().unwrap()),
            Duration::ZERO,
            "per address"
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(failures.failed(home), Duration::ZERO, "a new minute");
    }

    #[test]
    fn devices_keep_to_their_own_client_ids() {
        let (id, user) = ("0b6f-device", "device_1a2b3c4d");
        assert!(is_own_client_id(id, id, user));
        assert!(is_own_client_id("plantops-0b6f-device", id, user));
        assert!(is_own_client_id(user, id, user));
        for foreign in [
            "plantops-backend",
            "other-device",
            "",
            "auto-1234",
            "plantops-",
        ] {
            assert!(!is_own_client_id(foreign, id, user), "{foreign}");
        }
    }
}

//! Who may connect to the built-in broker: a device with its generated
//! credentials and one of its own client ids.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mqtt5_protocol::{QoS, ReasonCode};
use plantops_core::credentials::verify_password;
use plantops_core::topic::is_own_client_id;
use plantops_store::{DeviceCredentials, DeviceStore};
use uuid::Uuid;

/// Where the broker looks up a device's credentials: the store, or in
/// tests a stand-in that can hold a lookup at a chosen moment.
#[async_trait::async_trait]
pub trait CredentialLookup: Send + Sync + 'static {
    async fn device_credentials(
        &self,
        mqtt_username: &str,
    ) -> plantops_store::Result<Option<DeviceCredentials>>;
}

#[async_trait::async_trait]
impl CredentialLookup for plantops_store::DynStore {
    async fn device_credentials(
        &self,
        mqtt_username: &str,
    ) -> plantops_store::Result<Option<DeviceCredentials>> {
        DeviceStore::device_credentials(self.as_ref(), mqtt_username).await
    }
}

/// What a CONNECT leaves once checked: no properties, no will properties.
pub(super) struct Login {
    pub(super) version: u8,
    pub(super) client_id: String,
    pub(super) username: Option<String>,
    pub(super) password: Option<Vec<u8>>,
    pub(super) keep_alive: u16,
    pub(super) will: Option<Will>,
    pub(super) authentication_method: bool,
}

pub(super) struct Will {
    pub(super) topic: String,
    pub(super) payload: Vec<u8>,
    pub(super) qos: QoS,
}

/// A login that passed: the device, and the password hash it was checked
/// against (checked again once the connection is registered).
pub(super) struct Admitted {
    pub(super) device_id: Uuid,
    /// The keep-alive the connection runs with (seconds).
    pub(super) keep_alive: u16,
    username: String,
    password_hash: String,
}

pub(super) struct DeviceAuth {
    pub(super) store: Arc<dyn CredentialLookup>,
    pub(super) failures: FailedLogins,
    pub(super) max_keep_alive_secs: u16,
}

/// Usernames in logs are cut to this many characters.
const LOGGED_USERNAME_CHARS: usize = 64;

impl DeviceAuth {
    /// The keep-alive the connection runs with, or the refusal: MQTT 5
    /// clients asking for none or too long a one are told the server's
    /// (Server Keep Alive); MQTT 3.1.1 has no way to tell them, so they are
    /// refused as Mosquitto's `max_keepalive` does.
    fn keep_alive(&self, version: u8, asked: u16) -> Result<u16, ReasonCode> {
        if asked != 0 && asked <= self.max_keep_alive_secs {
            return Ok(asked);
        }
        if version == super::connection::V5 {
            return Ok(self.max_keep_alive_secs);
        }
        Err(ReasonCode::ClientIdentifierNotValid)
    }

    /// The device a CONNECT logs in as, or the reason it is refused.
    pub(super) async fn authenticate(
        &self,
        login: &Login,
        client_addr: SocketAddr,
    ) -> Result<Admitted, ReasonCode> {
        let Ok(keep_alive) = self.keep_alive(login.version, login.keep_alive) else {
            tracing::info!(%client_addr, keep_alive = login.keep_alive, max = self.max_keep_alive_secs, "MQTT 3.1.1 keep-alive of 0 or over PLANTOPS_MQTT_MAX_KEEPALIVE_SECS refused");
            return Err(ReasonCode::ClientIdentifierNotValid);
        };
        if login.authentication_method {
            // MQTT 5 enhanced authentication: devices log in with a password.
            return Err(ReasonCode::BadAuthenticationMethod);
        }
        let (Some(username), Some(password)) = (&login.username, &login.password) else {
            return Err(ReasonCode::BadUsernameOrPassword);
        };
        let Ok(password) = std::str::from_utf8(password) else {
            return Err(ReasonCode::BadUsernameOrPassword);
        };
        match self.store.device_credentials(username).await {
            Ok(Some(creds)) if verify_password(password, &creds.password_hash) => {
                let device = creds.device_id.to_string();
                if !is_own_client_id(&login.client_id, &device, username) {
                    // Another device's id would take over its session.
                    tracing::info!(%client_addr, device_id = %device, client_id = %logged(&login.client_id), "foreign client id refused");
                    return Err(ReasonCode::ClientIdentifierNotValid);
                }
                Ok(Admitted {
                    device_id: creds.device_id,
                    keep_alive,
                    username: username.clone(),
                    password_hash: creds.password_hash,
                })
            }
            Ok(_) => {
                let failure = self.failures.failed(client_addr.ip());
                if failure.first_in_window {
                    tracing::info!(%client_addr, username = %logged(username), "device login refused (further failures from this address within a minute are not logged)");
                }
                tokio::time::sleep(failure.pause).await;
                Err(ReasonCode::BadUsernameOrPassword)
            }
            Err(error) => {
                tracing::error!(%error, "device login: store unavailable");
                Err(ReasonCode::ServerUnavailable)
            }
        }
    }

    /// Whether an admitted login's credentials still stand. Called once the
    /// connection is registered, where a rotation or deletion finds it:
    /// one that came between the first lookup and the registration is
    /// seen here.
    pub(super) async fn still_valid(&self, admitted: &Admitted) -> Result<(), ReasonCode> {
        match self.store.device_credentials(&admitted.username).await {
            Ok(Some(creds))
                if creds.device_id == admitted.device_id
                    && creds.password_hash == admitted.password_hash =>
            {
                Ok(())
            }
            Ok(_) => Err(ReasonCode::NotAuthorized),
            Err(error) => {
                tracing::error!(%error, "device login: store unavailable");
                Err(ReasonCode::ServerUnavailable)
            }
        }
    }
}

/// A client-chosen string as it goes into a log line: cut short.
fn logged(text: &str) -> &str {
    match text.char_indices().nth(LOGGED_USERNAME_CHARS) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// The part of an address one host controls: an IPv4 address, or an IPv6
/// /64 (a host is given a whole /64 and may use any address in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum AddressKey {
    V4(Ipv4Addr),
    V6(u64),
}

impl From<IpAddr> for AddressKey {
    fn from(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => AddressKey::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey::V4(v4),
                None => AddressKey::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Failed logins per source address (IPv6: per /64) within a minute: past
/// a few, each further failure is answered only after a growing pause (up
/// to 5 s), so guessing from one address is slow. A right password is
/// never delayed or refused — locking a username (or an address) out would
/// let anyone who knows a device's username keep it off the network.
#[derive(Default)]
pub(super) struct FailedLogins {
    state: Mutex<FailureState>,
}

#[derive(Default)]
struct FailureState {
    by_address: HashMap<AddressKey, (u32, tokio::time::Instant)>,
    swept_at: Option<tokio::time::Instant>,
}

const FREE_LOGIN_FAILURES: u32 = 5;
const LOGIN_FAILURE_WINDOW: Duration = Duration::from_secs(60);
const MAX_LOGIN_FAILURE_PAUSE: Duration = Duration::from_secs(5);
/// Past this many remembered addresses, quiet ones are swept out (at most
/// once a second, so a failure does not pay for a scan of the map).
const FAILED_LOGINS_SWEEP_ABOVE: usize = 4096;
/// Addresses remembered at most; one more, while the map is full, is
/// paused as long as the most persistent (many addresses failing at once
/// is a flood, not a forgetful device).
const FAILED_LOGINS_MAX: usize = 65_536;

/// How a failed login is answered.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Failure {
    pub(super) pause: Duration,
    /// The address's first failure this minute (the one that is logged).
    pub(super) first_in_window: bool,
}

impl FailedLogins {
    /// Counts a failure; returns how long to wait before answering it.
    pub(super) fn failed(&self, address: IpAddr) -> Failure {
        let now = tokio::time::Instant::now();
        let key = AddressKey::from(address);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let sweep_due = state
            .swept_at
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1));
        if state.by_address.len() > FAILED_LOGINS_SWEEP_ABOVE && sweep_due {
            state
                .by_address
                .retain(|_, (_, since)| now.duration_since(*since) < LOGIN_FAILURE_WINDOW);
            state.swept_at = Some(now);
        }
        if state.by_address.len() >= FAILED_LOGINS_MAX && !state.by_address.contains_key(&key) {
            return Failure {
                pause: MAX_LOGIN_FAILURE_PAUSE,
                first_in_window: false,
            };
        }
        let (count, since) = state.by_address.entry(key).or_insert((0, now));
        if now.duration_since(*since) >= LOGIN_FAILURE_WINDOW {
            (*count, *since) = (0, now);
        }
        *count += 1;
        let over = count.saturating_sub(FREE_LOGIN_FAILURES);
        Failure {
            pause: (Duration::from_millis(250) * over).min(MAX_LOGIN_FAILURE_PAUSE),
            first_in_window: *count == 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{logged, AddressKey, FailedLogins, FREE_LOGIN_FAILURES, LOGGED_USERNAME_CHARS};
    use plantops_core::topic::is_own_client_id;
    use std::net::IpAddr;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn failed_logins_slow_down_an_address_and_recover() {
        let failures = FailedLogins::default();
        let home = "192.168.1.20".parse().unwrap();
        let pauses: Vec<Duration> = (0..8).map(|_| failures.failed(home).pause).collect();
        assert_eq!(pauses[..5], [Duration::ZERO; 5]);
        assert_eq!(pauses[5..], [250, 500, 750].map(Duration::from_millis));
        for _ in 0..30 {
            failures.failed(home);
        }
        assert_eq!(
            failures.failed(home).pause,
            Duration::from_secs(5),
            "bounded"
        );
        let elsewhere = failures.failed("10.0.0.9".parse().unwrap());
        assert_eq!(elsewhere.pause, Duration::ZERO, "per address");
        assert!(elsewhere.first_in_window, "logged once");
        assert!(!failures.failed("10.0.0.9".parse().unwrap()).first_in_window);
        tokio::time::advance(Duration::from_secs(60)).await;
        let later = failures.failed(home);
        assert_eq!(later.pause, Duration::ZERO, "a new minute");
        assert!(later.first_in_window);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ipv6_host_is_one_address_across_its_slash_64() {
        let failures = FailedLogins::default();
        for i in 0..FREE_LOGIN_FAILURES {
            let address: IpAddr = format!("2001:db8:1:2::{:x}", i + 1).parse().unwrap();
            assert_eq!(failures.failed(address).pause, Duration::ZERO);
        }
        let another_in_the_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(
            failures.failed(another_in_the_64).pause,
            Duration::from_millis(250)
        );
        let next_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(failures.failed(next_64).pause, Duration::ZERO);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let plain: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(AddressKey::from(mapped), AddressKey::from(plain));
    }

    #[test]
    fn logged_names_are_cut_short_on_a_character_boundary() {
        assert_eq!(logged("device_1"), "device_1");
        let long = "é".repeat(1000);
        assert_eq!(logged(&long).chars().count(), LOGGED_USERNAME_CHARS);
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

//! Login throttling: after a few failures, a source address or a username
//! waits a growing delay before its next attempt counts. The delay is
//! bounded and forgotten after a quiet hour, so the right password is never
//! locked out for good; a username's bound is short, so strangers failing
//! on purpose cannot keep its owner out for long.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Failures allowed before any delay.
const FREE_FAILURES: u32 = 5;
const FIRST_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY_PER_ADDRESS: Duration = Duration::from_secs(15 * 60);
const MAX_DELAY_PER_USER: Duration = Duration::from_secs(60);
/// A key with no failure for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Past this many remembered keys, forgotten ones are swept out.
const SWEEP_ABOVE: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    blocked_until: Instant,
}

struct Ledger<K> {
    max_delay: Duration,
    entries: Mutex<HashMap<K, Failures>>,
}

impl<K: Eq + Hash + Clone> Ledger<K> {
    fn new(max_delay: Duration) -> Self {
        Self {
            max_delay,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<K, Failures>> {
        // A panic elsewhere while holding the lock leaves counters, not
        // invariants: keep using them.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        let entries = self.entries();
        let failures = entries.get(key)?;
        (failures.blocked_until > now).then(|| failures.blocked_until - now)
    }

    fn fail(&self, key: &K, now: Instant) {
        let mut entries = self.entries();
        if entries.len() > SWEEP_ABOVE {
            entries.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
        }
        let failures = entries.entry(key.clone()).or_insert(Failures {
            count: 0,
            last: now,
            blocked_until: now,
        });
        if now.duration_since(failures.last) >= FORGET_AFTER {
            failures.count = 0;
        }
        failures.count += 1;
        failures.last = now;
        if let Some(over) = failures.count.checked_sub(FREE_FAILURES + 1) {
            let delay = FIRST_DELAY
                .saturating_mul(2u32.saturating_pow(over.min(20)))
                .min(self.max_delay);
            failures.blocked_until = now + delay;
        }
    }

    fn clear(&self, key: &K) {
        self.entries().remove(key);
    }
}

pub struct LoginThrottle {
    addresses: Ledger<IpAddr>,
    users: Ledger<String>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self {
            addresses: Ledger::new(MAX_DELAY_PER_ADDRESS),
            users: Ledger::new(MAX_DELAY_PER_USER),
        }
    }
}

impl LoginThrottle {
    /// How long this address or this username must still wait, if at all.
    pub fn wait(&self, address: IpAddr, username: &str) -> Option<Duration> {
        let now = Instant::now();
        let by_address = self.addresses.wait(&address, now);
        let by_user = self.users.wait(&username.to_ascii_lowercase(), now);
        by_address.max(by_user)
    }

    pub fn failed(&self, address: IpAddr, username: &str) {
        let now = Instant::now();
        self.addresses.fail(&address, now);
        self.users.fail(&username.to_ascii_lowercase(), now);
    }

    pub fn succeeded(&self, address: IpAddr, username: &str) {
        self.addresses.clear(&address);
        self.users.clear(&username.to_ascii_lowercase());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 1, 20));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 1, 21));

    #[tokio::test(start_paused = true)]
    async fn delays_grow_after_free_failures_and_end() {
        let throttle = LoginThrottle::default();
        for _ in 0..FREE_FAILURES {
            assert_eq!(throttle.wait(HOME, "admin"), None);
            throttle.failed(HOME, "admin");
        }
        assert_eq!(throttle.wait(HOME, "admin"), None);
        throttle.failed(HOME, "admin");
        assert_eq!(throttle.wait(HOME, "admin"), Some(Duration::from_secs(1)));
        throttle.failed(HOME, "admin");
        assert_eq!(throttle.wait(HOME, "admin"), Some(Duration::from_secs(2)));
        // The address is held back for any user, the user from any address.
        assert!(throttle.wait(HOME, "someone").is_some());
        assert!(throttle.wait(OTHER, "ADMIN").is_some());
        assert_eq!(throttle.wait(OTHER, "someone"), None);

        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(throttle.wait(HOME, "admin"), None, "the delay ends");
        throttle.succeeded(HOME, "admin");
        throttle.failed(HOME, "admin");
        assert_eq!(throttle.wait(HOME, "admin"), None, "success starts afresh");
    }

    #[tokio::test(start_paused = true)]
    async fn a_username_is_never_held_back_longer_than_its_bound() {
        let throttle = LoginThrottle::default();
        for i in 0..40u8 {
            // Strangers fail from many addresses.
            let stranger = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, i));
            throttle.failed(stranger, "admin");
        }
        let wait = throttle.wait(OTHER, "admin").unwrap();
        assert!(wait <= MAX_DELAY_PER_USER, "{wait:?}");
        tokio::time::advance(MAX_DELAY_PER_USER).await;
        assert_eq!(throttle.wait(OTHER, "admin"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_forgotten_after_a_quiet_hour() {
        let throttle = LoginThrottle::default();
        for _ in 0..FREE_FAILURES {
            throttle.failed(HOME, "admin");
        }
        tokio::time::advance(FORGET_AFTER).await;
        throttle.failed(HOME, "admin");
        assert_eq!(throttle.wait(HOME, "admin"), None);
    }
}

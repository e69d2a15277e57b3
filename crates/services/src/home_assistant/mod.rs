//! Where Home Assistant's broker is: `PLANTOPS_HA_MQTT_URL` and
//! `PLANTOPS_HA_DISCOVERY_PREFIX`, or a URL and prefix set through the API
//! (the URL, with its password, stored sealed), which take precedence. The
//! bridge itself is [`bridge`]; it follows a change at once on this
//! instance and within [`REFRESH`] on the others.

pub mod bridge;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use plantops_core::secret::SecretBox;

use self::bridge::HomeAssistantLink;
use plantops_store::SettingStore;
use tokio::sync::watch;

use crate::keys::{SettingsError, HOME_ASSISTANT_URL};

pub const DEFAULT_PREFIX: &str = "homeassistant";
const PREFIX_SETTING: &str = "home_assistant.prefix";
/// How often an instance re-reads the settings another may have changed.
pub const REFRESH: Duration = Duration::from_secs(30);

/// The broker URL: `mqtt://[user[:password]@]host[:port]` (1883) or
/// `mqtts://…` (8883).
pub fn parse_link(
    url: &str,
    prefix: &str,
    ca: Option<PathBuf>,
) -> Result<HomeAssistantLink, String> {
    let invalid = || {
        "must be mqtt://[user[:password]@]host[:port] or mqtts://… (Home Assistant's broker)"
            .to_string()
    };
    let parsed = reqwest::Url::parse(url.trim()).map_err(|_| invalid())?;
    let tls = match parsed.scheme() {
        "mqtt" => false,
        "mqtts" => true,
        _ => return Err(invalid()),
    };
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(invalid)?;
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
        return Err(invalid());
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    check_prefix(prefix)?;
    Ok(HomeAssistantLink {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: parsed.port().unwrap_or(if tls { 8883 } else { 1883 }),
        tls,
        ca,
        username: Some(parsed.username())
            .filter(|u| !u.is_empty())
            .map(decode),
        password: parsed.password().map(decode),
        prefix: prefix.to_string(),
    })
}

/// A topic level or more, without MQTT's wildcards.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    let valid = !prefix.is_empty()
        && prefix.len() <= 64
        && !prefix.starts_with('/')
        && !prefix.ends_with('/')
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/'));
    if valid {
        Ok(())
    } else {
        Err("must be 1–64 letters, digits, '_', '-' or '/' (Home Assistant's default: homeassistant)".into())
    }
}

/// The URL with its password replaced by `***`.
pub fn masked(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "(unreadable)".into(),
    }
}

/// Where the configuration in force came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Source {
    Api,
    Environment,
}

/// The configuration in force: URL, prefix, source.
#[derive(Debug, Clone)]
pub struct Current {
    pub url: String,
    pub prefix: String,
    pub source: Source,
}

pub struct HomeAssistantSettings {
    store: Arc<dyn SettingStore>,
    secrets: SecretBox,
    /// PLANTOPS_HA_MQTT_URL.
    env_url: Option<String>,
    /// PLANTOPS_HA_DISCOVERY_PREFIX, unless one was set through the API.
    env_prefix: String,
    ca: Option<PathBuf>,
    link: watch::Sender<Option<HomeAssistantLink>>,
}

impl HomeAssistantSettings {
    pub fn new(
        store: Arc<dyn SettingStore>,
        secrets: SecretBox,
        env_url: Option<String>,
        env_prefix: String,
        ca: Option<PathBuf>,
    ) -> Self {
        Self {
            store,
            secrets,
            env_url,
            env_prefix,
            ca,
            link: watch::Sender::new(None),
        }
    }

    /// What the bridge follows.
    pub fn subscribe(&self) -> watch::Receiver<Option<HomeAssistantLink>> {
        self.link.subscribe()
    }

    pub async fn current(&self) -> Result<Option<Current>, SettingsError> {
        let prefix = match self.store.get_setting(PREFIX_SETTING).await? {
            Some(prefix) => prefix,
            None => self.env_prefix.clone(),
        };
        match self.store.get_setting(HOME_ASSISTANT_URL).await? {
            Some(sealed) => Ok(Some(Current {
                url: self.secrets.open(HOME_ASSISTANT_URL, &sealed)?,
                prefix,
                source: Source::Api,
            })),
            None => Ok(self.env_url.clone().map(|url| Current {
                url,
                prefix,
                source: Source::Environment,
            })),
        }
    }

    /// Re-reads the settings and hands a changed link to the bridge.
    pub async fn refresh(&self) -> Result<(), SettingsError> {
        let link = self.current().await?.and_then(|current| {
            parse_link(&current.url, &current.prefix, self.ca.clone())
                .inspect_err(|error| tracing::warn!(%error, "the Home Assistant broker URL"))
                .ok()
        });
        self.link.send_if_modified(|held| {
            let changed = *held != link;
            *held = link;
            changed
        });
        Ok(())
    }

    /// Stores (URL sealed) or clears the API's setting; `None` for the URL
    /// falls back to PLANTOPS_HA_MQTT_URL. Both must be checked already.
    pub async fn set(&self, url: Option<&str>, prefix: Option<&str>) -> Result<(), SettingsError> {
        let sealed = url.map(|u| self.secrets.seal(HOME_ASSISTANT_URL, u));
        self.store
            .put_settings(&[
                (HOME_ASSISTANT_URL, sealed.as_deref()),
                (PREFIX_SETTING, prefix),
            ])
            .await?;
        self.refresh().await
    }

    /// Keeps this instance in step with settings changed on another.
    pub async fn follow(self: Arc<Self>) {
        let mut every = tokio::time::interval(REFRESH);
        loop {
            every.tick().await;
            if let Err(error) = self.refresh().await {
                tracing::warn!(%error, "cannot read the Home Assistant settings");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_with_their_credentials_and_default_ports() {
        let link = parse_link(
            "mqtt://homeassistant:p%40ss@192.168.1.5",
            "homeassistant",
            None,
        )
        .unwrap();
        assert_eq!(
            (link.host.as_str(), link.port, link.tls),
            ("192.168.1.5", 1883, false)
        );
        assert_eq!(link.username.as_deref(), Some("homeassistant"));
        assert_eq!(link.password.as_deref(), Some("p@ss"));
        assert!(!format!("{link:?}").contains("p@ss"));
        let tls = parse_link("mqtts://ha.lan:8884", "ha", None).unwrap();
        assert_eq!((tls.port, tls.tls, tls.username), (8884, true, None));
        for bad in [
            "http://ha.lan",
            "mqtt://",
            "ha.lan:1883",
            "mqtt://ha.lan/topic",
        ] {
            assert!(parse_link(bad, "homeassistant", None).is_err(), "{bad}");
        }
        for bad in ["", "home/#", "+", "/ha", "ha/"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            masked("mqtt://user:secret@ha.lan:1883"),
            "mqtt://user:***@ha.lan:1883"
        );
    }
}

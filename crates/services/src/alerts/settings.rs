//! Where notifications go: a Discord webhook set through the API (stored
//! sealed), else DISCORD_WEBHOOK_URL; and the notification channels.

use plantops_core::secret::SecretBox;
use std::sync::Arc;

use plantops_store::{DynStore, SettingStore};

use super::channels::Channels;
use super::send::{SendSettings, Sender};

/// A webhook URL; its `Debug` hides the secret token in the path.
#[derive(Clone)]
pub struct WebhookUrl(pub String);

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookUrl(<redacted>)")
    }
}

use crate::keys::SettingsError;
use crate::keys::DISCORD_WEBHOOK;

pub struct NotificationSettings {
    store: Arc<dyn SettingStore>,
    secrets: SecretBox,
    from_env: Option<WebhookUrl>,
    pub destinations: WebhookDestinations,
    /// The notification channels beside the Discord webhook.
    pub channels: Channels,
    pub sender: Sender,
}

/// Discord's webhook URLs: where a webhook set through the API may point.
pub const DISCORD_WEBHOOK_PREFIXES: [&str; 4] = [
    "https://discord.com/api/webhooks/",
    "https://discordapp.com/api/webhooks/",
    "https://ptb.discord.com/api/webhooks/",
    "https://canary.discord.com/api/webhooks/",
];

/// URL prefixes a webhook set through the API must start with
/// (PLANTOPS_DISCORD_WEBHOOK_PREFIXES), compared as parsed URLs — scheme,
/// host, port and path — so neither `discord.com.evil.example` nor
/// `https://discord.com@evil.example` nor a `..` in the path gets through.
/// The operator's own DISCORD_WEBHOOK_URL is not held to them.
#[derive(Debug, Clone)]
pub struct WebhookDestinations(Vec<reqwest::Url>);

impl WebhookDestinations {
    pub fn new<S: AsRef<str>>(prefixes: &[S]) -> Result<Self, String> {
        prefixes
            .iter()
            .map(|p| {
                reqwest::Url::parse(p.as_ref().trim())
                    .map_err(|e| format!("{} is not a URL: {e}", p.as_ref()))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn discord() -> Self {
        Self::new(&DISCORD_WEBHOOK_PREFIXES).expect("Discord's prefixes are URLs")
    }

    pub fn allows(&self, candidate: &str) -> bool {
        let Ok(url) = reqwest::Url::parse(candidate) else {
            return false;
        };
        if !url.username().is_empty() || url.password().is_some() {
            return false;
        }
        self.0.iter().any(|prefix| {
            prefix.scheme() == url.scheme()
                && prefix.host_str() == url.host_str()
                && prefix.port_or_known_default() == url.port_or_known_default()
                && url.path().starts_with(prefix.path())
        })
    }

    /// The prefixes, for error messages.
    pub fn describe(&self) -> String {
        let all: Vec<&str> = self.0.iter().map(reqwest::Url::as_str).collect();
        all.join(", ")
    }
}

impl NotificationSettings {
    pub fn new(
        store: &DynStore,
        secrets: SecretBox,
        from_env: Option<WebhookUrl>,
        destinations: WebhookDestinations,
        send: SendSettings,
    ) -> reqwest::Result<Self> {
        Ok(Self {
            store: store.clone(),
            channels: Channels::new(store.clone(), secrets.clone()),
            secrets,
            from_env,
            destinations,
            sender: Sender::new(send)?,
        })
    }

    pub async fn discord_webhook(&self) -> Result<Option<WebhookUrl>, SettingsError> {
        match self.store.get_setting(DISCORD_WEBHOOK).await? {
            Some(sealed) => Ok(Some(WebhookUrl(
                self.secrets.open(DISCORD_WEBHOOK, &sealed)?,
            ))),
            None => Ok(self.from_env.clone()),
        }
    }

    /// Stores (sealed) or clears the API-set webhook.
    pub async fn set_discord_webhook(&self, url: Option<&str>) -> Result<(), SettingsError> {
        let sealed = url.map(|u| self.secrets.seal(DISCORD_WEBHOOK, u));
        self.store
            .put_setting(DISCORD_WEBHOOK, sealed.as_deref())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_discord_webhook_urls_pass_by_default() {
        let discord = WebhookDestinations::discord();
        for url in [
            "https://discord.com/api/webhooks/1/token",
            "https://discordapp.com/api/webhooks/1/token",
            "https://DISCORD.com:443/api/webhooks/1/token",
        ] {
            assert!(discord.allows(url), "{url}");
        }
        for url in [
            "http://discord.com/api/webhooks/1/token",
            "https://discord.com.evil.example/api/webhooks/1/token",
            "https://discord.com@evil.example/api/webhooks/1/token",
            "https://user:pw@discord.com/api/webhooks/1/token",
            "https://discord.com:8443/api/webhooks/1/token",
            "https://discord.com/api/webhooks/../../oauth2/token",
            "https://discord.com/api/webhook",
            "https://169.254.169.254/latest/meta-data/",
            "not a url",
        ] {
            assert!(!discord.allows(url), "{url}");
        }
        let local = WebhookDestinations::new(&["http://127.0.0.1:9000/"]).unwrap();
        assert!(local.allows("http://127.0.0.1:9000/hook"));
        assert!(!local.allows("http://127.0.0.1:9001/hook"));
        assert!(!local.allows("http://127.0.0.1:9000@evil.example/hook"));
    }

    #[test]
    fn webhook_urls_do_not_show_in_debug_output() {
        let url = WebhookUrl("https://discord.com/api/webhooks/1/secret-token".into());
        assert!(!format!("{url:?}").contains("secret"));
    }
}

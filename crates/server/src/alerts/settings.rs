//! Where notifications go: a Discord webhook set through the API (stored
//! sealed), else DISCORD_WEBHOOK_URL.

use plantops_core::secret::{SecretBox, SecretError};
use std::sync::Arc;

use plantops_store::{SettingStore, StoreError};

/// A webhook URL; its `Debug` hides the secret token in the path.
#[derive(Clone)]
pub struct WebhookUrl(pub String);

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookUrl(<redacted>)")
    }
}

const DISCORD_WEBHOOK: &str = "discord_webhook";
const KEY_CHECK: &str = "encryption_key_check";
const KEY_CHECK_TEXT: &str = "plantops";

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

pub struct NotificationSettings {
    store: Arc<dyn SettingStore>,
    secrets: SecretBox,
    from_env: Option<WebhookUrl>,
}

/// Makes sure `secrets` holds the key this database's secrets were sealed
/// with (recording it on first use), so a wrong ENCRYPTION_KEY stops
/// start-up instead of silently losing them.
pub async fn check_key(store: &dyn SettingStore, secrets: &SecretBox) -> Result<(), SettingsError> {
    match store.get_setting(KEY_CHECK).await? {
        Some(sealed) => {
            if secrets.open(&sealed)? != KEY_CHECK_TEXT {
                return Err(SecretError::WrongKey.into());
            }
        }
        None => {
            store
                .put_setting(KEY_CHECK, Some(&secrets.seal(KEY_CHECK_TEXT)))
                .await?
        }
    }
    Ok(())
}

impl NotificationSettings {
    pub fn new(
        store: Arc<dyn SettingStore>,
        secrets: SecretBox,
        from_env: Option<WebhookUrl>,
    ) -> Self {
        Self {
            store,
            secrets,
            from_env,
        }
    }

    pub async fn discord_webhook(&self) -> Result<Option<WebhookUrl>, SettingsError> {
        match self.store.get_setting(DISCORD_WEBHOOK).await? {
            Some(sealed) => Ok(Some(WebhookUrl(self.secrets.open(&sealed)?))),
            None => Ok(self.from_env.clone()),
        }
    }

    /// Stores (sealed) or clears the API-set webhook.
    pub async fn set_discord_webhook(&self, url: Option<&str>) -> Result<(), SettingsError> {
        let sealed = url.map(|u| self.secrets.seal(u));
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
    fn webhook_urls_do_not_show_in_debug_output() {
        let url = WebhookUrl("https://discord.com/api/webhooks/1/secret-token".into());
        assert!(!format!("{url:?}").contains("secret"));
    }
}

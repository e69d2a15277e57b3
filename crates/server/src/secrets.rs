//! Every secret PlantOps stores, in one list: the key check, the Discord
//! webhook, Home Assistant's broker URL, the LLM API key and every
//! notification channel's configuration. Start-up checks the key against them and
//! re-seals values from before purpose binding; `plantops rotate-key`
//! re-seals them all under a new key in one transaction.

use plantops_core::secret::{is_unbound, SecretBox, SecretError};
use plantops_store::{SettingStore, Store, StoreError};

/// The setting holding a fixed text sealed under the installation's key.
pub const KEY_CHECK: &str = "encryption_key_check";
const KEY_CHECK_TEXT: &str = "plantops";
/// The Discord webhook set through the API; the setting's whole value.
pub const DISCORD_WEBHOOK: &str = "discord_webhook";
/// Home Assistant's broker URL (with its password) set through the API.
pub const HOME_ASSISTANT_URL: &str = "home_assistant.url";
/// The LLM settings (JSON); the key is its `api_key_sealed` field.
pub const LLM_SETTING: &str = "llm";
/// The purpose the LLM API key is sealed for.
pub const LLM_API_KEY: &str = "llm.api_key";
const LLM_SEALED_FIELD: &str = "api_key_sealed";

/// The purpose a notification channel's configuration is sealed for: it
/// opens for that channel only.
pub fn channel_purpose(id: uuid::Uuid) -> String {
    format!("notification_channel.{id}")
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// Makes sure `secrets` holds the key this database's secrets were sealed
/// with (recording it on first use), so a wrong ENCRYPTION_KEY stops
/// start-up instead of silently losing them.
pub async fn check_key(store: &dyn SettingStore, secrets: &SecretBox) -> Result<(), SettingsError> {
    match store.get_setting(KEY_CHECK).await? {
        Some(sealed) => {
            if secrets.open(KEY_CHECK, &sealed)? != KEY_CHECK_TEXT {
                return Err(SecretError::WrongKey.into());
            }
        }
        None => {
            store
                .put_setting(KEY_CHECK, Some(&secrets.seal(KEY_CHECK, KEY_CHECK_TEXT)))
                .await?
        }
    }
    Ok(())
}

/// Which stored values to re-seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reseal {
    /// Only values sealed before purpose binding (start-up).
    Unbound,
    /// Every value (a new key).
    All,
}

/// Re-seals stored secrets from `old` to `new` (the same key at start-up),
/// all in one transaction; returns how many were re-sealed. Any value that
/// does not open under `old` stops it with nothing changed.
pub async fn reseal(
    store: &dyn Store,
    old: &SecretBox,
    new: &SecretBox,
    which: Reseal,
) -> Result<usize, SettingsError> {
    let wanted = |sealed: &str| which == Reseal::All || is_unbound(sealed);
    let mut changes: Vec<(&str, String)> = Vec::new();
    for (setting, purpose) in [
        (KEY_CHECK, KEY_CHECK),
        (DISCORD_WEBHOOK, DISCORD_WEBHOOK),
        (HOME_ASSISTANT_URL, HOME_ASSISTANT_URL),
    ] {
        if let Some(sealed) = store.get_setting(setting).await? {
            if wanted(&sealed) {
                let plain = old.open(purpose, &sealed)?;
                changes.push((setting, new.seal(purpose, &plain)));
            }
        }
    }
    if let Some(raw) = store.get_setting(LLM_SETTING).await? {
        let mut llm: serde_json::Value = serde_json::from_str(&raw)
            .map_err(|e| StoreError::Corrupt(format!("llm settings: {e}")))?;
        if let Some(sealed) = llm[LLM_SEALED_FIELD].as_str().filter(|s| wanted(s)) {
            let plain = old.open(LLM_API_KEY, sealed)?;
            llm[LLM_SEALED_FIELD] = new.seal(LLM_API_KEY, &plain).into();
            changes.push((LLM_SETTING, llm.to_string()));
        }
    }
    let mut channels = Vec::new();
    for channel in store.list_channels().await? {
        if wanted(&channel.config_sealed) {
            let purpose = channel_purpose(channel.id);
            let plain = old.open(&purpose, &channel.config_sealed)?;
            channels.push((channel.id, new.seal(&purpose, &plain)));
        }
    }
    let batch: Vec<(&str, Option<&str>)> = changes
        .iter()
        .map(|(setting, value)| (*setting, Some(value.as_str())))
        .collect();
    if !batch.is_empty() || !channels.is_empty() {
        store.put_sealed(&batch, &channels).await?;
    }
    Ok(batch.len() + channels.len())
}

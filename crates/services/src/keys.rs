//! Every secret PlantOps stores, in one list: the key check, the Discord
//! webhook, Home Assistant's broker URL, the LLM API key and every
//! notification channel's configuration. Start-up checks the key against them and
//! re-seals values from before purpose binding; `plantops rotate-key`
//! re-seals them all under a new key in one transaction.

use std::path::Path;

use anyhow::Context;
use plantops_core::secret::{generate_key, is_unbound, SecretBox, SecretError};
use plantops_mqtt::certs::write_private;
use plantops_store::{Backend, DynStore, SettingStore, Store, StoreError};

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

/// Where PlantOps keeps a generated key for stored secrets (SQLite).
pub const KEY_FILE: &str = "encryption.key";
/// A new key written by `plantops rotate-key` before it re-seals; it
/// replaces [`KEY_FILE`] once the database holds secrets sealed with it.
pub const NEXT_KEY_FILE: &str = "encryption.key.next";

/// The key sealing stored secrets: ENCRYPTION_KEY, or with SQLite a key
/// generated once into the data directory (mode 0600).
pub fn installation_key(
    configured: Option<&str>,
    data_dir: &Path,
    backend: Backend,
) -> anyhow::Result<SecretBox> {
    let key = match configured {
        Some(key) => key.to_string(),
        None if backend == Backend::Postgres => anyhow::bail!(
            "ENCRYPTION_KEY is required with PostgreSQL (generate one with: openssl rand -hex 32)"
        ),
        None => {
            let path = data_dir.join(KEY_FILE);
            if !path.exists() {
                write_private(&path, generate_key().as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                tracing::info!(path = %path.display(), "generated the key for stored secrets; back it up with the database");
            }
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?
        }
    };
    SecretBox::from_hex(&key).context("ENCRYPTION_KEY")
}

/// The installation's key, checked against the database: a key that does
/// not open its secrets stops start-up. A key rotation interrupted after
/// its commit is completed here; values sealed before purpose binding are
/// re-sealed.
pub async fn open_secrets(
    configured: Option<&str>,
    data_dir: &Path,
    store: &DynStore,
) -> anyhow::Result<SecretBox> {
    let secrets = installation_key(configured, data_dir, store.backend())?;
    let secrets = match check_key(store.as_ref(), &secrets).await {
        Ok(()) => secrets,
        Err(error) => match finish_rotation(configured, data_dir, store).await? {
            Some(rotated) => rotated,
            None => return Err(error).context(
                "ENCRYPTION_KEY does not match the key this database's secrets were sealed with",
            ),
        },
    };
    let resealed = reseal(store.as_ref(), &secrets, &secrets, Reseal::Unbound)
        .await
        .context("cannot re-seal stored secrets")?;
    if resealed > 0 {
        tracing::info!(resealed, "stored secrets bound to their purpose");
    }
    Ok(secrets)
}

/// The key of a rotation interrupted after its commit (SQLite's key file
/// only): the new key, if it opens the database, now made the key file.
async fn finish_rotation(
    configured: Option<&str>,
    data_dir: &Path,
    store: &DynStore,
) -> anyhow::Result<Option<SecretBox>> {
    if configured.is_some() {
        return Ok(None);
    }
    let next = data_dir.join(NEXT_KEY_FILE);
    let Some(rotated) = std::fs::read_to_string(&next)
        .ok()
        .and_then(|key| SecretBox::from_hex(&key).ok())
    else {
        return Ok(None);
    };
    if check_key(store.as_ref(), &rotated).await.is_err() {
        return Ok(None);
    }
    std::fs::rename(&next, data_dir.join(KEY_FILE))
        .context("cannot finish the interrupted key rotation")?;
    tracing::info!("finished an interrupted key rotation");
    Ok(Some(rotated))
}

//! `plantops rotate-key`: re-seal every stored secret (Discord webhook, LLM
//! API key) under a new ENCRYPTION_KEY, in one transaction. Stop the server
//! first: a running one still holds the old key.

use std::io::Read;

use anyhow::Context;
use clap::Args;
use plantops_core::secret::{generate_key, SecretBox};
use plantops_services::keys::{check_key, reseal, Reseal};
use plantops_services::keys::{installation_key, KEY_FILE, NEXT_KEY_FILE};

use crate::config::DatabaseSettings;

#[derive(Debug, Args)]
pub struct RotateKeyArgs {
    #[command(flatten)]
    pub database: DatabaseSettings,

    /// The current key; unset with SQLite = the key file in the data
    /// directory, which is replaced by the new key.
    #[arg(long, env = "ENCRYPTION_KEY", hide_env_values = true)]
    pub encryption_key: Option<String>,

    /// Read the new key (64 hex characters) from standard input instead of
    /// generating one.
    #[arg(long)]
    pub new_key_stdin: bool,
}

pub async fn run(args: RotateKeyArgs) -> anyhow::Result<()> {
    let store = crate::serve::open_database(&args.database).await?;
    let data_dir = &args.database.data_dir;
    let old = installation_key(args.encryption_key.as_deref(), data_dir, store.backend())?;
    check_key(store.as_ref(), &old)
        .await
        .context("the current key does not open this database's secrets")?;
    let new_hex = if args.new_key_stdin {
        let mut raw = String::new();
        std::io::stdin()
            .read_to_string(&mut raw)
            .context("cannot read the new key from standard input")?;
        raw.trim().to_string()
    } else {
        generate_key()
    };
    let new = SecretBox::from_hex(&new_hex).context("the new key")?;

    // With a key file, the new key is on disk before the database depends
    // on it; start-up completes a rotation interrupted after the commit.
    let key_file = args
        .encryption_key
        .is_none()
        .then(|| data_dir.join(KEY_FILE));
    if key_file.is_some() {
        let next = data_dir.join(NEXT_KEY_FILE);
        plantops_mqtt::certs::write_private(&next, new_hex.as_bytes())
            .with_context(|| format!("cannot write {}", next.display()))?;
    }
    let resealed = reseal(store.as_ref(), &old, &new, Reseal::All)
        .await
        .context("re-sealing failed; nothing was changed")?;
    match key_file {
        Some(path) => {
            std::fs::rename(data_dir.join(NEXT_KEY_FILE), &path)
                .with_context(|| format!("cannot replace {}", path.display()))?;
            eprintln!(
                "re-sealed {resealed} stored secrets; the new key is in {} (back it up with the database)",
                path.display()
            );
        }
        None => {
            if !args.new_key_stdin {
                println!("{new_hex}");
            }
            eprintln!(
                "re-sealed {resealed} stored secrets: set ENCRYPTION_KEY to the new key before starting PlantOps"
            );
        }
    }
    Ok(())
}

//! `plantops user …` and `plantops token …`: accounts and API tokens from
//! the command line, on the configured database, whether the server runs
//! or not — the headless setup and the way back in after a lost password.

use std::io::BufRead;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use plantops_core::account::{hash_user_password, validate_credentials, Role, Scope, User};
use plantops_store::{AccountChange, DynStore};
use uuid::Uuid;

use crate::config::DatabaseSettings;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add an account; the password is read from standard input.
    Add {
        name: String,
        /// `admin` (everything) or `viewer` (reads everything, changes nothing).
        #[arg(long, default_value = "viewer", value_parser = role)]
        role: Role,
        #[command(flatten)]
        password: PasswordInput,
        #[command(flatten)]
        database: DatabaseSettings,
    },
    /// Set an account's password (read from standard input); its sessions end.
    Passwd {
        name: String,
        #[command(flatten)]
        password: PasswordInput,
        #[command(flatten)]
        database: DatabaseSettings,
    },
    /// List the accounts.
    List {
        #[command(flatten)]
        database: DatabaseSettings,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token for a user and print it (shown once), e.g. for
    /// Prometheus, scripts or Home Assistant.
    Create {
        /// The account the token acts for.
        #[arg(long)]
        user: String,
        /// What the token is for, shown in the UI's token list.
        #[arg(long)]
        name: String,
        /// `read` (GET only) or `full` (what the user may do).
        #[arg(long, default_value = "read", value_parser = scope)]
        scope: Scope,
        #[command(flatten)]
        database: DatabaseSettings,
    },
}

#[derive(Debug, Clone, Args)]
pub struct PasswordInput {
    /// Read the password from the first line of standard input (so it
    /// appears in no process list or shell history).
    #[arg(long, required = true)]
    pub password_stdin: bool,
}

fn role(raw: &str) -> Result<Role, String> {
    Role::parse(raw.trim()).ok_or_else(|| "--role must be admin or viewer".into())
}

fn scope(raw: &str) -> Result<Scope, String> {
    Scope::parse(raw.trim()).ok_or_else(|| "--scope must be read or full".into())
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

async fn open(database: &DatabaseSettings) -> anyhow::Result<DynStore> {
    crate::serve::open_database(database).await
}

async fn find(store: &DynStore, name: &str) -> anyhow::Result<User> {
    match store.user_by_name(name).await? {
        Some(stored) => Ok(stored.user),
        None => bail!("no user named {name:?} (plantops user list shows them)"),
    }
}

fn check(username: &str, password: &str) -> anyhow::Result<()> {
    validate_credentials(username, password).map_err(|errors| {
        anyhow::anyhow!(errors
            .0
            .iter()
            .map(|e| e.msg.clone())
            .collect::<Vec<_>>()
            .join("; "))
    })
}

pub async fn user(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            name,
            role,
            password: _,
            database,
        } => {
            let password = read_password()?;
            check(&name, &password)?;
            let store = open(&database).await?;
            let user = User {
                id: Uuid::new_v4(),
                username: name.clone(),
                role,
                created_at: plantops_core::now(),
            };
            let hash = tokio::task::spawn_blocking(move || hash_user_password(&password)).await?;
            if store.insert_user(&user, &hash, false).await? != AccountChange::Done {
                bail!("a user named {name:?} exists: plantops user passwd {name} --password-stdin sets its password");
            }
            // With an account in place the first-start setup link is dead.
            let _ = std::fs::remove_file(
                database
                    .data_dir
                    .join(plantops_server::auth::SETUP_TOKEN_FILE),
            );
            println!("added {} ({})", user.username, user.role.as_str());
        }
        UserCommand::Passwd {
            name,
            password: _,
            database,
        } => {
            let password = read_password()?;
            check(&name, &password)?;
            let store = open(&database).await?;
            let user = find(&store, &name).await?;
            let hash = tokio::task::spawn_blocking(move || hash_user_password(&password)).await?;
            store.set_user_password(user.id, &hash).await?;
            println!("password of {name} changed; its sessions have ended");
        }
        UserCommand::List { database } => {
            let store = open(&database).await?;
            let users = store.list_users().await?;
            if users.is_empty() {
                println!("no users yet: plantops user add NAME --role admin --password-stdin");
            }
            for user in users {
                println!(
                    "{}\t{}\t{}",
                    user.username,
                    user.role.as_str(),
                    user.created_at.format("%Y-%m-%d %H:%M UTC")
                );
            }
        }
    }
    Ok(())
}

pub async fn token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            user,
            name,
            scope,
            database,
        } => {
            let name = name.trim().to_string();
            if name.is_empty() || name.chars().count() > plantops_core::account::MAX_NAME_CHARS {
                bail!("--name must be 1–100 characters");
            }
            let store = open(&database).await?;
            let owner = find(&store, &user).await?;
            let issued =
                plantops_services::accounts::create_api_token(&store, owner.id, name, scope)
                    .await?;
            println!("{}", issued.secret);
        }
    }
    Ok(())
}

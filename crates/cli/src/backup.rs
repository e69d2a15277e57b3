//! `plantops backup` and `plantops restore`. SQLite: SQLite's online backup
//! API, safe while the server runs. PostgreSQL: pg_dump/pg_restore in the
//! custom format, with TimescaleDB's restore mode when it is installed.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context};
use clap::Args;
use sqlx::{Connection, PgConnection};

use crate::config::DatabaseSettings;

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// File to write; replaced atomically, so a failed run leaves no half file.
    #[arg(long, short)]
    pub output: PathBuf,

    #[command(flatten)]
    pub database: DatabaseSettings,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A file written by `plantops backup`.
    pub input: PathBuf,

    #[command(flatten)]
    pub database: DatabaseSettings,
}

enum Target {
    Sqlite(PathBuf),
    Postgres(String),
}

fn target(settings: &DatabaseSettings) -> anyhow::Result<Target> {
    let url = settings.url();
    if url.starts_with("sqlite:") {
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
            .with_context(|| "DATABASE_URL is not a valid SQLite URL")?;
        Ok(Target::Sqlite(options.get_filename().to_path_buf()))
    } else {
        Ok(Target::Postgres(url))
    }
}

/// `path` with `suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let partial = sibling(&args.output, ".partial");
    let result = match target(&args.database)? {
        Target::Sqlite(db) => {
            let partial = partial.clone();
            tokio::task::spawn_blocking(move || sqlite_backup(&db, &partial)).await?
        }
        Target::Postgres(url) => pg_dump(&url, &partial).await,
    };
    if let Err(error) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(error);
    }
    std::fs::rename(&partial, &args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let size = std::fs::metadata(&args.output)
        .map(|m| m.len())
        .unwrap_or(0);
    println!("backup written: {} ({size} bytes)", args.output.display());
    println!(
        "Stored secrets (LLM key, webhook) are sealed with ENCRYPTION_KEY or \
         <data dir>/encryption.key: keep that key with the backup."
    );
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    if !args.input.is_file() {
        bail!("{} is not a file", args.input.display());
    }
    match target(&args.database)? {
        Target::Sqlite(db) => {
            let input = args.input.clone();
            let aside = tokio::task::spawn_blocking(move || sqlite_restore(&input, &db)).await??;
            if let Some(aside) = aside {
                println!("the previous database was kept as {}", aside.display());
            }
        }
        Target::Postgres(url) => pg_restore(&url, &args.input).await?,
    }
    println!("restored from {}", args.input.display());
    Ok(())
}

fn sqlite_backup(db: &Path, output: &Path) -> anyhow::Result<()> {
    if !db.is_file() {
        bail!(
            "no SQLite database at {} (PLANTOPS_DATA_DIR or DATABASE_URL)",
            db.display()
        );
    }
    let source = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", db.display()))?;
    let _ = std::fs::remove_file(output);
    let mut copy = rusqlite::Connection::open(output)
        .with_context(|| format!("cannot create {}", output.display()))?;
    copy_pages(&source, &mut copy).context("SQLite backup failed")?;
    // A backup file is one self-contained file, not a WAL pair.
    copy.pragma_update(None, "journal_mode", "DELETE")?;
    check_sqlite(&copy).with_context(|| format!("{} failed its check", output.display()))
}

/// SQLite's online backup of every page of `source` into `copy`, in one
/// step: one read transaction, so a consistent snapshot, and in WAL mode the
/// server keeps writing meanwhile. Retried while another connection holds a
/// lock that blocks it.
fn copy_pages(
    source: &rusqlite::Connection,
    copy: &mut rusqlite::Connection,
) -> anyhow::Result<()> {
    use rusqlite::backup::{Backup, StepResult};
    let backup = Backup::new(source, copy)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match backup.step(-1)? {
            StepResult::Done => return Ok(()),
            StepResult::More => {}
            StepResult::Busy | StepResult::Locked if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            _ => bail!("the database stayed locked for 60 s"),
        }
    }
}

fn check_sqlite(db: &rusqlite::Connection) -> anyhow::Result<()> {
    let verdict: String = db.query_row("PRAGMA integrity_check", [], |row| row.get(0))?;
    if verdict != "ok" {
        bail!("integrity check: {verdict}");
    }
    let migrated: bool = db.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = '_sqlx_migrations')",
        [],
        |row| row.get(0),
    )?;
    if !migrated {
        bail!("not a PlantOps database (no migrations table)");
    }
    Ok(())
}

/// Checks the backup, then swaps it in; the current database (and its WAL)
/// is moved aside, never deleted. Returns where it went.
fn sqlite_restore(input: &Path, db: &Path) -> anyhow::Result<Option<PathBuf>> {
    let staged = sibling(db, ".restoring");
    let _ = std::fs::remove_file(&staged);
    let stage = || -> anyhow::Result<()> {
        let source = rusqlite::Connection::open_with_flags(
            input,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .with_context(|| format!("cannot open {}", input.display()))?;
        check_sqlite(&source)
            .with_context(|| format!("{} is not a usable PlantOps backup", input.display()))?;
        let mut copy = rusqlite::Connection::open(&staged)?;
        copy_pages(&source, &mut copy)
    };
    if let Err(error) = stage() {
        let _ = std::fs::remove_file(&staged);
        return Err(error);
    }
    let aside = if db.exists() {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let aside = sibling(db, &format!(".before-restore-{stamp}"));
        std::fs::rename(db, &aside)
            .with_context(|| format!("cannot move {} aside", db.display()))?;
        for suffix in ["-wal", "-shm"] {
            let companion = sibling(db, suffix);
            if companion.exists() {
                std::fs::rename(&companion, sibling(&aside, suffix))?;
            }
        }
        Some(aside)
    } else {
        None
    };
    std::fs::rename(&staged, db).with_context(|| format!("cannot write {}", db.display()))?;
    Ok(aside)
}

async fn run_tool(mut command: tokio::process::Command, tool: &str) -> anyhow::Result<()> {
    let output = command.output().await.map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "{tool} not found: install the PostgreSQL client (package postgresql-client, \
                 the server's major version or newer), or use the commands in docs/deployment.md \
                 that run it inside the db container"
            )
        } else {
            anyhow::Error::new(error).context(format!("cannot run {tool}"))
        }
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!("{tool} failed: {}", stderr.trim());
    }
    Ok(())
}

/// A PostgreSQL client tool for `url`, its password passed in `PGPASSWORD`
/// rather than on the command line, where any local user could read it
/// (`ps`, /proc).
fn postgres_tool(program: &str, url: &str) -> anyhow::Result<tokio::process::Command> {
    let (url, password) = split_password(url)?;
    let mut command = tokio::process::Command::new(program);
    command.arg(format!("--dbname={url}"));
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    Ok(command)
}

/// The URL without its password, and the password (decoded).
fn split_password(url: &str) -> anyhow::Result<(String, Option<String>)> {
    let mut parsed = reqwest::Url::parse(url).context("DATABASE_URL is not a URL")?;
    let password = parsed.password().map(|p| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .into_owned()
    });
    if password.is_some() {
        parsed
            .set_password(None)
            .map_err(|()| anyhow::anyhow!("DATABASE_URL cannot drop its password"))?;
    }
    Ok((parsed.to_string(), password))
}

async fn pg_dump(url: &str, output: &Path) -> anyhow::Result<()> {
    let mut command = postgres_tool("pg_dump", url)?;
    command
        .args(["--format=custom", "--no-owner", "--file"])
        .arg(output);
    run_tool(command, "pg_dump").await
}

async fn pg_restore(url: &str, input: &Path) -> anyhow::Result<()> {
    let mut db = PgConnection::connect(url)
        .await
        .context("cannot connect to DATABASE_URL")?;
    let timescale: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
    )
    .fetch_one(&mut db)
    .await?;
    if timescale {
        sqlx::query("SELECT timescaledb_pre_restore()")
            .execute(&mut db)
            .await?;
    }
    let mut command = postgres_tool("pg_restore", url)?;
    command
        .args([
            "--clean",
            "--if-exists",
            "--no-owner",
            "--single-transaction",
            "--exit-on-error",
        ])
        .arg(input);
    let restored = run_tool(command, "pg_restore").await;
    if timescale {
        sqlx::query("SELECT timescaledb_post_restore()")
            .execute(&mut db)
            .await?;
    }
    restored
}

#[cfg(test)]
mod tests {
    use super::split_password;

    #[test]
    fn the_password_leaves_the_url_for_the_environment() {
        let (url, password) =
            split_password("postgres://plantops:s%40cret%2Fpw@db:5432/plantops").unwrap();
        assert_eq!(url, "postgres://plantops@db:5432/plantops");
        assert_eq!(password.as_deref(), Some("s@cret/pw"));
        let (url, password) = split_password("postgres://root@127.0.0.1/test").unwrap();
        assert_eq!(
            (url.as_str(), password),
            ("postgres://root@127.0.0.1/test", None)
        );
    }
}

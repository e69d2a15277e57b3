//! Writing, verifying and restoring a database backup. SQLite: SQLite's
//! online backup API, safe while the server runs. PostgreSQL:
//! pg_dump/pg_restore in the custom format, with TimescaleDB's restore mode
//! when it is installed.
//!
//! A backup is taken inside one read snapshot that also counts every
//! table's rows; verifying restores the file into a scratch database (a
//! temporary file, a temporary PostgreSQL database) and compares the
//! counts, so "verified" means "restores to what the database held".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context};
use sqlx::{Connection, PgConnection};

/// Rows per table at the moment a backup was taken.
pub type RowCounts = BTreeMap<String, i64>;

pub enum Target {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Target {
    pub fn of(database_url: &str) -> anyhow::Result<Self> {
        if database_url.starts_with("sqlite:") {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(database_url)
                .context("DATABASE_URL is not a valid SQLite URL")?;
            Ok(Target::Sqlite(options.get_filename().to_path_buf()))
        } else {
            Ok(Target::Postgres(database_url.to_string()))
        }
    }

    /// The extension of this backend's backup files.
    pub fn extension(&self) -> &'static str {
        match self {
            Target::Sqlite(_) => "sqlite3",
            Target::Postgres(_) => "dump",
        }
    }

    /// Writes a backup to `output` (replacing it) and returns what it holds.
    pub async fn write(&self, output: &Path) -> anyhow::Result<RowCounts> {
        match self {
            Target::Sqlite(db) => {
                let (db, output) = (db.clone(), output.to_path_buf());
                tokio::task::spawn_blocking(move || sqlite_backup(&db, &output)).await?
            }
            Target::Postgres(url) => pg_backup(url, output).await,
        }
    }

    /// Restores `backup` into a scratch database and compares its rows with
    /// `expected`; the scratch database is gone afterwards either way.
    pub async fn verify(&self, backup: &Path, expected: &RowCounts) -> anyhow::Result<()> {
        match self {
            Target::Sqlite(_) => {
                let (backup, expected) = (backup.to_path_buf(), expected.clone());
                tokio::task::spawn_blocking(move || sqlite_verify(&backup, &expected)).await?
            }
            Target::Postgres(url) => pg_verify(url, backup, expected).await,
        }
    }

    /// Replaces the database with `input`'s contents. SQLite: the current
    /// file is moved aside and its new name returned.
    pub async fn restore(&self, input: &Path) -> anyhow::Result<Option<PathBuf>> {
        match self {
            Target::Sqlite(db) => {
                let (input, db) = (input.to_path_buf(), db.clone());
                tokio::task::spawn_blocking(move || sqlite_restore(&input, &db)).await?
            }
            Target::Postgres(url) => pg_restore(url, input, Restore::Replace)
                .await
                .map(|()| None),
        }
    }
}

/// `path` with `suffix` appended to its file name.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Differences between the rows a backup was taken with and those it
/// restored to, as one message; `Ok` when there are none.
fn compare(expected: &RowCounts, restored: &RowCounts) -> anyhow::Result<()> {
    let mut differences = Vec::new();
    for (table, rows) in expected {
        match restored.get(table) {
            Some(got) if got == rows => {}
            Some(got) => differences.push(format!("{table}: {rows} rows, {got} restored")),
            None => differences.push(format!("{table}: missing after the restore")),
        }
    }
    for table in restored.keys().filter(|t| !expected.contains_key(*t)) {
        differences.push(format!("{table}: not in the database"));
    }
    if differences.is_empty() {
        Ok(())
    } else {
        bail!("the restored copy differs: {}", differences.join("; "))
    }
}

fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

fn sqlite_row_counts(db: &rusqlite::Connection) -> anyhow::Result<RowCounts> {
    let mut tables = db.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )?;
    let names = tables
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut counts = RowCounts::new();
    for name in names {
        let rows = db.query_row(
            &format!("SELECT count(*) FROM {}", quoted(&name)),
            [],
            |row| row.get(0),
        )?;
        counts.insert(name, rows);
    }
    Ok(counts)
}

fn sqlite_backup(db: &Path, output: &Path) -> anyhow::Result<RowCounts> {
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
    source.busy_timeout(std::time::Duration::from_secs(60))?;
    let _ = std::fs::remove_file(output);
    let mut copy = rusqlite::Connection::open(output)
        .with_context(|| format!("cannot create {}", output.display()))?;
    // The counts and the copy come from one read transaction: the backup
    // step reuses the snapshot its source connection already holds.
    source.execute_batch("BEGIN")?;
    let taken = sqlite_row_counts(&source).and_then(|rows| {
        copy_pages(&source, &mut copy)?;
        Ok(rows)
    });
    source.execute_batch("COMMIT")?;
    let rows = taken.context("SQLite backup failed")?;
    // A backup file is one self-contained file, not a WAL pair.
    copy.pragma_update(None, "journal_mode", "DELETE")?;
    check_sqlite(&copy).with_context(|| format!("{} failed its check", output.display()))?;
    Ok(rows)
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

/// Checks the backup `input` and copies it into `staged`, the way a
/// restore begins.
fn sqlite_stage(input: &Path, staged: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(staged);
    let stage = || -> anyhow::Result<()> {
        let source = rusqlite::Connection::open_with_flags(
            input,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .with_context(|| format!("cannot open {}", input.display()))?;
        check_sqlite(&source)
            .with_context(|| format!("{} is not a usable PlantOps backup", input.display()))?;
        let mut copy = rusqlite::Connection::open(staged)?;
        copy_pages(&source, &mut copy)
    };
    stage().inspect_err(|_| {
        let _ = std::fs::remove_file(staged);
    })
}

/// Restores into a temporary file beside the backup (the same disk, not a
/// RAM-backed /tmp) and compares.
fn sqlite_verify(backup: &Path, expected: &RowCounts) -> anyhow::Result<()> {
    let dir = backup.parent().unwrap_or(Path::new("."));
    let scratch = tempfile::Builder::new()
        .prefix(".plantops-verify-")
        .tempfile_in(dir)
        .context("cannot create a scratch file to restore into")?;
    sqlite_stage(backup, scratch.path())?;
    let restored = rusqlite::Connection::open(scratch.path())?;
    check_sqlite(&restored).context("the restored copy failed its check")?;
    compare(expected, &sqlite_row_counts(&restored)?)
}

/// Checks the backup, then swaps it in; the current database (and its WAL)
/// is moved aside, never deleted. Returns where it went.
fn sqlite_restore(input: &Path, db: &Path) -> anyhow::Result<Option<PathBuf>> {
    let staged = sibling(db, ".restoring");
    sqlite_stage(input, &staged)?;
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

/// Runs a PostgreSQL client tool; its standard output.
async fn run_tool(mut command: tokio::process::Command, tool: &str) -> anyhow::Result<Vec<u8>> {
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
    Ok(output.stdout)
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

async fn pg_row_counts(db: &mut PgConnection) -> anyhow::Result<RowCounts> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1",
    )
    .fetch_all(&mut *db)
    .await?;
    let mut counts = RowCounts::new();
    for table in tables {
        let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", quoted(&table)))
            .fetch_one(&mut *db)
            .await?;
        counts.insert(table, rows);
    }
    Ok(counts)
}

/// pg_dump of the snapshot the counts were read in (`pg_export_snapshot`),
/// so both describe the same moment while the server keeps writing.
async fn pg_backup(url: &str, output: &Path) -> anyhow::Result<RowCounts> {
    let mut db = PgConnection::connect(url)
        .await
        .context("cannot connect to DATABASE_URL")?;
    let mut snapshot = db.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *snapshot)
        .await?;
    let id: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut *snapshot)
        .await?;
    let rows = pg_row_counts(&mut snapshot).await?;
    let mut command = postgres_tool("pg_dump", url)?;
    command
        .args(["--format=custom", "--no-owner"])
        .arg(format!("--snapshot={id}"))
        .arg("--file")
        .arg(output);
    let dumped = run_tool(command, "pg_dump").await;
    snapshot.rollback().await?;
    dumped.map(|_| rows)
}

async fn has_timescale(db: &mut PgConnection) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
    )
    .fetch_one(db)
    .await?)
}

/// Restores into a database created for the purpose, compares, drops it.
async fn pg_verify(url: &str, backup: &Path, expected: &RowCounts) -> anyhow::Result<()> {
    let mut server = PgConnection::connect(url)
        .await
        .context("cannot connect to DATABASE_URL")?;
    let timescale = has_timescale(&mut server).await?;
    let scratch = format!(
        "plantops_verify_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    sqlx::query(&format!("CREATE DATABASE {scratch}"))
        .execute(&mut server)
        .await
        .context(
            "cannot create a scratch database to restore into (the database user needs CREATEDB)",
        )?;
    let checked = async {
        let mut scratch_url = reqwest::Url::parse(url).context("DATABASE_URL is not a URL")?;
        scratch_url.set_path(&format!("/{scratch}"));
        let scratch_url = scratch_url.to_string();
        if timescale {
            let mut db = PgConnection::connect(&scratch_url).await?;
            sqlx::query("CREATE EXTENSION IF NOT EXISTS timescaledb")
                .execute(&mut db)
                .await?;
        }
        pg_restore(&scratch_url, backup, Restore::IntoEmpty).await?;
        let mut db = PgConnection::connect(&scratch_url).await?;
        let restored = pg_row_counts(&mut db).await?;
        db.close().await?;
        compare(expected, &restored)
    }
    .await;
    let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"))
        .execute(&mut server)
        .await;
    if let Err(error) = dropped {
        tracing::warn!(%error, database = %scratch, "cannot drop the scratch database");
    }
    checked
}

#[derive(Clone, Copy, PartialEq)]
enum Restore {
    /// Drop what exists first (`--clean`).
    Replace,
    /// A database created empty for the restore.
    IntoEmpty,
}

async fn pg_restore(url: &str, input: &Path, mode: Restore) -> anyhow::Result<()> {
    let mut db = PgConnection::connect(url)
        .await
        .context("cannot connect to DATABASE_URL")?;
    let timescale = has_timescale(&mut db).await?;
    if timescale {
        sqlx::query("SELECT timescaledb_pre_restore()")
            .execute(&mut db)
            .await?;
    }
    if mode == Restore::Replace {
        drop_tables_not_in_backup(&mut db, input).await?;
    }
    let mut command = postgres_tool("pg_restore", url)?;
    if mode == Restore::Replace {
        command.args(["--clean", "--if-exists"]);
    }
    command
        .args(["--no-owner", "--single-transaction", "--exit-on-error"])
        .arg(input);
    let restored = run_tool(command, "pg_restore").await.map(drop);
    if timescale {
        sqlx::query("SELECT timescaledb_post_restore()")
            .execute(&mut db)
            .await?;
    }
    restored
}

/// Going back to a backup from an older version: the tables a newer one
/// added are not in it, and `--clean` (which drops only what the backup
/// holds) could not drop the backup's own tables while theirs reference
/// them. They are dropped first; the file is read before anything is.
async fn drop_tables_not_in_backup(db: &mut PgConnection, input: &Path) -> anyhow::Result<()> {
    let mut list = tokio::process::Command::new("pg_restore");
    list.arg("--list").arg(input);
    let listing = run_tool(list, "pg_restore").await?;
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(&mut *db)
        .await?;
    let in_backup = backup_tables(&String::from_utf8_lossy(&listing), &schema);
    if !in_backup.iter().any(|t| t == "_sqlx_migrations") {
        bail!("{} holds no PlantOps database", input.display());
    }
    let current: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()",
    )
    .fetch_all(&mut *db)
    .await?;
    let newer: Vec<String> = current
        .into_iter()
        .filter(|t| !in_backup.contains(t))
        .map(|t| quoted(&t))
        .collect();
    if !newer.is_empty() {
        tracing::info!(tables = %newer.join(", "), "dropping tables the backup does not hold");
        sqlx::query(&format!(
            "DROP TABLE IF EXISTS {} CASCADE",
            newer.join(", ")
        ))
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

/// The tables of `schema` in a `pg_restore --list` table of contents
/// (`215; 1259 16390 TABLE public alerts owner`).
fn backup_tables(listing: &str, schema: &str) -> Vec<String> {
    listing
        .lines()
        .filter(|line| !line.starts_with(';'))
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [_, _, _, "TABLE", s, name, ..] if *s == schema => Some(name.to_string()),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_of_a_backup_are_read_from_its_listing() {
        let listing = "; Archive created at 2026-12-04\n\
            215; 1259 16390 TABLE public alerts root\n\
            216; 1259 16398 TABLE public _sqlx_migrations root\n\
            3401; 0 16390 TABLE DATA public alerts root\n\
            217; 1259 16400 TABLE other readings root\n";
        assert_eq!(
            backup_tables(listing, "public"),
            ["alerts", "_sqlx_migrations"]
        );
    }

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

    #[test]
    fn a_comparison_names_every_table_that_differs() {
        let expected = RowCounts::from([("plants".into(), 3), ("readings".into(), 1200)]);
        assert!(compare(&expected, &expected).is_ok());
        let restored = RowCounts::from([("plants".into(), 3), ("devices".into(), 1)]);
        let error = compare(&expected, &restored).unwrap_err().to_string();
        assert!(error.contains("readings: missing"), "{error}");
        assert!(error.contains("devices: not in the database"), "{error}");
        let fewer = RowCounts::from([("plants".into(), 3), ("readings".into(), 1100)]);
        let error = compare(&expected, &fewer).unwrap_err().to_string();
        assert!(
            error.contains("readings: 1200 rows, 1100 restored"),
            "{error}"
        );
    }
}

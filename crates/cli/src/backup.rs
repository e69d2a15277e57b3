//! `plantops backup` and `plantops restore`: the server crate's backup
//! engine (`plantops_services::ops::backups`) on the command line, and the
//! production stack's backup service (`plantops backup --scheduled`).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use plantops_services::ops::backups::database::{sibling, Target};
use plantops_services::ops::backups::BackupStatus;

use crate::config::{BackupSettings, DatabaseSettings};

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// File to write; replaced atomically, so a failed run leaves no half
    /// file, and verified by a restore into a scratch database.
    #[arg(long, short, required_unless_present_any = ["scheduled", "status"],
        conflicts_with_all = ["scheduled", "status"])]
    pub output: Option<PathBuf>,

    /// Take verified backups by PLANTOPS_BACKUP_SCHEDULE into
    /// PLANTOPS_BACKUP_DIR until stopped, reported to the server through the
    /// database (the production stack's backup service).
    #[arg(long, conflicts_with = "status")]
    pub scheduled: bool,

    /// Print the last verified and the last failed backup on record; exit
    /// 1 when the last attempt failed (the backup service's health check).
    #[arg(long)]
    pub status: bool,

    #[command(flatten)]
    pub database: DatabaseSettings,

    #[command(flatten)]
    pub backups: BackupSettings,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A file written by `plantops backup`.
    pub input: PathBuf,

    #[command(flatten)]
    pub database: DatabaseSettings,
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    match args.output {
        Some(output) => backup_to(&args.database, output).await,
        None if args.status => status(&args.database).await,
        None => scheduled(&args.database, &args.backups).await,
    }
}

async fn status(database: &DatabaseSettings) -> anyhow::Result<()> {
    // Read only: no migration (this may be an older binary than the
    // database's).
    let store = plantops_store::connect(&database.url())
        .await
        .context("cannot open the database (DATABASE_URL)")?;
    let status = BackupStatus::read(&store).await?;
    match &status.last_success {
        Some(last) => println!(
            "last verified backup: {} {} ({} bytes, {} rows)",
            last.at.to_rfc3339(),
            last.file,
            last.bytes,
            last.rows
        ),
        None => println!("no verified backup on record"),
    }
    if let Some(failure) = &status.last_failure {
        println!(
            "last failed backup: {} {}",
            failure.at.to_rfc3339(),
            failure.error
        );
    }
    if status.failing() {
        bail!("the last backup failed");
    }
    Ok(())
}

async fn backup_to(database: &DatabaseSettings, output: PathBuf) -> anyhow::Result<()> {
    let target = Target::of(&database.url())?;
    let partial = sibling(&output, ".partial");
    let taken = async {
        let rows = target.write(&partial).await?;
        target
            .verify(&partial, &rows)
            .await
            .context("the backup did not restore to what the database held")?;
        Ok::<_, anyhow::Error>(rows)
    };
    let rows = match taken.await {
        Ok(rows) => rows,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
    };
    std::fs::rename(&partial, &output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    let size = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
    println!(
        "backup written and verified: {} ({size} bytes, {} rows in {} tables)",
        output.display(),
        rows.values().sum::<i64>(),
        rows.len()
    );
    println!(
        "Stored secrets (LLM key, webhook) are sealed with ENCRYPTION_KEY or \
         <data dir>/encryption.key: keep that key with the backup."
    );
    Ok(())
}

async fn scheduled(database: &DatabaseSettings, settings: &BackupSettings) -> anyhow::Result<()> {
    let Some(plan) = settings.plan(&database.data_dir) else {
        bail!("--scheduled needs PLANTOPS_BACKUP_SCHEDULE (e.g. \"0 3 * * *\")");
    };
    let store = crate::serve::open_database(database).await?;
    tracing::info!(schedule = %plan.schedule, dir = %plan.dir.display(), keep = plan.keep, "scheduled backups");
    // Nobody here listens for live events or delivers notices: the
    // server's notifier delivers the alert from the database.
    let announcer = plantops_services::alerts::Announcer::new(
        tokio::sync::broadcast::channel(1).0,
        std::sync::Arc::default(),
    );
    let url = database.url();
    tokio::select! {
        () = plantops_services::ops::backups::run_scheduled(store, url, plan, announcer) => Ok(()),
        () = crate::serve::shutdown_signal() => Ok(()),
    }
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    if !args.input.is_file() {
        bail!("{} is not a file", args.input.display());
    }
    let target = Target::of(&args.database.url())?;
    if let Some(aside) = target.restore(&args.input).await? {
        println!("the previous database was kept as {}", aside.display());
    }
    println!("restored from {}", args.input.display());
    Ok(())
}

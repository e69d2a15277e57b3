//! `plantops export`: a plant's readings as CSV or JSON Lines from the
//! configured database (the server may run or not), written as they are
//! read, the same bytes `GET /api/plants/{id}/export` sends.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use plantops_server::export::{self, ExportFormat};
use uuid::Uuid;

use crate::config::DatabaseSettings;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The plant's id (the UI's plant page, or GET /api/plants).
    #[arg(long)]
    pub plant: Uuid,

    /// csv or jsonl.
    #[arg(long, default_value = "csv", value_parser = format)]
    pub format: ExportFormat,

    /// First moment included: RFC 3339 or a date (YYYY-MM-DD). Default: the
    /// first reading.
    #[arg(long, value_parser = moment)]
    pub from: Option<chrono::DateTime<chrono::Utc>>,

    /// First moment no longer included. Default: now.
    #[arg(long, value_parser = moment)]
    pub to: Option<chrono::DateTime<chrono::Utc>>,

    /// File to write; standard output when unset.
    #[arg(long, short)]
    pub output: Option<PathBuf>,

    #[command(flatten)]
    pub database: DatabaseSettings,
}

fn format(raw: &str) -> Result<ExportFormat, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "csv" => Ok(ExportFormat::Csv),
        "jsonl" => Ok(ExportFormat::Jsonl),
        _ => Err("--format must be csv or jsonl".into()),
    }
}

fn moment(raw: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    export::parse_moment(raw)
        .ok_or_else(|| format!("{raw:?} is not an RFC 3339 time or a date (YYYY-MM-DD)"))
}

pub async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let from = args.from.unwrap_or(chrono::DateTime::UNIX_EPOCH);
    let to = args.to.unwrap_or_else(chrono::Utc::now);
    anyhow::ensure!(from < to, "--from must be before --to");
    let store = crate::serve::open_database(&args.database).await?;
    store
        .get_plant(args.plant)
        .await?
        .with_context(|| format!("no plant {} in this database", args.plant))?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut chunks = std::pin::pin!(export::readings(
        store,
        args.plant,
        from,
        to,
        args.format,
        None
    ));
    while let Some(chunk) = chunks.next().await {
        out.write_all(&chunk?).context("cannot write the export")?;
    }
    out.flush().context("cannot write the export")?;
    Ok(())
}

//! The `plantops` command.

#![forbid(unsafe_code)]

mod accounts;
mod api_client;
mod backup;
mod bench;
mod certs;
mod config;
mod export;
mod healthcheck;
mod logging;
mod rotate_key;
mod serve;
mod simulate;

use clap::{Parser, Subcommand};

/// The version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("PLANTOPS_COMMIT"),
    ")"
);

/// PlantOps: self-hosted plant monitoring.
#[derive(Debug, Parser)]
#[command(name = "plantops", version = VERSION, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: HTTP API and UI, the built-in MQTT broker (or a link
    /// to an external Mosquitto), ingestion and alerting.
    Serve(Box<config::ServeSettings>),
    /// Simulated sensor devices: register over HTTP, publish telemetry and
    /// heartbeats over MQTT.
    Simulate(Box<simulate::SimulateArgs>),
    /// Benchmarks of a real server: ingestion, API queries, idle connections.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Apply pending database migrations and exit.
    Migrate {
        #[command(flatten)]
        database: config::DatabaseSettings,
        #[command(flatten)]
        log: config::LogSettings,
    },
    /// Write the TLS material of a production stack: a CA, the broker's
    /// server certificate, optional device client certificates.
    Certs(certs::CertsArgs),
    /// Exit 0 when the local server is ready (container health checks).
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Copy the database to a file while the server runs (SQLite backup
    /// API; pg_dump for PostgreSQL).
    Backup(Box<backup::BackupArgs>),
    /// Replace the database with a backup. Stop the server first.
    Restore(backup::RestoreArgs),
    /// A plant's readings as CSV or JSON Lines (the server may run or not).
    Export(Box<export::ExportArgs>),
    /// Accounts: add, set a password, list (works while the server runs).
    #[command(subcommand)]
    User(accounts::UserCommand),
    /// API tokens: create one for a user (printed once).
    #[command(subcommand)]
    Token(accounts::TokenCommand),
    /// Re-seal stored secrets (webhook, LLM key) under a new ENCRYPTION_KEY.
    /// Stop the server first.
    RotateKey(Box<rotate_key::RotateKeyArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff), e.g. `plantops manpage > plantops.1`.
    Manpage,
    /// Print the OpenAPI document of the HTTP API (what /api/openapi.json
    /// serves), e.g. to generate a client.
    Openapi,
}

/// Optional settings whose empty value means "unset": compose files and
/// `.env` templates pass `NAME=` for settings a user leaves out.
const OPTIONAL_VARIABLES: &[&str] = &[
    "DATABASE_URL",
    "DISCORD_WEBHOOK_URL",
    "ENCRYPTION_KEY",
    "MQTT_HOST",
    "MQTT_CA_CERT",
    "MQTT_BACKEND_PASSWORD",
    "MQTT_DYNSEC_USERNAME",
    "MQTT_DYNSEC_PASSWORD",
    "PLANTOPS_MQTT_PUBLIC_HOST",
    "PLANTOPS_TLS_CERT",
    "PLANTOPS_TLS_KEY",
];

fn main() -> std::process::ExitCode {
    for name in OPTIONAL_VARIABLES {
        if std::env::var_os(name).is_some_and(|value| value.is_empty()) {
            // Still single-threaded: no other thread reads the environment.
            std::env::remove_var(name);
        }
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if error.use_stderr() => {
            // One line naming the setting and the problem; not a usage page.
            // A refused value is not echoed: it may be a secret.
            let source = std::error::Error::source(&error).map(ToString::to_string);
            match (error.kind(), source) {
                (clap::error::ErrorKind::ValueValidation, Some(reason)) => {
                    eprintln!("error: {reason}")
                }
                _ => {
                    let text = error.to_string();
                    eprintln!("{}", text.lines().next().unwrap_or("invalid arguments"));
                }
            }
            return std::process::ExitCode::from(2);
        }
        Err(error) => {
            let _ = error.print();
            return std::process::ExitCode::SUCCESS;
        }
    };
    plantops_mqtt::install_crypto_provider();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(settings) => {
                logging::init(&settings.log);
                serve::run(*settings).await
            }
            Command::Simulate(args) => {
                logging::init_for_tool();
                simulate::run(*args).await
            }
            Command::Bench(command) => {
                logging::init_for_tool();
                bench::run(command).await
            }
            Command::Migrate { database, log } => {
                logging::init(&log);
                serve::migrate(&database).await
            }
            Command::Certs(args) => {
                logging::init_for_tool();
                certs::run(args)
            }
            Command::Healthcheck(args) => healthcheck::run(args).await,
            Command::Export(args) => {
                logging::init_for_tool();
                export::run(*args).await
            }
            Command::Completions { shell } => {
                let mut command = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut command, "plantops", &mut std::io::stdout());
                Ok(())
            }
            Command::Manpage => {
                let command = <Cli as clap::CommandFactory>::command();
                clap_mangen::Man::new(command)
                    .render(&mut std::io::stdout())
                    .map_err(|e| anyhow::anyhow!("cannot write the manual page: {e}"))
            }
            Command::RotateKey(args) => {
                logging::init_for_tool();
                rotate_key::run(*args).await
            }
            Command::Backup(args) => {
                logging::init_for_tool();
                backup::backup(*args).await
            }
            Command::Restore(args) => {
                logging::init_for_tool();
                backup::restore(args).await
            }
            Command::User(command) => {
                logging::init_for_tool();
                accounts::user(command).await
            }
            Command::Token(command) => {
                logging::init_for_tool();
                accounts::token(command).await
            }
            Command::Openapi => {
                let document = plantops_server::api().1;
                println!("{}", document.to_pretty_json()?);
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

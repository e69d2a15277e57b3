//! The `plantops` command.

mod api_client;
mod bench;
mod config;
mod files;
mod logging;
mod serve;
mod simulate;

use clap::{Parser, Subcommand};

/// PlantOps: self-hosted plant monitoring.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
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
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if error.use_stderr() => {
            // One line naming the setting and the problem; not a usage page.
            let text = error.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("{first}");
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

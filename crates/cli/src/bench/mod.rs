//! `plantops bench`: measurements of a real server, reported, never asserted.

pub mod api;
pub mod connections;
pub mod ingest;
pub mod logins;
pub mod server;
pub mod store;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Readings per second end to end (MQTT QoS 1 → committed), latency,
    /// loss (counted in the database) and server memory.
    Ingest(ingest::IngestArgs),
    /// Latency and throughput of list, detail, history and series queries
    /// on 30 days of readings for 100 plants.
    Api(api::ApiArgs),
    /// Server memory while holding many idle device connections.
    Connections(connections::ConnectionsArgs),
    /// One host opening connections with the largest CONNECT as fast as it
    /// can while a device on another address logs in and publishes.
    Logins(logins::LoginsArgs),
    /// The database's raw insert rate in ingestion's batch shape.
    Store(store::StoreArgs),
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Ingest(args) => ingest::run(args).await,
        BenchCommand::Api(args) => api::run(args).await,
        BenchCommand::Connections(args) => connections::run(args).await,
        BenchCommand::Logins(args) => logins::run(args).await,
        BenchCommand::Store(args) => store::run(args).await,
    }
}

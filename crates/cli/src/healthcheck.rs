//! `plantops healthcheck`: exit 0 when the local server answers
//! `/api/ready`, 1 otherwise. Container health checks use it, so the runtime
//! image needs no curl.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The server's HTTP address; an unspecified address (0.0.0.0) is asked
    /// on loopback.
    #[arg(long, env = "PLANTOPS_HTTP_ADDR", default_value = "127.0.0.1:8000")]
    pub http_addr: SocketAddr,

    /// Seconds to wait for the answer.
    #[arg(long, default_value = "5")]
    pub timeout_secs: u64,
}

pub async fn run(args: HealthcheckArgs) -> anyhow::Result<()> {
    let mut addr = args.http_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let url = format!("http://{addr}/api/ready");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_secs))
        .build()
        .context("cannot set up the HTTP client")?;
    let response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("{url} did not answer"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if status.is_success() {
        println!("ready");
        return Ok(());
    }
    let failing: Vec<&str> = body["checks"]
        .as_object()
        .map(|checks| {
            checks
                .iter()
                .filter(|(_, ok)| ok.as_bool() != Some(true))
                .map(|(name, _)| name.as_str())
                .collect()
        })
        .unwrap_or_default();
    anyhow::bail!(
        "not ready ({status}): failing checks: {}",
        failing.join(", ")
    )
}

//! `plantops certs`: the TLS material of a production stack — a private CA,
//! the broker's server certificate and, optionally, device client
//! certificates — without openssl scripts.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use plantops_mqtt::certs;

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Folder for ca.pem, ca-key.pem, server.pem, server-key.pem and
    /// devices/. Existing material is reused: the CA is never replaced.
    #[arg(long, default_value = "deploy/certs")]
    pub out: PathBuf,

    /// Names (DNS or IP) the server certificate covers besides localhost,
    /// 127.0.0.1, ::1 and this host's name: the broker's service name
    /// (`mosquitto` in the compose stack) and the host devices connect to.
    /// Repeat or comma-separate.
    #[arg(long = "san", value_delimiter = ',', value_parser = san)]
    pub sans: Vec<String>,

    /// Also issue a client certificate for each named device. Repeat or
    /// comma-separate.
    #[arg(long = "device", value_delimiter = ',', value_parser = device_name)]
    pub devices: Vec<String>,

    /// Reissue the server certificate from the kept CA now, whatever its
    /// age (it is reissued anyway within 30 days of its end). Devices keep
    /// trusting the broker: the CA does not change.
    #[arg(long)]
    pub renew: bool,
}

fn san(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '*');
    if !name.is_empty() && name.len() <= 253 && name.chars().all(allowed) {
        Ok(name.to_string())
    } else {
        Err(format!(
            "--san {raw:?} is not a host name or IP address (letters, digits, '.', '-', ':')"
        ))
    }
}

fn device_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if !name.is_empty() && name.len() <= 64 && !name.starts_with('.') && name.chars().all(allowed) {
        Ok(name.to_string())
    } else {
        Err(format!(
            "--device {raw:?} must be 1-64 letters, digits, '.', '-' or '_' (it names the files)"
        ))
    }
}

pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let sans = certs::default_sans(&args.sans);
    let ensure = if args.renew {
        certs::renew
    } else {
        certs::ensure
    };
    let files = ensure(&args.out, &sans)
        .with_context(|| format!("cannot write certificates into {}", args.out.display()))?;
    println!(
        "CA certificate:     {}  (devices and the backend trust this)",
        files.ca_cert.display()
    );
    let ends = std::fs::read_to_string(&files.cert)
        .ok()
        .and_then(|pem| certs::expires_at(&pem).ok())
        .map(|end| end.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "?".into());
    println!(
        "server certificate: {}  (names: {}; valid until {ends})",
        files.cert.display(),
        sans.join(", ")
    );
    println!("server key:         {}", files.key.display());
    for name in &args.devices {
        let device = certs::ensure_device(&args.out, name)
            .with_context(|| format!("cannot issue a certificate for device {name}"))?;
        let state = if device.issued { "issued" } else { "kept" };
        println!("device {name}: {} ({state})", device.cert.display());
    }
    println!("Keep ca-key.pem private and backed up: it signs every certificate above.");
    Ok(())
}

//! TLS material for the broker: a private CA and server certificates signed
//! by it, generated on first start so devices can verify the broker by
//! trusting one CA file.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0} is not a PEM certificate")]
    Unreadable(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Paths of a CA and a server certificate issued by it.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";
const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server-key.pem";
/// The names the current server certificate covers, to notice a change.
const SERVER_SANS: &str = "server.sans";
/// How long a server certificate is issued for. Browsers refuse publicly
/// trusted ones valid for more than 398 days, and Apple's platforms any TLS
/// server certificate valid for more than 825 days, private CA or not.
pub const SERVER_VALIDITY_DAYS: i64 = 397;
/// A server certificate this close to its end is reissued on the next
/// `ensure` (every start, `plantops certs`); health warns from then on.
pub const RENEW_BEFORE_DAYS: i64 = 30;

/// When the first certificate in `pem` stops being valid.
pub fn expires_at(pem: &str) -> Result<chrono::DateTime<chrono::Utc>, CertError> {
    let unreadable = || CertError::Unreadable("the file".into());
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|_| unreadable())?;
    let certificate = block.parse_x509().map_err(|_| unreadable())?;
    chrono::DateTime::from_timestamp(certificate.validity().not_after.timestamp(), 0)
        .ok_or_else(unreadable)
}

/// Whether the certificate at `path` ends within [`RENEW_BEFORE_DAYS`]
/// (or cannot be read).
fn due_for_renewal(path: &Path) -> bool {
    let renew_from = chrono::Utc::now() + chrono::Duration::days(RENEW_BEFORE_DAYS);
    std::fs::read_to_string(path)
        .ok()
        .and_then(|pem| expires_at(&pem).ok())
        .is_none_or(|end| end <= renew_from)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Files only their owner may read (keys, credentials): writes `contents`
/// to `path` with mode 0600 from the moment the file exists (no window in
/// which it is readable by others), replacing it atomically, so a crash
/// leaves the old file or the new one, never half of either.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = std::path::PathBuf::from(temporary);
    {
        use std::io::Write;
        // A leftover from a crash may carry other permissions: start anew.
        let _ = std::fs::remove_file(&temporary);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)
}

/// Writes a file readable by its owner only (keys), or by all (certificates).
fn write(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    if private {
        return write_private(path, contents.as_bytes()).map_err(io(path));
    }
    std::fs::write(path, contents).map_err(io(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(io(path))?;
    }
    Ok(())
}

/// The default names: localhost, loopback addresses and this host's name.
pub fn default_sans(extra: &[String]) -> Vec<String> {
    let mut sans = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            sans.push(host.to_string());
        }
    }
    for name in extra {
        let name = name.trim();
        if !name.is_empty() && !sans.iter().any(|s| s == name) {
            sans.push(name.to_string());
        }
    }
    sans
}

/// A new CA: (certificate PEM, key PEM).
pub fn generate_ca(common_name: &str) -> Result<(String, String), CertError> {
    let key = KeyPair::generate()?;
    let cert = ca_params(common_name).self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "PlantOps");
    params.distinguished_name = name;
    params.not_after = rcgen::date_time_ymd(2050, 1, 1);
    params
}

/// Purpose of an issued certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Server,
    Client,
}

/// Issues a certificate for `names` signed by the CA: (certificate PEM, key PEM).
pub fn issue(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    names: &[String],
    purpose: Purpose,
) -> Result<(String, String), CertError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)?;
    let mut params = CertificateParams::new(names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names.first().map(String::as_str).unwrap_or("plantops"),
    );
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![match purpose {
        Purpose::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Purpose::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    let now = time::OffsetDateTime::now_utc();
    // An hour back: a device whose clock is a little behind still accepts it.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = match purpose {
        Purpose::Server => now + time::Duration::days(SERVER_VALIDITY_DAYS),
        // Device certificates are checked by the broker only.
        Purpose::Client => rcgen::date_time_ymd(2045, 1, 1),
    };
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The CA in `dir`: (certificate PEM, key PEM).
fn read_ca(dir: &Path) -> Result<(String, String), CertError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(io(&path))
    };
    Ok((read(CA_CERT)?, read(CA_KEY)?))
}

/// Makes sure `dir` holds a CA and a server certificate for `sans`,
/// creating what is missing; a change of names, or an end within
/// [`RENEW_BEFORE_DAYS`], reissues the server certificate from the same CA,
/// so devices keep trusting it.
pub fn ensure(dir: &Path, sans: &[String]) -> Result<TlsFiles, CertError> {
    ensure_with(dir, sans, false)
}

/// Like [`ensure`], and reissues the server certificate whatever its age
/// (`plantops certs --renew`).
pub fn renew(dir: &Path, sans: &[String]) -> Result<TlsFiles, CertError> {
    ensure_with(dir, sans, true)
}

fn ensure_with(dir: &Path, sans: &[String], force: bool) -> Result<TlsFiles, CertError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let files = TlsFiles {
        ca_cert: dir.join(CA_CERT),
        cert: dir.join(SERVER_CERT),
        key: dir.join(SERVER_KEY),
    };
    let ca_key_path = dir.join(CA_KEY);
    if !files.ca_cert.exists() || !ca_key_path.exists() {
        let (cert, key) = generate_ca("PlantOps broker CA")?;
        write(&ca_key_path, &key, true)?;
        write(&files.ca_cert, &cert, false)?;
        tracing::info!(path = %files.ca_cert.display(), "generated a broker CA; devices should trust this file");
        let _ = std::fs::remove_file(&files.cert);
    }
    let sans_path = dir.join(SERVER_SANS);
    let wanted = sans.join("\n");
    let current = std::fs::read_to_string(&sans_path).unwrap_or_default();
    if force
        || !files.cert.exists()
        || !files.key.exists()
        || current != wanted
        || due_for_renewal(&files.cert)
    {
        let (ca_cert, ca_key) = read_ca(dir)?;
        let (cert, key) = issue(&ca_cert, &ca_key, sans, Purpose::Server)?;
        write(&files.key, &key, true)?;
        write(&files.cert, &cert, false)?;
        write(&sans_path, &wanted, false)?;
        tracing::info!(names = %sans.join(", "), "issued the broker's server certificate");
    }
    Ok(files)
}

/// A device's client certificate and key, issued by the CA in `dir`.
#[derive(Debug, Clone)]
pub struct DeviceFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// False when the files were already there and were kept.
    pub issued: bool,
}

/// Makes sure `dir/devices` holds a client certificate (CN = `name`) signed
/// by the CA in `dir`; an existing one is kept.
pub fn ensure_device(dir: &Path, name: &str) -> Result<DeviceFiles, CertError> {
    let devices = dir.join("devices");
    std::fs::create_dir_all(&devices).map_err(io(&devices))?;
    let files = DeviceFiles {
        cert: devices.join(format!("{name}.pem")),
        key: devices.join(format!("{name}-key.pem")),
        issued: false,
    };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    let (ca_cert, ca_key) = read_ca(dir)?;
    let (cert, key) = issue(&ca_cert, &ca_key, &[name.to_string()], Purpose::Client)?;
    write(&files.key, &key, true)?;
    write(&files.cert, &cert, false)?;
    Ok(DeviceFiles {
        issued: true,
        ..files
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_replaced_and_stay_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.json");
        // A leftover from a crash, readable by all, is not reused.
        std::fs::write(dir.path().join("secret.json.tmp"), "stale").unwrap();
        write_private(&path, b"first").unwrap();
        write_private(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn server_certificates_are_short_lived_and_renewed_before_their_end() {
        let dir = tempfile::tempdir().unwrap();
        let sans = default_sans(&[]);
        let files = ensure(dir.path(), &sans).unwrap();
        let days_left = |path: &Path| {
            let end = expires_at(&std::fs::read_to_string(path).unwrap()).unwrap();
            (end - chrono::Utc::now()).num_days()
        };
        // Short enough for Apple's 825-day rule and browsers' 398.
        assert_eq!(days_left(&files.cert), SERVER_VALIDITY_DAYS - 1);
        assert!(days_left(&files.ca_cert) > 365 * 20);

        // A certificate 10 days from its end, signed by the same CA...
        let (ca_cert, ca_key) = read_ca(dir.path()).unwrap();
        let issuer =
            Issuer::from_ca_cert_pem(&ca_cert, KeyPair::from_pem(&ca_key).unwrap()).unwrap();
        let mut params = CertificateParams::new(sans.clone()).unwrap();
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(10);
        let key = KeyPair::generate().unwrap();
        let ending = params.signed_by(&key, &issuer).unwrap().pem();
        std::fs::write(&files.cert, &ending).unwrap();
        // ...is reissued by the next start, from the same CA.
        ensure(dir.path(), &sans).unwrap();
        assert_eq!(days_left(&files.cert), SERVER_VALIDITY_DAYS - 1);
        assert_eq!(std::fs::read_to_string(&files.ca_cert).unwrap(), ca_cert);

        // --renew reissues at any age; an unchanged one is kept otherwise.
        let current = std::fs::read_to_string(&files.cert).unwrap();
        ensure(dir.path(), &sans).unwrap();
        assert_eq!(std::fs::read_to_string(&files.cert).unwrap(), current);
        renew(dir.path(), &sans).unwrap();
        assert_ne!(std::fs::read_to_string(&files.cert).unwrap(), current);
    }

    #[test]
    fn generated_material_is_reused_and_reissued_when_names_change() {
        let dir = tempfile::tempdir().unwrap();
        let sans = default_sans(&["plants.example".into()]);
        assert!(sans.contains(&"plants.example".to_string()));
        let first = ensure(dir.path(), &sans).unwrap();
        let ca = std::fs::read_to_string(&first.ca_cert).unwrap();
        let cert = std::fs::read_to_string(&first.cert).unwrap();
        assert!(ca.contains("BEGIN CERTIFICATE"));

        ensure(dir.path(), &sans).unwrap();
        assert_eq!(std::fs::read_to_string(&first.cert).unwrap(), cert);

        ensure(dir.path(), &default_sans(&["other.example".into()])).unwrap();
        assert_ne!(std::fs::read_to_string(&first.cert).unwrap(), cert);
        assert_eq!(std::fs::read_to_string(&first.ca_cert).unwrap(), ca);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(CA_KEY))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}

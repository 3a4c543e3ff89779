//! `provisiond renew`: a device trades its certificate for a new one before it expires
//! (or after, within the server's `renewal.after_expiry_days`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::{CliError, EXIT_CODES_HELP, ServerArgs};
use crate::auth::renewal;
use crate::client::Signed;
use crate::clock::unix_now;
use crate::device::{DeviceKey, KeyKind, carries, clock_warning, csr_key, verify_issued};
use crate::fsutil;

#[derive(Debug, Clone, Args)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct RenewArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The device's certificate, PEM (as `enroll` wrote it: <id>.crt)
    #[arg(long)]
    pub cert: PathBuf,
    /// Its private key, PKCS#8 PEM (<id>.key)
    #[arg(long)]
    pub key: PathBuf,
    /// Make a new key of this type instead of keeping the current one
    #[arg(long, value_enum)]
    pub rekey: Option<KeyKind>,
}

/// What `renew` wrote.
#[derive(Debug)]
pub struct Renewed {
    pub device_id: String,
    pub serial_number: String,
    pub expires_at: String,
    pub rekeyed: bool,
}

fn local(e: impl Into<anyhow::Error>) -> CliError {
    CliError::LocalIo(e.into())
}

/// Where a new key waits while the certificate is written.
fn staged_key(key: &std::path::Path) -> PathBuf {
    let mut name = key.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

/// Finishes a renewal with a new key that was cut off after writing the certificate (its
/// staged key matches it), or drops a staged key whose certificate never came.
fn finish_interrupted(args: &RenewArgs) -> Result<(), CliError> {
    let staged = staged_key(&args.key);
    let Ok(staged_pem) = std::fs::read_to_string(&staged) else {
        return Ok(());
    };
    let cert_pem = std::fs::read_to_string(&args.cert).unwrap_or_default();
    let matches = DeviceKey::from_pem(&staged_pem).is_ok_and(|key| carries(&cert_pem, &key));
    if matches {
        std::fs::rename(&staged, &args.key)
    } else {
        std::fs::remove_file(&staged)
    }
    .with_context(|| format!("cannot tidy {}", staged.display()))
    .map_err(local)
}

pub async fn run(args: &RenewArgs) -> Result<Renewed, CliError> {
    finish_interrupted(args)?;
    let cert_pem = std::fs::read_to_string(&args.cert)
        .with_context(|| format!("cannot read {}", args.cert.display()))
        .map_err(local)?;
    let key_pem = std::fs::read_to_string(&args.key)
        .with_context(|| format!("cannot read {}", args.key.display()))
        .map_err(local)?;
    let cert_der = pem::parse(&cert_pem)
        .with_context(|| format!("{} is not a PEM certificate", args.cert.display()))
        .map_err(local)?
        .into_contents();
    let device_id = common_name(&cert_der)
        .with_context(|| format!("{} names no device (no subject CN)", args.cert.display()))
        .map_err(local)?;
    let current = DeviceKey::from_pem(&key_pem)
        .with_context(|| format!("{} is not a PKCS#8 private key", args.key.display()))
        .map_err(local)?;

    let next = match args.rekey {
        Some(kind) => DeviceKey::generate(kind).map_err(|e| CliError::Failed(e.into()))?,
        None => current,
    };
    let csr = next
        .csr_pem(Some(&device_id))
        .map_err(|e| CliError::Failed(e.into()))?;
    let bound_to = csr_key(&csr)?;
    let proof = renewal::sign(&device_id, &cert_der, &key_pem, Some(bound_to), unix_now())
        .map_err(|e| CliError::Failed(anyhow::anyhow!("cannot sign the renewal proof: {e}")))?;
    let client = args.server.client(1)?;
    let signed: Signed = client.renew(&device_id, &csr, Some(&proof)).await?;

    let pinned = args.server.pinned_ca()?;
    let trusted = pinned.as_deref().unwrap_or(&signed.ca_certificate);
    verify_issued(&signed.certificate, trusted, &next, &device_id)?;
    if let Some(warning) = clock_warning(&signed.certificate, signed.timestamp.as_deref()) {
        eprintln!("provisiond: warning: {warning}");
    }

    // With a new key the two files change together: the key is written beside the old
    // one, then the certificate, then the key is renamed into place. A run cut off in
    // between leaves `<key>.new` matching the certificate, and the next run finishes.
    let staged = staged_key(&args.key);
    if args.rekey.is_some() {
        fsutil::replace(&staged, next.private_key_pem().as_bytes(), 0o600)
            .with_context(|| format!("cannot write {}", staged.display()))
            .map_err(local)?;
    }
    fsutil::replace(&args.cert, signed.certificate.as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", args.cert.display()))
        .map_err(local)?;
    if args.rekey.is_some() {
        std::fs::rename(&staged, &args.key)
            .with_context(|| format!("cannot rename {} into place", staged.display()))
            .map_err(local)?;
    }
    Ok(Renewed {
        device_id,
        serial_number: signed.serial_number,
        expires_at: signed.expires_at,
        rekeyed: args.rekey.is_some(),
    })
}

fn common_name(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

//! `provisiond enroll`: what a device does on first boot.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::files::DeviceFiles;
use super::{CliError, EXIT_CODES_HELP, ServerArgs};
use crate::client::{ApiClient, Signed};
use crate::device::{DeviceKey, KeyKind, verify_issued};

#[derive(Debug, Clone, Args)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct EnrollArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The device's id (1..=128 of A-Z a-z 0-9 . _ : -)
    #[arg(long)]
    pub device_id: String,
    /// Key type to generate
    #[arg(long, value_enum, default_value_t = KeyKind::P256)]
    pub key_type: KeyKind,
    /// Directory for <id>.key, <id>.crt and ca.crt
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Trust only this CA (PEM) when checking the certificate, not the one the server sends
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Overwrite existing files
    #[arg(long)]
    pub force: bool,
}

/// What `enroll` wrote.
#[derive(Debug)]
pub struct Enrolled {
    pub key: PathBuf,
    pub certificate: PathBuf,
    pub ca: PathBuf,
    pub serial_number: String,
    pub expires_at: String,
}

pub async fn run(args: &EnrollArgs) -> Result<Enrolled, CliError> {
    let files = DeviceFiles::open(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))
        .map_err(CliError::LocalIo)?;
    let existing = files.existing(&args.device_id);
    if !existing.is_empty() && !args.force {
        return Err(CliError::LocalIo(anyhow::anyhow!(
            "{} already exists; pass --force to replace it",
            existing[0].display()
        )));
    }
    let pinned_ca = match &args.ca_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))
                .map_err(CliError::LocalIo)?,
        ),
        None => None,
    };

    let client = ApiClient::new(&args.server.server, 1).map_err(|e| CliError::Failed(e.into()))?;
    // Refuse a CA change before spending a token on it.
    if files.ca_path().exists() && !args.force && files.ca_differs(&client.ca().await?) {
        return Err(CliError::LocalIo(anyhow::anyhow!(
            "{} holds a different CA; pass --force to replace it",
            files.ca_path().display()
        )));
    }

    let key = DeviceKey::generate(args.key_type).map_err(|e| CliError::Failed(e.into()))?;
    let csr = key
        .csr_pem(Some(&args.device_id))
        .map_err(|e| CliError::Failed(e.into()))?;
    let onboarded = client
        .onboard(&args.device_id, args.server.enrollment_key.as_deref())
        .await?;
    let signed: Signed = client
        .sign_csr(&onboarded.provisioning_token, &args.device_id, &csr)
        .await?;

    let trusted = pinned_ca.as_deref().unwrap_or(&signed.ca_certificate);
    verify_issued(&signed.certificate, trusted, &key, &args.device_id)?;

    files
        .write(
            &args.device_id,
            &key.private_key_pem(),
            &signed.certificate,
            &signed.ca_certificate,
        )
        .with_context(|| format!("cannot write into {}", files.dir().display()))
        .map_err(CliError::LocalIo)?;
    Ok(Enrolled {
        key: files.key_path(&args.device_id),
        certificate: files.cert_path(&args.device_id),
        ca: files.ca_path(),
        serial_number: signed.serial_number,
        expires_at: signed.expires_at,
    })
}

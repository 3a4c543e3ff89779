//! `provisiond enroll`: what a device does on first boot.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::files::DeviceFiles;
use super::{CliError, EXIT_CODES_HELP, ServerArgs};
use crate::auth::derived;
use crate::client::{Credential, Signed};
use crate::device::{DeviceKey, KeyKind, clock_warning, verify_issued};

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
    /// The device's own key (base64url), for servers in `derived` onboarding mode
    #[arg(
        long,
        env = "PROVISIOND_DEVICE_KEY",
        hide_env_values = true,
        conflicts_with = "enrollment_key"
    )]
    pub device_key: Option<String>,
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
    let pinned_ca = args.server.pinned_ca()?;
    let credential = match &args.device_key {
        Some(key) => Credential::DeviceKey(derived::decode_key(key).ok_or_else(|| {
            CliError::Failed(anyhow::anyhow!(
                "--device-key is not a base64url 32-byte key"
            ))
        })?),
        None => Credential::enrollment_key(args.server.enrollment_key.clone()),
    };
    let client = args.server.client(1)?;
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
    let onboarded = client.onboard(&args.device_id, &credential).await?;
    let signed: Signed = client
        .sign_csr(&onboarded.provisioning_token, &args.device_id, &csr)
        .await?;

    let trusted = pinned_ca.as_deref().unwrap_or(&signed.ca_certificate);
    verify_issued(&signed.certificate, trusted, &key, &args.device_id)?;
    if let Some(warning) = clock_warning(&signed.certificate, signed.timestamp.as_deref()) {
        eprintln!("provisiond: warning: {warning}");
    }

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

//! `provisiond enroll`: what a device does on first boot.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::files::DeviceFiles;
use super::material::KeySource;
use super::{CliError, EXIT_CODES_HELP, EnrollmentKeyArgs, ServerArgs, unauthorized_hint};
use crate::auth::derived;
use crate::client::{ClientError, Credential, Signed};
use crate::device::{KeyKind, clock_warning, verify_issued};

#[derive(Debug, Clone, Args)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct EnrollArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub enrollment: EnrollmentKeyArgs,
    /// The device's id (1..=64 of A-Z a-z 0-9 . _ : -)
    #[arg(long)]
    pub device_id: String,
    /// Key type to generate
    #[arg(long, value_enum, default_value_t = KeyKind::P256)]
    pub key_type: KeyKind,
    /// Use this existing private key (PKCS#8 PEM) instead of making one; it stays where
    /// it is and is not copied into --out
    #[arg(long, value_name = "FILE", conflicts_with = "key_type")]
    pub key: Option<PathBuf>,
    /// Send this CSR (PEM) as it is; no key is made or written, and the certificate
    /// must carry the CSR's public key
    #[arg(long, value_name = "FILE", conflicts_with_all = ["key_type", "key"])]
    pub csr: Option<PathBuf>,
    /// Directory for <id>.key, <id>.crt and ca.crt
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// The device's own key (base64url), for servers in `derived` onboarding mode
    #[arg(
        long,
        env = "PROVISIOND_DEVICE_KEY",
        hide_env_values = true,
        conflicts_with_all = ["enrollment_key", "enrollment_key_file"]
    )]
    pub device_key: Option<String>,
    /// Overwrite existing files
    #[arg(long)]
    pub force: bool,
}

impl EnrollArgs {
    fn key_source(&self) -> KeySource {
        match (&self.key, &self.csr) {
            (Some(key), _) => KeySource::KeyFile(key.clone()),
            (_, Some(csr)) => KeySource::CsrFile(csr.clone()),
            _ => KeySource::Generate(self.key_type),
        }
    }
}

/// What `enroll` wrote.
#[derive(Debug)]
pub struct Enrolled {
    /// The device's key, when this run made it.
    pub key: Option<PathBuf>,
    pub certificate: PathBuf,
    pub ca: PathBuf,
    pub serial_number: String,
    pub expires_at: String,
}

pub async fn run(args: &EnrollArgs) -> Result<Enrolled, CliError> {
    let files = DeviceFiles::open(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))
        .map_err(CliError::LocalIo)?;
    let result = enroll(args, &files).await;
    if result.is_err() {
        files.tidy();
    }
    result
}

async fn enroll(args: &EnrollArgs, files: &DeviceFiles) -> Result<Enrolled, CliError> {
    let source = args.key_source();
    let existing = files.existing(&args.device_id, source.writes_key());
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
        None => Credential::enrollment_key(args.enrollment.key()?),
    };
    // Read the key or CSR before a token is spent on it.
    let request = {
        let (source, id) = (source.clone(), args.device_id.clone());
        tokio::task::spawn_blocking(move || source.request(&id))
            .await
            .expect("making a CSR does not panic")
            .map_err(CliError::LocalIo)?
    };
    let client = args
        .server
        .client(1)?
        .with_group(args.enrollment.group.clone());
    // Refuse a CA change before spending a token on it.
    if files.ca_path().exists() && !args.force && files.ca_differs(&client.ca().await?) {
        return Err(CliError::LocalIo(anyhow::anyhow!(
            "{} holds a different CA; pass --force to replace it",
            files.ca_path().display()
        )));
    }

    let onboarded = client
        .onboard(&args.device_id, &credential)
        .await
        .map_err(|e| onboarding_refused(e, &credential))?;
    let signed: Signed = client
        .sign_csr(&onboarded.provisioning_token, &args.device_id, &request.csr)
        .await?;

    let trusted = pinned_ca.as_deref().unwrap_or(&signed.ca_certificate);
    verify_issued(
        &signed.certificate,
        trusted,
        &request.public_key,
        &args.device_id,
    )?;
    if let Some(warning) = clock_warning(&signed.certificate, signed.timestamp.as_deref()) {
        eprintln!("provisiond: warning: {warning}");
    }

    let key_pem = request.new_key.as_ref().map(|k| k.private_key_pem());
    files
        .write(
            &args.device_id,
            key_pem.as_deref(),
            &signed.certificate,
            &signed.ca_certificate,
        )
        .with_context(|| format!("cannot write into {}", files.dir().display()))
        .map_err(CliError::LocalIo)?;
    Ok(Enrolled {
        key: key_pem.map(|_| files.key_path(&args.device_id)),
        certificate: files.cert_path(&args.device_id),
        ca: files.ca_path(),
        serial_number: signed.serial_number,
        expires_at: signed.expires_at,
    })
}

/// A 401 at onboarding comes with what to do about it.
fn onboarding_refused(e: ClientError, credential: &Credential) -> CliError {
    if e.is_unauthorized() {
        CliError::RefusedHint(format!(
            "server refused: {e}\n  {}",
            unauthorized_hint(credential.kind())
        ))
    } else {
        e.into()
    }
}

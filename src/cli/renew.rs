//! `provisiond renew`: a device trades its certificate for a new one before it expires
//! (or after, within the server's `renewal.after_expiry_days`). With
//! `--if-expiring-within` only when it is due; with `--watch` as the device's agent,
//! checking again and again until interrupted.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::retry::{Retry, jitter};
use super::{CliError, EXIT_CODES_HELP, ServerArgs, duration, exit};
use crate::auth::renewal;
use crate::client::{ApiClient, Signed};
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
    /// The device id, when the certificate's common name is not it (an enrollment group
    /// whose profile writes another one); default: the common name
    #[arg(long)]
    pub device_id: Option<String>,
    /// Make a new key of this type instead of keeping the current one
    #[arg(long, value_enum)]
    pub rekey: Option<KeyKind>,
    /// Renew only when the certificate expires within this time (30d, 12h, 90m, 45s,
    /// or seconds); otherwise say "not due" and exit 0
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub if_expiring_within: Option<Duration>,
    /// Keep running as the device's agent: check, renew when due, sleep --interval (with
    /// up to 10 % jitter either way), until Ctrl-C (exit 130). Errors are printed, not fatal
    #[arg(long, requires = "if_expiring_within")]
    pub watch: bool,
    /// Time between checks with --watch
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_value = "1h", requires = "watch")]
    pub interval: Duration,
    /// Attempts per renewal when the server answers 429 or 503
    #[arg(long, default_value_t = 8)]
    pub max_attempts: u32,
}

/// What one check did.
#[derive(Debug)]
pub enum Outcome {
    Renewed(Renewed),
    /// The certificate (of this device) expires at this time, outside the window.
    NotDue(String, time::OffsetDateTime),
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

/// Renews once, or keeps renewing with `--watch`; the exit code.
pub async fn run(args: &RenewArgs) -> Result<u8, CliError> {
    let client = args.server.client(1)?;
    let retry = Retry::new(args.max_attempts);
    if !args.watch {
        print(args, &check(args, &client, &retry).await?, "");
        return Ok(exit::OK);
    }
    // One stream for the whole run, so that a Ctrl-C during a renewal is not lost.
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(|e| CliError::Failed(anyhow::anyhow!("cannot watch for Ctrl-C: {e}")))?;
    loop {
        let stamp = format!("{} ", crate::timefmt::rfc3339_now());
        match check(args, &client, &retry).await {
            Ok(outcome) => print(args, &outcome, &stamp),
            Err(e) => eprintln!("{stamp}provisiond: {e}"),
        }
        // Jitter spreads a fleet that booted together over the interval.
        let sleep = args.interval.mul_f64(0.9) + jitter(args.interval.mul_f64(0.2));
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            _ = interrupt.recv() => return Ok(exit::INTERRUPTED),
        }
    }
}

fn print(args: &RenewArgs, outcome: &Outcome, stamp: &str) {
    match outcome {
        Outcome::Renewed(renewed) => {
            if renewed.rekeyed {
                println!("{stamp}key:         {} (new)", args.key.display());
            }
            println!(
                "{stamp}{}: renewed, serial {} expires {}, written to {}",
                renewed.device_id,
                renewed.serial_number,
                renewed.expires_at,
                args.cert.display()
            );
        }
        Outcome::NotDue(device_id, not_after) => println!(
            "{stamp}{device_id}: not due: the certificate is valid until {}",
            crate::timefmt::rfc3339(*not_after)
        ),
    }
}

/// Renews unless `--if-expiring-within` says it is not due yet.
async fn check(args: &RenewArgs, client: &ApiClient, retry: &Retry) -> Result<Outcome, CliError> {
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
    let device_id = match &args.device_id {
        Some(id) => id.clone(),
        None => common_name(&cert_der)
            .with_context(|| format!("{} names no device (no subject CN)", args.cert.display()))
            .map_err(local)?,
    };
    let current = DeviceKey::from_pem(&key_pem)
        .with_context(|| format!("{} is not a PKCS#8 private key", args.key.display()))
        .map_err(local)?;
    if let Some(window) = args.if_expiring_within {
        let not_after = not_after(&cert_der)
            .with_context(|| format!("{} is not a certificate", args.cert.display()))
            .map_err(local)?;
        if not_after - time::OffsetDateTime::now_utc() > window {
            return Ok(Outcome::NotDue(device_id, not_after));
        }
    }

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
    // The same proof goes again after a 429 or 503: the server spends a proof only
    // with the certificate it signs.
    let signed: Signed = retry
        .call(|| client.renew(&device_id, &csr, Some(&proof)))
        .await?;

    let pinned = args.server.pinned_ca()?;
    let trusted = pinned.as_deref().unwrap_or(&signed.ca_certificate);
    verify_issued(
        &signed.certificate,
        trusted,
        next.public_key_raw(),
        &device_id,
    )?;
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
    Ok(Outcome::Renewed(Renewed {
        device_id,
        serial_number: signed.serial_number,
        expires_at: signed.expires_at,
        rekeyed: args.rekey.is_some(),
    }))
}

fn not_after(der: &[u8]) -> Option<time::OffsetDateTime> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    Some(cert.validity().not_after.to_datetime())
}

fn common_name(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

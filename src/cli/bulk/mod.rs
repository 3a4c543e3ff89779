//! `provisiond bulk`: enroll many devices at once, resumably.
//!
//! A device whose certificate is already in `--out` is skipped, so a run that was
//! interrupted (or that had failures) is finished by running it again. 429 and 503 are
//! retried with exponential backoff and jitter, honouring Retry-After; every other
//! failure is recorded by its error code and not retried. When the first answers are
//! all 401s the run stops: the key is missing or wrong for every device alike.

mod commit;
mod devices;
mod manifest;
mod progress;
mod tally;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::files::DeviceFiles;
use super::material::KeySource;
use super::retry::Retry;
use super::{CliError, EXIT_CODES_HELP, EnrollmentKeyArgs, ServerArgs, unauthorized_hint};
use crate::auth::derived;
use crate::client::{ApiClient, ClientError, Credential, CredentialKind};
use crate::device::{KeyKind, verify_issued};
use crate::domain::DeviceId;
use crate::fsutil;
use commit::{Batch, Staged};
use devices::DeviceRow;
use manifest::{MANIFEST_FILE, Manifest, Row};
use progress::{Interrupt, Progress};
use tally::{FirstAnswers, Tally};

pub const SUMMARY_FILE: &str = "summary.json";

#[derive(Debug, Clone, Args)]
#[command(after_help = EXIT_CODES_HELP)]
#[command(group(clap::ArgGroup::new("devices").required(true).args(["csv", "count"])))]
pub struct BulkArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub enrollment: EnrollmentKeyArgs,
    /// CSV of devices whose first line names a `device_id` column (any case, any
    /// position; a `device_key` column gives derived-mode keys)
    #[arg(long, conflicts_with_all = ["count", "prefix"])]
    pub csv: Option<PathBuf>,
    /// The CSV has no header line: every line is a device, its id in the first column
    #[arg(long, requires = "csv")]
    pub no_header: bool,
    /// Enroll this many devices, named <prefix>000001, <prefix>000002, ...
    #[arg(long, requires = "prefix")]
    pub count: Option<usize>,
    /// Prefix of generated device ids (with --count)
    #[arg(long, requires = "count")]
    pub prefix: Option<String>,
    /// Devices in flight at once
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Directory for <id>.key, <id>.crt, ca.crt, devices.csv and summary.json
    #[arg(long, default_value = "devices")]
    pub out: PathBuf,
    /// Key type to generate for each device
    #[arg(long, value_enum, default_value_t = KeyKind::P256)]
    pub key_type: KeyKind,
    /// Use each device's existing key, DIR/<device_id>.key (PKCS#8 PEM), instead of
    /// making one; keys stay there and are not copied into --out
    #[arg(long, value_name = "DIR", conflicts_with = "key_type")]
    pub key_dir: Option<PathBuf>,
    /// Send each device's own CSR, DIR/<device_id>.csr (PEM), as it is; no key is made
    #[arg(long, value_name = "DIR", conflicts_with_all = ["key_type", "key_dir"])]
    pub csr_dir: Option<PathBuf>,
    /// Attempts per request when the server answers 429 or 503
    #[arg(long, default_value_t = 8)]
    pub max_attempts: u32,
    /// Seconds between progress lines when stdout is not a terminal
    #[arg(long, default_value_t = 5.0)]
    pub progress_interval: f64,
    /// The fleet's group secret, for servers in `derived` onboarding mode: each device's
    /// key is derived from it here, and each request signed with that key. (A CSV may
    /// instead give each device its key in a `device_key` column.)
    #[arg(
        long,
        env = "PROVISIOND_GROUP_SECRET_FILE",
        conflicts_with_all = ["enrollment_key", "enrollment_key_file"]
    )]
    pub group_secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub device_id: String,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub total: usize,
    pub enrolled: usize,
    pub skipped: usize,
    /// Rows whose device id came again later in the list: enrolled once, not twice.
    pub duplicates: Vec<String>,
    pub failed: usize,
    pub failed_by_code: BTreeMap<String, usize>,
    pub failures: Vec<Failure>,
    /// Requests sent again after a 429 or 503.
    pub retries: u64,
    pub elapsed_seconds: f64,
    pub devices_per_second: f64,
    pub interrupted: bool,
    /// Why the run stopped before the end: its first answers were all refusals.
    pub stopped: Option<String>,
}

impl Summary {
    pub fn exit_code(&self) -> u8 {
        if self.interrupted {
            super::exit::INTERRUPTED
        } else if self.stopped.is_some() {
            super::exit::REFUSED
        } else if self.failed > 0 {
            super::exit::FAILED
        } else {
            super::exit::OK
        }
    }
}

pub async fn run(args: &BulkArgs) -> Result<Summary, CliError> {
    let source = match (args.count, &args.prefix, &args.csv) {
        (Some(count), Some(prefix), _) => devices::Source::Count { count, prefix },
        (_, _, Some(path)) => devices::Source::Csv {
            path,
            no_header: args.no_header,
        },
        _ => unreachable!("clap requires --csv or --count with --prefix"),
    };
    let (devices, duplicates) = devices::list(source).map_err(CliError::LocalIo)?;
    for (flag, dir) in [("--key-dir", &args.key_dir), ("--csr-dir", &args.csr_dir)] {
        if let Some(dir) = dir.as_ref().filter(|d| !d.is_dir()) {
            return Err(CliError::LocalIo(anyhow::anyhow!(
                "{flag} {} is not a directory",
                dir.display()
            )));
        }
    }
    let files = Arc::new(
        DeviceFiles::open(&args.out)
            .with_context(|| format!("cannot create {}", args.out.display()))
            .map_err(CliError::LocalIo)?,
    );
    let result = enroll_all(args, files.clone(), devices, duplicates).await;
    if result.is_err() {
        files.tidy();
    }
    result
}

async fn enroll_all(
    args: &BulkArgs,
    files: Arc<DeviceFiles>,
    devices: Vec<DeviceRow>,
    duplicates: Vec<String>,
) -> Result<Summary, CliError> {
    let local = |what: &str, e: std::io::Error| CliError::LocalIo(anyhow::anyhow!("{what}: {e}"));
    commit::remove_stale(files.dir()).map_err(|e| local("cannot tidy --out", e))?;
    let mut manifest = Manifest::open(files.dir()).map_err(|e| local(MANIFEST_FILE, e))?;
    let group_secret = match &args.group_secret_file {
        Some(path) => Some(
            fsutil::read_secret(path)
                .with_context(|| format!("--group-secret-file {}", path.display()))
                .map_err(CliError::LocalIo)?,
        ),
        None => None,
    };
    let job = Arc::new(Job {
        client: args
            .server
            .client(args.concurrency.into())?
            .with_group(args.enrollment.group.clone()),
        enrollment_key: Credential::enrollment_key(args.enrollment.key()?),
        group_secret,
        pinned_ca: args.server.pinned_ca()?,
        keys: match (&args.key_dir, &args.csr_dir) {
            (Some(dir), _) => Keys::Dir(dir.clone()),
            (_, Some(dir)) => Keys::CsrDir(dir.clone()),
            _ => Keys::Generate(args.key_type),
        },
        files: files.clone(),
        retry: Retry::new(args.max_attempts),
    });
    let progress = Progress::start(
        devices.len(),
        Duration::from_secs_f64(args.progress_interval),
    );
    let interrupt = Interrupt::watch();
    let started = Instant::now();
    let mut tally = Tally::default();
    let total = devices.len() + duplicates.len();
    let rows_have_keys = devices.iter().any(|row| row.device_key.is_some());

    // Devices done before, listed in the manifest if they are not yet; bad ids.
    let mut work = Vec::new();
    for row in devices {
        if files.is_enrolled(&row.id) {
            tally.skipped += 1;
            if !manifest.lists(&row.id) {
                let listed =
                    list_done(&files, &job.keys, &row.id).and_then(|line| manifest.append([&line]));
                listed.map_err(|e| local(MANIFEST_FILE, e))?;
            }
        } else if let Err(reason) = DeviceId::parse_onboarding(&row.id) {
            tally.fail(&row.id, "invalid_device_id", reason);
        } else {
            work.push(row);
        }
        progress.advance(&tally);
    }

    let mut first = FirstAnswers::new(work.len());
    let mut batch = Batch::default();
    let slots = Arc::new(Semaphore::new(args.concurrency.into()));
    let mut in_flight = JoinSet::new();
    for row in work {
        if interrupt.happened() || first.all_unauthorized() {
            break;
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = interrupt.wait() => break,
        };
        let job_ = job.clone();
        in_flight.spawn(async move {
            let outcome = job_.enroll(&row).await;
            drop(slot);
            (row.id, outcome)
        });
        while let Some(finished) = in_flight.try_join_next() {
            record(&mut tally, finished, &mut first, &mut batch);
            batch
                .commit_when_due(&files, &mut manifest, &mut tally)
                .await;
            progress.advance(&tally);
        }
    }
    // Devices already in flight finish even after Ctrl-C or a stop: they are saved whole.
    while let Some(finished) = in_flight.join_next().await {
        record(&mut tally, finished, &mut first, &mut batch);
        batch
            .commit_when_due(&files, &mut manifest, &mut tally)
            .await;
        progress.advance(&tally);
    }
    batch.commit(&files, &mut manifest, &mut tally).await;
    progress.finish();

    let stopped = first.all_unauthorized().then(|| {
        format!(
            "stopped: the first {} devices were all refused with unauthorized ({}); {}",
            first.seen,
            first.message,
            unauthorized_hint(job.credential_kind(rows_have_keys))
        )
    });
    if let (Some(why), 0) = (&stopped, tally.done) {
        return Err(CliError::RefusedHint(why.clone()));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let summary = Summary {
        total,
        enrolled: tally.done,
        skipped: tally.skipped,
        duplicates,
        failed: tally.failures.len(),
        failed_by_code: tally.by_code(),
        failures: tally.failures,
        retries: job.retry.retries(),
        elapsed_seconds: elapsed,
        devices_per_second: if elapsed > 0.0 {
            tally.done as f64 / elapsed
        } else {
            0.0
        },
        interrupted: interrupt.happened(),
        stopped,
    };
    write_summary(&summary, files.dir())?;
    Ok(summary)
}

/// Each run keeps its own summary; summary.json is the latest.
fn write_summary(summary: &Summary, dir: &Path) -> Result<(), CliError> {
    let json = serde_json::to_vec_pretty(summary).expect("the summary serializes");
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .expect("a UTC time formats");
    for name in [format!("summary-{stamp}.json"), SUMMARY_FILE.to_owned()] {
        fsutil::replace(&dir.join(name), &json, 0o644)
            .context("cannot write the summary")
            .map_err(CliError::LocalIo)?;
    }
    Ok(())
}

/// Prints the summary as people read it.
pub fn print_summary(summary: &Summary, out: &Path) {
    println!(
        "{} devices: {} enrolled, {} skipped (already enrolled), {} failed, in {:.1} s ({:.1}/s){}",
        summary.total,
        summary.enrolled,
        summary.skipped,
        summary.failed,
        summary.elapsed_seconds,
        summary.devices_per_second,
        if summary.interrupted {
            "; interrupted"
        } else {
            ""
        }
    );
    if !summary.duplicates.is_empty() {
        println!(
            "  repeated in the list, enrolled once: {}",
            summary.duplicates.join(", ")
        );
    }
    for (code, count) in &summary.failed_by_code {
        println!("  failed with {code}: {count}");
    }
    if summary.retries > 0 {
        println!("  requests retried after 429/503: {}", summary.retries);
    }
    println!("summary written to {}", out.join(SUMMARY_FILE).display());
    if out.join(MANIFEST_FILE).exists() {
        println!("devices listed in {}", out.join(MANIFEST_FILE).display());
    }
    if let Some(why) = &summary.stopped {
        eprintln!("provisiond: {why}");
    }
}

/// The manifest line of a device enrolled by an earlier run: its key is beside its
/// certificate, or where this run's --key-dir says.
fn list_done(files: &DeviceFiles, keys: &Keys, id: &str) -> std::io::Result<Row> {
    let cert = files.cert_path(id);
    let pem = std::fs::read_to_string(&cert)?;
    let key = match keys {
        _ if files.key_path(id).exists() => Some(PathBuf::from(format!("{id}.key"))),
        Keys::Dir(_) => keys.key_file(id),
        Keys::Generate(_) | Keys::CsrDir(_) => None,
    };
    Row::new(id, &pem, &cert, key.as_deref())
}

/// Where each device's CSR comes from.
enum Keys {
    Generate(KeyKind),
    Dir(PathBuf),
    CsrDir(PathBuf),
}

impl Keys {
    fn source(&self, id: &str) -> KeySource {
        match self {
            Keys::Generate(kind) => KeySource::Generate(*kind),
            Keys::Dir(dir) => KeySource::KeyFile(dir.join(format!("{id}.key"))),
            Keys::CsrDir(dir) => KeySource::CsrFile(dir.join(format!("{id}.csr"))),
        }
    }

    /// Where this run puts or finds the device's key, for the manifest: beside its
    /// certificate, in --key-dir, or unknown (--csr-dir).
    fn key_file(&self, id: &str) -> Option<PathBuf> {
        match self {
            Keys::Generate(_) => Some(PathBuf::from(format!("{id}.key"))),
            Keys::Dir(dir) => Some(dir.join(format!("{id}.key"))),
            Keys::CsrDir(_) => None,
        }
    }
}

/// What every device's enrollment shares.
struct Job {
    client: ApiClient,
    enrollment_key: Credential,
    /// `derived` mode: device keys are derived from this.
    group_secret: Option<String>,
    pinned_ca: Option<String>,
    keys: Keys,
    files: Arc<DeviceFiles>,
    retry: Retry,
}

/// Why one device failed: its error code and message.
type DeviceFailure = (String, String);

impl Job {
    /// How this device proves it may onboard: its own key in `derived` mode (from the CSV
    /// or the group secret), the enrollment key otherwise.
    fn credential(&self, row: &DeviceRow) -> Result<Credential, DeviceFailure> {
        if let Some(key) = &row.device_key {
            return derived::decode_key(key)
                .map(Credential::DeviceKey)
                .ok_or_else(|| {
                    (
                        "invalid_device_key".to_owned(),
                        "device_key is not a base64url 32-byte key".to_owned(),
                    )
                });
        }
        Ok(match &self.group_secret {
            Some(secret) => Credential::DeviceKey(derived::device_key(secret.as_bytes(), &row.id)),
            None => self.enrollment_key.clone(),
        })
    }

    /// The kind of credential the run uses, for the hint after a run of 401s.
    fn credential_kind(&self, rows_have_keys: bool) -> CredentialKind {
        if self.group_secret.is_some() || rows_have_keys {
            CredentialKind::DeviceKey
        } else {
            self.enrollment_key.kind()
        }
    }

    async fn enroll(&self, row: &DeviceRow) -> Result<Staged, DeviceFailure> {
        let id = row.id.as_str();
        let credential = self.credential(row)?;
        let source = self.keys.source(id);
        let owned_id = id.to_owned();
        let request = tokio::task::spawn_blocking(move || source.request(&owned_id))
            .await
            .expect("making a CSR does not panic")
            .map_err(|e| ("local_key".to_owned(), format!("{e:#}")))?;
        let failed = |e: ClientError| (e.code().to_owned(), e.to_string());
        let onboarded = self
            .retry
            .call(|| self.client.onboard(id, &credential))
            .await
            .map_err(failed)?;
        let signed = self
            .retry
            .call(|| {
                self.client
                    .sign_csr(&onboarded.provisioning_token, id, &request.csr)
            })
            .await
            .map_err(failed)?;
        let trusted = self.pinned_ca.as_deref().unwrap_or(&signed.ca_certificate);
        verify_issued(&signed.certificate, trusted, &request.public_key, id)
            .map_err(|e| ("certificate_not_verified".to_owned(), e.to_string()))?;
        let local_io = |e: std::io::Error| ("local_io".to_owned(), e.to_string());
        let key_file = self.keys.key_file(id);
        let row = Row::new(
            id,
            &signed.certificate,
            &self.files.cert_path(id),
            key_file.as_deref(),
        )
        .map_err(local_io)?;
        let key_pem = request.new_key.as_ref().map(|k| k.private_key_pem());
        commit::stage(
            &self.files,
            id,
            key_pem.as_deref(),
            &signed.certificate,
            &signed.ca_certificate,
            row,
        )
        .map_err(local_io)
    }
}

type Finished = Result<(String, Result<Staged, DeviceFailure>), tokio::task::JoinError>;

/// Records a device's end: staged into `batch`, or a failure; `first` sees it. Here,
/// not in `tally`, which would then need `commit` (which needs `tally`).
fn record(tally: &mut Tally, finished: Finished, first: &mut FirstAnswers, batch: &mut Batch) {
    match finished {
        Ok((_, Ok(staged))) => {
            first.see(None);
            batch.push(staged);
        }
        Ok((id, Err((code, message)))) => {
            first.see(Some((&code, &message)));
            tally.fail(&id, &code, &message);
        }
        Err(e) => tally.fail("?", "internal_error", &e.to_string()),
    }
}

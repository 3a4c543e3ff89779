//! `provisiond bulk`: enroll many devices at once, resumably.
//!
//! A device whose certificate is already in `--out` is skipped, so a run that was
//! interrupted (or that had failures) is finished by running it again. 429 and 503 are
//! retried with exponential backoff and jitter, honouring Retry-After; every other
//! failure is recorded by its error code and not retried.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use super::files::DeviceFiles;
use super::{CliError, EXIT_CODES_HELP, ServerArgs};
use crate::auth::derived;
use crate::client::{ApiClient, ClientError, Credential};
use crate::device::{DeviceKey, KeyKind, verify_issued};
use crate::domain::DeviceId;
use crate::fsutil;

pub const SUMMARY_FILE: &str = "summary.json";

#[derive(Debug, Clone, Args)]
#[command(after_help = EXIT_CODES_HELP)]
#[command(group(clap::ArgGroup::new("devices").required(true).args(["csv", "count"])))]
pub struct BulkArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// CSV of devices: a `device_id` column, or the first column when there is no header
    #[arg(long, conflicts_with_all = ["count", "prefix"])]
    pub csv: Option<PathBuf>,
    /// Enroll this many devices, named <prefix>000001, <prefix>000002, ...
    #[arg(long, requires = "prefix")]
    pub count: Option<usize>,
    /// Prefix of generated device ids (with --count)
    #[arg(long, requires = "count")]
    pub prefix: Option<String>,
    /// Devices in flight at once
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Directory for <id>.key, <id>.crt, ca.crt and summary.json
    #[arg(long, default_value = "devices")]
    pub out: PathBuf,
    /// Key type to generate for each device
    #[arg(long, value_enum, default_value_t = KeyKind::P256)]
    pub key_type: KeyKind,
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
        conflicts_with = "enrollment_key"
    )]
    pub group_secret_file: Option<PathBuf>,
}

/// One device to enroll, as the list gives it.
#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub id: String,
    /// Its own key (base64url), for `derived` mode, from a `device_key` CSV column.
    pub device_key: Option<String>,
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
}

impl Summary {
    pub fn exit_code(&self) -> u8 {
        if self.interrupted {
            super::exit::INTERRUPTED
        } else if self.failed > 0 {
            super::exit::FAILED
        } else {
            super::exit::OK
        }
    }
}

pub async fn run(args: &BulkArgs) -> Result<Summary, CliError> {
    let (devices, duplicates) = device_list(args).map_err(CliError::LocalIo)?;
    let files = Arc::new(
        DeviceFiles::open(&args.out)
            .with_context(|| format!("cannot create {}", args.out.display()))
            .map_err(CliError::LocalIo)?,
    );
    let group_secret = match &args.group_secret_file {
        Some(path) => Some(
            fsutil::read_secret(path)
                .with_context(|| format!("--group-secret-file {}", path.display()))
                .map_err(CliError::LocalIo)?,
        ),
        None => None,
    };
    let client = args.server.client(args.concurrency.into())?;
    let job = Arc::new(Job {
        client,
        files: files.clone(),
        enrollment_key: Credential::enrollment_key(args.server.enrollment_key.clone()),
        group_secret,
        pinned_ca: args.server.pinned_ca()?,
        key_type: args.key_type,
        max_attempts: args.max_attempts.max(1),
        retries: AtomicU64::new(0),
    });
    let progress = Progress::start(
        devices.len(),
        Duration::from_secs_f64(args.progress_interval),
    );
    let interrupt = Interrupt::watch();

    let started = Instant::now();
    let mut tally = Tally::default();
    let slots = Arc::new(Semaphore::new(args.concurrency.into()));
    let mut in_flight = JoinSet::new();
    for row in &devices {
        let id = &row.id;
        if interrupt.happened() {
            break;
        }
        if files.is_enrolled(id) {
            tally.skipped += 1;
            progress.advance(&tally);
            continue;
        }
        if let Err(reason) = DeviceId::parse_onboarding(id) {
            tally.fail(id, "invalid_device_id", reason);
            progress.advance(&tally);
            continue;
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = interrupt.wait() => break,
        };
        let (job, row) = (job.clone(), row.clone());
        in_flight.spawn(async move {
            let outcome = job.enroll(&row).await;
            drop(slot);
            (row.id, outcome)
        });
        while let Some(finished) = in_flight.try_join_next() {
            tally.record(finished);
            progress.advance(&tally);
        }
    }
    // Devices already in flight finish even after Ctrl-C: their files are written whole.
    while let Some(finished) = in_flight.join_next().await {
        tally.record(finished);
        progress.advance(&tally);
    }
    progress.finish();

    let elapsed = started.elapsed().as_secs_f64();
    let summary = Summary {
        total: devices.len() + duplicates.len(),
        enrolled: tally.done,
        skipped: tally.skipped,
        duplicates,
        failed: tally.failures.len(),
        failed_by_code: tally.by_code(),
        failures: tally.failures,
        retries: job.retries.load(Ordering::Relaxed),
        elapsed_seconds: elapsed,
        devices_per_second: if elapsed > 0.0 {
            tally.done as f64 / elapsed
        } else {
            0.0
        },
        interrupted: interrupt.happened(),
    };
    // Each run keeps its own summary; summary.json is the latest.
    let json = serde_json::to_vec_pretty(&summary).expect("the summary serializes");
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .expect("a UTC time formats");
    for name in [format!("summary-{stamp}.json"), SUMMARY_FILE.to_owned()] {
        fsutil::replace(&files.dir().join(name), &json, 0o644)
            .context("cannot write the summary")
            .map_err(CliError::LocalIo)?;
    }
    Ok(summary)
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
}

/// The devices to enroll, each id once, and the ids that came again (skipped).
fn device_list(args: &BulkArgs) -> anyhow::Result<(Vec<DeviceRow>, Vec<String>)> {
    let rows = if let (Some(count), Some(prefix)) = (args.count, &args.prefix) {
        (1..=count)
            .map(|i| DeviceRow {
                id: format!("{prefix}{i:06}"),
                device_key: None,
            })
            .collect()
    } else {
        read_csv(args.csv.as_ref().expect("clap requires --csv or --count"))?
    };
    let mut seen = std::collections::HashSet::new();
    let (mut devices, mut duplicates) = (Vec::new(), Vec::new());
    for row in rows {
        if seen.insert(row.id.clone()) {
            devices.push(row);
        } else {
            duplicates.push(row.id);
        }
    }
    Ok((devices, duplicates))
}

/// A `device_id` column (and optionally `device_key`), or the first column when there
/// is no header.
fn read_csv(path: &Path) -> anyhow::Result<Vec<DeviceRow>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut records = reader.records();
    let mut rows = Vec::new();
    let (mut id_column, mut key_column) = (0, None);
    if let Some(first) = records.next() {
        let first = first.with_context(|| format!("{} is not CSV", path.display()))?;
        match first.iter().position(|h| h == "device_id") {
            Some(index) => {
                id_column = index;
                key_column = first.iter().position(|h| h == "device_key");
            }
            None => rows.extend(first.get(0).map(|id| DeviceRow {
                id: id.to_owned(),
                device_key: None,
            })),
        }
    }
    for record in records {
        let record = record.with_context(|| format!("{} is not CSV", path.display()))?;
        if let Some(id) = record.get(id_column).filter(|id| !id.is_empty()) {
            rows.push(DeviceRow {
                id: id.to_owned(),
                device_key: key_column
                    .and_then(|c| record.get(c))
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned),
            });
        }
    }
    Ok(rows)
}

/// What every device's enrollment shares.
struct Job {
    client: ApiClient,
    files: Arc<DeviceFiles>,
    enrollment_key: Credential,
    /// `derived` mode: device keys are derived from this.
    group_secret: Option<String>,
    pinned_ca: Option<String>,
    key_type: KeyKind,
    max_attempts: u32,
    retries: AtomicU64,
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

    async fn enroll(&self, row: &DeviceRow) -> Result<(), DeviceFailure> {
        let id = row.id.as_str();
        let credential = self.credential(row)?;
        let key_type = self.key_type;
        let key = tokio::task::spawn_blocking(move || DeviceKey::generate(key_type))
            .await
            .expect("key generation does not panic")
            .map_err(|e| ("key_generation".to_owned(), e.to_string()))?;
        let csr = key
            .csr_pem(Some(id))
            .map_err(|e| ("key_generation".to_owned(), e.to_string()))?;
        let onboarded = self
            .patiently(|| self.client.onboard(id, &credential))
            .await?;
        let signed = self
            .patiently(|| {
                self.client
                    .sign_csr(&onboarded.provisioning_token, id, &csr)
            })
            .await?;
        let trusted = self.pinned_ca.as_deref().unwrap_or(&signed.ca_certificate);
        verify_issued(&signed.certificate, trusted, &key, id)
            .map_err(|e| ("certificate_not_verified".to_owned(), e.to_string()))?;
        self.files
            .write(
                id,
                &key.private_key_pem(),
                &signed.certificate,
                &signed.ca_certificate,
            )
            .map_err(|e| ("local_io".to_owned(), e.to_string()))
    }

    /// Calls until the answer is not a 429/503, or the attempts are spent.
    async fn patiently<T, F, Fut>(&self, mut call: F) -> Result<T, DeviceFailure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(e) if e.is_retryable() && attempt + 1 < self.max_attempts => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff(attempt, e.retry_after())).await;
                    attempt += 1;
                }
                Err(e) => return Err((e.code().to_owned(), e.to_string())),
            }
        }
    }
}

/// Full jitter over an exponential ceiling (0.2 s doubling to 10 s); a Retry-After from
/// the server is a floor, with up to 250 ms of jitter so retries do not arrive together.
fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(wait) => wait + jitter(Duration::from_millis(250)),
        None => {
            let ceiling = Duration::from_millis(200).saturating_mul(1 << attempt.min(6));
            jitter(ceiling.min(Duration::from_secs(10)))
        }
    }
}

fn jitter(max: Duration) -> Duration {
    let mut bytes = [0u8; 8];
    crate::crypto::fill_random(&mut bytes);
    max.mul_f64(u64::from_le_bytes(bytes) as f64 / u64::MAX as f64)
}

#[derive(Default)]
struct Tally {
    done: usize,
    skipped: usize,
    failures: Vec<Failure>,
}

impl Tally {
    fn record(
        &mut self,
        finished: Result<(String, Result<(), DeviceFailure>), tokio::task::JoinError>,
    ) {
        match finished {
            Ok((_, Ok(()))) => self.done += 1,
            Ok((id, Err((code, message)))) => self.fail(&id, &code, &message),
            Err(e) => self.fail("?", "internal_error", &e.to_string()),
        }
    }

    fn fail(&mut self, id: &str, code: &str, message: &str) {
        self.failures.push(Failure {
            device_id: id.to_owned(),
            code: code.to_owned(),
            message: message.to_owned(),
        });
    }

    fn by_code(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for failure in &self.failures {
            *counts.entry(failure.code.clone()).or_default() += 1;
        }
        counts
    }

    fn handled(&self) -> usize {
        self.done + self.skipped + self.failures.len()
    }
}

/// A bar with rate and ETA on a terminal; a plain line every few seconds otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    started: Instant,
    interval: Duration,
    last_line: std::sync::Mutex<Instant>,
}

impl Progress {
    fn start(total: usize, interval: Duration) -> Self {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40.cyan/blue} {pos}/{len} {rate} eta {eta} {msg}",
                )
                .expect("the template is valid")
                .with_key(
                    "rate",
                    |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.1}/s", state.per_sec());
                    },
                ),
            );
            bar
        });
        Self {
            bar,
            total,
            started: Instant::now(),
            interval,
            last_line: std::sync::Mutex::new(Instant::now()),
        }
    }

    fn advance(&self, tally: &Tally) {
        let handled = tally.handled();
        if let Some(bar) = &self.bar {
            bar.set_position(handled as u64);
            bar.set_message(format!("failed {}", tally.failures.len()));
            return;
        }
        let mut last = self.last_line.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() < self.interval && handled < self.total {
            return;
        }
        *last = Instant::now();
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = tally.done as f64 / elapsed.max(1e-3);
        let left = self.total - handled;
        println!(
            "progress: {handled}/{} (enrolled {}, skipped {}, failed {}), {rate:.1}/s, eta {:.0} s",
            self.total,
            tally.done,
            tally.skipped,
            tally.failures.len(),
            if rate > 0.0 { left as f64 / rate } else { 0.0 },
        );
    }

    /// Clears the bar, so that the summary starts on a line of its own.
    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Ctrl-C: the first stops new work (in-flight devices finish); the second exits now,
/// which is safe because every file is written whole or not at all.
struct Interrupt {
    happened: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Interrupt {
    fn watch() -> Self {
        let happened = Arc::new(AtomicBool::new(false));
        let notify = Arc::new(Notify::new());
        let (flag, wake) = (happened.clone(), notify.clone());
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "interrupted: finishing the devices in flight (Ctrl-C again to stop now)"
                );
                flag.store(true, Ordering::SeqCst);
                wake.notify_waiters();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(super::exit::INTERRUPTED.into());
                }
            }
        });
        Self { happened, notify }
    }

    async fn wait(&self) {
        let notified = self.notify.notified();
        if self.happened() {
            return;
        }
        notified.await;
    }

    fn happened(&self) -> bool {
        self.happened.load(Ordering::SeqCst)
    }
}

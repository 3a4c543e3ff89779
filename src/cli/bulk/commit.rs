//! Putting enrolled devices on disk in batches.
//!
//! One fsync per file made `bulk` wait on the disk for every device, so each device's
//! files are first written under hidden temporary names without a sync ([`stage`]),
//! and a batch is then made durable at once ([`commit`]): the staged files synced with
//! one syncfs(2) of the directory's filesystem, renamed into place (key,
//! then certificate: the certificate's presence marks a finished device), and the
//! directory synced so that the names survive a crash. A device counts as enrolled
//! only after its batch committed; a crash before that leaves hidden files, which the
//! next run removes ([`remove_stale`]) before enrolling those devices again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::manifest::{Manifest, Row};
use super::tally::Tally;
use crate::cli::files::DeviceFiles;

const STAGED_SUFFIX: &str = ".staged";

/// A file written but not yet synced or in place.
struct StagedFile {
    temp: PathBuf,
    path: PathBuf,
}

/// One device's files, waiting for their batch.
pub struct Staged {
    pub id: String,
    key: Option<StagedFile>,
    cert: StagedFile,
    ca_pem: String,
    pub row: Row,
}

fn stage_file(path: PathBuf, contents: &[u8], mode: u32) -> io::Result<StagedFile> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let temp = path.with_file_name(format!(".{}{STAGED_SUFFIX}", name.to_string_lossy()));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temp)?;
    file.write_all(contents)?;
    Ok(StagedFile { temp, path })
}

/// Writes a device's key (when this run made it) and certificate beside their final
/// names, unsynced.
pub fn stage(
    files: &DeviceFiles,
    id: &str,
    key_pem: Option<&str>,
    cert_pem: &str,
    ca_pem: &str,
    row: Row,
) -> io::Result<Staged> {
    let key = key_pem
        .map(|pem| stage_file(files.key_path(id), pem.as_bytes(), 0o600))
        .transpose()?;
    let cert = stage_file(files.cert_path(id), cert_pem.as_bytes(), 0o644).inspect_err(|_| {
        if let Some(key) = &key {
            let _ = fs::remove_file(&key.temp);
        }
    })?;
    Ok(Staged {
        id: id.to_owned(),
        key,
        cert,
        ca_pem: ca_pem.to_owned(),
        row,
    })
}

/// Makes a batch durable and puts it in place; on error, nothing of it is in place.
/// Blocking: run it off the async runtime.
pub fn commit(files: &DeviceFiles, batch: &[Staged]) -> io::Result<()> {
    let result = sync_and_publish(files, batch);
    if result.is_err() {
        for staged in batch {
            for file in staged.key.iter().chain([&staged.cert]) {
                let _ = fs::remove_file(&file.temp);
            }
        }
    }
    result
}

fn sync_and_publish(files: &DeviceFiles, batch: &[Staged]) -> io::Result<()> {
    let Some(last) = batch.last() else {
        return Ok(());
    };
    files.write_ca(&last.ca_pem)?;
    // One syncfs(2) makes every staged file durable at once (and reports a write-back
    // error of any of them, Linux 5.8 on); the renames come after it, so a name in place
    // never points at data the disk does not have; the directory's fsync keeps the names.
    let directory = File::open(files.dir())?;
    rustix::fs::syncfs(&directory)?;
    for staged in batch {
        for file in staged.key.iter().chain([&staged.cert]) {
            fs::rename(&file.temp, &file.path)?;
        }
    }
    directory.sync_all()
}

/// Removes what a run stopped hard (a second Ctrl-C, a crash) left staged.
pub fn remove_stale(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(STAGED_SUFFIX) {
            fs::remove_file(dir.join(&*name))?;
        }
    }
    Ok(())
}

/// Devices made durable together, and the longest a finished device waits for that.
const BATCH_DEVICES: usize = 256;
const BATCH_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// Finished devices waiting to be committed.
#[derive(Default)]
pub struct Batch {
    staged: Vec<Staged>,
    oldest: Option<std::time::Instant>,
}

impl Batch {
    pub fn push(&mut self, staged: Staged) {
        self.oldest.get_or_insert_with(std::time::Instant::now);
        self.staged.push(staged);
    }

    /// Commits when the batch is full or its oldest device has waited long enough.
    pub async fn commit_when_due(
        &mut self,
        files: &Arc<DeviceFiles>,
        manifest: &mut Manifest,
        tally: &mut Tally,
    ) {
        if self.staged.len() >= BATCH_DEVICES
            || self.oldest.is_some_and(|t| t.elapsed() >= BATCH_AGE)
        {
            self.commit(files, manifest, tally).await;
        }
    }

    /// Commits the batch, lists it in the manifest, and counts it done; or, when the
    /// disk refuses, counts each of its devices failed with `local_io`.
    pub async fn commit(
        &mut self,
        files: &Arc<DeviceFiles>,
        manifest: &mut Manifest,
        tally: &mut Tally,
    ) {
        self.oldest = None;
        let batch = std::mem::take(&mut self.staged);
        if batch.is_empty() {
            return;
        }
        let files_ = files.clone();
        let (batch, committed) = tokio::task::spawn_blocking(move || {
            let committed = commit(&files_, &batch);
            (batch, committed)
        })
        .await
        .expect("committing does not panic");
        match committed {
            Ok(()) => {
                tally.done += batch.len();
                // The devices are on disk: a manifest that cannot be written is caught
                // up by the next run, not a reason to call them failed.
                if let Err(e) = manifest.append(batch.iter().map(|s| &s.row)) {
                    eprintln!("provisiond: warning: cannot append to the manifest: {e}");
                }
            }
            Err(e) => {
                for staged in &batch {
                    tally.fail(&staged.id, "local_io", &e.to_string());
                }
            }
        }
    }
}

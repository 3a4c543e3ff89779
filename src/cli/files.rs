//! What the fleet commands write for a device: `<id>.key` (0600), `<id>.crt`, and the
//! CA chain in `ca.crt`. Every file is written under a temporary name and renamed into
//! place, so an interrupted run never leaves half a file; the certificate goes last,
//! which makes its presence the mark of a finished device.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::fsutil;

pub const CA_FILE: &str = "ca.crt";

pub struct DeviceFiles {
    dir: PathBuf,
    /// The directories `open` made (deepest first), removed again by `tidy` when empty.
    created: Vec<PathBuf>,
}

impl DeviceFiles {
    /// Creates `dir` when missing, so that a directory that cannot be made fails the run
    /// before a token is spent.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let created = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .map(Path::to_owned)
            .collect();
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            created,
        })
    }

    /// After a failed run: removes the directories `open` made if nothing was written
    /// into them, so that a failure leaves no trace to mistake for a result.
    pub fn tidy(&self) {
        for dir in &self.created {
            // remove_dir refuses a directory that is not empty, which is what we want.
            if fs::remove_dir(dir).is_err() {
                return;
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn key_path(&self, device_id: &str) -> PathBuf {
        self.dir.join(format!("{device_id}.key"))
    }

    pub fn cert_path(&self, device_id: &str) -> PathBuf {
        self.dir.join(format!("{device_id}.crt"))
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join(CA_FILE)
    }

    pub fn is_enrolled(&self, device_id: &str) -> bool {
        self.cert_path(device_id).exists()
    }

    /// The files of `device_id` that exist and would be overwritten: its certificate,
    /// and its key when this run writes one.
    pub fn existing(&self, device_id: &str, with_key: bool) -> Vec<PathBuf> {
        let key = with_key.then(|| self.key_path(device_id));
        key.into_iter()
            .chain([self.cert_path(device_id)])
            .filter(|p| p.exists())
            .collect()
    }

    /// `ca.crt` holds a different CA than the chain `ca_pem` (as `/api/v1/ca` serves it):
    /// not the chain, nor the certificates that end it (a two-tier CA's root, which is
    /// what devices are given to trust).
    pub fn ca_differs(&self, ca_pem: &str) -> bool {
        fs::read_to_string(self.ca_path())
            .is_ok_and(|existing| existing != ca_pem && !ca_pem.ends_with(existing.as_str()))
    }

    /// Writes `ca.crt` unless it already holds `ca_pem`.
    pub fn write_ca(&self, ca_pem: &str) -> io::Result<()> {
        if fs::read_to_string(self.ca_path()).ok().as_deref() != Some(ca_pem) {
            fsutil::replace(&self.ca_path(), ca_pem.as_bytes(), 0o644)?;
        }
        Ok(())
    }

    pub fn write(
        &self,
        device_id: &str,
        key_pem: Option<&str>,
        cert_pem: &str,
        ca_pem: &str,
    ) -> io::Result<()> {
        self.write_ca(ca_pem)?;
        if let Some(key_pem) = key_pem {
            fsutil::replace(&self.key_path(device_id), key_pem.as_bytes(), 0o600)?;
        }
        fsutil::replace(&self.cert_path(device_id), cert_pem.as_bytes(), 0o644)
    }
}

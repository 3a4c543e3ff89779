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
}

impl DeviceFiles {
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
        })
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

    /// The files of `device_id` that already exist and would be overwritten.
    pub fn existing(&self, device_id: &str) -> Vec<PathBuf> {
        [self.key_path(device_id), self.cert_path(device_id)]
            .into_iter()
            .filter(|p| p.exists())
            .collect()
    }

    /// `ca.crt` holds a different CA than `ca_pem`.
    pub fn ca_differs(&self, ca_pem: &str) -> bool {
        fs::read_to_string(self.ca_path()).is_ok_and(|existing| existing != ca_pem)
    }

    pub fn write(
        &self,
        device_id: &str,
        key_pem: &str,
        cert_pem: &str,
        ca_pem: &str,
    ) -> io::Result<()> {
        if fs::read_to_string(self.ca_path()).ok().as_deref() != Some(ca_pem) {
            fsutil::replace(&self.ca_path(), ca_pem.as_bytes(), 0o644)?;
        }
        fsutil::replace(&self.key_path(device_id), key_pem.as_bytes(), 0o600)?;
        fsutil::replace(&self.cert_path(device_id), cert_pem.as_bytes(), 0o644)
    }
}

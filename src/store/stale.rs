//! Devices whose Redis keys may hold a token that memory has since replaced.
//!
//! A mark is kept in memory (each with a number, so that clearing an old marking keeps
//! a newer one) and appended to this instance's journal under the certs directory,
//! `stale-in-redis/<instance>.log`, one `<unix seconds> <device>` line per marking. A
//! server starting after a crash during an outage reads every journal there (its own
//! earlier life's, and those of instances sharing the directory) and keeps the marks
//! younger than the token TTL: an older token in Redis has expired by then anyway.
//! A journal goes when its instance has no mark left. (An instance that starts during
//! another's outage adopts that one's marks too: at worst it deletes from Redis a token
//! issued for such a device after the outage, which the device then gets as
//! `token_used`; never the other way round.)

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::unix_now;
use crate::domain::DeviceId;

pub const JOURNAL_DIR: &str = "stale-in-redis";

#[derive(Default)]
pub struct StaleInRedis {
    /// A std `Mutex`: nothing awaits under it.
    devices: Mutex<HashMap<DeviceId, u64>>,
    next: AtomicU64,
    journal: Option<PathBuf>,
}

impl StaleInRedis {
    /// Marks journaled under `certs_dir`, starting from those of earlier lives that are
    /// younger than `ttl`.
    pub fn journaled(certs_dir: &Path, ttl: Duration) -> io::Result<Self> {
        let dir = certs_dir.join(JOURNAL_DIR);
        crate::fsutil::create_private_dir(&dir)?;
        let mut instance = [0u8; 8];
        crate::crypto::fill_random(&mut instance);
        let marks = Self {
            journal: Some(dir.join(format!("{}.log", hex::encode(instance)))),
            ..Self::default()
        };
        let oldest = unix_now().saturating_sub(ttl.as_secs());
        let mut adopted = 0;
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            let mut young = false;
            for line in text.lines() {
                let Some((at, device)) = line.split_once(' ') else {
                    continue;
                };
                let (Ok(at), Ok(device)) = (at.parse::<u64>(), DeviceId::parse(device)) else {
                    continue;
                };
                if at >= oldest {
                    young = true;
                    adopted += 1;
                    marks.remember(&device);
                }
            }
            if !young {
                let _ = fs::remove_file(&path);
            }
        }
        if adopted > 0 {
            // Kept in this instance's journal from now on; the old journals go once
            // this one holds their marks.
            marks.append_all()?;
            for entry in fs::read_dir(&dir)?.flatten() {
                if Some(entry.path()) != marks.journal {
                    let _ = fs::remove_file(entry.path());
                }
            }
            tracing::warn!(
                devices = adopted,
                "devices re-onboarded into memory before a restart: their older tokens in \
                 redis stay refused until deleted there"
            );
        }
        Ok(marks)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, u64>> {
        self.devices.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, device: &DeviceId) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(device.clone(), n);
    }

    /// Marks `device`, on disk first when journaled.
    pub fn mark(&self, device: &DeviceId) -> io::Result<()> {
        if let Some(journal) = &self.journal {
            append(journal, &format!("{} {device}\n", unix_now()))?;
        }
        self.remember(device);
        Ok(())
    }

    fn append_all(&self) -> io::Result<()> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let now = unix_now();
        let lines: String = self
            .lock()
            .keys()
            .map(|device| format!("{now} {device}\n"))
            .collect();
        append(journal, &lines)
    }

    pub fn contains(&self, device: &DeviceId) -> bool {
        self.lock().contains_key(device)
    }

    pub fn is_marked(&self, device: &DeviceId, n: u64) -> bool {
        self.lock().get(device) == Some(&n)
    }

    /// Clears the marking `n` of `device`, unless the device was marked again since.
    pub fn clear(&self, device: &DeviceId, n: u64) {
        let mut devices = self.lock();
        if devices.get(device) == Some(&n) {
            devices.remove(device);
        }
    }

    pub fn clear_all_of(&self, device: &DeviceId) {
        self.lock().remove(device);
    }

    pub fn snapshot(&self) -> Vec<(DeviceId, u64)> {
        self.lock().iter().map(|(d, n)| (d.clone(), *n)).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes this instance's journal once no mark is left (under the lock, so that no
    /// mark is appended to a journal being removed).
    pub fn forget_journal_if_empty(&self) {
        let devices = self.lock();
        if let (true, Some(journal)) = (devices.is_empty(), &self.journal) {
            let _ = fs::remove_file(journal);
        }
    }
}

/// Appends with a fresh handle each time, synced: marks are rare (outages only), and a
/// handle kept open would write into a file another instance has removed.
fn append(path: &Path, text: &str) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_data()
}

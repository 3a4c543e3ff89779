//! What the CRL has listed, kept beside the CA (`<certs dir>/crl-listed.log`), so that a
//! revocation the store lost (Redis restarted without persistence) stays in the CRL
//! until its certificate expires, also for an instance started after the loss.
//!
//! One line per revoked certificate: `<serial hex> <revoked at> <reason code> <not_after>`.
//! The file is replaced atomically; each write is the union of what the file holds and
//! what this instance lists, so instances sharing the directory add to each other's.
//!
//! Beside it, `<certs dir>/crl-number` holds the highest CRL number published from this
//! directory, so that no CRL is ever signed with a lower one (RFC 5280 §5.2.3), even
//! after a restart that lost the revoked list's revision.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::clock::unix_now;
use crate::registry::{Reason, Revocation, parse_serial};
use crate::store::RevokedCertificate;

pub const LISTED_FILE: &str = "crl-listed.log";
const NUMBER_FILE: &str = "crl-number";

pub struct ListedFile {
    path: PathBuf,
    number: PathBuf,
}

impl ListedFile {
    pub fn in_dir(certs_dir: &Path) -> Self {
        Self {
            path: certs_dir.join(LISTED_FILE),
            number: certs_dir.join(NUMBER_FILE),
        }
    }

    /// The highest CRL number published from this directory; 0 when none was.
    pub fn last_number(&self) -> u64 {
        std::fs::read_to_string(&self.number)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Keeps `number` as the highest published, unless a higher one is there already.
    pub fn published(&self, number: u64) -> io::Result<()> {
        if self.last_number() >= number {
            return Ok(());
        }
        crate::fsutil::replace(&self.number, format!("{number}\n").as_bytes(), 0o600)
    }

    /// The entries that have not expired; a missing file is empty, a line that does not
    /// parse is skipped.
    pub fn load(&self) -> Vec<RevokedCertificate> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let now = unix_now();
        text.lines()
            .filter_map(parse)
            .filter(|e| e.not_after > now)
            .collect()
    }

    /// Adds `entries` to the file (dropping what expired); writes only when that
    /// changes it.
    pub fn add(&self, entries: &[RevokedCertificate]) -> io::Result<()> {
        let before = self.load();
        let mut all: BTreeMap<[u8; 16], RevokedCertificate> =
            before.iter().map(|e| (e.serial, *e)).collect();
        let now = unix_now();
        for entry in entries.iter().filter(|e| e.not_after > now) {
            all.entry(entry.serial).or_insert(*entry);
        }
        if all.len() == before.len() && std::fs::metadata(&self.path).is_ok() {
            return Ok(());
        }
        let text: String = all.values().map(line).collect();
        crate::fsutil::replace(&self.path, text.as_bytes(), 0o600)
    }
}

fn line(e: &RevokedCertificate) -> String {
    format!(
        "{} {} {} {}\n",
        hex::encode_upper(e.serial),
        e.revocation.at,
        e.revocation.reason.code(),
        e.not_after
    )
}

fn parse(line: &str) -> Option<RevokedCertificate> {
    let mut words = line.split(' ');
    let serial = parse_serial(words.next()?)?;
    let at = words.next()?.parse().ok()?;
    let reason = Reason::from_code(words.next()?.parse().ok()?)?;
    let not_after = words.next()?.parse().ok()?;
    Some(RevokedCertificate {
        serial,
        revocation: Revocation { at, reason },
        not_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(serial: u8, not_after: u64) -> RevokedCertificate {
        RevokedCertificate {
            serial: [serial; 16],
            revocation: Revocation {
                at: 1_800_000_000,
                reason: Reason::KeyCompromise,
            },
            not_after,
        }
    }

    #[test]
    fn entries_add_up_across_writers_and_leave_when_expired() {
        let dir = tempfile::tempdir().unwrap();
        let file = ListedFile::in_dir(dir.path());
        assert!(file.load().is_empty());
        let later = unix_now() + 3600;
        file.add(&[entry(1, later), entry(2, 1_000)]).unwrap();
        // Another instance, which never saw entry 1, adds its own.
        ListedFile::in_dir(dir.path())
            .add(&[entry(3, later)])
            .unwrap();
        let serials: Vec<u8> = file.load().iter().map(|e| e.serial[0]).collect();
        assert_eq!(serials, [1, 3]);
        assert_eq!(file.load()[0], entry(1, later));
    }

    #[test]
    fn the_published_number_only_grows() {
        let dir = tempfile::tempdir().unwrap();
        let file = ListedFile::in_dir(dir.path());
        assert_eq!(file.last_number(), 0);
        file.published(1_800_000_000_123).unwrap();
        file.published(1_800_000_000_000).unwrap();
        assert_eq!(
            ListedFile::in_dir(dir.path()).last_number(),
            1_800_000_000_123
        );
    }
}

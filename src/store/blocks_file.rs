//! The blocks Redis holds, kept beside the CA too (`<certs dir>/device-blocks.log`), so
//! that a block Redis lost (restarted without persistence, a replica promoted before it
//! had the write) comes back, as the CRL's listed revocations do (`crl-listed.log`).
//!
//! One line per device, its latest change:
//!
//! ```text
//! blocked <device id> <unix s> <reason code>
//! unblocked <device id> <unix s>
//! ```
//!
//! The file is replaced atomically; each write is the union of what the file holds and
//! the change, the later time winning per device, under an advisory lock
//! (`device-blocks.lock`, `flock`), so instances sharing the directory add to each
//! other's and none overwrites another's. A line this version cannot read (a newer
//! version's) is kept as it is. A file that cannot be read is never rewritten: the
//! write fails instead. With Redis off the registry's own file keeps blocks, and this
//! one is not written.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::domain::DeviceId;
use crate::registry::{Block, Reason};

pub const BLOCKS_FILE: &str = "device-blocks.log";
const LOCK_FILE: &str = "device-blocks.lock";

/// A device's latest change, as the file keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Blocked(Block),
    /// Unblocked at this unix second.
    Unblocked(u64),
}

impl Standing {
    fn at(&self) -> u64 {
        match self {
            Standing::Blocked(block) => block.at,
            Standing::Unblocked(at) => *at,
        }
    }
}

pub struct BlocksFile {
    path: PathBuf,
    lock: PathBuf,
    /// One writer at a time in this process (the lock file serializes processes).
    writing: Mutex<()>,
}

/// What the file holds: each device's latest change, and the lines this version
/// cannot read, kept for the version that wrote them.
#[derive(Default)]
struct Held {
    latest: BTreeMap<DeviceId, Standing>,
    unknown: Vec<Vec<u8>>,
}

impl BlocksFile {
    pub fn in_dir(certs_dir: &Path) -> Self {
        Self {
            path: certs_dir.join(BLOCKS_FILE),
            lock: certs_dir.join(LOCK_FILE),
            writing: Mutex::new(()),
        }
    }

    /// What the file holds; a missing file is empty, one that cannot be read an error.
    fn read(&self) -> io::Result<Held> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Held::default()),
            Err(e) => return Err(e),
        };
        let mut held = Held::default();
        for raw in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match std::str::from_utf8(raw).ok().and_then(parse) {
                Some((device, standing)) => keep_latest(&mut held.latest, device, standing),
                None => held.unknown.push(raw.to_vec()),
            }
        }
        Ok(held)
    }

    /// Every device's latest change.
    pub fn load(&self) -> io::Result<BTreeMap<DeviceId, Standing>> {
        Ok(self.read()?.latest)
    }

    /// The blocks that stand.
    pub fn blocked(&self) -> io::Result<Vec<(DeviceId, Block)>> {
        Ok(self
            .load()?
            .into_iter()
            .filter_map(|(device, standing)| match standing {
                Standing::Blocked(block) => Some((device, block)),
                Standing::Unblocked(_) => None,
            })
            .collect())
    }

    /// Notes the device's change, unless the file holds a later one; synced before it
    /// answers.
    pub fn note(&self, device: &DeviceId, standing: Standing) -> io::Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&self.lock)?;
        // Released when `lock` is closed, at the end of this call.
        lock.lock()?;
        let mut held = self.read()?;
        if held.latest.get(device) == Some(&standing) {
            return Ok(());
        }
        keep_latest(&mut held.latest, device.clone(), standing);
        let mut text: Vec<u8> = held
            .latest
            .iter()
            .flat_map(|(d, s)| line(d, s).into_bytes())
            .collect();
        for raw in &held.unknown {
            text.extend_from_slice(raw);
            text.push(b'\n');
        }
        crate::fsutil::replace(&self.path, &text, 0o600)
    }
}

/// A change at the same second as the one held replaces it: a later line, or this
/// instance's newer word.
fn keep_latest(all: &mut BTreeMap<DeviceId, Standing>, device: DeviceId, standing: Standing) {
    match all.get(&device) {
        Some(held) if held.at() > standing.at() => {}
        _ => {
            all.insert(device, standing);
        }
    }
}

fn line(device: &DeviceId, standing: &Standing) -> String {
    match standing {
        Standing::Blocked(b) => format!("blocked {device} {} {}\n", b.at, b.reason.code()),
        Standing::Unblocked(at) => format!("unblocked {device} {at}\n"),
    }
}

fn parse(line: &str) -> Option<(DeviceId, Standing)> {
    let mut words = line.split(' ');
    let kind = words.next()?;
    let device = DeviceId::parse(words.next()?).ok()?;
    let at = words.next()?.parse().ok()?;
    let standing = match kind {
        "blocked" => Standing::Blocked(Block {
            at,
            reason: Reason::from_code(words.next()?.parse().ok()?)?,
        }),
        "unblocked" => Standing::Unblocked(at),
        _ => return None,
    };
    Some((device, standing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str) -> DeviceId {
        DeviceId::parse(id).unwrap()
    }

    fn block(at: u64) -> Standing {
        Standing::Blocked(Block {
            at,
            reason: Reason::KeyCompromise,
        })
    }

    #[test]
    fn the_latest_change_of_each_device_stands_across_writers() {
        let dir = tempfile::tempdir().unwrap();
        let file = BlocksFile::in_dir(dir.path());
        assert!(file.blocked().unwrap().is_empty());
        file.note(&device("a"), block(100)).unwrap();
        file.note(&device("b"), block(100)).unwrap();
        // Another instance sharing the directory unblocks b later.
        BlocksFile::in_dir(dir.path())
            .note(&device("b"), Standing::Unblocked(200))
            .unwrap();
        // A stale word about b (an older block) does not bring it back.
        file.note(&device("b"), block(150)).unwrap();
        let blocked: Vec<String> = file
            .blocked()
            .unwrap()
            .iter()
            .map(|(d, _)| d.to_string())
            .collect();
        assert_eq!(blocked, ["a"]);
        assert_eq!(file.load().unwrap()[&device("b")], Standing::Unblocked(200));
        // Blocked again after the unblock.
        file.note(&device("b"), block(300)).unwrap();
        assert_eq!(file.blocked().unwrap().len(), 2);
    }

    #[test]
    fn lines_that_do_not_parse_are_kept_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(BLOCKS_FILE);
        std::fs::write(
            &path,
            b"blocked a 100 1\nnonsense\nblocked b x 1\nblocked c 100 99\n\xff\xfe\n",
        )
        .unwrap();
        let file = BlocksFile::in_dir(dir.path());
        let blocked = file.blocked().unwrap();
        assert_eq!(blocked.len(), 1);
        assert_eq!(blocked[0].0, device("a"));
        file.note(&device("d"), block(100)).unwrap();
        let after = std::fs::read(&path).unwrap();
        for kept in [
            &b"nonsense"[..],
            b"blocked c 100 99",
            b"\xff\xfe",
            b"blocked d 100 1",
        ] {
            assert!(
                after.windows(kept.len()).any(|w| w == kept),
                "{kept:?} lost"
            );
        }
    }

    #[test]
    fn a_file_that_cannot_be_read_is_never_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: reading fails with something other than
        // "not found".
        std::fs::create_dir(dir.path().join(BLOCKS_FILE)).unwrap();
        let file = BlocksFile::in_dir(dir.path());
        assert!(file.blocked().is_err());
        assert!(file.note(&device("a"), block(100)).is_err());
        assert!(dir.path().join(BLOCKS_FILE).is_dir());
    }
}

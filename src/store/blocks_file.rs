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
//! the change, the later time winning per device, so instances sharing the directory add
//! to each other's. With Redis off the registry's own file keeps blocks, and this one is
//! not written.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::domain::DeviceId;
use crate::registry::{Block, Reason};

pub const BLOCKS_FILE: &str = "device-blocks.log";

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
    /// One writer at a time in this process: each write reads the file first.
    writing: Mutex<()>,
}

impl BlocksFile {
    pub fn in_dir(certs_dir: &Path) -> Self {
        Self {
            path: certs_dir.join(BLOCKS_FILE),
            writing: Mutex::new(()),
        }
    }

    /// Every device's latest change; a missing file is empty, a line that does not parse
    /// is skipped.
    pub fn load(&self) -> BTreeMap<DeviceId, Standing> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mut all = BTreeMap::new();
        for (device, standing) in text.lines().filter_map(parse) {
            keep_latest(&mut all, device, standing);
        }
        all
    }

    /// The blocks that stand.
    pub fn blocked(&self) -> Vec<(DeviceId, Block)> {
        self.load()
            .into_iter()
            .filter_map(|(device, standing)| match standing {
                Standing::Blocked(block) => Some((device, block)),
                Standing::Unblocked(_) => None,
            })
            .collect()
    }

    /// Notes the device's change, unless the file holds a later one; synced before it
    /// answers.
    pub fn note(&self, device: &DeviceId, standing: Standing) -> io::Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let mut all = self.load();
        if all.get(device) == Some(&standing) {
            return Ok(());
        }
        keep_latest(&mut all, device.clone(), standing);
        let text: String = all.iter().map(|(d, s)| line(d, s)).collect();
        crate::fsutil::replace(&self.path, text.as_bytes(), 0o600)
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
        assert!(file.blocked().is_empty());
        file.note(&device("a"), block(100)).unwrap();
        file.note(&device("b"), block(100)).unwrap();
        // Another instance sharing the directory unblocks b later.
        BlocksFile::in_dir(dir.path())
            .note(&device("b"), Standing::Unblocked(200))
            .unwrap();
        // A stale word about b (an older block) does not bring it back.
        file.note(&device("b"), block(150)).unwrap();
        let blocked: Vec<String> = file.blocked().iter().map(|(d, _)| d.to_string()).collect();
        assert_eq!(blocked, ["a"]);
        assert_eq!(file.load()[&device("b")], Standing::Unblocked(200));
        // Blocked again after the unblock.
        file.note(&device("b"), block(300)).unwrap();
        assert_eq!(file.blocked().len(), 2);
    }

    #[test]
    fn lines_that_do_not_parse_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(BLOCKS_FILE),
            "blocked a 100 1\nnonsense\nblocked b x 1\nblocked c 100 99\n",
        )
        .unwrap();
        let blocked = BlocksFile::in_dir(dir.path()).blocked();
        assert_eq!(blocked.len(), 1);
        assert_eq!(blocked[0].0, device("a"));
    }
}

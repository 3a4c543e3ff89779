//! The registry's file with Redis switched off: `<certs dir>/registry.log`, so that the
//! certificates issued, their revocations and the blocked devices survive a restart.
//!
//! An append-only log of text lines, each written and synced (`fdatasync`) before the
//! request that made it is answered. One writer thread does the writing, in group
//! commits: whatever requests queued while it synced goes out in the next single write
//! and sync, so that concurrent requests share the sync instead of taking turns at it
//! (one sync per certificate had doubled the CPU of a certificate with Redis off):
//!
//! ```text
//! issued <serial hex> <packed record hex>
//! revoked <serial hex> <unix s> <reason code>
//! blocked <device id> <unix s> <reason code>
//! unblocked <device id>
//! proof <proof id hex> <unix s until which it is remembered>
//! renewed <previous serial hex> <successor serial hex>
//! handover <previous serial hex> <unix s until which it is kept> <handover hex>
//! listed <serial hex> <unix s> <reason code> <unix s until which it is listed>
//! ```
//!
//! At start the log is read into memory and rewritten without the records past their
//! retention. Why a log and not an embedded database such as redb: the state is small
//! (about 60 bytes a certificate) and always held in memory anyway, appends are the only
//! writes, and a text file is what an operator can read, grep and back up with `cp`. A
//! line torn by a crash can only be the last one, and is dropped (its request was never
//! answered); any other line that does not parse stops the start, so that nothing is
//! silently lost.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tokio::sync::{mpsc, oneshot};

use super::{Handover, RevokedCertificate};
use crate::clock::unix_now;
use crate::domain::DeviceId;
use crate::registry::{Block, CertificateRecord, Reason, Revocation, parse_serial};

pub const LEDGER_FILE: &str = "registry.log";

/// One change to the registry.
pub enum Entry<'a> {
    Issued(&'a CertificateRecord),
    Revoked(&'a [u8; 16], Revocation),
    Blocked(&'a DeviceId, Block),
    Unblocked(&'a DeviceId),
    /// A renewal proof used, remembered until the given unix second.
    Proof(u64, u64),
    /// The first certificate was renewed into the second.
    Renewed(&'a [u8; 16], &'a [u8; 16]),
    /// What the renewal of a certificate handed out, kept for a retry until a unix second.
    Handover(&'a [u8; 16], &'a Handover, u64),
    /// A serial put on the CRL without a record of its certificate.
    Listed(&'a RevokedCertificate),
}

impl Entry<'_> {
    fn line(&self) -> String {
        match self {
            Entry::Issued(record) => format!(
                "issued {} {}\n",
                record.serial_hex(),
                hex::encode(record.pack())
            ),
            Entry::Revoked(serial, r) => format!(
                "revoked {} {} {}\n",
                hex::encode_upper(serial),
                r.at,
                r.reason.code()
            ),
            Entry::Blocked(device, b) => {
                format!("blocked {device} {} {}\n", b.at, b.reason.code())
            }
            Entry::Unblocked(device) => format!("unblocked {device}\n"),
            Entry::Proof(id, until) => format!("proof {id:016x} {until}\n"),
            Entry::Renewed(previous, next) => format!(
                "renewed {} {}\n",
                hex::encode_upper(previous),
                hex::encode_upper(next)
            ),
            Entry::Handover(previous, given, until) => format!(
                "handover {} {until} {}\n",
                hex::encode_upper(previous),
                hex::encode(given.pack())
            ),
            Entry::Listed(entry) => format!(
                "listed {} {} {} {}\n",
                hex::encode_upper(entry.serial),
                entry.revocation.at,
                entry.revocation.reason.code(),
                entry.not_after
            ),
        }
    }
}

/// What the log held: the records to keep, the blocks that stand, the renewal proofs
/// used that could still be presented.
#[derive(Default)]
pub struct Registry {
    pub records: HashMap<[u8; 16], CertificateRecord>,
    pub blocked: HashMap<DeviceId, Block>,
    pub proofs: HashMap<u64, u64>,
    /// Each renewed certificate's successor.
    pub successors: HashMap<[u8; 16], [u8; 16]>,
    /// What renewals handed out, for a retry, until the unix second given.
    pub handovers: HashMap<[u8; 16], (Handover, u64)>,
    /// Serials listed on the CRL without a record, the first listing of each.
    pub unrecorded: HashMap<[u8; 16], RevokedCertificate>,
    /// Revocations read before their certificate's line: appends run concurrently, so a
    /// revocation of a record just made can reach the file first.
    early: HashMap<[u8; 16], Revocation>,
}

impl Registry {
    fn apply(&mut self, line: &str) -> Option<()> {
        let mut words = line.split(' ');
        match (words.next()?, words.next()?) {
            ("issued", serial) => {
                let serial = parse_serial(serial)?;
                let mut record =
                    CertificateRecord::unpack(serial, &hex::decode(words.next()?).ok()?)?;
                if let Some(early) = self.early.remove(&serial) {
                    record.revocation.get_or_insert(early);
                }
                // Written again (an import racing another): a revocation already read stands.
                if let Some(known) = self.records.get(&serial) {
                    record.revocation = known.revocation.or(record.revocation);
                }
                self.records.insert(serial, record);
            }
            ("revoked", serial) => {
                let at = words.next()?.parse().ok()?;
                let reason = Reason::from_code(words.next()?.parse().ok()?)?;
                let serial = parse_serial(serial)?;
                let revocation = Revocation { at, reason };
                match self.records.get_mut(&serial) {
                    Some(record) => {
                        record.revocation.get_or_insert(revocation);
                    }
                    None => {
                        self.early.insert(serial, revocation);
                    }
                }
            }
            ("blocked", device) => {
                let at = words.next()?.parse().ok()?;
                let reason = Reason::from_code(words.next()?.parse().ok()?)?;
                self.blocked
                    .entry(DeviceId::parse(device).ok()?)
                    .or_insert(Block { at, reason });
            }
            ("unblocked", device) => {
                self.blocked.remove(&DeviceId::parse(device).ok()?);
            }
            ("handover", previous) => {
                let until = words.next()?.parse().ok()?;
                let packed = String::from_utf8(hex::decode(words.next()?).ok()?).ok()?;
                let given = Handover::unpack(&packed)?;
                self.handovers
                    .insert(parse_serial(previous)?, (given, until));
            }
            ("renewed", previous) => {
                let next = parse_serial(words.next()?)?;
                self.successors.insert(parse_serial(previous)?, next);
            }
            ("listed", serial) => {
                let serial = parse_serial(serial)?;
                let at = words.next()?.parse().ok()?;
                let reason = Reason::from_code(words.next()?.parse().ok()?)?;
                let not_after = words.next()?.parse().ok()?;
                self.unrecorded.entry(serial).or_insert(RevokedCertificate {
                    serial,
                    revocation: Revocation { at, reason },
                    not_after,
                });
            }
            ("proof", id) => {
                let until = words.next()?.parse().ok()?;
                self.proofs.insert(u64::from_str_radix(id, 16).ok()?, until);
            }
            _ => return None,
        }
        words.next().is_none().then_some(())
    }
}

pub struct Ledger {
    /// To the writer thread, which stops when the ledger is dropped.
    appends: mpsc::UnboundedSender<Append>,
    path: PathBuf,
}

/// Lines to write, and who to tell once they are on disk.
struct Append {
    text: String,
    done: oneshot::Sender<Result<(), String>>,
}

/// Writes what is queued in one write and one sync, answers every request in it, and
/// goes again. After a failed write or sync the file's state is unknown, so every later
/// append fails too, until a restart replays and rewrites the log.
fn write_batches(mut file: File, path: &Path, mut appends: mpsc::UnboundedReceiver<Append>) {
    let mut broken: Option<String> = None;
    let mut text = String::new();
    while let Some(first) = appends.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(more) = appends.try_recv() {
            batch.push(more);
        }
        let result = match &broken {
            Some(error) => Err(error.clone()),
            None => {
                text.clear();
                batch.iter().for_each(|a| text.push_str(&a.text));
                file.write_all(text.as_bytes())
                    .and_then(|()| file.sync_data())
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))
            }
        };
        if let Err(error) = &result {
            broken = Some(error.clone());
        }
        for append in batch {
            let _ = append.done.send(result.clone());
        }
    }
}

impl Ledger {
    /// Reads the log in `certs_dir` (a missing one is empty), rewrites it compacted (records
    /// kept `retention` seconds after expiry), and opens it for appending.
    pub fn open(certs_dir: &Path, retention: u64) -> io::Result<(Self, Registry)> {
        let path = certs_dir.join(LEDGER_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut registry = Registry::default();
        let lines: Vec<&str> = text.split_terminator('\n').collect();
        for (n, line) in lines.iter().enumerate() {
            // A last line without its newline was never synced whole, so never answered:
            // dropped even when what is left of it parses (a reason code cut short, a
            // certificate cut short).
            let torn = n + 1 == lines.len() && !text.ends_with('\n');
            if torn {
                tracing::warn!(path = %path.display(), "dropping a torn last line of the registry log");
                continue;
            }
            if registry.apply(line).is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: line {} does not parse: {line:?}",
                        path.display(),
                        n + 1
                    ),
                ));
            }
        }
        let now = unix_now();
        registry
            .records
            .retain(|_, r| r.keep_until(retention) > now);
        registry.proofs.retain(|_, until| *until >= now);
        let records = &registry.records;
        registry
            .successors
            .retain(|previous, _| records.contains_key(previous));
        registry.handovers.retain(|_, (_, until)| *until >= now);
        registry.unrecorded.retain(|_, entry| entry.not_after > now);
        let mut compacted = String::new();
        for record in registry.records.values() {
            compacted.push_str(&Entry::Issued(record).line());
        }
        for (device, block) in &registry.blocked {
            compacted.push_str(&Entry::Blocked(device, *block).line());
        }
        for (id, until) in &registry.proofs {
            compacted.push_str(&Entry::Proof(*id, *until).line());
        }
        for (previous, next) in &registry.successors {
            compacted.push_str(&Entry::Renewed(previous, next).line());
        }
        for (previous, (given, until)) in &registry.handovers {
            compacted.push_str(&Entry::Handover(previous, given, *until).line());
        }
        for entry in registry.unrecorded.values() {
            compacted.push_str(&Entry::Listed(entry).line());
        }
        crate::fsutil::replace(&path, compacted.as_bytes(), 0o600)?;
        let file = OpenOptions::new().append(true).mode(0o600).open(&path)?;
        let (appends, queued) = mpsc::unbounded_channel();
        let writer_path = path.clone();
        std::thread::Builder::new()
            .name("registry-log".into())
            .spawn(move || write_batches(file, &writer_path, queued))?;
        Ok((Self { appends, path }, registry))
    }

    /// The log lines of `entries`.
    pub fn lines(entries: &[Entry<'_>]) -> String {
        entries.iter().map(Entry::line).collect()
    }

    /// Appends lines (from [`Ledger::lines`]) and answers once they are synced to disk.
    pub async fn append(&self, text: String) -> Result<(), String> {
        let (done, synced) = oneshot::channel();
        let stopped = || format!("{}: the writer has stopped", self.path.display());
        self.appends
            .send(Append { text, done })
            .map_err(|_| stopped())?;
        synced.await.map_err(|_| stopped())?
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{RETENTION_AFTER_EXPIRY_SECS, slots};

    fn record(device: &str, not_after: u64) -> CertificateRecord {
        CertificateRecord {
            serial: slots::serial_in(slots::slot_of(device)),
            device_id: DeviceId::parse(device).unwrap(),
            issued_at: 1_800_000_000,
            not_after,
            key_type: "ecdsa-p256",
            fingerprint_sha256: [1; 32],
            revocation: None,
            group: "default".into(),
        }
    }

    #[tokio::test]
    async fn a_reopened_ledger_holds_what_was_appended_and_drops_what_is_past_retention() {
        let dir = tempfile::tempdir().unwrap();
        let kept = record("dev-a", unix_now() + 3600);
        let old = record("dev-b", 1_000_000);
        let device = DeviceId::parse("dev-c").unwrap();
        let revocation = Revocation {
            at: 1_800_000_500,
            reason: Reason::KeyCompromise,
        };
        let block = Block {
            at: 1_800_000_600,
            reason: Reason::Unspecified,
        };
        {
            let (ledger, registry) = Ledger::open(dir.path(), RETENTION_AFTER_EXPIRY_SECS).unwrap();
            assert!(registry.records.is_empty());
            ledger
                .append(Ledger::lines(&[Entry::Issued(&kept), Entry::Issued(&old)]))
                .await
                .unwrap();
            ledger
                .append(Ledger::lines(&[
                    Entry::Revoked(&kept.serial, revocation),
                    Entry::Blocked(&device, block),
                    Entry::Blocked(&kept.device_id, block),
                    Entry::Unblocked(&kept.device_id),
                    Entry::Proof(0xabc, unix_now() + 60),
                    Entry::Proof(0xdef, 1_000),
                ]))
                .await
                .unwrap();
        }
        // A revocation that reached the file before its certificate's line still applies.
        let early = record("dev-d", unix_now() + 3600);
        let path = dir.path().join(LEDGER_FILE);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        let lines = Ledger::lines(&[
            Entry::Revoked(&early.serial, revocation),
            Entry::Issued(&early),
        ]);
        file.write_all(lines.as_bytes()).unwrap();
        // A crash in the middle of an append leaves a torn last line.
        file.write_all(b"revoked 00").unwrap();

        let (_, registry) = Ledger::open(dir.path(), RETENTION_AFTER_EXPIRY_SECS).unwrap();
        assert_eq!(registry.records.len(), 2);
        assert_eq!(registry.records[&kept.serial].revocation, Some(revocation));
        assert_eq!(registry.records[&early.serial].revocation, Some(revocation));
        assert_eq!(registry.blocked.len(), 1);
        assert_eq!(registry.blocked[&device], block);
        assert_eq!(registry.proofs.keys().collect::<Vec<_>>(), [&0xabc]);
        // Compacted: the revocation now lives in the record's line.
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");

        // A torn last line that still parses (a reason code "10" cut to "1") is dropped
        // all the same: it was never answered.
        let fresh = record("dev-e", unix_now() + 3600);
        let aa = Revocation {
            at: 1_800_000_000,
            reason: Reason::AaCompromise,
        };
        let line = Ledger::lines(&[Entry::Revoked(&fresh.serial, aa)]);
        let cut = line.trim_end_matches('\n');
        assert!(cut.ends_with(" 10"), "{cut}");
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(Ledger::lines(&[Entry::Issued(&fresh)]).as_bytes())
            .unwrap();
        file.write_all(&cut.as_bytes()[..cut.len() - 1]).unwrap();
        let (_, reread) = Ledger::open(dir.path(), RETENTION_AFTER_EXPIRY_SECS).unwrap();
        assert_eq!(reread.records[&fresh.serial].revocation, None);
        assert_eq!(reread.records.len(), 3);

        fs::write(&path, "issued nonsense\nunblocked dev-c\n").unwrap();
        let refused = Ledger::open(dir.path(), RETENTION_AFTER_EXPIRY_SECS)
            .err()
            .expect("a bad line is refused");
        assert!(refused.to_string().contains("line 1"), "{refused}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_are_each_answered_once_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, _) = Ledger::open(dir.path(), RETENTION_AFTER_EXPIRY_SECS).unwrap();
        let ledger = std::sync::Arc::new(ledger);
        let records: Vec<_> = (0..300)
            .map(|i| record(&format!("dev-{i}"), unix_now() + 3600))
            .collect();
        let mut appends = tokio::task::JoinSet::new();
        for r in &records {
            let (ledger, line) = (ledger.clone(), Ledger::lines(&[Entry::Issued(r)]));
            appends.spawn(async move { ledger.append(line).await });
        }
        while let Some(answer) = appends.join_next().await {
            answer.unwrap().unwrap();
        }
        // Every answered append is in the file, whole, before the ledger is gone.
        let text = fs::read_to_string(dir.path().join(LEDGER_FILE)).unwrap();
        assert_eq!(text.lines().count(), 300);
        drop(ledger);
        let (_, registry) = Ledger::open(dir.path(), RETENTION_AFTER_EXPIRY_SECS).unwrap();
        assert_eq!(registry.records.len(), 300);
    }
}

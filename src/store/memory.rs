//! Pending tokens in this process's memory: the store when Redis is off, and the
//! fallback while it is away.

mod fleet;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::task::JoinHandle;

use super::{
    CertificateRegistry, ConsumeOutcome, HANDOVER_WINDOW, Handover, Issued, ProofUse, Renewal,
    RevokedCertificate, RevokedList, StorageMode, StoreError, StoreStats, TokenFacts, TokenStore,
    replay_window,
};
use crate::clock::{unix_now, unix_now_ms};
use crate::domain::{DeviceId, Jti};
use crate::metrics::Metrics;
use crate::registry::{Block, CertificateRecord, RETENTION_AFTER_EXPIRY_SECS, Reason, Revocation};

/// Enough shards that a sweep or a count never holds up a request for long.
const SHARDS: usize = 64;

/// What [`MemoryStore::take`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    Consumed,
    /// The device has a live token here, but another one: the presented one is dead.
    Replaced,
    /// The presented token was issued here and has expired: it is dead whatever Redis
    /// holds (a token issued into memory replaced any in Redis), so no need to ask it.
    Expired,
    /// No live token for the device here.
    Absent,
}

#[derive(Debug, Clone)]
struct Entry {
    jti: Jti,
    /// Milliseconds since the store's epoch; monotonic, so wall-clock jumps change nothing.
    expires_ms: u64,
    /// Boxed: most lookups never read them, and the map stays small.
    facts: Box<TokenFacts>,
}

#[derive(Default)]
struct Shard {
    tokens: HashMap<DeviceId, Entry>,
    /// (device, nonce) -> expiry in ms, for [`TokenStore::first_use`].
    nonces: HashMap<(DeviceId, u64), u64>,
}

/// Sharded map from device to its one pending token.
///
/// A std `Mutex` is right here: nothing awaits while holding it, and each critical
/// section is a hash lookup, so an async mutex would only add overhead.
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    shard_hasher: RandomState,
    epoch: Instant,
    certificates: Mutex<Certificates>,
    /// How long certificate records are kept after expiry (seconds).
    retention: u64,
}

/// The certificate records kept here (all of them when Redis is off; those issued during
/// an outage otherwise, until they are written to Redis).
#[derive(Default)]
struct Certificates {
    by_serial: HashMap<[u8; 16], CertificateRecord>,
    /// Unix ms of the latest revocation.
    revision: u64,
    /// Blocked devices (with Redis on, those known to be blocked there: what an outage
    /// goes by).
    blocked: HashMap<DeviceId, Block>,
    /// Renewal proofs used, until they expire (unix s).
    proofs: HashMap<u64, u64>,
    /// Each renewed certificate's successor.
    successors: HashMap<[u8; 16], [u8; 16]>,
    /// What each renewal handed out, for a retry, until the unix second given.
    handovers: HashMap<[u8; 16], (Handover, u64)>,
    /// Serials listed without a record.
    unrecorded: HashMap<[u8; 16], RevokedCertificate>,
}

impl Certificates {
    /// A record whose serial was put on the CRL before the record existed is revoked as
    /// listed: otherwise it would renew while the CRL lists it.
    fn join_listing(&self, record: &mut CertificateRecord) {
        if record.revocation.is_none()
            && let Some(listed) = self.unrecorded.get(&record.serial)
        {
            record.revocation = Some(listed.revocation);
        }
    }

    fn revoke(
        &mut self,
        serial: &[u8; 16],
        revocation: Revocation,
    ) -> Option<(bool, CertificateRecord)> {
        let record = self.by_serial.get_mut(serial)?;
        if record.revocation.is_some() {
            return Some((false, record.clone()));
        }
        record.revocation = Some(revocation);
        let record = record.clone();
        self.revision = self.revision.max(revocation.at * 1000).max(unix_now_ms()) + 1;
        Some((true, record))
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::with_retention(RETENTION_AFTER_EXPIRY_SECS)
    }

    /// A store that keeps certificate records `retention` seconds after they expired
    /// ([`crate::registry::retention_after_expiry`]).
    pub fn with_retention(retention: u64) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_hasher: RandomState::new(),
            epoch: Instant::now(),
            certificates: Mutex::new(Certificates::default()),
            retention,
        }
    }

    fn certs(&self) -> MutexGuard<'_, Certificates> {
        self.certificates
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn record(&self, certificate: &CertificateRecord) {
        let mut certs = self.certs();
        let mut certificate = certificate.clone();
        certs.join_listing(&mut certificate);
        certs.by_serial.insert(certificate.serial, certificate);
    }

    /// Drops a record once Redis holds it.
    pub fn forget_certificate(&self, serial: &[u8; 16]) {
        self.certs().by_serial.remove(serial);
    }

    /// Whether the device is blocked, as far as this store knows.
    pub fn is_blocked(&self, device: &DeviceId) -> bool {
        self.certs().blocked.contains_key(device)
    }

    /// Starts from what the ledger held.
    pub fn restore(&self, registry: super::ledger::Registry) {
        let mut certs = self.certs();
        certs.revision = registry
            .records
            .values()
            .filter_map(|r| r.revocation.map(|r| r.at * 1000))
            .chain(registry.unrecorded.values().map(|e| e.revocation.at * 1000))
            .max()
            .unwrap_or(0);
        certs.unrecorded = registry.unrecorded;
        certs.by_serial = registry.records;
        let mut records = std::mem::take(&mut certs.by_serial);
        for record in records.values_mut() {
            certs.join_listing(record);
        }
        certs.by_serial = records;
        certs.blocked = registry.blocked;
        certs.proofs = registry.proofs;
        certs.successors = registry.successors;
        certs.handovers = registry.handovers;
    }

    pub fn certificate_here(&self, serial: &[u8; 16]) -> Option<CertificateRecord> {
        self.certs().by_serial.get(serial).cloned()
    }

    pub fn certificates_here(&self, device: &DeviceId) -> Vec<CertificateRecord> {
        self.certs()
            .by_serial
            .values()
            .filter(|c| &c.device_id == device)
            .cloned()
            .collect()
    }

    /// Frees expired entries every `every` until the store is dropped. Expired entries
    /// are already invisible before that; the sweep only returns their memory.
    pub fn spawn_sweeper(
        self: &Arc<Self>,
        every: Duration,
        metrics: Arc<Metrics>,
    ) -> JoinHandle<()> {
        let store: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(store) = store.upgrade() else { return };
                let freed = store.sweep();
                metrics.memory_sweeps.inc();
                metrics.memory_swept_entries.inc_by(freed as u64);
                if freed > 0 {
                    tracing::debug!(freed, "memory store sweep");
                }
            }
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn shard(&self, device: &DeviceId) -> MutexGuard<'_, Shard> {
        let index = self.shard_hasher.hash_one(device) as usize % SHARDS;
        // A panic under the lock cannot leave a map half-updated (every update is one
        // insert or remove), so a poisoned shard is still consistent.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn insert(&self, device: &DeviceId, jti: &Jti, ttl: Duration, facts: &TokenFacts) {
        let expires_ms = self.now_ms() + ttl.as_millis() as u64;
        self.shard(device).tokens.insert(
            device.clone(),
            Entry {
                jti: *jti,
                expires_ms,
                facts: Box::new(facts.clone()),
            },
        );
    }

    /// The device's live pending token here, if any.
    pub fn pending(&self, device: &DeviceId) -> Option<(Jti, TokenFacts)> {
        let now = self.now_ms();
        self.shard(device)
            .tokens
            .get(device)
            .filter(|entry| entry.expires_ms > now)
            .map(|entry| (entry.jti, (*entry.facts).clone()))
    }

    pub fn take(&self, device: &DeviceId, jti: &Jti) -> Take {
        let now = self.now_ms();
        let tokens = &mut self.shard(device).tokens;
        match tokens.get(device) {
            Some(entry) if entry.expires_ms <= now => {
                let ours = entry.jti == *jti;
                tokens.remove(device);
                if ours { Take::Expired } else { Take::Absent }
            }
            Some(entry) if entry.jti == *jti => {
                tokens.remove(device);
                Take::Consumed
            }
            Some(_) => Take::Replaced,
            None => Take::Absent,
        }
    }

    pub fn remove(&self, device: &DeviceId) -> bool {
        let now = self.now_ms();
        self.shard(device)
            .tokens
            .remove(device)
            .is_some_and(|entry| entry.expires_ms > now)
    }

    /// When the device's pending token expires, if it has one.
    pub fn expires_in(&self, device: &DeviceId) -> Option<Duration> {
        let now = self.now_ms();
        self.shard(device)
            .tokens
            .get(device)
            .filter(|entry| entry.expires_ms > now)
            .map(|entry| Duration::from_millis(entry.expires_ms - now))
    }

    pub fn remember(&self, device: &DeviceId, nonce: u64, ttl: Duration) -> bool {
        let now = self.now_ms();
        let nonces = &mut self.shard(device).nonces;
        match nonces.get(&(device.clone(), nonce)) {
            Some(expires_ms) if *expires_ms > now => false,
            _ => {
                nonces.insert((device.clone(), nonce), now + ttl.as_millis() as u64);
                true
            }
        }
    }

    pub fn live_count(&self) -> u64 {
        let now = self.now_ms();
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
                shard.tokens.values().filter(|e| e.expires_ms > now).count() as u64
            })
            .sum()
    }

    pub fn sweep(&self) -> usize {
        let unix = unix_now();
        {
            let mut certs = self.certs();
            certs
                .by_serial
                .retain(|_, c| c.keep_until(self.retention) > unix);
            certs.proofs.retain(|_, until| *until >= unix);
            certs.handovers.retain(|_, (_, until)| *until >= unix);
            let Certificates {
                by_serial,
                successors,
                ..
            } = &mut *certs;
            successors.retain(|previous, _| by_serial.contains_key(previous));
        }
        let now = self.now_ms();
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
                shard.nonces.retain(|_, expires_ms| *expires_ms > now);
                let before = shard.tokens.len();
                shard.tokens.retain(|_, e| e.expires_ms > now);
                before - shard.tokens.len()
            })
            .sum()
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn issue(
        &self,
        device: &DeviceId,
        jti: &Jti,
        ttl: Duration,
        facts: &TokenFacts,
    ) -> Result<Issued, StoreError> {
        if self.is_blocked(device) {
            return Ok(Issued::Blocked);
        }
        self.insert(device, jti, ttl, facts);
        Ok(Issued::Issued)
    }

    async fn pending(&self, device: &DeviceId) -> Result<Option<(Jti, TokenFacts)>, StoreError> {
        Ok(MemoryStore::pending(self, device))
    }

    async fn consume(
        &self,
        device: &DeviceId,
        jti: &Jti,
        _epoch: u64,
        certificate: Option<&CertificateRecord>,
    ) -> Result<ConsumeOutcome, StoreError> {
        if certificate.is_some() && self.is_blocked(device) {
            return Ok(ConsumeOutcome::Blocked);
        }
        Ok(match self.take(device, jti) {
            Take::Consumed => {
                if let Some(certificate) = certificate {
                    self.record(certificate);
                }
                ConsumeOutcome::Consumed
            }
            Take::Replaced | Take::Expired | Take::Absent => ConsumeOutcome::NotFound,
        })
    }

    async fn revoke_device(&self, device: &DeviceId) -> Result<bool, StoreError> {
        Ok(self.remove(device))
    }

    async fn first_use(
        &self,
        device: &DeviceId,
        ts: u64,
        skew: Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.remember(device, ts, replay_window(skew)))
    }

    async fn stats(&self) -> StoreStats {
        StoreStats {
            mode: StorageMode::Memory,
            redis: None,
            memory_tokens: self.live_count(),
        }
    }
}

#[async_trait]
impl CertificateRegistry for MemoryStore {
    async fn certificate(
        &self,
        serial: &[u8; 16],
    ) -> Result<Option<CertificateRecord>, StoreError> {
        Ok(self.certificate_here(serial))
    }

    async fn certificates_of(
        &self,
        device: &DeviceId,
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        Ok(self.certificates_here(device))
    }

    async fn import(&self, record: &CertificateRecord) -> Result<CertificateRecord, StoreError> {
        let mut certs = self.certs();
        let mut joined = record.clone();
        certs.join_listing(&mut joined);
        Ok(certs
            .by_serial
            .entry(record.serial)
            .or_insert(joined)
            .clone())
    }

    async fn revoke(
        &self,
        serial: &[u8; 16],
        revocation: Revocation,
    ) -> Result<Option<CertificateRecord>, StoreError> {
        Ok(self.certs().revoke(serial, revocation).map(|(_, r)| r))
    }

    async fn renew(
        &self,
        previous: &[u8; 16],
        proof: Option<ProofUse>,
        record: &CertificateRecord,
        handover: &Handover,
        supersede: Option<Revocation>,
    ) -> Result<Renewal, StoreError> {
        let mut certs = self.certs();
        if certs.blocked.contains_key(&record.device_id) {
            return Ok(Renewal::Blocked);
        }
        let revocation = match certs.by_serial.get(previous) {
            Some(p) if p.device_id == record.device_id => p.revocation,
            _ => return Ok(Renewal::PreviousUnknown),
        };
        if let Some(proof) = proof
            && certs
                .proofs
                .get(&proof.id)
                .is_some_and(|u| *u >= unix_now())
        {
            return Ok(Renewal::ProofUsed);
        }
        // Revoked for anything but its own renewal, it hands out nothing.
        let superseded_only = revocation.is_none_or(|r| r.reason == Reason::Superseded);
        if certs.successors.contains_key(previous) && superseded_only {
            let now = unix_now();
            let given = match certs.handovers.get(previous) {
                Some((given, until)) if *until >= now && given.csr_key == handover.csr_key => {
                    given.clone()
                }
                _ => return Ok(Renewal::PreviousRenewed),
            };
            if let Some(proof) = proof {
                certs.proofs.insert(proof.id, proof.remembered_until());
            }
            return Ok(Renewal::AlreadyRenewed(given));
        }
        if revocation.is_some() {
            return Ok(Renewal::PreviousRevoked);
        }
        if let Some(proof) = proof {
            certs.proofs.insert(proof.id, proof.remembered_until());
        }
        certs.by_serial.insert(record.serial, record.clone());
        certs.successors.insert(*previous, record.serial);
        let until = unix_now() + HANDOVER_WINDOW.as_secs();
        certs.handovers.insert(*previous, (handover.clone(), until));
        let superseded = supersede
            .and_then(|revocation| certs.revoke(previous, revocation))
            .and_then(|(now, record)| now.then_some(record));
        Ok(Renewal::Renewed { superseded })
    }

    async fn successor_of(&self, serial: &[u8; 16]) -> Result<Option<[u8; 16]>, StoreError> {
        Ok(self.certs().successors.get(serial).copied())
    }

    async fn block(&self, device: &DeviceId, block: Block) -> Result<Block, StoreError> {
        Ok(*self.certs().blocked.entry(device.clone()).or_insert(block))
    }

    async fn unblock(&self, device: &DeviceId) -> Result<bool, StoreError> {
        Ok(self.certs().blocked.remove(device).is_some())
    }

    async fn blocked(&self, device: &DeviceId) -> Result<Option<Block>, StoreError> {
        Ok(self.certs().blocked.get(device).copied())
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        Ok(self.certs().revision)
    }

    async fn list_unrecorded(
        &self,
        entry: RevokedCertificate,
    ) -> Result<RevokedCertificate, StoreError> {
        let mut certs = self.certs();
        if let Some(standing) = certs.unrecorded.get(&entry.serial) {
            return Ok(*standing);
        }
        certs.unrecorded.insert(entry.serial, entry);
        // A record of the serial made meanwhile (the caller found none) is revoked too.
        if let Some(record) = certs.by_serial.get_mut(&entry.serial)
            && record.revocation.is_none()
        {
            record.revocation = Some(entry.revocation);
        }
        certs.revision = certs
            .revision
            .max(entry.revocation.at * 1000)
            .max(unix_now_ms())
            + 1;
        Ok(entry)
    }

    async fn revoked(&self) -> Result<RevokedList, StoreError> {
        let now = unix_now();
        let certs = self.certs();
        Ok(RevokedList {
            revision: certs.revision,
            entries: certs
                .by_serial
                .values()
                .filter(|c| c.not_after > now)
                .filter_map(|c| {
                    c.revocation.map(|revocation| RevokedCertificate {
                        serial: c.serial,
                        revocation,
                        not_after: c.not_after,
                    })
                })
                .chain(
                    certs
                        .unrecorded
                        .values()
                        // A record of the serial lists itself once revoked; until then
                        // (it cannot be: records join their listing) the listing does.
                        .filter(|e| {
                            e.not_after > now
                                && certs
                                    .by_serial
                                    .get(&e.serial)
                                    .is_none_or(|r| r.revocation.is_none())
                        })
                        .copied(),
                )
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests;

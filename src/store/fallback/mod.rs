//! Redis first, memory by policy.
//!
//! With `fallback = "memory"`, tokens are issued into memory while Redis is off or
//! unreachable, and consume looks in memory, then in Redis. A token that may sit in an
//! unreachable Redis is answered `Unreachable` (503), never `NotFound` (401): the device
//! should retry, not onboard again. With `fallback = "none"`, Redis is required.
//!
//! Single use across the switches rests on three rules:
//!
//! 1. Memory entries are only made while Redis cannot be used, so a device's entry in
//!    memory is newer than anything Redis holds for it: it is the authority for that
//!    device until it is used or expires.
//! 2. A device issued into memory is marked *stale in Redis*: whatever Redis still holds
//!    for it was replaced (or is this very token, if Redis applied a write whose answer
//!    never came). Redis is not asked about a stale device; its keys there are deleted
//!    as soon as Redis is back, and the mark goes once they are. Issuing the device into
//!    Redis again clears it too (the issue script replaces what Redis held). Marks are
//!    also written to disk ([`StaleInRedis`]), so a restart during an outage keeps them.
//! 3. Derived-mode proofs are remembered only where every instance sees them: in Redis
//!    when it is enabled (503 while it is away), in memory only when Redis is off.
//!
//! The registry (certificates, revocations, blocks) lives in Redis when it is enabled;
//! renewals, revocations and blocks need it (503 while it is away), and onboarding from
//! memory during an outage refuses the devices last seen blocked there. With Redis off,
//! the registry lives in memory and in the [`Ledger`] file, which a restart reads back.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::task::JoinHandle;

mod blocks;
mod registry;

use super::blocks_file::BlocksFile;
use super::ledger::{Entry, Ledger};
use super::memory::Take;
use super::stale::StaleInRedis;
use super::{
    CertificateRegistry, ConsumeOutcome, FleetBatch, FleetSource, Issued, LimitSubject,
    MemoryStore, RedisStore, StorageMode, StoreError, StoreStats, TokenFacts, TokenStore,
};
use crate::clock::unix_now;
use crate::config::FallbackPolicy;
use crate::domain::{DeviceId, Jti};
use crate::metrics::Metrics;
use crate::registry::{CertificateRecord, Reason, Revocation};

pub struct FallbackStore {
    redis: Option<Arc<RedisStore>>,
    memory: Arc<MemoryStore>,
    policy: FallbackPolicy,
    metrics: Arc<Metrics>,
    stale: StaleInRedis,
    /// Certificate records made in memory while Redis was away, to write there when it
    /// is back (they stay in memory too until then, so lookups find them meanwhile).
    unsynced: std::sync::Mutex<Vec<CertificateRecord>>,
    /// The registry's file, with Redis off.
    ledger: Option<Ledger>,
    /// The blocks kept beside the CA, with Redis on.
    blocks: Option<Arc<BlocksFile>>,
    /// The Redis epoch whose lost blocks were last put back.
    blocks_restored: AtomicU64,
    /// The epoch in which the blocks file was last found unreadable (said once).
    blocks_unreadable: AtomicU64,
}

impl FallbackStore {
    pub fn new(
        redis: Option<Arc<RedisStore>>,
        memory: Arc<MemoryStore>,
        policy: FallbackPolicy,
        metrics: Arc<Metrics>,
        stale: StaleInRedis,
        ledger: Option<Ledger>,
    ) -> Self {
        Self {
            redis,
            memory,
            policy,
            metrics,
            stale,
            unsynced: std::sync::Mutex::new(Vec::new()),
            ledger,
            blocks: None,
            blocks_restored: AtomicU64::new(blocks::NEVER),
            blocks_unreadable: AtomicU64::new(blocks::NEVER),
        }
    }

    /// Writes registry changes to the ledger, when there is one, before they are answered
    /// (the ledger's own thread writes and syncs, shared with concurrent requests).
    async fn journal(&self, entries: &[Entry<'_>]) -> Result<(), StoreError> {
        let Some(ledger) = &self.ledger else {
            return Ok(());
        };
        ledger
            .append(Ledger::lines(entries))
            .await
            .map_err(StoreError::Failed)
    }

    /// Redis when it is enabled and reachable; `Ok(None)` when it is off; unreachable
    /// otherwise. For what only Redis may answer when it is enabled.
    fn registry_redis(&self) -> Result<Option<&RedisStore>, StoreError> {
        match &self.redis {
            None => Ok(None),
            Some(redis) if redis.is_connected() => Ok(Some(redis)),
            Some(_) => Err(unreachable()),
        }
    }

    /// Whether onboarding from memory must refuse the device.
    fn blocked_for_memory(&self, device: &DeviceId) -> bool {
        match &self.redis {
            Some(redis) => redis.seen_blocked(device),
            None => self.memory.is_blocked(device),
        }
    }

    /// Whether a token held in memory may not buy a certificate: Redis is asked when it
    /// answers, else what was last seen there, and memory's own blocks without Redis.
    async fn blocked_at_consume(&self, device: &DeviceId) -> bool {
        match &self.redis {
            None => self.memory.is_blocked(device),
            Some(redis) if redis.is_connected() => match redis.blocked(device).await {
                Ok(block) => block.is_some(),
                Err(_) => redis.seen_blocked(device),
            },
            Some(redis) => redis.seen_blocked(device),
        }
    }

    fn unsynced(&self) -> std::sync::MutexGuard<'_, Vec<CertificateRecord>> {
        self.unsynced.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Certificate records issued during an outage, not yet written to Redis.
    pub fn records_awaiting_redis(&self) -> usize {
        self.unsynced().len()
    }

    /// Writes the records made during an outage; stops at the first failure. A device
    /// blocked in Redis meanwhile (through another instance, which this one could not
    /// hear while cut off) has that certificate revoked as it arrives, whenever it was
    /// issued: blocking revoked every certificate Redis knew of, and would have revoked
    /// this one too. The block holds, one reconcile late.
    async fn sync_records(&self, redis: &RedisStore) -> Result<(), StoreError> {
        let pending: Vec<CertificateRecord> = self.unsynced().clone();
        for record in &pending {
            redis.record_certificate(record).await?;
            if redis.blocked(&record.device_id).await?.is_some() {
                let withdrawn = Revocation {
                    at: unix_now(),
                    reason: Reason::PrivilegeWithdrawn,
                };
                redis.revoke(&record.serial, withdrawn).await?;
                tracing::warn!(
                    target: "audit",
                    event = "certificate_revoked",
                    device_id = %record.device_id,
                    serial = %record.serial_hex(),
                    reason = "privilegeWithdrawn",
                    "a certificate issued during the outage to a device blocked since is revoked"
                );
            }
            self.unsynced().retain(|r| r.serial != record.serial);
            // Redis answers for it from now on; memory need not keep it for a year.
            self.memory.forget_certificate(&record.serial);
        }
        Ok(())
    }

    /// Deletes the Redis keys of stale devices whenever Redis is reachable, every
    /// `every`, until the store is dropped.
    pub fn spawn_reconciler(self: &Arc<Self>, every: Duration) -> JoinHandle<()> {
        let store: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(store) = store.upgrade() else { return };
                store.reconcile().await;
            }
        })
    }

    /// One pass over the stale devices and the records made during an outage; stops at
    /// the first sign that Redis is away.
    pub async fn reconcile(&self) -> usize {
        let Some(redis) = self.live_redis() else {
            return 0;
        };
        // Blocks first: records written next are checked against them.
        if let Err(e) = self.restore_blocks(redis).await {
            tracing::debug!(error = %e, "putting lost blocks back in redis paused");
            return 0;
        }
        if let Err(e) = self.sync_records(redis).await {
            tracing::debug!(error = %e, "writing certificate records to redis paused");
            return 0;
        }
        let mut cleared = 0;
        for (device, n) in self.stale.snapshot() {
            // Issuing the device into Redis since the snapshot cleared it already.
            if !self.stale.is_marked(&device, n) {
                continue;
            }
            match redis.revoke_device(&device).await {
                Ok(_) => {
                    self.stale.clear(&device, n);
                    cleared += 1;
                }
                Err(e) => {
                    tracing::debug!(%device, error = %e, "reconciling with redis paused");
                    break;
                }
            }
        }
        self.stale.forget_journal_if_empty();
        if cleared > 0 {
            tracing::info!(
                devices = cleared,
                "deleted tokens from redis that memory replaced during the outage"
            );
        }
        cleared
    }

    /// Runs a Redis operation, timing it.
    async fn timed<T>(&self, operation: &'static str, op: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let answer = op.await;
        self.metrics
            .observe_store("redis", operation, started.elapsed());
        answer
    }

    /// Runs a memory operation, timing it.
    fn timed_memory<T>(&self, operation: &'static str, op: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let answer = op();
        self.metrics
            .observe_store("memory", operation, started.elapsed());
        answer
    }

    /// Redis, when it is switched on and was reachable at the last look.
    fn live_redis(&self) -> Option<&RedisStore> {
        self.redis.as_deref().filter(|r| r.is_connected())
    }

    fn memory_allowed(&self) -> bool {
        self.redis.is_none() || self.policy == FallbackPolicy::Memory
    }

    pub fn mode(&self) -> StorageMode {
        match (&self.redis, self.live_redis()) {
            (None, _) => StorageMode::Memory,
            (Some(_), Some(_)) => StorageMode::Redis,
            (Some(_), None) if self.policy == FallbackPolicy::Memory => StorageMode::Memory,
            (Some(_), None) => StorageMode::Unavailable,
        }
    }

    /// `None` when Redis is off; else whether it answered at the last look.
    pub fn redis_connected(&self) -> Option<bool> {
        self.redis.as_ref().map(|r| r.is_connected())
    }

    /// One batch of the fleet listing (see [`FleetSource`]): from Redis when it is
    /// enabled (503 while it is away), else from memory; `None` when the cursor is none
    /// this store gave.
    pub async fn fleet_batch(
        &self,
        source: FleetSource,
        prefix: &str,
        cursor: Option<&str>,
        wanted: usize,
    ) -> Result<Option<FleetBatch>, StoreError> {
        match self.registry_redis()? {
            Some(redis) => redis.fleet_batch(source, prefix, cursor, wanted).await,
            None => Ok(Some(
                self.memory.fleet_batch(source, prefix, cursor, wanted),
            )),
        }
    }

    /// When Redis was last seen to have lost writes (unix seconds), if ever.
    pub fn redis_lost_writes_at(&self) -> Option<u64> {
        self.redis.as_ref().and_then(|r| r.lost_writes_at())
    }

    /// A request against a rate limit shared in Redis: `None` when Redis cannot answer
    /// now (the caller falls back to its own limiter), else whether to wait.
    pub async fn shared_limit(
        &self,
        subject: LimitSubject<'_>,
        per_minute: u32,
    ) -> Option<Option<Duration>> {
        let redis = self.live_redis()?;
        match redis.shared_limit(subject, per_minute).await {
            Ok(answer) => Some(answer),
            Err(e) => {
                tracing::debug!(error = %e, "shared rate limit unavailable; using the local one");
                None
            }
        }
    }

    /// Devices whose replaced tokens still wait to be deleted from Redis.
    pub fn stale_in_redis(&self) -> usize {
        self.stale.len()
    }

    /// Whether the device has a pending token, and for how long yet.
    pub async fn pending_for(&self, device: &DeviceId) -> Result<Option<Duration>, StoreError> {
        if let Some(left) = self.memory.expires_in(device) {
            return Ok(Some(left));
        }
        if self.stale.contains(device) {
            return Ok(None);
        }
        match &self.redis {
            None => Ok(None),
            Some(redis) if redis.is_connected() => {
                Ok(redis.pending_jti(device).await?.map(|(_, ttl)| ttl))
            }
            Some(_) => Err(unreachable()),
        }
    }
}

#[async_trait]
impl TokenStore for FallbackStore {
    async fn issue(
        &self,
        device: &DeviceId,
        jti: &Jti,
        ttl: Duration,
        facts: &TokenFacts,
    ) -> Result<Issued, StoreError> {
        if let Some(redis) = self.live_redis() {
            match self
                .timed("issue", redis.issue(device, jti, ttl, facts))
                .await
            {
                Ok(Issued::Issued) => {
                    // Redis holds the one pending token now: nothing else is live.
                    self.memory.remove(device);
                    self.stale.clear_all_of(device);
                    return Ok(Issued::Issued);
                }
                Ok(Issued::Blocked) => return Ok(Issued::Blocked),
                Ok(Issued::Unsure) => return Ok(Issued::Unsure),
                Err(e @ StoreError::Unreachable(_)) if self.memory_allowed() => {
                    tracing::warn!(%device, error = %e, "issuing into memory instead, with a new jti");
                    return Ok(Issued::Unsure);
                }
                Err(e) => return Err(e),
            }
        }
        if !self.memory_allowed() {
            return Err(unreachable());
        }
        if self.blocked_for_memory(device) {
            return Ok(Issued::Blocked);
        }
        if self.redis.is_some() {
            // Written down first: a token in memory whose mark could be lost with a
            // restart would let the token it replaced come back.
            self.stale.mark(device).map_err(|e| {
                StoreError::Failed(format!("cannot record a device stale in redis: {e}"))
            })?;
        }
        self.timed_memory("issue", || self.memory.insert(device, jti, ttl, facts));
        Ok(Issued::Issued)
    }

    /// Where [`FallbackStore::pending_for`] looks: memory first (a token issued there
    /// replaced any in Redis), none for a device whose Redis token is stale.
    async fn pending(&self, device: &DeviceId) -> Result<Option<(Jti, TokenFacts)>, StoreError> {
        if let Some(pending) = self.memory.pending(device) {
            return Ok(Some(pending));
        }
        if self.stale.contains(device) {
            return Ok(None);
        }
        match &self.redis {
            None => Ok(None),
            Some(redis) if redis.is_connected() => redis.pending(device).await,
            Some(_) => Err(unreachable()),
        }
    }

    async fn consume(
        &self,
        device: &DeviceId,
        jti: &Jti,
        epoch: u64,
        certificate: Option<&CertificateRecord>,
    ) -> Result<ConsumeOutcome, StoreError> {
        match self.timed_memory("consume", || self.memory.take(device, jti)) {
            Take::Consumed => {
                // Another instance may have blocked the device since this one issued the
                // token into memory.
                if certificate.is_some() && self.blocked_at_consume(device).await {
                    return Ok(ConsumeOutcome::Blocked);
                }
                if let Some(certificate) = certificate {
                    self.memory.record(certificate);
                    if self.redis.is_some() {
                        self.unsynced().push(certificate.clone());
                    }
                    self.journal(&[Entry::Issued(certificate)]).await?;
                }
                return Ok(ConsumeOutcome::Consumed);
            }
            Take::Replaced | Take::Expired => return Ok(ConsumeOutcome::NotFound),
            Take::Absent => {}
        }
        // Memory replaced whatever Redis holds for this device (rule 2).
        if self.stale.contains(device) {
            return Ok(ConsumeOutcome::NotFound);
        }
        match &self.redis {
            None => Ok(ConsumeOutcome::NotFound),
            Some(redis) if redis.is_connected() => {
                self.timed("consume", redis.consume(device, jti, epoch, certificate))
                    .await
            }
            Some(_) => Err(unreachable()),
        }
    }

    async fn revoke_device(&self, device: &DeviceId) -> Result<bool, StoreError> {
        let in_memory = self.memory.remove(device);
        if let Some(redis) = self.live_redis() {
            match redis.revoke_device(device).await {
                Ok(in_redis) => {
                    self.stale.clear_all_of(device);
                    return Ok(in_redis || in_memory);
                }
                Err(StoreError::Unreachable(_)) => {}
                Err(e) => return Err(e),
            }
        }
        // Redis is off or away: whatever it holds for the device is dead from now on
        // (rule 2), and deleted there once it is back. The revocation is whole either way.
        if self.redis.is_some() {
            self.stale.mark(device).map_err(|e| {
                StoreError::Failed(format!("cannot record a device stale in redis: {e}"))
            })?;
        }
        Ok(in_memory)
    }

    async fn first_use(
        &self,
        device: &DeviceId,
        ts: u64,
        skew: Duration,
    ) -> Result<bool, StoreError> {
        // Rule 3: a proof seen only by this instance's memory could be replayed to
        // another instance, or to this one once Redis is back.
        match &self.redis {
            None => self.memory.first_use(device, ts, skew).await,
            Some(redis) if redis.is_connected() => redis.first_use(device, ts, skew).await,
            Some(_) => Err(unreachable()),
        }
    }

    fn epoch(&self) -> u64 {
        self.redis.as_ref().map_or(0, |r| r.epoch())
    }

    async fn stats(&self) -> StoreStats {
        let redis = match &self.redis {
            Some(redis) => redis.stats().await.redis,
            None => None,
        };
        StoreStats {
            mode: self.mode(),
            redis,
            memory_tokens: self.memory.live_count(),
        }
    }
}

fn unreachable() -> StoreError {
    StoreError::Unreachable("redis is unreachable".into())
}

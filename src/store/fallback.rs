//! Redis first, memory by policy.
//!
//! With `fallback = "memory"`, tokens are issued into memory while Redis is off or
//! unreachable, and consume looks in memory, then in Redis. A token that may sit in an
//! unreachable Redis is answered `Unreachable` (503), never `NotFound` (401): the device
//! should retry, not onboard again. With `fallback = "none"`, Redis is required.
//!
//! Memory entries are only ever made while Redis cannot be used, so a device's entry in
//! memory is newer than anything Redis holds for it, and is the authority for that device
//! until it is used or expires. Issuing into Redis drops the device's memory entry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::memory::Take;
use super::{
    ConsumeOutcome, MemoryStore, RedisStore, StorageMode, StoreError, StoreStats, TokenStore,
};
use crate::config::FallbackPolicy;
use crate::domain::{DeviceId, Jti};
use crate::metrics::Metrics;

pub struct FallbackStore {
    redis: Option<Arc<RedisStore>>,
    memory: Arc<MemoryStore>,
    policy: FallbackPolicy,
    metrics: Arc<Metrics>,
}

impl FallbackStore {
    pub fn new(
        redis: Option<Arc<RedisStore>>,
        memory: Arc<MemoryStore>,
        policy: FallbackPolicy,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            redis,
            memory,
            policy,
            metrics,
        }
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

    /// Whether the device has a pending token, and for how long yet.
    pub async fn pending_for(&self, device: &DeviceId) -> Result<Option<Duration>, StoreError> {
        if let Some(left) = self.memory.expires_in(device) {
            return Ok(Some(left));
        }
        match &self.redis {
            None => Ok(None),
            Some(redis) if redis.is_connected() => {
                Ok(redis.pending(device).await?.map(|(_, ttl)| ttl))
            }
            Some(_) => Err(unreachable()),
        }
    }
}

#[async_trait]
impl TokenStore for FallbackStore {
    async fn issue(&self, device: &DeviceId, jti: &Jti, ttl: Duration) -> Result<(), StoreError> {
        if let Some(redis) = self.live_redis() {
            match self.timed("issue", redis.issue(device, jti, ttl)).await {
                Ok(()) => {
                    self.memory.remove(device);
                    return Ok(());
                }
                Err(e @ StoreError::Unreachable(_)) if self.memory_allowed() => {
                    tracing::warn!(%device, error = %e, "issuing into memory instead");
                }
                Err(e) => return Err(e),
            }
        }
        if !self.memory_allowed() {
            return Err(unreachable());
        }
        self.timed_memory("issue", || self.memory.insert(device, jti, ttl));
        Ok(())
    }

    async fn consume(&self, device: &DeviceId, jti: &Jti) -> Result<ConsumeOutcome, StoreError> {
        match self.timed_memory("consume", || self.memory.take(device, jti)) {
            Take::Consumed => return Ok(ConsumeOutcome::Consumed),
            Take::Replaced => return Ok(ConsumeOutcome::NotFound),
            Take::Absent => {}
        }
        match &self.redis {
            None => Ok(ConsumeOutcome::NotFound),
            Some(redis) if redis.is_connected() => {
                self.timed("consume", redis.consume(device, jti)).await
            }
            Some(_) => Err(unreachable()),
        }
    }

    async fn revoke_device(&self, device: &DeviceId) -> Result<bool, StoreError> {
        let in_memory = self.memory.remove(device);
        match &self.redis {
            None => Ok(in_memory),
            Some(redis) if redis.is_connected() => {
                Ok(redis.revoke_device(device).await? || in_memory)
            }
            Some(_) => Err(unreachable()),
        }
    }

    async fn first_use(
        &self,
        device: &DeviceId,
        nonce: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        if let Some(redis) = self.live_redis() {
            match redis.first_use(device, nonce, ttl).await {
                Err(StoreError::Unreachable(_)) if self.memory_allowed() => {}
                answer => return answer,
            }
        }
        if !self.memory_allowed() {
            return Err(unreachable());
        }
        Ok(self.memory.remember(device, nonce, ttl))
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

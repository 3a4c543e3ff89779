//! The [`CertificateRegistry`] of the [`FallbackStore`]: Redis when it is enabled,
//! memory and the [`Ledger`](super::super::Ledger) file when it is off.

use async_trait::async_trait;

use super::super::blocks_file::Standing;
use super::super::ledger::Entry;
use super::super::{
    CertificateRegistry, HANDOVER_WINDOW, Handover, ProofUse, Renewal, RevokedCertificate,
    RevokedList, StoreError,
};
use super::{FallbackStore, unreachable};
use crate::clock::unix_now;
use crate::domain::DeviceId;
use crate::registry::{Block, CertificateRecord, Revocation};

/// Records live in Redis when it is enabled (those made during an outage in memory too,
/// until written there), in memory when it is off. Lookups answer 503 rather than "not
/// found" while Redis is away, and so do revocations: a revocation is applied whole or
/// not at all.
#[async_trait]
impl CertificateRegistry for FallbackStore {
    async fn certificate(
        &self,
        serial: &[u8; 16],
    ) -> Result<Option<CertificateRecord>, StoreError> {
        let Some(redis) = &self.redis else {
            return self.memory.certificate(serial).await;
        };
        if !redis.is_connected() {
            return Err(unreachable());
        }
        match redis.certificate(serial).await? {
            Some(record) => Ok(Some(record)),
            None => Ok(self.memory.certificate_here(serial)),
        }
    }

    async fn certificates_of(
        &self,
        device: &DeviceId,
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        let mut found = self.memory.certificates_here(device);
        let Some(redis) = &self.redis else {
            return Ok(found);
        };
        if !redis.is_connected() {
            return Err(unreachable());
        }
        for record in redis.certificates_of(device).await? {
            if !found.iter().any(|r| r.serial == record.serial) {
                found.push(record);
            }
        }
        found.sort_by_key(|r| r.issued_at);
        Ok(found)
    }

    async fn revoke(
        &self,
        serial: &[u8; 16],
        revocation: Revocation,
    ) -> Result<Option<CertificateRecord>, StoreError> {
        let Some(redis) = self.registry_redis()? else {
            let record = self.memory.revoke(serial, revocation).await?;
            if let Some(record) = &record
                && record.revocation == Some(revocation)
            {
                self.journal(&[Entry::Revoked(serial, revocation)]).await?;
            }
            return Ok(record);
        };
        // A record made during the outage goes to Redis first, so that it is revoked there.
        self.sync_records(redis).await?;
        redis.revoke(serial, revocation).await
    }

    async fn renew(
        &self,
        previous: &[u8; 16],
        proof: Option<ProofUse>,
        record: &CertificateRecord,
        handover: &Handover,
        supersede: Option<Revocation>,
    ) -> Result<Renewal, StoreError> {
        if let Some(redis) = self.registry_redis()? {
            // The previous certificate may be one made during an outage.
            self.sync_records(redis).await?;
            return redis
                .renew(previous, proof, record, handover, supersede)
                .await;
        }
        let renewal = self
            .memory
            .renew(previous, proof, record, handover, supersede)
            .await?;
        if let Renewal::Renewed { superseded } = &renewal {
            let until = unix_now() + HANDOVER_WINDOW.as_secs();
            let mut entries = vec![
                Entry::Issued(record),
                Entry::Renewed(previous, &record.serial),
                Entry::Handover(previous, handover, until),
            ];
            if let Some(proof) = proof {
                entries.push(Entry::Proof(proof.id, proof.remembered_until()));
            }
            if let Some(superseded) = superseded
                && let Some(revocation) = superseded.revocation
            {
                entries.push(Entry::Revoked(previous, revocation));
            }
            self.journal(&entries).await?;
        }
        if let Renewal::AlreadyRenewed(given) = &renewal {
            // Journaled again, so that a registry file that failed under the first attempt
            // (its answer then a 503) fails this one too: nothing unrecorded leaves.
            let mut entries = vec![Entry::Renewed(previous, &given.serial)];
            if let Some(proof) = proof {
                entries.push(Entry::Proof(proof.id, proof.remembered_until()));
            }
            self.journal(&entries).await?;
        }
        Ok(renewal)
    }

    async fn block(&self, device: &DeviceId, block: Block) -> Result<Block, StoreError> {
        if let Some(redis) = self.registry_redis()? {
            let standing = redis.block(device, block).await?;
            self.file_block(device, Standing::Blocked(standing)).await;
            return Ok(standing);
        }
        let standing = self.memory.block(device, block).await?;
        if standing == block {
            self.journal(&[Entry::Blocked(device, block)]).await?;
        }
        Ok(standing)
    }

    async fn unblock(&self, device: &DeviceId) -> Result<bool, StoreError> {
        if let Some(redis) = self.registry_redis()? {
            let lifted = redis.unblock(device).await?;
            // Noted even when nothing was lifted: the file may have missed an earlier unblock.
            self.file_block(device, Standing::Unblocked(unix_now()))
                .await;
            return Ok(lifted);
        }
        let lifted = self.memory.unblock(device).await?;
        if lifted {
            self.journal(&[Entry::Unblocked(device)]).await?;
        }
        Ok(lifted)
    }

    async fn successor_of(&self, serial: &[u8; 16]) -> Result<Option<[u8; 16]>, StoreError> {
        match self.registry_redis()? {
            Some(redis) => redis.successor_of(serial).await,
            None => self.memory.successor_of(serial).await,
        }
    }

    async fn import(&self, record: &CertificateRecord) -> Result<CertificateRecord, StoreError> {
        if let Some(redis) = self.registry_redis()? {
            return redis.import(record).await;
        }
        let known = self.memory.certificate_here(&record.serial).is_some();
        let standing = self.memory.import(record).await?;
        if !known {
            // A listing the record joined is in the log already: replaying joins it again.
            self.journal(&[Entry::Issued(record)]).await?;
        }
        Ok(standing)
    }

    async fn blocked(&self, device: &DeviceId) -> Result<Option<Block>, StoreError> {
        match self.registry_redis()? {
            Some(redis) => redis.blocked(device).await,
            None => self.memory.blocked(device).await,
        }
    }

    async fn list_unrecorded(
        &self,
        entry: RevokedCertificate,
    ) -> Result<RevokedCertificate, StoreError> {
        if let Some(redis) = self.registry_redis()? {
            return redis.list_unrecorded(entry).await;
        }
        let standing = self.memory.list_unrecorded(entry).await?;
        // Journaled again on a retry too: a first attempt whose write failed (its answer
        // a 503) must not leave the listing only in memory. The log keeps the first.
        self.journal(&[Entry::Listed(&standing)]).await?;
        Ok(standing)
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        match &self.redis {
            None => self.memory.revision().await,
            Some(redis) => redis.revision().await,
        }
    }

    async fn revoked(&self) -> Result<RevokedList, StoreError> {
        match &self.redis {
            None => self.memory.revoked().await,
            Some(redis) => redis.revoked().await,
        }
    }
}

//! The [`CertificateRegistry`] on Redis: certificate records by slot, blocks, and the
//! revoked list the CRL is built from.

use async_trait::async_trait;

use super::super::topology::RedisConn;
use super::super::{
    CertificateRegistry, HANDOVER_WINDOW, Handover, ProofUse, Renewal, RevokedCertificate,
    RevokedList, StoreError,
};
use super::{RedisStore, SCAN_BATCH};
use crate::clock::{DEVICE_CLOCK_SKEW_SECS, unix_now};
use crate::domain::DeviceId;
use crate::registry::{Block, CertificateRecord, Reason, Revocation, slots};

/// One certificate in this many also prunes its bucket of expired records (Redis cannot
/// expire hash fields one by one before 7.4).
pub(super) const PRUNE_ONE_IN: u8 = 32;

impl RedisStore {
    /// Notes what Redis answered about the device's block.
    pub(super) fn saw_blocked(&self, device: &DeviceId, blocked: bool) {
        let mut seen = self.blocked_seen.lock().unwrap_or_else(|p| p.into_inner());
        if blocked {
            seen.insert(device.clone());
        } else {
            seen.remove(device);
        }
    }

    /// Whether the device was blocked in Redis at the last look.
    pub fn seen_blocked(&self, device: &DeviceId) -> bool {
        self.blocked_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(device)
    }

    /// Writes a record made while Redis was away, or imported; a record already there
    /// stands. It goes to its device's bucket, where renewal looks; a serial that does
    /// not carry the device's slot is indexed first, so that it is found from the serial.
    pub async fn record_certificate(
        &self,
        certificate: &CertificateRecord,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let keep = certificate.keep_until(self.config.retention_after_expiry);
        let device_slot = slots::slot_of(certificate.device_id.as_str());
        if slots::slot_of_serial(&certificate.serial) != device_slot {
            redis::cmd("SET")
                .arg(self.keys.serial_index(&certificate.serial))
                .arg(certificate.device_id.as_str())
                .arg("EXAT")
                .arg(keep)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| self.fail(e))?;
        }
        self.record_script
            .key(self.keys.certificates(device_slot))
            .arg(&certificate.serial[..])
            .arg(certificate.pack())
            .arg(keep)
            .invoke_async::<()>(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        // Its serial was put on the CRL before the record existed: the record says so too,
        // or the certificate would renew while the CRL lists it.
        if certificate.revocation.is_none()
            && let Some(listed) = self.bare_listing(&mut conn, &certificate.serial).await?
        {
            CertificateRegistry::revoke(self, &certificate.serial, listed).await?;
        }
        Ok(())
    }

    /// The record of `serial`, wherever its bucket is: one round trip for a serial that
    /// names its bucket (every one this server issued), two more for an imported one.
    pub(super) async fn record_on(
        &self,
        conn: &mut RedisConn,
        serial: &[u8; 16],
    ) -> Result<Option<CertificateRecord>, StoreError> {
        let mut packed = self
            .packed_in(conn, &self.keys.certificate_of(serial), serial)
            .await?;
        if packed.is_none()
            && let Some(bucket) = self.imported_bucket(conn, serial).await?
        {
            packed = self.packed_in(conn, &bucket, serial).await?;
        }
        Ok(packed.and_then(|p| CertificateRecord::unpack(*serial, &p)))
    }

    async fn packed_in(
        &self,
        conn: &mut RedisConn,
        bucket: &str,
        serial: &[u8; 16],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        redis::cmd("HGET")
            .arg(bucket)
            .arg(&serial[..])
            .query_async(conn)
            .await
            .map_err(|e| self.fail(e))
    }

    /// The revoke script on `bucket`: `None` when the serial is not there.
    async fn revoke_in(
        &self,
        conn: &mut RedisConn,
        bucket: &str,
        serial: &[u8; 16],
        revocation: Revocation,
    ) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        self.revoke_script
            .key(bucket)
            .arg(&serial[..])
            .arg(revocation.at)
            .arg(revocation.reason.code())
            .invoke_async(conn)
            .await
            .map_err(|e| self.fail(e))
    }

    /// The bucket of an imported certificate whose serial names another (its device's,
    /// from the serial's index), if it is one.
    async fn imported_bucket(
        &self,
        conn: &mut RedisConn,
        serial: &[u8; 16],
    ) -> Result<Option<String>, StoreError> {
        let device: Option<String> = redis::cmd("GET")
            .arg(self.keys.serial_index(serial))
            .query_async(conn)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(device.map(|device| self.keys.certificates(slots::slot_of(&device))))
    }
}

#[async_trait]
impl CertificateRegistry for RedisStore {
    async fn certificate(
        &self,
        serial: &[u8; 16],
    ) -> Result<Option<CertificateRecord>, StoreError> {
        self.record_on(&mut self.conn().await?, serial).await
    }

    async fn successor_of(&self, serial: &[u8; 16]) -> Result<Option<[u8; 16]>, StoreError> {
        let Some(record) = self.certificate(serial).await? else {
            return Ok(None);
        };
        let next: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(self.keys.successors(&record.device_id))
            .arg(&serial[..])
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(next.and_then(|n| <[u8; 16]>::try_from(n.as_slice()).ok()))
    }

    async fn import(&self, record: &CertificateRecord) -> Result<CertificateRecord, StoreError> {
        self.replicas_ready(&[&self
            .keys
            .certificates(slots::slot_of(record.device_id.as_str()))])?;
        self.record_certificate(record).await?;
        let standing = self.certificate(&record.serial).await?;
        let written = [
            self.keys
                .certificates(slots::slot_of(record.device_id.as_str())),
            self.keys.serial_index(&record.serial),
        ];
        self.wait_for_replicas(
            &mut self.conn().await?,
            &written.each_ref().map(String::as_str),
        )
        .await?;
        standing.ok_or_else(|| StoreError::Failed("the imported record is not there".into()))
    }

    /// Reads the bucket of the device's slot (HSCAN: a few dozen records on a fleet of a
    /// million, other devices' among them).
    async fn certificates_of(
        &self,
        device: &DeviceId,
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        let key = self.keys.certificates(slots::slot_of(device.as_str()));
        let mut conn = self.conn().await?;
        let mut found = self.bucket(&mut conn, &key).await?;
        found.retain(|record| &record.device_id == device);
        Ok(found)
    }

    /// The record first (authoritative), then the revoked list and its revision: an
    /// interrupted revocation is finished by revoking again, which answers the first
    /// revocation's time and reason and completes the rest.
    async fn revoke(
        &self,
        serial: &[u8; 16],
        revocation: Revocation,
    ) -> Result<Option<CertificateRecord>, StoreError> {
        let mut bucket = self.keys.certificate_of(serial);
        self.replicas_ready(&[&bucket, &self.keys.revoked(), &self.keys.revision()])?;
        let mut conn = self.conn().await?;
        self.owe_listing(&mut conn, serial).await?;
        let mut answer = self
            .revoke_in(&mut conn, &bucket, serial, revocation)
            .await?;
        if answer.is_none()
            && let Some(imported) = self.imported_bucket(&mut conn, serial).await?
        {
            answer = self
                .revoke_in(&mut conn, &imported, serial, revocation)
                .await?;
            bucket = imported;
        }
        let Some((revoked_now, packed)) = answer else {
            // No record: nothing anyone could have revoked, so nothing to list.
            let _ = self.settle_unlisted(&mut conn, serial).await;
            return Ok(None);
        };
        let record = unpacked(*serial, &packed)?;
        self.list_revoked(&mut conn, &record, revoked_now == 1)
            .await?;
        let written = [bucket, self.keys.revoked(), self.keys.revision()];
        self.wait_for_replicas(&mut conn, &written.each_ref().map(String::as_str))
            .await?;
        Ok(Some(record))
    }

    async fn renew(
        &self,
        previous: &[u8; 16],
        proof: Option<ProofUse>,
        record: &CertificateRecord,
        handover: &Handover,
        supersede: Option<Revocation>,
    ) -> Result<Renewal, StoreError> {
        let device = &record.device_id;
        let mut conn = self.conn().await?;
        if let Some(proof) = proof
            && let Some(lost) = self.lost_writes_at()
        {
            // As for signed onboarding: a proof that may have been used before Redis lost
            // the write cannot be told from a fresh one until it is too old.
            // One used before the loss was presented before it, so its iat is at most a
            // device clock's skew past it.
            let unsure_until = lost + DEVICE_CLOCK_SKEW_SECS;
            if proof.issued_at <= unsure_until {
                return Err(StoreError::Unsure {
                    retry_after: unsure_until + 1 - unix_now().min(unsure_until),
                });
            }
        }
        let slot = slots::slot_of(device.as_str());
        self.replicas_ready(&[
            &self.keys.certificates(slot),
            &self.keys.revoked(),
            &self.keys.revision(),
        ])?;
        if supersede.is_some() {
            self.owe_listing(&mut conn, previous).await?;
        }
        let mut invocation = self.renew_script.key(self.keys.blocked(device));
        invocation
            .key(self.keys.certificates(slot))
            .key(self.keys.successors(device))
            .key(self.keys.handover(device, previous));
        let proof_life = proof.map_or(0, |p| p.remembered_until().saturating_sub(unix_now()));
        if let Some(proof) = proof {
            invocation.key(self.keys.proof(device, proof.id));
        }
        let (outcome, superseded): (i64, Vec<u8>) = invocation
            .arg(&record.serial[..])
            .arg(record.pack())
            .arg(record.keep_until(self.config.retention_after_expiry))
            .arg(&previous[..])
            .arg(proof_life.max(1))
            .arg(supersede.map_or(String::new(), |r| r.at.to_string()))
            .arg(supersede.map_or(Reason::Superseded, |r| r.reason).code())
            .arg(device.as_str())
            .arg(handover.pack())
            .arg(&handover.csr_key)
            .arg(HANDOVER_WINDOW.as_secs())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        if supersede.is_some() && (outcome != 1 || superseded.is_empty()) && outcome != 6 {
            // Left to the sweep if this fails: the answer does not depend on it.
            let _ = self.settle_unlisted(&mut conn, previous).await;
        }
        match outcome {
            1 => {}
            2 => {
                self.saw_blocked(device, true);
                return Ok(Renewal::Blocked);
            }
            3 => return Ok(Renewal::PreviousRevoked),
            4 => return Ok(Renewal::ProofUsed),
            5 => return Ok(Renewal::PreviousUnknown),
            6 => {
                let given = String::from_utf8(superseded)
                    .ok()
                    .and_then(|text| Handover::unpack(&text))
                    .ok_or_else(|| StoreError::Failed("a handover does not parse".into()))?;
                // The first attempt may have stopped between superseding the previous
                // certificate and listing it (the list is another slot): the retry lists
                // it at once, before the owed listing's poll would.
                self.settle_unlisted(&mut conn, previous).await?;
                return Ok(Renewal::AlreadyRenewed(given));
            }
            7 => return Ok(Renewal::PreviousRenewed),
            other => {
                return Err(StoreError::Failed(format!(
                    "the renew script answered {other}"
                )));
            }
        }
        let superseded = if superseded.is_empty() {
            None
        } else {
            let superseded = unpacked(*previous, &superseded)?;
            self.list_revoked(&mut conn, &superseded, true).await?;
            Some(superseded)
        };
        let written = [
            self.keys.certificates(slot),
            self.keys.revoked(),
            self.keys.revision(),
        ];
        self.wait_for_replicas(&mut conn, &written.each_ref().map(String::as_str))
            .await?;
        Ok(Renewal::Renewed { superseded })
    }

    async fn block(&self, device: &DeviceId, block: Block) -> Result<Block, StoreError> {
        self.replicas_ready(&[&self.keys.blocked(device)])?;
        let mut conn = self.conn().await?;
        let standing: Option<String> = redis::cmd("SET")
            .arg(self.keys.blocked(device))
            .arg(block.pack())
            .arg("NX")
            .arg("GET")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        self.wait_for_replicas(&mut conn, &[&self.keys.blocked(device)])
            .await?;
        self.saw_blocked(device, true);
        Ok(standing.as_deref().and_then(Block::unpack).unwrap_or(block))
    }

    async fn unblock(&self, device: &DeviceId) -> Result<bool, StoreError> {
        let keys = [self.keys.blocked(device), self.keys.unblocked(device)];
        let written = keys.each_ref().map(String::as_str);
        self.replicas_ready(&written)?;
        let mut conn = self.conn().await?;
        let removed: i64 = self
            .unblock_script
            .key(&keys[0])
            .key(&keys[1])
            .arg(unix_now())
            .arg(UNBLOCK_NOTE_SECS)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        self.wait_for_replicas(&mut conn, &written).await?;
        self.saw_blocked(device, false);
        Ok(removed == 1)
    }

    async fn blocked(&self, device: &DeviceId) -> Result<Option<Block>, StoreError> {
        let standing: Option<String> = redis::cmd("GET")
            .arg(self.keys.blocked(device))
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| self.fail(e))?;
        let block = standing.as_deref().and_then(Block::unpack);
        self.saw_blocked(device, block.is_some());
        Ok(block)
    }

    /// Lists what an interrupted revocation left unlisted first (see
    /// [`RedisStore::owe_listing`]): this is polled by every instance.
    async fn revision(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        // The revision is what the CRL polls: a debt that cannot be settled now must not
        // stop every CRL from following the revocations that can.
        if let Err(e) = self.list_owed(&mut conn).await {
            tracing::debug!(error = %e, "owed CRL listings wait for the next poll");
        }
        let revision: Option<u64> = redis::cmd("GET")
            .arg(self.keys.revision())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(revision.unwrap_or(0))
    }

    async fn revoked(&self) -> Result<RevokedList, StoreError> {
        self.read_revoked().await
    }

    async fn list_unrecorded(
        &self,
        entry: RevokedCertificate,
    ) -> Result<RevokedCertificate, StoreError> {
        self.list_without_record(entry).await
    }
}

/// One HSCAN reply: the next cursor, and field-value pairs.
type HashPage = (u64, Vec<(Vec<u8>, Vec<u8>)>);

impl RedisStore {
    /// Every record in one bucket, read with HSCAN on `conn` (on a cluster, any
    /// connection that reaches the bucket's node).
    pub(super) async fn bucket(
        &self,
        conn: &mut RedisConn,
        key: &str,
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        let (mut records, mut cursor) = (Vec::new(), 0u64);
        loop {
            let (next, fields): HashPage = redis::cmd("HSCAN")
                .arg(key)
                .arg(cursor)
                .arg("COUNT")
                .arg(SCAN_BATCH)
                .query_async(conn)
                .await
                .map_err(|e| self.fail(e))?;
            records.extend(fields.into_iter().filter_map(|(serial, packed)| {
                CertificateRecord::unpack(serial.as_slice().try_into().ok()?, &packed)
            }));
            if next == 0 {
                return Ok(records);
            }
            cursor = next;
        }
    }

    /// Puts back `block`, which Redis lost, unless the device is blocked already or was
    /// unblocked since the block was made. Answers whether a block stands now, and
    /// whether this put it back.
    pub async fn restore_block(
        &self,
        device: &DeviceId,
        block: Block,
    ) -> Result<(bool, bool), StoreError> {
        let keys = [self.keys.blocked(device), self.keys.unblocked(device)];
        let written = keys.each_ref().map(String::as_str);
        self.replicas_ready(&written)?;
        let mut conn = self.conn().await?;
        let answer: i64 = self
            .reblock_script
            .key(&keys[0])
            .key(&keys[1])
            .arg(block.pack())
            .arg(block.at)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        self.wait_for_replicas(&mut conn, &written).await?;
        if answer > 0 {
            self.saw_blocked(device, true);
        }
        Ok((answer > 0, answer == 1))
    }
}

/// How long Redis keeps the time of a device's last unblock (400 days). A block lifted
/// longer ago through an instance that keeps another certs directory can come back
/// when Redis loses writes: the safe side, and one more unblock.
const UNBLOCK_NOTE_SECS: u64 = 400 * 24 * 3600;

fn unpacked(serial: [u8; 16], packed: &[u8]) -> Result<CertificateRecord, StoreError> {
    CertificateRecord::unpack(serial, packed)
        .ok_or_else(|| StoreError::Failed("a certificate record does not parse".into()))
}

//! The [`TokenStore`] on Redis: issue replaces the device's pending token, consume uses
//! it once (recording the certificate in the same script).

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;

use super::super::topology::RedisConn;
use super::super::{
    ConsumeOutcome, Issued, RedisStats, StorageMode, StoreError, StoreStats, TokenFacts,
    TokenStore, replay_window,
};
use super::RedisStore;
use super::registry::PRUNE_ONE_IN;
use crate::clock::{CLOCK_LEEWAY_SECS, unix_now};
use crate::domain::{DeviceId, Jti};
use crate::registry::CertificateRecord;

/// Attempts at replacing a pending token before giving up. Each lost race means another
/// request re-onboarded the same device in between and won, so with N requests for one
/// device in flight, none needs more than N attempts.
const ISSUE_ATTEMPTS: usize = 32;

impl RedisStore {
    pub(super) fn record(device: &DeviceId, jti: &str, facts: &TokenFacts) -> String {
        serde_json::json!({
            "deviceId": device.as_str(),
            "jti": jti,
            "expiresAt": facts.expires_at,
            "group": facts.group,
            "epoch": facts.epoch,
        })
        .to_string()
    }

    pub(super) async fn try_consume(
        &self,
        conn: &mut RedisConn,
        device: &DeviceId,
        jti: &str,
        certificate: Option<&CertificateRecord>,
    ) -> Result<ConsumeOutcome, StoreError> {
        self.replicas_ready(&[&self.keys.device(device)])?;
        let mut invocation = self.consume_script.key(self.keys.device(device));
        invocation.key(self.keys.token(device, jti)).arg(jti);
        if let Some(certificate) = certificate {
            invocation.key(self.keys.blocked(device));
            // Now and then (by the serial's random last byte), the bucket is pruned.
            let prune = certificate.serial[15] % PRUNE_ONE_IN == 0;
            invocation
                .key(self.keys.certificate_of(&certificate.serial))
                .arg(&certificate.serial[..])
                .arg(certificate.pack())
                .arg(certificate.keep_until(self.config.retention_after_expiry))
                .arg(if prune { "1" } else { "0" })
                .arg(unix_now())
                .arg(self.config.retention_after_expiry);
        }
        let answer: i64 = invocation
            .invoke_async(conn)
            .await
            .map_err(|e| self.fail(e))?;
        match answer {
            1 => {
                self.wait_for_replicas(conn, &[&self.keys.device(device)])
                    .await?;
                Ok(ConsumeOutcome::Consumed)
            }
            2 => {
                self.saw_blocked(device, true);
                Ok(ConsumeOutcome::Blocked)
            }
            _ => Ok(ConsumeOutcome::NotFound),
        }
    }

    /// The device's pending token and its remaining TTL, if it has one.
    pub async fn pending_jti(
        &self,
        device: &DeviceId,
    ) -> Result<Option<(String, Duration)>, StoreError> {
        let (jti, ttl_ms): (Option<String>, i64) = redis::pipe()
            .get(self.keys.device(device))
            .pttl(self.keys.device(device))
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(jti.map(|jti| (jti, Duration::from_millis(ttl_ms.max(0) as u64))))
    }
}

#[async_trait]
impl TokenStore for RedisStore {
    async fn issue(
        &self,
        device: &DeviceId,
        jti: &Jti,
        ttl: Duration,
        facts: &TokenFacts,
    ) -> Result<Issued, StoreError> {
        let jti = jti.to_string();
        let ttl_secs = ttl.as_secs().max(1);
        let record = Self::record(device, &jti, facts);
        let (device_key, token_key) = (self.keys.device(device), self.keys.token(device, &jti));
        let blocked_key = self.keys.blocked(device);
        // Most devices have no pending token: one round trip. Replacing one takes two.
        let mut seen = String::new();
        for _ in 0..ISSUE_ATTEMPTS {
            let mut invocation = self.issue_script.key(&device_key);
            invocation.key(&token_key).key(&blocked_key);
            if !seen.is_empty() {
                invocation.key(self.keys.token(device, &seen));
            }
            let (issued, pending): (i64, String) = invocation
                .arg(&jti)
                .arg(ttl_secs)
                .arg(&record)
                .arg(&seen)
                .invoke_async(&mut self.conn().await?)
                .await
                .map_err(|e| self.fail(e))?;
            match issued {
                1 => return Ok(Issued::Issued),
                2 => {
                    self.saw_blocked(device, true);
                    return Ok(Issued::Blocked);
                }
                _ => {}
            }
            seen = pending;
        }
        Err(StoreError::Failed(format!(
            "device {device} is being onboarded by many requests at once"
        )))
    }

    async fn pending(&self, device: &DeviceId) -> Result<Option<(Jti, TokenFacts)>, StoreError> {
        let Some((jti, _)) = self.pending_jti(device).await? else {
            return Ok(None);
        };
        let record: Option<String> = redis::cmd("GET")
            .arg(self.keys.token(device, &jti))
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| self.fail(e))?;
        // Replaced or expired between the two reads: no token to find.
        let Some(record) = record else {
            return Ok(None);
        };
        Ok(parse_record(&record))
    }

    async fn consume(
        &self,
        device: &DeviceId,
        jti: &Jti,
        epoch: u64,
        certificate: Option<&CertificateRecord>,
    ) -> Result<ConsumeOutcome, StoreError> {
        // Connect first: the connection is what guarantees the loss check has run.
        let mut conn = self.conn().await?;
        if epoch < self.epoch() {
            return Ok(ConsumeOutcome::NotFound);
        }
        self.try_consume(&mut conn, device, &jti.to_string(), certificate)
            .await
    }

    async fn revoke_device(&self, device: &DeviceId) -> Result<bool, StoreError> {
        for _ in 0..ISSUE_ATTEMPTS {
            let Some((jti, _)) = self.pending_jti(device).await? else {
                return Ok(false);
            };
            if self
                .try_consume(&mut self.conn().await?, device, &jti, None)
                .await?
                == ConsumeOutcome::Consumed
            {
                return Ok(true);
            }
        }
        Err(StoreError::Failed(format!(
            "device {device} is being onboarded by many requests at once"
        )))
    }

    async fn first_use(
        &self,
        device: &DeviceId,
        ts: u64,
        skew: Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        // A proof for `ts` is accepted until ts + skew; one that may have been accepted
        // before the loss cannot be told from one that was not. Wait until it is too old.
        if let Some(lost) = self.lost_writes_at() {
            let unsure_until = lost + CLOCK_LEEWAY_SECS + skew.as_secs();
            if ts <= unsure_until {
                return Err(StoreError::Unsure {
                    retry_after: unsure_until + 1 - unix_now().min(unsure_until),
                });
            }
        }
        self.replicas_ready(&[&self.keys.nonce(device, ts)])?;
        let set: Option<String> = redis::cmd("SET")
            .arg(self.keys.nonce(device, ts))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(replay_window(skew).as_secs())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        if set.is_some() {
            self.wait_for_replicas(&mut conn, &[&self.keys.nonce(device, ts)])
                .await?;
        }
        Ok(set.is_some())
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    async fn stats(&self) -> StoreStats {
        StoreStats {
            mode: StorageMode::Redis,
            redis: Some(RedisStats {
                problem: self.problem(),
                shortfalls: self.shortfalls(),
                persistence: self.persistence(),
                connected: self.is_connected(),
                topology: self.topology(),
                counts: *self.counts.lock().unwrap_or_else(|p| p.into_inner()),
            }),
            memory_tokens: 0,
        }
    }
}

/// A token record's jti and facts; `None` for a record written before facts were kept
/// (a token from before an upgrade, good for 5 minutes), which only the JWT's own
/// doors take.
fn parse_record(record: &str) -> Option<(Jti, TokenFacts)> {
    let value: serde_json::Value = serde_json::from_str(record).ok()?;
    Some((
        Jti::parse(value.get("jti")?.as_str()?)?,
        TokenFacts {
            group: value.get("group")?.as_str()?.to_owned(),
            epoch: value.get("epoch")?.as_u64()?,
            expires_at: value.get("expiresAt")?.as_u64()?,
        },
    ))
}

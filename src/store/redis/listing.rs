//! The revoked list the CRL is built from: one sorted set of every instance's
//! revocations, its revision, and the listings a revocation still owes it.
//!
//! A certificate's record lives in its device's slot and the list in a slot of its own,
//! so on a cluster no script can change both. A revocation therefore first notes that a
//! listing is owed (`revoked:pending`), then revokes the record, then lists it and
//! settles the debt. An instance that dies between the record and the list leaves the
//! debt behind, and the next poll of any instance ([`RedisStore::list_owed`], run with
//! every revision check, every two seconds) finds the record revoked and lists it: a
//! revoked record reaches the CRL whether or not its request finished.

use super::super::topology::RedisConn;
use super::super::{CertificateRegistry, RevokedCertificate, RevokedList, StoreError};
use super::RedisStore;
use crate::clock::unix_now;
use crate::registry::{CertificateRecord, Reason, Revocation};

/// An owed listing older than this (seconds) is taken to be interrupted: its own request
/// would have listed it long before.
const OWED_AFTER_SECS: u64 = 30;

/// Owed listings settled per poll.
const OWED_PER_POLL: usize = 100;

impl RedisStore {
    /// Adds a revoked certificate to the CRL's list and moves the list's revision when
    /// the list changed (`revoked_now`, or an interrupted revocation being finished), so
    /// that every instance's CRL follows. The member carries what the CRL needs
    /// ([`listed_member`]), so that the list is read in one command, whatever its length.
    pub(super) async fn list_revoked(
        &self,
        conn: &mut RedisConn,
        record: &CertificateRecord,
        revoked_now: bool,
    ) -> Result<(), StoreError> {
        let Some(revocation) = record.revocation else {
            return Err(StoreError::Failed(
                "a record listed as revoked carries no revocation".into(),
            ));
        };
        self.list(
            conn,
            &RevokedCertificate {
                serial: record.serial,
                revocation,
                not_after: record.not_after,
            },
            revoked_now,
        )
        .await?;
        self.settle_listing(conn, &record.serial).await;
        Ok(())
    }

    async fn list(
        &self,
        conn: &mut RedisConn,
        entry: &RevokedCertificate,
        changed: bool,
    ) -> Result<(), StoreError> {
        let listed: i64 = redis::cmd("ZADD")
            .arg(self.keys.revoked())
            .arg(entry.not_after)
            .arg(listed_member(&entry.serial, entry.revocation))
            .query_async(conn)
            .await
            .map_err(|e| self.fail(e))?;
        if changed || listed == 1 {
            self.advance_script
                .key(self.keys.revision())
                .arg(crate::clock::unix_now_ms())
                .invoke_async::<()>(conn)
                .await
                .map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    /// Notes, before a step that may revoke `serial`'s record, that the CRL's list is owed
    /// its listing (see the module's docs).
    pub(super) async fn owe_listing(
        &self,
        conn: &mut RedisConn,
        serial: &[u8; 16],
    ) -> Result<(), StoreError> {
        self.owe_script
            .key(self.keys.owed_listings())
            .arg(hex::encode_upper(serial))
            .invoke_async::<()>(conn)
            .await
            .map_err(|e| self.fail(e))
    }

    /// The listing is made: the debt goes. A failure here only leaves the debt to
    /// [`RedisStore::list_owed`], which settles it the same way.
    async fn settle_listing(&self, conn: &mut RedisConn, serial: &[u8; 16]) {
        let _: Result<(), _> = redis::cmd("ZREM")
            .arg(self.keys.owed_listings())
            .arg(hex::encode_upper(serial))
            .query_async(conn)
            .await;
    }

    /// A step that owed `serial`'s listing ended without listing it (it refused, or
    /// revoked nothing). The debt is one member per serial, which another request's step
    /// may share: so the record decides, as the sweep does. Revoked, it is listed (by
    /// whichever step revoked it); otherwise the debt goes.
    pub(super) async fn settle_unlisted(
        &self,
        conn: &mut RedisConn,
        serial: &[u8; 16],
    ) -> Result<(), StoreError> {
        match self.record_on(conn, serial).await? {
            Some(record) if record.revocation.is_some() => {
                self.list_revoked(conn, &record, false).await
            }
            _ => {
                self.settle_listing(conn, serial).await;
                Ok(())
            }
        }
    }

    /// Lists the revoked records whose revocation was interrupted before its listing, and
    /// drops debts whose record was never revoked (the step refused, or never ran). A
    /// debt that cannot be settled now (its shard does not answer) is left for the next
    /// poll and does not hold up the others.
    pub(super) async fn list_owed(&self, conn: &mut RedisConn) -> Result<(), StoreError> {
        let owed: Vec<String> = self
            .owed_script
            .key(self.keys.owed_listings())
            .arg(OWED_AFTER_SECS)
            .arg(OWED_PER_POLL)
            .invoke_async(conn)
            .await
            .map_err(|e| self.fail(e))?;
        for member in owed {
            let Some(serial) = crate::registry::parse_serial(&member) else {
                let _: Result<(), _> = redis::cmd("ZREM")
                    .arg(self.keys.owed_listings())
                    .arg(&member)
                    .query_async(conn)
                    .await;
                continue;
            };
            if let Err(e) = self.settle_unlisted(conn, &serial).await {
                tracing::warn!(serial = %member, error = %e, "an owed CRL listing waits for the next poll");
            }
        }
        Ok(())
    }

    /// Lists a serial the registry holds no record of (a certificate the CA signed
    /// elsewhere, or before the registry, and lost since), until `entry.not_after`. The
    /// listing is also kept by serial (`<prefix>listed:{<serial>}`, first one wins), so
    /// that a record of that serial written later (an import, an outage's record) comes
    /// back revoked. A serial listed before keeps its first revocation: that one is
    /// answered.
    pub(super) async fn list_without_record(
        &self,
        entry: RevokedCertificate,
    ) -> Result<RevokedCertificate, StoreError> {
        let listed_key = self.keys.listed(&entry.serial);
        self.replicas_ready(&[&listed_key, &self.keys.revoked(), &self.keys.revision()])?;
        let mut conn = self.conn().await?;
        let standing: Option<String> = redis::cmd("SET")
            .arg(&listed_key)
            .arg(format!(
                "{}:{}",
                entry.revocation.at,
                entry.revocation.reason.code()
            ))
            .arg("NX")
            .arg("GET")
            .arg("EXAT")
            .arg(entry.not_after)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        let entry = match standing.as_deref().and_then(parse_listing) {
            Some(revocation) => RevokedCertificate {
                revocation,
                ..entry
            },
            None => entry,
        };
        // Listed again (a retry) or new: the list gets it either way, idempotently.
        self.list(&mut conn, &entry, standing.is_none()).await?;
        // A record of this serial written meanwhile did not see the listing: revoke it
        // here. (Each side writes its key, then reads the other's: one of them sees both.)
        if let Some(record) = self.record_on(&mut conn, &entry.serial).await?
            && record.revocation.is_none()
        {
            CertificateRegistry::revoke(self, &entry.serial, entry.revocation).await?;
        }
        let written = [listed_key, self.keys.revoked(), self.keys.revision()];
        self.wait_for_replicas(&mut conn, &written.each_ref().map(String::as_str))
            .await?;
        Ok(entry)
    }

    /// The listing of `serial` made without a record, if there is one.
    pub(super) async fn bare_listing(
        &self,
        conn: &mut RedisConn,
        serial: &[u8; 16],
    ) -> Result<Option<Revocation>, StoreError> {
        let listed: Option<String> = redis::cmd("GET")
            .arg(self.keys.listed(serial))
            .query_async(conn)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(listed.as_deref().and_then(parse_listing))
    }

    /// The revoked list, pruned of expired certificates.
    pub(super) async fn read_revoked(&self) -> Result<RevokedList, StoreError> {
        let mut conn = self.conn().await?;
        let now = unix_now();
        // One command per key, none in a pipeline: on a cluster they live in different
        // slots. This runs only when the list changed or a CRL slot began.
        let revision: Option<u64> = redis::cmd("GET")
            .arg(self.keys.revision())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        let members: Vec<(String, u64)> = redis::cmd("ZRANGE")
            .arg(self.keys.revoked())
            .arg(now)
            .arg("+inf")
            .arg("BYSCORE")
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        let _: Result<(), _> = redis::cmd("ZREMRANGEBYSCORE")
            .arg(self.keys.revoked())
            .arg("-inf")
            .arg(format!("({now}"))
            .query_async(&mut conn)
            .await;
        let mut entries = Vec::with_capacity(members.len());
        // A serial listed in the old form and again in the new (revoked again since) is
        // one entry.
        let mut seen = std::collections::HashSet::with_capacity(members.len());
        for (member, not_after) in members {
            if let Some((serial, revocation)) = parse_listed_member(&member) {
                if seen.insert(serial) {
                    entries.push(RevokedCertificate {
                        serial,
                        revocation,
                        not_after,
                    });
                }
                continue;
            }
            // A member listed before members carried the revocation: its record says it.
            let Some(serial) =
                crate::registry::parse_serial(&member).filter(|serial| !seen.contains(serial))
            else {
                continue;
            };
            if let Some(record) = self.record_on(&mut conn, &serial).await?
                && let Some(revocation) = record.revocation
                && seen.insert(serial)
            {
                entries.push(RevokedCertificate {
                    serial,
                    revocation,
                    not_after: record.not_after,
                });
            }
        }
        Ok(RevokedList {
            revision: revision.unwrap_or(0),
            entries,
        })
    }
}

/// A revoked list member: `<serial hex>:<revoked at, unix s>:<reason code>`. A
/// revocation never changes once made, so the member of a serial never does either.
fn listed_member(serial: &[u8; 16], revocation: Revocation) -> String {
    format!(
        "{}:{}:{}",
        hex::encode_upper(serial),
        revocation.at,
        revocation.reason.code()
    )
}

/// A bare listing's value: `<revoked at, unix s>:<reason code>`.
fn parse_listing(value: &str) -> Option<Revocation> {
    let (at, code) = value.split_once(':')?;
    Some(Revocation {
        at: at.parse().ok()?,
        reason: Reason::from_code(code.parse().ok()?)?,
    })
}

fn parse_listed_member(member: &str) -> Option<([u8; 16], Revocation)> {
    let mut parts = member.split(':');
    let serial = crate::registry::parse_serial(parts.next()?)?;
    let at = parts.next()?.parse().ok()?;
    let reason = Reason::from_code(parts.next()?.parse().ok()?)?;
    parts
        .next()
        .is_none()
        .then_some((serial, Revocation { at, reason }))
}

//! Revoking: the registry first, then the audit and metrics, then the CRL of this
//! instance (the others follow the revoked list's revision within two seconds). And
//! importing, so that what the CA signed outside the registry can be revoked and renewed.

use std::collections::HashSet;
use std::time::Duration;

use super::{Lifecycle, storage_error};
use crate::audit::Actor;
use crate::crypto::sha256;
use crate::domain::DeviceId;
use crate::error::ApiError;
use crate::metrics::{ReasonLabel, key_type_label};
use crate::registry::{CertificateRecord, Reason, Revocation};
use crate::store::{CertificateRegistry, RevokedCertificate, StoreError};

/// What [`Lifecycle::revoke_serial`] put on the CRL.
pub enum Listing {
    /// The registry's record, revoked (or revoked before).
    Recorded(CertificateRecord),
    /// A serial the registry holds no record of, listed on its own (or listed before).
    Unrecorded(RevokedCertificate),
}

/// How long a revoking request waits for this instance's new CRL.
pub const CRL_WAIT: Duration = Duration::from_millis(250);

impl Lifecycle {
    /// Revokes the certificate with `serial`; `Ok(None)` when the registry does not know
    /// it. Revoking again leaves the first revocation standing and answers it. For
    /// `keyCompromise`, the certificates it was renewed into are revoked too, down the
    /// chain: whoever held the key could have renewed it. The CRL is not refreshed here,
    /// so that revoking many certificates re-signs it once: call
    /// [`Lifecycle::refresh_crl`] after.
    pub async fn revoke(
        &self,
        serial: &[u8; 16],
        revocation: Revocation,
        who: &Actor,
    ) -> Result<Option<CertificateRecord>, StoreError> {
        let record = self.store.revoke(serial, revocation).await?;
        let Some(first) = &record else {
            return Ok(None);
        };
        self.note_revocation(first, first.revocation == Some(revocation), who);
        if revocation.reason == Reason::KeyCompromise {
            let mut seen = HashSet::from([*serial]);
            let mut next = self.store.successor_of(serial).await?;
            while let Some(successor) = next.filter(|s| seen.insert(*s)) {
                if let Some(revoked) = self.store.revoke(&successor, revocation).await? {
                    let now = revoked.revocation == Some(revocation);
                    self.note_revocation(&revoked, now, who);
                }
                next = self.store.successor_of(&successor).await?;
            }
        }
        Ok(record)
    }

    /// Puts `serial` on the CRL although the registry may hold no certificate of it
    /// (RFC 5280 §5.3: an entry needs only the serial): one the CA signed elsewhere or
    /// before the registry, whose certificate is lost. A serial the registry knows is
    /// revoked through its record, as [`Lifecycle::revoke`] does. An unrecorded serial
    /// is listed until the CA certificate's notAfter, since its own is unknown; importing
    /// its certificate later gives a revoked record. The CRL is not refreshed here.
    pub async fn revoke_serial(
        &self,
        serial: &[u8; 16],
        revocation: Revocation,
        who: &Actor,
    ) -> Result<Listing, StoreError> {
        if let Some(record) = self.revoke(serial, revocation, who).await? {
            return Ok(Listing::Recorded(record));
        }
        let entry = RevokedCertificate {
            serial: *serial,
            revocation,
            not_after: self.issuers.not_after().unix_timestamp().max(0) as u64,
        };
        let standing = self.store.list_unrecorded(entry).await?;
        if standing == entry {
            self.metrics
                .certificates_revoked
                .get_or_create(&ReasonLabel {
                    reason: revocation.reason.as_str(),
                })
                .inc();
        }
        self.audit.serial_listed(
            &hex::encode_upper(serial),
            standing.revocation.reason.as_str(),
            standing == entry,
            who,
        );
        Ok(Listing::Unrecorded(standing))
    }

    /// Records a device certificate this CA signed that the registry does not know (made
    /// before the registry, or by the CA's key elsewhere), so that it can be revoked and
    /// renewed; a record already there stands. Answers the record and whether it is new.
    /// A claim certificate ([`crate::ca::claim`]) is recorded too, under its common name
    /// `claim:<group>` and in that group.
    ///
    /// Errors: 400 `invalid_certificate` (not ours, neither a device certificate nor a
    /// claim, a common name that is no device id), 503 `storage_unavailable`.
    pub async fn import(
        &self,
        der: &[u8],
        who: &Actor,
    ) -> Result<(CertificateRecord, bool), ApiError> {
        let (presented, group) = match self.issuers.check_presented(der) {
            Ok(presented) => (presented, crate::registry::DEFAULT_GROUP.to_owned()),
            Err(not_a_device) => {
                let claim = self
                    .issuers
                    .check_claim(der)
                    .map_err(|_| ApiError::InvalidCertificate(not_a_device.into()))?;
                let group = claim
                    .common_name
                    .strip_prefix(crate::ca::claim::CLAIM_PREFIX)
                    .ok_or_else(|| {
                        ApiError::InvalidCertificate(
                            "a claim's common name is claim:<group>".into(),
                        )
                    })?
                    .to_owned();
                (claim, group)
            }
        };
        let device_id = DeviceId::parse_new(&presented.common_name).map_err(|e| {
            ApiError::InvalidCertificate(format!("its common name is no device id: {e}"))
        })?;
        if presented.not_after > u64::from(u32::MAX) {
            return Err(ApiError::InvalidCertificate(
                "its notAfter is past 2106, which the registry cannot hold".into(),
            ));
        }
        let record = CertificateRecord {
            serial: presented.serial,
            device_id,
            issued_at: presented.not_before,
            not_after: presented.not_after,
            key_type: key_type_label(presented.key_type),
            fingerprint_sha256: sha256(der),
            revocation: None,
            // Whatever issued it, an imported device certificate renews under `default`.
            group,
        };
        let known = self
            .store
            .certificate(&record.serial)
            .await
            .map_err(storage_error)?;
        let (mut standing, new) = match known {
            Some(known) => (known, false),
            None => (
                self.store.import(&record).await.map_err(storage_error)?,
                true,
            ),
        };
        // A revocation the store lost but the CRL still lists (Redis restarted without
        // persistence) comes back with the record: importing never un-revokes.
        if standing.revocation.is_none()
            && let Some(listed) = self.crl.listed_revocation(&record.serial)
        {
            standing = self
                .revoke(&record.serial, listed, who)
                .await
                .map_err(storage_error)?
                .unwrap_or(standing);
            self.refresh_crl().await;
        }
        self.audit
            .certificate_imported(&record.device_id, &record.serial_hex(), new, who);
        Ok((standing, new))
    }

    /// Counts and audits a revocation; `first` when this request made it.
    pub(super) fn note_revocation(&self, record: &CertificateRecord, first: bool, who: &Actor) {
        let Some(applied) = record.revocation else {
            return;
        };
        if first {
            self.metrics
                .certificates_revoked
                .get_or_create(&ReasonLabel {
                    reason: applied.reason.as_str(),
                })
                .inc();
        }
        self.audit.certificate_revoked(
            &record.device_id,
            &record.serial_hex(),
            applied.reason.as_str(),
            first,
            who,
        );
    }

    /// This instance's CRL at once; the others' at their next look (two seconds). The
    /// answer waits [`CRL_WAIT`] at most: a list long enough to take longer (100,000
    /// entries take about 300 ms) is signed in the background, never on the request.
    pub async fn refresh_crl(&self) {
        let crl = self.crl.clone();
        let signing = tokio::spawn(async move { crl.refresh().await });
        match tokio::time::timeout(CRL_WAIT, signing).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "the CRL will list the revocation at the next refresh");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "the CRL refresh failed"),
            Err(_) => tracing::debug!("the CRL is still being signed; it follows shortly"),
        }
    }
}

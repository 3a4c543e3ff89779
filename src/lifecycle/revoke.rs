//! Revoking: the registry first, then the audit and metrics, then the CRL of this
//! instance (the others follow the revoked list's revision within two seconds).

use std::net::IpAddr;

use super::Lifecycle;
use crate::metrics::ReasonLabel;
use crate::registry::{CertificateRecord, Revocation};
use crate::store::{CertificateRegistry, StoreError};

impl Lifecycle {
    /// Revokes the certificate with `serial`; `Ok(None)` when the registry does not know
    /// it. Revoking again leaves the first revocation standing and answers it. The CRL is
    /// not refreshed here, so that revoking many certificates re-signs it once: call
    /// [`Lifecycle::refresh_crl`] after.
    pub async fn revoke(
        &self,
        serial: &[u8; 16],
        revocation: Revocation,
        client: Option<IpAddr>,
    ) -> Result<Option<CertificateRecord>, StoreError> {
        let record = self.store.revoke(serial, revocation).await?;
        if let Some(record) = &record {
            self.note_revocation(record, record.revocation == Some(revocation), client);
        }
        Ok(record)
    }

    /// Counts and audits a revocation; `first` when this request made it.
    pub(super) fn note_revocation(
        &self,
        record: &CertificateRecord,
        first: bool,
        client: Option<IpAddr>,
    ) {
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
            client,
        );
    }

    /// This instance's CRL at once; the others' at their next look (two seconds).
    pub async fn refresh_crl(&self) {
        if let Err(e) = self.crl.refresh().await {
            tracing::warn!(error = %e, "the CRL will list the revocation at the next refresh");
        }
    }
}

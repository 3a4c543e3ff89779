//! Issuing: sign around the device's key, consume the credential and record the
//! certificate in one store step, then audit and count.

use std::net::IpAddr;
use std::sync::Arc;

use time::OffsetDateTime;

use super::{Lifecycle, storage_error};
use crate::activity::Happened;
use crate::audit::Actor;
use crate::auth::renewal::csr_key_of;
use crate::ca::{
    CertProfile, CertificateAuthority, CheckedRequest, DeliveredDer, DevicePublicKey,
    IssuedCertificate, NameOverrides,
};
use crate::clock::unix_now;
use crate::domain::{DeviceId, Jti};
use crate::error::ApiError;
use crate::groups::Group;
use crate::hook::Verdict;
use crate::metrics::{GroupLabel, KeyTypeLabel, key_type_label};
use crate::registry::{CertificateRecord, Reason, Revocation, slots};
use crate::request_facts;
use crate::store::{CertificateRegistry, ConsumeOutcome, Handover, ProofUse, Renewal, TokenStore};

/// A certificate that left the server: recorded, audited and counted.
pub struct Certified {
    /// The device certificate, PEM, followed by the intermediates up to the root when
    /// the CA has one (two-tier).
    pub pem: String,
    /// The trust anchor, PEM: the root of a two-tier CA, or the whole CA chain.
    pub chain_pem: String,
    /// The device certificate alone, DER.
    pub der: Vec<u8>,
    /// What follows it in `pem`, and `chain_pem`, DER: for the doors that answer in DER
    /// (EST, CMP), so that none parses the PEM it was just given.
    pub chain_der: DeliveredDer,
    /// Upper-case hex, as `openssl x509 -serial` prints it.
    pub serial_hex: String,
    pub not_after: OffsetDateTime,
}

/// A request its group's policy and pre-issuance hook allowed, and what the certificate
/// will say (the group's profile filled in, the hook's overrides applied):
/// [`Lifecycle::enroll`] and [`Lifecycle::renew`] take one, so no door can sign without
/// [`Lifecycle::vet`].
pub struct Vetted {
    /// The group's issuer.
    issuer: Arc<CertificateAuthority>,
    validity: time::Duration,
    profile: CertProfile,
    group: String,
}

/// A renewal the door has authenticated: the certificate presented and how.
pub struct Renewing<'a> {
    pub device: &'a DeviceId,
    /// The serial of the certificate being replaced.
    pub previous: [u8; 16],
    /// The renewal proof's single use (`None` when the proof was the TLS handshake).
    pub proof: Option<ProofUse>,
    /// How the door authenticated (`jwt`, `mtls`), for the audit.
    pub proof_kind: &'static str,
}

impl Lifecycle {
    /// Fills in `group`'s certificate profile for `device` and asks the group's
    /// pre-issuance hook, when it has one, about the `request` (already checked). Runs before any credential is used: a refusal here
    /// burns nothing.
    ///
    /// Errors: 422 `csr_policy_violation` (the profile makes a value its field does not
    /// take for this id), 403 `hook_denied` (with the hook's reason), 503
    /// `hook_unavailable`.
    pub async fn vet(
        &self,
        group: &Group,
        device: &DeviceId,
        renewal: bool,
        request: &CheckedRequest<'_>,
        protocol: &'static str,
        client: Option<IpAddr>,
    ) -> Result<Vetted, ApiError> {
        let profile = group
            .profile
            .render(device, &group.name, &NameOverrides::default())?;
        let issuer = self.issuers.get(&group.issuer).cloned().ok_or_else(|| {
            anyhow::anyhow!(
                "group `{}` names issuer `{}`, which is not loaded",
                group.name,
                group.issuer
            )
        })?;
        let mut vetted = Vetted {
            issuer,
            validity: group.validity(),
            profile,
            group: group.name.to_string(),
        };
        let Some(hook) = &group.hook else {
            return Ok(vetted);
        };
        let facts = request.facts();
        let key_type = key_type_label(request.key.key_type());
        let verdict = hook
            .ask(
                device,
                &group.name,
                renewal,
                (key_type, &facts),
                (protocol, client),
                &self.metrics,
            )
            .await;
        let audit = |decision, detail: &str| {
            self.audit
                .hook_decided(device, &group.name, decision, detail, client);
        };
        match verdict {
            Ok(Verdict::Allow {
                validity_days,
                names,
            }) => {
                let detail = validity_days.map_or_else(String::new, |d| format!("{d} days"));
                if names.san_dns.is_some() || names.san_uris.is_some() {
                    vetted.profile = group.profile.render(device, &group.name, &names)?;
                }
                audit("allow", &detail);
                if let Some(days) = validity_days {
                    vetted.validity = time::Duration::days(days.into());
                }
                Ok(vetted)
            }
            Ok(Verdict::Deny(reason)) => {
                audit("deny", &reason);
                Err(ApiError::HookDenied(reason))
            }
            Ok(Verdict::SignedWithoutAnswer(why)) => {
                audit("error", &format!("{why}; signed: on_error = allow"));
                Ok(vetted)
            }
            Err(e) => {
                audit("error", &e.to_string());
                Err(e)
            }
        }
    }

    /// Trades a provisioning token (`jti`, issued in store `epoch`) for a certificate
    /// around `key`. Several requests with one token may sign, but the consume lets one
    /// through, on any instance; the others' certificates are dropped unseen.
    ///
    /// Errors: 401 `token_used` when the token is used, replaced or revoked; 403
    /// `device_blocked` when the device was blocked after its token was issued; 503
    /// `storage_unavailable` when no store can answer.
    pub async fn enroll(
        &self,
        device: &DeviceId,
        jti: &Jti,
        epoch: u64,
        key: &DevicePublicKey,
        vetted: Vetted,
        client: Option<IpAddr>,
    ) -> Result<Certified, ApiError> {
        let (cert, record, issuer) = self.certify(device, key, vetted)?;
        match self
            .store
            .consume(device, jti, epoch, Some(&record))
            .await
            .map_err(storage_error)?
        {
            ConsumeOutcome::Consumed => {}
            ConsumeOutcome::NotFound => return Err(ApiError::TokenUsed),
            ConsumeOutcome::Blocked => return Err(ApiError::DeviceBlocked),
        }
        self.metrics.tokens_consumed.inc();
        self.audit.token_consumed(device, jti, client);
        Ok(self.hand_out(cert, &record, &issuer, Some(jti), client))
    }

    /// Replaces the certificate `renewing.previous` with one around `key`: the proof's
    /// single use, the block and revocation checks, the new record and (with
    /// `revoke_previous`) the old one's supersession are one store step. A certificate
    /// renews once: a retry for the same key within [`crate::store::HANDOVER_WINDOW`] gets the same
    /// successor again (its first answer may have been lost), anything later is refused.
    ///
    /// Errors: 403 `device_blocked`, 403 `certificate_revoked`, 403 `certificate_unknown`
    /// (the registry holds no record of it for this device), 403 `certificate_superseded`
    /// (renewed before), 401 `renewal_proof_invalid` for a proof used before, 503
    /// `storage_unavailable`.
    pub async fn renew(
        &self,
        renewing: Renewing<'_>,
        key: &DevicePublicKey,
        vetted: Vetted,
        client: Option<IpAddr>,
    ) -> Result<Certified, ApiError> {
        let device = renewing.device;
        let (cert, record, issuer) = self.certify(device, key, vetted)?;
        let supersede = self.revoke_previous.then_some(Revocation {
            at: record.issued_at,
            reason: Reason::Superseded,
        });
        let handover = Handover {
            serial: record.serial,
            not_after: record.not_after,
            pem: cert.pem.clone(),
            csr_key: csr_key_of(key),
        };
        let renewal = self
            .store
            .renew(
                &renewing.previous,
                renewing.proof,
                &record,
                &handover,
                supersede,
            )
            .await
            .map_err(storage_error)?;
        let superseded = match renewal {
            Renewal::Renewed { superseded } => superseded,
            Renewal::AlreadyRenewed(given) => {
                let serial_hex = hex::encode_upper(given.serial);
                request_facts::note(|facts| facts.serial = Some(serial_hex.clone()));
                tracing::info!(serial = %serial_hex, "renewed before for this key: the same certificate again");
                // Its issuer, which a SIGHUP since may have taken off the group.
                // Unreadable (it never is: the store kept what was issued), it is handed
                // over as it is, and the doors that answer in DER refuse it.
                let der = pem::parse(&given.pem)
                    .map(pem::Pem::into_contents)
                    .unwrap_or_default();
                let issuer = self
                    .issuers
                    .issuer_of(&der)
                    .cloned()
                    .unwrap_or_else(|| issuer.clone());
                let (pem, chain_pem) = issuer.delivered(&given.pem);
                return Ok(Certified {
                    pem,
                    chain_pem,
                    der,
                    chain_der: issuer.delivered_der(),
                    serial_hex,
                    not_after: OffsetDateTime::from_unix_timestamp(given.not_after as i64)
                        .map_err(|e| anyhow::anyhow!("a handover's notAfter: {e}"))?,
                });
            }
            Renewal::PreviousRenewed => return Err(ApiError::CertificateSuperseded),
            Renewal::Blocked => return Err(ApiError::DeviceBlocked),
            Renewal::PreviousRevoked => return Err(ApiError::CertificateRevoked),
            Renewal::PreviousUnknown => return Err(ApiError::CertificateUnknown),
            Renewal::ProofUsed => {
                return Err(ApiError::RenewalProofInvalid(
                    "this proof was used already; sign a new one (new jti and iat)".into(),
                ));
            }
        };
        self.metrics.certificates_renewed.inc();
        self.audit.certificate_renewed(
            device,
            &hex::encode_upper(renewing.previous),
            &cert.serial_hex,
            renewing.proof_kind,
            client,
        );
        if let Some(superseded) = superseded {
            self.note_revocation(&superseded, true, &Actor::client(client));
            self.refresh_crl().await;
        }
        Ok(self.hand_out(cert, &record, &issuer, None, client))
    }

    /// Signs a certificate for `device` around `key`, and the record that goes with it.
    /// The serial carries the device's slot, so that the record is found from the serial
    /// alone.
    fn certify(
        &self,
        device: &DeviceId,
        key: &DevicePublicKey,
        vetted: Vetted,
    ) -> Result<
        (
            IssuedCertificate,
            CertificateRecord,
            Arc<CertificateAuthority>,
        ),
        ApiError,
    > {
        let serial = slots::serial_in(slots::slot_of(device.as_str()));
        let cert = vetted
            .issuer
            .issue(key, &serial, &vetted.profile, vetted.validity)
            .map_err(|e| match e {
                rcgen::Error::RemoteKeyError => ApiError::CaUnavailable,
                e => anyhow::anyhow!("signing failed: {e}").into(),
            })?;
        let record = CertificateRecord {
            serial,
            device_id: device.clone(),
            issued_at: unix_now(),
            not_after: cert.not_after.unix_timestamp().max(0) as u64,
            key_type: key_type_label(key.key_type()),
            fingerprint_sha256: cert.fingerprint_sha256,
            revocation: None,
            group: vetted.group,
        };
        Ok((cert, record, vetted.issuer))
    }

    /// A recorded certificate on its way out: audit, metrics, and what the door sends.
    fn hand_out(
        &self,
        cert: IssuedCertificate,
        record: &CertificateRecord,
        issuer: &CertificateAuthority,
        jti: Option<&Jti>,
        client: Option<IpAddr>,
    ) -> Certified {
        request_facts::note(|facts| {
            facts.serial = Some(cert.serial_hex.clone());
            facts.key_type = Some(record.key_type);
        });
        self.audit.certificate_issued(record, jti, client);
        self.metrics
            .group_certificates_issued
            .get_or_create(&GroupLabel {
                group: record.group.clone(),
            })
            .inc();
        self.metrics
            .certificates_issued
            .get_or_create(&KeyTypeLabel {
                key_type: record.key_type,
            })
            .inc();
        self.activity.count(Happened::CertificateIssued);
        let (pem, chain_pem) = issuer.delivered(&cert.pem);
        Certified {
            pem,
            chain_pem,
            der: cert.der,
            chain_der: issuer.delivered_der(),
            serial_hex: cert.serial_hex,
            not_after: cert.not_after,
        }
    }
}

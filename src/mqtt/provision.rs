//! What the provisioning topics do, over the issuing path every door shares
//! ([`crate::lifecycle`]).
//!
//! The certificate is issued at CreateCertificateFromCsr (or CreateKeysAndCertificate),
//! because that answer is where AWS's SDK, and firmware built on it, takes the device's
//! certificate from. The device id must therefore be known then: the CSR's subject CN,
//! else the MQTT client id. RegisterThing's template must make the same id from its
//! parameters; the ownership token it carries is a JWT (its own audience, so no other
//! door takes it) whose jti is the certificate's serial and which the token store holds as
//! the device's pending token for an hour: used once, and a certificate whose token is
//! still unused after the hour is revoked.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::ResponseError;
use actix_web::web::Data;

use super::payload::{CertificateCreated, Rejected, ThingRegistered};
use super::unregistered::{MAX_PER_CLAIM, Unregistered, revoke};
use crate::api::AppState;
use crate::audit::Actor;
use crate::ca::claim::CLAIM_PREFIX;
use crate::ca::{CertRequest, PresentedCertificate, csr_common_name, server_key};
use crate::clock::unix_now;
use crate::domain::{DeviceId, Jti};
use crate::error::ApiError;
use crate::hook::Verdict;
use crate::lifecycle::storage_error;
use crate::store::{CertificateRegistry, ConsumeOutcome, Issued, TokenFacts, TokenStore};
use crate::token::TokenService;

/// How long an ownership token is good for (AWS: one hour).
pub const OWNERSHIP_TTL: Duration = Duration::from_secs(3600);
/// The store keeps an ownership token this much longer than its JWT lives, so that the
/// sweep that follows its expiry still finds it unused.
const SWEEP_MARGIN: Duration = Duration::from_secs(120);

/// A refusal, as `/rejected` says it.
#[derive(Debug)]
pub struct Rejection(pub Rejected);

impl Rejection {
    fn new(status_code: u16, error_code: &'static str, message: impl Into<String>) -> Self {
        Self(Rejected {
            status_code,
            error_code,
            error_message: message.into(),
        })
    }

    pub fn invalid_payload(message: String) -> Self {
        Self::new(400, "invalid_payload", message)
    }
}

impl From<ApiError> for Rejection {
    fn from(e: ApiError) -> Self {
        Self::new(e.status_code().as_u16(), e.code(), e.to_string())
    }
}

/// The claim a connection authenticated with: its serial, group and notAfter (unix s).
#[derive(Debug, Clone)]
pub struct Claim {
    pub serial: [u8; 16],
    pub group: Arc<str>,
    pub not_after: u64,
}

/// Provisioning over MQTT: the API's state, the ownership tokens' own service, and the
/// certificates created here and not registered yet.
pub struct Provisioner {
    pub state: Data<AppState>,
    ownership: TokenService,
    unregistered: Unregistered,
}

impl Provisioner {
    pub fn new(state: Data<AppState>, ownership: TokenService) -> Self {
        Self {
            state,
            ownership,
            unregistered: Unregistered::default(),
        }
    }

    /// The claim of an open connection, again before each request: a claim revoked or
    /// expired since the CONNECT stops working at once, not at the next connection.
    ///
    /// Errors: 403 `claim_revoked`, 403 `claim_expired`, 503 `storage_unavailable`.
    async fn still_good(&self, claim: &Claim) -> Result<(), Rejection> {
        if unix_now() > claim.not_after {
            return Err(Rejection::new(
                403,
                "claim_expired",
                "the claim certificate has expired",
            ));
        }
        let record = self
            .state
            .store
            .certificate(&claim.serial)
            .await
            .map_err(storage_error)?;
        let revoked = record.is_none_or(|r| r.revocation.is_some())
            || self.state.crl.listed_revocation(&claim.serial).is_some();
        if revoked {
            return Err(Rejection::new(
                403,
                "claim_revoked",
                "the claim certificate is revoked",
            ));
        }
        Ok(())
    }

    /// Whether the claim `der`, read as `presented` (its TLS handshake verified it), may
    /// connect now: recorded (at its first connection, when no operator imported it
    /// before), not revoked, its group configured.
    ///
    /// Errors: `claim_revoked`, `claim_group_unknown`, or `storage` when the registry
    /// cannot answer: each a metric reason.
    pub async fn admit(
        &self,
        der: &[u8],
        presented: &PresentedCertificate,
    ) -> Result<Claim, &'static str> {
        let group = presented
            .common_name
            .strip_prefix(CLAIM_PREFIX)
            .filter(|g| self.state.groups.current().get(g).is_some())
            .ok_or("claim_group_unknown")?;
        // The handshake checked the dates too; this holds whatever TLS did.
        let now = unix_now();
        if now < presented.not_before || now > presented.not_after {
            return Err("claim_expired");
        }
        let record = match self.state.store.certificate(&presented.serial).await {
            Ok(Some(record)) => record,
            // `claim create` signs offline, with no server to tell.
            Ok(None) => match self.state.lifecycle.import(der, &Actor::default()).await {
                Ok((record, _)) => record,
                Err(ApiError::InvalidCertificate(_)) => return Err("handshake"),
                Err(_) => return Err("storage"),
            },
            Err(_) => return Err("storage"),
        };
        let listed = self
            .state
            .crl
            .listed_revocation(&presented.serial)
            .is_some();
        // A recorded serial with another fingerprint is not the recorded certificate.
        if record.revocation.is_some()
            || listed
            || record.fingerprint_sha256 != presented.fingerprint_sha256
        {
            return Err("claim_revoked");
        }
        Ok(Claim {
            serial: presented.serial,
            group: group.into(),
            not_after: presented.not_after,
        })
    }

    /// CreateCertificateFromCsr (`csr`: PEM) or CreateKeysAndCertificate (`csr`:
    /// `None`): a certificate for the device the CSR's CN or else `client_id` names, in
    /// the claim's group, and its ownership token.
    pub async fn create(
        &self,
        claim: &Claim,
        client_id: &str,
        csr: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<CertificateCreated, Rejection> {
        let state = &self.state;
        state.limit_claim(&claim.serial)?;
        state.limit_ip(client).await?;
        self.still_good(claim).await?;
        if !self.unregistered.room_for(&claim.serial) {
            return Err(Rejection::new(
                429,
                "too_many_unregistered",
                format!(
                    "this claim has {MAX_PER_CLAIM} certificates created and not registered: \
                     register them (RegisterThing) or wait for their hour to pass"
                ),
            ));
        }
        let groups = state.groups.current();
        let group = groups
            .get(&claim.group)
            .ok_or_else(|| ApiError::GroupUnknown(claim.group.to_string()))?;
        let proposed = csr.and_then(csr_common_name);
        let device = DeviceId::parse_onboarding(proposed.as_deref().unwrap_or(client_id))
            .ok()
            // The ids claims are recorded under are no device's.
            .filter(|d| !d.as_str().starts_with(CLAIM_PREFIX))
            .ok_or_else(|| {
                Rejection::new(
                    400,
                    "invalid_device_id",
                    "the device id (the CSR's subject CN, else the MQTT client id) must be 1 \
                     to 64 of letters, digits and . _ : -, not starting with `claim:`",
                )
            })?;
        group.devices.check(&device)?;
        if let Some(owner) = groups.claimed_by(&device)
            && !Arc::ptr_eq(owner, group)
        {
            return Err(ApiError::DeviceNotAllowed.into());
        }
        self.refuse_provisioned(&device).await?;
        let (key_pem, csr_pem) = match csr {
            Some(csr) => (None, csr.to_owned()),
            None if group.mqtt.create_keys => {
                let (key, csr) = server_key(&device, &group.keys)?;
                (Some(key.serialize_pem()), csr)
            }
            None => {
                return Err(Rejection::new(
                    403,
                    "create_keys_off",
                    format!(
                        "group {} does not make device keys (mqtt.create_keys): use \
                         $aws/certificates/create-from-csr/json",
                        group.name
                    ),
                ));
            }
        };
        state.limit_device(&device).await?;
        let request = CertRequest::Pkcs10(&csr_pem).check(&device, &group.keys)?;
        let vetted = state
            .lifecycle
            .vet(group, &device, false, &request, "mqtt", client)
            .await?;
        // The claim authenticated the caller; the credential this one issuance uses up
        // is a token minted for it, through the same consume-and-record step as every
        // door's.
        let (jti, _) =
            crate::api::store_new_token(state, &device, &group.name, state.tokens.ttl()).await?;
        // The epoch read after the write, as a provisioning token carries it.
        let epoch = state.store.epoch();
        let certified = state
            .lifecycle
            .enroll(&device, &jti, epoch, &request.key, vetted, client)
            .await?;
        let serial = crate::registry::parse_serial(&certified.serial_hex)
            .ok_or_else(|| anyhow::anyhow!("an issued serial does not parse"))
            .map_err(ApiError::from)?;
        let ownership = Jti::from_bytes(serial);
        let stored = TokenFacts {
            group: group.name.to_string(),
            epoch: state.store.epoch(),
            expires_at: unix_now() + OWNERSHIP_TTL.as_secs(),
        };
        let stored_token = state
            .store
            .issue(&device, &ownership, OWNERSHIP_TTL + SWEEP_MARGIN, &stored)
            .await;
        let token = match stored_token {
            Ok(Issued::Issued) => {
                let facts = TokenFacts {
                    epoch: state.store.epoch(),
                    ..stored
                };
                self.ownership.issue_with(&device, ownership, &facts)?.token
            }
            // Blocked meanwhile, or a token the store may not have kept or could not
            // take: this certificate can never be registered, so it goes at once.
            Ok(Issued::Blocked) => {
                revoke(state, &device, serial).await;
                return Err(ApiError::DeviceBlocked.into());
            }
            Ok(Issued::Unsure) => {
                revoke(state, &device, serial).await;
                return Err(ApiError::StorageUnavailable.into());
            }
            Err(e) => {
                revoke(state, &device, serial).await;
                return Err(storage_error(e).into());
            }
        };
        self.unregistered.wait(
            state.clone(),
            claim.serial,
            device.clone(),
            serial,
            OWNERSHIP_TTL + Duration::from_secs(10),
        );
        let der = pem::parse(&certified.pem)
            .map_err(|e| ApiError::from(anyhow::anyhow!("an issued PEM: {e}")))?;
        Ok(CertificateCreated {
            certificate_id: hex::encode(crate::crypto::sha256(der.contents())),
            certificate_pem: certified.pem,
            certificate_ownership_token: token,
            private_key: key_pem,
        })
    }

    /// RegisterThing with `template` (the claim's group): the parameters make the device
    /// id, which must be the one the ownership token's certificate was issued to; the
    /// token is then used up, and the group's device configuration answered.
    pub async fn register(
        &self,
        claim: &Claim,
        template: &str,
        ownership_token: &str,
        parameters: &BTreeMap<String, String>,
        client: Option<IpAddr>,
    ) -> Result<(DeviceId, BTreeMap<String, String>), Rejection> {
        let state = &self.state;
        state.limit_claim(&claim.serial)?;
        self.still_good(claim).await?;
        if template != &*claim.group {
            return Err(Rejection::new(
                404,
                "template_unknown",
                format!(
                    "this claim provisions with template {}, not {template}",
                    claim.group
                ),
            ));
        }
        let groups = state.groups.current();
        let group = groups
            .get(&claim.group)
            .ok_or_else(|| ApiError::GroupUnknown(claim.group.to_string()))?;
        let device = group
            .mqtt
            .device_id(parameters)
            .map_err(|e| Rejection::new(400, "invalid_parameters", e))?;
        let verified = self
            .ownership
            .verify(ownership_token)
            .map_err(|e| match e {
                ApiError::TokenExpired => Rejection::new(
                    400,
                    "ownership_token_expired",
                    "the certificate ownership token has expired (one hour after the certificate)",
                ),
                _ => Rejection::new(
                    400,
                    "ownership_token_invalid",
                    "the certificate ownership token is not one this server issued",
                ),
            })?;
        if verified.group != *group.name {
            return Err(Rejection::new(
                400,
                "ownership_token_invalid",
                "the certificate ownership token is for another template",
            ));
        }
        if verified.subject != device.as_str() {
            return Err(Rejection::new(
                400,
                "device_id_mismatch",
                format!(
                    "the parameters make device id {device}; the certificate was issued to {}",
                    verified.subject
                ),
            ));
        }
        let serial = *verified.jti.as_bytes();
        let serial_hex = hex::encode_upper(serial);
        // A certificate revoked since it was created (an operator, a key compromise) is
        // not one to finish provisioning with.
        let record = state
            .store
            .certificate(&serial)
            .await
            .map_err(storage_error)?;
        if record.is_none_or(|r| r.revocation.is_some()) {
            return Err(ApiError::CertificateRevoked.into());
        }
        if let Some(hook) = &group.hook {
            // AWS's pre-provisioning hook: the parameters are known only now. A hook
            // that is away burns nothing (the device may register again within the
            // hour); a denial makes the certificate useless, so it goes at once.
            let verdict = hook
                .ask_registration(
                    &device,
                    &group.name,
                    parameters,
                    &serial_hex,
                    client,
                    &state.metrics,
                )
                .await;
            let audit = |decision, detail: &str| {
                state
                    .audit
                    .hook_decided(&device, &group.name, decision, detail, client);
            };
            match verdict {
                Ok(Verdict::Allow { .. }) => audit("allow", "registration"),
                Ok(Verdict::SignedWithoutAnswer(why)) => {
                    audit("error", &format!("{why}; registered: on_error = allow"));
                }
                Ok(Verdict::Deny(reason)) => {
                    audit("deny", &reason);
                    if let Ok(ConsumeOutcome::Consumed | ConsumeOutcome::Blocked) = state
                        .store
                        .consume(&device, &verified.jti, verified.epoch, None)
                        .await
                    {
                        revoke(state, &device, serial).await;
                    }
                    return Err(ApiError::HookDenied(reason).into());
                }
                Err(e) => {
                    audit("error", &e.to_string());
                    return Err(e.into());
                }
            }
        }
        match state
            .store
            .consume(&device, &verified.jti, verified.epoch, None)
            .await
            .map_err(storage_error)?
        {
            ConsumeOutcome::Consumed => {}
            ConsumeOutcome::NotFound => {
                return Err(Rejection::new(
                    400,
                    "ownership_token_used",
                    "the certificate ownership token was used, or replaced by a newer one",
                ));
            }
            ConsumeOutcome::Blocked => {
                revoke(state, &device, serial).await;
                return Err(ApiError::DeviceBlocked.into());
            }
        }
        self.unregistered.take(&serial);
        state
            .audit
            .device_registered(&device, &serial_hex, &group.name, client);
        Ok((device, group.mqtt.device_configuration.clone()))
    }

    /// The answer of a registration.
    pub fn registered<'a>(
        device: &'a DeviceId,
        configuration: &'a BTreeMap<String, String>,
    ) -> ThingRegistered<'a> {
        ThingRegistered {
            thing_name: device.as_str(),
            device_configuration: configuration,
        }
    }

    /// A claim is shared by a batch: it must not replace a certificate a device holds.
    /// Re-provisioning such a device takes an operator (revoke, then provision again) or
    /// the device's own renewal. Nor may it take a device another door is provisioning:
    /// minting a token would replace that device's pending one.
    ///
    /// Errors: 409 `device_already_provisioned`, 409 `device_pending`, 503.
    async fn refuse_provisioned(&self, device: &DeviceId) -> Result<(), Rejection> {
        if self
            .state
            .store
            .pending(device)
            .await
            .map_err(storage_error)?
            .is_some()
        {
            return Err(Rejection::new(
                409,
                "device_pending",
                format!(
                    "{device} has a pending token (onboarded, or created here and not \
                     registered): use it, or wait for it to expire"
                ),
            ));
        }
        let now = unix_now();
        let held = self
            .state
            .store
            .certificates_of(device)
            .await
            .map_err(storage_error)?;
        if held.iter().any(|r| r.status(now) == "valid") {
            return Err(Rejection::new(
                409,
                "device_already_provisioned",
                format!(
                    "{device} holds a valid certificate: a claim provisions a device once \
                     (renew it, or have an operator revoke it first)"
                ),
            ));
        }
        Ok(())
    }
}

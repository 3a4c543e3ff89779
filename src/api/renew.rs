//! `POST /api/v1/renew`: a device that holds a certificate of ours trades it for a new
//! one, proving that it holds the certificate's key with a signed JWT (`x5c`) or with
//! the certificate itself as its TLS client certificate.

use actix_web::{HttpRequest, HttpResponse, web};

use super::answers::certified;
use super::body::JsonBody;
use super::{AppState, attribute, note_device};
use crate::auth::{bearer, renewal};
use crate::ca::{CertRequest, PresentedCertificate};
use crate::clock::unix_now;
use crate::domain::DeviceId;
use crate::error::ApiError;
use crate::groups::DEFAULT_GROUP;
use crate::lifecycle::{Certified, Renewing, storage_error};
use crate::net::PeerCertificate;
use crate::registry::CertificateRecord;
use crate::store::CertificateRegistry;

pub async fn renew(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let raw = JsonBody::read_raw(&req, payload, state.body_limit, state.body_timeout).await?;
    let client = state.client_ip(&req);
    state.limit_ip(client).await?;
    let body = raw.json()?;
    let device = body.device_id()?;
    note_device(&device);

    let now = unix_now();
    let (presented, proof, proof_kind) = prove(&req, &state, &device, now)?;
    let csr = body
        .str_field("csr")
        .ok_or_else(|| ApiError::InvalidCsr("csr (a PEM string) is required".into()))?;
    let record = state
        .store
        .certificate(&presented.serial)
        .await
        .map_err(storage_error)?;
    let proven = Proven {
        presented,
        record,
        proof,
        proof_kind,
        protocol: "http",
    };
    let cert = renew_proven(&req, &state, &device, proven, CertRequest::Pkcs10(csr), now).await?;
    Ok(certified(cert))
}

/// A certificate of ours and how its holder proved it.
pub(super) struct Proven {
    pub presented: PresentedCertificate,
    /// The registry's record of its serial, read once by the door.
    pub record: Option<CertificateRecord>,
    /// The JWT proof (`None`: the TLS handshake was the proof).
    pub proof: Option<renewal::Proof>,
    /// `jwt` or `mtls`, for the audit.
    pub proof_kind: &'static str,
    /// The door (`http`, `est`, `cmp`), for the pre-issuance hook.
    pub protocol: &'static str,
}

/// Renews `device`'s `proven` certificate for `request` at `now`: the registry's
/// record, its group's renewal window and policy, the hook, then the one store step.
/// The JSON route, EST's `simplereenroll` and CMP's `kur` all come here.
///
/// Errors: as [`crate::lifecycle::Lifecycle::renew`], and 403 `certificate_unknown`,
/// `group_unknown`, `renewal_not_due`, 401 `certificate_expired`,
/// `renewal_proof_invalid`, 400 `invalid_csr`.
pub(super) async fn renew_proven(
    req: &HttpRequest,
    state: &AppState,
    device: &DeviceId,
    proven: Proven,
    request: CertRequest<'_>,
    now: u64,
) -> Result<Certified, ApiError> {
    let client = state.client_ip(req);
    let Proven {
        presented,
        record,
        proof,
        proof_kind,
        protocol,
    } = proven;
    let device = device.clone();
    // The registry says whose the certificate is and which group it was issued under:
    // the group's policy, profile and hook apply to its successor.
    let same_name = presented.common_name == device.as_str();
    let group_name = match record {
        // The serial is the record's, the certificate another: one signed with one of
        // our issuers' keys outside this server (or forged under a shared serial) never
        // renews into the recorded device's certificate.
        Some(record) if record.fingerprint_sha256 != presented.fingerprint_sha256 => {
            return Err(ApiError::CertificateUnknown);
        }
        Some(record) if record.device_id == device => record.group,
        // Another device's certificate: the store step would refuse it as unknown for
        // this one; a common name that is not this device's is a proof for another.
        Some(_) if same_name => return Err(ApiError::CertificateUnknown),
        Some(_) => {
            return Err(ApiError::RenewalProofInvalid(
                "the certificate is for another device".into(),
            ));
        }
        None if !same_name => {
            return Err(ApiError::RenewalProofInvalid(
                "the certificate is for another device".into(),
            ));
        }
        // Unknown to the registry: checked as `default`'s, as every certificate was
        // before groups, and the store step says `certificate_unknown` after the block
        // and the other checks, in the order it always did.
        None => DEFAULT_GROUP.to_owned(),
    };
    // From here on the certificate is the device's: refusals are filed under it.
    attribute(req, &device);
    let groups = state.groups.current();
    let group = match groups.get(&group_name) {
        Some(group) => group,
        None if group_name == DEFAULT_GROUP => return Err(ApiError::CertificateUnknown),
        None => return Err(ApiError::GroupUnknown(group_name)),
    };
    if presented.not_after + group.grace().as_secs() < now {
        return Err(ApiError::CertificateExpired(group.after_expiry_days));
    }
    if let Some(days) = group.renewal_window_days
        && presented.not_after > now + u64::from(days) * 86_400
    {
        return Err(ApiError::RenewalNotDue(days));
    }
    group.devices.check(&device)?;
    state.limit_device(&device).await?;
    let request = request.check(&device, &group.keys)?;
    let proof = match proof {
        Some(proof) => {
            if !proof.allows(&request.key, state.renewal.require_bound_proof)? {
                state.metrics.renewal_unbound_proofs.inc();
            }
            Some(proof.single_use)
        }
        None => None,
    };
    // Before the proof is used: a refusal burns nothing.
    let vetted = state
        .lifecycle
        .vet(group, &device, true, &request, protocol, client)
        .await?;

    state
        .lifecycle
        .renew(
            Renewing {
                device: &device,
                previous: presented.serial,
                proof,
                proof_kind,
            },
            &request.key,
            vetted,
            client,
        )
        .await
}

/// The certificate presented and the proof: the bearer JWT when there is one, else the
/// TLS client certificate (`None`: the handshake was the proof). Whose certificate it is
/// is the registry's to say (a group's profile may write any common name).
fn prove(
    req: &HttpRequest,
    state: &AppState,
    device: &DeviceId,
    now: u64,
) -> Result<(PresentedCertificate, Option<renewal::Proof>, &'static str), ApiError> {
    if let Some(token) = bearer(req) {
        let proof = renewal::verify(token, &state.issuers, device, now)?;
        return Ok((proof.certificate.clone(), Some(proof), "jwt"));
    }
    let Some(PeerCertificate(der)) = req.conn_data::<PeerCertificate>() else {
        return Err(ApiError::RenewalProofInvalid(
            "prove the current certificate: `Authorization: Bearer <JWT signed by its key, \
             certificate in x5c>`, or the certificate as TLS client certificate"
                .into(),
        ));
    };
    let presented = state
        .issuers
        .check_presented(der)
        .map_err(|e| ApiError::RenewalProofInvalid(e.into()))?;
    Ok((presented, None, "mtls"))
}

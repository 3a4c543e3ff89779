//! `POST /api/v1/renew`: a device that holds a certificate of ours trades it for a new
//! one, proving that it holds the certificate's key with a signed JWT (`x5c`) or with
//! the certificate itself as its TLS client certificate.

use actix_web::{HttpRequest, HttpResponse, web};

use super::body::JsonBody;
use super::certificates::{note_revocation, refresh_crl};
use super::sign_csr::{certify, hand_out};
use super::{AppState, note_device, storage_error};
use crate::auth::{bearer, renewal};
use crate::ca::{PresentedCertificate, check_csr};
use crate::clock::unix_now;
use crate::domain::DeviceId;
use crate::error::ApiError;
use crate::net::PeerCertificate;
use crate::registry::{Reason, Revocation};
use crate::store::{CertificateRegistry, ProofUse, Renewal};

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
    note_device(&req, &device);

    let now = unix_now();
    let (presented, proof, proof_kind) = prove(&req, &state, &device, now)?;
    let grace = state.renewal.grace().as_secs();
    if presented.not_after + grace < now {
        return Err(ApiError::CertificateExpired(
            state.renewal.after_expiry_days,
        ));
    }
    state.policy.check(&device)?;
    state.limit_device(&device).await?;
    // A certificate whose record is gone (or predates the registry) may still be listed.
    if state.crl.lists(&presented.serial) {
        return Err(ApiError::CertificateRevoked);
    }
    let csr = body
        .str_field("csr")
        .ok_or_else(|| ApiError::InvalidCsr("csr (a PEM string) is required".into()))?;
    let key = check_csr(csr, &device, state.ca.policy())?;

    let (cert, record) = certify(&state, &device, &key)?;
    let supersede = state.renewal.revoke_previous.then_some(Revocation {
        at: now,
        reason: Reason::Superseded,
    });
    let renewal = state
        .store
        .renew(&presented.serial, proof, &record, supersede)
        .await
        .map_err(storage_error)?;
    let superseded = match renewal {
        Renewal::Renewed { superseded } => superseded,
        Renewal::Blocked => return Err(ApiError::DeviceBlocked),
        Renewal::PreviousRevoked => return Err(ApiError::CertificateRevoked),
        Renewal::ProofUsed => {
            return Err(ApiError::RenewalProofInvalid(
                "this proof was used already; sign a new one (new jti and iat)".into(),
            ));
        }
    };
    state.metrics.certificates_renewed.inc();
    state.audit.certificate_renewed(
        &device,
        &hex::encode_upper(presented.serial),
        &cert.serial_hex,
        proof_kind,
        client,
    );
    if let Some(superseded) = superseded {
        note_revocation(&state, &superseded, true, client);
        refresh_crl(&state).await;
    }
    Ok(hand_out(&state, cert, &record, client))
}

/// The certificate presented and the proof's single use: the bearer JWT when there is
/// one, else the TLS client certificate.
fn prove(
    req: &HttpRequest,
    state: &AppState,
    device: &DeviceId,
    now: u64,
) -> Result<(PresentedCertificate, Option<ProofUse>, &'static str), ApiError> {
    if let Some(token) = bearer(req) {
        let (presented, proof) = renewal::verify(token, &state.ca, device, now)?;
        return Ok((presented, Some(proof), "jwt"));
    }
    let Some(PeerCertificate(der)) = req.conn_data::<PeerCertificate>() else {
        return Err(ApiError::RenewalProofInvalid(
            "prove the current certificate: `Authorization: Bearer <JWT signed by its key, \
             certificate in x5c>`, or the certificate as TLS client certificate"
                .into(),
        ));
    };
    let presented = state
        .ca
        .check_presented(der)
        .map_err(|e| ApiError::RenewalProofInvalid(e.into()))?;
    if presented.common_name != device.as_str() {
        return Err(ApiError::RenewalProofInvalid(
            "the client certificate is for another device".into(),
        ));
    }
    Ok((presented, None, "mtls"))
}

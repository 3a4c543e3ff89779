//! `POST /api/v1/renew`: a device that holds a certificate of ours trades it for a new
//! one, proving that it holds the certificate's key with a signed JWT (`x5c`) or with
//! the certificate itself as its TLS client certificate.

use actix_web::{HttpRequest, HttpResponse, web};

use super::answers::certified;
use super::body::JsonBody;
use super::{AppState, attribute, note_device};
use crate::auth::{bearer, renewal};
use crate::ca::{PresentedCertificate, check_csr};
use crate::clock::unix_now;
use crate::domain::DeviceId;
use crate::error::ApiError;
use crate::lifecycle::Renewing;
use crate::net::PeerCertificate;

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
    attribute(&req, &device);
    let grace = state.renewal.grace().as_secs();
    if presented.not_after + grace < now {
        return Err(ApiError::CertificateExpired(
            state.renewal.after_expiry_days,
        ));
    }
    state.policy.check(&device)?;
    state.limit_device(&device).await?;
    let csr = body
        .str_field("csr")
        .ok_or_else(|| ApiError::InvalidCsr("csr (a PEM string) is required".into()))?;
    let key = check_csr(csr, &device, state.ca.policy())?;
    let proof = match proof {
        Some(proof) => {
            if !proof.allows(&key, state.renewal.require_bound_proof)? {
                state.metrics.renewal_unbound_proofs.inc();
            }
            Some(proof.single_use)
        }
        None => None,
    };
    // Before the proof is used: a refusal burns nothing.
    let vetted = state
        .lifecycle
        .vet(&device, true, csr, &key, client)
        .await?;

    let cert = state
        .lifecycle
        .renew(
            Renewing {
                device: &device,
                previous: presented.serial,
                proof,
                proof_kind,
            },
            &key,
            vetted,
            client,
        )
        .await?;
    Ok(certified(cert))
}

/// The certificate presented and the proof: the bearer JWT when there is one, else the
/// TLS client certificate (`None`: the handshake was the proof).
fn prove(
    req: &HttpRequest,
    state: &AppState,
    device: &DeviceId,
    now: u64,
) -> Result<(PresentedCertificate, Option<renewal::Proof>, &'static str), ApiError> {
    if let Some(token) = bearer(req) {
        let proof = renewal::verify(token, &state.ca, device, now)?;
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

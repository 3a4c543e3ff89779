//! `rr` (RFC 9483 §4.2): a device revokes a certificate of its own, signing the request
//! with one of its certificates of ours; answered `rp`.

use actix_web::{HttpRequest, HttpResponse};
use cmpv2::rev::{RevRepContent, RevReqContent};
use cmpv2::status::PkiFailureInfoValues as Fail;
use der::{Decode, Encode, Tagged};

use super::wire::Request;
use super::{Protect, Refusal, Refused, answer, respond};
use crate::api::{AppState, attribute};
use crate::audit::Actor;
use crate::clock::unix_now;
use crate::error::ApiError;
use crate::lifecycle::storage_error;
use crate::registry::{Reason, Revocation};
use crate::store::CertificateRegistry;

/// id-ce-cRLReasons (RFC 5280 §5.3.1).
const CRL_REASON: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.5.29.21");

pub(super) async fn revoke(
    req: &HttpRequest,
    state: &AppState,
    request: &Request<'_>,
) -> Result<HttpResponse, Refused> {
    let refused = |e: ApiError| (Refusal::from(e), None);
    let presented = super::enroll::signed_by_ours(state, request)?;
    let details = RevReqContent::from_der(request.content).map_err(|e| {
        (
            Refusal::new(Fail::BadDataFormat, format!("RevReqContent: {e}")),
            None,
        )
    })?;
    let [detail] = details.as_slice() else {
        return Err((
            Refusal::new(Fail::BadRequest, "exactly one revocation per message"),
            None,
        ));
    };
    let serial = detail
        .cert_details
        .serial_number
        .as_ref()
        .and_then(|s| {
            // A DER INTEGER: a leading zero keeps a high first bit positive.
            let bytes = s.as_bytes();
            let bytes = bytes
                .strip_prefix(&[0])
                .filter(|b| b.len() == 16)
                .unwrap_or(bytes);
            <[u8; 16]>::try_from(bytes).ok()
        })
        .ok_or_else(|| refused(ApiError::CertificateNotFound))?;
    // RFC 9483 §4.2: a device revokes the certificate it signs with, and only that one,
    // so that a key it has given up (an old certificate) cannot revoke its current one.
    if serial != presented.serial {
        return Err((
            Refusal::new(
                Fail::NotAuthorized,
                "sign the revocation request with the certificate it revokes",
            ),
            None,
        ));
    }
    let reason = reason(detail)?;
    let record = state
        .store
        .certificate(&serial)
        .await
        .map_err(|e| refused(storage_error(e)))?
        .filter(|r| r.fingerprint_sha256 == presented.fingerprint_sha256)
        .ok_or_else(|| refused(ApiError::CertificateUnknown))?;
    attribute(req, &record.device_id);
    state
        .limit_device(&record.device_id)
        .await
        .map_err(refused)?;
    // Only a certificate still in use: revoked, renewed or expired ones have nothing
    // left to give up, and a key compromise on them would reach their successors.
    if record.revocation.is_some() {
        return Err(refused(ApiError::CertificateRevoked));
    }
    if state
        .store
        .successor_of(&serial)
        .await
        .map_err(|e| refused(storage_error(e)))?
        .is_some()
    {
        return Err(refused(ApiError::CertificateSuperseded));
    }
    if presented.not_after < unix_now() {
        return Err(refused(ApiError::CertificateExpired(0)));
    }
    let revocation = Revocation {
        at: unix_now(),
        reason,
    };
    state
        .lifecycle
        .revoke(&serial, revocation, &Actor::client(state.client_ip(req)))
        .await
        .map_err(|e| refused(storage_error(e)))?;
    state.lifecycle.refresh_crl().await;
    let content = RevRepContent {
        status: vec![super::wire::accepted()],
        rev_certs: None,
        crls: None,
    }
    .to_der()
    .map_err(|e| refused(ApiError::from(anyhow::anyhow!("{e}"))))?;
    Ok(respond(answer(
        state,
        Some(&request.header),
        12,
        &content,
        Protect::Signed,
        None,
        &[],
    )))
}

/// The reasonCode of `crlEntryDetails` (RFC 5280 §5.3.1), of those a device may give
/// for its own certificate: a CA's compromise or a hold is not a device's to say.
fn reason(detail: &cmpv2::rev::RevDetails) -> Result<Reason, Refused> {
    let Some(extension) = detail
        .crl_entry_details
        .iter()
        .flatten()
        .find(|e| e.extn_id == CRL_REASON)
    else {
        return Ok(Reason::Unspecified);
    };
    der::asn1::Any::from_der(extension.extn_value.as_bytes())
        .ok()
        .filter(|any| any.tag() == der::Tag::Enumerated && any.value().len() == 1)
        .and_then(|any| Reason::from_code(any.value()[0]))
        .filter(|reason| {
            matches!(
                reason,
                Reason::Unspecified
                    | Reason::KeyCompromise
                    | Reason::AffiliationChanged
                    | Reason::Superseded
                    | Reason::CessationOfOperation
            )
        })
        .ok_or_else(|| {
            (
                Refusal::new(
                    Fail::BadRequest,
                    "reasonCode: a device may give unspecified, keyCompromise, \
                     affiliationChanged, superseded or cessationOfOperation",
                ),
                None,
            )
        })
}

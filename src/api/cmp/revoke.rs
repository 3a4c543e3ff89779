//! `rr` (RFC 9483 §4.2): a device revokes a certificate of its own, signing the request
//! with one of its certificates of ours; answered `rp`.

use actix_web::{HttpRequest, HttpResponse};
use cmpv2::rev::{RevRepContent, RevReqContent};
use cmpv2::status::PkiFailureInfoValues as Fail;
use der::{Decode, Encode, Tagged};

use super::wire::Request;
use super::{Protect, Refusal, Refused, answer};
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
        .ok_or_else(|| (Refusal::from(ApiError::CertificateNotFound), None))?;
    let reason = match detail
        .crl_entry_details
        .iter()
        .flatten()
        .find(|e| e.extn_id == CRL_REASON)
    {
        None => Reason::Unspecified,
        Some(extension) => der::asn1::Any::from_der(extension.extn_value.as_bytes())
            .ok()
            .filter(|any| any.tag() == der::Tag::Enumerated)
            .and_then(|any| any.value().first().copied())
            .and_then(Reason::from_code)
            .ok_or_else(|| {
                (
                    Refusal::new(
                        Fail::BadRequest,
                        "crlEntryDetails: a reasonCode this server does not take",
                    ),
                    None,
                )
            })?,
    };
    // The signer's registry record says whose it is; the serial must be the same device's.
    let signer = state
        .store
        .certificate(&presented.serial)
        .await
        .map_err(|e| (Refusal::from(storage_error(e)), None))?
        .filter(|r| r.fingerprint_sha256 == presented.fingerprint_sha256)
        .ok_or_else(|| (Refusal::from(ApiError::CertificateUnknown), None))?;
    let target = state
        .store
        .certificate(&serial)
        .await
        .map_err(|e| (Refusal::from(storage_error(e)), None))?
        .ok_or_else(|| (Refusal::from(ApiError::CertificateNotFound), None))?;
    if target.device_id != signer.device_id {
        return Err((
            Refusal::new(Fail::NotAuthorized, "the certificate is another device's"),
            None,
        ));
    }
    attribute(req, &signer.device_id);
    let revocation = Revocation {
        at: unix_now(),
        reason,
    };
    state
        .lifecycle
        .revoke(&serial, revocation, &Actor::client(state.client_ip(req)))
        .await
        .map_err(|e| (Refusal::from(storage_error(e)), None))?;
    state.lifecycle.refresh_crl().await;
    let content = RevRepContent {
        status: vec![super::wire::accepted()],
        rev_certs: None,
        crls: None,
    }
    .to_der()
    .map_err(|e| (Refusal::from(ApiError::from(anyhow::anyhow!("{e}"))), None))?;
    Ok(answer(
        state,
        Some(&request.header),
        12,
        &content,
        Protect::Signed,
        None,
        &[],
    ))
}

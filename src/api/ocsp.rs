//! `/ocsp`: an RFC 6960 responder for the issuing CAs, answering from the registry (and
//! the serials listed on the CRL without a record). A response is signed by one issuer
//! (or its delegated responder): the one the first CertID names; CertIDs of another
//! issuer in the same request are answered `unknown`, which is all that signer may say
//! of them. POST carries the DER request
//! (`application/ocsp-request`); GET carries it base64 in the path (RFC 5019 §5).
//!
//! Every answer is HTTP 200 `application/ocsp-response`, as OCSP clients expect: a
//! request that does not read is answered `malformedRequest`, a registry that cannot be
//! reached `tryLater`, never an HTTP error.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use time::OffsetDateTime;

use super::AppState;
use super::body::JsonBody;
use crate::ca::{BACKDATE, CertStatus, ocsp_refusal, parse_ocsp_request};
use crate::store::CertificateRegistry;

/// The largest request read: sixteen CertIDs and a nonce fit many times over.
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Base64 with or without its `=` padding, in either alphabet (clients differ).
const STANDARD_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::RequireNone),
);
const URL_SAFE_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// RFC 6960 §4.2.1 `OCSPResponseStatus` values sent without a response.
const MALFORMED_REQUEST: i64 = 1;
const INTERNAL_ERROR: i64 = 2;
const TRY_LATER: i64 = 3;

pub async fn ocsp_post(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    // The API's own body reading (a declared or real size over the cap, a body that
    // trickles past `server.body_timeout_ms`), its refusals said the OCSP way.
    match JsonBody::read_raw(&req, payload, MAX_REQUEST_BYTES, state.body_timeout).await {
        Ok(body) => respond(&req, &state, body.bytes()).await,
        Err(_) => answer(ocsp_refusal(MALFORMED_REQUEST)),
    }
}

pub async fn ocsp_get(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    // The raw path: a base64 request holds `/` and `+`, which path decoding would touch.
    let encoded = req.uri().path().strip_prefix("/ocsp/").unwrap_or_default();
    let der = percent_decode(encoded).and_then(|text| {
        let text = text.trim_end_matches('=');
        STANDARD_ANY_PADDING
            .decode(text)
            .or_else(|_| URL_SAFE_ANY_PADDING.decode(text))
            .ok()
    });
    match der {
        Some(der) if der.len() <= MAX_REQUEST_BYTES => respond(&req, &state, &der).await,
        _ => answer(ocsp_refusal(MALFORMED_REQUEST)),
    }
}

async fn respond(req: &HttpRequest, state: &AppState, der: &[u8]) -> HttpResponse {
    // Each answer is a signature by the CA's key: the per-address limit holds here too.
    if state.limit_ip(state.client_ip(req)).await.is_err() {
        return answer(ocsp_refusal(TRY_LATER));
    }
    let Ok(request) = parse_ocsp_request(der) else {
        return answer(ocsp_refusal(MALFORMED_REQUEST));
    };
    let signer = request
        .certs
        .iter()
        .find_map(|id| state.issuers.for_cert_id(id))
        .unwrap_or_else(|| state.issuers.first());
    let mut statuses = Vec::with_capacity(request.certs.len());
    for id in &request.certs {
        let status = match id.serial {
            Some(serial) if signer.ocsp_issuer().issued(id) => {
                // The CRL's own list too (a serial listed without a record, or a
                // revocation the record lost), looked through only when needed.
                let listed = || state.crl.listed_revocation(&serial);
                match state.store.certificate(&serial).await {
                    Ok(Some(record)) => match record.revocation.or_else(listed) {
                        Some(revocation) => CertStatus::Revoked(revocation),
                        None => CertStatus::Good,
                    },
                    Ok(None) => listed().map_or(CertStatus::Unknown, CertStatus::Revoked),
                    Err(e) => {
                        tracing::warn!(error = %e, "OCSP: the registry cannot be read");
                        return answer(ocsp_refusal(TRY_LATER));
                    }
                }
            }
            _ => CertStatus::Unknown,
        };
        statuses.push(status);
    }
    let now = OffsetDateTime::now_utc();
    let kept = request.reuse_key();
    if let Some(key) = &kept
        && let Some(der) = state.ocsp_cache.get(key, &statuses, now)
    {
        return answer(der);
    }
    let next_update = now + state.crl.validity();
    // Back-dated as certificates are, for clients whose clocks run a little behind.
    let this_update = now - BACKDATE;
    match signer.ocsp_response(&request, &statuses, this_update, next_update) {
        Ok(der) => {
            if let Some(key) = kept {
                let half_life = now + state.crl.validity() / 2;
                let use_until = signer
                    .ocsp_signer_not_after()
                    .map_or(half_life, |signer| signer.min(half_life));
                state
                    .ocsp_cache
                    .put(key, statuses, der.clone(), (now, use_until));
            }
            answer(der)
        }
        // The CA's token is away: the client may ask again (RFC 6960 §2.3).
        Err(rcgen::Error::RemoteKeyError) => answer(ocsp_refusal(TRY_LATER)),
        Err(e) => {
            tracing::error!(error = %e, "OCSP: signing the response failed");
            answer(ocsp_refusal(INTERNAL_ERROR))
        }
    }
}

fn answer(der: Vec<u8>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "application/ocsp-response"))
        // A revocation changes the answer at once: caches ask each time.
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(der)
}

/// `%2B` and the like back to bytes; `None` for a broken escape or a non-ASCII result.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().filter(|s| s.is_ascii())
}

/// An OCSP request (RFC 6960 §4.1.1, DER) about certificates of this CA: each is
/// answered `good`, `revoked` (with time and reason) or `unknown`, signed by the CA;
/// the nonce is echoed. Always 200: a request that does not read is answered
/// `malformedRequest`, a registry out of reach `tryLater`.
#[utoipa::path(post, path = "/ocsp",
    request_body(content(
        (Option<OcspDer> = "application/ocsp-request"),
        (Option<OcspDer> = "application/octet-stream"),
    )),
    responses((status = 200, description = "An OCSPResponse (RFC 6960 §4.2.1), DER",
        content((OcspDer = "application/ocsp-response")))))]
#[allow(dead_code)]
pub(super) fn ocsp_post_doc() {}

/// The same, the request base64 in the path and URL-encoded (RFC 5019 §5).
#[utoipa::path(get, path = "/ocsp/{request}",
    params(("request" = String, Path, description = "The DER request, base64, URL-encoded")),
    responses((status = 200, description = "An OCSPResponse (RFC 6960 §4.2.1), DER",
        content((OcspDer = "application/ocsp-response")))))]
#[allow(dead_code)]
pub(super) fn ocsp_get_doc() {}

/// DER bytes. Any body is taken (one that does not read is answered
/// `malformedRequest`), none included.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub(super) struct OcspDer(Vec<u8>);

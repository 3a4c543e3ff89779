//! CMP (RFC 4210 as profiled by the lightweight CMP profile, RFC 9483), over HTTP (RFC
//! 6712): `POST /.well-known/cmp` and `/.well-known/cmp/p/<group>` (§5.1's path, the
//! label an enrollment group), `application/pkixcmp`, on the API's port, with or
//! without TLS (CMP messages are protected themselves).
//!
//! - `ir`, `cr` and `p10cr`, protected with a password-based MAC whose secret is the
//!   device's provisioning token or its enrollment code and whose `senderKID` is the
//!   device id: sign-csr's checks and single use ([`enroll`]).
//! - `kur`, signed with the device's current certificate: mutual-TLS renewal's checks.
//! - `rr`, signed with the device's certificate: it revokes one of its own.
//! - `certConf` → `pkiConf`; `implicitConfirm` is granted when asked.
//!
//! Answers are protected as the request was: a MAC with the same secret, or signed by
//! the CMP signer ([`crate::ca::cmp_signer`]). Every refusal is a CMP `error` message
//! with a PKIFailureInfo, sent with HTTP 200 (OpenSSL's client reads no other body).

pub(super) mod doc;
mod enroll;
pub mod protection;
mod revoke;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::header::CACHE_CONTROL;
use actix_web::{HttpRequest, HttpResponse, web};
use cmpv2::header::PkiHeader;
use cmpv2::status::PkiFailureInfoValues as Fail;
use der::asn1::{OctetString, Utf8StringRef};
use der::{Decode, Encode};
use rcgen::SigningKey;
use x509_cert::ext::pkix::name::GeneralName;

use super::AppState;
use super::body::JsonBody;
use crate::ca::cmp_signer::CmpSigner;
use crate::error::ApiError;
use protection::AnswerMac;
use wire::{ErrorContent, Kind};

/// The media type of CMP over HTTP (RFC 6712 §3.4).
pub const CONTENT_TYPE: &str = "application/pkixcmp";

/// How long a MAC-protected enrollment waits for its `certConf`.
const CONFIRM_WAIT: Duration = Duration::from_secs(300);
/// The most enrollments waiting for `certConf` at once; the oldest go first.
const MAX_WAITING: usize = 10_000;

/// CMP's own state: the signer, made on first use, and the MAC-protected enrollments
/// waiting for their `certConf` (whose secret, the token, is used up by then).
#[derive(Default)]
pub struct CmpState {
    signer: Mutex<Option<Arc<CmpSigner>>>,
    /// When making the signer last failed: tried again a minute later, not per request.
    signer_failed: Mutex<Option<Instant>>,
    waiting: Mutex<HashMap<(String, Vec<u8>), Waiting>>,
}

/// How long after a failure the signer is not tried again.
const SIGNER_RETRY: Duration = Duration::from_secs(60);

/// An enrollment answered without implicitConfirm.
#[derive(Clone)]
struct Waiting {
    secret: Vec<u8>,
    serial: [u8; 16],
    /// The certificate, DER: `certConf`'s certHash is checked against it.
    cert_der: Vec<u8>,
    since: Instant,
}

impl CmpState {
    fn signer(&self, state: &AppState) -> Option<Arc<CmpSigner>> {
        let mut signer = self.signer.lock().unwrap_or_else(|p| p.into_inner());
        if signer.as_ref().is_none_or(|s| s.due()) {
            let mut failed = self.signer_failed.lock().unwrap_or_else(|p| p.into_inner());
            if failed.is_none_or(|at| at.elapsed() >= SIGNER_RETRY) {
                match state.issuers.first().make_cmp_signer() {
                    Ok(made) => {
                        *signer = Some(Arc::new(made));
                        *failed = None;
                    }
                    Err(e) => {
                        *failed = Some(Instant::now());
                        tracing::error!(error = %e, "CMP: cannot make the CMP signer; trying again in a minute");
                    }
                }
            }
        }
        // An expired signer signs nothing: unprotected answers until a new one is made.
        signer.clone().filter(|s| !s.expired())
    }

    fn wait_for_confirm(&self, device: &str, transaction: &[u8], waiting: Waiting) {
        let mut all = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|_, w| w.since.elapsed() < CONFIRM_WAIT);
        if all.len() >= MAX_WAITING
            && let Some(oldest) = all
                .iter()
                .min_by_key(|(_, w)| w.since)
                .map(|(k, _)| k.clone())
        {
            all.remove(&oldest);
        }
        all.insert((device.to_owned(), transaction.to_vec()), waiting);
    }

    /// The enrollment waiting under this transaction; it stays until
    /// [`CmpState::confirmed`], so that a forged `certConf` cannot take its place.
    fn waiting(&self, device: &str, transaction: &[u8]) -> Option<Waiting> {
        let all = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        all.get(&(device.to_owned(), transaction.to_vec()))
            .filter(|w| w.since.elapsed() < CONFIRM_WAIT)
            .cloned()
    }

    fn confirmed(&self, device: &str, transaction: &[u8]) {
        let mut all = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        all.remove(&(device.to_owned(), transaction.to_vec()));
    }
}

/// How an answer is protected.
enum Protect {
    Mac(Box<AnswerMac>),
    Signed,
}

/// A refusal, as CMP says it.
pub(crate) struct Refusal {
    fail: Fail,
    text: String,
}

impl Refusal {
    fn new(fail: Fail, text: impl Into<String>) -> Self {
        Self {
            fail,
            text: text.into(),
        }
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        let fail = match &e {
            ApiError::InvalidCsr(_) => Fail::BadCertTemplate,
            ApiError::CsrSignatureInvalid => Fail::BadPOP,
            ApiError::CsrPolicy(_) => Fail::BadCertTemplate,
            ApiError::CertificateRevoked | ApiError::CertificateSuperseded => Fail::CertRevoked,
            ApiError::CertificateUnknown | ApiError::CertificateNotFound => Fail::BadCertId,
            ApiError::RenewalProofInvalid(_) => Fail::BadMessageCheck,
            ApiError::StorageUnavailable
            | ApiError::RateLimited { .. }
            | ApiError::CaUnavailable
            | ApiError::HookUnavailable(_) => Fail::SystemUnavail,
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "CMP: internal error");
                return Self::new(Fail::SystemFailure, "internal_error: internal error");
            }
            _ => Fail::NotAuthorized,
        };
        Self::new(fail, format!("{}: {e}", e.code()))
    }
}

/// `POST /.well-known/cmp[/p/<group>]`.
pub async fn cmp(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let raw = match JsonBody::read_raw(
        &req,
        payload,
        wire::MAX_MESSAGE_BYTES.min(state.body_limit),
        state.body_timeout,
    )
    .await
    {
        Ok(raw) => raw,
        Err(e) => return answer_error(&state, None, None, Refusal::from(e)),
    };
    // No body is no CMP at all: told in HTTP, as nothing can be answered to.
    if raw.is_empty() {
        return HttpResponse::BadRequest()
            .content_type("text/plain; charset=utf-8")
            .body("the body is a DER PKIMessage (application/pkixcmp, RFC 6712)\n");
    }
    // Read (cheap) before the rate limit, so that its refusal answers the request's
    // transaction; signed only after it, as every refusal is signed and signing costs.
    let parsed = wire::parse(raw.bytes());
    if let Err(e) = state.limit_ip(state.client_ip(&req)).await {
        let header = match &parsed {
            Ok(request) => Some(&request.header),
            Err(unreadable) => unreadable.header.as_deref(),
        };
        return answer_error(&state, header, None, e.into());
    }
    let request = match parsed {
        Ok(request) => request,
        Err(unreadable) => {
            let refusal = Refusal::new(unreadable.fail, unreadable.why);
            return answer_error(&state, unreadable.header.as_deref(), None, refusal);
        }
    };
    let kind = request.kind;
    let outcome = match kind {
        Kind::Ir | Kind::Cr | Kind::P10cr => enroll::first(&req, &state, &request).await,
        Kind::Kur => enroll::key_update(&req, &state, &request).await,
        Kind::CertConf => enroll::confirm(&state, &request).await,
        Kind::Rr => revoke::revoke(&req, &state, &request).await,
        Kind::GenM | Kind::Other(_) => Err((
            Refusal::new(
                Fail::BadRequest,
                format!(
                    "{} is not served: ir, cr, p10cr, kur, rr and certConf are (RFC 9483 \
                     sections 4.1 and 4.2); the CA certificates are at /api/v1/ca",
                    kind.name()
                ),
            ),
            None,
        )),
    };
    match outcome {
        Ok(answer) => answer,
        Err((refusal, mac)) => {
            tracing::info!(kind = kind.name(), reason = %refusal.text, "CMP request refused");
            answer_error(&state, Some(&request.header), mac, refusal)
        }
    }
}

/// A refusal and, when the request's MAC verified, how to protect the answer.
type Refused = (Refusal, Option<Box<AnswerMac>>);

/// The `error` message for `refusal`, protected with `mac` or signed.
fn answer_error(
    state: &AppState,
    request: Option<&PkiHeader<'_>>,
    mac: Option<Box<AnswerMac>>,
    refusal: Refusal,
) -> HttpResponse {
    let content = (|| {
        ErrorContent {
            status: wire::Rejection::new(refusal.fail, &refusal.text)?,
        }
        .to_der()
    })();
    let protect = mac.map_or(Protect::Signed, Protect::Mac);
    match content {
        Ok(content) => respond(answer(state, request, 23, &content, protect, None, &[])),
        Err(e) => internal(e),
    }
}

fn internal(e: impl std::fmt::Display) -> HttpResponse {
    tracing::error!(error = %e, "CMP: an answer could not be encoded");
    HttpResponse::InternalServerError()
        .content_type("text/plain; charset=utf-8")
        .body("internal error\n")
}

/// The answer `der` with HTTP 200, or the 500 of an answer that could not be built.
fn respond(der: Result<Vec<u8>, String>) -> HttpResponse {
    match der {
        Ok(der) => HttpResponse::Ok()
            .content_type(CONTENT_TYPE)
            .insert_header((CACHE_CONTROL, "no-store"))
            .body(der),
        Err(e) => internal(e),
    }
}

/// An answer with body `tag` and `content`, protected as asked, DER.
fn answer(
    state: &AppState,
    request: Option<&PkiHeader<'_>>,
    tag: u8,
    content: &[u8],
    protect: Protect,
    general_info: Option<Vec<cmpv2::r#gen::InfoTypeAndValue>>,
    extra: &[Vec<u8>],
) -> Result<Vec<u8>, String> {
    let body = wire::body(tag, content).map_err(|e| e.to_string())?;
    let signer = match &protect {
        Protect::Signed => state.cmp.signer(state),
        Protect::Mac(_) => None,
    };
    let (sender, sender_kid, alg) = match (&protect, &signer) {
        (Protect::Mac(mac), _) => (issuer_name(state)?, None, Some(mac.algorithm.clone())),
        (Protect::Signed, Some(signer)) => (
            GeneralName::DirectoryName(
                x509_cert::name::Name::from_der(&signer.subject_der).map_err(|e| e.to_string())?,
            ),
            Some(OctetString::new(signer.key_id.clone()).map_err(|e| e.to_string())?),
            Some(x509_cert::spki::AlgorithmIdentifierOwned {
                oid: protection::ECDSA_WITH_SHA256,
                parameters: None,
            }),
        ),
        // No signer (the CA key cannot sign now): unprotected, as RFC 4210 §5.1.3
        // allows for errors.
        (Protect::Signed, None) => (issuer_name(state)?, None, None),
    };
    let free: Option<Vec<Utf8StringRef<'_>>> = None;
    let header = wire::reply_header(request, sender, sender_kid, alg, general_info, free)
        .and_then(|h| h.to_der())
        .map_err(|e| e.to_string())?;
    let part = wire::protected_part(&header, &body).map_err(|e| e.to_string())?;
    let (protection, certs) = match (&protect, &signer) {
        (Protect::Mac(mac), _) => (
            Some(mac.protect(&part).map_err(|e| e.to_string())?),
            extra.to_vec(),
        ),
        (Protect::Signed, Some(signer)) => {
            let signature = signer
                .key
                .sign(&part)
                .map_err(|e| format!("signing a CMP answer: {e}"))?;
            let mut certs = vec![signer.cert_der.clone()];
            certs.extend(crate::api::est::wire::pem_ders(
                state.issuers.first().chain_pem(),
            ));
            for cert in extra {
                if !certs.contains(cert) {
                    certs.push(cert.clone());
                }
            }
            (
                Some(der::asn1::BitString::from_bytes(&signature).map_err(|e| e.to_string())?),
                certs,
            )
        }
        (Protect::Signed, None) => (None, extra.to_vec()),
    };
    wire::message(&header, &body, protection, &certs).map_err(|e| e.to_string())
}

/// The first issuer's subject: the sender of MAC-protected answers.
fn issuer_name(state: &AppState) -> Result<GeneralName, String> {
    let subject = x509_cert::name::Name::from_der(state.issuers.first().subject_der())
        .map_err(|e| e.to_string())?;
    Ok(GeneralName::DirectoryName(subject))
}

//! CMP enrollment: `ir`, `cr` and `p10cr` with a MAC (RFC 9483 §4.1.1, §4.1.4), `kur`
//! signed with the current certificate (§4.1.3), and `certConf` (§4.1.1).

use actix_web::{HttpRequest, HttpResponse};
use cmpv2::r#gen::InfoTypeAndValue;
use cmpv2::status::{CertConfirmContent, PkiFailureInfoValues as Fail, PkiStatus};
use crmf::request::{CertReqMessages, CertReqMsg};
use der::asn1::{AnyRef, Int, Null};
use der::{Decode, Encode};

use super::protection::{AnswerMac, Pbm, signature_verifies};
use super::wire::{
    CertifiedCertificate, Granted, GrantedResponse, IMPLICIT_CONFIRM, Kind, Request,
};
use super::{Protect, Refusal, Refused, Waiting, answer, respond};
use crate::api::renew::{Proven, renew_proven};
use crate::api::sign_csr::{enroll_verified, note_rejected};
use crate::api::{AppState, attribute, note_device};
use crate::ca::CertRequest;
use crate::clock::unix_now;
use crate::domain::DeviceId;
use crate::error::ApiError;
use crate::lifecycle::{Certified, storage_error};
use crate::store::{CertificateRegistry, TokenStore};
use crate::token::TokenService;

/// `ir`, `cr`, `p10cr`: the MAC's secret is the device's pending token (its JWT or
/// enrollment code), found from `senderKID` (the device id); then sign-csr's path.
pub(super) async fn first(
    req: &HttpRequest,
    state: &AppState,
    request: &Request<'_>,
) -> Result<HttpResponse, Refused> {
    let client = state.client_ip(req);
    let (device, secret, mac, claims) = verify_mac(state, request, client).await?;
    attribute(req, &device);
    let on_refusal = |e: ApiError, mac: &AnswerMac| -> Refused {
        note_rejected(state, &e, Some(&device), client);
        (Refusal::from(e), Some(Box::new(mac.clone())))
    };
    if let Some(label) = req.match_info().get("label")
        && label != claims.group
    {
        let e =
            ApiError::GroupUnknown(format!("{label} (the token is for group {})", claims.group));
        return Err(on_refusal(e, &mac));
    }
    if let Err(e) = state.limit_device(&device).await {
        return Err(on_refusal(e, &mac));
    }
    let (cert_req_id, cert) = match request.kind {
        Kind::P10cr => {
            let csr = x509_cert::request::CertReq::from_der(request.content)
                .and_then(|csr| csr.to_der())
                .map_err(|e| {
                    (
                        Refusal::new(Fail::BadDataFormat, format!("p10cr: {e}")),
                        Some(mac.clone()),
                    )
                })?;
            let pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", csr));
            let cert = enroll_verified(
                state,
                &claims,
                &device,
                CertRequest::Pkcs10(&pem),
                "cmp",
                client,
            )
            .await
            .map_err(|e| on_refusal(e, &mac))?;
            (-1, cert)
        }
        _ => {
            let message = one_request(request.content).map_err(|r| (r, Some(mac.clone())))?;
            let id = request_id(&message);
            let cert = enroll_verified(
                state,
                &claims,
                &device,
                CertRequest::Crmf(&message),
                "cmp",
                client,
            )
            .await
            .map_err(|e| on_refusal(e, &mac))?;
            (id, cert)
        }
    };
    let implicit = asks_implicit_confirm(request);
    if !implicit
        && let Some(transaction) = &request.header.trans_id
        && let Ok(serial) = serial_of(&cert)
    {
        state.cmp.wait_for_confirm(
            device.as_str(),
            transaction.as_bytes(),
            Waiting {
                secret,
                serial,
                cert_der: cert.der.clone(),
                since: std::time::Instant::now(),
            },
        );
    }
    Ok(issued(
        state,
        request,
        cert_req_id,
        &cert,
        Protect::Mac(mac),
        implicit,
    ))
}

/// `kur`: signed with the current certificate, the first of `extraCerts`; then mutual-TLS
/// renewal's path.
pub(super) async fn key_update(
    req: &HttpRequest,
    state: &AppState,
    request: &Request<'_>,
) -> Result<HttpResponse, Refused> {
    let presented = signed_by_ours(state, request)?;
    let record = state
        .store
        .certificate(&presented.serial)
        .await
        .map_err(|e| (Refusal::from(storage_error(e)), None))?;
    let device = match &record {
        Some(record) => record.device_id.clone(),
        None => DeviceId::parse(&presented.common_name)
            .map_err(|_| (Refusal::from(ApiError::CertificateUnknown), None))?,
    };
    note_device(&device);
    if let Some(label) = req.match_info().get("label")
        && record.as_ref().is_some_and(|r| r.group != label)
    {
        let e = ApiError::GroupUnknown(format!("{label} (not the certificate's group)"));
        return Err((e.into(), None));
    }
    let message = one_request(request.content).map_err(|r| (r, None))?;
    let proven = Proven {
        presented,
        record,
        proof: None,
        proof_kind: "cmp",
        protocol: "cmp",
    };
    let cert = renew_proven(
        req,
        state,
        &device,
        proven,
        CertRequest::Crmf(&message),
        unix_now(),
    )
    .await
    .map_err(|e| (Refusal::from(e), None))?;
    let implicit = asks_implicit_confirm(request);
    Ok(issued(
        state,
        request,
        request_id(&message),
        &cert,
        Protect::Signed,
        implicit,
    ))
}

/// `certConf` (RFC 4210 §5.3.18): answered `pkiConf`, protected as the enrollment was.
/// A certificate the device says it rejects is revoked (RFC 9483 §4.1.1).
pub(super) async fn confirm(
    state: &AppState,
    request: &Request<'_>,
) -> Result<HttpResponse, Refused> {
    let statuses = CertConfirmContent::from_der(request.content).map_err(|e| {
        (
            Refusal::new(Fail::BadDataFormat, format!("certConf: {e}")),
            None,
        )
    })?;
    let rejected = statuses.iter().any(|s| {
        s.status_info
            .as_ref()
            .is_some_and(|i| i.status == PkiStatus::Rejection)
    });
    let alg = request.header.protection_alg.as_ref();
    let pbm = alg
        .map(Pbm::of)
        .transpose()
        .map_err(|why| (Refusal::new(Fail::BadAlg, why), None))?
        .flatten();
    let (protect, serial) = match pbm {
        Some(pbm) => {
            let device = sender_kid(request).map_err(|r| (r, None))?;
            let transaction = request
                .header
                .trans_id
                .as_ref()
                .map(|t| t.as_bytes())
                .unwrap_or_default();
            let waiting = state.cmp.waiting(&device, transaction).ok_or_else(|| {
                (
                    Refusal::new(
                        Fail::BadRequest,
                        "no enrollment of this transaction waits for confirmation here (5 \
                         minutes, on the instance that enrolled; ask implicitConfirm)",
                    ),
                    None,
                )
            })?;
            let mac = request
                .protection
                .as_ref()
                .zip(alg)
                .and_then(|(p, alg)| pbm.check(&waiting.secret, &request.protected_part, p, alg))
                .ok_or_else(|| {
                    (
                        Refusal::new(Fail::BadMessageCheck, "the MAC does not verify"),
                        None,
                    )
                })?;
            // certHash (RFC 4210 §5.3.18): the certificate hashed with its signature's hash.
            if !statuses
                .iter()
                .all(|s| hash_matches(s.cert_hash.as_bytes(), &waiting.cert_der))
            {
                return Err((
                    Refusal::new(
                        Fail::BadCertId,
                        "certHash is not the hash of the certificate issued in this transaction",
                    ),
                    Some(mac),
                ));
            }
            state.cmp.confirmed(&device, transaction);
            (Protect::Mac(mac), Some(waiting.serial))
        }
        None => {
            signed_by_ours(state, request)?;
            (Protect::Signed, None)
        }
    };
    if rejected && let Some(serial) = serial {
        let revocation = crate::registry::Revocation {
            at: unix_now(),
            reason: crate::registry::Reason::CessationOfOperation,
        };
        let who = crate::audit::Actor::client(None);
        if state
            .lifecycle
            .revoke(&serial, revocation, &who)
            .await
            .is_ok()
        {
            state.lifecycle.refresh_crl().await;
        }
    }
    let content = Null
        .to_der()
        .map_err(|e| (Refusal::from(ApiError::from(anyhow::anyhow!("{e}"))), None))?;
    Ok(respond(answer(
        state,
        Some(&request.header),
        19,
        &content,
        protect,
        None,
        &[],
    )))
}

/// The device `senderKID` names, its pending token, the secret that verified the MAC,
/// and the answer's MAC.
async fn verify_mac(
    state: &AppState,
    request: &Request<'_>,
    client: Option<std::net::IpAddr>,
) -> Result<
    (
        DeviceId,
        Vec<u8>,
        Box<AnswerMac>,
        crate::token::VerifiedToken,
    ),
    Refused,
> {
    let alg = request.header.protection_alg.as_ref().ok_or_else(|| {
        (
            Refusal::new(
                Fail::BadMessageCheck,
                "first enrollment must be MAC-protected with the provisioning token or \
                 enrollment code as the secret and the device id as senderKID",
            ),
            None,
        )
    })?;
    let pbm = Pbm::of(alg)
        .map_err(|why| (Refusal::new(Fail::BadAlg, why), None))?
        .ok_or_else(|| {
            (
                Refusal::new(
                    Fail::BadMessageCheck,
                    "first enrollment must be MAC-protected (id-PasswordBasedMac)",
                ),
                None,
            )
        })?;
    let device = sender_kid(request).map_err(|r| (r, None))?;
    let device = DeviceId::parse(&device).map_err(|_| {
        (
            Refusal::new(Fail::BadRequest, "senderKID must be the device id"),
            None,
        )
    })?;
    note_device(&device);
    // One answer whether or not the device has a pending token: who is onboarding is not
    // told to whoever asks.
    const NOT_VERIFIED: &str =
        "the MAC does not verify with a pending provisioning token of this device";
    let refused = |text: &'static str| {
        let e = ApiError::TokenInvalid(text);
        note_rejected(state, &e, None, client);
        (
            Refusal::new(Fail::BadMessageCheck, format!("{}: {text}", e.code())),
            None,
        )
    };
    let pending = state
        .store
        .pending(&device)
        .await
        .map_err(|e| (Refusal::from(storage_error(e)), None))?;
    let Some((jti, facts)) = pending else {
        return Err(refused(NOT_VERIFIED));
    };
    let issued = state
        .tokens
        .issue_with(&device, jti, &facts)
        .map_err(|e| (Refusal::from(e), None))?;
    let Some(protection) = &request.protection else {
        return Err(refused("the message carries no protection"));
    };
    let (secret, mac) = [issued.code, issued.token]
        .into_iter()
        .map(String::into_bytes)
        .find_map(|secret| {
            pbm.check(&secret, &request.protected_part, protection, alg)
                .map(|mac| (secret, mac))
        })
        .ok_or_else(|| refused(NOT_VERIFIED))?;
    Ok((
        device.clone(),
        secret,
        mac,
        TokenService::verified_from(&device, jti, facts),
    ))
}

fn sender_kid(request: &Request<'_>) -> Result<String, Refusal> {
    let kid =
        request.header.sender_kid.as_ref().ok_or_else(|| {
            Refusal::new(Fail::BadRequest, "senderKID (the device id) is required")
        })?;
    String::from_utf8(kid.as_bytes().to_vec())
        .map_err(|_| Refusal::new(Fail::BadRequest, "senderKID must be the device id (UTF-8)"))
}

/// The certificate a signed request was signed with, checked as ours.
pub(super) fn signed_by_ours(
    state: &AppState,
    request: &Request<'_>,
) -> Result<crate::ca::PresentedCertificate, Refused> {
    let refused = |why: &str| (Refusal::new(Fail::BadMessageCheck, why.to_owned()), None);
    let (Some(alg), Some(protection)) = (&request.header.protection_alg, &request.protection)
    else {
        return Err(refused(
            "sign the request with the device's current certificate",
        ));
    };
    let Some(cert) = request.extra_certs.first() else {
        return Err(refused(
            "the signing certificate must be the first of extraCerts",
        ));
    };
    // Ours first (one signature check by our key), then the message's signature by it.
    let presented = state
        .issuers
        .check_presented(cert)
        .map_err(|e| (Refusal::new(Fail::SignerNotTrusted, e.to_string()), None))?;
    if !signature_verifies(cert, alg, &request.protected_part, protection) {
        return Err(refused(
            "the signature does not verify with the first of extraCerts",
        ));
    }
    Ok(presented)
}

/// The one request of a `CertReqMessages` (RFC 9483 §4.1.1 allows one).
fn one_request(content: &[u8]) -> Result<CertReqMsg, Refusal> {
    let mut messages = CertReqMessages::from_der(content)
        .map_err(|e| Refusal::new(Fail::BadDataFormat, format!("CertReqMessages: {e}")))?;
    if messages.len() != 1 {
        return Err(Refusal::new(
            Fail::BadRequest,
            "exactly one certificate request per message",
        ));
    }
    Ok(messages.remove(0))
}

fn request_id(message: &CertReqMsg) -> i64 {
    let bytes = message.cert_req.cert_req_id.as_bytes();
    if bytes.len() > 8 {
        return 0;
    }
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut value: i64 = if negative { -1 } else { 0 };
    for b in bytes {
        value = (value << 8) | i64::from(*b);
    }
    value
}

fn asks_implicit_confirm(request: &Request<'_>) -> bool {
    request
        .header
        .general_info
        .iter()
        .flatten()
        .any(|info| info.oid == IMPLICIT_CONFIRM)
}

fn serial_of(cert: &Certified) -> Result<[u8; 16], ()> {
    let bytes = hex::decode(&cert.serial_hex).map_err(|_| ())?;
    let tail = bytes.len().checked_sub(16).ok_or(())?;
    bytes[tail..].try_into().map_err(|_| ())
}

/// The `ip`, `cp` or `kup` with the certificate, its chain in `extraCerts` and the trust
/// anchor in `caPubs` (RFC 9483 §4.1.1).
fn issued(
    state: &AppState,
    request: &Request<'_>,
    cert_req_id: i64,
    cert: &Certified,
    protect: Protect,
    implicit: bool,
) -> HttpResponse {
    // The leaf for the body, the rest of its chain for extraCerts, the anchors for
    // caPubs: each as it was issued, DER.
    let built = (|| -> Result<Vec<u8>, der::Error> {
        let anchors = cert
            .chain_der
            .anchors
            .iter()
            .map(|der| AnyRef::from_der(der))
            .collect::<Result<Vec<_>, _>>()?;
        Granted {
            ca_pubs: (request.kind == Kind::Ir && !anchors.is_empty()).then_some(anchors),
            response: [GrantedResponse {
                cert_req_id: int(cert_req_id)?,
                status: super::wire::accepted(),
                certified_key_pair: CertifiedCertificate {
                    certificate: AnyRef::from_der(&cert.der)?,
                },
            }],
        }
        .to_der()
    })();
    let content = match built {
        Ok(content) => content,
        Err(e) => return super::internal(e),
    };
    let general_info = implicit.then(|| {
        vec![InfoTypeAndValue {
            oid: IMPLICIT_CONFIRM,
            value: der::Any::from_der(&[0x05, 0x00]).ok(),
        }]
    });
    respond(answer(
        state,
        Some(&request.header),
        request.kind.answer_tag(),
        &content,
        protect,
        general_info,
        &cert.chain_der.intermediates,
    ))
}

/// An INTEGER, minimally encoded.
fn int(value: i64) -> Result<Int, der::Error> {
    let bytes = value.to_be_bytes();
    let mut start = 0;
    while start < 7
        && ((bytes[start] == 0 && bytes[start + 1] & 0x80 == 0)
            || (bytes[start] == 0xff && bytes[start + 1] & 0x80 != 0))
    {
        start += 1;
    }
    Int::new(&bytes[start..])
}

/// Whether `hash` is `cert_der`'s SHA-256, -384 or -512 (by its length: the hash of the
/// certificate's signature, RFC 4210 §5.3.18).
fn hash_matches(hash: &[u8], cert_der: &[u8]) -> bool {
    use aws_lc_rs::digest;
    let algorithm = match hash.len() {
        32 => &digest::SHA256,
        48 => &digest::SHA384,
        64 => &digest::SHA512,
        _ => return false,
    };
    digest::digest(algorithm, cert_der).as_ref() == hash
}

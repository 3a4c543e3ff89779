//! EST (RFC 7030), a front door beside the JSON API, on the API's TLS port:
//! `/.well-known/est/[<group>/]` `cacerts`, `simpleenroll`, `simplereenroll` and
//! `csrattrs`. The optional label (§3.2.2) names an enrollment group. Enrollment goes
//! through the JSON API's paths: `simpleenroll` is sign-csr with HTTP Basic auth
//! (username the device id, password its provisioning token or enrollment code, used
//! once), `simplereenroll` is mutual-TLS renewal. Refusals are the API's, said as short
//! text with the same HTTP status; 401s carry `WWW-Authenticate: Basic`.

pub(super) mod doc;
pub mod wire;

use actix_web::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use base64::Engine;

use super::body::JsonBody;
use super::onboarding::issue_token;
use super::renew::{Proven, renew_proven};
use super::sign_csr::{enroll_verified, note_rejected};
use super::{AppState, attribute, note_device};
use crate::auth::OnboardingAuth;
use crate::ca::{CertRequest, CertificateAuthority};
use crate::clock::unix_now;
use crate::domain::DeviceId;
use crate::error::ApiError;
use crate::lifecycle::{Certified, storage_error};
use crate::net::{OverTls, PeerCertificate};
use crate::store::CertificateRegistry;
use crate::token::{TokenService, VerifiedToken};

const REALM: &str = "Basic realm=\"provisiond EST\", charset=\"UTF-8\"";

/// Why an EST request is refused: the API's error, or a request for Basic credentials.
enum Refusal {
    Api(ApiError),
    /// No credentials: 401 with `WWW-Authenticate` and an empty body (Bouncy Castle
    /// asks without them first and reads a body only when there is none).
    Challenge,
    /// Not over TLS.
    NeedsTls,
    /// A label that names no group.
    UnknownLabel,
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl Refusal {
    fn answer(self) -> HttpResponse {
        match self {
            Self::Challenge => HttpResponse::Unauthorized()
                .insert_header((WWW_AUTHENTICATE, REALM))
                .finish(),
            Self::NeedsTls => text(
                HttpResponse::Forbidden(),
                "EST is served over TLS only (RFC 7030 section 3.3): use the API's HTTPS port (server.tls)",
            ),
            Self::UnknownLabel => text(
                HttpResponse::NotFound(),
                "no enrollment group of that name (the EST label is a group)",
            ),
            Self::Api(e) => {
                // The API's status and headers (Retry-After), the message as text.
                let json = e.error_response();
                let mut answer = HttpResponse::build(json.status());
                for (name, value) in json.headers() {
                    if name != CONTENT_TYPE && name != CONTENT_LENGTH {
                        answer.insert_header((name.clone(), value.clone()));
                    }
                }
                if json.status() == actix_web::http::StatusCode::UNAUTHORIZED {
                    answer.insert_header((WWW_AUTHENTICATE, REALM));
                }
                let message = match &e {
                    // The cause is for the log, as the JSON API keeps it.
                    ApiError::Internal(cause) => {
                        tracing::error!(error = %cause, "EST: internal error");
                        "internal error".to_owned()
                    }
                    e => e.to_string(),
                };
                text(answer, &format!("{}: {message}", e.code()))
            }
        }
    }
}

fn text(mut answer: actix_web::HttpResponseBuilder, message: &str) -> HttpResponse {
    answer
        .content_type("text/plain; charset=utf-8")
        .body(format!("{message}\n"))
}

fn respond(result: Result<HttpResponse, Refusal>) -> HttpResponse {
    result.unwrap_or_else(Refusal::answer)
}

/// The issuer of the group an EST label names (`None` without a label).
fn issuer_of_label<'a>(
    req: &HttpRequest,
    state: &'a AppState,
) -> Result<Option<&'a std::sync::Arc<CertificateAuthority>>, Refusal> {
    let Some(label) = req.match_info().get("label") else {
        return Ok(None);
    };
    let groups = state.groups.current();
    let group = groups.get(label).ok_or(Refusal::UnknownLabel)?;
    state
        .issuers
        .get(&group.issuer)
        .map(Some)
        .ok_or(Refusal::UnknownLabel)
}

/// `GET cacerts` (§4.1), certs-only: with a label, its group's issuer's chain; without,
/// every issuer's chain (one CA without `[[issuers]]`), since a device enrolling without
/// a label may be in any group and checks what it gets against these.
pub async fn cacerts(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    respond((|| {
        if req.conn_data::<OverTls>().is_none() {
            return Err(Refusal::NeedsTls);
        }
        let pem = match issuer_of_label(&req, &state)? {
            Some(issuer) => issuer.chain_pem(),
            None => state.issuers.bundle_pem(),
        };
        let der = wire::certs_only(&wire::pem_ders(pem))?;
        Ok(wire::pkcs7_answer(&der))
    })())
}

/// `GET csrattrs` (§4.5): nothing asked of the CSR beyond what the group's policy checks,
/// which RFC 7030 says as 204.
pub async fn csrattrs(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    respond((|| {
        if req.conn_data::<OverTls>().is_none() {
            return Err(Refusal::NeedsTls);
        }
        issuer_of_label(&req, &state)?;
        Ok(HttpResponse::NoContent().finish())
    })())
}

/// `POST simpleenroll` (§4.2.1): Basic auth with the device id and its provisioning
/// token or enrollment code, a CSR; sign-csr's checks and single use.
pub async fn simpleenroll(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    first_enrollment(req, payload, state, false).await
}

/// `POST serverkeygen` (§4.4): as `simpleenroll`, but the server makes the device's key
/// (the first of P-256 and Ed25519 its group takes) and answers it beside the
/// certificate. The request's CSR is checked as `simpleenroll` checks it; its key is
/// not certified.
pub async fn serverkeygen(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    first_enrollment(req, payload, state, true).await
}

async fn first_enrollment(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    server_key: bool,
) -> HttpResponse {
    let mut verified = None;
    let result = enroll(&req, payload, &state, &mut verified, server_key).await;
    if let Err(Refusal::Api(e)) = &result {
        note_rejected(&state, e, verified.as_ref(), state.client_ip(&req));
    }
    respond(result)
}

async fn enroll(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    verified: &mut Option<DeviceId>,
    server_key: bool,
) -> Result<HttpResponse, Refusal> {
    if req.conn_data::<OverTls>().is_none() {
        return Err(Refusal::NeedsTls);
    }
    issuer_of_label(req, state)?;
    let (user, password) = basic_credentials(req)?;
    let raw = JsonBody::read_raw(req, payload, state.body_limit, state.body_timeout).await?;
    let client = state.client_ip(req);
    state.limit_ip(client).await?;
    let device = DeviceId::parse(&user).map_err(|_| {
        ApiError::TokenInvalid("the username must be the device id the token was issued for")
    })?;
    note_device(&device);
    // A derived key onboards too, and onboarding counts the device's allowance once.
    let (claims, counted) =
        match derived_key_enrollment(req, state, &device, &password, client).await? {
            Some(claims) => (claims, true),
            None => (state.tokens.verify_for(&password, &device)?, false),
        };
    if let Ok(subject) = DeviceId::parse(&claims.subject) {
        *verified = Some(subject);
    }
    if claims.subject != device.as_str() {
        return Err(ApiError::DeviceMismatch.into());
    }
    attribute(req, &device);
    if let Some(label) = req.match_info().get("label")
        && label != claims.group
    {
        return Err(ApiError::GroupUnknown(format!(
            "{label} (the token is for group {})",
            claims.group
        ))
        .into());
    }
    if !counted {
        state.limit_device(&device).await?;
    }
    let csr = wire::csr_pem(raw.bytes())?;
    if !server_key {
        let cert = enroll_verified(
            state,
            &claims,
            &device,
            CertRequest::Pkcs10(&csr),
            "est",
            client,
        )
        .await?;
        return issued(&cert);
    }
    // The request's CSR is refused as simpleenroll would refuse it; the key certified
    // is the one made here.
    let group = state
        .groups
        .current()
        .get(&claims.group)
        .cloned()
        .ok_or_else(|| ApiError::GroupUnknown(claims.group.clone()))?;
    crate::ca::check_csr(&csr, &device, &group.keys)?;
    let (key, made_csr) = crate::ca::server_key(&device, &group.keys)?;
    let cert = enroll_verified(
        state,
        &claims,
        &device,
        CertRequest::Pkcs10(&made_csr),
        "est",
        client,
    )
    .await?;
    Ok(wire::server_key_answer(
        &key.serialize_der(),
        &wire::certs_only(std::slice::from_ref(issued_der(&cert)?))?,
    ))
}

/// A derived-mode group's device key as the password (43 base64url characters, as
/// `provisiond derive-key` prints it; never a code or a JWT): onboarding and
/// enrollment in one request, for clients that cannot sign each request. Once per
/// device: one the registry holds a certificate of is refused, and re-enrolls with its
/// certificate (`simplereenroll`). `None`: the password is not such a key for this
/// group, and is read as a token or code.
///
/// Errors: 401 `unauthorized` (the key is not the device's, or it enrolled before), and
/// onboarding's.
async fn derived_key_enrollment(
    req: &HttpRequest,
    state: &AppState,
    device: &DeviceId,
    password: &str,
    client: Option<std::net::IpAddr>,
) -> Result<Option<VerifiedToken>, ApiError> {
    if crate::auth::derived::decode_key(password).is_none() {
        return Ok(None);
    }
    let groups = state.groups.current();
    let name = req
        .match_info()
        .get("label")
        .unwrap_or(crate::groups::DEFAULT_GROUP);
    let Some(group) = groups.get(name) else {
        return Ok(None);
    };
    let OnboardingAuth::Derived(keys) = &group.onboarding else {
        return Ok(None);
    };
    // A new certificate's common name, as onboarding checks it.
    DeviceId::parse_onboarding(device.as_str()).map_err(ApiError::InvalidDeviceId)?;
    if !keys.accepts_key(device.as_str(), password) {
        return Err(ApiError::Unauthorized("device key not accepted"));
    }
    // The key never changes, so it is taken once: a captured password cannot enroll a
    // device that has. (Two requests racing at the first enrollment can both pass this
    // read, and both enroll: only a holder of the key can race it.)
    let records = state
        .store
        .certificates_of(device)
        .await
        .map_err(storage_error)?;
    if !records.is_empty() {
        return Err(ApiError::Unauthorized(
            "this device enrolled with its key before: re-enroll with its certificate \
             (simplereenroll), or onboard with a signed request",
        ));
    }
    let (issued, facts) = issue_token(req, state, &groups, group, device, client).await?;
    Ok(Some(TokenService::verified_from(device, issued.jti, facts)))
}

/// `POST simplereenroll` (§4.2.2): the current certificate as TLS client certificate,
/// a CSR; mutual-TLS renewal's checks.
pub async fn simplereenroll(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    respond(reenroll(&req, payload, &state).await)
}

async fn reenroll(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, Refusal> {
    if req.conn_data::<OverTls>().is_none() {
        return Err(Refusal::NeedsTls);
    }
    let Some(PeerCertificate(der)) = req.conn_data::<PeerCertificate>() else {
        return Err(ApiError::RenewalProofInvalid(
            "simplereenroll needs the current certificate as the TLS client certificate".into(),
        )
        .into());
    };
    let raw = JsonBody::read_raw(req, payload, state.body_limit, state.body_timeout).await?;
    state.limit_ip(state.client_ip(req)).await?;
    let presented = state
        .issuers
        .check_presented(der)
        .map_err(|e| ApiError::RenewalProofInvalid(e.into()))?;
    issuer_of_label(req, state)?;
    // Whose certificate it is, the registry says; one it does not know is its common
    // name's, and refused as unknown by the renewal's store step.
    let record = state
        .store
        .certificate(&presented.serial)
        .await
        .map_err(storage_error)?;
    let (device, group) = match &record {
        Some(record) => (record.device_id.clone(), record.group.as_str()),
        None => (
            DeviceId::parse(&presented.common_name).map_err(|_| ApiError::CertificateUnknown)?,
            crate::groups::DEFAULT_GROUP,
        ),
    };
    // A label is the certificate's group: a renewal keeps its group.
    if let Some(label) = req.match_info().get("label")
        && label != group
    {
        return Err(ApiError::GroupUnknown(format!(
            "{label} (the certificate is of group {group})"
        ))
        .into());
    }
    note_device(&device);
    let csr = wire::csr_pem(raw.bytes())?;
    let proven = Proven {
        presented,
        record,
        proof: None,
        proof_kind: "mtls",
        protocol: "est",
    };
    let cert = renew_proven(
        req,
        state,
        &device,
        proven,
        CertRequest::Pkcs10(&csr),
        unix_now(),
    )
    .await?;
    issued(&cert)
}

/// The certificate just issued, alone, certs-only (§4.2.3).
fn issued(cert: &Certified) -> Result<HttpResponse, Refusal> {
    Ok(wire::pkcs7_answer(&wire::certs_only(
        std::slice::from_ref(issued_der(cert)?),
    )?))
}

/// The certificate just issued, DER (empty only for a handover whose PEM did not read).
fn issued_der(cert: &Certified) -> Result<&Vec<u8>, ApiError> {
    if cert.der.is_empty() {
        return Err(ApiError::from(anyhow::anyhow!(
            "an issued certificate without DER"
        )));
    }
    Ok(&cert.der)
}

/// `Authorization: Basic` (RFC 7617): the user is everything before the last `:` (a
/// device id may hold `:`; a token or code never does).
fn basic_credentials(req: &HttpRequest) -> Result<(String, String), Refusal> {
    let Some(value) = req.headers().get(AUTHORIZATION) else {
        return Err(Refusal::Challenge);
    };
    let malformed = || ApiError::TokenInvalid("malformed Basic credentials");
    let value = value.to_str().map_err(|_| malformed())?;
    let Some(encoded) = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, rest)| rest.trim())
    else {
        return Err(Refusal::Challenge);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (user, password) = decoded.rsplit_once(':').ok_or_else(malformed)?;
    Ok((user.to_owned(), password.to_owned()))
}

//! `POST /api/v1/sign-csr`: trade a provisioning token and a CSR for a certificate.
//!
//! The checks run in the order of the design, so that nothing a client gets wrong
//! burns its token: only a request that would be signed consumes it.

use std::net::IpAddr;

use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use super::answers::certified;
use super::body::JsonBody;
use super::onboarding::shown_group;
use super::{AppState, attribute, note_device};
use crate::auth::bearer;
use crate::ca::CertRequest;
use crate::domain::DeviceId;
use crate::error::ApiError;
use crate::lifecycle::Certified;
use crate::metrics::ReasonLabel;
use crate::request_facts;
use crate::token::VerifiedToken;

pub async fn sign_csr(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let client = state.client_ip(&req);
    let mut verified = None;
    let result = sign(&req, payload, &state, client, &mut verified).await;
    if let Err(e) = &result {
        note_rejected(&state, e, verified.as_ref(), client);
    }
    result
}

/// A credential refused for a client's mistake: counted and audited, under the device
/// it was verified for when it was. A hook's denial touched no token: it is audited as
/// the hook's decision.
pub(super) fn note_rejected(
    state: &AppState,
    e: &ApiError,
    verified: Option<&DeviceId>,
    client: Option<IpAddr>,
) {
    if e.status_code().is_client_error() && !matches!(e, ApiError::HookDenied(_)) {
        state
            .metrics
            .tokens_rejected
            .get_or_create(&ReasonLabel { reason: e.code() })
            .inc();
        state.audit.token_rejected(verified, e.code(), client);
    }
}

async fn sign(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    client: Option<IpAddr>,
    verified: &mut Option<DeviceId>,
) -> Result<HttpResponse, ApiError> {
    let raw = JsonBody::read_raw(req, payload, state.body_limit, state.body_timeout).await?;
    state.limit_ip(client).await?;

    // 1. A valid JWT, or its short form (which names its device only with the body's
    // device_id, so that is read first).
    let token = bearer(req).ok_or(ApiError::TokenInvalid(
        "an `Authorization: Bearer <provisioning token>` header is required",
    ))?;
    // The body read for a code is the one used below: parsed once.
    let mut read = None;
    let claims = if crate::enrollment_code::is_code(token) {
        let body = read.insert(raw.json()?);
        state.tokens.verify_for(token, &body.device_id()?)?
    } else {
        state.tokens.verify(token)?
    };
    request_facts::note(|facts| facts.jti = Some(claims.jti.short().to_owned()));
    // From here on the caller acts for the token's device: refusals are filed under it.
    if let Ok(subject) = DeviceId::parse(&claims.subject) {
        attribute(req, &subject);
        *verified = Some(subject);
    }

    // 2. Issued for this device.
    let body = match read {
        Some(body) => body,
        None => raw.json()?,
    };
    let device = body.device_id()?;
    note_device(&device);
    if claims.subject != device.as_str() {
        return Err(ApiError::DeviceMismatch);
    }
    // Counted against the device the token was issued for, never another one.
    state.limit_device(&device).await?;

    let csr = body
        .str_field("csr")
        .ok_or_else(|| ApiError::InvalidCsr("csr (a PEM string) is required".into()))?;
    Ok(certified(
        enroll_verified(
            state,
            &claims,
            &device,
            CertRequest::Pkcs10(csr),
            "http",
            client,
        )
        .await?,
    ))
}

/// Steps 3 to 7 for `device`, whose credential `claims` verified and names it: the
/// request (a PEM CSR, or CMP's CRMF) checked against the token's group, the profile and
/// hook, then the sign, consume and record step. sign-csr, EST's `simpleenroll` and
/// CMP's `ir`, `cr` and `p10cr` all come here.
///
/// Errors: 400 `invalid_csr`, `csr_signature_invalid`, 403 `group_unknown`,
/// `hook_denied`, `device_blocked`, 401 `token_used`, 422 `csr_policy_violation`, 503.
pub(super) async fn enroll_verified(
    state: &AppState,
    claims: &VerifiedToken,
    device: &DeviceId,
    request: CertRequest<'_>,
    protocol: &'static str,
    client: Option<IpAddr>,
) -> Result<Certified, ApiError> {
    // 3 and 4. A CSR that parses, proves possession of its key, and meets the policy.
    // The token's group: its key types, profile and hook.
    let groups = state.groups.current();
    let group = groups
        .get(&claims.group)
        .ok_or_else(|| ApiError::GroupUnknown(shown_group(&claims.group)))?;
    let request = request.check(device, &group.keys)?;

    // 5. The group's profile and pre-issuance hook: before the token is used, so that a
    // refusal burns nothing.
    let vetted = state
        .lifecycle
        .vet(group, device, false, &request, protocol, client)
        .await?;

    // 6 and 7. Sign, then consume the token and record the certificate in one atomic
    // step: one request wins, on any instance, and only its certificate is handed out
    // (the others' are dropped unseen).
    state
        .lifecycle
        .enroll(
            device,
            &claims.jti,
            claims.epoch,
            &request.key,
            vetted,
            client,
        )
        .await
}

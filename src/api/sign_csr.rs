//! `POST /api/v1/sign-csr`: trade a provisioning token and a CSR for a certificate.
//!
//! The checks run in the order of the design, so that nothing a client gets wrong
//! burns its token: only a request that would be signed consumes it.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;
use tracing::Span;

use super::AppState;
use super::body::JsonBody;
use super::onboarding::storage_error;
use crate::auth::bearer;
use crate::ca::check_csr;
use crate::error::ApiError;
use crate::store::{ConsumeOutcome, TokenStore};
use crate::timefmt::{rfc3339, rfc3339_now};

pub async fn sign_csr(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // 1. A valid JWT.
    let token = bearer(&req).ok_or(ApiError::TokenInvalid(
        "an `Authorization: Bearer <provisioning token>` header is required",
    ))?;
    let claims = state.tokens.verify(token)?;
    Span::current().record("jti", claims.jti.short());

    // 2. Issued for this device.
    let body = JsonBody::read(&req, payload, state.body_limit).await?;
    let device = body.device_id()?;
    Span::current().record("device_id", device.as_str());
    if claims.subject != device.as_str() {
        return Err(ApiError::DeviceMismatch);
    }

    // 3 and 4. A CSR that parses, proves possession of its key, and meets the policy.
    let csr = body
        .str_field("csr")
        .ok_or_else(|| ApiError::InvalidCsr("csr (a PEM string) is required".into()))?;
    let key = check_csr(csr, &device, state.ca.policy())?;

    // 5. Consume the token: one request wins, on any instance.
    match state
        .store
        .consume(&device, &claims.jti)
        .await
        .map_err(storage_error)?
    {
        ConsumeOutcome::Consumed => {}
        ConsumeOutcome::NotFound => return Err(ApiError::TokenUsed),
    }

    // 6. Sign.
    let cert = state
        .ca
        .issue(&device, &key)
        .map_err(|e| anyhow::anyhow!("signing failed after the token was consumed: {e}"))?;
    Span::current().record("serial", cert.serial_hex.as_str());
    Span::current().record("key_type", tracing::field::display(key.key_type()));
    Ok(HttpResponse::Ok().json(json!({
        "success": true,
        "certificate": cert.pem,
        "ca_certificate": state.ca.chain_pem(),
        "serial_number": cert.serial_hex,
        "expires_at": rfc3339(cert.not_after),
        "timestamp": rfc3339_now(),
    })))
}

//! `POST /api/v1/onboarding`: a single-use provisioning token for a device.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;
use tracing::Span;

use super::AppState;
use super::body::JsonBody;
use crate::error::ApiError;
use crate::store::{StoreError, TokenStore};
use crate::timefmt::rfc3339_now;

pub async fn onboarding(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.onboarding.check(&req)?;
    let body = JsonBody::read(&req, payload, state.body_limit).await?;
    let device = body.device_id()?;
    Span::current().record("device_id", device.as_str());

    let issued = state.tokens.issue(&device)?;
    Span::current().record("jti", issued.jti.short());
    state
        .store
        .issue(&device, &issued.jti, state.tokens.ttl())
        .await
        .map_err(storage_error)?;

    Ok(HttpResponse::Ok().json(json!({
        "success": true,
        "provisioning_token": issued.token,
        "expires_in": issued.expires_at - issued.issued_at,
        "timestamp": rfc3339_now(),
    })))
}

pub fn storage_error(e: StoreError) -> ApiError {
    tracing::warn!(error = %e, "token store unavailable");
    ApiError::StorageUnavailable
}

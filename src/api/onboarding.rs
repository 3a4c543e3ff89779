//! `POST /api/v1/onboarding`: a single-use provisioning token for a device.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use tracing::Span;

use super::body::JsonBody;
use super::{AppState, attribute, no_store, note_device};
use crate::activity::Happened;
use crate::auth::{OnboardingAuth, authorization};
use crate::clock::unix_now;
use crate::domain::{DeviceId, Jti};
use crate::error::ApiError;
use crate::lifecycle::storage_error;
use crate::store::{Issued, TokenStore};
use crate::timefmt::rfc3339_now;

#[derive(Serialize, utoipa::ToSchema)]
pub struct OnboardingResponse {
    pub success: bool,
    /// The JWT to send to sign-csr as `Authorization: Bearer <token>`; single use.
    pub provisioning_token: String,
    /// Seconds the token stays valid.
    pub expires_in: u64,
    pub timestamp: String,
}

pub async fn onboarding(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let raw = JsonBody::read_raw(&req, payload, state.body_limit, state.body_timeout).await?;
    let client = state.client_ip(&req);
    state.limit_ip(client).await?;
    state.onboarding.check_key(&req)?;
    let body = raw.json()?;
    let device = body.device_id()?;
    // A new token makes a new certificate, whose common name the id becomes.
    DeviceId::parse_onboarding(device.as_str()).map_err(ApiError::InvalidDeviceId)?;
    note_device(&device);
    if let OnboardingAuth::Derived(keys) = &state.onboarding {
        let ts = keys.verify(authorization(&req), device.as_str(), unix_now())?;
        let fresh = state
            .store
            .first_use(&device, ts, keys.clock_skew())
            .await
            .map_err(storage_error)?;
        if !fresh {
            return Err(ApiError::Unauthorized(
                "this device signature was already used; sign a new timestamp",
            ));
        }
    }
    // The enrollment key (or the open mode) was checked above, the device's own key here.
    attribute(&req, &device);
    state.policy.check(&device)?;
    // Only after authentication: otherwise anyone could use up a device's allowance.
    state.limit_device(&device).await?;

    // A token Redis may or may not have kept (it stopped answering mid-write) is never
    // also put into memory: the next attempt has a new jti (and goes to memory, Redis
    // being marked away by then).
    let mut jti = Jti::random();
    for attempt in 1.. {
        match state
            .store
            .issue(&device, &jti, state.tokens.ttl())
            .await
            .map_err(storage_error)?
        {
            Issued::Issued => break,
            Issued::Blocked => return Err(ApiError::DeviceBlocked),
            Issued::Unsure if attempt < 3 => jti = Jti::random(),
            Issued::Unsure => return Err(ApiError::StorageUnavailable),
        }
    }
    Span::current().record("jti", jti.short());
    let issued = state.tokens.issue(&device, jti, state.store.epoch())?;
    state.metrics.tokens_issued.inc();
    state.activity.count(Happened::TokenIssued);
    state.audit.token_issued(&device, &issued.jti, client);

    Ok(no_store(HttpResponse::Ok()).json(OnboardingResponse {
        success: true,
        provisioning_token: issued.token,
        expires_in: issued.expires_at - issued.issued_at,
        timestamp: rfc3339_now(),
    }))
}

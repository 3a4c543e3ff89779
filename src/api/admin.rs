//! Admin endpoints, behind `Authorization: Bearer <admin key>` (`ADMIN_KEYS`): see a
//! device's pending token, certificates and block; revoke the token, or everything the
//! device holds (and block it); lift a block.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::AppState;
use super::answers::CertificateView;
use super::body::JsonBody;
use super::no_store;
use crate::audit::Actor;
use crate::clock::unix_now;
use crate::domain::DeviceId;
use crate::error::ApiError;
use crate::lifecycle::storage_error;
use crate::registry::{Block, Reason, Revocation};
use crate::store::{CertificateRegistry, TokenStore};
use crate::timefmt::{rfc3339, unix_rfc3339};

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeviceStatus {
    pub success: bool,
    pub device_id: String,
    /// Whether a provisioning token is pending for the device.
    pub pending: bool,
    /// Seconds until the pending token expires.
    pub expires_in: Option<u64>,
    pub expires_at: Option<String>,
    /// Every certificate issued to the device (kept until 30 days after it expired).
    pub certificates: Vec<CertificateView>,
    /// Set when the device is blocked: it may not onboard or renew.
    pub blocked: Option<BlockView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BlockView {
    pub blocked_at: String,
    /// RFC 5280 name of the reason given.
    pub reason: &'static str,
}

impl BlockView {
    pub fn of(block: Block) -> Self {
        Self {
            blocked_at: unix_rfc3339(block.at),
            reason: block.reason.as_str(),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeviceRevoked {
    pub success: bool,
    pub device_id: String,
    /// Whether there was a pending token to revoke.
    pub token_revoked: bool,
    /// The device's certificates as they now stand (every one revoked or expired).
    pub certificates: Vec<CertificateView>,
    /// The block that stands, when the device is blocked.
    pub blocked: Option<BlockView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Unblocked {
    pub success: bool,
    pub device_id: String,
    /// Whether the device was blocked.
    pub unblocked: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Revoked {
    pub success: bool,
    pub device_id: String,
    /// Whether there was a pending token to revoke.
    pub revoked: bool,
}

/// The device an admin request is about, once the caller is known to be an admin, and
/// who that admin is.
fn authorized_device(
    state: &AppState,
    req: &HttpRequest,
    path: &str,
) -> Result<(DeviceId, Actor), ApiError> {
    let who = state.authorize_admin(req)?;
    let device = DeviceId::parse(path).map_err(ApiError::InvalidDeviceId)?;
    super::note_device(&device);
    super::attribute(req, &device);
    Ok((device, who))
}

pub async fn device_status(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (device, _) = authorized_device(&state, &req, &path)?;
    let left = state
        .store
        .pending_for(&device)
        .await
        .map_err(storage_error)?;
    let certificates = state
        .store
        .certificates_of(&device)
        .await
        .map_err(storage_error)?;
    let blocked = state.store.blocked(&device).await.map_err(storage_error)?;
    Ok(no_store(HttpResponse::Ok()).json(DeviceStatus {
        success: true,
        device_id: device.to_string(),
        pending: left.is_some(),
        expires_in: left.map(|d| d.as_secs()),
        expires_at: left.map(|d| rfc3339(time::OffsetDateTime::now_utc() + d)),
        certificates: certificates.iter().map(CertificateView::of).collect(),
        blocked: blocked.map(BlockView::of),
    }))
}

pub async fn revoke_token(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (device, who) = authorized_device(&state, &req, &path)?;
    let revoked = state
        .store
        .revoke_device(&device)
        .await
        .map_err(storage_error)?;
    if revoked {
        state.metrics.tokens_revoked.inc();
    }
    state.audit.token_revoked(&device, revoked, &who);
    Ok(no_store(HttpResponse::Ok()).json(Revoked {
        success: true,
        device_id: device.to_string(),
        revoked,
    }))
}

/// `POST /api/v1/devices/{id}/revoke`, body `{"reason": "keyCompromise", "block": true}`
/// (both optional): revokes every valid certificate of the device and its pending token,
/// and with `block` stops it from onboarding or renewing.
///
/// The certificates are read first, so that a store that cannot answer (Redis away)
/// refuses the request before anything changed. The block comes before the rest: no
/// token or renewal can slip in between. A request cut off half-way is finished by
/// sending it again: every step is idempotent.
pub async fn revoke_device(
    req: HttpRequest,
    payload: web::Payload,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let raw = JsonBody::read_raw(&req, payload, state.body_limit, state.body_timeout).await?;
    let (device, who) = authorized_device(&state, &req, &path)?;
    let (reason, block) = if raw.is_empty() {
        (Reason::Unspecified, false)
    } else {
        let body = raw.json()?;
        (body.reason()?, body.bool_field_or_absent("block")?)
    };
    let now = unix_now();
    let held = state
        .store
        .certificates_of(&device)
        .await
        .map_err(storage_error)?;
    let blocked = if block {
        let standing = state
            .store
            .block(&device, Block { at: now, reason })
            .await
            .map_err(storage_error)?;
        state
            .audit
            .device_blocked(&device, standing.reason.as_str(), &who);
        Some(standing)
    } else {
        None
    };
    let token_revoked = state
        .store
        .revoke_device(&device)
        .await
        .map_err(storage_error)?;
    if token_revoked {
        state.metrics.tokens_revoked.inc();
    }
    state.audit.token_revoked(&device, token_revoked, &who);
    let revocation = Revocation { at: now, reason };
    // With a block, renewals recorded since the first read are revoked too (the block
    // stops any after it).
    let held = if block {
        state
            .store
            .certificates_of(&device)
            .await
            .map_err(storage_error)?
    } else {
        held
    };
    let mut certificates = Vec::with_capacity(held.len());
    for record in held {
        let record = if record.status(now) == "valid" {
            state
                .lifecycle
                .revoke(&record.serial, revocation, &who)
                .await
                .map_err(storage_error)?
                .unwrap_or(record)
        } else {
            record
        };
        certificates.push(CertificateView::of(&record));
    }
    state.lifecycle.refresh_crl().await;
    Ok(no_store(HttpResponse::Ok()).json(DeviceRevoked {
        success: true,
        device_id: device.to_string(),
        token_revoked,
        certificates,
        blocked: blocked.map(BlockView::of),
    }))
}

/// `DELETE /api/v1/devices/{id}/block`: the device may onboard and renew again.
pub async fn unblock(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (device, who) = authorized_device(&state, &req, &path)?;
    let unblocked = state.store.unblock(&device).await.map_err(storage_error)?;
    state.audit.device_unblocked(&device, unblocked, &who);
    Ok(no_store(HttpResponse::Ok()).json(Unblocked {
        success: true,
        device_id: device.to_string(),
        unblocked,
    }))
}

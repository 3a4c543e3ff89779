//! Admin endpoints, behind `Authorization: Bearer <admin key>` (`ADMIN_KEYS`): see a
//! device's pending token and certificates, and revoke the token.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::AppState;
use super::certificates::CertificateView;
use super::{no_store, storage_error};
use crate::audit;
use crate::domain::DeviceId;
use crate::error::ApiError;
use crate::store::{CertificateRegistry, TokenStore};
use crate::timefmt::rfc3339;

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
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Revoked {
    pub success: bool,
    pub device_id: String,
    /// Whether there was a pending token to revoke.
    pub revoked: bool,
}

/// The device an admin request is about, once the caller is known to be an admin.
fn authorized_device(
    state: &AppState,
    req: &HttpRequest,
    path: &str,
) -> Result<DeviceId, ApiError> {
    state.authorize_admin(req)?;
    DeviceId::parse(path).map_err(ApiError::InvalidDeviceId)
}

pub async fn device_status(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let device = authorized_device(&state, &req, &path)?;
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
    Ok(no_store(HttpResponse::Ok()).json(DeviceStatus {
        success: true,
        device_id: device.to_string(),
        pending: left.is_some(),
        expires_in: left.map(|d| d.as_secs()),
        expires_at: left.map(|d| rfc3339(time::OffsetDateTime::now_utc() + d)),
        certificates: certificates.iter().map(CertificateView::of).collect(),
    }))
}

pub async fn revoke_token(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let device = authorized_device(&state, &req, &path)?;
    let revoked = state
        .store
        .revoke_device(&device)
        .await
        .map_err(storage_error)?;
    if revoked {
        state.metrics.tokens_revoked.inc();
    }
    audit::token_revoked(&device, revoked, state.client_ip(&req));
    Ok(no_store(HttpResponse::Ok()).json(Revoked {
        success: true,
        device_id: device.to_string(),
        revoked,
    }))
}

//! Admin endpoints for issued certificates: look one up by serial, revoke it.

use actix_web::{HttpRequest, HttpResponse, web};

use super::answers::{CertificateAnswer, CertificateView};
use super::body::JsonBody;
use super::{AppState, no_store};
use crate::clock::unix_now;
use crate::error::ApiError;
use crate::lifecycle::storage_error;
use crate::registry::{CertificateRecord, Reason, Revocation, parse_serial};
use crate::store::CertificateRegistry;

fn serial(path: &str) -> Result<[u8; 16], ApiError> {
    parse_serial(path).ok_or(ApiError::InvalidSerial)
}

fn answer(record: &CertificateRecord) -> HttpResponse {
    no_store(HttpResponse::Ok()).json(CertificateAnswer {
        success: true,
        certificate: CertificateView::of(record),
    })
}

/// `GET /api/v1/certificates/{serial}`.
pub async fn certificate(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize_admin(&req)?;
    let serial = serial(&path)?;
    let record = state
        .store
        .certificate(&serial)
        .await
        .map_err(storage_error)?
        .ok_or(ApiError::CertificateNotFound)?;
    Ok(answer(&record))
}

/// `POST /api/v1/certificates`, body `{"certificate": "<PEM>"}`: records a device
/// certificate this CA signed that the registry does not know; answers the record as it
/// stands.
pub async fn import(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let raw = JsonBody::read_raw(&req, payload, state.body_limit, state.body_timeout).await?;
    state.authorize_admin(&req)?;
    let body = raw.json()?;
    let text = body.str_field("certificate").ok_or_else(|| {
        ApiError::InvalidCertificate("certificate (a PEM string) is required".into())
    })?;
    let der = pem::parse(text)
        .ok()
        .filter(|block| block.tag() == "CERTIFICATE")
        .ok_or_else(|| ApiError::InvalidCertificate("not a PEM certificate".into()))?
        .into_contents();
    let (record, _) = state.lifecycle.import(&der, state.client_ip(&req)).await?;
    Ok(answer(&record))
}

/// `POST /api/v1/certificates/{serial}/revoke`, body `{"reason": "keyCompromise"}`
/// (optional; `unspecified` by default). Revoking again answers the first revocation.
pub async fn revoke(
    req: HttpRequest,
    payload: web::Payload,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let raw = JsonBody::read_raw(&req, payload, state.body_limit, state.body_timeout).await?;
    state.authorize_admin(&req)?;
    let serial = serial(&path)?;
    let reason = if raw.is_empty() {
        Reason::Unspecified
    } else {
        raw.json()?.reason()?
    };
    let revocation = Revocation {
        at: unix_now(),
        reason,
    };
    let record = state
        .lifecycle
        .revoke(&serial, revocation, state.client_ip(&req))
        .await
        .map_err(storage_error)?
        .ok_or(ApiError::CertificateNotFound)?;
    state.lifecycle.refresh_crl().await;
    Ok(answer(&record))
}

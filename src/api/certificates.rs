//! Admin endpoints for issued certificates: look one up by serial, revoke it.

use std::net::IpAddr;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::AppState;
use super::body::JsonBody;
use super::{no_store, storage_error};
use crate::clock::unix_now;
use crate::error::ApiError;
use crate::metrics::ReasonLabel;
use crate::registry::{CertificateRecord, Reason, Revocation, parse_serial};
use crate::store::CertificateRegistry;
use crate::timefmt::unix_rfc3339;

/// One certificate as the admin API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CertificateView {
    /// Upper-case hex.
    pub serial_number: String,
    pub device_id: String,
    pub issued_at: String,
    pub expires_at: String,
    /// `valid`, `revoked` or `expired`.
    pub status: &'static str,
    pub revoked_at: Option<String>,
    /// RFC 5280 name of the revocation reason.
    pub reason: Option<&'static str>,
    pub key_type: &'static str,
    /// SHA-256 of the DER, lower-case hex.
    pub fingerprint_sha256: String,
}

impl CertificateView {
    pub fn of(record: &CertificateRecord) -> Self {
        Self {
            serial_number: record.serial_hex(),
            device_id: record.device_id.to_string(),
            issued_at: unix_rfc3339(record.issued_at),
            expires_at: unix_rfc3339(record.not_after),
            status: record.status(unix_now()),
            revoked_at: record.revocation.map(|r| unix_rfc3339(r.at)),
            reason: record.revocation.map(|r| r.reason.as_str()),
            key_type: record.key_type,
            fingerprint_sha256: hex::encode(record.fingerprint_sha256),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CertificateAnswer {
    pub success: bool,
    pub certificate: CertificateView,
}

/// The body's optional `reason` (RFC 5280 name), `unspecified` when absent.
pub(super) fn reason_in(body: &super::body::JsonBody) -> Result<Reason, ApiError> {
    match body.str_field_or_absent("reason")? {
        None => Ok(Reason::Unspecified),
        Some(name) => Reason::parse(name).ok_or(ApiError::InvalidReason),
    }
}

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
        reason_in(&raw.json()?)?
    };
    let revocation = Revocation {
        at: unix_now(),
        reason,
    };
    let record = state
        .store
        .revoke(&serial, revocation)
        .await
        .map_err(storage_error)?
        .ok_or(ApiError::CertificateNotFound)?;
    let first = record.revocation == Some(revocation);
    note_revocation(&state, &record, first, state.client_ip(&req));
    refresh_crl(&state).await;
    Ok(answer(&record))
}

/// Counts and audits a revocation; `first` when this request made it.
pub(super) fn note_revocation(
    state: &AppState,
    record: &CertificateRecord,
    first: bool,
    client: Option<IpAddr>,
) {
    let Some(applied) = record.revocation else {
        return;
    };
    if first {
        state
            .metrics
            .certificates_revoked
            .get_or_create(&ReasonLabel {
                reason: applied.reason.as_str(),
            })
            .inc();
    }
    state.audit.certificate_revoked(
        &record.device_id,
        &record.serial_hex(),
        applied.reason.as_str(),
        first,
        client,
    );
}

/// This instance's CRL at once; the others' at their next look (two seconds).
pub(super) async fn refresh_crl(state: &AppState) {
    if let Err(e) = state.crl.refresh().await {
        tracing::warn!(error = %e, "the CRL will list the revocation at the next refresh");
    }
}

//! `POST /api/v1/sign-csr`: trade a provisioning token and a CSR for a certificate.
//!
//! The checks run in the order of the design, so that nothing a client gets wrong
//! burns its token: only a request that would be signed consumes it.

use std::net::IpAddr;

use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde::Serialize;
use tracing::Span;

use super::AppState;
use super::body::JsonBody;
use super::{no_store, note_device, storage_error};
use crate::activity::Happened;
use crate::auth::bearer;
use crate::ca::{DevicePublicKey, IssuedCertificate, check_csr};
use crate::clock::unix_now;
use crate::domain::DeviceId;
use crate::error::ApiError;
use crate::metrics::{KeyTypeLabel, ReasonLabel, key_type_label};
use crate::registry::{CertificateRecord, slots};
use crate::store::{ConsumeOutcome, TokenStore};
use crate::timefmt::{rfc3339, rfc3339_now};

#[derive(Serialize, utoipa::ToSchema)]
pub struct SignCsrResponse {
    pub success: bool,
    /// The device certificate, PEM.
    pub certificate: String,
    /// The CA chain, PEM, issuing CA first.
    pub ca_certificate: String,
    /// Upper-case hex.
    pub serial_number: String,
    pub expires_at: String,
    pub timestamp: String,
}

pub async fn sign_csr(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let client = state.client_ip(&req);
    let mut device_seen = None;
    let result = sign(&req, payload, &state, client, &mut device_seen).await;
    if let Err(e) = &result
        && e.status_code().is_client_error()
    {
        state
            .metrics
            .tokens_rejected
            .get_or_create(&ReasonLabel { reason: e.code() })
            .inc();
        state
            .audit
            .token_rejected(device_seen.as_deref(), e.code(), client);
    }
    result
}

async fn sign(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    client: Option<IpAddr>,
    device_seen: &mut Option<String>,
) -> Result<HttpResponse, ApiError> {
    let raw = JsonBody::read_raw(req, payload, state.body_limit, state.body_timeout).await?;
    state.limit_ip(client).await?;

    // 1. A valid JWT.
    let token = bearer(req).ok_or(ApiError::TokenInvalid(
        "an `Authorization: Bearer <provisioning token>` header is required",
    ))?;
    let claims = state.tokens.verify(token)?;
    Span::current().record("jti", claims.jti.short());

    // 2. Issued for this device.
    let body = raw.json()?;
    let device = body.device_id()?;
    note_device(req, &device);
    *device_seen = Some(device.to_string());
    if claims.subject != device.as_str() {
        return Err(ApiError::DeviceMismatch);
    }
    // Counted against the device the token was issued for, never another one.
    state.limit_device(&device).await?;

    // 3 and 4. A CSR that parses, proves possession of its key, and meets the policy.
    let csr = body
        .str_field("csr")
        .ok_or_else(|| ApiError::InvalidCsr("csr (a PEM string) is required".into()))?;
    let key = check_csr(csr, &device, state.ca.policy())?;

    // 5 and 6. Sign, then consume the token and record the certificate in one atomic
    // step: one request wins, on any instance, and only its certificate is handed out
    // (the others' are dropped unseen).
    let (cert, record) = certify(state, &device, &key)?;
    match state
        .store
        .consume(&device, &claims.jti, claims.epoch, Some(&record))
        .await
        .map_err(storage_error)?
    {
        ConsumeOutcome::Consumed => {}
        ConsumeOutcome::NotFound => return Err(ApiError::TokenUsed),
    }
    state.metrics.tokens_consumed.inc();
    state.audit.token_consumed(&device, &claims.jti, client);
    Ok(hand_out(state, cert, &record, client))
}

/// Signs a certificate for `device` around `key`, and the record that goes with it. The
/// serial carries the device's slot, so that the record is found from the serial alone.
pub(super) fn certify(
    state: &AppState,
    device: &DeviceId,
    key: &DevicePublicKey,
) -> Result<(IssuedCertificate, CertificateRecord), ApiError> {
    let serial = slots::serial_in(slots::slot_of(device.as_str()));
    let cert = state
        .ca
        .issue(device, key, &serial)
        .map_err(|e| anyhow::anyhow!("signing failed: {e}"))?;
    let record = CertificateRecord {
        serial,
        device_id: device.clone(),
        issued_at: unix_now(),
        not_after: cert.not_after.unix_timestamp().max(0) as u64,
        key_type: key_type_label(key.key_type()),
        fingerprint_sha256: cert.fingerprint_sha256,
        revocation: None,
    };
    Ok((cert, record))
}

/// The answer for a certificate that is recorded: audit, metrics, and the certificate.
pub(super) fn hand_out(
    state: &AppState,
    cert: IssuedCertificate,
    record: &CertificateRecord,
    client: Option<IpAddr>,
) -> HttpResponse {
    Span::current().record("serial", cert.serial_hex.as_str());
    Span::current().record("key_type", record.key_type);
    state.audit.certificate_issued(
        &record.device_id,
        &cert.serial_hex,
        record.key_type,
        &hex::encode(cert.fingerprint_sha256),
        client,
    );
    state
        .metrics
        .certificates_issued
        .get_or_create(&KeyTypeLabel {
            key_type: record.key_type,
        })
        .inc();
    state.activity.count(Happened::CertificateIssued);
    no_store(HttpResponse::Ok()).json(SignCsrResponse {
        success: true,
        certificate: cert.pem,
        ca_certificate: state.ca.chain_pem().to_owned(),
        serial_number: cert.serial_hex,
        expires_at: rfc3339(cert.not_after),
        timestamp: rfc3339_now(),
    })
}

//! Answer bodies that several routes share: an issued certificate (sign-csr, renew) and
//! a certificate as the admin API shows it.

use actix_web::HttpResponse;
use serde::Serialize;

use super::no_store;
use crate::clock::unix_now;
use crate::lifecycle::Certified;
use crate::registry::CertificateRecord;
use crate::timefmt::{rfc3339, rfc3339_now, unix_rfc3339};

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

/// 200 with a certificate that left the server; no cache may keep it.
pub fn certified(cert: Certified) -> HttpResponse {
    no_store(HttpResponse::Ok()).json(SignCsrResponse {
        success: true,
        certificate: cert.pem,
        ca_certificate: cert.chain_pem,
        serial_number: cert.serial_hex,
        expires_at: rfc3339(cert.not_after),
        timestamp: rfc3339_now(),
    })
}

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

//! Answer bodies that several routes share: an issued certificate (sign-csr, renew) and
//! a certificate as the admin API shows it.

use actix_web::HttpResponse;
use serde::Serialize;

use super::no_store;
use crate::clock::unix_now;
use crate::lifecycle::Certified;
use crate::registry::CertificateRecord;
use crate::store::RevokedCertificate;
use crate::timefmt::{rfc3339, rfc3339_now, unix_rfc3339};

#[derive(Serialize, utoipa::ToSchema)]
pub struct SignCsrResponse {
    pub success: bool,
    /// The device certificate, PEM; with a two-tier CA (a root ending `ca.crt`),
    /// followed by the intermediate(s), as a device presents it.
    pub certificate: String,
    /// What to trust, PEM: the root of a two-tier CA; else the CA's chain, issuing CA
    /// first.
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
    /// The enrollment group it was issued under (its renewals keep it).
    pub group: String,
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
            group: record.group.clone(),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CertificateAnswer {
    pub success: bool,
    pub certificate: CertificateView,
}

/// A CRL entry as the admin API shows it: a recorded certificate's or a bare serial's.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ListedView {
    /// Upper-case hex, 32 digits.
    pub serial_number: String,
    /// The device of a recorded certificate; null for a serial listed without a record.
    pub device_id: Option<String>,
    pub revoked_at: String,
    /// RFC 5280 name of the revocation reason.
    pub reason: &'static str,
    /// When the entry leaves the CRL: the certificate's notAfter, or for a serial
    /// without a record the CA certificate's.
    pub listed_until: String,
    /// Whether the registry holds the certificate's record.
    pub recorded: bool,
}

impl ListedView {
    pub fn of_record(record: &CertificateRecord) -> Self {
        let revocation = record.revocation.unwrap_or(crate::registry::Revocation {
            at: record.issued_at,
            reason: crate::registry::Reason::Unspecified,
        });
        Self {
            serial_number: record.serial_hex(),
            device_id: Some(record.device_id.to_string()),
            revoked_at: unix_rfc3339(revocation.at),
            reason: revocation.reason.as_str(),
            listed_until: unix_rfc3339(record.not_after),
            recorded: true,
        }
    }

    pub fn of_entry(entry: &RevokedCertificate) -> Self {
        Self {
            serial_number: hex::encode_upper(entry.serial),
            device_id: None,
            revoked_at: unix_rfc3339(entry.revocation.at),
            reason: entry.revocation.reason.as_str(),
            listed_until: unix_rfc3339(entry.not_after),
            recorded: false,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ListedAnswer {
    pub success: bool,
    pub entry: ListedView,
}

//! Admin endpoints for issued certificates: look one up by serial, import one, revoke
//! one, or put any serial the CA signed on the CRL.

use actix_web::{HttpRequest, HttpResponse, web};

use super::answers::{CertificateAnswer, CertificateView, ListedAnswer, ListedView};
use super::body::JsonBody;
use super::{AppState, no_store};
use crate::clock::unix_now;
use crate::error::ApiError;
use crate::lifecycle::{Listing, storage_error};
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
    let who = state.authorize_admin(&req)?;
    let body = raw.json()?;
    let text = body.str_field("certificate").ok_or_else(|| {
        ApiError::InvalidCertificate("certificate (a PEM string) is required".into())
    })?;
    let der = pem::parse(text)
        .ok()
        .filter(|block| block.tag() == "CERTIFICATE")
        .ok_or_else(|| ApiError::InvalidCertificate("not a PEM certificate".into()))?
        .into_contents();
    let (record, _) = state.lifecycle.import(&der, &who).await?;
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
    let who = state.authorize_admin(&req)?;
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
        .revoke(&serial, revocation, &who)
        .await
        .map_err(storage_error)?
        .ok_or(ApiError::CertificateNotFound)?;
    state.lifecycle.refresh_crl().await;
    Ok(answer(&record))
}

/// `POST /api/v1/crl/entries`, body `{"serial": "<hex>", "reason": "keyCompromise"}`:
/// puts a serial on the CRL whether or not the registry holds its certificate (one the CA
/// signed before the registry or elsewhere, whose certificate is lost). A recorded serial
/// is revoked through its record. `serial` is 1 to 32 hex digits, colons allowed (as
/// `openssl x509 -serial` or a browser prints it). Listing again answers the first
/// listing.
pub async fn list_serial(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let raw = JsonBody::read_raw(&req, payload, state.body_limit, state.body_timeout).await?;
    let who = state.authorize_admin(&req)?;
    let body = raw.json()?;
    let serial = body
        .str_field("serial")
        .and_then(any_serial)
        .ok_or(ApiError::InvalidSerial)?;
    let revocation = Revocation {
        at: unix_now(),
        reason: body.reason()?,
    };
    let listing = state
        .lifecycle
        .revoke_serial(&serial, revocation, &who)
        .await
        .map_err(storage_error)?;
    state.lifecycle.refresh_crl().await;
    Ok(no_store(HttpResponse::Ok()).json(ListedAnswer {
        success: true,
        entry: match listing {
            Listing::Recorded(record) => ListedView::of_record(&record),
            Listing::Unrecorded(entry) => ListedView::of_entry(&entry),
        },
    }))
}

/// A serial as operators copy it: 1 to 32 hex digits, colons or spaces between bytes
/// allowed, not zero; left-padded to the registry's 16 bytes.
fn any_serial(text: &str) -> Option<[u8; 16]> {
    let digits: String = text.chars().filter(|c| !matches!(c, ':' | ' ')).collect();
    // A leading zero byte is how a serial with its top bit set is written as DER bytes.
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() || digits.len() > 32 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let padded = format!("{digits:0>32}");
    parse_serial(&padded).filter(|serial| serial.iter().any(|b| *b != 0))
}

#[cfg(test)]
mod tests {
    use super::any_serial;

    #[test]
    fn serials_are_read_as_operators_copy_them() {
        let short = any_serial("01:AB").unwrap();
        assert_eq!(&short[14..], &[0x01, 0xab]);
        assert!(short[..14].iter().all(|b| *b == 0));
        assert_eq!(any_serial("01ab"), Some(short));
        assert_eq!(any_serial(&"F".repeat(32)), Some([0xff; 16]));
        assert_eq!(
            any_serial(&format!("00:{}", "FF:".repeat(16))),
            Some([0xff; 16])
        );
        for bad in ["", "0", "00:00", "xyz", &"1".repeat(33), "0x12"] {
            assert_eq!(any_serial(bad), None, "{bad:?}");
        }
    }
}

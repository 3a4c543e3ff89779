//! `GET /api/v1/crl`: the current CRL, DER (`application/pkix-crl`), or PEM with
//! `?format=pem` for brokers that read a file (Mosquitto's `crlfile`).

use actix_web::http::header::{CACHE_CONTROL, ETag, EntityTag, IfNoneMatch};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use time::OffsetDateTime;

use super::AppState;
use crate::crl::CrlFailure;
use crate::error::ApiError;

pub async fn crl(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let pem = match query_format(req.query_string())? {
        Format::Der => false,
        Format::Pem => true,
    };
    // Before the first CRL could be built from the whole revoked list: none rather than
    // an incomplete one.
    let published = state
        .crl
        .current()
        .ok_or_else(|| match state.crl.failure() {
            Some(CrlFailure::Signing(why)) => ApiError::CrlUnavailable(why),
            _ => ApiError::StorageUnavailable,
        })?;
    let crl = &published.crl;
    if crl.next_update <= OffsetDateTime::now_utc() {
        return Err(ApiError::CrlExpired);
    }
    // One tag per number and form: a revocation replaces the CRL at once, so caches must
    // ask each time (`no-cache`), and are told cheaply when nothing changed.
    let etag = EntityTag::new_strong(format!("{:x}{}", crl.number, if pem { ".pem" } else { "" }));
    let not_modified = match req.get_header::<IfNoneMatch>() {
        Some(IfNoneMatch::Any) => true,
        Some(IfNoneMatch::Items(tags)) => tags.iter().any(|t| t.weak_eq(&etag)),
        None => false,
    };
    let mut response = if not_modified {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response.insert_header((CACHE_CONTROL, "public, no-cache"));
    response.insert_header(ETag(etag));
    if not_modified {
        return Ok(response.finish());
    }
    Ok(if pem {
        response
            .content_type("application/x-pem-file")
            .body(crl.pem.clone())
    } else {
        response
            .content_type("application/pkix-crl")
            .body(crl.der.clone())
    })
}

enum Format {
    Der,
    Pem,
}

/// `format=der|pem` (default DER); nothing else is accepted.
fn query_format(query: &str) -> Result<Format, ApiError> {
    let mut format = Format::Der;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("format", "der")) => format = Format::Der,
            Some(("format", "pem")) => format = Format::Pem,
            Some(("format", _)) | None => {
                return Err(ApiError::InvalidQuery("format must be `der` or `pem`"));
            }
            Some((_, _)) => return Err(ApiError::InvalidQuery("the only parameter is `format`")),
        }
    }
    Ok(format)
}

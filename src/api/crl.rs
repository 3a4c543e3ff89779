//! `GET /api/v1/crl`: the current CRL, DER (`application/pkix-crl`), or PEM with
//! `?format=pem` for brokers that read a file (Mosquitto's `crlfile`).

use actix_web::http::header::CACHE_CONTROL;
use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use crate::error::ApiError;

pub async fn crl(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let pem = match query_format(req.query_string())? {
        Format::Der => false,
        Format::Pem => true,
    };
    // Before the first CRL could be built from the whole revoked list: none rather than
    // an incomplete one.
    let published = state.crl.current().ok_or(ApiError::StorageUnavailable)?;
    let crl = &published.crl;
    let mut response = HttpResponse::Ok();
    // Public, and the same until the next one is signed.
    response.insert_header((
        CACHE_CONTROL,
        format!("public, max-age={}", state.crl.seconds_until_refresh()),
    ));
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

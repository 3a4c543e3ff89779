//! `GET /api/v1/crl`: the current CRL, DER (`application/pkix-crl`), or PEM with
//! `?format=pem` for brokers that read a file (Mosquitto's `crlfile`). `?issuer=NAME` is
//! that `[[issuers]]` entry's CRL (default: the issuer named `default`, else the first);
//! `?issuer=all&format=pem` every issuer's, one after the other, which a broker loading a
//! CRL file takes whole during a rollover.

use actix_web::http::header::{CACHE_CONTROL, ETag, EntityTag, IfNoneMatch};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use time::OffsetDateTime;

use super::AppState;
use crate::crl::CrlFailure;
use crate::error::ApiError;

pub async fn crl(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let query = parse_query(req.query_string())?;
    let pem = matches!(query.format, Format::Pem);
    let wanted = match query.issuer.as_deref() {
        None => Wanted::One(state.issuers.crl_default()),
        Some("all") if pem => Wanted::All,
        Some("all") => {
            return Err(ApiError::InvalidQuery(
                "issuer=all needs format=pem: a DER response holds one CRL",
            ));
        }
        Some(name) => Wanted::One(
            state
                .issuers
                .position(name)
                .ok_or_else(|| ApiError::IssuerUnknown(name.chars().take(32).collect()))?,
        ),
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
    let crl = match wanted {
        Wanted::One(index) => published.of_issuer(index),
        Wanted::All => Some(published.crl()),
    }
    .ok_or_else(|| anyhow::anyhow!("no CRL for the issuer"))?;
    if crl.next_update <= OffsetDateTime::now_utc() {
        return Err(ApiError::CrlExpired);
    }
    // One tag per number and form: a revocation replaces the CRL at once, so caches must
    // ask each time (`no-cache`), and are told cheaply when nothing changed.
    let etag = EntityTag::new_strong(format!(
        "{:x}{}{}",
        crl.number,
        match wanted {
            // The name, not the place: a reordered `[[issuers]]` keeps each tag its own.
            Wanted::One(index) => format!(
                ".{}",
                state.issuers.iter().nth(index).map_or("", |(name, _)| name)
            ),
            Wanted::All => ".all".to_owned(),
        },
        if pem { ".pem" } else { "" }
    ));
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
    Ok(if let Wanted::All = wanted {
        let all: String = (0..state.issuers.len())
            .filter_map(|index| published.of_issuer(index))
            .map(|crl| crl.pem.as_str())
            .collect();
        response.content_type("application/x-pem-file").body(all)
    } else if pem {
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

#[derive(Clone, Copy)]
enum Wanted {
    One(usize),
    All,
}

struct Query {
    format: Format,
    issuer: Option<String>,
}

/// `format=der|pem` (default DER) and `issuer=NAME|all`; nothing else is accepted.
fn parse_query(query: &str) -> Result<Query, ApiError> {
    let mut parsed = Query {
        format: Format::Der,
        issuer: None,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("format", "der")) => parsed.format = Format::Der,
            Some(("format", "pem")) => parsed.format = Format::Pem,
            Some(("format", _)) | None => {
                return Err(ApiError::InvalidQuery("format must be `der` or `pem`"));
            }
            Some(("issuer", name)) if crate::domain::is_short_name(name) => {
                parsed.issuer = Some(name.to_owned());
            }
            Some(("issuer", _)) => {
                return Err(ApiError::InvalidQuery(
                    "issuer must be an issuer's name (1 to 32 of a-z, 0-9 and -) or `all`",
                ));
            }
            Some((_, _)) => {
                return Err(ApiError::InvalidQuery(
                    "the only parameters are `format` and `issuer`",
                ));
            }
        }
    }
    Ok(parsed)
}

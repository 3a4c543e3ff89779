//! `GET /api/v1/ca`: the CA chain, for brokers and devices to trust; `?bundle=all` every
//! issuer's chain, which a broker trusts during a rollover.

use actix_web::{HttpResponse, web};

use super::AppState;
use crate::error::ApiError;

pub async fn ca_certificate(
    state: web::Data<AppState>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let mut all = false;
    for (key, value) in query.iter() {
        match (key.as_str(), value.as_str()) {
            ("bundle", "all") => all = true,
            ("bundle", "first") => all = false,
            ("bundle", _) => return Err(ApiError::InvalidQuery("bundle must be `all` or `first`")),
            _ => return Err(ApiError::InvalidQuery("the only parameter is `bundle`")),
        }
    }
    let pem = if all {
        state.issuers.bundle_pem()
    } else {
        state.issuers.first().chain_pem()
    };
    Ok(HttpResponse::Ok()
        .content_type("application/x-pem-file")
        .body(pem.to_owned()))
}

//! `GET /api/v1/ca`: the CA chain, for brokers and devices to trust.

use actix_web::{HttpResponse, web};

use super::AppState;

pub async fn ca_certificate(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/x-pem-file")
        .body(state.ca.chain_pem().to_owned())
}

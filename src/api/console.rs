//! `/console/`: the operator console, three files compiled into the binary (no build
//! step, no CDN). Served only when admin keys are set; the page itself holds nothing
//! secret, and every call it makes goes through the admin API's authorisation.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};

use super::AppState;
use crate::error::ApiError;

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/app.js");
const STYLE: &str = include_str!("../console/app.css");

/// No inline script or style, nothing from elsewhere, never in a frame.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
    frame-ancestors 'none'";

fn file(
    state: &AppState,
    content_type: &'static str,
    body: &'static str,
) -> Result<HttpResponse, ApiError> {
    if state.admin.is_empty() {
        return Err(ApiError::ConsoleOff);
    }
    let mut response = HttpResponse::Ok();
    response
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, POLICY))
        .insert_header((header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    Ok(response.body(body))
}

/// `GET /console`: to `/console/`, where the page's relative links resolve.
pub async fn redirect(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.admin.is_empty() {
        return Err(ApiError::ConsoleOff);
    }
    Ok(HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/console/"))
        .finish())
}

/// `GET /console/`.
pub async fn index(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    file(&state, "text/html; charset=utf-8", INDEX)
}

/// `GET /console/app.js`.
pub async fn script(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    file(&state, "text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /console/app.css`.
pub async fn style(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    file(&state, "text/css; charset=utf-8", STYLE)
}

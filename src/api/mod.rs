//! The HTTP API: the whole URL map, the shared state, and the request logger.

mod body;
mod ca;
mod health;
mod onboarding;
mod sign_csr;

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use tracing::Instrument;
use tracing::field::Empty;

use crate::auth::OnboardingAuth;
use crate::ca::CertificateAuthority;
use crate::error::ApiError;
use crate::store::FallbackStore;
use crate::token::TokenService;

pub struct AppState {
    pub store: Arc<FallbackStore>,
    pub tokens: TokenService,
    pub ca: CertificateAuthority,
    pub onboarding: OnboardingAuth,
    pub started: Instant,
    pub body_limit: usize,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(post("/api/v1/onboarding", onboarding::onboarding))
        .service(post("/api/v1/sign-csr", sign_csr::sign_csr))
        .service(get("/api/v1/ca", ca::ca_certificate))
        .service(get("/health", health::health))
        .service(get("/livez", health::livez))
        .service(get("/readyz", health::readyz))
        .default_service(web::to(|| async { ApiError::NotFound.into_response() }));
}

fn post<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::post().to(handler))
        .default_service(web::to(method_not_allowed))
}

fn get<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .default_service(web::to(method_not_allowed))
}

async fn method_not_allowed() -> HttpResponse {
    ApiError::MethodNotAllowed.into_response()
}

impl ApiError {
    fn into_response(self) -> HttpResponse {
        actix_web::ResponseError::error_response(&self)
    }
}

/// One log line per request, carrying the device id and a short token id that the
/// handlers record on the request's span. Probes log at debug level only.
pub async fn log_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.path(),
        device_id = Empty,
        jti = Empty,
        serial = Empty,
        key_type = Empty,
    );
    let probe = matches!(req.path(), "/health" | "/livez" | "/readyz");
    let started = Instant::now();
    let response = next.call(req).instrument(span.clone()).await?;
    let status = response.status().as_u16();
    let ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    let error = response
        .response()
        .error()
        .and_then(|e| e.as_error::<ApiError>());
    let _entered = span.enter();
    match error {
        Some(ApiError::Internal(cause)) => {
            tracing::error!(status, code = "internal_error", ms, cause = %format!("{cause:#}"), "request failed");
        }
        Some(e) => tracing::info!(status, code = e.code(), ms, "request refused"),
        None if probe => tracing::debug!(status, ms, "request done"),
        None => tracing::info!(status, ms, "request done"),
    }
    Ok(response)
}

//! The HTTP API: the whole URL map, the shared state, and the request logger.

mod activity;
mod admin;
mod answers;
pub mod body;
mod ca;
mod certificates;
pub mod cmp;
mod console;
mod crl;
mod error_body;
pub mod est;
mod fleet;
mod groups;
mod health;
mod ocsp;
mod ocsp_cache;
mod onboarding;
pub mod openapi;
mod renew;
mod sign_csr;

pub(crate) use onboarding::store_new_token;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::CACHE_CONTROL;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, HttpResponseBuilder, web};

use crate::activity::Activity;
use crate::audit::Actor;
use crate::audit::Audit;
use crate::auth::{KeyDigests, bearer};
use crate::ca::Issuers;
use crate::config::RenewalSettings;
use crate::crl::CrlPublisher;
use crate::domain::DeviceId;
use crate::error::ApiError;
use crate::error::LimitScope;
use crate::groups::GroupTable;
use crate::lifecycle::Lifecycle;
use crate::metrics::{Metrics, RouteLabels, ScopeLabel, method_label};
use crate::net::TrustedProxies;
use crate::ratelimit::RateLimits;
use crate::request_facts::{self, RequestFacts};
use crate::store::{FallbackStore, LimitSubject};
use crate::token::TokenService;

pub struct AppState {
    pub store: Arc<FallbackStore>,
    pub tokens: TokenService,
    pub issuers: Arc<Issuers>,
    pub crl: Arc<CrlPublisher>,
    /// The enrollment groups, swapped whole on SIGHUP.
    pub groups: Arc<GroupTable>,
    pub renewal: RenewalSettings,
    pub admin: KeyDigests,
    pub limits: Arc<RateLimits>,
    pub proxies: TrustedProxies,
    pub metrics: Arc<Metrics>,
    pub audit: Arc<Audit>,
    pub activity: Arc<Activity>,
    /// The issuing and revocation paths, over the same parts as above.
    pub lifecycle: Lifecycle,
    pub started: Instant,
    pub body_limit: usize,
    pub body_timeout: Duration,
    /// The console's history shared through Redis (with Redis on).
    pub history: Option<Arc<crate::history::History>>,
    /// Signed OCSP responses for requests without a nonce.
    pub ocsp_cache: ocsp_cache::OcspCache,
    /// CMP's signer and the enrollments waiting for `certConf`.
    pub cmp: cmp::CmpState,
}

impl AppState {
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        self.proxies.client_ip(req)
    }

    pub(crate) async fn limit_ip(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let Some(ip) = ip else { return Ok(()) };
        let per_minute = self.limits.per_ip_per_minute();
        let check = match self
            .shared_limit(LimitSubject::Address(ip), per_minute)
            .await
        {
            Some(answer) => answer.map_or(Ok(()), |wait| {
                Err(RateLimits::refusal(LimitScope::Ip, wait))
            }),
            None => self.limits.check_ip(ip),
        };
        self.counted(check)
    }

    pub(crate) async fn limit_device(&self, device: &DeviceId) -> Result<(), ApiError> {
        let per_minute = self.limits.per_device_per_minute();
        let check = match self
            .shared_limit(LimitSubject::Device(device), per_minute)
            .await
        {
            Some(answer) => answer.map_or(Ok(()), |wait| {
                Err(RateLimits::refusal(LimitScope::Device, wait))
            }),
            None => self.limits.check_device(device),
        };
        self.counted(check)
    }

    /// The shared limit's answer when limits are shared and Redis can give it; `None`
    /// means the instance's own limiter decides (limits not shared, or Redis away).
    async fn shared_limit(
        &self,
        subject: LimitSubject<'_>,
        per_minute: u32,
    ) -> Option<Option<std::time::Duration>> {
        if !self.limits.shared || per_minute == 0 {
            return None;
        }
        self.store.shared_limit(subject, per_minute).await
    }

    /// Lets an admin request through when its key is accepted, answering who acted (the
    /// key's name, the client's address). Failures are counted per address, and an
    /// address past the limit is refused before its key is looked at.
    fn authorize_admin(&self, req: &HttpRequest) -> Result<Actor, ApiError> {
        if self.admin.is_empty() {
            return Err(ApiError::Unauthorized(
                "the admin API is off: no admin key is configured (ADMIN_KEYS)",
            ));
        }
        let ip = self.client_ip(req);
        if let Some(ip) = ip {
            self.counted(self.limits.check_admin(ip))?;
        }
        if let Some(name) = self.admin.matched(req) {
            return Ok(Actor {
                client: ip,
                admin: Some(name),
            });
        }
        if let Some(ip) = ip {
            self.counted(self.limits.admin_failed(ip))?;
        }
        Err(ApiError::Unauthorized(if bearer(req).is_some() {
            "admin key not accepted"
        } else {
            "an admin key is required: `Authorization: Bearer <admin key>`"
        }))
    }

    /// One MQTT provisioning request with the claim of serial `claim` (counted in this
    /// instance).
    pub(crate) fn limit_claim(&self, claim: &[u8; 16]) -> Result<(), ApiError> {
        self.counted(self.limits.check_claim(claim))
    }

    fn counted(&self, check: Result<(), ApiError>) -> Result<(), ApiError> {
        if let Err(ApiError::RateLimited { scope, .. }) = &check {
            self.metrics
                .rate_limited
                .get_or_create(&ScopeLabel {
                    scope: scope.as_str(),
                })
                .inc();
        }
        check
    }
}

/// Every route, as the OpenAPI document must list it.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/onboarding"),
    ("post", "/api/v1/sign-csr"),
    ("post", "/api/v1/renew"),
    ("get", "/api/v1/ca"),
    ("get", "/api/v1/crl"),
    ("get", "/api/v1/devices"),
    ("get", "/api/v1/devices/{device_id}"),
    ("delete", "/api/v1/devices/{device_id}/token"),
    ("post", "/api/v1/devices/{device_id}/revoke"),
    ("delete", "/api/v1/devices/{device_id}/block"),
    ("post", "/api/v1/certificates"),
    ("get", "/api/v1/certificates/{serial}"),
    ("post", "/api/v1/certificates/{serial}/revoke"),
    ("post", "/api/v1/crl/entries"),
    ("get", "/api/v1/devices/{device_id}/events"),
    ("get", "/api/v1/groups"),
    ("get", "/api/v1/activity"),
    ("get", "/api/v1/refusals"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/console"),
    ("get", "/console/"),
    ("get", "/console/app.js"),
    ("get", "/console/app.css"),
    ("get", "/.well-known/est/cacerts"),
    ("get", "/.well-known/est/{label}/cacerts"),
    ("get", "/.well-known/est/csrattrs"),
    ("get", "/.well-known/est/{label}/csrattrs"),
    ("post", "/.well-known/est/simpleenroll"),
    ("post", "/.well-known/est/{label}/simpleenroll"),
    ("post", "/.well-known/est/serverkeygen"),
    ("post", "/.well-known/est/{label}/serverkeygen"),
    ("post", "/.well-known/est/simplereenroll"),
    ("post", "/.well-known/est/{label}/simplereenroll"),
    ("post", "/.well-known/cmp"),
    ("post", "/.well-known/cmp/p/{label}"),
    ("post", "/ocsp"),
    ("get", "/ocsp/{request}"),
    ("get", "/health"),
    ("get", "/livez"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

/// The route pattern a request matched, as a metric label: one of [`ROUTES`], or
/// `unmatched`, so that a client cannot add series by inventing paths.
pub fn route_label(pattern: Option<&str>) -> &'static str {
    // `{request:.*}` (a tail that may hold `/`) is `{request}` in the document.
    let pattern = pattern.map(|p| p.replace(":.*}", "}"));
    pattern
        .and_then(|p| ROUTES.iter().find(|(_, r)| *r == p))
        .map_or("unmatched", |(_, r)| r)
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    // Static paths first: actix tries resources in order, and a path with a parameter
    // costs a regex match for every request that passes it (a tenth of an OCSP
    // response's CPU when `/ocsp` came after them all). Statics are a string compare.
    cfg.service(post("/api/v1/onboarding", onboarding::onboarding))
        .service(post("/api/v1/sign-csr", sign_csr::sign_csr))
        .service(post("/api/v1/renew", renew::renew))
        .service(get("/api/v1/ca", ca::ca_certificate))
        .service(get("/api/v1/crl", crl::crl))
        .service(get("/api/v1/devices", fleet::list_devices))
        .service(post("/api/v1/certificates", certificates::import))
        .service(post("/api/v1/crl/entries", certificates::list_serial))
        .service(get("/api/v1/groups", groups::list_groups))
        .service(get("/api/v1/activity", activity::activity))
        .service(get("/api/v1/refusals", activity::refusals))
        .service(get("/api/v1/openapi.json", openapi::document))
        .service(get("/.well-known/est/cacerts", est::cacerts))
        .service(get("/.well-known/est/csrattrs", est::csrattrs))
        .service(post("/.well-known/est/simpleenroll", est::simpleenroll))
        .service(post("/.well-known/est/serverkeygen", est::serverkeygen))
        .service(post("/.well-known/est/simplereenroll", est::simplereenroll))
        .service(post("/.well-known/cmp", cmp::cmp))
        .service(get("/console", console::redirect))
        .service(get("/console/", console::index))
        .service(get("/console/app.js", console::script))
        .service(get("/console/app.css", console::style))
        .service(post("/ocsp", ocsp::ocsp_post))
        .service(get("/health", health::health))
        .service(get("/livez", health::livez))
        .service(get("/readyz", health::readyz))
        .service(get("/metrics", health::metrics))
        .service(get("/ocsp/{request:.*}", ocsp::ocsp_get))
        .service(get("/api/v1/devices/{device_id}", admin::device_status))
        .service(
            web::resource("/api/v1/devices/{device_id}/token")
                .route(web::delete().to(admin::revoke_token))
                .default_service(method_not_allowed("DELETE")),
        )
        .service(post(
            "/api/v1/devices/{device_id}/revoke",
            admin::revoke_device,
        ))
        .service(
            web::resource("/api/v1/devices/{device_id}/block")
                .route(web::delete().to(admin::unblock))
                .default_service(method_not_allowed("DELETE")),
        )
        .service(get(
            "/api/v1/certificates/{serial}",
            certificates::certificate,
        ))
        .service(post(
            "/api/v1/certificates/{serial}/revoke",
            certificates::revoke,
        ))
        .service(get(
            "/api/v1/devices/{device_id}/events",
            activity::device_events,
        ))
        .service(get("/.well-known/est/{label}/cacerts", est::cacerts))
        .service(get("/.well-known/est/{label}/csrattrs", est::csrattrs))
        .service(post(
            "/.well-known/est/{label}/simpleenroll",
            est::simpleenroll,
        ))
        .service(post(
            "/.well-known/est/{label}/serverkeygen",
            est::serverkeygen,
        ))
        .service(post(
            "/.well-known/est/{label}/simplereenroll",
            est::simplereenroll,
        ))
        .service(post("/.well-known/cmp/p/{label}", cmp::cmp))
        .default_service(web::to(|| async {
            Err::<HttpResponse, _>(ApiError::NotFound)
        }));
}

fn post<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::post().to(handler))
        .default_service(method_not_allowed("POST"))
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
        .default_service(method_not_allowed("GET, HEAD"))
}

/// 405 (as an error, so that the request log and the console see its code).
fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    web::to(move || async move { Err::<HttpResponse, _>(ApiError::MethodNotAllowed(allow)) })
}

/// One log line per request, carrying the device id, short token id, serial and key type
/// that the handlers note in the request's facts ([`request_facts`]), and the request's
/// latency in the metrics. Probes log at debug level only.
pub async fn log_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let probe = matches!(req.path(), "/health" | "/livez" | "/readyz" | "/metrics");
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let started = Instant::now();
    let (response, facts) = request_facts::gather(next.call(req)).await;
    let response = response?;
    let took = started.elapsed();
    let status = response.status().as_u16();
    let error = response
        .response()
        .error()
        .and_then(|e| e.as_error::<ApiError>());
    let request = response.request();
    if let Some(state) = state {
        let route = route_label(request.match_pattern().as_deref());
        state
            .metrics
            .http_request_duration
            .get_or_create(&RouteLabels {
                route,
                method: method_label(request.method()),
                status,
            })
            .observe(took.as_secs_f64());
        // A browser's own favicon request is nobody's refusal.
        if status >= 400 && !probe && request.path() != "/favicon.ico" {
            let shown = match route {
                "unmatched" => shown_path(request.path()),
                _ => route.to_owned(),
            };
            state.activity.refused(
                method_label(request.method()),
                &shown,
                status,
                error.map_or("http_error", ApiError::code),
                request
                    .extensions()
                    .get::<SeenDevice>()
                    .map(|d| d.0.clone()),
                state.client_ip(request),
            );
        }
    }
    let ms = (took.as_secs_f64() * 1e6).round() / 1e3;
    let (method, path) = (request.method().as_str(), request.path());
    let RequestFacts {
        device_id,
        jti,
        serial,
        key_type,
    } = &facts;
    let (device_id, jti, serial) = (device_id.as_deref(), jti.as_deref(), serial.as_deref());
    match error {
        Some(ApiError::Internal(cause)) => {
            tracing::error!(method, path, status, code = "internal_error", ms, device_id, jti, serial, key_type, cause = %format!("{cause:#}"), "request failed");
        }
        Some(e) => tracing::info!(
            method,
            path,
            status,
            code = e.code(),
            ms,
            device_id,
            jti,
            serial,
            key_type,
            "request refused"
        ),
        // What a request that succeeded did is in its audit event (or in the metrics):
        // one more line per request at the default level doubled the log.
        None => tracing::debug!(
            method,
            path,
            status,
            ms,
            device_id,
            jti,
            serial,
            key_type,
            "request done"
        ),
    }
    Ok(response)
}

/// A path no route matched, as the console lists it: at most 100 characters, anything
/// but printable ASCII shown as `?`, so that a client cannot write markup or a flood of
/// text into an operator's page (the console sets it as text anyway).
fn shown_path(path: &str) -> String {
    let mut shown: String = path
        .chars()
        .take(100)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    if path.chars().nth(100).is_some() {
        shown.push('…');
    }
    shown
}

/// The device a request acts for, once the caller proved it may (a token or proof that
/// verified for it, an enrollment key, an admin key): what the console's list of
/// refusals files the request under. Before that, a refusal is anonymous: a body's
/// device id is anyone's to write.
#[derive(Clone)]
struct SeenDevice(String);

/// The device a request names, on the request's log line.
pub fn note_device(device: &DeviceId) {
    request_facts::note(|facts| facts.device_id = Some(device.as_str().to_owned()));
}

/// The device the caller has proved to act for (see [`SeenDevice`]).
pub fn attribute(req: &HttpRequest, device: &DeviceId) {
    req.extensions_mut()
        .insert(SeenDevice(device.as_str().to_owned()));
}

/// A response that carries a token or a certificate: no cache may keep it.
pub fn no_store(mut response: HttpResponseBuilder) -> HttpResponseBuilder {
    response.insert_header((CACHE_CONTROL, "no-store"));
    response
}

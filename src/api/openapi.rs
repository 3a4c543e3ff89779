//! The OpenAPI 3 document served at `/api/v1/openapi.json`. The operations below are
//! descriptions only (the handlers live in their own modules); a test keeps this list
//! equal to [`super::ROUTES`], and CI runs schemathesis against a live server with it.

#![allow(dead_code)]

use actix_web::HttpResponse;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::activity::{ActivityAnswer, EventsAnswer, RefusalsAnswer};
use super::admin::{BlockView, DeviceRevoked, DeviceStatus, Revoked, Unblocked};
use super::answers::{
    CertificateAnswer, CertificateView, ListedAnswer, ListedView, SignCsrResponse,
};
use super::error_body::{ErrorBody, ErrorDetail};
use super::fleet::{DevicePage, DeviceSummary};
use super::groups::{GroupList, GroupView, HookView, IssuedCounts, RenewalView};
use super::health::{Health, MemoryHealth, Probe, RedisHealth, ReplicasMissing};
use super::onboarding::OnboardingResponse;
use crate::activity::{Refusal, Second, Totals};
use crate::audit::AuditEvent;

#[derive(Serialize, ToSchema)]
pub struct OnboardingRequest {
    /// 1..=64 characters of `[A-Za-z0-9._:-]` (it becomes the certificate's CN, which
    /// RFC 5280 limits to 64).
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9._:-]*[A-Za-z0-9_:-][A-Za-z0-9._:-]*$"
    )]
    pub device_id: String,
    /// The enrollment group for `derived` and `open` onboarding (default `default`;
    /// ignored by a server without groups).
    pub group: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SignCsrRequest {
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9._:-]*[A-Za-z0-9_:-][A-Za-z0-9._:-]*$"
    )]
    pub device_id: String,
    /// PKCS#10 request, PEM, at most 16 KiB.
    #[schema(max_length = 16384)]
    pub csr: String,
}

#[derive(Serialize, ToSchema)]
pub struct RenewRequest {
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9._:-]*[A-Za-z0-9_:-][A-Za-z0-9._:-]*$"
    )]
    pub device_id: String,
    /// PKCS#10 request, PEM, at most 16 KiB: the current key, or a new one.
    #[schema(max_length = 16384)]
    pub csr: String,
}

#[derive(Serialize, ToSchema)]
pub struct ImportRequest {
    /// A device certificate signed by this CA, PEM.
    #[schema(max_length = 16384)]
    pub certificate: String,
}

#[derive(Serialize, ToSchema)]
pub struct RevokeDeviceRequest {
    /// RFC 5280 reason name; `unspecified` when absent or null.
    pub reason: Option<RevocationReasonName>,
    /// Also block the device: no onboarding or renewal until the block is lifted.
    pub block: Option<bool>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "provisiond",
        description = "IoT device provisioning: single-use tokens, CSRs signed by a local CA."
    ),
    paths(
        onboarding,
        sign_csr,
        renew,
        ca,
        crl,
        list_devices,
        device_status,
        revoke_token,
        revoke_device,
        unblock_device,
        certificate,
        import_certificate,
        revoke_certificate,
        list_serial,
        device_events,
        super::groups::list_groups_doc,
        activity,
        refusals,
        openapi_json,
        console_redirect,
        console_index,
        console_script,
        console_style,
        super::ocsp::ocsp_post_doc,
        super::ocsp::ocsp_get_doc,
        health,
        livez,
        readyz,
        metrics
    ),
    components(schemas(
        OnboardingRequest,
        OnboardingResponse,
        SignCsrRequest,
        SignCsrResponse,
        ErrorBody,
        ErrorDetail,
        Health,
        RedisHealth,
        ReplicasMissing,
        MemoryHealth,
        Probe,
        DeviceStatus,
        DevicePage,
        GroupList,
        GroupView,
        RenewalView,
        HookView,
        IssuedCounts,
        DeviceSummary,
        Revoked,
        CaBundle,
        CrlFormat,
        CertificateView,
        CertificateAnswer,
        RevokeRequest,
        RenewRequest,
        RevokeDeviceRequest,
        ImportRequest,
        ListRequest,
        ListedView,
        ListedAnswer,
        DeviceRevoked,
        Unblocked,
        BlockView,
        ActivityAnswer,
        Second,
        Totals,
        RefusalsAnswer,
        Refusal,
        EventsAnswer,
        AuditEvent
    )),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "sign-csr: the provisioning token. onboarding in `key` mode: an \
                         enrollment key. renew: a JWT signed by the current certificate's \
                         key, the certificate in its x5c header. Admin endpoints: an admin \
                         key.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Get a single-use provisioning token for a device.
///
/// Authorised by the onboarding mode of the device's enrollment group: `open` (no
/// header), `key` (`Authorization: Bearer <enrollment key>`, which names the group) or
/// `derived` (`Authorization: Device ts=<unix seconds>,sig=<base64url HMAC>` with the
/// group's secret). The token carries the group (`grp` claim).
#[utoipa::path(post, path = "/api/v1/onboarding", request_body = OnboardingRequest,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "A token", body = OnboardingResponse),
        (status = 400, description = "invalid_json, invalid_device_id", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "device_not_allowed, device_blocked, group_unknown (no group of the name given)", body = ErrorBody),
        (status = 408, description = "request_timeout", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type: the body must be application/json", body = ErrorBody),
        (status = 422, description = "csr_policy_violation: the group's certificate profile cannot be filled in for this id", body = ErrorBody),
        (status = 429, description = "rate_limited", body = ErrorBody),
        (status = 503, description = "storage_unavailable", body = ErrorBody),
    ))]
fn onboarding() {}

/// Trade a provisioning token and a CSR for a device certificate.
#[utoipa::path(post, path = "/api/v1/sign-csr", request_body = SignCsrRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The certificate", body = SignCsrResponse),
        (status = 400, description = "invalid_json, invalid_device_id, invalid_csr, csr_signature_invalid", body = ErrorBody),
        (status = 401, description = "token_invalid, token_expired, token_used", body = ErrorBody),
        (status = 403, description = "device_mismatch, device_blocked (blocked after its token was issued), hook_denied (the pre-issuance hook refused, with its reason; the token stays good), group_unknown (the token's group is no longer configured)", body = ErrorBody),
        (status = 408, description = "request_timeout", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type: the body must be application/json", body = ErrorBody),
        (status = 422, description = "csr_policy_violation", body = ErrorBody),
        (status = 429, description = "rate_limited", body = ErrorBody),
        (status = 503, description = "storage_unavailable, hook_unavailable (the pre-issuance hook gave no answer; the token stays good), ca_unavailable (the CA key's token does not answer; the token stays good)", body = ErrorBody),
    ))]
fn sign_csr() {}

/// Trade the device's current certificate (and a CSR, same key or new) for a new one.
///
/// Proof of the current certificate's key: `Authorization: Bearer <JWT>` signed by it
/// (ES256, ES384, EdDSA, RS256 or PS256), the certificate in the JWS header's `x5c`,
/// claims `sub` = device id, `aud` = `provisiond:renew`, `iat`, `exp` (at most 300 s
/// after `iat`), `jti` (accepted once); or, on the TLS listener, the certificate as the
/// TLS client certificate.
#[utoipa::path(post, path = "/api/v1/renew", request_body = RenewRequest,
    security(("bearer" = []), ()),
    responses(
        (status = 200, description = "The new certificate", body = SignCsrResponse),
        (status = 400, description = "invalid_json, invalid_device_id, invalid_csr, csr_signature_invalid", body = ErrorBody),
        (status = 401, description = "renewal_proof_invalid, certificate_expired", body = ErrorBody),
        (status = 403, description = "certificate_revoked, certificate_unknown (not in the registry for this device), certificate_superseded (renewed before; a retry for the same key gets the same successor), device_blocked, device_not_allowed, hook_denied, renewal_not_due (before its group's renewal.window_days), group_unknown (the certificate's group is no longer configured)", body = ErrorBody),
        (status = 408, description = "request_timeout", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type: the body must be application/json", body = ErrorBody),
        (status = 422, description = "csr_policy_violation", body = ErrorBody),
        (status = 429, description = "rate_limited", body = ErrorBody),
        (status = 503, description = "storage_unavailable: the registry cannot be reached; nothing was issued. hook_unavailable: the pre-issuance hook gave no answer. ca_unavailable: the CA key's token does not answer", body = ErrorBody),
    ))]
fn renew() {}

/// The CA chain, PEM, issuing CA first: the first issuer's. With `bundle=all`, every
/// certificate of every issuer's chain once (`[[issuers]]`), which a broker trusts during
/// a rollover.
#[utoipa::path(get, path = "/api/v1/ca",
    params(("bundle" = Option<CaBundle>, Query, description = "`first` (default): the first issuer's chain; `all`: every issuer's")),
    responses(
        (status = 200, description = "The CA chain", body = String, content_type = "application/x-pem-file"),
        (status = 400, description = "invalid_query", body = ErrorBody),
    ))]
fn ca() {}

/// The CRL signed by the issuing CA: DER, or PEM with `format=pem`. Re-signed at half
/// its validity (`ca.crl_validity_hours`) and at each revocation; every instance serves
/// the same number. `Cache-Control: no-cache` with an `ETag` naming the CRL number: a
/// cache revalidates (`If-None-Match`, answered 304) and never serves a replaced CRL.
/// With `[[issuers]]`, `issuer=NAME` is that issuer's CRL (default: the issuer named
/// `default`, else the first), and `issuer=all` with `format=pem` every issuer's CRL in
/// one file.
#[utoipa::path(get, path = "/api/v1/crl",
    params(
        ("format" = Option<CrlFormat>, Query, description = "`der` (default) or `pem`"),
        ("issuer" = Option<String>, Query, description = "An issuer's name (`[[issuers]]`), or `all` (with `format=pem`)"),
    ),
    responses(
        (status = 200, description = "The CRL", content(
            (Vec<u8> = "application/pkix-crl"),
            (String = "application/x-pem-file"),
        )),
        (status = 304, description = "The CRL named by `If-None-Match` is still current"),
        (status = 400, description = "invalid_query", body = ErrorBody),
        (status = 404, description = "issuer_unknown: no issuer of that name", body = ErrorBody),
        (status = 503, description = "storage_unavailable: no complete revoked list yet; crl_unavailable: no CRL could be signed (the message says why); crl_expired: past its nextUpdate and not re-signed yet", body = ErrorBody),
    ))]
fn crl() {}

#[derive(Serialize, ToSchema)]
pub struct RevokeRequest {
    /// RFC 5280 reason name; `unspecified` when absent or null.
    pub reason: Option<RevocationReasonName>,
}

#[derive(Serialize, ToSchema)]
pub enum RevocationReasonName {
    #[serde(rename = "unspecified")]
    Unspecified,
    #[serde(rename = "keyCompromise")]
    KeyCompromise,
    #[serde(rename = "cACompromise")]
    CaCompromise,
    #[serde(rename = "affiliationChanged")]
    AffiliationChanged,
    #[serde(rename = "superseded")]
    Superseded,
    #[serde(rename = "cessationOfOperation")]
    CessationOfOperation,
    #[serde(rename = "certificateHold")]
    CertificateHold,
    #[serde(rename = "privilegeWithdrawn")]
    PrivilegeWithdrawn,
    #[serde(rename = "aACompromise")]
    AaCompromise,
}

/// One issued certificate's record (admin).
#[utoipa::path(get, path = "/api/v1/certificates/{serial}",
    params(("serial" = String, Path, description = "The serial number, 32 hex digits", pattern = "^[0-9A-Fa-f]{32}$")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The record", body = CertificateAnswer),
        (status = 400, description = "invalid_serial", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 404, description = "certificate_not_found", body = ErrorBody),
        (status = 429, description = "rate_limited: too many failed admin authentications", body = ErrorBody),
        (status = 503, description = "storage_unavailable", body = ErrorBody),
    ))]
fn certificate() {}

/// Import a device certificate this CA signed that the registry does not know (admin):
/// one issued before the registry, or with the CA's key elsewhere. Once recorded it can
/// be revoked, and it renews (renewal refuses what the registry does not know). A record
/// already there stands and is answered.
#[utoipa::path(post, path = "/api/v1/certificates",
    request_body(content = ImportRequest),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The record as it stands", body = CertificateAnswer),
        (status = 400, description = "invalid_certificate (not this CA's, not a device certificate, or its common name is no device id), invalid_json", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 408, description = "request_timeout", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 429, description = "rate_limited: too many failed admin authentications", body = ErrorBody),
        (status = 503, description = "storage_unavailable: Redis is away; nothing was recorded", body = ErrorBody),
    ))]
fn import_certificate() {}

/// Revoke a certificate (admin): it is listed in the CRL from now on. Revoking again
/// answers the first revocation's time and reason.
#[utoipa::path(post, path = "/api/v1/certificates/{serial}/revoke",
    params(("serial" = String, Path, description = "The serial number, 32 hex digits", pattern = "^[0-9A-Fa-f]{32}$")),
    request_body(content = Option<RevokeRequest>, description = "Optional; `{}` or no body revokes as `unspecified`"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The record, revoked", body = CertificateAnswer),
        (status = 400, description = "invalid_serial, invalid_reason, invalid_json", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 404, description = "certificate_not_found", body = ErrorBody),
        (status = 408, description = "request_timeout", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 429, description = "rate_limited: too many failed admin authentications", body = ErrorBody),
        (status = 503, description = "storage_unavailable: Redis is away; nothing was revoked", body = ErrorBody),
    ))]
fn revoke_certificate() {}

#[derive(Serialize, ToSchema)]
pub struct ListRequest {
    /// The serial, 1 to 32 hex digits; colons or spaces between bytes are allowed.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[0-9A-Fa-f: ]*[1-9A-Fa-f][0-9A-Fa-f: ]*$"
    )]
    pub serial: String,
    /// RFC 5280 reason name; `unspecified` when absent or null.
    pub reason: Option<RevocationReasonName>,
}

/// Put a serial the CA signed on the CRL (admin), whether or not the registry holds its
/// certificate: one signed before the registry or elsewhere, whose certificate is lost
/// (RFC 5280 §5.3). A recorded serial is revoked through its record; an unrecorded one
/// is listed until the CA certificate's notAfter, and if its certificate is imported
/// later, its record comes back revoked. Listing again answers the first listing.
#[utoipa::path(post, path = "/api/v1/crl/entries",
    request_body(content = ListRequest),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The entry, listed", body = ListedAnswer),
        (status = 400, description = "invalid_serial, invalid_reason, invalid_json", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 408, description = "request_timeout", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 429, description = "rate_limited: too many failed admin authentications", body = ErrorBody),
        (status = 503, description = "storage_unavailable: Redis is away; nothing was listed", body = ErrorBody),
    ))]
fn list_serial() {}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CaBundle {
    First,
    All,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CrlFormat {
    Der,
    Pem,
}

/// Whether a device has a pending token (admin).
#[utoipa::path(get, path = "/api/v1/devices/{device_id}",
    params(("device_id" = String, Path, description = "The device id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The device's state", body = DeviceStatus),
        (status = 400, description = "invalid_device_id", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 429, description = "rate_limited: too many failed admin authentications", body = ErrorBody),
        (status = 503, description = "storage_unavailable", body = ErrorBody),
    ))]
fn device_status() {}

/// Revoke a device's pending token (admin).
#[utoipa::path(delete, path = "/api/v1/devices/{device_id}/token",
    params(("device_id" = String, Path, description = "The device id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Revoked, or nothing was pending", body = Revoked),
        (status = 400, description = "invalid_device_id", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 429, description = "rate_limited: too many failed admin authentications", body = ErrorBody),
        (status = 503, description = "storage_unavailable", body = ErrorBody),
    ))]
fn revoke_token() {}

/// Revoke every valid certificate of a device and its pending token; with `block`, the
/// device can no longer onboard or renew until unblocked (admin).
#[utoipa::path(post, path = "/api/v1/devices/{device_id}/revoke",
    params(("device_id" = String, Path, description = "The device id")),
    request_body(content = Option<RevokeDeviceRequest>, description = "Optional; no body revokes as `unspecified` without blocking"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Revoked (and blocked)", body = DeviceRevoked),
        (status = 400, description = "invalid_device_id, invalid_reason, invalid_json", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 408, description = "request_timeout", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 429, description = "rate_limited: too many failed admin authentications", body = ErrorBody),
        (status = 503, description = "storage_unavailable: Redis is away. Nothing was changed, unless Redis stopped answering during the request; either way, send it again (every step is idempotent)", body = ErrorBody),
    ))]
fn revoke_device() {}

/// Lift a device's block (admin).
#[utoipa::path(delete, path = "/api/v1/devices/{device_id}/block",
    params(("device_id" = String, Path, description = "The device id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Unblocked, or it was not blocked", body = Unblocked),
        (status = 400, description = "invalid_device_id", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 429, description = "rate_limited: too many failed admin authentications", body = ErrorBody),
        (status = 503, description = "storage_unavailable", body = ErrorBody),
    ))]
fn unblock_device() {}

/// A device's latest audit events, newest first (admin).
#[utoipa::path(get, path = "/api/v1/devices/{device_id}/events",
    params(("device_id" = String, Path, description = "The device id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The events", body = EventsAnswer),
        (status = 400, description = "invalid_device_id", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 429, description = "rate_limited: too many failed admin authentications", body = ErrorBody),
    ))]
fn device_events() {}

/// Tokens, certificates, refusals and failures per second over the last 15 minutes, and
/// totals since start (admin; what the console charts).
#[utoipa::path(get, path = "/api/v1/activity",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The timeline", body = ActivityAnswer),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 429, description = "rate_limited: too many failed admin authentications", body = ErrorBody),
    ))]
fn activity() {}

/// The fleet, a page at a time (admin): devices with certificates, or with a pending
/// token (`state=pending`), or blocked (`state=blocked`). Follow `next_cursor` until it
/// is null; a page may be short, even empty, and still have a next one.
#[utoipa::path(get, path = "/api/v1/devices",
    params(
        ("prefix" = Option<String>, Query, description = "Only ids that start with this", pattern = "^[A-Za-z0-9._:-]{0,128}$"),
        ("state" = Option<String>, Query, description = "active, pending, revoked, blocked or expired"),
        ("group" = Option<String>, Query, description = "Only devices whose latest certificate is of this enrollment group", pattern = "^[a-z0-9-]{1,32}$"),
        ("expiring_within_days" = Option<u32>, Query, description = "Only devices whose latest valid certificate expires within this many days", minimum = 1, maximum = 3650),
        ("limit" = Option<u32>, Query, description = "Devices per page (default 50)", minimum = 1, maximum = 200),
        ("cursor" = Option<String>, Query, description = "The previous page's next_cursor"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page", body = DevicePage),
        (status = 400, description = "invalid_query", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 429, description = "rate_limited: too many failed admin authentications", body = ErrorBody),
        (status = 503, description = "storage_unavailable: Redis is enabled and unreachable", body = ErrorBody),
    ))]
fn list_devices() {}

/// The latest refused requests, newest first (admin).
#[utoipa::path(get, path = "/api/v1/refusals",
    params(("code" = Option<String>, Query, description = "Only refusals with this error code", pattern = "^[a-z_]{1,64}$")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The refusals", body = RefusalsAnswer),
        (status = 400, description = "invalid_query", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 429, description = "rate_limited: too many failed admin authentications", body = ErrorBody),
    ))]
fn refusals() {}

/// The console's address without the slash: a redirect to `/console/`.
#[utoipa::path(get, path = "/console",
    responses(
        (status = 308, description = "To /console/"),
        (status = 404, description = "not_found: no admin key is configured", body = ErrorBody),
    ))]
fn console_redirect() {}

/// The operator console (sign in with an admin key).
#[utoipa::path(get, path = "/console/",
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 404, description = "not_found: no admin key is configured", body = ErrorBody),
    ))]
fn console_index() {}

/// The console's script.
#[utoipa::path(get, path = "/console/app.js",
    responses(
        (status = 200, description = "The script", body = String, content_type = "text/javascript"),
        (status = 404, description = "not_found: no admin key is configured", body = ErrorBody),
    ))]
fn console_script() {}

/// The console's style sheet.
#[utoipa::path(get, path = "/console/app.css",
    responses(
        (status = 200, description = "The style sheet", body = String, content_type = "text/css"),
        (status = 404, description = "not_found: no admin key is configured", body = ErrorBody),
    ))]
fn console_style() {}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json",
    responses((status = 200, description = "OpenAPI 3", body = Object)))]
fn openapi_json() {}

/// State and counts, for operators.
#[utoipa::path(get, path = "/health",
    responses(
        (status = 200, description = "ok or degraded", body = Health),
        (status = 503, description = "unavailable: Redis is required and unreachable", body = Health),
    ))]
fn health() {}

/// The process is alive.
#[utoipa::path(get, path = "/livez", responses((status = 200, description = "Alive", body = Probe)))]
fn livez() {}

/// A store can take tokens under the configured policy.
#[utoipa::path(get, path = "/readyz",
    responses(
        (status = 200, description = "Ready", body = Probe),
        (status = 503, description = "No store can serve", body = Probe),
    ))]
fn readyz() {}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "Metrics", body = String,
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")))]
fn metrics() {}

/// `GET /api/v1/openapi.json`.
pub async fn document() -> HttpResponse {
    let mut document = ApiDoc::openapi();
    document.merge(super::est::doc::EstDoc::openapi());
    document.merge(super::cmp::doc::CmpDoc::openapi());
    HttpResponse::Ok().json(document)
}

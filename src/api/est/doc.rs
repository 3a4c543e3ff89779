//! EST's routes in the OpenAPI document: bodies are base64 text, not JSON.

#![allow(dead_code)]

/// EST's part of the document, merged into the API's.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    cacerts,
    cacerts_label,
    csrattrs,
    csrattrs_label,
    simpleenroll,
    simpleenroll_label,
    serverkeygen,
    serverkeygen_label,
    simplereenroll,
    simplereenroll_label
))]
pub(in crate::api) struct EstDoc;

/// Base64 of DER (RFC 7030 §4): a PKCS#10 request, or a certs-only SignedData. A
/// request body is read the same whatever its media type.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String)]
pub struct Base64Der(String);

/// EST `cacerts` (RFC 7030 §4.1): the CA certificates, certs-only SignedData, base64.
/// Over TLS only.
#[utoipa::path(get, path = "/.well-known/est/cacerts",
    responses(
        (status = 200, description = "certs-only SignedData, base64", content((Base64Der = "application/pkcs7-mime"))),
        (status = 403, description = "Not over TLS", content((String = "text/plain"))),
    ))]
pub(in crate::api) fn cacerts() {}

/// As `cacerts`, for the enrollment group `label` (its issuer's chain).
#[utoipa::path(get, path = "/.well-known/est/{label}/cacerts",
    params(("label" = String, Path, description = "An enrollment group")),
    responses(
        (status = 200, description = "certs-only SignedData, base64", content((Base64Der = "application/pkcs7-mime"))),
        (status = 403, description = "Not over TLS", content((String = "text/plain"))),
        (status = 404, description = "No group of that name (text); a label the routes do not take (JSON not_found)", content((String = "text/plain"), (super::super::error_body::ErrorBody = "application/json"))),
    ))]
pub(in crate::api) fn cacerts_label() {}

/// EST `csrattrs` (RFC 7030 §4.5): 204, nothing asked beyond the group's policy.
#[utoipa::path(get, path = "/.well-known/est/csrattrs",
    responses(
        (status = 204, description = "No attributes asked"),
        (status = 403, description = "Not over TLS", content((String = "text/plain"))),
    ))]
pub(in crate::api) fn csrattrs() {}

#[utoipa::path(get, path = "/.well-known/est/{label}/csrattrs",
    params(("label" = String, Path, description = "An enrollment group")),
    responses(
        (status = 204, description = "No attributes asked"),
        (status = 403, description = "Not over TLS", content((String = "text/plain"))),
        (status = 404, description = "No group of that name (text); a label the routes do not take (JSON not_found)", content((String = "text/plain"), (super::super::error_body::ErrorBody = "application/json"))),
    ))]
pub(in crate::api) fn csrattrs_label() {}

/// EST `simpleenroll` (RFC 7030 §4.2.1): HTTP Basic with the device id and its
/// provisioning token or enrollment code (single use), a PKCS#10 request base64; sign-csr's
/// checks. Answers the certificate, certs-only.
#[utoipa::path(post, path = "/.well-known/est/simpleenroll",
    request_body(content((Base64Der = "application/pkcs10"), (Base64Der = "text/plain"))),
    responses(
        (status = 200, description = "The certificate, certs-only SignedData, base64", content((Base64Der = "application/pkcs7-mime"))),
        (status = 400, description = "A CSR that does not read or verify", content((String = "text/plain"))),
        (status = 401, description = "Credentials missing (empty body) or not accepted; WWW-Authenticate: Basic", content((String = "text/plain"))),
        (status = 403, description = "Not over TLS; device blocked, not allowed, mismatched, group unknown, hook denied", content((String = "text/plain"))),
        (status = 413, description = "Body too large", content((String = "text/plain"))),
        (status = 422, description = "csr_policy_violation", content((String = "text/plain"))),
        (status = 429, description = "Rate limited", content((String = "text/plain"))),
        (status = 503, description = "Storage, hook or CA key unavailable; Retry-After", content((String = "text/plain"))),
    ))]
pub(in crate::api) fn simpleenroll() {}

#[utoipa::path(post, path = "/.well-known/est/{label}/simpleenroll",
    params(("label" = String, Path, description = "An enrollment group: the token's")),
    request_body(content((Base64Der = "application/pkcs10"), (Base64Der = "text/plain"))),
    responses(
        (status = 200, description = "The certificate, certs-only SignedData, base64", content((Base64Der = "application/pkcs7-mime"))),
        (status = 400, description = "A CSR that does not read or verify", content((String = "text/plain"))),
        (status = 401, description = "Credentials missing (empty body) or not accepted; WWW-Authenticate: Basic", content((String = "text/plain"))),
        (status = 403, description = "Not over TLS; device blocked, not allowed, mismatched, group unknown, hook denied", content((String = "text/plain"))),
        (status = 404, description = "No group of that name (text); a label the routes do not take (JSON not_found)", content((String = "text/plain"), (super::super::error_body::ErrorBody = "application/json"))),
        (status = 413, description = "Body too large", content((String = "text/plain"))),
        (status = 422, description = "csr_policy_violation", content((String = "text/plain"))),
        (status = 429, description = "Rate limited", content((String = "text/plain"))),
        (status = 503, description = "Storage, hook or CA key unavailable; Retry-After", content((String = "text/plain"))),
    ))]
pub(in crate::api) fn simpleenroll_label() {}

/// `serverkeygen`'s answer (RFC 7030 §4.4.2): `multipart/mixed`, the private key
/// (`application/pkcs8`) and the certificate (certs-only), each part base64.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String)]
pub struct KeyAndCertificate(String);

/// EST `serverkeygen` (RFC 7030 §4.4): as `simpleenroll`, but the server makes the key
/// (P-256, else Ed25519, as the group takes) and answers it with the certificate.
#[utoipa::path(post, path = "/.well-known/est/serverkeygen",
    request_body(content((Base64Der = "application/pkcs10"), (Base64Der = "text/plain"))),
    responses(
        (status = 200, description = "The key and the certificate, multipart/mixed", content((KeyAndCertificate = "multipart/mixed"))),
        (status = 400, description = "A CSR that does not read or verify", content((String = "text/plain"))),
        (status = 401, description = "Credentials missing (empty body) or not accepted; WWW-Authenticate: Basic", content((String = "text/plain"))),
        (status = 403, description = "Not over TLS; device blocked, not allowed, mismatched, group unknown, hook denied", content((String = "text/plain"))),
        (status = 413, description = "Body too large", content((String = "text/plain"))),
        (status = 422, description = "csr_policy_violation", content((String = "text/plain"))),
        (status = 429, description = "Rate limited", content((String = "text/plain"))),
        (status = 503, description = "Storage, hook or CA key unavailable; Retry-After", content((String = "text/plain"))),
    ))]
pub(in crate::api) fn serverkeygen() {}

#[utoipa::path(post, path = "/.well-known/est/{label}/serverkeygen",
    params(("label" = String, Path, description = "An enrollment group: the token's")),
    request_body(content((Base64Der = "application/pkcs10"), (Base64Der = "text/plain"))),
    responses(
        (status = 200, description = "The key and the certificate, multipart/mixed", content((KeyAndCertificate = "multipart/mixed"))),
        (status = 400, description = "A CSR that does not read or verify", content((String = "text/plain"))),
        (status = 401, description = "Credentials missing (empty body) or not accepted; WWW-Authenticate: Basic", content((String = "text/plain"))),
        (status = 403, description = "Not over TLS; device blocked, not allowed, mismatched, group unknown, hook denied", content((String = "text/plain"))),
        (status = 404, description = "No group of that name (text); a label the routes do not take (JSON not_found)", content((String = "text/plain"), (super::super::error_body::ErrorBody = "application/json"))),
        (status = 413, description = "Body too large", content((String = "text/plain"))),
        (status = 422, description = "csr_policy_violation", content((String = "text/plain"))),
        (status = 429, description = "Rate limited", content((String = "text/plain"))),
        (status = 503, description = "Storage, hook or CA key unavailable; Retry-After", content((String = "text/plain"))),
    ))]
pub(in crate::api) fn serverkeygen_label() {}

/// EST `simplereenroll` (RFC 7030 §4.2.2): the current certificate as TLS client
/// certificate, a PKCS#10 request base64; mutual-TLS renewal's checks (not revoked, not
/// superseded, device not blocked, inside its group's renewal window).
#[utoipa::path(post, path = "/.well-known/est/simplereenroll",
    request_body(content((Base64Der = "application/pkcs10"), (Base64Der = "text/plain"))),
    responses(
        (status = 200, description = "The new certificate, certs-only SignedData, base64", content((Base64Der = "application/pkcs7-mime"))),
        (status = 400, description = "A CSR that does not read or verify", content((String = "text/plain"))),
        (status = 401, description = "No client certificate, or not one of ours", content((String = "text/plain"))),
        (status = 403, description = "Not over TLS; revoked, superseded, unknown, blocked, not due", content((String = "text/plain"))),
        (status = 413, description = "Body too large", content((String = "text/plain"))),
        (status = 422, description = "csr_policy_violation", content((String = "text/plain"))),
        (status = 429, description = "Rate limited", content((String = "text/plain"))),
        (status = 503, description = "Storage, hook or CA key unavailable; Retry-After", content((String = "text/plain"))),
    ))]
pub(in crate::api) fn simplereenroll() {}

#[utoipa::path(post, path = "/.well-known/est/{label}/simplereenroll",
    params(("label" = String, Path, description = "An enrollment group")),
    request_body(content((Base64Der = "application/pkcs10"), (Base64Der = "text/plain"))),
    responses(
        (status = 200, description = "The new certificate, certs-only SignedData, base64", content((Base64Der = "application/pkcs7-mime"))),
        (status = 400, description = "A CSR that does not read or verify", content((String = "text/plain"))),
        (status = 401, description = "No client certificate, or not one of ours", content((String = "text/plain"))),
        (status = 403, description = "Not over TLS; revoked, superseded, unknown, blocked, not due", content((String = "text/plain"))),
        (status = 404, description = "No group of that name (text); a label the routes do not take (JSON not_found)", content((String = "text/plain"), (super::super::error_body::ErrorBody = "application/json"))),
        (status = 413, description = "Body too large", content((String = "text/plain"))),
        (status = 422, description = "csr_policy_violation", content((String = "text/plain"))),
        (status = 429, description = "Rate limited", content((String = "text/plain"))),
        (status = 503, description = "Storage, hook or CA key unavailable; Retry-After", content((String = "text/plain"))),
    ))]
pub(in crate::api) fn simplereenroll_label() {}

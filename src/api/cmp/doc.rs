//! CMP's routes in the OpenAPI document: bodies are DER `PKIMessage`s, not JSON.

#![allow(dead_code)]

/// CMP's part of the document, merged into the API's.
#[derive(utoipa::OpenApi)]
#[openapi(paths(cmp, cmp_label))]
pub(in crate::api) struct CmpDoc;

/// A DER `PKIMessage` (RFC 4210 §5.1). A request body is read the same whatever its
/// media type.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct PkiMessage(Vec<u8>);

/// CMP (RFC 9483 over RFC 6712's HTTP transport): `ir`, `cr`, `p10cr` MAC-protected with
/// the provisioning token or enrollment code (senderKID = device id, single use), `kur`
/// and `rr` signed with the device's certificate, `certConf`. Every answer, a refusal
/// too, is a `PKIMessage` with HTTP 200; a refusal is an `error` body with a
/// PKIFailureInfo and the API's error code in its statusString.
#[utoipa::path(post, path = "/.well-known/cmp",
    request_body(content((PkiMessage = "application/pkixcmp"), (PkiMessage = "application/octet-stream"))),
    responses(
        (status = 200, description = "ip, cp, kup, rp, pkiConf or error", content((PkiMessage = "application/pkixcmp"))),
        (status = 400, description = "No body at all", content((String = "text/plain"))),
    ))]
pub(in crate::api) fn cmp() {}

/// As `/.well-known/cmp`, for the enrollment group `label` (RFC 9483 §5.1): the token's
/// group, or the certificate's for `kur`.
#[utoipa::path(post, path = "/.well-known/cmp/p/{label}",
    params(("label" = String, Path, description = "An enrollment group")),
    request_body(content((PkiMessage = "application/pkixcmp"), (PkiMessage = "application/octet-stream"))),
    responses(
        (status = 200, description = "ip, cp, kup, rp, pkiConf or error", content((PkiMessage = "application/pkixcmp"))),
        (status = 400, description = "No body at all", content((String = "text/plain"))),
    ))]
pub(in crate::api) fn cmp_label() {}

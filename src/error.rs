//! Every error a client can see, and its one mapping to a status and a JSON body:
//! `{"success": false, "error": {"code": "...", "message": "..."}}`.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_UNAVAILABLE: u64 = 2;

/// Which rate limit a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    /// Requests from one client address.
    Ip,
    /// Requests for one device id.
    Device,
    /// Failed admin authentications from one client address.
    Admin,
    /// MQTT provisioning requests made with one claim certificate.
    Claim,
}

impl LimitScope {
    /// The label of `provisiond_rate_limited_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitScope::Ip => "ip",
            LimitScope::Device => "device",
            LimitScope::Admin => "admin",
            LimitScope::Claim => "claim",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            LimitScope::Ip => "too many requests from this address (per-address limit)",
            LimitScope::Device => "too many requests for this device (per-device limit)",
            LimitScope::Claim => "too many requests with this claim certificate (per-claim limit)",
            LimitScope::Admin => {
                "too many failed admin authentications from this address (admin limit)"
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed JSON body: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidDeviceId(&'static str),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    TokenInvalid(&'static str),
    #[error("provisioning token has expired; onboard again")]
    TokenExpired,
    #[error("the token was issued for another device")]
    DeviceMismatch,
    #[error("this device id may not onboard here")]
    DeviceNotAllowed,
    #[error("{}; retry after {retry_after} s", scope.describe())]
    RateLimited { scope: LimitScope, retry_after: u64 },
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("{0}")]
    InvalidCsr(String),
    #[error("the CSR's signature does not verify with its own public key")]
    CsrSignatureInvalid,
    #[error("{0}")]
    CsrPolicy(String),
    #[error("provisioning token was already used, replaced or revoked; onboard again")]
    TokenUsed,
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the body must be JSON, sent as `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("{0}")]
    InvalidQuery(&'static str),
    #[error(
        "a serial number is 32 hex digits in a path (as sign-csr answers it), 1 to 32 in a body, not zero"
    )]
    InvalidSerial,
    #[error(
        "reason must be an RFC 5280 reason name: unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation, certificateHold, privilegeWithdrawn or aACompromise"
    )]
    InvalidReason,
    #[error(
        "the registry holds no certificate with this serial number (to put it on the CRL anyway, POST {{\"serial\": ...}} to /api/v1/crl/entries)"
    )]
    CertificateNotFound,
    #[error("{0}")]
    RenewalProofInvalid(String),
    #[error(
        "the certificate presented has expired (renewal.after_expiry_days allows {0} days after)"
    )]
    CertificateExpired(u32),
    #[error(
        "not yet: this certificate may renew in its last {0} days (its group's renewal.window_days)"
    )]
    RenewalNotDue(u32),
    #[error("the certificate presented is revoked; the device must onboard again")]
    CertificateRevoked,
    #[error("this device is blocked; an operator must lift the block first")]
    DeviceBlocked,
    #[error(
        "the certificate presented is not in the registry for this device; an operator can \
         import it (POST /api/v1/certificates), or the device onboards again"
    )]
    CertificateUnknown,
    #[error(
        "the certificate presented was renewed already: renew its successor (a retry for \
         the same key within a day gets the same successor)"
    )]
    CertificateSuperseded,
    #[error("certificate not accepted: {0}")]
    InvalidCertificate(String),
    /// A group name as the client or the token gave it (cut at 32 characters).
    #[error("no enrollment group named `{0}` is configured here")]
    GroupUnknown(String),
    /// An issuer name as the client gave it (cut at 32 characters).
    #[error("no issuer named `{0}` is configured here")]
    IssuerUnknown(String),
    #[error("the pre-issuance hook refused this certificate: {0}")]
    HookDenied(String),
    /// Why, for the log and the audit only: the device is told no more.
    #[error("the pre-issuance hook gave no usable answer; try again later")]
    HookUnavailable(String),
    #[error("no such endpoint")]
    NotFound,
    #[error(
        "the console is off: no admin key is configured. Set ADMIN_KEYS (`name:key`, \
         comma-separated), ADMIN_KEYS_FILE or admin.keys, and restart"
    )]
    ConsoleOff,
    /// With the methods the endpoint takes, for the `Allow` header.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed(&'static str),
    #[error("token storage is unavailable; retry shortly")]
    StorageUnavailable,
    #[error("token storage lost recent writes; this request can be served in {0} s")]
    StorageRecovering(u64),
    /// Storage is up but cannot keep this request's writes as configured (a shard without
    /// the replicas `redis.wait_replicas` asks for): why, in words.
    #[error("token storage cannot keep this request safe now: {0}; retry shortly")]
    StorageDegraded(String),
    /// The CRL could not be re-signed before its nextUpdate: a broker would refuse every
    /// client with it, so it is not served.
    #[error("the CRL is past its nextUpdate and could not be re-signed yet; retry shortly")]
    CrlExpired,
    /// No CRL could be signed, for a reason other than storage: the reason, in words.
    #[error("no CRL could be signed: {0}")]
    CrlUnavailable(String),
    /// The CA's key is in a token that does not answer now (unplugged, restarting): the
    /// request used nothing and may be repeated.
    #[error("the CA cannot sign now (its key's token does not answer); retry shortly")]
    CaUnavailable,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// The stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidDeviceId(_) => "invalid_device_id",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::TokenInvalid(_) => "token_invalid",
            ApiError::TokenExpired => "token_expired",
            ApiError::DeviceMismatch => "device_mismatch",
            ApiError::DeviceNotAllowed => "device_not_allowed",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::InvalidCsr(_) => "invalid_csr",
            ApiError::CsrSignatureInvalid => "csr_signature_invalid",
            ApiError::CsrPolicy(_) => "csr_policy_violation",
            ApiError::TokenUsed => "token_used",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::InvalidSerial => "invalid_serial",
            ApiError::InvalidReason => "invalid_reason",
            ApiError::CertificateNotFound => "certificate_not_found",
            ApiError::RenewalProofInvalid(_) => "renewal_proof_invalid",
            ApiError::CertificateExpired(_) => "certificate_expired",
            ApiError::CertificateRevoked => "certificate_revoked",
            ApiError::DeviceBlocked => "device_blocked",
            ApiError::CertificateUnknown => "certificate_unknown",
            ApiError::CertificateSuperseded => "certificate_superseded",
            ApiError::InvalidCertificate(_) => "invalid_certificate",
            ApiError::HookDenied(_) => "hook_denied",
            ApiError::GroupUnknown(_) => "group_unknown",
            ApiError::IssuerUnknown(_) => "issuer_unknown",
            ApiError::RenewalNotDue(_) => "renewal_not_due",
            ApiError::HookUnavailable(_) => "hook_unavailable",
            ApiError::NotFound | ApiError::ConsoleOff => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::StorageUnavailable
            | ApiError::StorageRecovering(_)
            | ApiError::StorageDegraded(_) => "storage_unavailable",
            ApiError::CrlExpired => "crl_expired",
            ApiError::CrlUnavailable(_) => "crl_unavailable",
            ApiError::CaUnavailable => "ca_unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_)
            | ApiError::InvalidQuery(_)
            | ApiError::InvalidSerial
            | ApiError::InvalidReason
            | ApiError::InvalidDeviceId(_)
            | ApiError::InvalidCsr(_)
            | ApiError::InvalidCertificate(_)
            | ApiError::CsrSignatureInvalid => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_)
            | ApiError::TokenInvalid(_)
            | ApiError::TokenExpired
            | ApiError::TokenUsed
            | ApiError::RenewalProofInvalid(_)
            | ApiError::CertificateExpired(_) => StatusCode::UNAUTHORIZED,
            ApiError::DeviceMismatch
            | ApiError::DeviceNotAllowed
            | ApiError::CertificateRevoked
            | ApiError::DeviceBlocked
            | ApiError::CertificateUnknown
            | ApiError::CertificateSuperseded
            | ApiError::HookDenied(_)
            | ApiError::GroupUnknown(_)
            | ApiError::RenewalNotDue(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotFound
            | ApiError::ConsoleOff
            | ApiError::CertificateNotFound
            | ApiError::IssuerUnknown(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::CsrPolicy(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::StorageUnavailable
            | ApiError::StorageRecovering(_)
            | ApiError::StorageDegraded(_)
            | ApiError::CrlExpired
            | ApiError::CrlUnavailable(_)
            | ApiError::CaUnavailable
            | ApiError::HookUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = match self {
            // The cause is logged by the request logger; the client gets no internals.
            ApiError::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::StorageUnavailable
            | ApiError::StorageDegraded(_)
            | ApiError::CrlExpired
            | ApiError::CrlUnavailable(_)
            | ApiError::CaUnavailable
            | ApiError::HookUnavailable(_) => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_UNAVAILABLE));
            }
            ApiError::StorageRecovering(seconds) => {
                response.insert_header((header::RETRY_AFTER, *seconds));
            }
            ApiError::RateLimited { retry_after, .. } => {
                response.insert_header((header::RETRY_AFTER, *retry_after));
            }
            // RFC 9110 asks a 405 to say what the endpoint takes.
            ApiError::MethodNotAllowed(allow) => {
                response.insert_header((header::ALLOW, *allow));
            }
            ApiError::Unauthorized(_)
            | ApiError::TokenInvalid(_)
            | ApiError::TokenExpired
            | ApiError::TokenUsed
            | ApiError::RenewalProofInvalid(_)
            | ApiError::CertificateExpired(_) => {
                response
                    .insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            _ => {}
        }
        response.json(json!({
            "success": false,
            "error": { "code": self.code(), "message": message },
        }))
    }
}

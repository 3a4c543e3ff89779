//! The JSON error every API refusal carries, as the OpenAPI document describes it
//! (the answer itself is written by [`crate::error::ApiError`]).

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// Always false.
    pub success: bool,
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid_json`, `invalid_device_id`, `unauthorized`,
    /// `token_invalid`, `token_expired`, `token_used`, `device_mismatch`,
    /// `device_not_allowed`, `invalid_csr`, `csr_signature_invalid`,
    /// `csr_policy_violation`, `payload_too_large`, `unsupported_media_type`,
    /// `request_timeout`, `rate_limited`, `invalid_query`, `invalid_serial`,
    /// `invalid_reason`, `certificate_not_found`, `renewal_proof_invalid`,
    /// `certificate_expired`, `certificate_revoked`, `certificate_unknown`, `certificate_superseded`,
    /// `invalid_certificate`, `device_blocked`, `hook_denied`, `hook_unavailable`,
    /// `group_unknown`, `renewal_not_due`, `crl_expired`, `crl_unavailable`, `ca_unavailable`,
    /// `not_found`, `method_not_allowed`, `storage_unavailable`, `internal_error`.
    pub code: String,
    pub message: String,
}

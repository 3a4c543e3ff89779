//! `GET /api/v1/groups`: the enrollment groups in force, with their policy and what this
//! instance issued under each. Never a key, a secret or the hook's URL.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::{AppState, no_store};
use crate::ca::KeyType;
use crate::config::HookOnError;
use crate::error::ApiError;
use crate::groups::Group;
use crate::metrics::{GroupLabel, Metrics};

#[derive(Serialize, utoipa::ToSchema)]
pub struct GroupList {
    pub success: bool,
    /// In the order configured.
    pub groups: Vec<GroupView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct GroupView {
    pub name: String,
    /// `key`, `derived` or `open`.
    pub onboarding: &'static str,
    /// How many enrollment keys the group takes (`key` mode), never the keys.
    pub enrollment_keys: usize,
    /// The device id pattern (whole-id match), if any.
    pub device_id_pattern: Option<String>,
    /// How many ids the allowlist holds, if there is one.
    pub device_allowlist: Option<usize>,
    /// The key types a CSR may have: `ecdsa-p256`, `ecdsa-p384`, `ed25519`, `rsa-2048`,
    /// `rsa-3072`, `rsa-4096` (or `rsa-<min>..<max>` for the range `[ca]` allows).
    pub key_types: Vec<String>,
    pub validity_days: u32,
    /// The issuer that signs its certificates (`[[issuers]]`; `default` without).
    pub issuer: String,
    pub renewal: RenewalView,
    /// The certificate profile's templates: `subject` (`common_name`, `organization`,
    /// `organizational_unit`, `country`), `san_dns`, `san_uris`, `extended_key_usage`.
    #[schema(value_type = Object)]
    pub profile: serde_json::Value,
    /// The pre-issuance hook, when the group has one.
    pub hook: Option<HookView>,
    /// Issued under this group by this instance since it started (Prometheus sums
    /// them over instances: `provisiond_group_*_issued_total`).
    pub issued_since_start: IssuedCounts,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RenewalView {
    /// Renewal is taken only this many days before notAfter; null: any time.
    pub window_days: Option<u32>,
    pub after_expiry_days: u32,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct HookView {
    pub timeout_ms: u64,
    /// `deny` or `allow`.
    pub on_error: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct IssuedCounts {
    pub tokens: u64,
    pub certificates: u64,
}

pub async fn list_groups(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize_admin(&req)?;
    let groups = state.groups.current();
    Ok(no_store(HttpResponse::Ok()).json(GroupList {
        success: true,
        groups: groups
            .iter()
            .map(|g| GroupView::of(g, &state.metrics))
            .collect(),
    }))
}

impl GroupView {
    fn of(group: &Group, metrics: &Metrics) -> Self {
        let (device_id_pattern, device_allowlist) = group.devices.describe();
        let label = GroupLabel {
            group: group.name.to_string(),
        };
        Self {
            name: group.name.to_string(),
            onboarding: group.onboarding.mode(),
            enrollment_keys: group.onboarding.key_count(),
            device_id_pattern,
            device_allowlist,
            key_types: key_types(group),
            validity_days: group.validity_days,
            issuer: group.issuer.to_string(),
            renewal: RenewalView {
                window_days: group.renewal_window_days,
                after_expiry_days: group.after_expiry_days,
            },
            profile: group.profile.describe(),
            hook: group.hook.as_ref().map(|hook| {
                let (timeout_ms, on_error) = hook.describe();
                HookView {
                    timeout_ms,
                    on_error: match on_error {
                        HookOnError::Deny => "deny",
                        HookOnError::Allow => "allow",
                    },
                }
            }),
            issued_since_start: IssuedCounts {
                tokens: metrics.group_tokens_issued.get_or_create(&label).get(),
                certificates: metrics
                    .group_certificates_issued
                    .get_or_create(&label)
                    .get(),
            },
        }
    }
}

fn key_types(group: &Group) -> Vec<String> {
    let policy = &group.keys;
    if let Some(only) = &policy.only {
        return only.iter().map(KeyType::to_string).collect();
    }
    let mut types = Vec::new();
    if policy.allow_ecdsa {
        types.extend(["ecdsa-p256".to_owned(), "ecdsa-p384".to_owned()]);
    }
    if policy.allow_ed25519 {
        types.push("ed25519".to_owned());
    }
    if policy.allow_rsa {
        types.push(format!(
            "rsa-{}..{}",
            policy.rsa_min_bits, policy.rsa_max_bits
        ));
    }
    types
}

/// The enrollment groups in force (admin): each one's onboarding, device rules, key
/// types, validity, renewal, profile, hook and counts. Never a key, secret or hook URL.
#[utoipa::path(get, path = "/api/v1/groups",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The groups", body = GroupList),
        (status = 401, description = "unauthorized", body = super::error_body::ErrorBody),
        (status = 429, description = "rate_limited: too many failed admin authentications", body = super::error_body::ErrorBody),
    ))]
#[allow(dead_code)]
pub(super) fn list_groups_doc() {}

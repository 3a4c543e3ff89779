//! `POST /api/v1/onboarding`: a single-use provisioning token for a device.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::body::JsonBody;
use super::{AppState, attribute, no_store, note_device};
use crate::activity::Happened;
use crate::auth::{OnboardingAuth, authorization, bearer};
use crate::ca::NameOverrides;
use crate::clock::unix_now;
use crate::domain::{DeviceId, Jti};
use crate::error::ApiError;
use crate::groups::{DEFAULT_GROUP, Group, Groups, group_name_is_valid};
use crate::lifecycle::storage_error;
use crate::metrics::GroupLabel;
use crate::request_facts;
use crate::store::{Issued, TokenFacts, TokenStore};
use crate::timefmt::rfc3339_now;
use crate::token::IssuedToken;

#[derive(Serialize, utoipa::ToSchema)]
pub struct OnboardingResponse {
    pub success: bool,
    /// The JWT to send to sign-csr as `Authorization: Bearer <token>`; single use.
    pub provisioning_token: String,
    /// The same single-use credential, short (59 to 102 base64url characters): accepted
    /// wherever the token is, for clients that cannot carry a JWT (an EST password).
    /// Using either uses both.
    pub enrollment_code: String,
    /// Seconds the token stays valid.
    pub expires_in: u64,
    pub timestamp: String,
}

pub async fn onboarding(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let raw = JsonBody::read_raw(&req, payload, state.body_limit, state.body_timeout).await?;
    let client = state.client_ip(&req);
    state.limit_ip(client).await?;
    let groups = state.groups.current();
    // The enrollment key first: it needs no body, and it names the group.
    let keyed = groups.by_enrollment_key(&req);
    if keyed.is_none()
        && let Some(only) = groups.only()
    {
        // One group: a wrong key is refused before the body is read, as always (the key
        // is looked at again only on this path, to say which refusal).
        only.onboarding.check_key(&req)?;
    }
    let body = raw.json()?;
    // A string or nothing, always; without `[[groups]]` its value names nothing.
    let named = body.str_field_or_absent("group")?;
    let named = if groups.is_implicit() { None } else { named };
    let group = find_group(&groups, keyed, named, &req)?;
    let device = body.device_id()?;
    // A new token makes a new certificate, whose common name the id becomes.
    DeviceId::parse_onboarding(device.as_str()).map_err(ApiError::InvalidDeviceId)?;
    note_device(&device);
    if let OnboardingAuth::Derived(keys) = &group.onboarding {
        let ts = keys.verify(authorization(&req), device.as_str(), unix_now())?;
        let fresh = state
            .store
            .first_use(&device, ts, keys.clock_skew())
            .await
            .map_err(storage_error)?;
        if !fresh {
            return Err(ApiError::Unauthorized(
                "this device signature was already used; sign a new timestamp",
            ));
        }
    }
    // The enrollment key (or the open mode) was checked above, the device's own key here.
    let (issued, _) = issue_token(&req, &state, &groups, &group, &device, client).await?;
    Ok(no_store(HttpResponse::Ok()).json(OnboardingResponse {
        success: true,
        provisioning_token: issued.token,
        enrollment_code: issued.code,
        expires_in: issued.expires_at - issued.issued_at,
        timestamp: rfc3339_now(),
    }))
}

/// Onboarding after the device authenticated for `group`: the device and group rules,
/// the profile, the device's rate limit, then the token, stored and signed, counted and
/// audited; answered with the facts the store keeps of it. Onboarding and EST's
/// enrollment with a derived key both come here.
///
/// Errors: 403 `device_not_allowed`, `device_blocked`, 422 `csr_policy_violation`, 429,
/// 503 `storage_unavailable`.
pub(super) async fn issue_token(
    req: &HttpRequest,
    state: &AppState,
    groups: &Groups,
    group: &Arc<Group>,
    device: &DeviceId,
    client: Option<std::net::IpAddr>,
) -> Result<(IssuedToken, TokenFacts), ApiError> {
    attribute(req, device);
    group.devices.check(device)?;
    // An id another group's rules claim is that group's, whatever this one takes.
    if let Some(owner) = groups.claimed_by(device)
        && !Arc::ptr_eq(owner, group)
    {
        return Err(ApiError::DeviceNotAllowed);
    }
    // An id the group's profile cannot make a certificate for is told now, not after
    // it has a token (422 `csr_policy_violation`, as sign-csr would say).
    group
        .profile
        .render(device, &group.name, &NameOverrides::default())?;
    // Only after authentication: otherwise anyone could use up a device's allowance.
    state.limit_device(device).await?;

    // The store keeps the token's group, expiry and the epoch read before the write, so
    // that CMP can make the credential again.
    let (jti, stored) = store_new_token(state, device, &group.name, state.tokens.ttl()).await?;
    request_facts::note(|facts| facts.jti = Some(jti.short().to_owned()));
    // The token carries the epoch read after the write, as it always has, so that a loss
    // noticed meanwhile never refuses a token written after it. When the two differ,
    // CMP's remade credential is not the device's, and its MAC is refused: the device
    // onboards again, nothing is taken twice.
    let facts = TokenFacts {
        epoch: state.store.epoch(),
        ..stored
    };
    let issued = state.tokens.issue_with(device, jti, &facts)?;
    state.metrics.tokens_issued.inc();
    state
        .metrics
        .group_tokens_issued
        .get_or_create(&GroupLabel {
            group: group.name.to_string(),
        })
        .inc();
    state.activity.count(Happened::TokenIssued);
    state
        .audit
        .token_issued(device, &issued.jti, &group.name, client);

    Ok((issued, facts))
}

/// Makes a new random jti the pending token of `device` in `group` for `ttl`, replacing
/// any other: the jti and the facts the store keeps (their epoch read before the write).
/// A token Redis may or may not have kept (it stopped answering mid-write) is never also
/// put into memory: the next attempt has a new jti (and goes to memory, Redis being
/// marked away by then).
///
/// Errors: 403 `device_blocked`, 503 `storage_unavailable`.
pub(crate) async fn store_new_token(
    state: &AppState,
    device: &DeviceId,
    group: &str,
    ttl: std::time::Duration,
) -> Result<(Jti, TokenFacts), ApiError> {
    let stored = state.tokens.facts(group, state.store.epoch());
    let mut jti = Jti::random();
    for attempt in 1.. {
        match state
            .store
            .issue(device, &jti, ttl, &stored)
            .await
            .map_err(storage_error)?
        {
            Issued::Issued => break,
            Issued::Blocked => return Err(ApiError::DeviceBlocked),
            Issued::Unsure if attempt < 3 => jti = Jti::random(),
            Issued::Unsure => return Err(ApiError::StorageUnavailable),
        }
    }
    Ok((jti, stored))
}

/// The group a device onboards into: the one whose enrollment key the request bears
/// (a `group` field naming another is refused), else the body's `group` (default
/// `default`), which must then be a group that takes no enrollment key.
///
/// Errors: 401 `unauthorized` (no key, or a key not accepted, where one is needed),
/// 403 `group_unknown` (no group of that name).
fn find_group(
    groups: &Groups,
    keyed: Option<&Arc<Group>>,
    named: Option<&str>,
    req: &HttpRequest,
) -> Result<Arc<Group>, ApiError> {
    if let Some(group) = keyed {
        return match named {
            Some(name) if name != &*group.name => Err(ApiError::Unauthorized(
                "this enrollment key is for another group than the one named",
            )),
            _ => Ok(group.clone()),
        };
    }
    let name = named.unwrap_or(DEFAULT_GROUP);
    let group = groups.get(name).ok_or_else(|| match (named, bearer(req)) {
        // A key that matched no group, for a device that named none: the key is wrong.
        (None, Some(_)) => ApiError::Unauthorized("enrollment key not accepted"),
        _ => ApiError::GroupUnknown(shown_group(name)),
    })?;
    group.onboarding.check_key(req)?;
    Ok(group.clone())
}

/// A group name fit to repeat in an answer: one that could be a group's, else `?`.
pub(super) fn shown_group(name: &str) -> String {
    if group_name_is_valid(name) {
        name.to_owned()
    } else {
        "?".to_owned()
    }
}

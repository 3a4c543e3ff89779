//! `GET /api/v1/devices`: the fleet, page by page, for operators and the console.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::admin::BlockView;
use super::{AppState, no_store};
use crate::clock::unix_now;
use crate::domain::DeviceId;
use crate::error::ApiError;
use crate::groups::group_name_is_valid;
use crate::lifecycle::storage_error;
use crate::registry::CertificateRecord;
use crate::store::{CertificateRegistry, FleetSource};
use crate::timefmt::unix_rfc3339;

/// How many devices a page holds by default, and at most.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;
/// Batches one request may read before it answers a short page and a cursor (with
/// Redis, each at most 10 SCAN calls).
const BATCHES_PER_PAGE: usize = 5;

#[derive(Serialize, utoipa::ToSchema)]
pub struct DevicePage {
    pub success: bool,
    pub devices: Vec<DeviceSummary>,
    /// Pass as `cursor` for the next page; null when the listing is complete. A page
    /// may hold fewer devices than `limit` (even none) and still have a next one.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeviceSummary {
    pub device_id: String,
    /// `blocked`, `active` (a valid certificate), `pending` (a token, no valid
    /// certificate), `revoked` (certificates, all revoked or expired, one revoked),
    /// `expired` (certificates, all expired) or `unknown`.
    pub state: &'static str,
    /// Certificates kept in the registry, and how many are valid now.
    pub certificates: usize,
    pub valid_certificates: usize,
    /// The latest notAfter of its valid certificates (RFC 3339); null without one.
    pub valid_until: Option<String>,
    pub pending: bool,
    pub blocked: Option<BlockView>,
    /// The enrollment group of its latest certificate; null without one.
    pub group: Option<String>,
}

/// What a listing asks for.
struct FleetQuery {
    prefix: String,
    state: Option<&'static str>,
    expiring_within: Option<u64>,
    limit: usize,
    cursor: Option<String>,
    group: Option<String>,
}

impl FleetQuery {
    fn parse(query: &str) -> Result<Self, ApiError> {
        let mut parsed = Self {
            prefix: String::new(),
            state: None,
            expiring_within: None,
            limit: DEFAULT_LIMIT,
            cursor: None,
            group: None,
        };
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "prefix" => {
                    if value.len() > 128 || DeviceId::parse(&format!("{value}x")).is_err() {
                        return Err(ApiError::InvalidQuery(
                            "prefix is the start of a device id: A-Z a-z 0-9 . _ : -",
                        ));
                    }
                    parsed.prefix = value.into_owned();
                }
                "state" => {
                    parsed.state = Some(
                        ["active", "pending", "revoked", "blocked", "expired"]
                            .into_iter()
                            .find(|s| *s == value)
                            .ok_or(ApiError::InvalidQuery(
                                "state is active, pending, revoked, blocked or expired",
                            ))?,
                    );
                }
                "expiring_within_days" => {
                    let days: u64 = value
                        .parse()
                        .ok()
                        .filter(|d| (1..=3650).contains(d))
                        .ok_or(ApiError::InvalidQuery(
                            "expiring_within_days is a whole number of days, 1 to 3650",
                        ))?;
                    parsed.expiring_within = Some(days * 86_400);
                }
                "limit" => {
                    parsed.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or(ApiError::InvalidQuery("limit is 1 to 200"))?;
                }
                "cursor" => {
                    if value.is_empty() || value.len() > 160 || !value.is_ascii() {
                        return Err(ApiError::InvalidQuery(
                            "cursor is the next_cursor of the previous page",
                        ));
                    }
                    parsed.cursor = Some(value.into_owned());
                }
                "group" => {
                    if !group_name_is_valid(&value) {
                        return Err(ApiError::InvalidQuery("group is a group's name: a-z 0-9 -"));
                    }
                    parsed.group = Some(value.into_owned());
                }
                _ => {
                    return Err(ApiError::InvalidQuery(
                        "the parameters are prefix, state, group, expiring_within_days, limit, \
                         cursor",
                    ));
                }
            }
        }
        Ok(parsed)
    }

    fn source(&self) -> FleetSource {
        match self.state {
            Some("pending") => FleetSource::Pending,
            Some("blocked") => FleetSource::Blocked,
            _ => FleetSource::Registry,
        }
    }

    fn wants(&self, device: &DeviceSummary, records: &[CertificateRecord], now: u64) -> bool {
        if self.group.is_some() && device.group != self.group {
            return false;
        }
        if let Some(within) = self.expiring_within {
            let latest = valid_until(records, now);
            if latest.is_none_or(|t| t > now + within) {
                return false;
            }
        }
        match self.state {
            None | Some("pending") | Some("blocked") => true,
            Some(state) => device.state == state,
        }
    }
}

fn valid_until(records: &[CertificateRecord], now: u64) -> Option<u64> {
    records
        .iter()
        .filter(|r| r.status(now) == "valid")
        .map(|r| r.not_after)
        .max()
}

/// `GET /api/v1/devices?prefix=&state=&group=&expiring_within_days=&limit=&cursor=`: devices
/// with certificates (or, with `state=pending` / `state=blocked`, those with a pending
/// token / a block), in pages. With Redis the order is the registry's (by slot), not
/// alphabetical; without it, by id.
///
/// Errors: 400 `invalid_query`, 401 `unauthorized`, 503 `storage_unavailable`.
pub async fn list_devices(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize_admin(&req)?;
    let query = FleetQuery::parse(req.query_string())?;
    let source = query.source();
    let now = unix_now();
    let mut devices = Vec::new();
    let mut cursor = query.cursor.clone();
    for _ in 0..BATCHES_PER_PAGE {
        let wanted = query.limit - devices.len();
        let batch = state
            .store
            .fleet_batch(source, &query.prefix, cursor.as_deref(), wanted)
            .await
            .map_err(storage_error)?
            .ok_or(ApiError::InvalidQuery(
                "cursor is the next_cursor of the previous page",
            ))?;
        for (device, records) in batch.devices {
            let records = match source {
                FleetSource::Registry => records,
                _ => state
                    .store
                    .certificates_of(&device)
                    .await
                    .map_err(storage_error)?,
            };
            let summary = summarize(&state, device, &records, now).await?;
            if query.wants(&summary, &records, now) {
                devices.push(summary);
            }
        }
        cursor = batch.next;
        if cursor.is_none() || devices.len() >= query.limit {
            break;
        }
    }
    Ok(no_store(HttpResponse::Ok()).json(DevicePage {
        success: true,
        devices,
        next_cursor: cursor,
    }))
}

async fn summarize(
    state: &AppState,
    device: DeviceId,
    records: &[CertificateRecord],
    now: u64,
) -> Result<DeviceSummary, ApiError> {
    let pending = state
        .store
        .pending_for(&device)
        .await
        .map_err(storage_error)?
        .is_some();
    let blocked = state.store.blocked(&device).await.map_err(storage_error)?;
    let valid = records.iter().filter(|r| r.status(now) == "valid").count();
    let state = if blocked.is_some() {
        "blocked"
    } else if valid > 0 {
        "active"
    } else if pending {
        "pending"
    } else if records.iter().any(|r| r.revocation.is_some()) {
        "revoked"
    } else if records.is_empty() {
        "unknown"
    } else {
        "expired"
    };
    Ok(DeviceSummary {
        device_id: device.to_string(),
        state,
        certificates: records.len(),
        valid_certificates: valid,
        valid_until: valid_until(records, now).map(unix_rfc3339),
        pending,
        blocked: blocked.map(BlockView::of),
        group: records
            .iter()
            .max_by_key(|r| r.issued_at)
            .map(|r| r.group.clone()),
    })
}

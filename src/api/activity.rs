//! What the console shows, for admins: the last 15 minutes per second, the latest
//! refused requests, and one device's latest audit events.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::{AppState, no_store};
use crate::activity::{Refusal, Second, Totals, WINDOW_SECONDS};
use crate::audit::AuditEvent;
use crate::clock::unix_now;
use crate::domain::DeviceId;
use crate::error::ApiError;

#[derive(Serialize, utoipa::ToSchema)]
pub struct ActivityAnswer {
    pub success: bool,
    /// Unix seconds, the server's clock: the timeline ends here.
    pub now: u64,
    pub window_seconds: u64,
    /// The seconds of the window that saw anything, oldest first (the others are zero).
    pub seconds: Vec<Second>,
    /// Since the server started.
    pub totals: Totals,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RefusalsAnswer {
    pub success: bool,
    /// Newest first.
    pub refusals: Vec<Refusal>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventsAnswer {
    pub success: bool,
    pub device_id: String,
    /// Newest first; the server keeps the latest few thousand over every device.
    pub events: Vec<AuditEvent>,
}

/// `GET /api/v1/activity`.
pub async fn activity(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize_admin(&req)?;
    let shared = match &state.history {
        Some(history) => history.timeline(state.activity.timeline()).await,
        None => None,
    };
    let (seconds, totals) = shared.unwrap_or_else(|| state.activity.timeline());
    Ok(no_store(HttpResponse::Ok()).json(ActivityAnswer {
        success: true,
        now: unix_now(),
        window_seconds: WINDOW_SECONDS,
        seconds,
        totals,
    }))
}

/// `GET /api/v1/refusals[?code=<error code>]`.
pub async fn refusals(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize_admin(&req)?;
    let code = code_filter(req.query_string())?;
    let shared = match &state.history {
        Some(history) => {
            let local = state.activity.refusals(None);
            history.refusals(code.as_deref(), local).await
        }
        None => None,
    };
    Ok(no_store(HttpResponse::Ok()).json(RefusalsAnswer {
        success: true,
        refusals: shared.unwrap_or_else(|| state.activity.refusals(code.as_deref())),
    }))
}

/// `code=<error code>` (lower case and `_`), optional; nothing else is accepted.
fn code_filter(query: &str) -> Result<Option<String>, ApiError> {
    let mut code = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("code", value))
                if (1..=64).contains(&value.len())
                    && value.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
            {
                code = Some(value.to_owned());
            }
            Some(("code", _)) => {
                return Err(ApiError::InvalidQuery(
                    "code is an error code: 1 to 64 of a-z and _",
                ));
            }
            _ => return Err(ApiError::InvalidQuery("the only parameter is `code`")),
        }
    }
    Ok(code)
}

/// `GET /api/v1/devices/{device_id}/events`.
pub async fn device_events(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize_admin(&req)?;
    let device = DeviceId::parse(&path).map_err(ApiError::InvalidDeviceId)?;
    let shared = match &state.history {
        Some(history) => {
            let local = state.audit.of_device(&device);
            history.events(device.as_str(), local).await
        }
        None => None,
    };
    Ok(no_store(HttpResponse::Ok()).json(EventsAnswer {
        success: true,
        device_id: device.to_string(),
        events: shared.unwrap_or_else(|| state.audit.of_device(&device)),
    }))
}

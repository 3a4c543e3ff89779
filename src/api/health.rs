//! Probes for operators: `/health` (state and counts), `/livez` and `/readyz`.

use actix_web::http::header::RETRY_AFTER;
use actix_web::{HttpResponse, web};
use serde_json::{Value, json};

use super::AppState;
use crate::error::RETRY_AFTER_UNAVAILABLE;
use crate::store::{StorageMode, TokenStore};
use crate::timefmt::rfc3339;

/// Never touches Redis: the counts come from the store's background SCAN, so this
/// answers in microseconds whatever the number of pending tokens.
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let stats = state.store.stats().await;
    let status = match (stats.mode, &stats.redis) {
        (StorageMode::Unavailable, _) => "unavailable",
        (StorageMode::Memory, Some(_)) => "degraded",
        _ => "ok",
    };
    let redis = match &stats.redis {
        Some(redis) => {
            let counts = redis.counts.as_ref();
            json!({
                "enabled": true,
                "connected": redis.connected,
                "tokenCount": counts.map(|c| c.tokens),
                "deviceCount": counts.map(|c| c.devices),
                "countedAt": counts.map(|c| rfc3339(c.counted_at.into())),
                "countMillis": counts.map(|c| c.took.as_millis() as u64),
            })
        }
        None => json!({
            "enabled": false,
            "connected": false,
            "tokenCount": Value::Null,
            "deviceCount": Value::Null,
        }),
    };
    let body = json!({
        "status": status,
        "storage": stats.mode.as_str(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "redis": redis,
        "memory": { "tokenCount": stats.memory_tokens },
        "onboarding": if state.onboarding.is_open() { "open" } else { "key" },
    });
    if stats.mode == StorageMode::Unavailable {
        HttpResponse::ServiceUnavailable()
            .insert_header((RETRY_AFTER, RETRY_AFTER_UNAVAILABLE))
            .json(body)
    } else {
        HttpResponse::Ok().json(body)
    }
}

pub async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready when some store can take tokens under the configured policy.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.store.mode() {
        StorageMode::Unavailable => HttpResponse::ServiceUnavailable()
            .insert_header((RETRY_AFTER, RETRY_AFTER_UNAVAILABLE))
            .json(json!({ "status": "unavailable", "storage": "unavailable" })),
        mode => HttpResponse::Ok().json(json!({ "status": "ready", "storage": mode.as_str() })),
    }
}

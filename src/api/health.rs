//! Probes for operators: `/health` (state and counts), `/livez`, `/readyz`, `/metrics`.

use actix_web::http::header::RETRY_AFTER;
use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::AppState;
use crate::error::RETRY_AFTER_UNAVAILABLE;
use crate::store::{StorageMode, TokenStore};
use crate::timefmt::{rfc3339, unix_rfc3339};

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, `degraded` (Redis enabled but unreachable; memory serves) or `unavailable`.
    pub status: &'static str,
    /// Where new tokens go now: `redis`, `memory` or `unavailable`.
    pub storage: &'static str,
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub redis: RedisHealth,
    pub memory: MemoryHealth,
    /// The onboarding mode: `open`, `key` or `derived`; `mixed` when enrollment groups
    /// onboard in different ways.
    pub onboarding: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisHealth {
    pub enabled: bool,
    pub connected: bool,
    /// `standalone`, `sentinel` or `cluster`; null when Redis is off.
    pub mode: Option<&'static str>,
    /// On a cluster, how many primaries passed the last health check.
    pub primaries: Option<usize>,
    /// Pending `token:` keys as of `countedAt`; null until counted.
    pub token_count: Option<u64>,
    /// Pending `device:` keys as of `countedAt`; null until counted.
    pub device_count: Option<u64>,
    pub counted_at: Option<String>,
    /// How long the last count took, in milliseconds.
    pub count_millis: Option<u64>,
    /// The store epoch: it moves each time Redis is found to have lost writes, and
    /// tokens from an earlier epoch are refused.
    pub epoch: u64,
    /// When Redis was last found to have lost writes (restart without
    /// `appendfsync always`, failover); null if never.
    pub lost_writes_at: Option<String>,
    /// Why Redis is not in use (or refused a request's command in the last minute):
    /// `configuration` (Redis refuses this server's user, password, permissions or TLS
    /// certificate; waiting will not help) or `unreachable`; null when all is well.
    pub problem: Option<&'static str>,
    /// What went wrong and what to change, in words; null when all is well.
    pub reason: Option<String>,
    /// With `redis.wait_replicas`, the primaries that had fewer online replicas than it
    /// asks for at the last check: writes to their keys are refused (503) meanwhile.
    pub replicas_missing: Vec<ReplicasMissing>,
    /// What Redis keeps across its own restart (the weakest primary on a cluster):
    /// `always` (appendfsync always: nothing acknowledged is lost), `everysec` (about
    /// a second), `aof` (an append-only file, sync policy not readable), `aof-no-fsync`,
    /// `snapshots` (what came after the last snapshot is lost), `none` (everything is
    /// lost), `unknown` (no append-only file, snapshots not readable); null until read.
    /// Anything below `everysec` is also warned about in the log.
    pub persistence: Option<&'static str>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicasMissing {
    /// `host:port` of the primary (standalone and Sentinel: where Redis is).
    pub primary: String,
    /// Replicas online at the last check.
    pub online: u32,
    /// What `redis.wait_replicas` asks for.
    pub wanted: u32,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryHealth {
    /// Live tokens held in this instance's memory.
    pub token_count: u64,
    /// Devices re-onboarded into memory during an outage whose older tokens still wait
    /// to be deleted from Redis (they are refused meanwhile).
    pub stale_in_redis: u64,
    /// Certificate records made during an outage, waiting to be written to Redis.
    pub records_awaiting_redis: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Probe {
    pub status: &'static str,
    /// Where new tokens go now (`/readyz` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<&'static str>,
}

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
            RedisHealth {
                enabled: true,
                connected: redis.connected,
                mode: Some(redis.topology.0),
                primaries: redis.topology.1,
                token_count: counts.map(|c| c.tokens),
                device_count: counts.map(|c| c.devices),
                counted_at: counts.map(|c| rfc3339(c.counted_at.into())),
                count_millis: counts.map(|c| c.took.as_millis() as u64),
                epoch: state.store.epoch(),
                lost_writes_at: state.store.redis_lost_writes_at().map(unix_rfc3339),
                problem: redis.problem.as_ref().map(|p| p.kind.as_str()),
                persistence: redis.persistence.map(|p| p.as_str()),
                reason: redis.problem.as_ref().map(|p| p.message.clone()),
                replicas_missing: redis
                    .shortfalls
                    .iter()
                    .map(|s| ReplicasMissing {
                        primary: s.primary.clone(),
                        online: s.online,
                        wanted: s.wanted,
                    })
                    .collect(),
            }
        }
        None => RedisHealth {
            enabled: false,
            connected: false,
            mode: None,
            primaries: None,
            token_count: None,
            device_count: None,
            counted_at: None,
            count_millis: None,
            epoch: 0,
            lost_writes_at: None,
            problem: None,
            reason: None,
            replicas_missing: Vec::new(),
            persistence: None,
        },
    };
    let body = Health {
        status,
        storage: stats.mode.as_str(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs(),
        redis,
        memory: MemoryHealth {
            token_count: stats.memory_tokens,
            stale_in_redis: state.store.stale_in_redis() as u64,
            records_awaiting_redis: state.store.records_awaiting_redis() as u64,
        },
        onboarding: onboarding_mode(&state.groups.current()),
    };
    if stats.mode == StorageMode::Unavailable {
        HttpResponse::ServiceUnavailable()
            .insert_header((RETRY_AFTER, RETRY_AFTER_UNAVAILABLE))
            .json(body)
    } else {
        HttpResponse::Ok().json(body)
    }
}

pub async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(Probe {
        status: "ok",
        storage: None,
    })
}

/// Ready when some store can take tokens under the configured policy.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.store.mode() {
        StorageMode::Unavailable => HttpResponse::ServiceUnavailable()
            .insert_header((RETRY_AFTER, RETRY_AFTER_UNAVAILABLE))
            .json(Probe {
                status: "unavailable",
                storage: Some("unavailable"),
            }),
        mode => HttpResponse::Ok().json(Probe {
            status: "ready",
            storage: Some(mode.as_str()),
        }),
    }
}

/// Prometheus metrics, OpenMetrics text.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mode = state.store.mode();
    state.metrics.set_storage_mode(mode.as_str());
    let connected = state.store.redis_connected().unwrap_or(false);
    state.metrics.redis_connected.set(i64::from(connected));
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.encode())
}

/// The mode every group onboards in, or `mixed`.
fn onboarding_mode(groups: &crate::groups::Groups) -> &'static str {
    let mut modes = groups.iter().map(|g| g.onboarding.mode());
    let first = modes.next().unwrap_or("key");
    if modes.all(|m| m == first) {
        first
    } else {
        "mixed"
    }
}

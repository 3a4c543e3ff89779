//! Prometheus metrics, all named `provisiond_*`, served at `GET /metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyTypeLabel {
    pub key_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreOpLabels {
    pub store: &'static str,
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabel {
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabel {
    pub scope: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub tokens_issued: Counter,
    pub tokens_consumed: Counter,
    /// sign-csr refusals, by error code.
    pub tokens_rejected: Family<ReasonLabel, Counter>,
    pub tokens_revoked: Counter,
    pub certificates_issued: Family<KeyTypeLabel, Counter>,
    pub http_request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub store_operation_duration: Family<StoreOpLabels, Histogram, fn() -> Histogram>,
    pub storage_mode: Family<ModeLabel, Gauge>,
    pub redis_connected: Gauge,
    /// Redis lost or regained: each is a switch between Redis and the fallback.
    pub storage_fallback_switches: Counter,
    pub memory_sweeps: Counter,
    pub memory_swept_entries: Counter,
    pub rate_limited: Family<ScopeLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("provisiond");
        let metrics = Self {
            tokens_issued: Counter::default(),
            tokens_consumed: Counter::default(),
            tokens_rejected: Family::default(),
            tokens_revoked: Counter::default(),
            certificates_issued: Family::default(),
            http_request_duration: Family::new_with_constructor(latency_histogram),
            store_operation_duration: Family::new_with_constructor(latency_histogram),
            storage_mode: Family::default(),
            redis_connected: Gauge::default(),
            storage_fallback_switches: Counter::default(),
            memory_sweeps: Counter::default(),
            memory_swept_entries: Counter::default(),
            rate_limited: Family::default(),
            registry: Registry::default(),
        };
        let m = &metrics;
        registry.register(
            "tokens_issued",
            "Provisioning tokens issued",
            m.tokens_issued.clone(),
        );
        registry.register(
            "tokens_consumed",
            "Provisioning tokens consumed by sign-csr",
            m.tokens_consumed.clone(),
        );
        registry.register(
            "tokens_rejected",
            "sign-csr requests refused, by error code",
            m.tokens_rejected.clone(),
        );
        registry.register(
            "tokens_revoked",
            "Pending tokens revoked by an admin",
            m.tokens_revoked.clone(),
        );
        registry.register(
            "certificates_issued",
            "Device certificates issued, by key type",
            m.certificates_issued.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency, by route, method and status",
            m.http_request_duration.clone(),
        );
        registry.register(
            "store_operation_duration_seconds",
            "Token store operation latency, by store and operation",
            m.store_operation_duration.clone(),
        );
        registry.register(
            "storage_mode",
            "Where new tokens go now (1 for the current mode)",
            m.storage_mode.clone(),
        );
        registry.register(
            "redis_connected",
            "1 while Redis answers",
            m.redis_connected.clone(),
        );
        registry.register(
            "storage_fallback_switches",
            "Times Redis was lost or came back",
            m.storage_fallback_switches.clone(),
        );
        registry.register(
            "memory_sweeps",
            "Sweeps of the memory store",
            m.memory_sweeps.clone(),
        );
        registry.register(
            "memory_swept_entries",
            "Expired entries freed by memory store sweeps",
            m.memory_swept_entries.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit, by scope (ip or device)",
            m.rate_limited.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    pub fn observe_store(&self, store: &'static str, operation: &'static str, took: Duration) {
        self.store_operation_duration
            .get_or_create(&StoreOpLabels { store, operation })
            .observe(took.as_secs_f64());
    }

    pub fn set_storage_mode(&self, current: &'static str) {
        for mode in ["redis", "memory", "unavailable"] {
            self.storage_mode
                .get_or_create(&ModeLabel { mode })
                .set(i64::from(mode == current));
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

//! Prometheus metrics, named `provisiond_*` but for the standard `process_*` ones,
//! served at `GET /metrics`.

mod process;

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
pub struct HookLabel {
    /// `allow`, `deny` or `error`.
    pub decision: &'static str,
    /// The enrollment group (a configured name, never a client's).
    pub group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabel {
    /// The enrollment group (a configured name, never a client's).
    pub group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyTypeLabel {
    pub key_type: &'static str,
}

/// Every label value here comes from a fixed set, never from what a client sent: a
/// made-up method or path would otherwise add a series per request. `route` is the
/// matched route pattern or `unmatched`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

/// The methods the API serves; anything else is `OTHER`.
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "DELETE" => "DELETE",
        _ => "OTHER",
    }
}

/// Key types as counted: RSA by the sizes fleets use, so that a device choosing an odd
/// modulus length cannot add series.
pub fn key_type_label(key_type: crate::ca::KeyType) -> &'static str {
    use crate::ca::KeyType;
    match key_type {
        KeyType::EcdsaP256 => "ecdsa-p256",
        KeyType::EcdsaP384 => "ecdsa-p384",
        KeyType::Ed25519 => "ed25519",
        KeyType::Rsa(2048) => "rsa-2048",
        KeyType::Rsa(3072) => "rsa-3072",
        KeyType::Rsa(4096) => "rsa-4096",
        KeyType::Rsa(_) => "rsa-other",
    }
}

use crate::registry::KEY_TYPES as KEY_TYPE_LABELS;

/// The codes sign-csr refuses with, so that each series exists from the start.
const REJECTION_REASONS: &[&str] = &[
    "token_invalid",
    "token_expired",
    "token_used",
    "device_mismatch",
    "invalid_json",
    "invalid_device_id",
    "invalid_csr",
    "csr_signature_invalid",
    "csr_policy_violation",
    "rate_limited",
    "payload_too_large",
    "request_timeout",
    "unsupported_media_type",
];

/// Scopes of [`Metrics::rate_limited`].
pub const RATE_LIMIT_SCOPES: &[&str] = &["ip", "device", "admin", "claim"];

/// Why the MQTT listener refused a connection or a packet ([`Metrics::mqtt_refused`]).
pub const MQTT_REFUSALS: &[&str] = &[
    "handshake",
    "claim_revoked",
    "claim_expired",
    "claim_group_unknown",
    "topic",
    "protocol",
    "connections",
    "storage",
];

/// One provisioning request by front door: `protocol` (`mqtt`), `request` (AWS's name:
/// `CreateCertificateFromCsr`, `CreateKeysAndCertificate`, `RegisterThing`) and
/// `outcome` (`accepted`, or the code it was rejected with).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProvisioningLabels {
    pub protocol: &'static str,
    pub request: &'static str,
    pub outcome: &'static str,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `ok` or `refused`.
    pub outcome: &'static str,
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
    /// Certificates issued by renewal (counted in `certificates_issued` too).
    pub certificates_renewed: Counter,
    /// Renewal proofs accepted without naming the CSR's key (`renewal.require_bound_proof`
    /// off): when this stays at 0, turn it on.
    pub renewal_unbound_proofs: Counter,
    pub http_request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub store_operation_duration: Family<StoreOpLabels, Histogram, fn() -> Histogram>,
    pub storage_mode: Family<ModeLabel, Gauge>,
    pub redis_connected: Gauge,
    /// 1 when Redis is enabled (`redis.enabled`): alerts about a lost Redis need it.
    pub redis_enabled: Gauge,
    /// Redis lost or regained: each is a switch between Redis and the fallback.
    pub storage_fallback_switches: Counter,
    /// Times Redis was found to have lost writes (restart without `appendfsync always`,
    /// failover, data gone back).
    pub redis_lost_writes: Counter,
    pub memory_sweeps: Counter,
    pub memory_swept_entries: Counter,
    pub rate_limited: Family<ScopeLabel, Counter>,
    /// MQTT connections and packets refused, by [`MQTT_REFUSALS`].
    pub mqtt_refused: Family<ReasonLabel, Counter>,
    pub provisioning_requests: Family<ProvisioningLabels, Counter>,
    /// Certificates revoked, by RFC 5280 reason.
    pub certificates_revoked: Family<ReasonLabel, Counter>,
    /// Certificates the current CRL lists.
    pub crl_entries: Gauge,
    /// When the current CRL's nextUpdate passes (unix seconds): brokers refuse every
    /// client after it, so alert well before.
    pub crl_next_update: Gauge,
    /// The CA certificate's notAfter (unix seconds): no certificate can outlive it.
    pub ca_not_after: Gauge,
    /// The pre-issuance hook's answers, and how long it took to give them.
    pub hook_decisions: Family<HookLabel, Counter>,
    /// SIGHUP reloads of the enrollment groups, taken or refused.
    pub groups_reloads: Family<OutcomeLabel, Counter>,
    /// Tokens issued per enrollment group.
    pub group_tokens_issued: Family<GroupLabel, Counter>,
    /// Certificates issued (enrolled or renewed) per enrollment group.
    pub group_certificates_issued: Family<GroupLabel, Counter>,
    pub hook_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Makes each series of a group exist from the start (at 0), as every other
    /// family's do: at start and on reload. A group removed keeps its series.
    pub fn know_group(&self, group: &str, hook: bool) {
        let label = GroupLabel {
            group: group.to_owned(),
        };
        self.group_tokens_issued.get_or_create(&label).inc_by(0);
        self.group_certificates_issued
            .get_or_create(&label)
            .inc_by(0);
        if hook {
            for decision in ["allow", "deny", "error"] {
                self.hook_decisions
                    .get_or_create(&HookLabel {
                        decision,
                        group: group.to_owned(),
                    })
                    .inc_by(0);
            }
        }
    }

    pub fn new() -> Self {
        let metrics = Self {
            tokens_issued: Counter::default(),
            tokens_consumed: Counter::default(),
            tokens_rejected: Family::default(),
            tokens_revoked: Counter::default(),
            certificates_issued: Family::default(),
            certificates_renewed: Counter::default(),
            renewal_unbound_proofs: Counter::default(),
            http_request_duration: Family::new_with_constructor(latency_histogram),
            store_operation_duration: Family::new_with_constructor(latency_histogram),
            storage_mode: Family::default(),
            redis_connected: Gauge::default(),
            redis_enabled: Gauge::default(),
            storage_fallback_switches: Counter::default(),
            redis_lost_writes: Counter::default(),
            memory_sweeps: Counter::default(),
            memory_swept_entries: Counter::default(),
            rate_limited: Family::default(),
            mqtt_refused: Family::default(),
            provisioning_requests: Family::default(),
            certificates_revoked: Family::default(),
            crl_entries: Gauge::default(),
            crl_next_update: Gauge::default(),
            ca_not_after: Gauge::default(),
            hook_decisions: Family::default(),
            groups_reloads: Family::default(),
            group_tokens_issued: Family::default(),
            group_certificates_issued: Family::default(),
            hook_duration: latency_histogram(),
            registry: Registry::default(),
        };
        let m = &metrics;
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("provisiond");
        let build: Family<VersionLabel, Gauge> = Family::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The running version, as a label", build);
        registry.register(
            "hook_decisions",
            "Answers of the pre-issuance hook, by decision (allow, deny, or error: none could be had) and group",
            m.hook_decisions.clone(),
        );
        registry.register(
            "groups_reloads",
            "SIGHUP reloads of the enrollment groups: ok, or refused (the groups in force stay)",
            m.groups_reloads.clone(),
        );
        for outcome in ["ok", "refused"] {
            m.groups_reloads
                .get_or_create(&OutcomeLabel { outcome })
                .inc_by(0);
        }
        registry.register(
            "group_tokens_issued",
            "Provisioning tokens issued, by enrollment group",
            m.group_tokens_issued.clone(),
        );
        registry.register(
            "group_certificates_issued",
            "Device certificates issued (enrolled or renewed), by enrollment group",
            m.group_certificates_issued.clone(),
        );
        registry.register(
            "hook_duration_seconds",
            "How long the pre-issuance hook took to answer",
            m.hook_duration.clone(),
        );
        registry.register(
            "ca_not_after_timestamp_seconds",
            "notAfter of the CA certificate, unix seconds",
            m.ca_not_after.clone(),
        );
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
            "certificates_renewed",
            "Device certificates issued by renewal",
            m.certificates_renewed.clone(),
        );
        registry.register(
            "renewal_unbound_proofs",
            "Renewal proofs accepted that do not name the CSR's key",
            m.renewal_unbound_proofs.clone(),
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
            "redis_enabled",
            "1 when Redis is enabled (redis.enabled); 0 when memory is the store by design",
            m.redis_enabled.clone(),
        );
        registry.register(
            "storage_fallback_switches",
            "Times Redis was lost or came back",
            m.storage_fallback_switches.clone(),
        );
        registry.register(
            "redis_lost_writes",
            "Times Redis was found to have lost writes; tokens from before were refused",
            m.redis_lost_writes.clone(),
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
            "Requests refused by a rate limit, by scope (ip, device, or admin for failed \
             admin authentication)",
            m.rate_limited.clone(),
        );
        registry.register(
            "mqtt_refused",
            "MQTT connections and packets refused, by reason (handshake: not a valid claim \
             certificate; topic: outside the provisioning topics)",
            m.mqtt_refused.clone(),
        );
        registry.register(
            "provisioning_requests",
            "Provisioning requests by protocol, request and outcome (accepted, or the code \
             rejected with)",
            m.provisioning_requests.clone(),
        );
        registry.register(
            "certificates_revoked",
            "Certificates revoked, by reason",
            m.certificates_revoked.clone(),
        );
        registry.register(
            "crl_entries",
            "Certificates listed in the current CRL",
            m.crl_entries.clone(),
        );
        registry.register(
            "crl_next_update_timestamp_seconds",
            "nextUpdate of the current CRL, unix seconds",
            m.crl_next_update.clone(),
        );
        // Every documented series exists from the start, at zero, so that rates and
        // alerts work before the first event.
        for &scope in RATE_LIMIT_SCOPES {
            m.rate_limited
                .get_or_create(&ScopeLabel { scope })
                .inc_by(0);
        }
        for &reason in MQTT_REFUSALS {
            m.mqtt_refused
                .get_or_create(&ReasonLabel { reason })
                .inc_by(0);
        }
        for &reason in REJECTION_REASONS {
            m.tokens_rejected
                .get_or_create(&ReasonLabel { reason })
                .inc_by(0);
        }
        for reason in crate::registry::Reason::names() {
            m.certificates_revoked
                .get_or_create(&ReasonLabel { reason })
                .inc_by(0);
        }
        for &key_type in KEY_TYPE_LABELS {
            m.certificates_issued
                .get_or_create(&KeyTypeLabel { key_type })
                .inc_by(0);
        }
        m.set_storage_mode("unavailable");
        Self {
            registry: root,
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

//! Where the environment comes in: the original service's flat variable names, the keys
//! they set, and the figment provider that reads them.

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

/// Environment variables and the configuration keys they set.
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("HOST", "server.host"),
    ("PORT", "server.port"),
    ("WORKERS", "server.workers"),
    ("BODY_LIMIT_BYTES", "server.body_limit_bytes"),
    ("REDIS_ENABLED", "redis.enabled"),
    ("REDIS_URL", "redis.url"),
    ("REDIS_HOST", "redis.host"),
    ("REDIS_PORT", "redis.port"),
    ("REDIS_USERNAME", "redis.username"),
    ("REDIS_PASSWORD", "redis.password"),
    ("REDIS_PASSWORD_FILE", "redis.password_file"),
    ("REDIS_DB", "redis.db"),
    ("REDIS_TLS", "redis.tls"),
    ("REDIS_TLS_CA_FILE", "redis.tls_ca_file"),
    ("REDIS_TLS_CERT_FILE", "redis.tls_cert_file"),
    ("REDIS_TLS_KEY_FILE", "redis.tls_key_file"),
    ("REDIS_KEY_PREFIX", "redis.key_prefix"),
    ("REDIS_FALLBACK", "redis.fallback"),
    ("REDIS_WAIT_REPLICAS", "redis.wait_replicas"),
    ("REDIS_CLUSTER_NODES", "redis.cluster_nodes"),
    ("REDIS_SENTINELS", "redis.sentinels"),
    ("REDIS_SENTINEL_MASTER", "redis.sentinel_master"),
    ("REDIS_SENTINEL_PASSWORD", "redis.sentinel_password"),
    ("PROVISIONING_TOKEN_TTL", "tokens.ttl_seconds"),
    ("JWT_SECRET", "tokens.jwt_secret"),
    ("JWT_SECRET_FILE", "tokens.jwt_secret_file"),
    ("JWT_ISSUER", "tokens.issuer"),
    ("JWT_AUDIENCE", "tokens.audience"),
    ("ONBOARDING_MODE", "onboarding.mode"),
    ("ENROLLMENT_KEYS", "onboarding.enrollment_keys"),
    ("ENROLLMENT_KEYS_FILE", "onboarding.enrollment_keys_file"),
    ("CERTS_DIR", "ca.dir"),
    ("CERT_VALIDITY_DAYS", "ca.validity_days"),
    ("CRL_URL", "ca.crl_url"),
    ("CA_OCSP_URL", "ca.ocsp_url"),
    ("CRL_VALIDITY_HOURS", "ca.crl_validity_hours"),
    ("CA_KEY", "ca.key"),
    ("CA_PKCS11_MODULE", "ca.pkcs11_module"),
    ("CA_PKCS11_PIN", "ca.pkcs11_pin"),
    ("CA_PKCS11_PIN_FILE", "ca.pkcs11_pin_file"),
    ("RENEWAL_AFTER_EXPIRY_DAYS", "renewal.after_expiry_days"),
    ("RENEWAL_REVOKE_PREVIOUS", "renewal.revoke_previous"),
    ("RENEWAL_REQUIRE_BOUND_PROOF", "renewal.require_bound_proof"),
    ("MEMORY_SWEEP_INTERVAL", "memory.sweep_interval_seconds"),
    ("TRUSTED_PROXIES", "server.trusted_proxies"),
    ("TLS_CERT_FILE", "server.tls.cert"),
    ("TLS_KEY_FILE", "server.tls.key"),
    ("MQTT_LISTEN", "mqtt.listen"),
    ("ONBOARDING_GROUP_SECRET", "onboarding.group_secret"),
    (
        "ONBOARDING_GROUP_SECRET_FILE",
        "onboarding.group_secret_file",
    ),
    ("DEVICE_ID_PATTERN", "onboarding.device_id_pattern"),
    ("HOOK_URL", "hook.url"),
    ("HOOK_SECRET", "hook.secret"),
    ("HOOK_SECRET_FILE", "hook.secret_file"),
    ("HOOK_TIMEOUT_MS", "hook.timeout_ms"),
    ("HOOK_CA_FILE", "hook.ca_file"),
    ("HOOK_ON_ERROR", "hook.on_error"),
    ("DEVICE_ALLOWLIST_FILE", "onboarding.device_allowlist_file"),
    (
        "RATE_LIMIT_PER_IP_PER_MINUTE",
        "rate_limit.per_ip_per_minute",
    ),
    (
        "RATE_LIMIT_PER_DEVICE_PER_MINUTE",
        "rate_limit.per_device_per_minute",
    ),
    ("RATE_LIMIT_SHARED", "rate_limit.shared"),
    (
        "ADMIN_AUTH_FAILURES_PER_MINUTE",
        "rate_limit.admin_failures_per_minute",
    ),
    ("ADMIN_KEYS", "admin.keys"),
    ("ADMIN_KEYS_FILE", "admin.keys_file"),
    ("LOG_FORMAT", "log.format"),
    ("GROUPS_FILE", "groups_file"),
];

/// The variable that sets `key`, so that an error can name what the operator actually set.
pub(super) fn env_name_for(key: &str) -> Option<&'static str> {
    ENV_KEYS
        .iter()
        .find(|(_, k)| *k == key)
        .map(|(var, _)| *var)
}

/// The original service's flat environment names, read as strings: figment's own `Env`
/// provider would turn `REDIS_PASSWORD=12345` into a number and then refuse it as a string.
/// Numbers and booleans are read from these strings by `extract_lossy`.
pub(super) struct LegacyEnv;

impl Provider for LegacyEnv {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment").interpolater(|_, path| {
            let key = path.join(".");
            env_name_for(&key).map(str::to_owned).unwrap_or(key)
        })
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        let mut root = Dict::new();
        for (var, key) in ENV_KEYS {
            let Ok(value) = std::env::var(var) else {
                continue;
            };
            let mut path: Vec<&str> = key.split('.').collect();
            let field = path.pop().expect("keys are section.field");
            let mut dict = &mut root;
            for section in path {
                let entry = dict
                    .entry(section.to_owned())
                    .or_insert_with(|| Value::from(Dict::new()));
                let Value::Dict(_, inner) = entry else {
                    unreachable!("sections are dictionaries")
                };
                dict = inner;
            }
            dict.insert(field.to_owned(), Value::from(value));
        }
        Ok(Profile::Default.collect(root))
    }
}

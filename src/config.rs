//! Settings: defaults < `config.toml` < environment < command-line flags.
//!
//! The environment names are the original service's flat names (`PORT`, `REDIS_URL`, ...),
//! mapped onto the nested keys of `config.toml` by [`ENV_KEYS`]. Every error names the key
//! it is about, and the environment variable when that is where the value came from.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Deserializer, Serialize};

use crate::secret::{MIN_SECRET_LEN, Secret};

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
    ("CRL_VALIDITY_HOURS", "ca.crl_validity_hours"),
    ("RENEWAL_AFTER_EXPIRY_DAYS", "renewal.after_expiry_days"),
    ("RENEWAL_REVOKE_PREVIOUS", "renewal.revoke_previous"),
    ("MEMORY_SWEEP_INTERVAL", "memory.sweep_interval_seconds"),
    ("TRUSTED_PROXIES", "server.trusted_proxies"),
    ("TLS_CERT_FILE", "server.tls.cert"),
    ("TLS_KEY_FILE", "server.tls.key"),
    ("ONBOARDING_GROUP_SECRET", "onboarding.group_secret"),
    (
        "ONBOARDING_GROUP_SECRET_FILE",
        "onboarding.group_secret_file",
    ),
    ("DEVICE_ID_PATTERN", "onboarding.device_id_pattern"),
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
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub redis: RedisSettings,
    pub tokens: TokenSettings,
    pub onboarding: OnboardingSettings,
    pub ca: CaSettings,
    pub renewal: RenewalSettings,
    pub memory: MemorySettings,
    pub rate_limit: RateLimitSettings,
    pub admin: AdminSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// Actix workers; 0 means one per available core.
    pub workers: usize,
    pub body_limit_bytes: usize,
    pub shutdown_timeout_seconds: u64,
    /// How long a client may take to send a request's head.
    pub request_head_timeout_ms: u64,
    /// How long a client may take to send a request's body.
    pub body_timeout_ms: u64,
    pub keep_alive_seconds: u64,
    /// Proxies (addresses or CIDR blocks) whose X-Forwarded-For is believed.
    pub trusted_proxies: List,
    pub tls: TlsSettings,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 3002,
            workers: 0,
            body_limit_bytes: 64 * 1024,
            shutdown_timeout_seconds: 10,
            request_head_timeout_ms: 5000,
            body_timeout_ms: 10_000,
            keep_alive_seconds: 75,
            trusted_proxies: List::default(),
            tls: TlsSettings::default(),
        }
    }
}

/// HTTPS on the API port: both files, or neither.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Requests to onboarding and sign-csr per client address per minute; 0 turns it off.
    pub per_ip_per_minute: u32,
    /// Requests to onboarding and sign-csr per device id per minute; 0 turns it off.
    pub per_device_per_minute: u32,
    /// Failed admin authentications per client address per minute; past it the address
    /// is refused for a while. 0 turns it off.
    pub admin_failures_per_minute: u32,
    /// Count the per-address and per-device limits in Redis, shared by every instance
    /// (one script per check), instead of in each instance.
    pub shared: bool,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            per_ip_per_minute: 120_000,
            per_device_per_minute: 60,
            admin_failures_per_minute: 10,
            shared: false,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Keys for the admin endpoints (plain, or `sha256:<hex>`); none disables them.
    pub keys: KeyList,
    pub keys_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FallbackPolicy {
    /// Issue into memory while Redis is away; keep reconnecting.
    Memory,
    /// No Redis, no service: 503 until it is back.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    pub enabled: bool,
    /// `redis://` or `rediss://`; when set, host, port and tls come from it.
    pub url: Option<String>,
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    pub db: Option<i64>,
    pub tls: bool,
    pub key_prefix: String,
    pub fallback: FallbackPolicy,
    pub connect_timeout_ms: u64,
    pub response_timeout_ms: u64,
    /// How often the server pings Redis to notice loss and return.
    pub health_check_interval_ms: u64,
    /// Replicas that must acknowledge a consume (`WAIT`) before the certificate is
    /// signed; 0 = off. With fewer, sign-csr answers 503 (the token stays used).
    pub wait_replicas: u32,
    /// How long to wait for them.
    pub wait_timeout_ms: u64,
    /// How often pending tokens are counted for /health at most (SCAN, never KEYS);
    /// counting backs off on a large fleet so that it takes at most 5 % of the time.
    pub count_interval_seconds: f64,
    /// Redis Cluster: `redis://` or `rediss://` URLs of some of its nodes (instead of
    /// url/host).
    pub cluster_nodes: List,
    /// Redis Sentinel: `host:port` of the sentinels (instead of url/host); with
    /// `sentinel_master`, the name of the monitored primary.
    pub sentinels: List,
    pub sentinel_master: Option<String>,
    /// For sentinels that require a password (the primary's is `password`).
    pub sentinel_password: Option<Secret>,
}

/// How the server reaches Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology {
    Standalone,
    Cluster {
        nodes: Vec<String>,
    },
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
}

impl RedisTopology {
    pub fn as_str(&self) -> &'static str {
        match self {
            RedisTopology::Standalone => "standalone",
            RedisTopology::Cluster { .. } => "cluster",
            RedisTopology::Sentinel { .. } => "sentinel",
        }
    }
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            url: None,
            host: "127.0.0.1".into(),
            port: 6379,
            username: None,
            password: None,
            password_file: None,
            db: None,
            tls: false,
            key_prefix: "mqtt-lite:".into(),
            fallback: FallbackPolicy::Memory,
            connect_timeout_ms: 1000,
            response_timeout_ms: 2000,
            health_check_interval_ms: 1000,
            count_interval_seconds: 1.0,
            wait_replicas: 0,
            wait_timeout_ms: 1000,
            cluster_nodes: List::default(),
            sentinels: List::default(),
            sentinel_master: None,
            sentinel_password: None,
        }
    }
}

impl RedisSettings {
    /// Which of the three ways to reach Redis is configured; exactly one may be.
    pub fn topology(&self) -> Result<RedisTopology, ConfigError> {
        let defaults = Self::default();
        let standalone_set =
            self.url.is_some() || self.host != defaults.host || self.port != defaults.port;
        let cluster = !self.cluster_nodes.0.is_empty();
        let sentinel = !self.sentinels.0.is_empty();
        if [standalone_set, cluster, sentinel]
            .iter()
            .filter(|m| **m)
            .count()
            > 1
        {
            return Err(ConfigError::key(
                "redis",
                "set exactly one of redis.url (or host/port), redis.cluster_nodes and \
                 redis.sentinels",
            ));
        }
        if cluster {
            if let Some(bad) = self
                .cluster_nodes
                .0
                .iter()
                .find(|n| !(n.starts_with("redis://") || n.starts_with("rediss://")))
            {
                return Err(ConfigError::key(
                    "redis.cluster_nodes",
                    format!("{:?} is not a redis:// or rediss:// URL", redact_url(bad)),
                ));
            }
            if self.db.is_some_and(|db| db != 0) {
                return Err(ConfigError::key(
                    "redis.db",
                    "Redis Cluster has only database 0",
                ));
            }
            return Ok(RedisTopology::Cluster {
                nodes: self.cluster_nodes.0.clone(),
            });
        }
        if sentinel {
            let Some(master) = self.sentinel_master.clone().filter(|m| !m.is_empty()) else {
                return Err(ConfigError::key(
                    "redis.sentinel_master",
                    "name the primary the sentinels monitor (REDIS_SENTINEL_MASTER)",
                ));
            };
            if let Some(bad) = self.sentinels.0.iter().find(|s| {
                s.rsplit_once(':')
                    .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            }) {
                return Err(ConfigError::key(
                    "redis.sentinels",
                    format!("{bad:?} is not host:port"),
                ));
            }
            return Ok(RedisTopology::Sentinel {
                sentinels: self.sentinels.0.clone(),
                master,
            });
        }
        if self.sentinel_master.is_some() {
            return Err(ConfigError::key(
                "redis.sentinel_master",
                "only with redis.sentinels",
            ));
        }
        Ok(RedisTopology::Standalone)
    }

    /// The URL to connect to, which may carry credentials: never log it.
    pub fn connection_url(&self) -> Secret {
        Secret::new(match &self.url {
            Some(url) => url.clone(),
            None => {
                let scheme = if self.tls { "rediss" } else { "redis" };
                format!("{scheme}://{}:{}", self.host, self.port)
            }
        })
    }

    /// Where Redis is, as logs may show it: no user name, no password.
    pub fn display_url(&self) -> String {
        match self.topology() {
            Ok(RedisTopology::Cluster { nodes }) => format!(
                "cluster {}",
                nodes
                    .iter()
                    .map(|n| redact_url(n))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Ok(RedisTopology::Sentinel { sentinels, master }) => {
                format!("sentinel {master} via {}", sentinels.join(","))
            }
            _ => redact_url(self.connection_url().expose()),
        }
    }
}

/// A URL without its userinfo (`redis://user:secret@host` becomes `redis://host`).
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            let _ = parsed.set_username("");
            parsed.to_string()
        }
        // Not a URL: show nothing of it that could be a secret.
        Err(_) => match url.split_once("://") {
            Some((scheme, rest)) => {
                let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                format!("{scheme}://{host}")
            }
            None => "(unparseable URL)".to_owned(),
        },
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenSettings {
    pub ttl_seconds: u64,
    pub jwt_secret: Option<Secret>,
    pub jwt_secret_file: Option<PathBuf>,
    pub issuer: String,
    pub audience: String,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            ttl_seconds: 300,
            jwt_secret: None,
            jwt_secret_file: None,
            issuer: "provisiond".into(),
            audience: "provisiond".into(),
        }
    }
}

impl TokenSettings {
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_seconds)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnboardingMode {
    Open,
    Key,
    /// Per-device keys derived from a group secret; devices sign each request.
    Derived,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OnboardingSettings {
    pub mode: OnboardingMode,
    /// Plain keys, or `sha256:<hex>` digests of keys.
    pub enrollment_keys: KeyList,
    pub enrollment_keys_file: Option<PathBuf>,
    /// The secret device keys are derived from (`derived` mode), at least 32 bytes.
    pub group_secret: Option<Secret>,
    pub group_secret_file: Option<PathBuf>,
    /// How far a device's clock may be from ours (`derived` mode).
    pub clock_skew_seconds: u64,
    /// Only device ids matching this regular expression (whole id) may onboard.
    pub device_id_pattern: Option<String>,
    /// Only device ids listed in this file (one per line) may onboard.
    pub device_allowlist_file: Option<PathBuf>,
}

impl Default for OnboardingSettings {
    fn default() -> Self {
        Self {
            mode: OnboardingMode::Key,
            enrollment_keys: KeyList::default(),
            enrollment_keys_file: None,
            group_secret: None,
            group_secret_file: None,
            clock_skew_seconds: 300,
            device_id_pattern: None,
            device_allowlist_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaSettings {
    pub dir: PathBuf,
    pub validity_days: u32,
    /// Common name of a CA generated on first start.
    pub common_name: String,
    pub allow_rsa: bool,
    pub allow_ecdsa: bool,
    pub allow_ed25519: bool,
    pub rsa_min_bits: usize,
    pub rsa_max_bits: usize,
    /// Where brokers fetch the CRL: written into issued certificates as their CRL
    /// distribution point when set.
    pub crl_url: Option<String>,
    /// How long a CRL is valid (nextUpdate − thisUpdate); it is re-signed at half its life.
    pub crl_validity_hours: u32,
}

impl Default for CaSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("certs"),
            validity_days: 365,
            common_name: "provisiond CA".into(),
            allow_rsa: true,
            allow_ecdsa: true,
            allow_ed25519: true,
            rsa_min_bits: 2048,
            rsa_max_bits: 4096,
            crl_url: None,
            crl_validity_hours: 24,
        }
    }
}

/// `POST /api/v1/renew`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RenewalSettings {
    /// How many days after its notAfter a certificate may still renew; 0: only before.
    pub after_expiry_days: u32,
    /// Revoke the certificate a renewal replaces (reason `superseded`).
    pub revoke_previous: bool,
}

impl RenewalSettings {
    pub fn grace(&self) -> Duration {
        Duration::from_secs(u64::from(self.after_expiry_days) * 86_400)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemorySettings {
    pub sweep_interval_seconds: f64,
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self {
            sweep_interval_seconds: 60.0,
        }
    }
}

/// A list of secrets given either as a TOML array or as one comma-separated string
/// (the form `ENROLLMENT_KEYS` takes).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeyList(pub Vec<Secret>);

impl fmt::Debug for KeyList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyList({} keys)", self.0.len())
    }
}

impl<'de> Deserialize<'de> for KeyList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        let keys = match Form::deserialize(deserializer)? {
            Form::One(joined) => joined.split(',').map(str::to_owned).collect(),
            Form::Many(keys) => keys,
        };
        Ok(KeyList(
            keys.into_iter()
                .map(|k| k.trim().to_owned())
                .filter(|k| !k.is_empty())
                .map(Secret::new)
                .collect(),
        ))
    }
}

/// Plain strings given either as a TOML array or as one comma-separated string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct List(pub Vec<String>);

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let keys = KeyList::deserialize(deserializer)?;
        Ok(List(keys.0.into_iter().map(Secret::into_exposed).collect()))
    }
}

/// A configuration error, naming the key (and variable) it is about.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub fn key(key: &str, message: impl fmt::Display) -> Self {
        match env_name_for(key) {
            Some(var) => Self(format!("`{key}` (env {var}): {message}")),
            None => Self(format!("`{key}`: {message}")),
        }
    }
}

fn env_name_for(key: &str) -> Option<&'static str> {
    ENV_KEYS
        .iter()
        .find(|(_, k)| *k == key)
        .map(|(var, _)| *var)
}

/// Overrides given on the command line; `None` leaves the lower layers alone.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl Settings {
    /// Loads the layers. `config` is an explicit file (which must then exist); without it,
    /// `config.toml` in the working directory is read when present.
    pub fn load(config: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let file = match config {
            Some(path) if !path.is_file() => {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            Some(path) => path.to_owned(),
            None => PathBuf::from("config.toml"),
        };
        let figment = Figment::new()
            .merge(Toml::file(&file))
            .merge(LegacyEnv)
            .merge(Serialized::default("server", overrides));
        let settings: Settings = figment.extract_lossy().map_err(|e| {
            let key = e.path.join(".");
            let message = describe(&e.kind);
            // The file as the operator named it (figment shows it relative to the
            // working directory).
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(figment::Source::File(_)) => format!("{} {}", m.name, file.display()),
                    Some(source) => format!("{} {source}", m.name),
                    None => m.name.to_string(),
                })
                .unwrap_or_default();
            if key.is_empty() {
                ConfigError(format!("{message} ({source})"))
            } else if source.contains("environment") {
                ConfigError::key(&key, message)
            } else {
                ConfigError(format!("`{key}`: {message} (in {source})"))
            }
        })?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let ttl = self.tokens.ttl_seconds;
        if !(1..=86_400).contains(&ttl) {
            return Err(ConfigError::key(
                "tokens.ttl_seconds",
                format!("{ttl} is out of range; use 1..=86400 seconds"),
            ));
        }
        if let Some(secret) = &self.tokens.jwt_secret
            && secret.expose().len() < MIN_SECRET_LEN
        {
            return Err(ConfigError::key(
                "tokens.jwt_secret",
                format!("must be at least {} bytes", MIN_SECRET_LEN),
            ));
        }
        if self.ca.validity_days == 0 || self.ca.validity_days > 3650 {
            return Err(ConfigError::key("ca.validity_days", "use 1..=3650 days"));
        }
        if self.server.body_limit_bytes < 20 * 1024 {
            return Err(ConfigError::key(
                "server.body_limit_bytes",
                "must be at least 20480 so that a 16 KiB CSR fits",
            ));
        }
        if !(1..=8760).contains(&self.ca.crl_validity_hours) {
            return Err(ConfigError::key(
                "ca.crl_validity_hours",
                "use 1..=8760 hours (brokers refuse every client once a CRL's nextUpdate passes)",
            ));
        }
        if let Some(url) = &self.ca.crl_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::key(
                "ca.crl_url",
                "must be an http:// (or https://) URL that brokers can fetch",
            ));
        }
        if self.ca.rsa_min_bits > self.ca.rsa_max_bits {
            return Err(ConfigError::key(
                "ca.rsa_min_bits",
                "must not be larger than ca.rsa_max_bits",
            ));
        }
        if self.redis.wait_replicas > 0
            && self.redis.wait_timeout_ms >= self.redis.response_timeout_ms
        {
            return Err(ConfigError::key(
                "redis.wait_timeout_ms",
                "must be shorter than redis.response_timeout_ms, or a slow replica would look \
                 like a lost Redis",
            ));
        }
        if self.redis.enabled {
            self.redis.topology()?;
        }
        if self.redis.count_interval_seconds <= 0.0 {
            return Err(ConfigError::key(
                "redis.count_interval_seconds",
                "must be positive",
            ));
        }
        if self.memory.sweep_interval_seconds <= 0.0 {
            return Err(ConfigError::key(
                "memory.sweep_interval_seconds",
                "must be positive",
            ));
        }
        if self.redis.key_prefix.contains(['{', '}']) {
            return Err(ConfigError::key(
                "redis.key_prefix",
                "must not contain braces: they are the hash tag around the device id",
            ));
        }
        if self.server.tls.cert.is_some() != self.server.tls.key.is_some() {
            return Err(ConfigError::key(
                "server.tls.cert",
                "set both server.tls.cert and server.tls.key, or neither",
            ));
        }
        if let Some(url) = &self.redis.url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(ConfigError::key(
                "redis.url",
                "must start with redis:// or rediss://",
            ));
        }
        Ok(())
    }

    /// Reads a secret given inline or as a file; the file wins when both are set.
    pub fn read_secret(
        inline: Option<&Secret>,
        file: Option<&Path>,
        key: &str,
    ) -> Result<Option<Secret>, ConfigError> {
        match file {
            Some(path) => crate::fsutil::check_private(path)
                .and_then(|()| std::fs::read_to_string(path))
                .map(|s| Some(Secret::new(s.trim())))
                .map_err(|e| ConfigError::key(key, format!("cannot use {}: {e}", path.display()))),
            None => Ok(inline.cloned()),
        }
    }
}

/// A configuration error in the operator's words: figment's own text quotes lists that
/// are already quoted (``memory` or `none``).
fn describe(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    let list = |items: &[&str]| {
        items
            .iter()
            .map(|i| format!("`{i}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match kind {
        Kind::UnknownVariant(found, expected) => {
            format!(
                "`{found}` is not a choice here; use one of {}",
                list(expected)
            )
        }
        Kind::UnknownField(found, expected) => {
            format!(
                "unknown key `{found}`; the keys here are {}",
                list(expected)
            )
        }
        other => other.to_string(),
    }
}

/// The original service's flat environment names, read as strings: figment's own `Env`
/// provider would turn `REDIS_PASSWORD=12345` into a number and then refuse it as a string.
/// Numbers and booleans are read from these strings by `extract_lossy`.
struct LegacyEnv;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<Settings, Box<figment::Error>> {
        Figment::new()
            .merge(Toml::string(toml))
            .extract_lossy::<Settings>()
            .map_err(Box::new)
    }

    #[test]
    fn defaults_match_the_design() {
        let s = parse("").unwrap();
        assert_eq!(s.server.port, 3002);
        assert_eq!(s.tokens.ttl_seconds, 300);
        assert_eq!(s.redis.key_prefix, "mqtt-lite:");
        assert_eq!(s.redis.fallback, FallbackPolicy::Memory);
        assert_eq!(s.ca.validity_days, 365);
    }

    #[test]
    fn enrollment_keys_accept_a_comma_separated_string_or_a_list() {
        let s = parse("[onboarding]\nenrollment_keys = \"a, b,,c\"").unwrap();
        assert_eq!(s.onboarding.enrollment_keys.0.len(), 3);
        let s = parse("[onboarding]\nenrollment_keys = [\"a\", \"b\"]").unwrap();
        assert_eq!(s.onboarding.enrollment_keys.0[1].expose(), "b");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = parse("[server]\nprot = 1").unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
    }

    #[test]
    fn errors_list_the_choices_quoted_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("odd.toml");
        std::fs::write(&file, "[redis]\nfallback = \"disk\"\n[server]\n").unwrap();
        let err = Settings::load(Some(&file), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`disk`") && err.contains("`memory`, `none`"),
            "{err}"
        );
        assert!(!err.contains("``"), "{err}");
        assert!(err.contains(&file.display().to_string()), "{err}");
        std::fs::write(&file, "[server]\nprot = 1\n").unwrap();
        let err = Settings::load(Some(&file), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key `prot`"), "{err}");
        assert!(err.contains(&file.display().to_string()), "{err}");
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let s = parse("[tokens]\njwt_secret = \"hunter2hunter2\"").unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn logged_urls_carry_no_credentials() {
        for (url, shown) in [
            (
                "redis://default:secret@127.0.0.1:6379/0",
                "redis://127.0.0.1:6379/0",
            ),
            (
                "rediss://:secret@redis.example:6380",
                "rediss://redis.example:6380",
            ),
            ("redis://user@host", "redis://host"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://us:er:p@ss@wo@rd@[::1]:1", "redis://[::1]:1"),
        ] {
            let redacted = redact_url(url);
            assert!(
                !redacted.contains("secret") && !redacted.contains("ss@"),
                "{redacted}"
            );
            assert_eq!(redacted, shown);
        }
    }

    #[test]
    fn config_errors_name_the_environment_variable() {
        let e = ConfigError::key("server.port", "bad");
        assert!(e.to_string().contains("PORT"));
    }

    #[test]
    fn exactly_one_way_to_reach_redis() {
        let mut redis = RedisSettings::default();
        assert_eq!(redis.topology().unwrap(), RedisTopology::Standalone);
        redis.cluster_nodes = List(vec!["redis://10.0.0.1:7000".into()]);
        assert_eq!(redis.topology().unwrap().as_str(), "cluster");
        redis.url = Some("redis://10.0.0.9:6379".into());
        let both = redis.topology().unwrap_err().to_string();
        assert!(both.contains("exactly one"), "{both}");
        redis.url = None;
        redis.sentinels = List(vec!["10.0.0.2:26379".into()]);
        assert!(redis.topology().is_err());
        redis.cluster_nodes = List::default();
        let unnamed = redis.topology().unwrap_err().to_string();
        assert!(unnamed.contains("REDIS_SENTINEL_MASTER"), "{unnamed}");
        redis.sentinel_master = Some("mymaster".into());
        assert_eq!(redis.topology().unwrap().as_str(), "sentinel");
        redis.sentinels = List(vec!["no-port".into()]);
        assert!(redis.topology().is_err());
        let mut cluster = RedisSettings {
            cluster_nodes: List(vec!["10.0.0.1:7000".into()]),
            ..RedisSettings::default()
        };
        assert!(cluster.topology().is_err(), "a node must be a URL");
        cluster.cluster_nodes = List(vec!["redis://:secret@10.0.0.1:7000".into()]);
        assert!(!cluster.display_url().contains("secret"));
    }
}

//! `[redis]`: how to reach Redis (standalone, cluster or sentinel), what to do while it is
//! away, and how to show where it is without its credentials.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::values::List;
use crate::secret::Secret;

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
    /// PEM CA certificates to verify Redis's TLS certificate with, instead of the system
    /// trust store (a private CA). For every node: standalone, Sentinel's sentinels and
    /// primary, a cluster's nodes.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate (and chain) for Redis's `tls-auth-clients`, with
    /// `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
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
    /// Redis Sentinel: the sentinels (instead of url/host), each `host:port` or a
    /// `redis://` / `rediss://` URL that may carry its password; with `sentinel_master`,
    /// the name of the monitored primary.
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
        sentinels: Vec<SentinelAddress>,
        master: String,
    },
}

/// One sentinel: where it is, whether it speaks TLS, and its own credentials if its
/// entry named them (an ACL user, a password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelAddress {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

impl SentinelAddress {
    /// `host:port`, or a `redis://` / `rediss://` URL (`redis://:password@host:port`);
    /// `None` for anything else.
    pub fn parse(entry: &str) -> Option<Self> {
        if entry.starts_with("redis://") || entry.starts_with("rediss://") {
            let url = url::Url::parse(entry).ok()?;
            let info = redis::IntoConnectionInfo::into_connection_info(entry).ok();
            let settings = info.as_ref().map(|info| info.redis_settings());
            return Some(Self {
                host: url.host_str().filter(|h| !h.is_empty())?.to_owned(),
                port: url.port().unwrap_or(26379),
                tls: url.scheme() == "rediss",
                username: settings.and_then(|s| s.username()).map(str::to_owned),
                password: settings.and_then(|s| s.password()).map(Secret::new),
            });
        }
        let (host, port) = entry.rsplit_once(':')?;
        if host.is_empty() || host.contains('/') {
            return None;
        }
        Some(Self {
            host: host.to_owned(),
            port: port.parse().ok()?,
            tls: false,
            username: None,
            password: None,
        })
    }
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
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
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
            let mut sentinels = Vec::with_capacity(self.sentinels.0.len());
            for entry in &self.sentinels.0 {
                let Some(address) = SentinelAddress::parse(entry) else {
                    return Err(ConfigError::key(
                        "redis.sentinels",
                        format!("{:?} is not host:port or a redis:// URL", redact_url(entry)),
                    ));
                };
                sentinels.push(address);
            }
            return Ok(RedisTopology::Sentinel { sentinels, master });
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
            Ok(RedisTopology::Sentinel { sentinels, master }) => format!(
                "sentinel {master} via {}",
                sentinels
                    .iter()
                    .map(|s| format!("{}:{}", s.host, s.port))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            _ => redact_url(self.connection_url().expose()),
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.wait_replicas > 0 && self.wait_timeout_ms >= self.response_timeout_ms {
            return Err(ConfigError::key(
                "redis.wait_timeout_ms",
                "must be shorter than redis.response_timeout_ms, or a slow replica would look \
                 like a lost Redis",
            ));
        }
        if self.enabled {
            self.topology()?;
        }
        if self.count_interval_seconds <= 0.0 {
            return Err(ConfigError::key(
                "redis.count_interval_seconds",
                "must be positive",
            ));
        }
        if self.key_prefix.contains(['{', '}']) {
            return Err(ConfigError::key(
                "redis.key_prefix",
                "must not contain braces: they are the hash tag around the device id",
            ));
        }
        if let Some(url) = &self.url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(ConfigError::key(
                "redis.url",
                "must start with redis:// or rediss://",
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(ConfigError::key(
                "redis.tls_cert_file",
                "give redis.tls_cert_file and redis.tls_key_file together \
                 (REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE)",
            ));
        }
        let tls_files = self.tls_ca_file.is_some() || self.tls_cert_file.is_some();
        if self.enabled && tls_files && !self.uses_tls() {
            return Err(ConfigError::key(
                "redis.tls_ca_file",
                "TLS files are set but Redis is reached without TLS: use rediss:// URLs or \
                 redis.tls = true (REDIS_TLS)",
            ));
        }
        Ok(())
    }

    /// Whether some connection of the configured topology uses TLS.
    pub fn uses_tls(&self) -> bool {
        self.tls
            || self.connection_url().expose().starts_with("rediss://")
            || self
                .cluster_nodes
                .0
                .iter()
                .chain(&self.sentinels.0)
                .any(|n| n.starts_with("rediss://"))
    }

    /// The TLS files read: the CA to trust and the client identity, `None` when neither
    /// is set (the system trust store, no client certificate).
    pub fn tls_certificates(&self) -> Result<Option<redis::TlsCertificates>, ConfigError> {
        let read = |path: &PathBuf, key: &str| {
            std::fs::read(path)
                .map_err(|e| ConfigError::key(key, format!("cannot read {}: {e}", path.display())))
        };
        let root_cert = match &self.tls_ca_file {
            Some(path) => Some(read(path, "redis.tls_ca_file")?),
            None => None,
        };
        let client_tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read(cert, "redis.tls_cert_file")?,
                client_key: read(key, "redis.tls_key_file")?,
            }),
            _ => None,
        };
        if root_cert.is_none() && client_tls.is_none() {
            return Ok(None);
        }
        let certificates_in = |pem_text: &[u8], key: &str| {
            let blocks = pem::parse_many(pem_text).unwrap_or_default();
            if blocks.iter().any(|b| b.tag() == "CERTIFICATE") {
                Ok(())
            } else {
                Err(ConfigError::key(
                    key,
                    "the TLS files do not parse: no PEM CERTIFICATE in it",
                ))
            }
        };
        if let Some(root) = &root_cert {
            certificates_in(root, "redis.tls_ca_file")?;
        }
        if let Some(client) = &client_tls {
            certificates_in(&client.client_cert, "redis.tls_cert_file")?;
        }
        let certificates = redis::TlsCertificates {
            client_tls,
            root_cert,
        };
        // Parsed now, so that a wrong file stops the start with its name, not every
        // connection later with a TLS error.
        redis::Client::build_with_tls("rediss://127.0.0.1:6379", certificates.clone()).map_err(
            |e| {
                ConfigError::key(
                    "redis.tls_ca_file",
                    format!("the TLS files do not parse: {e}"),
                )
            },
        )?;
        Ok(Some(certificates))
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn tls_files_need_tls_and_come_in_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        let plain = RedisSettings {
            tls_ca_file: Some(ca.clone()),
            ..RedisSettings::default()
        };
        let refused = plain.validate().unwrap_err().to_string();
        assert!(refused.contains("without TLS"), "{refused}");
        let half = RedisSettings {
            tls: true,
            tls_cert_file: Some(ca.clone()),
            ..RedisSettings::default()
        };
        let refused = half.validate().unwrap_err().to_string();
        assert!(refused.contains("together"), "{refused}");
        let missing = RedisSettings {
            tls: true,
            tls_ca_file: Some(ca.clone()),
            ..RedisSettings::default()
        };
        assert!(missing.validate().is_ok());
        let refused = missing.tls_certificates().unwrap_err().to_string();
        assert!(refused.contains("cannot read"), "{refused}");
        std::fs::write(&ca, "not a certificate").unwrap();
        let refused = missing.tls_certificates().unwrap_err().to_string();
        assert!(refused.contains("do not parse"), "{refused}");
        assert!(
            RedisSettings::default()
                .tls_certificates()
                .unwrap()
                .is_none()
        );
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

    #[test]
    fn sentinels_are_host_port_or_urls_whose_passwords_are_kept_apart() {
        let parsed = |entry: &str| SentinelAddress::parse(entry);
        assert_eq!(
            parsed("10.0.0.2:26379"),
            Some(SentinelAddress {
                host: "10.0.0.2".into(),
                port: 26379,
                tls: false,
                username: None,
                password: None,
            })
        );
        let with_user = parsed("redis://watcher:pw@10.0.0.4:26379").unwrap();
        assert_eq!(with_user.username.as_deref(), Some("watcher"));
        assert_eq!(with_user.password, Some(Secret::new("pw")));
        let with_password = parsed("redis://:p%40ss@sentinel.example:26380").unwrap();
        assert_eq!(with_password.host, "sentinel.example");
        assert_eq!(with_password.port, 26380);
        assert_eq!(with_password.password, Some(Secret::new("p@ss")));
        assert!(parsed("rediss://10.0.0.3").unwrap().tls);
        assert_eq!(parsed("rediss://10.0.0.3").unwrap().port, 26379);
        for bad in ["no-port", ":26379", "http://x:1", "a/b:1", "redis://:pw@"] {
            assert_eq!(parsed(bad), None, "{bad}");
        }
        let redis = RedisSettings {
            sentinels: List(vec![
                "redis://:topsecret@10.0.0.2:26379".into(),
                "10.0.0.3:26379".into(),
            ]),
            sentinel_master: Some("mymaster".into()),
            ..RedisSettings::default()
        };
        let shown = redis.display_url();
        assert_eq!(shown, "sentinel mymaster via 10.0.0.2:26379,10.0.0.3:26379");
        let refused = RedisSettings {
            sentinels: List(vec!["redis://:topsecret@".into()]),
            ..redis
        };
        let error = refused.topology().unwrap_err().to_string();
        assert!(!error.contains("topsecret"), "{error}");
    }
}

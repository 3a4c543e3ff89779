//! Pending tokens in Redis, shared by every instance and kept across restarts.
//!
//! Layout (the braces are a cluster hash tag, so one device's keys share a slot):
//!
//! ```text
//! <prefix>token:{<device_id>}:<jti>  -> {"deviceId", "jti", "expiresAt", "group", "epoch"}  EX ttl
//! <prefix>device:{<device_id>}       -> <jti>                                               EX ttl
//! <prefix>blocked:{<device_id>}      -> <unix s>:<reason code>   (until unblocked)
//! <prefix>unblocked:{<device_id>}    -> unix s of the last unblock  EX 400 days
//! <prefix>proof:{<device_id>}:<id>   -> 1                        EX the renewal proof's life
//! <prefix>nonce:{<device_id>}:<ts>   -> 1                        EX the replay window
//! <prefix>certs:{<slot tag>}         -> hash serial -> record    (the tag is in the device's slot)
//! <prefix>revoked                    -> zset <serial>:<at>:<reason> by not_after (the CRL's list)
//! <prefix>revoked:revision           -> unix ms of the latest change to that list
//! <prefix>revoked:pending            -> zset serial by unix s: listings a revocation owes
//! ```
//!
//! Issue and consume are each one Lua script with every key declared. Redis expires the
//! keys (EX); nothing here sweeps them.
//!
//! Each thread that talks to Redis (each actix worker, and the thread running the health
//! and count loops) has its own multiplexed connection, driven on that thread: requests
//! on one worker pipeline together, and no request waits for another thread to be
//! scheduled to read its reply.
//!
//! Connections never reconnect by themselves: a connection that fails is dropped, and a
//! new one is opened only to the Redis process that the health loop has checked for lost
//! writes (see [`super::incarnation`]). A Redis that restarted from an old dump is thus
//! never used before the server knows which tokens it may have forgotten were used.
//!
//! By concern: this file holds the store and how it is set up for each topology;
//! `connection` the connections requests use; `health` the lost-writes check and epochs;
//! `count` the SCAN counts for `/health`; `keys` the layout above; `tokens` the
//! [`TokenStore`](super::TokenStore); `registry` the
//! [`CertificateRegistry`](super::CertificateRegistry) and blocks; `listing` the revoked
//! list and the listings revocations owe it;
//! `limits` the shared rate limits. Each Lua script sits beside this file, loaded here.

mod connection;
mod count;
mod fleet;
mod health;
mod history;
mod keys;
mod limits;
mod listing;
mod persistence;
mod problem;
mod registry;
mod replicas;
mod tokens;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::cluster::ClusterClient;
use redis::{AsyncConnectionConfig, IntoConnectionInfo, RedisError, Script};
use tokio::task::JoinHandle;

use super::RedisCounts;
use super::topology::{self, NodeAccess, Primary, Sentinels};
use crate::config::{RedisSettings, RedisTopology, Settings};
use crate::domain::DeviceId;
use crate::metrics::Metrics;
use crate::registry::RETENTION_AFTER_EXPIRY_SECS;
use crate::secret::Secret;
use count::count_loop;
use health::{Health, health_loop};
use keys::Keys;

pub use history::{EVENTS_KEPT, HistoryBatch};
pub use limits::LimitSubject;
pub use persistence::Persistence;
pub use problem::{ProblemKind, RedisProblem};
pub use replicas::Shortfall;

/// Keys asked for per SCAN call.
const SCAN_BATCH: usize = 1000;

#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Where to connect; may carry credentials.
    pub url: Secret,
    /// The address without credentials: what logs show.
    pub display_url: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub db: Option<i64>,
    pub key_prefix: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub health_check_interval: Duration,
    pub count_interval: Duration,
    /// Replicas that must acknowledge a consume before it counts; 0 = off.
    pub wait_replicas: u32,
    pub wait_timeout: Duration,
    pub topology: RedisTopology,
    /// TLS to nodes found by address (Sentinel's primary, a cluster's primaries).
    pub tls: bool,
    pub sentinel_password: Option<Secret>,
    /// The CA to trust and the client identity for TLS connections (`redis.tls_*_file`);
    /// `None`: the system trust store and no client certificate.
    pub tls_certificates: Option<redis::TlsCertificates>,
    /// How long certificate records are kept after expiry (seconds).
    pub retention_after_expiry: u64,
}

impl RedisConfig {
    pub fn from_settings(redis: &RedisSettings) -> Result<Self, crate::config::ConfigError> {
        let password = Settings::read_secret(
            redis.password.as_ref(),
            redis.password_file.as_deref(),
            "redis.password_file",
        )?;
        // Credentials written into the cluster nodes' URLs serve every connection the mode
        // opens (the health checks' to each primary too), unless given on their own.
        let (node_username, node_password) = redis
            .cluster_nodes
            .0
            .iter()
            .filter_map(|node| node.as_str().into_connection_info().ok())
            .map(|info| {
                let settings = info.redis_settings();
                (
                    settings.username().map(str::to_owned),
                    settings.password().map(Secret::new),
                )
            })
            .find(|(user, password)| user.is_some() || password.is_some())
            .unwrap_or_default();
        Ok(Self {
            url: redis.connection_url(),
            display_url: redis.display_url(),
            username: redis.username.clone().or(node_username),
            password: password.or(node_password),
            db: redis.db,
            key_prefix: redis.key_prefix.clone(),
            connect_timeout: Duration::from_millis(redis.connect_timeout_ms),
            response_timeout: Duration::from_millis(redis.response_timeout_ms),
            health_check_interval: Duration::from_millis(redis.health_check_interval_ms),
            count_interval: Duration::from_secs_f64(redis.count_interval_seconds),
            wait_replicas: redis.wait_replicas,
            wait_timeout: Duration::from_millis(redis.wait_timeout_ms),
            topology: redis.topology()?,
            tls: redis.tls
                || redis
                    .cluster_nodes
                    .0
                    .iter()
                    .any(|n| n.starts_with("rediss://")),
            sentinel_password: redis.sentinel_password.clone(),
            tls_certificates: redis.tls_certificates()?,
            retention_after_expiry: RETENTION_AFTER_EXPIRY_SECS,
        })
    }
}

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(0);

pub struct RedisStore {
    id: u64,
    /// Bumped to make every thread open a fresh connection.
    generation: AtomicU64,
    mode: Mode,
    access: NodeAccess,
    keys: Keys,
    issue_script: Script,
    consume_script: Script,
    raise_script: Script,
    gcra_script: Script,
    revoke_script: Script,
    record_script: Script,
    advance_script: Script,
    renew_script: Script,
    owe_script: Script,
    owed_script: Script,
    unblock_script: Script,
    reblock_script: Script,
    /// Devices seen blocked in Redis (by the count's scan, and by this instance's own
    /// requests): what onboarding from memory goes by while Redis is away.
    blocked_seen: Mutex<HashSet<DeviceId>>,
    /// Names this instance's marker key.
    instance: String,
    /// The `run_id` of the Redis process the health loop checked: the only one request
    /// connections may be opened to.
    verified_run_id: Mutex<Option<String>>,
    /// Bumped at every loss of writes: tokens carry the epoch they were issued in, and
    /// Redis is not asked about tokens of an older one (it may have lost their use).
    epoch: AtomicU64,
    /// When writes were last lost (unix seconds; 0: never): signed onboarding requests
    /// that may have been accepted before then are not accepted until they are too old.
    lost_writes_at: AtomicU64,
    connected: AtomicBool,
    /// Whether Redis was ever up: the first connection is not a switch back from memory.
    ever_connected: AtomicBool,
    counts: Mutex<Option<RedisCounts>>,
    /// Cluster primaries that passed the last health check.
    answering: std::sync::atomic::AtomicUsize,
    /// Why Redis is not in use, or a request's command was refused.
    problems: problem::Problems,
    /// Primaries with fewer online replicas than `redis.wait_replicas` at the last check.
    shortfalls: Mutex<Vec<Shortfall>>,
    /// What the weakest primary keeps across a restart, as last read.
    persistence: Mutex<Option<Persistence>>,
    config: RedisConfig,
    metrics: Arc<Metrics>,
}

/// How connections are made, by topology.
enum Mode {
    Standalone(redis::Client),
    Sentinel(Sentinels),
    Cluster(Box<Cluster>),
}

struct Cluster {
    client: ClusterClient,
    /// The primaries at the last health check.
    primaries: Mutex<Vec<Primary>>,
}

impl RedisStore {
    /// Sets up the client, checks Redis once (a Redis that is down now does not stop
    /// start-up), and starts the health and count loops. The loops end when the store is
    /// dropped.
    pub async fn connect(
        config: RedisConfig,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Self>, Vec<JoinHandle<()>>), RedisError> {
        let mut info = config.url.expose().into_connection_info()?;
        let mut settings = info.redis_settings().clone();
        if let Some(username) = &config.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &config.password {
            settings = settings.set_password(password.expose());
        }
        if let Some(db) = config.db {
            settings = settings.set_db(db);
        }
        info = info.set_redis_settings(settings);
        // No retries inside a request: the health loop does the patient reconnecting, so
        // a request never waits long on a Redis that is gone.
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout));
        let access = NodeAccess {
            tls: config.tls,
            username: config.username.clone(),
            password: config.password.clone(),
            db: config.db,
            config: connection_config.clone(),
            certificates: config.tls_certificates.clone(),
        };
        let mode = match &config.topology {
            RedisTopology::Standalone => {
                Mode::Standalone(topology::client(info, config.tls_certificates.as_ref())?)
            }
            RedisTopology::Sentinel { sentinels, master } => Mode::Sentinel(Sentinels::new(
                sentinels,
                master.clone(),
                config.sentinel_password.clone(),
                access.clone(),
            )),
            RedisTopology::Cluster { nodes } => Mode::Cluster(Box::new(Cluster {
                client: topology::cluster_client(
                    nodes,
                    &access,
                    config.connect_timeout,
                    config.response_timeout,
                )?,
                primaries: Mutex::new(Vec::new()),
            })),
        };
        let mut instance = [0u8; 8];
        crate::crypto::fill_random(&mut instance);
        let store = Arc::new(Self {
            id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            mode,
            access,
            keys: Keys {
                prefix: config.key_prefix.clone(),
            },
            issue_script: Script::new(include_str!("issue.lua")),
            consume_script: Script::new(include_str!("consume.lua")),
            raise_script: Script::new(include_str!("raise.lua")),
            gcra_script: Script::new(include_str!("gcra.lua")),
            revoke_script: Script::new(include_str!("revoke.lua")),
            record_script: Script::new(include_str!("record.lua")),
            advance_script: Script::new(include_str!("advance.lua")),
            renew_script: Script::new(include_str!("renew.lua")),
            owe_script: Script::new(include_str!("owe.lua")),
            owed_script: Script::new(include_str!("owed.lua")),
            unblock_script: Script::new(include_str!("unblock.lua")),
            reblock_script: Script::new(include_str!("reblock.lua")),
            blocked_seen: Mutex::new(HashSet::new()),
            instance: hex::encode(instance),
            verified_run_id: Mutex::new(None),
            epoch: AtomicU64::new(0),
            lost_writes_at: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            ever_connected: AtomicBool::new(false),
            counts: Mutex::new(None),
            answering: std::sync::atomic::AtomicUsize::new(0),
            problems: problem::Problems::default(),
            shortfalls: Mutex::new(Vec::new()),
            persistence: Mutex::new(None),
            config,
            metrics,
        });
        let mut health = Health::for_mode(&store.mode);
        if let Err(e) = health.run(&store).await
            && store
                .problem()
                .is_none_or(|p| p.kind == ProblemKind::Unreachable)
        {
            tracing::warn!(
                url = %store.config.display_url,
                error = %e,
                "redis is not reachable at start-up; will keep trying"
            );
        }
        let tasks = vec![
            tokio::spawn(health_loop(Arc::downgrade(&store), health)),
            tokio::spawn(count_loop(Arc::downgrade(&store))),
        ];
        Ok((store, tasks))
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// When Redis was last seen to have lost writes (unix seconds), if ever.
    pub fn lost_writes_at(&self) -> Option<u64> {
        Some(self.lost_writes_at.load(Ordering::SeqCst)).filter(|&t| t > 0)
    }

    /// Why Redis is not in use (or refused a request's command lately), if it is not.
    pub fn problem(&self) -> Option<RedisProblem> {
        self.problems.current()
    }

    /// What Redis keeps across a restart (the weakest primary's), once read.
    pub fn persistence(&self) -> Option<Persistence> {
        *self.persistence.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps what the health check read, and says so when it changed: a warning when a
    /// restart would lose more than about a second of writes.
    fn note_persistence(&self, found: Option<Persistence>) {
        let Some(found) = found else { return };
        let before = self
            .persistence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(found);
        if before == Some(found) {
            return;
        }
        match found.loss() {
            Some(loss) => tracing::warn!(
                url = %self.config.display_url,
                persistence = found.as_str(),
                "redis does not keep every write across a restart: {loss}. Revocations \
                 and blocks are kept beside the CA too and put back; set appendonly yes \
                 (README: The Redis user, persistence)"
            ),
            None => tracing::info!(
                url = %self.config.display_url,
                persistence = found.as_str(),
                "redis persistence"
            ),
        }
    }

    /// The topology's name, and on a cluster how many primaries answered the last check.
    pub fn topology(&self) -> (&'static str, Option<usize>) {
        match &self.mode {
            Mode::Cluster(_) => ("cluster", Some(self.answering.load(Ordering::Relaxed))),
            _ => (self.config.topology.as_str(), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::List;

    #[test]
    fn credentials_in_the_cluster_nodes_urls_serve_every_connection() {
        let redis = RedisSettings {
            cluster_nodes: List(vec![
                "redis://10.0.0.1:7000".into(),
                "redis://app:n0de-secret@10.0.0.2:7000".into(),
            ]),
            ..RedisSettings::default()
        };
        let config = RedisConfig::from_settings(&redis).unwrap();
        assert_eq!(config.username.as_deref(), Some("app"));
        assert_eq!(config.password, Some(Secret::new("n0de-secret")));
        assert!(!config.display_url.contains("n0de-secret"));
        // Given on their own, they win.
        let given = RedisSettings {
            username: Some("other".into()),
            password: Some(Secret::new("given")),
            ..redis
        };
        let config = RedisConfig::from_settings(&given).unwrap();
        assert_eq!(config.username.as_deref(), Some("other"));
        assert_eq!(config.password, Some(Secret::new("given")));
    }
}

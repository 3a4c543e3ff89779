//! Pending tokens in Redis, shared by every instance and kept across restarts.
//!
//! Layout (the braces are a cluster hash tag, so one device's keys share a slot):
//!
//! ```text
//! <prefix>token:{<device_id>}:<jti>  -> {"deviceId": "...", "jti": "...", "expiresAt": <unix>}  EX ttl
//! <prefix>device:{<device_id>}       -> <jti>                                               EX ttl
//! <prefix>blocked:{<device_id>}      -> <unix s>:<reason code>   (until unblocked)
//! <prefix>proof:{<device_id>}:<id>   -> 1                        EX the renewal proof's life
//! <prefix>nonce:{<device_id>}:<ts>   -> 1                        EX the replay window
//! <prefix>certs:{<slot tag>}         -> hash serial -> record    (the tag is in the device's slot)
//! <prefix>revoked                    -> zset serial by not_after (one key: the CRL's list)
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

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, InfoDict, IntoConnectionInfo, RedisError, Script};
use tokio::task::JoinHandle;

use super::incarnation::{self, Probe, Watch};
use super::topology::{self, NodeAccess, Primary, RedisConn, Sentinels};
use super::{
    CertificateRegistry, ConsumeOutcome, Issued, PROOF_LIFETIME, ProofUse, RedisCounts, RedisStats,
    Renewal, RevokedCertificate, RevokedList, StorageMode, StoreError, StoreStats, TokenStore,
    replay_window,
};
use crate::clock::{CLOCK_LEEWAY_SECS, unix_now};
use crate::config::{RedisSettings, RedisTopology, Settings};
use crate::domain::{DeviceId, Jti};
use crate::metrics::Metrics;
use crate::registry::{
    Block, CertificateRecord, RETENTION_AFTER_EXPIRY_SECS, Reason, Revocation, slots,
};
use crate::secret::Secret;

/// Attempts at replacing a pending token before giving up. Each lost race means another
/// request re-onboarded the same device in between and won, so with N requests for one
/// device in flight, none needs more than N attempts.
const ISSUE_ATTEMPTS: usize = 32;
const SCAN_BATCH: usize = 1000;
/// A count may use at most a twentieth of the time between counts, so that counting a
/// million keys never becomes a steady load on Redis: with the default interval of a
/// second, a fleet whose count takes 50 ms is counted every second, one whose count
/// takes 3 s every minute.
const COUNT_DUTY_CYCLE: u32 = 20;
/// One certificate in this many also prunes its bucket of expired records (Redis cannot
/// expire hash fields one by one before 7.4).
const PRUNE_ONE_IN: u8 = 32;
/// How long an instance's marker outlives the instance.
const MARKER_TTL_SECS: u64 = 7 * 24 * 3600;

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
}

impl RedisConfig {
    pub fn from_settings(redis: &RedisSettings) -> Result<Self, crate::config::ConfigError> {
        let password = Settings::read_secret(
            redis.password.as_ref(),
            redis.password_file.as_deref(),
            "redis.password_file",
        )?;
        Ok(Self {
            url: redis.connection_url(),
            display_url: redis.display_url(),
            username: redis.username.clone(),
            password,
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
        })
    }
}

/// What a shared rate limit counts.
#[derive(Debug, Clone, Copy)]
pub enum LimitSubject<'a> {
    Device(&'a DeviceId),
    Address(std::net::IpAddr),
}

/// Key names; the only place that knows the layout.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn device(&self, device: &DeviceId) -> String {
        format!("{}device:{{{device}}}", self.prefix)
    }

    fn token(&self, device: &DeviceId, jti: &str) -> String {
        format!("{}token:{{{device}}}:{jti}", self.prefix)
    }

    /// The certificate records of every device in `slot`.
    fn certificates(&self, slot: u16) -> String {
        format!("{}certs:{{{}}}", self.prefix, slots::tag_for(slot))
    }

    /// The bucket that holds the record of the certificate with `serial`.
    fn certificate_of(&self, serial: &[u8; 16]) -> String {
        self.certificates(slots::slot_of_serial(serial))
    }

    /// Revoked serials (upper-case hex), scored by their certificates' notAfter.
    fn revoked(&self) -> String {
        format!("{}revoked", self.prefix)
    }

    /// Unix ms of the latest revocation.
    fn revision(&self) -> String {
        format!("{}revoked:revision", self.prefix)
    }

    fn blocked(&self, device: &DeviceId) -> String {
        format!("{}blocked:{{{device}}}", self.prefix)
    }

    fn blocked_prefix(&self) -> String {
        format!("{}blocked:", self.prefix)
    }

    fn proof(&self, device: &DeviceId, id: u64) -> String {
        format!("{}proof:{{{device}}}:{id:016x}", self.prefix)
    }

    fn device_limit(&self, device: &DeviceId) -> String {
        format!("{}rl:{{{device}}}", self.prefix)
    }

    fn address_limit(&self, ip: std::net::IpAddr) -> String {
        format!("{}rl:ip:{{{ip}}}", self.prefix)
    }

    fn nonce(&self, device: &DeviceId, nonce: u64) -> String {
        format!("{}nonce:{{{device}}}:{nonce}", self.prefix)
    }

    /// One instance's counter, bumped at every health check.
    fn marker(&self, instance: &str, shard: Option<&str>) -> String {
        match shard {
            None => format!("{}marker:{instance}", self.prefix),
            Some(tag) => format!("{}marker:{{{tag}}}:{instance}", self.prefix),
        }
    }

    /// The Redis `run_id` some instance last checked for lost writes.
    fn incarnation(&self, shard: Option<&str>) -> String {
        match shard {
            None => format!("{}incarnation", self.prefix),
            Some(tag) => format!("{}incarnation:{{{tag}}}", self.prefix),
        }
    }

    /// The epoch (bumped at each loss of writes any instance noticed) and the moment of
    /// the latest loss.
    fn lost_writes(&self) -> String {
        format!("{}lost-writes", self.prefix)
    }

    fn token_prefix(&self) -> String {
        format!("{}token:", self.prefix)
    }

    fn device_prefix(&self) -> String {
        format!("{}device:", self.prefix)
    }

    /// A SCAN pattern for every key of ours, the prefix's glob characters escaped.
    fn scan_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + 1);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        pattern
    }
}

/// This thread's connections, one per store (a process has one store; tests have many).
struct LocalConnection {
    store: u64,
    generation: u64,
    conn: MultiplexedConnection,
}

thread_local! {
    static LOCAL_CONNECTIONS: RefCell<Vec<LocalConnection>> = const { RefCell::new(Vec::new()) };
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
    /// The one cluster connection (it multiplexes and follows the slots), by generation.
    conn: Mutex<Option<(u64, ClusterConnection)>>,
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
        };
        let mode = match &config.topology {
            RedisTopology::Standalone => Mode::Standalone(redis::Client::open(info)?),
            RedisTopology::Sentinel { sentinels, master } => Mode::Sentinel(Sentinels::new(
                sentinels,
                master.clone(),
                config.sentinel_password.clone(),
                connection_config.clone(),
            )),
            RedisTopology::Cluster { nodes } => Mode::Cluster(Box::new(Cluster {
                client: topology::cluster_client(
                    nodes,
                    &access,
                    config.connect_timeout,
                    config.response_timeout,
                )?,
                conn: Mutex::new(None),
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
            blocked_seen: Mutex::new(HashSet::new()),
            instance: hex::encode(instance),
            verified_run_id: Mutex::new(None),
            epoch: AtomicU64::new(0),
            lost_writes_at: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            ever_connected: AtomicBool::new(false),
            counts: Mutex::new(None),
            answering: std::sync::atomic::AtomicUsize::new(0),
            config,
            metrics,
        });
        let mut health = Health::for_mode(&store.mode);
        if let Err(e) = health.run(&store).await {
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

    fn learn(&self, epoch: u64, at: u64) {
        self.epoch.fetch_max(epoch, Ordering::SeqCst);
        self.lost_writes_at.fetch_max(at, Ordering::SeqCst);
    }

    /// A new connection to the one server (standalone), or to the primary Sentinel names.
    async fn open(&self) -> Result<MultiplexedConnection, RedisError> {
        match &self.mode {
            Mode::Standalone(client) => {
                client
                    .get_multiplexed_async_connection_with_config(&self.access.config)
                    .await
            }
            Mode::Sentinel(sentinels) => {
                let (host, port) = sentinels.primary().await?;
                self.access.open(&host, port).await
            }
            Mode::Cluster(_) => Err(RedisError::from((
                redis::ErrorKind::Client,
                "a cluster is reached through its cluster connection",
            ))),
        }
    }

    /// The cluster connection of this generation, made when there is none.
    async fn cluster_conn(&self) -> Result<ClusterConnection, RedisError> {
        let Mode::Cluster(cluster) = &self.mode else {
            return Err(RedisError::from((
                redis::ErrorKind::Client,
                "not a cluster",
            )));
        };
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some((g, c)) = cluster
            .conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && *g == generation
        {
            return Ok(c.clone());
        }
        let made = cluster.client.get_async_connection().await?;
        *cluster.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, made.clone()));
        Ok(made)
    }

    /// The topology's name, and on a cluster how many primaries answered the last check.
    pub fn topology(&self) -> (&'static str, Option<usize>) {
        match &self.mode {
            Mode::Cluster(_) => ("cluster", Some(self.answering.load(Ordering::Relaxed))),
            _ => (self.config.topology.as_str(), None),
        }
    }

    /// The connection a request uses: on a cluster, the cluster connection (once the
    /// health check has passed every primary); otherwise this thread's own.
    async fn conn(&self) -> Result<RedisConn, StoreError> {
        if let Mode::Cluster(_) = &self.mode {
            if !self.is_connected() {
                return Err(StoreError::Unreachable("redis is unreachable".into()));
            }
            return self
                .cluster_conn()
                .await
                .map(RedisConn::Cluster)
                .map_err(|e| self.fail(e));
        }
        self.single_conn().await.map(RedisConn::Single)
    }

    /// This thread's connection, opened on first use, and only to the Redis process the
    /// health loop has checked.
    async fn single_conn(&self) -> Result<MultiplexedConnection, StoreError> {
        let generation = self.generation.load(Ordering::SeqCst);
        let cached = LOCAL_CONNECTIONS.with_borrow(|local| {
            local
                .iter()
                .find(|c| c.store == self.id && c.generation == generation)
                .map(|c| c.conn.clone())
        });
        if let Some(conn) = cached {
            return Ok(conn);
        }
        let Some(verified) = self.verified_run_id() else {
            return Err(StoreError::Unreachable(
                "redis has not been checked yet".into(),
            ));
        };
        if !self.is_connected() {
            return Err(StoreError::Unreachable("redis is unreachable".into()));
        }
        let mut conn = self.open().await.map_err(|e| self.fail(e))?;
        let info: InfoDict = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        if incarnation::run_id(&info).as_deref() != Some(verified.as_str()) {
            // Restarted, or another server answers: the health loop checks it first.
            self.set_connected(false, None);
            return Err(StoreError::Unreachable(
                "redis restarted; checking it for lost writes before use".into(),
            ));
        }
        LOCAL_CONNECTIONS.with_borrow_mut(|local| {
            local.retain(|c| c.store != self.id);
            local.push(LocalConnection {
                store: self.id,
                generation,
                conn: conn.clone(),
            });
        });
        Ok(conn)
    }

    fn verified_run_id(&self) -> Option<String> {
        self.verified_run_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Starts a new epoch, here and, for every other instance, in Redis. A first contact
    /// (no instance has seen this Redis, and neither has this one) is a Redis that is new
    /// or lost everything: its epoch moves too, but no signed request waits for it.
    async fn record_loss(
        &self,
        conn: &mut RedisConn,
        shared_epoch: u64,
        reason: &str,
        first_contact: bool,
    ) -> Result<(), RedisError> {
        let epoch = self.epoch().max(shared_epoch) + 1;
        let at = if first_contact { 0 } else { unix_now() };
        let (epoch, at): (u64, u64) = self
            .raise_script
            .key(self.keys.lost_writes())
            .arg(epoch)
            .arg(at)
            .invoke_async(conn)
            .await?;
        self.learn(epoch, at);
        if first_contact {
            tracing::info!(
                url = %self.config.display_url,
                epoch,
                "first look at this redis: tokens issued before now are not accepted from it"
            );
        } else {
            self.metrics.redis_lost_writes.inc();
            tracing::warn!(
                url = %self.config.display_url,
                reason,
                epoch,
                "redis may have lost writes: tokens issued before now are refused (devices \
                 onboard again); signed onboarding requests from before now wait until they \
                 are too old to replay"
            );
        }
        Ok(())
    }

    fn set_connected(&self, up: bool, error: Option<&RedisError>) {
        if self.connected.swap(up, Ordering::SeqCst) != up {
            if self.ever_connected.swap(true, Ordering::Relaxed) {
                self.metrics.storage_fallback_switches.inc();
            }
            if up {
                // The workers' connections may still hold the failure from before; the
                // first request on each would fail again. Give every thread a new one.
                self.renew_connections();
                tracing::info!(url = %self.config.display_url, "redis connection is up");
            } else {
                tracing::warn!(
                    url = %self.config.display_url,
                    error = error.map(tracing::field::display),
                    "redis connection lost"
                );
            }
        }
    }

    /// Maps a Redis error to the store's, noting a lost connection on the way.
    fn fail(&self, e: RedisError) -> StoreError {
        // A primary demoted by a failover answers READONLY: find the new one.
        let demoted = e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_unrecoverable_error()
            || demoted
        {
            self.set_connected(false, Some(&e));
            StoreError::Unreachable(e.to_string())
        } else {
            StoreError::Failed(e.to_string())
        }
    }

    /// Fresh connections everywhere: the old ones may be broken, or lead to a Redis
    /// process that is not the one checked.
    fn renew_connections(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn record(device: &DeviceId, jti: &str, expires_at: u64) -> String {
        serde_json::json!({ "deviceId": device.as_str(), "jti": jti, "expiresAt": expires_at })
            .to_string()
    }

    async fn try_consume(
        &self,
        conn: &mut RedisConn,
        device: &DeviceId,
        jti: &str,
        certificate: Option<&CertificateRecord>,
    ) -> Result<bool, StoreError> {
        let mut invocation = self.consume_script.key(self.keys.device(device));
        invocation.key(self.keys.token(device, jti)).arg(jti);
        if let Some(certificate) = certificate {
            // Now and then (by the serial's random last byte), the bucket is pruned.
            let prune = certificate.serial[15] % PRUNE_ONE_IN == 0;
            invocation
                .key(self.keys.certificate_of(&certificate.serial))
                .arg(&certificate.serial[..])
                .arg(certificate.pack())
                .arg(certificate.keep_until())
                .arg(if prune { "1" } else { "0" })
                .arg(unix_now())
                .arg(RETENTION_AFTER_EXPIRY_SECS);
        }
        let consumed: i64 = invocation
            .invoke_async(conn)
            .await
            .map_err(|e| self.fail(e))?;
        if consumed == 1 {
            self.wait_for_replicas(conn, &[&self.keys.device(device)])
                .await?;
        }
        Ok(consumed == 1)
    }

    /// With `redis.wait_replicas`, a consume (or a signed request's first use) counts
    /// only once that many replicas have it: a failover then cannot bring it back.
    /// Otherwise the request fails (503); the write stays on the primary, so the device
    /// onboards (or signs) again.
    /// `written` names the keys written: on a cluster, the primary of each one's slot
    /// waits for its own replicas.
    async fn wait_for_replicas(
        &self,
        conn: &mut RedisConn,
        written: &[&str],
    ) -> Result<(), StoreError> {
        let wanted = self.config.wait_replicas;
        if wanted == 0 {
            return Ok(());
        }
        let mut wait = redis::cmd("WAIT");
        wait.arg(wanted)
            .arg(self.config.wait_timeout.as_millis() as u64);
        let acknowledged: u32 = match conn {
            RedisConn::Single(single) => {
                wait.query_async(single).await.map_err(|e| self.fail(e))?
            }
            RedisConn::Cluster(cluster) => {
                let mut slots: Vec<u16> = written.iter().map(|k| slots::key_slot(k)).collect();
                slots.sort_unstable();
                slots.dedup();
                let mut fewest = u32::MAX;
                for slot in slots {
                    let route = redis::cluster_routing::RoutingInfo::SingleNode(
                        redis::cluster_routing::SingleNodeRoutingInfo::SpecificNode(
                            redis::cluster_routing::Route::new(
                                slot,
                                redis::cluster_routing::SlotAddr::Master,
                            ),
                        ),
                    );
                    let value = cluster
                        .route_command(wait.clone(), route)
                        .await
                        .map_err(|e| self.fail(e))?;
                    let count: u32 = redis::from_redis_value(value)
                        .map_err(|e| StoreError::Failed(e.to_string()))?;
                    fewest = fewest.min(count);
                }
                fewest
            }
        };
        if acknowledged < wanted {
            return Err(StoreError::Failed(format!(
                "{acknowledged} of the {wanted} replicas required (redis.wait_replicas) \
                 acknowledged the consume in time"
            )));
        }
        Ok(())
    }

    /// One request against a limit of `per_minute` that every instance shares; `Ok(None)`
    /// when it is allowed, `Ok(Some(wait))` when it is not.
    pub async fn shared_limit(
        &self,
        subject: LimitSubject<'_>,
        per_minute: u32,
    ) -> Result<Option<Duration>, StoreError> {
        let key = match subject {
            LimitSubject::Device(device) => self.keys.device_limit(device),
            LimitSubject::Address(ip) => self.keys.address_limit(ip),
        };
        let emission_us = (60_000_000 / u64::from(per_minute.max(1))).max(1);
        let (allowed, wait_us): (i64, i64) = self
            .gcra_script
            .key(key)
            .arg(emission_us)
            .arg(per_minute)
            .invoke_async(&mut self.conn().await?)
            .await
            .map_err(|e| self.fail(e))?;
        Ok((allowed == 0).then(|| Duration::from_micros(wait_us.max(0) as u64)))
    }

    /// Notes what Redis answered about the device's block.
    fn saw_blocked(&self, device: &DeviceId, blocked: bool) {
        let mut seen = self.blocked_seen.lock().unwrap_or_else(|p| p.into_inner());
        if blocked {
            seen.insert(device.clone());
        } else {
            seen.remove(device);
        }
    }

    /// Whether the device was blocked in Redis at the last look.
    pub fn seen_blocked(&self, device: &DeviceId) -> bool {
        self.blocked_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(device)
    }

    /// Adds a revoked certificate to the CRL's list and moves the list's revision when
    /// the list changed (`revoked_now`, or an interrupted revocation being finished), so
    /// that every instance's CRL follows.
    async fn list_revoked(
        &self,
        conn: &mut RedisConn,
        record: &CertificateRecord,
        revoked_now: bool,
    ) -> Result<(), StoreError> {
        let listed: i64 = redis::cmd("ZADD")
            .arg(self.keys.revoked())
            .arg(record.not_after)
            .arg(record.serial_hex())
            .query_async(conn)
            .await
            .map_err(|e| self.fail(e))?;
        if revoked_now || listed == 1 {
            self.advance_script
                .key(self.keys.revision())
                .invoke_async::<()>(conn)
                .await
                .map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    /// Writes a record made while Redis was away.
    pub async fn record_certificate(
        &self,
        certificate: &CertificateRecord,
    ) -> Result<(), StoreError> {
        self.record_script
            .key(self.keys.certificate_of(&certificate.serial))
            .arg(&certificate.serial[..])
            .arg(certificate.pack())
            .arg(certificate.keep_until())
            .invoke_async::<()>(&mut self.conn().await?)
            .await
            .map_err(|e| self.fail(e))
    }

    /// The device's pending token and its remaining TTL, if it has one.
    pub async fn pending(
        &self,
        device: &DeviceId,
    ) -> Result<Option<(String, Duration)>, StoreError> {
        let (jti, ttl_ms): (Option<String>, i64) = redis::pipe()
            .get(self.keys.device(device))
            .pttl(self.keys.device(device))
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(jti.map(|jti| (jti, Duration::from_millis(ttl_ms.max(0) as u64))))
    }

    /// Where to SCAN: every primary of a cluster, or the one server.
    async fn scan_connections(&self) -> Option<Vec<RedisConn>> {
        match &self.mode {
            Mode::Cluster(cluster) => {
                let nodes = cluster
                    .primaries
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let mut conns = Vec::with_capacity(nodes.len());
                for node in nodes {
                    conns.push(RedisConn::Single(
                        self.access.open(&node.host, node.port).await.ok()?,
                    ));
                }
                Some(conns)
            }
            _ => Some(vec![self.conn().await.ok()?]),
        }
    }

    /// Counts our keys with SCAN: incremental, so Redis keeps serving everyone else
    /// between batches, however many keys there are.
    async fn count(&self) -> Option<Duration> {
        let started = Instant::now();
        let pattern = self.keys.scan_pattern();
        let (token_prefix, device_prefix) = (self.keys.token_prefix(), self.keys.device_prefix());
        let blocked_prefix = self.keys.blocked_prefix();
        let (mut tokens, mut devices) = (0u64, 0u64);
        let mut blocked = HashSet::new();
        for mut conn in self.scan_connections().await? {
            let mut cursor = 0u64;
            loop {
                let reply: Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_BATCH)
                    .query_async(&mut conn)
                    .await;
                let (next, keys) = match reply {
                    Ok(reply) => reply,
                    Err(e) => {
                        tracing::debug!(error = %e, "counting keys failed");
                        return None;
                    }
                };
                for key in keys {
                    if key.starts_with(&token_prefix) {
                        tokens += 1;
                    } else if key.starts_with(&device_prefix) {
                        devices += 1;
                    } else if let Some(device) = key
                        .strip_prefix(&blocked_prefix)
                        .and_then(|tagged| tagged.strip_prefix('{')?.strip_suffix('}'))
                        .and_then(|id| DeviceId::parse(id).ok())
                    {
                        blocked.insert(device);
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        let took = started.elapsed();
        *self.blocked_seen.lock().unwrap_or_else(|p| p.into_inner()) = blocked;
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()) = Some(RedisCounts {
            tokens,
            devices,
            counted_at: SystemTime::now(),
            took,
        });
        Some(took)
    }
}

/// INFO server, the marker after INCR, EXPIRE, the recorded run_id.
type ProbeReply = (InfoDict, u64, (), Option<String>);

/// The health loop's checks: one for the server (standalone, or Sentinel's primary), or
/// one per shard of a cluster, by the shard's first slot (which a failover keeps, so
/// that a promoted replica is compared with the primary it replaced).
enum Health {
    Single(HealthCheck),
    Cluster(std::collections::BTreeMap<u16, HealthCheck>),
}

impl Health {
    fn for_mode(mode: &Mode) -> Self {
        match mode {
            Mode::Cluster(_) => Health::Cluster(Default::default()),
            _ => Health::Single(HealthCheck::default()),
        }
    }

    /// Checks Redis for lost writes, then lets requests use it. A failure marks it
    /// unreachable.
    async fn run(&mut self, store: &RedisStore) -> Result<(), RedisError> {
        let result = match self {
            Health::Single(check) => check.check_single(store).await,
            Health::Cluster(checks) => check_cluster(checks, store).await,
        };
        match &result {
            Ok(()) => store.set_connected(true, None),
            Err(e) => store.set_connected(false, Some(e)),
        }
        result
    }
}

/// Every primary of the cluster, each on its own connection: all must pass.
async fn check_cluster(
    checks: &mut std::collections::BTreeMap<u16, HealthCheck>,
    store: &RedisStore,
) -> Result<(), RedisError> {
    let Mode::Cluster(cluster_mode) = &store.mode else {
        unreachable!("only for a cluster");
    };
    let found = async {
        let mut cluster = store.cluster_conn().await?;
        let found = topology::primaries(&mut cluster).await?;
        Ok::<_, RedisError>((cluster, found))
    }
    .await;
    let (cluster, found) = match found {
        Ok(found) => found,
        Err(e) => {
            store.answering.store(0, Ordering::Relaxed);
            return Err(e);
        }
    };
    let (mut answering, mut failure) = (0, None);
    for primary in &found {
        let check = checks.entry(primary.first_slot).or_default();
        if check.node.as_ref() != Some(primary) {
            // A failover (or the first look): a connection to the new primary.
            check.conn = None;
            check.node = Some(primary.clone());
        }
        let mut shared = RedisConn::Cluster(cluster.clone());
        match check.check(store, &mut shared).await {
            Ok(()) => answering += 1,
            Err(e) => {
                check.conn = None;
                failure.get_or_insert(e);
            }
        }
    }
    store.answering.store(answering, Ordering::Relaxed);
    *cluster_mode
        .primaries
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = found;
    match failure {
        // Every primary must pass: a request may go to any of them.
        Some(e) => Err(e),
        None if answering == 0 => Err(RedisError::from((
            redis::ErrorKind::Io,
            "the cluster has no primary serving slots",
        ))),
        None => Ok(()),
    }
}

/// One server's check: its own connection, and what it saw last time.
#[derive(Default)]
struct HealthCheck {
    conn: Option<MultiplexedConnection>,
    watch: Watch,
    /// The cluster primary checked (None: the one server, or Sentinel's primary).
    node: Option<Primary>,
}

impl HealthCheck {
    async fn check_single(&mut self, store: &RedisStore) -> Result<(), RedisError> {
        let result = async {
            let mut conn = RedisConn::Single(self.connection(store).await?.clone());
            self.check(store, &mut conn).await
        }
        .await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn connection(
        &mut self,
        store: &RedisStore,
    ) -> Result<&mut MultiplexedConnection, RedisError> {
        if self.conn.is_none() {
            let conn = match &self.node {
                Some(node) => store.access.open(&node.host, node.port).await?,
                None => store.open().await?,
            };
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("just set"))
    }

    /// The shard's hash tag on a cluster (its keys must live on the node checked).
    fn shard(&self) -> Option<&'static str> {
        self.node.as_ref().map(|n| slots::tag_for(n.first_slot))
    }

    /// `shared` reaches the keys every instance shares (`<prefix>lost-writes`), which on
    /// a cluster live on some other node.
    async fn check(
        &mut self,
        store: &RedisStore,
        shared: &mut RedisConn,
    ) -> Result<(), RedisError> {
        let keys = &store.keys;
        let shard = self.shard();
        let marker = keys.marker(&store.instance, shard);
        let incarnation_key = keys.incarnation(shard);
        // A handle to the same connection: the watch is updated below.
        let conn = &mut self.connection(store).await?.clone();
        let (info, marker_value, (), recorded_run_id): ProbeReply = redis::pipe()
            .cmd("INFO")
            .arg("server")
            .incr(&marker, 1)
            .expire(&marker, MARKER_TTL_SECS as i64)
            .get(&incarnation_key)
            .query_async(conn)
            .await?;
        let (shared_epoch, shared_at): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(keys.lost_writes())
            .arg("epoch")
            .arg("at")
            .query_async(shared)
            .await?;
        let probe = Probe {
            run_id: incarnation::run_id(&info).unwrap_or_default(),
            marker: marker_value,
            recorded_run_id,
        };
        store.learn(shared_epoch.unwrap_or(0), shared_at.unwrap_or(0));
        let waited = store.config.wait_replicas > 0;
        if waited {
            // The marker reaches the replicas too, or a failover would look like a loss.
            // Best effort: a replica that does not answer in time only makes a later
            // failover refuse tokens, never accept one twice.
            redis::cmd("WAIT")
                .arg(store.config.wait_replicas)
                .arg(store.config.wait_timeout.as_millis() as u64)
                .query_async::<u32>(&mut *conn)
                .await?;
        }
        let durable = if probe.is_new_incarnation() {
            incarnation::is_durable(conn, waited).await?
        } else {
            false
        };
        if let Some(reason) = self.watch.assess(&probe, durable) {
            let first_contact = self.watch.run_id.is_none() && probe.recorded_run_id.is_none();
            store
                .record_loss(shared, shared_epoch.unwrap_or(0), reason, first_contact)
                .await?;
        }
        if probe.is_new_incarnation() {
            // Only after the loss is recorded, so that another instance that sees the
            // new incarnation also sees the loss.
            redis::cmd("SET")
                .arg(&incarnation_key)
                .arg(&probe.run_id)
                .query_async::<()>(&mut *conn)
                .await?;
        }
        let changed = self.watch.run_id.as_deref() != Some(probe.run_id.as_str());
        self.watch.remember(&probe);
        if changed && self.node.is_none() {
            *store
                .verified_run_id
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(probe.run_id);
            store.renew_connections();
        }
        Ok(())
    }
}

async fn health_loop(store: Weak<RedisStore>, mut health: Health) {
    loop {
        let Some(interval) = store.upgrade().map(|s| s.config.health_check_interval) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(store) = store.upgrade() else { return };
        let _ = health.run(&store).await;
    }
}

async fn count_loop(store: Weak<RedisStore>) {
    // The first count starts at once; then at most every interval.
    let mut wait = Duration::ZERO;
    let mut first = true;
    loop {
        let Some(interval) = store.upgrade().map(|s| s.config.count_interval) else {
            return;
        };
        if !first {
            tokio::time::sleep(wait.max(interval)).await;
        }
        first = false;
        let Some(store) = store.upgrade() else { return };
        if !store.is_connected() {
            wait = Duration::ZERO;
            continue;
        }
        wait = store
            .count()
            .await
            .map_or(Duration::ZERO, |took| took * COUNT_DUTY_CYCLE);
    }
}

#[async_trait]
impl TokenStore for RedisStore {
    async fn issue(
        &self,
        device: &DeviceId,
        jti: &Jti,
        ttl: Duration,
    ) -> Result<Issued, StoreError> {
        let jti = jti.to_string();
        let ttl_secs = ttl.as_secs().max(1);
        let record = Self::record(device, &jti, unix_now() + ttl_secs);
        let (device_key, token_key) = (self.keys.device(device), self.keys.token(device, &jti));
        let blocked_key = self.keys.blocked(device);
        // Most devices have no pending token: one round trip. Replacing one takes two.
        let mut seen = String::new();
        for _ in 0..ISSUE_ATTEMPTS {
            let mut invocation = self.issue_script.key(&device_key);
            invocation.key(&token_key).key(&blocked_key);
            if !seen.is_empty() {
                invocation.key(self.keys.token(device, &seen));
            }
            let (issued, pending): (i64, String) = invocation
                .arg(&jti)
                .arg(ttl_secs)
                .arg(&record)
                .arg(&seen)
                .invoke_async(&mut self.conn().await?)
                .await
                .map_err(|e| self.fail(e))?;
            match issued {
                1 => return Ok(Issued::Issued),
                2 => {
                    self.saw_blocked(device, true);
                    return Ok(Issued::Blocked);
                }
                _ => {}
            }
            seen = pending;
        }
        Err(StoreError::Failed(format!(
            "device {device} is being onboarded by many requests at once"
        )))
    }

    async fn consume(
        &self,
        device: &DeviceId,
        jti: &Jti,
        epoch: u64,
        certificate: Option<&CertificateRecord>,
    ) -> Result<ConsumeOutcome, StoreError> {
        // Connect first: the connection is what guarantees the loss check has run.
        let mut conn = self.conn().await?;
        if epoch < self.epoch() {
            return Ok(ConsumeOutcome::NotFound);
        }
        Ok(
            if self
                .try_consume(&mut conn, device, &jti.to_string(), certificate)
                .await?
            {
                ConsumeOutcome::Consumed
            } else {
                ConsumeOutcome::NotFound
            },
        )
    }

    async fn revoke_device(&self, device: &DeviceId) -> Result<bool, StoreError> {
        for _ in 0..ISSUE_ATTEMPTS {
            let Some((jti, _)) = self.pending(device).await? else {
                return Ok(false);
            };
            if self
                .try_consume(&mut self.conn().await?, device, &jti, None)
                .await?
            {
                return Ok(true);
            }
        }
        Err(StoreError::Failed(format!(
            "device {device} is being onboarded by many requests at once"
        )))
    }

    async fn first_use(
        &self,
        device: &DeviceId,
        ts: u64,
        skew: Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        // A proof for `ts` is accepted until ts + skew; one that may have been accepted
        // before the loss cannot be told from one that was not. Wait until it is too old.
        if let Some(lost) = self.lost_writes_at() {
            let unsure_until = lost + CLOCK_LEEWAY_SECS + skew.as_secs();
            if ts <= unsure_until {
                return Err(StoreError::Unsure {
                    retry_after: unsure_until + 1 - unix_now().min(unsure_until),
                });
            }
        }
        let set: Option<String> = redis::cmd("SET")
            .arg(self.keys.nonce(device, ts))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(replay_window(skew).as_secs())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        if set.is_some() {
            self.wait_for_replicas(&mut conn, &[&self.keys.nonce(device, ts)])
                .await?;
        }
        Ok(set.is_some())
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    async fn stats(&self) -> StoreStats {
        StoreStats {
            mode: StorageMode::Redis,
            redis: Some(RedisStats {
                connected: self.is_connected(),
                topology: self.topology(),
                counts: *self.counts.lock().unwrap_or_else(|p| p.into_inner()),
            }),
            memory_tokens: 0,
        }
    }
}

#[async_trait]
impl CertificateRegistry for RedisStore {
    async fn certificate(
        &self,
        serial: &[u8; 16],
    ) -> Result<Option<CertificateRecord>, StoreError> {
        let packed: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(self.keys.certificate_of(serial))
            .arg(&serial[..])
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(packed.and_then(|p| CertificateRecord::unpack(*serial, &p)))
    }

    /// Reads the bucket of the device's slot (HSCAN: a few dozen records on a fleet of a
    /// million, other devices' among them).
    async fn certificates_of(
        &self,
        device: &DeviceId,
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        let key = self.keys.certificates(slots::slot_of(device.as_str()));
        let mut conn = self.conn().await?;
        let (mut found, mut cursor) = (Vec::new(), 0u64);
        loop {
            let (next, fields): (u64, Vec<(Vec<u8>, Vec<u8>)>) = redis::cmd("HSCAN")
                .arg(&key)
                .arg(cursor)
                .arg("COUNT")
                .arg(SCAN_BATCH)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.fail(e))?;
            for (serial, packed) in fields {
                let Ok(serial) = <[u8; 16]>::try_from(serial.as_slice()) else {
                    continue;
                };
                if let Some(record) = CertificateRecord::unpack(serial, &packed)
                    && &record.device_id == device
                {
                    found.push(record);
                }
            }
            if next == 0 {
                return Ok(found);
            }
            cursor = next;
        }
    }

    /// The record first (authoritative), then the revoked list and its revision: an
    /// interrupted revocation is finished by revoking again, which answers the first
    /// revocation's time and reason and completes the rest.
    async fn revoke(
        &self,
        serial: &[u8; 16],
        revocation: Revocation,
    ) -> Result<Option<CertificateRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let answer: Option<(i64, Vec<u8>)> = self
            .revoke_script
            .key(self.keys.certificate_of(serial))
            .arg(&serial[..])
            .arg(revocation.at)
            .arg(revocation.reason.code())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        let Some((revoked_now, packed)) = answer else {
            return Ok(None);
        };
        let record = unpacked(*serial, &packed)?;
        self.list_revoked(&mut conn, &record, revoked_now == 1)
            .await?;
        let written = [
            self.keys.certificate_of(serial),
            self.keys.revoked(),
            self.keys.revision(),
        ];
        self.wait_for_replicas(&mut conn, &written.each_ref().map(String::as_str))
            .await?;
        Ok(Some(record))
    }

    async fn renew(
        &self,
        previous: &[u8; 16],
        proof: Option<ProofUse>,
        record: &CertificateRecord,
        supersede: Option<Revocation>,
    ) -> Result<Renewal, StoreError> {
        let device = &record.device_id;
        let mut conn = self.conn().await?;
        if let Some(proof) = proof
            && let Some(lost) = self.lost_writes_at()
        {
            // As for signed onboarding: a proof that may have been used before Redis lost
            // the write cannot be told from a fresh one until it is too old.
            let unsure_until = lost + CLOCK_LEEWAY_SECS + PROOF_LIFETIME.as_secs();
            if proof.issued_at <= unsure_until {
                return Err(StoreError::Unsure {
                    retry_after: unsure_until + 1 - unix_now().min(unsure_until),
                });
            }
        }
        let slot = slots::slot_of(device.as_str());
        let mut invocation = self.renew_script.key(self.keys.blocked(device));
        invocation.key(self.keys.certificates(slot));
        let proof_life = proof.map_or(0, |p| p.remembered_until().saturating_sub(unix_now()));
        if let Some(proof) = proof {
            invocation.key(self.keys.proof(device, proof.id));
        }
        // A previous certificate from another slot was not recorded in this layout.
        let previous_here: &[u8] = if slots::slot_of_serial(previous) == slot {
            &previous[..]
        } else {
            &[]
        };
        let (outcome, superseded): (i64, Vec<u8>) = invocation
            .arg(&record.serial[..])
            .arg(record.pack())
            .arg(record.keep_until())
            .arg(previous_here)
            .arg(proof_life.max(1))
            .arg(supersede.map_or(String::new(), |r| r.at.to_string()))
            .arg(supersede.map_or(Reason::Superseded, |r| r.reason).code())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        match outcome {
            1 => {}
            2 => {
                self.saw_blocked(device, true);
                return Ok(Renewal::Blocked);
            }
            3 => return Ok(Renewal::PreviousRevoked),
            4 => return Ok(Renewal::ProofUsed),
            other => {
                return Err(StoreError::Failed(format!(
                    "the renew script answered {other}"
                )));
            }
        }
        let superseded = if superseded.is_empty() {
            None
        } else {
            let superseded = unpacked(*previous, &superseded)?;
            self.list_revoked(&mut conn, &superseded, true).await?;
            Some(superseded)
        };
        let written = [
            self.keys.certificates(slot),
            self.keys.revoked(),
            self.keys.revision(),
        ];
        self.wait_for_replicas(&mut conn, &written.each_ref().map(String::as_str))
            .await?;
        Ok(Renewal::Renewed { superseded })
    }

    async fn block(&self, device: &DeviceId, block: Block) -> Result<Block, StoreError> {
        let mut conn = self.conn().await?;
        let standing: Option<String> = redis::cmd("SET")
            .arg(self.keys.blocked(device))
            .arg(block.pack())
            .arg("NX")
            .arg("GET")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        self.wait_for_replicas(&mut conn, &[&self.keys.blocked(device)])
            .await?;
        self.saw_blocked(device, true);
        Ok(standing.as_deref().and_then(Block::unpack).unwrap_or(block))
    }

    async fn unblock(&self, device: &DeviceId) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let removed: i64 = redis::cmd("DEL")
            .arg(self.keys.blocked(device))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        self.wait_for_replicas(&mut conn, &[&self.keys.blocked(device)])
            .await?;
        self.saw_blocked(device, false);
        Ok(removed == 1)
    }

    async fn blocked(&self, device: &DeviceId) -> Result<Option<Block>, StoreError> {
        let standing: Option<String> = redis::cmd("GET")
            .arg(self.keys.blocked(device))
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| self.fail(e))?;
        let block = standing.as_deref().and_then(Block::unpack);
        self.saw_blocked(device, block.is_some());
        Ok(block)
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        let revision: Option<u64> = redis::cmd("GET")
            .arg(self.keys.revision())
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(revision.unwrap_or(0))
    }

    /// The revoked list, pruned of expired certificates, each entry's time and reason
    /// read from its record.
    async fn revoked(&self) -> Result<RevokedList, StoreError> {
        let mut conn = self.conn().await?;
        let now = unix_now();
        // One command per key, none in a pipeline: on a cluster they live in different
        // slots. This runs only when the list changed or a CRL slot began.
        let revision: Option<u64> = redis::cmd("GET")
            .arg(self.keys.revision())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        let serials: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.keys.revoked())
            .arg(now)
            .arg("+inf")
            .arg("BYSCORE")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        let _: Result<(), _> = redis::cmd("ZREMRANGEBYSCORE")
            .arg(self.keys.revoked())
            .arg("-inf")
            .arg(format!("({now}"))
            .query_async(&mut conn)
            .await;
        let serials: Vec<[u8; 16]> = serials
            .iter()
            .filter_map(|s| crate::registry::parse_serial(s))
            .collect();
        let mut records: Vec<Option<Vec<u8>>> = Vec::with_capacity(serials.len());
        for serial in &serials {
            records.push(
                redis::cmd("HGET")
                    .arg(self.keys.certificate_of(serial))
                    .arg(&serial[..])
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| self.fail(e))?,
            );
        }
        let entries = serials
            .iter()
            .zip(records)
            .filter_map(|(serial, packed)| {
                let record = CertificateRecord::unpack(*serial, &packed?)?;
                Some(RevokedCertificate {
                    serial: *serial,
                    revocation: record.revocation?,
                    not_after: record.not_after,
                })
            })
            .collect();
        Ok(RevokedList {
            revision: revision.unwrap_or(0),
            entries,
        })
    }
}

fn unpacked(serial: [u8; 16], packed: &[u8]) -> Result<CertificateRecord, StoreError> {
    CertificateRecord::unpack(serial, packed)
        .ok_or_else(|| StoreError::Failed("a certificate record does not parse".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_layout() {
        let keys = Keys {
            prefix: "mqtt-lite:".into(),
        };
        let device = DeviceId::parse("device-001").unwrap();
        assert_eq!(keys.device(&device), "mqtt-lite:device:{device-001}");
        assert_eq!(
            keys.token(&device, "abc"),
            "mqtt-lite:token:{device-001}:abc"
        );
        assert_eq!(keys.blocked(&device), "mqtt-lite:blocked:{device-001}");
        assert_eq!(
            keys.proof(&device, 0xabc),
            "mqtt-lite:proof:{device-001}:0000000000000abc"
        );
        let glob = Keys {
            prefix: "a*b[".into(),
        };
        assert_eq!(glob.scan_pattern(), "a\\*b\\[*");
    }
}

//! Pending tokens in Redis, shared by every instance and kept across restarts.
//!
//! Layout (the braces are a cluster hash tag, so one device's keys share a slot):
//!
//! ```text
//! <prefix>token:{<device_id>}:<jti>  -> {"deviceId": "...", "jti": "...", "expiresAt": <unix>}  EX ttl
//! <prefix>device:{<device_id>}       -> <jti>                                               EX ttl
//! ```
//!
//! Issue and consume are each one Lua script with every key declared. Redis expires the
//! keys (EX); nothing here sweeps them.
//!
//! Each thread that talks to Redis (each actix worker, and the thread running the health
//! and count loops) has its own multiplexed connection, driven on that thread: requests
//! on one worker pipeline together, and no request waits for another thread to be
//! scheduled to read its reply. The connections reconnect by themselves.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, RedisError, Script};
use tokio::task::JoinHandle;

use super::{
    ConsumeOutcome, RedisCounts, RedisStats, StorageMode, StoreError, StoreStats, TokenStore,
};
use crate::config::{RedisSettings, Secret, Settings};
use crate::domain::{DeviceId, Jti};
use crate::metrics::Metrics;
use crate::token::unix_now;

/// Attempts at replacing a pending token before giving up. Each lost race means another
/// request re-onboarded the same device in between and won, so with N requests for one
/// device in flight, none needs more than N attempts.
const ISSUE_ATTEMPTS: usize = 32;
const SCAN_BATCH: usize = 1000;
/// A count may use at most this share of the time between counts, so that counting a
/// million keys never becomes a steady load on Redis.
const COUNT_DUTY_CYCLE: u32 = 10;

#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Address, without credentials.
    pub url: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub db: Option<i64>,
    pub key_prefix: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub health_check_interval: Duration,
    pub count_interval: Duration,
}

impl RedisConfig {
    pub fn from_settings(redis: &RedisSettings) -> Result<Self, crate::config::ConfigError> {
        let password = Settings::read_secret(
            redis.password.as_ref(),
            redis.password_file.as_deref(),
            "redis.password_file",
        )?;
        Ok(Self {
            url: redis.url_without_credentials(),
            username: redis.username.clone(),
            password,
            db: redis.db,
            key_prefix: redis.key_prefix.clone(),
            connect_timeout: Duration::from_millis(redis.connect_timeout_ms),
            response_timeout: Duration::from_millis(redis.response_timeout_ms),
            health_check_interval: Duration::from_millis(redis.health_check_interval_ms),
            count_interval: Duration::from_secs_f64(redis.count_interval_seconds),
        })
    }
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

    fn nonce(&self, device: &DeviceId, nonce: u64) -> String {
        format!("{}nonce:{{{device}}}:{nonce}", self.prefix)
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
    conn: ConnectionManager,
}

thread_local! {
    static LOCAL_CONNECTIONS: RefCell<Vec<LocalConnection>> = const { RefCell::new(Vec::new()) };
}

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(0);

pub struct RedisStore {
    id: u64,
    /// Bumped to make every thread open a fresh connection.
    generation: AtomicU64,
    client: redis::Client,
    manager_config: ConnectionManagerConfig,
    keys: Keys,
    issue_script: Script,
    consume_script: Script,
    connected: AtomicBool,
    /// Whether Redis was ever up: the first connection is not a switch back from memory.
    ever_connected: AtomicBool,
    counts: Mutex<Option<RedisCounts>>,
    config: RedisConfig,
    metrics: Arc<Metrics>,
}

impl RedisStore {
    /// Sets up the connection (lazily: a Redis that is down now does not stop start-up),
    /// pings once to learn the state, and starts the health and count loops. The loops
    /// end when the store is dropped.
    pub async fn connect(
        config: RedisConfig,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Self>, Vec<JoinHandle<()>>), RedisError> {
        let mut info = config.url.as_str().into_connection_info()?;
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
        let client = redis::Client::open(info)?;
        // One quick retry per request at most: the health loop does the patient
        // reconnecting, so a request never waits long on a Redis that is gone.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(100));
        let store = Arc::new(Self {
            id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            client,
            manager_config,
            keys: Keys {
                prefix: config.key_prefix.clone(),
            },
            issue_script: Script::new(include_str!("issue.lua")),
            consume_script: Script::new(include_str!("consume.lua")),
            connected: AtomicBool::new(false),
            ever_connected: AtomicBool::new(false),
            counts: Mutex::new(None),
            config,
            metrics,
        });
        match store.ping().await {
            Ok(()) => store.set_connected(true, None),
            Err(e) => tracing::warn!(
                url = %store.config.url,
                error = %e,
                "redis is not reachable at start-up; will keep trying"
            ),
        }
        let tasks = vec![
            tokio::spawn(health_loop(Arc::downgrade(&store))),
            tokio::spawn(count_loop(Arc::downgrade(&store))),
        ];
        Ok((store, tasks))
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// This thread's connection (made lazily: it connects on first use).
    fn conn(&self) -> ConnectionManager {
        let generation = self.generation.load(Ordering::Relaxed);
        LOCAL_CONNECTIONS.with_borrow_mut(|local| {
            if let Some(c) = local
                .iter()
                .find(|c| c.store == self.id && c.generation == generation)
            {
                return c.conn.clone();
            }
            local.retain(|c| c.store != self.id);
            let conn = ConnectionManager::new_lazy_with_config(
                self.client.clone(),
                self.manager_config.clone(),
            )
            .expect("a lazy connection manager needs only a tokio runtime");
            local.push(LocalConnection {
                store: self.id,
                generation,
                conn: conn.clone(),
            });
            conn
        })
    }

    fn set_connected(&self, up: bool, error: Option<&RedisError>) {
        if self.connected.swap(up, Ordering::Relaxed) != up {
            if self.ever_connected.swap(true, Ordering::Relaxed) {
                self.metrics.storage_fallback_switches.inc();
            }
            if up {
                // The workers' connections may still hold the failure from before; the
                // first request on each would fail again. Give every thread a new one.
                self.renew_connections();
                tracing::info!(url = %self.config.url, "redis connection is up");
            } else {
                tracing::warn!(
                    url = %self.config.url,
                    error = error.map(tracing::field::display),
                    "redis connection lost"
                );
            }
        }
    }

    /// Maps a Redis error to the store's, noting a lost connection on the way.
    fn fail(&self, e: RedisError) -> StoreError {
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
            self.set_connected(false, Some(&e));
            StoreError::Unreachable(e.to_string())
        } else {
            StoreError::Failed(e.to_string())
        }
    }

    async fn ping(&self) -> Result<(), RedisError> {
        let mut conn = self.conn();
        redis::cmd("PING").query_async::<()>(&mut conn).await
    }

    /// Fresh connections everywhere, for errors the connection manager does not recover
    /// from by itself (it reconnects on I/O errors only, not, say, after a failed AUTH).
    fn renew_connections(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    fn record(device: &DeviceId, jti: &str, expires_at: u64) -> String {
        serde_json::json!({ "deviceId": device.as_str(), "jti": jti, "expiresAt": expires_at })
            .to_string()
    }

    async fn try_consume(&self, device: &DeviceId, jti: &str) -> Result<bool, StoreError> {
        let consumed: i64 = self
            .consume_script
            .key(self.keys.device(device))
            .key(self.keys.token(device, jti))
            .arg(jti)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(consumed == 1)
    }

    /// The device's pending token and its remaining TTL, if it has one.
    pub async fn pending(
        &self,
        device: &DeviceId,
    ) -> Result<Option<(String, Duration)>, StoreError> {
        let (jti, ttl_ms): (Option<String>, i64) = redis::pipe()
            .get(self.keys.device(device))
            .pttl(self.keys.device(device))
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(jti.map(|jti| (jti, Duration::from_millis(ttl_ms.max(0) as u64))))
    }

    /// Counts our keys with SCAN: incremental, so Redis keeps serving everyone else
    /// between batches, however many keys there are.
    async fn count(&self) -> Option<Duration> {
        let started = Instant::now();
        let pattern = self.keys.scan_pattern();
        let (token_prefix, device_prefix) = (self.keys.token_prefix(), self.keys.device_prefix());
        let mut conn = self.conn();
        let (mut tokens, mut devices, mut cursor) = (0u64, 0u64, 0u64);
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
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let took = started.elapsed();
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()) = Some(RedisCounts {
            tokens,
            devices,
            counted_at: SystemTime::now(),
            took,
        });
        Some(took)
    }
}

async fn health_loop(store: Weak<RedisStore>) {
    let mut failures = 0u32;
    loop {
        let Some(interval) = store.upgrade().map(|s| s.config.health_check_interval) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(store) = store.upgrade() else { return };
        match store.ping().await {
            Ok(()) => {
                failures = 0;
                store.set_connected(true, None);
            }
            Err(e) => {
                failures += 1;
                store.set_connected(false, Some(&e));
                if !e.is_io_error() && failures.is_multiple_of(5) {
                    store.renew_connections();
                }
            }
        }
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
    async fn issue(&self, device: &DeviceId, jti: &Jti, ttl: Duration) -> Result<(), StoreError> {
        let jti = jti.to_string();
        let ttl_secs = ttl.as_secs().max(1);
        let record = Self::record(device, &jti, unix_now() + ttl_secs);
        let (device_key, token_key) = (self.keys.device(device), self.keys.token(device, &jti));
        // Most devices have no pending token: one round trip. Replacing one takes two.
        let mut seen = String::new();
        for _ in 0..ISSUE_ATTEMPTS {
            let mut invocation = self.issue_script.key(&device_key);
            invocation.key(&token_key);
            if !seen.is_empty() {
                invocation.key(self.keys.token(device, &seen));
            }
            let (issued, pending): (i64, String) = invocation
                .arg(&jti)
                .arg(ttl_secs)
                .arg(&record)
                .arg(&seen)
                .invoke_async(&mut self.conn())
                .await
                .map_err(|e| self.fail(e))?;
            if issued == 1 {
                return Ok(());
            }
            seen = pending;
        }
        Err(StoreError::Failed(format!(
            "device {device} is being onboarded by many requests at once"
        )))
    }

    async fn consume(&self, device: &DeviceId, jti: &Jti) -> Result<ConsumeOutcome, StoreError> {
        Ok(if self.try_consume(device, &jti.to_string()).await? {
            ConsumeOutcome::Consumed
        } else {
            ConsumeOutcome::NotFound
        })
    }

    async fn revoke_device(&self, device: &DeviceId) -> Result<bool, StoreError> {
        for _ in 0..ISSUE_ATTEMPTS {
            let Some((jti, _)) = self.pending(device).await? else {
                return Ok(false);
            };
            if self.try_consume(device, &jti).await? {
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
        nonce: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(self.keys.nonce(device, nonce))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(set.is_some())
    }

    async fn stats(&self) -> StoreStats {
        StoreStats {
            mode: StorageMode::Redis,
            redis: Some(RedisStats {
                connected: self.is_connected(),
                counts: *self.counts.lock().unwrap_or_else(|p| p.into_inner()),
            }),
            memory_tokens: 0,
        }
    }
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
        let glob = Keys {
            prefix: "a*b[".into(),
        };
        assert_eq!(glob.scan_pattern(), "a\\*b\\[*");
    }
}

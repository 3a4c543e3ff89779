//! The health loop: each server (or each cluster primary) checked for lost writes before
//! requests may use it, and the epoch moved when writes were lost.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{InfoDict, RedisError};

use super::super::TokenStore;
use super::super::incarnation::{self, Probe, Watch};
use super::super::topology::{self, Primary, RedisConn};
use super::replicas::online_replicas;
use super::{Mode, Persistence, RedisProblem, RedisStore, Shortfall};
use crate::clock::unix_now;
use crate::registry::slots;

/// How often a server's persistence settings are read again (and, for a user without
/// `+config|get`, how often its refused CONFIG GET lands in the ACL log).
const PERSISTENCE_REREAD: Duration = Duration::from_secs(300);

/// How long an instance's marker outlives the instance.
const MARKER_TTL_SECS: u64 = 7 * 24 * 3600;

impl RedisStore {
    pub(super) fn learn(&self, epoch: u64, at: u64) {
        self.epoch.fetch_max(epoch, Ordering::SeqCst);
        self.lost_writes_at.fetch_max(at, Ordering::SeqCst);
    }

    /// Starts a new epoch, here and, for every other instance, in Redis. A first contact
    /// (no instance has seen this Redis, and neither has this one) is a Redis that is new
    /// or lost everything: its epoch moves too, but no signed request waits for it.
    pub(super) async fn record_loss(
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
}

/// INFO server, INFO replication, the marker after INCR, EXPIRE, the recorded run_id.
type ProbeReply = (InfoDict, InfoDict, u64, (), Option<String>);

/// The health loop's checks: one for the server (standalone, or Sentinel's primary), or
/// one per shard of a cluster, by the shard's first slot (which a failover keeps, so
/// that a promoted replica is compared with the primary it replaced).
pub(super) enum Health {
    Single(HealthCheck),
    Cluster(std::collections::BTreeMap<u16, HealthCheck>),
}

impl Health {
    pub(super) fn for_mode(mode: &Mode) -> Self {
        match mode {
            Mode::Cluster(_) => Health::Cluster(Default::default()),
            _ => Health::Single(HealthCheck::default()),
        }
    }

    /// Checks Redis for lost writes, then lets requests use it. A failure marks it
    /// unreachable.
    pub(super) async fn run(&mut self, store: &RedisStore) -> Result<(), RedisError> {
        let result = match self {
            Health::Single(check) => check.check_single(store).await.map(|online| {
                let primary = match &store.mode {
                    Mode::Sentinel(sentinels) => sentinels
                        .named
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone(),
                    _ => None,
                };
                vec![Shortfall {
                    primary: primary.unwrap_or_else(|| store.config.display_url.clone()),
                    online,
                    wanted: store.config.wait_replicas,
                    ranges: Vec::new(),
                }]
            }),
            Health::Cluster(checks) => check_cluster(checks, store).await,
        };
        let weakest = match self {
            Health::Single(check) => check.persistence,
            Health::Cluster(checks) => checks.values().filter_map(|c| c.persistence).min(),
        };
        store.note_persistence(weakest);
        let result = result.map(|checked| {
            let wanted = store.config.wait_replicas;
            store.note_shortfalls(checked.into_iter().filter(|s| s.online < wanted).collect());
        });
        match &result {
            Ok(()) => {
                store.problems.health_checked(None);
                store.set_connected(true, None);
            }
            Err(e) => {
                let problem = RedisProblem::of(e, store.config.username.as_deref());
                store.problems.health_checked(Some(problem));
                store.set_connected(false, Some(e));
            }
        }
        result
    }
}

/// Every primary of the cluster, each on its own connection: all must pass. Answers each
/// primary with its online replicas.
async fn check_cluster(
    checks: &mut std::collections::BTreeMap<u16, HealthCheck>,
    store: &RedisStore,
) -> Result<Vec<Shortfall>, RedisError> {
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
    let mut checked = Vec::with_capacity(found.len());
    for primary in &found {
        let check = checks.entry(primary.first_slot).or_default();
        if check.node.as_ref() != Some(primary) {
            // A failover (or the first look): a connection to the new primary.
            check.conn = None;
            check.node = Some(primary.clone());
        }
        let mut shared = RedisConn::Cluster(cluster.clone());
        match check.check(store, &mut shared).await {
            Ok(online) => {
                answering += 1;
                checked.push(Shortfall {
                    primary: format!("{}:{}", primary.host, primary.port),
                    online,
                    wanted: store.config.wait_replicas,
                    ranges: primary.ranges.clone(),
                });
            }
            Err(e) => {
                check.conn = None;
                failure.get_or_insert(e);
            }
        }
    }
    store.answering.store(answering, Ordering::Relaxed);
    // A shard that is gone (slots moved) no longer counts, in the weakest persistence
    // among others.
    checks.retain(|first_slot, _| found.iter().any(|p| p.first_slot == *first_slot));
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
        None => Ok(checked),
    }
}

/// One server's check: its own connection, and what it saw last time.
#[derive(Default)]
pub(super) struct HealthCheck {
    conn: Option<MultiplexedConnection>,
    watch: Watch,
    /// The cluster primary checked (None: the one server, or Sentinel's primary).
    node: Option<Primary>,
    /// What the server keeps across a restart, and when that was read.
    persistence: Option<Persistence>,
    persistence_read: Option<Instant>,
}

impl HealthCheck {
    pub(super) async fn check_single(&mut self, store: &RedisStore) -> Result<u32, RedisError> {
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

    pub(super) async fn connection(
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
    pub(super) fn shard(&self) -> Option<&'static str> {
        self.node.as_ref().map(|n| slots::tag_for(n.first_slot))
    }

    /// `shared` reaches the keys every instance shares (`<prefix>lost-writes`), which on
    /// a cluster live on some other node. Answers the server's online replicas.
    pub(super) async fn check(
        &mut self,
        store: &RedisStore,
        shared: &mut RedisConn,
    ) -> Result<u32, RedisError> {
        let keys = &store.keys;
        let shard = self.shard();
        let marker = keys.marker(&store.instance, shard);
        let incarnation_key = keys.incarnation(shard);
        // A handle to the same connection: the watch is updated below.
        let conn = &mut self.connection(store).await?.clone();
        let (info, replication, marker_value, (), recorded_run_id): ProbeReply = redis::pipe()
            .cmd("INFO")
            .arg("server")
            .cmd("INFO")
            .arg("replication")
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
        let online = online_replicas(&replication);
        if waited && online >= store.config.wait_replicas {
            // The marker reaches the replicas too, or a failover would look like a loss.
            // Best effort: a replica that does not answer in time only makes a later
            // failover refuse tokens, never accept one twice. Skipped when too few are
            // online: it could only wait out its timeout.
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
        // CONFIG SET can change it at any time; a minute late is soon enough to warn.
        if changed
            || self
                .persistence_read
                .is_none_or(|at| at.elapsed() > PERSISTENCE_REREAD)
        {
            // Never a reason to stop using Redis: a reply that cannot be read is unknown.
            self.persistence = Some(
                Persistence::read(conn)
                    .await
                    .unwrap_or(Persistence::Unknown),
            );
            self.persistence_read = Some(Instant::now());
        }
        self.watch.remember(&probe);
        if changed && self.node.is_none() {
            *store
                .verified_run_id
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(probe.run_id);
            store.renew_connections();
        }
        Ok(online)
    }
}

pub(super) async fn health_loop(store: Weak<RedisStore>, mut health: Health) {
    loop {
        let Some(interval) = store.upgrade().map(|s| s.config.health_check_interval) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(store) = store.upgrade() else { return };
        let _ = health.run(&store).await;
    }
}

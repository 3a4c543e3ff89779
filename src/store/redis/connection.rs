//! The connections requests use: each thread's own to the one server (or Sentinel's
//! primary), opened only to the Redis process the health loop checked; each thread's own
//! cluster connection; and how a failed command marks Redis lost.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::thread::LocalKey;

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{InfoDict, RedisError};

use super::super::StoreError;
use super::super::incarnation;
use super::super::topology::RedisConn;
use super::{Mode, RedisProblem, RedisStore};

/// One of this thread's connections: one per store (a process has one store; tests have
/// many), of the store's current generation.
struct Local<C> {
    store: u64,
    generation: u64,
    conn: C,
}

type Locals<C> = LocalKey<RefCell<Vec<Local<C>>>>;

thread_local! {
    static LOCAL_CONNECTIONS: RefCell<Vec<Local<MultiplexedConnection>>> = const { RefCell::new(Vec::new()) };
    /// Cluster connections are per thread too. One connection shared by every thread ran
    /// its routing task on the thread that made it, so each request crossed threads
    /// twice: on a 3+3 cluster that cost about 60 µs of server CPU per device more than
    /// one Redis (BENCHMARKS.md, issue 25).
    static LOCAL_CLUSTERS: RefCell<Vec<Local<ClusterConnection>>> = const { RefCell::new(Vec::new()) };
}

/// This thread's connection for `store` in `generation`, if it has one.
fn cached<C: Clone + 'static>(
    locals: &'static Locals<C>,
    store: u64,
    generation: u64,
) -> Option<C> {
    locals.with_borrow(|local| {
        local
            .iter()
            .find(|c| c.store == store && c.generation == generation)
            .map(|c| c.conn.clone())
    })
}

/// Keeps `conn` as this thread's connection for `store`, in place of an older one.
fn keep<C: 'static>(locals: &'static Locals<C>, store: u64, generation: u64, conn: C) {
    locals.with_borrow_mut(|local| {
        local.retain(|c| c.store != store);
        local.push(Local {
            store,
            generation,
            conn,
        });
    });
}

impl RedisStore {
    /// A new connection to the one server (standalone), or to the primary Sentinel names.
    pub(super) async fn open(&self) -> Result<MultiplexedConnection, RedisError> {
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

    /// This thread's cluster connection of this generation, made when there is none.
    pub(super) async fn cluster_conn(&self) -> Result<ClusterConnection, RedisError> {
        let Mode::Cluster(cluster) = &self.mode else {
            return Err(RedisError::from((
                redis::ErrorKind::Client,
                "not a cluster",
            )));
        };
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some(conn) = cached(&LOCAL_CLUSTERS, self.id, generation) {
            return Ok(conn);
        }
        let made = cluster.client.get_async_connection().await?;
        keep(&LOCAL_CLUSTERS, self.id, generation, made.clone());
        Ok(made)
    }

    /// The connection a request uses: on a cluster, the cluster connection (once the
    /// health check has passed every primary); otherwise this thread's own.
    pub(super) async fn conn(&self) -> Result<RedisConn, StoreError> {
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
    pub(super) async fn single_conn(&self) -> Result<MultiplexedConnection, StoreError> {
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some(conn) = cached(&LOCAL_CONNECTIONS, self.id, generation) {
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
        keep(&LOCAL_CONNECTIONS, self.id, generation, conn.clone());
        Ok(conn)
    }

    pub(super) fn verified_run_id(&self) -> Option<String> {
        self.verified_run_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn set_connected(&self, up: bool, error: Option<&RedisError>) {
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
    pub(super) fn fail(&self, e: RedisError) -> StoreError {
        // One slow cluster node is not a lost cluster: its requests fail, the others'
        // go on, and the health check judges each primary. (A timeout keeps the
        // connection, so no unchecked Redis process can be reached through it.)
        if matches!(self.mode, Mode::Cluster(_)) && e.is_timeout() && !e.is_connection_dropped() {
            return StoreError::Unreachable(e.to_string());
        }
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
            self.problems
                .request_failed(RedisProblem::of(&e, self.config.username.as_deref()));
            StoreError::Failed(e.to_string())
        }
    }

    /// Fresh connections everywhere: the old ones may be broken, or lead to a Redis
    /// process that is not the one checked.
    pub(super) fn renew_connections(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

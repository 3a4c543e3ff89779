//! `redis.wait_replicas`: a write counts once that many replicas have it, so that a
//! failover cannot bring back a used token. `WAIT` blocks the connection it runs on, and
//! on a multiplexed connection every request behind it: a shard left without replicas
//! (its primary died and the replica promoted has none of its own) would make each of
//! its requests wait out `redis.wait_timeout_ms`, pile up behind each other and time
//! out, and a timeout used to take the whole store down with it. So the health check
//! counts each primary's online replicas, and a request whose keys live on a primary with
//! too few is refused at once, before anything is written, with the primary named;
//! the other shards' requests never meet a `WAIT` that cannot succeed.

use redis::InfoDict;

use super::super::StoreError;
use super::super::topology::RedisConn;
use super::RedisStore;
use crate::registry::slots;

/// A primary with fewer online replicas than `redis.wait_replicas`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// Where it is, as logs show it (no credentials).
    pub primary: String,
    /// Replicas online at the last check.
    pub online: u32,
    /// What `redis.wait_replicas` asks for.
    pub wanted: u32,
    /// The slots it serves on a cluster (inclusive ranges); empty: every key.
    pub ranges: Vec<(u16, u16)>,
}

impl Shortfall {
    fn covers(&self, slot: u16) -> bool {
        self.ranges.is_empty()
            || self
                .ranges
                .iter()
                .any(|(lo, hi)| (*lo..=*hi).contains(&slot))
    }
}

/// Replicas that are online (synced and streaming), from `INFO replication`.
pub(super) fn online_replicas(info: &InfoDict) -> u32 {
    let connected = info.get::<u32>("connected_slaves").unwrap_or(0);
    (0..connected)
        .filter(|n| {
            info.get::<String>(&format!("slave{n}"))
                .is_some_and(|line| line.split(',').any(|kv| kv == "state=online"))
        })
        .count() as u32
}

impl RedisStore {
    /// What the health check found: the primaries short of replicas.
    pub(super) fn note_shortfalls(&self, found: Vec<Shortfall>) {
        let mut shortfalls = self.shortfalls.lock().unwrap_or_else(|p| p.into_inner());
        for new in found.iter().filter(|f| !shortfalls.contains(f)) {
            tracing::warn!(
                primary = %new.primary,
                online = new.online,
                wanted = self.config.wait_replicas,
                "a redis primary has fewer replicas than redis.wait_replicas: its keys' writes are refused until one is back"
            );
        }
        *shortfalls = found;
    }

    /// The primaries short of replicas at the last check.
    pub fn shortfalls(&self) -> Vec<Shortfall> {
        if self.config.wait_replicas == 0 {
            return Vec::new();
        }
        self.shortfalls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Refuses at once a write whose keys live on a primary that the last health check
    /// found short of replicas: its `WAIT` could not succeed.
    pub(super) fn replicas_ready(&self, keys: &[&str]) -> Result<(), StoreError> {
        if self.config.wait_replicas == 0 {
            return Ok(());
        }
        let shortfalls = self.shortfalls.lock().unwrap_or_else(|p| p.into_inner());
        let short = keys.iter().find_map(|key| {
            let slot = slots::key_slot(key);
            shortfalls.iter().find(|s| s.covers(slot))
        });
        match short {
            None => Ok(()),
            Some(short) => Err(StoreError::ReplicasMissing(format!(
                "the Redis primary {} holding this device's keys has {} of the {} replicas \
                 redis.wait_replicas asks for",
                short.primary, short.online, short.wanted
            ))),
        }
    }

    /// With `redis.wait_replicas`, a consume (or a signed request's first use) counts
    /// only once that many replicas have it: a failover then cannot bring it back.
    /// Otherwise the request fails (503); the write stays on the primary, so the device
    /// onboards (or signs) again.
    /// `written` names the keys written: on a cluster, the primary of each one's slot
    /// waits for its own replicas.
    pub(super) async fn wait_for_replicas(
        &self,
        conn: &mut RedisConn,
        written: &[&str],
    ) -> Result<(), StoreError> {
        let wanted = self.config.wait_replicas;
        if wanted == 0 {
            return Ok(());
        }
        // A shard found short since the request began: no WAIT that cannot succeed.
        self.replicas_ready(written)?;
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
            return Err(StoreError::ReplicasMissing(format!(
                "{acknowledged} of the {wanted} replicas redis.wait_replicas asks for \
                 acknowledged the write within redis.wait_timeout_ms"
            )));
        }
        Ok(())
    }
}

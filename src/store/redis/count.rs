//! Counting pending tokens and devices with SCAN for `/health`, at a duty cycle that
//! never makes counting a steady load on Redis.

use std::collections::HashSet;
use std::sync::Weak;
use std::time::{Duration, Instant, SystemTime};

use super::super::RedisCounts;
use super::super::topology::RedisConn;
use super::keys::device_in;
use super::{Mode, RedisStore, SCAN_BATCH};

/// A count may use at most a twentieth of the time between counts, so that counting a
/// million keys never becomes a steady load on Redis: with the default interval of a
/// second, a fleet whose count takes 50 ms is counted every second, one whose count
/// takes 3 s every minute.
const COUNT_DUTY_CYCLE: u32 = 20;

impl RedisStore {
    /// Where to SCAN: every primary of a cluster, or the one server.
    pub(super) async fn scan_connections(&self) -> Option<Vec<RedisConn>> {
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
    pub(super) async fn count(&self) -> Option<Duration> {
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
                    } else if let Some(device) = device_in(&key, &blocked_prefix) {
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

pub(super) async fn count_loop(store: Weak<RedisStore>) {
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

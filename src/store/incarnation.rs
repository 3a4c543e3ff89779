//! Noticing that Redis lost writes we made.
//!
//! Redis acknowledges a write before it is safe from every failure: without
//! `appendfsync always`, a restart loses the last second (AOF) or everything since the
//! last snapshot (RDB), and a promoted replica lacks whatever had not been copied to it.
//! A consumed token whose deletion was lost would be accepted a second time, so the
//! server checks every Redis it talks to before trusting it:
//!
//! - Each health check increments this instance's own marker key and reads Redis's
//!   `run_id`. A marker that went back (or vanished) means the data went back.
//! - A `run_id` other than the one recorded in `<prefix>incarnation` means Redis was
//!   restarted, or another server answers now. Unless that server persists every write
//!   before acknowledging it (`appendonly yes` with `appendfsync always`) and was not
//!   promoted from a replica, writes may be lost.
//!
//! Either way a new *epoch* starts, recorded in `<prefix>lost-writes` where every instance
//! reads it: tokens carry the epoch they were issued in, Redis is no longer asked about
//! tokens of an older one, and derived-mode proofs that may have been used before the
//! loss wait until they have aged out. Request
//! connections are only ever opened to the incarnation this check has passed (see
//! `RedisStore::conn`), so no request reaches a restarted Redis before it has run.
//!
//! Both checks rest on Redis losing only a suffix of its writes: an AOF is replayed in
//! order, a snapshot is one moment, a replica applies the primary's stream in order.

use redis::aio::MultiplexedConnection;
use redis::{InfoDict, RedisResult};

/// What one health check read.
#[derive(Debug, Clone)]
pub(super) struct Probe {
    pub run_id: String,
    /// This instance's marker after the increment.
    pub marker: u64,
    /// The `run_id` that some instance last checked and recorded.
    pub recorded_run_id: Option<String>,
}

impl Probe {
    /// A server that no instance has checked yet.
    pub fn is_new_incarnation(&self) -> bool {
        self.recorded_run_id.as_deref() != Some(self.run_id.as_str())
    }
}

/// What this instance saw at its last check.
#[derive(Debug, Default, Clone)]
pub(super) struct Watch {
    pub run_id: Option<String>,
    pub marker: u64,
}

impl Watch {
    /// Why writes may have been lost since the last check, if they may have been.
    /// `durable` is asked only about a new incarnation.
    pub fn assess(&self, probe: &Probe, durable: bool) -> Option<&'static str> {
        if self.run_id.is_some() && probe.marker <= self.marker {
            return Some("this instance's marker key went back: Redis lost data");
        }
        if probe.is_new_incarnation() && !durable {
            return Some(
                "Redis restarted or another server answers, and it does not persist every \
                 write before acknowledging it (appendonly yes, appendfsync always)",
            );
        }
        None
    }

    pub fn remember(&mut self, probe: &Probe) {
        self.run_id = Some(probe.run_id.clone());
        self.marker = probe.marker;
    }
}

/// The server's `run_id`: new at every start of a Redis process.
pub(super) fn run_id(info: &InfoDict) -> Option<String> {
    info.get::<String>("run_id")
}

/// Whether the server kept every write that mattered: it persists each write before
/// acknowledging it (`appendonly yes`, `appendfsync always`), and it was not promoted
/// from a replica, unless `waited` (every consume and signed request was acknowledged
/// by replicas with `WAIT` before it counted, `redis.wait_replicas`). A server that will
/// not say (CONFIG disabled) is taken as not durable.
pub(super) async fn is_durable(
    conn: &mut MultiplexedConnection,
    waited: bool,
) -> RedisResult<bool> {
    let config: RedisResult<(Vec<String>, Vec<String>)> = redis::pipe()
        .cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .cmd("CONFIG")
        .arg("GET")
        .arg("appendfsync")
        .query_async(conn)
        .await;
    let Ok((appendonly, appendfsync)) = config else {
        return Ok(false);
    };
    let replication: InfoDict = redis::cmd("INFO")
        .arg("replication")
        .query_async(conn)
        .await?;
    let promoted = replication
        .get::<i64>("second_repl_offset")
        .is_some_and(|offset| offset != -1);
    Ok(appendonly.get(1).map(String::as_str) == Some("yes")
        && appendfsync.get(1).map(String::as_str) == Some("always")
        && (!promoted || waited))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(run_id: &str, marker: u64, recorded: Option<&str>) -> Probe {
        Probe {
            run_id: run_id.into(),
            marker,
            recorded_run_id: recorded.map(str::to_owned),
        }
    }

    #[test]
    fn the_same_server_moving_forward_lost_nothing() {
        let mut watch = Watch::default();
        watch.remember(&probe("a", 5, Some("a")));
        assert_eq!(watch.assess(&probe("a", 6, Some("a")), false), None);
    }

    #[test]
    fn a_marker_that_went_back_is_a_loss_even_on_a_durable_server() {
        let mut watch = Watch::default();
        watch.remember(&probe("a", 5, Some("a")));
        assert!(watch.assess(&probe("a", 5, Some("a")), true).is_some());
        assert!(watch.assess(&probe("b", 1, Some("a")), true).is_some());
    }

    #[test]
    fn a_restart_is_a_loss_unless_every_write_was_persisted() {
        let mut watch = Watch::default();
        watch.remember(&probe("a", 5, Some("a")));
        assert!(watch.assess(&probe("b", 6, Some("a")), false).is_some());
        assert_eq!(watch.assess(&probe("b", 6, Some("a")), true), None);
    }

    #[test]
    fn a_restart_another_instance_already_checked_needs_no_second_look() {
        let mut watch = Watch::default();
        watch.remember(&probe("a", 5, Some("a")));
        assert_eq!(watch.assess(&probe("b", 6, Some("b")), false), None);
    }
}

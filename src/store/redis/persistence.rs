//! What a Redis keeps across its own restart, read as a locked-down ACL user can:
//! `INFO persistence` (any user with `+info`) says whether the append-only file is on;
//! `CONFIG GET appendfsync` and `CONFIG GET save` (`+config|get`) say how often it is
//! synced and whether snapshots are taken, where the ACL allows them. On a cluster the
//! weakest primary counts.

use redis::aio::MultiplexedConnection;
use redis::{InfoDict, RedisResult};

/// Ordered from what keeps least to what keeps most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Persistence {
    /// No append-only file and no snapshots: a restart loses everything.
    None,
    /// No append-only file, and `CONFIG GET` is not allowed to say whether snapshots
    /// are taken.
    Unknown,
    /// Snapshots only: a restart loses what was written since the last one.
    Snapshots,
    /// An append-only file whose sync policy `CONFIG GET` may not read.
    Aof,
    /// `appendfsync no`: the kernel decides when (typically within 30 s).
    AofNoFsync,
    /// `appendfsync everysec`: a crash loses about the last second.
    AofEverySecond,
    /// `appendfsync always`: nothing acknowledged is lost to a restart.
    AofAlways,
}

impl Persistence {
    /// The name `/health` shows (`redis.persistence`).
    pub fn as_str(self) -> &'static str {
        match self {
            Persistence::None => "none",
            Persistence::Unknown => "unknown",
            Persistence::Snapshots => "snapshots",
            Persistence::Aof => "aof",
            Persistence::AofNoFsync => "aof-no-fsync",
            Persistence::AofEverySecond => "everysec",
            Persistence::AofAlways => "always",
        }
    }

    /// What a Redis restart loses, for the start-up warning; `None` when it loses at
    /// most about a second.
    pub fn loss(self) -> Option<&'static str> {
        match self {
            Persistence::None => Some(
                "nothing persists (appendonly no, save \"\"): a restart loses every token, \
                 certificate record and block",
            ),
            Persistence::Unknown => Some(
                "appendonly is off and CONFIG GET is not allowed to say whether snapshots \
                 are taken: a restart may lose every token, certificate record and block",
            ),
            Persistence::Snapshots => Some(
                "only snapshots (appendonly no): a restart loses what was written since \
                 the last one",
            ),
            Persistence::AofNoFsync => Some(
                "appendfsync no: a crash loses what the kernel had not yet written (up to \
                 about 30 s)",
            ),
            Persistence::Aof | Persistence::AofEverySecond | Persistence::AofAlways => None,
        }
    }

    /// Reads the server's settings.
    pub async fn read(conn: &mut MultiplexedConnection) -> RedisResult<Self> {
        let info: InfoDict = redis::cmd("INFO")
            .arg("persistence")
            .query_async(conn)
            .await?;
        let aof = info.get::<i64>("aof_enabled") == Some(1);
        // A user without +config|get gets NOPERM here: the INFO answer stands alone.
        let setting = |name: &'static str| {
            let mut conn = conn.clone();
            async move {
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg(name)
                    .query_async::<Vec<String>>(&mut conn)
                    .await
                    .ok()
                    .and_then(|pair| pair.into_iter().nth(1))
            }
        };
        Ok(if aof {
            match setting("appendfsync").await.as_deref() {
                Some("always") => Persistence::AofAlways,
                Some("everysec") => Persistence::AofEverySecond,
                Some("no") => Persistence::AofNoFsync,
                _ => Persistence::Aof,
            }
        } else {
            match setting("save").await {
                Some(save) if save.trim().is_empty() => Persistence::None,
                Some(_) => Persistence::Snapshots,
                None => Persistence::Unknown,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weakest_primary_counts() {
        let found = [
            Persistence::AofAlways,
            Persistence::Snapshots,
            Persistence::Aof,
        ];
        assert_eq!(found.iter().min(), Some(&Persistence::Snapshots));
        assert!(Persistence::None < Persistence::Unknown);
        assert!(Persistence::AofNoFsync.loss().is_some());
        assert!(Persistence::AofEverySecond.loss().is_none());
    }
}

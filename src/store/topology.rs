//! The three ways to reach Redis: one server, a primary found through Sentinel, or a
//! Cluster; and the connection requests use in each.
//!
//! Standalone and Sentinel requests run on plain multiplexed connections, opened only to
//! the process the health check verified (Sentinel names the primary; after a failover
//! it names the new one, which is checked before use). On a Cluster, requests run on the
//! redis crate's cluster connection, which follows the slots by itself; the health check
//! probes every primary on its own connection.

use std::collections::BTreeMap;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo,
    Pipeline, RedisError, RedisFuture, RedisResult, TlsCertificates, Value,
};

use crate::config::SentinelAddress;
use crate::secret::Secret;

/// A connection requests use: to one server, or to the cluster.
#[derive(Clone)]
pub(super) enum RedisConn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// How to open connections to a node given by address, with the configured credentials.
#[derive(Clone)]
pub(super) struct NodeAccess {
    pub tls: bool,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub db: Option<i64>,
    pub config: AsyncConnectionConfig,
    /// A private CA and a client identity for TLS (`redis.tls_*_file`).
    pub certificates: Option<TlsCertificates>,
}

/// A client for `info`, with the configured TLS files when it speaks TLS.
pub(super) fn client(
    info: ConnectionInfo,
    certificates: Option<&TlsCertificates>,
) -> RedisResult<Client> {
    match certificates {
        Some(certificates) if matches!(info.addr(), ConnectionAddr::TcpTls { .. }) => {
            Client::build_with_tls(info, certificates.clone())
        }
        _ => Client::open(info),
    }
}

impl NodeAccess {
    pub fn info(&self, host: &str, port: u16) -> RedisResult<ConnectionInfo> {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let info = format!("{scheme}://{host}:{port}").into_connection_info()?;
        let mut settings = info.redis_settings().clone();
        if let Some(username) = &self.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password.expose());
        }
        if let Some(db) = self.db {
            settings = settings.set_db(db);
        }
        Ok(info.set_redis_settings(settings))
    }

    pub async fn open(&self, host: &str, port: u16) -> RedisResult<MultiplexedConnection> {
        client(self.info(host, port)?, self.certificates.as_ref())?
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
    }
}

/// Where the primary is, by asking the sentinels in turn. Each sentinel is reached with
/// TLS when the mode uses TLS (or its entry says `rediss://`), and with its own password
/// or else `redis.sentinel_password`.
pub(super) struct Sentinels {
    pub addresses: Vec<SentinelAddress>,
    pub master: String,
    pub password: Option<Secret>,
    /// The mode's TLS, timeouts and TLS files (its credentials are the primary's).
    pub access: NodeAccess,
    /// The primary the sentinels named last, `host:port`.
    pub named: std::sync::Mutex<Option<String>>,
}

impl Sentinels {
    pub fn new(
        addresses: &[SentinelAddress],
        master: String,
        password: Option<Secret>,
        access: NodeAccess,
    ) -> Self {
        Self {
            addresses: addresses.to_vec(),
            master,
            password,
            access,
            named: std::sync::Mutex::new(None),
        }
    }

    /// How to reach `sentinel`: its scheme and credentials, never logged.
    fn info(&self, sentinel: &SentinelAddress) -> RedisResult<ConnectionInfo> {
        let scheme = if self.access.tls || sentinel.tls {
            "rediss"
        } else {
            "redis"
        };
        let info =
            format!("{scheme}://{}:{}", sentinel.host, sentinel.port).into_connection_info()?;
        let mut settings = info.redis_settings().clone();
        if let Some(username) = &sentinel.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = sentinel.password.as_ref().or(self.password.as_ref()) {
            settings = settings.set_password(password.expose());
        }
        Ok(info.set_redis_settings(settings))
    }

    /// The primary's address, from the first sentinel that knows it.
    pub async fn primary(&self) -> RedisResult<(String, u16)> {
        let mut last = None;
        for sentinel in &self.addresses {
            match self.ask(sentinel).await {
                Ok(Some(primary)) => {
                    *self.named.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(format!("{}:{}", primary.0, primary.1));
                    return Ok(primary);
                }
                Ok(None) => {}
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            RedisError::from((
                redis::ErrorKind::Io,
                "no sentinel knows the primary",
                self.master.clone(),
            ))
        }))
    }

    async fn ask(&self, sentinel: &SentinelAddress) -> RedisResult<Option<(String, u16)>> {
        let mut conn = client(self.info(sentinel)?, self.access.certificates.as_ref())?
            .get_multiplexed_async_connection_with_config(&self.access.config)
            .await?;
        let answer: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master)
            .query_async(&mut conn)
            .await?;
        Ok(answer)
    }
}

/// A primary of the cluster: its address and the first slot it serves (which names its
/// shard: it survives a failover).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Primary {
    pub host: String,
    pub port: u16,
    pub first_slot: u16,
    /// Every slot range it serves (inclusive).
    pub ranges: Vec<(u16, u16)>,
}

/// The cluster's primaries, from `CLUSTER SLOTS` (one per shard, by its lowest slot).
pub(super) async fn primaries(conn: &mut ClusterConnection) -> RedisResult<Vec<Primary>> {
    let slots: Vec<Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    let mut by_address: BTreeMap<(String, u16), Vec<(u16, u16)>> = BTreeMap::new();
    for range in slots {
        let Value::Array(parts) = range else { continue };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(node))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            continue;
        };
        let host = match node.first() {
            Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
            Some(Value::SimpleString(host)) => host.clone(),
            _ => continue,
        };
        let Some(Value::Int(port)) = node.get(1) else {
            continue;
        };
        by_address
            .entry((host, *port as u16))
            .or_default()
            .push((*start as u16, *end as u16));
    }
    let mut primaries: Vec<Primary> = by_address
        .into_iter()
        .map(|((host, port), mut ranges)| {
            ranges.sort_unstable();
            Primary {
                host,
                port,
                first_slot: ranges.first().map_or(u16::MAX, |r| r.0),
                ranges,
            }
        })
        .collect();
    primaries.sort_by_key(|p| p.first_slot);
    Ok(primaries)
}

/// The cluster client: seed nodes, credentials, and the timeouts of a single node.
pub(super) fn cluster_client(
    nodes: &[String],
    access: &NodeAccess,
    connect_timeout: std::time::Duration,
    response_timeout: std::time::Duration,
) -> RedisResult<ClusterClient> {
    let mut builder = ClusterClient::builder(nodes.iter().map(String::as_str))
        .connection_timeout(connect_timeout)
        .response_timeout(response_timeout)
        // Enough to follow a MOVED after a failover; a request never waits one out (it
        // answers 503 and the device retries).
        .retries(3);
    if let Some(username) = &access.username {
        builder = builder.username(username);
    }
    if let Some(password) = &access.password {
        builder = builder.password(password.expose());
    }
    if let Some(certificates) = &access.certificates {
        builder = builder.certs(certificates.clone());
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinels_are_reached_with_the_modes_tls_and_their_own_password() {
        let plain = SentinelAddress::parse("10.0.0.2:26379").unwrap();
        let own = SentinelAddress::parse("rediss://:own@10.0.0.3:26380").unwrap();
        let access = |tls| NodeAccess {
            tls,
            username: None,
            password: None,
            db: None,
            config: AsyncConnectionConfig::new(),
            certificates: None,
        };
        let with_tls = Sentinels::new(
            &[plain.clone(), own.clone()],
            "m".into(),
            Some(Secret::new("shared")),
            access(true),
        );
        for sentinel in [&plain, &own] {
            let info = with_tls.info(sentinel).unwrap();
            assert!(
                matches!(info.addr(), ConnectionAddr::TcpTls { .. }),
                "{info:?}"
            );
        }
        assert_eq!(
            with_tls.info(&plain).unwrap().redis_settings().password(),
            Some("shared")
        );
        assert_eq!(
            with_tls.info(&own).unwrap().redis_settings().password(),
            Some("own")
        );
        let without = Sentinels::new(
            &[plain.clone(), own.clone()],
            "m".into(),
            None,
            access(false),
        );
        assert!(matches!(
            without.info(&plain).unwrap().addr(),
            ConnectionAddr::Tcp(..)
        ));
        assert!(matches!(
            without.info(&own).unwrap().addr(),
            ConnectionAddr::TcpTls { .. }
        ));
        assert_eq!(
            without.info(&plain).unwrap().redis_settings().password(),
            None
        );
    }
}

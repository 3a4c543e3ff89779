//! Redis topologies made of private `redis-server` processes: a Cluster (primaries with
//! one replica each) and a primary with a replica watched by three sentinels. Every
//! process stops when the value is dropped, also when an assertion failed.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::{FSYNC_ALWAYS, RedisServer, free_cluster_port, free_port};

pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// `primaries` primaries with one replica each, slots spread by redis-cli.
    pub fn start(primaries: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..primaries * 2)
            .map(|_| {
                let mut args = vec![
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    // A replica takes over however far behind it is: the server is the one
                    // to notice lost writes.
                    "--cluster-replica-validity-factor",
                    "0",
                ];
                args.extend_from_slice(FSYNC_ALWAYS);
                RedisServer::start_on(free_cluster_port, &args)
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("redis-cli is installed");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        let cluster = Self { nodes };
        cluster.wait_until_ok(Duration::from_secs(30));
        cluster
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Until every running node says the cluster is ok and knows the same primaries.
    pub fn wait_until_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ok = self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                let info: Result<String, _> =
                    redis::cmd("CLUSTER").arg("INFO").query(&mut n.connection());
                info.is_ok_and(|i| i.contains("cluster_state:ok"))
            });
            if ok && self.primaries().len() * 2 >= self.running() && self.replicas_online() {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster never became ok");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every primary that has a replica left sees it online (synced).
    fn replicas_online(&self) -> bool {
        let running = self.running();
        let primaries = self.primaries();
        let with_replica = running - primaries.len();
        let online = primaries
            .iter()
            .filter(|port| {
                let node = self.nodes.iter().find(|n| n.port() == **port);
                node.is_some_and(|n| {
                    n.cmd::<String>(&["INFO", "replication"])
                        .contains("state=online")
                })
            })
            .count();
        online >= with_replica
    }

    fn running(&self) -> usize {
        self.nodes.iter().filter(|n| n.is_running()).count()
    }

    /// The ports of the primaries that serve slots, as a running node sees them.
    pub fn primaries(&self) -> Vec<u16> {
        let node = self.nodes.iter().find(|n| n.is_running()).expect("a node");
        let text: String = node.cmd(&["CLUSTER", "NODES"]);
        text.lines()
            .filter(|l| l.contains("master") && !l.contains("fail") && l.split(' ').count() > 8)
            .filter_map(|l| {
                let address = l.split(' ').nth(1)?;
                address.split(['@', ':']).nth(1)?.parse().ok()
            })
            .collect()
    }

    /// `n` device ids (`<prefix>-0`, `<prefix>-1`, ...) whose keys live on the primary on
    /// `port`, as it answers CLUSTER SLOTS.
    pub fn devices_served_by(&self, port: u16, prefix: &str, n: usize) -> Vec<String> {
        let node = self.nodes.iter().find(|n| n.port() == port).unwrap();
        let slots: Vec<Vec<redis::Value>> = node.cmd(&["CLUSTER", "SLOTS"]);
        let served_here = |range: &Vec<redis::Value>| {
            matches!(&range[2], redis::Value::Array(node)
                if node.get(1) == Some(&redis::Value::Int(i64::from(port))))
        };
        let ranges: Vec<(u16, u16)> = slots
            .iter()
            .filter(|r| served_here(r))
            .filter_map(|r| match (&r[0], &r[1]) {
                (redis::Value::Int(a), redis::Value::Int(b)) => Some((*a as u16, *b as u16)),
                _ => None,
            })
            .collect();
        assert!(!ranges.is_empty(), "{port} serves no slots");
        (0..)
            .map(|i| format!("{prefix}-{i}"))
            .filter(|id| {
                let slot = provisiond::registry::slots::slot_of(id);
                ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .take(n)
            .collect()
    }

    /// The running node on `port`.
    pub fn node(&mut self, port: u16) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .expect("a node on that port")
    }
}

/// One primary, one replica, three sentinels watching them as `mymaster`.
pub struct SentinelSetup {
    pub primary: RedisServer,
    pub replica: RedisServer,
    sentinels: Vec<(u16, Child, tempfile::TempDir)>,
    /// What the sentinels require (`requirepass`), if anything.
    password: Option<String>,
}

pub const MASTER_NAME: &str = "mymaster";

impl SentinelSetup {
    pub async fn start() -> Self {
        Self::start_with_password(None).await
    }

    /// Sentinels that require `password` (of each other too).
    pub async fn start_with_password(password: Option<&str>) -> Self {
        let auth = password.map_or(String::new(), |p| {
            format!("requirepass {p}\nsentinel sentinel-pass {p}\n")
        });
        let primary = RedisServer::start_with(FSYNC_ALWAYS);
        let replica = RedisServer::start_with(FSYNC_ALWAYS);
        replica.replicate(primary.port()).await;
        let sentinels = (0..3)
            .map(|_| {
                let dir = tempfile::tempdir().unwrap();
                let port = free_port();
                let conf = dir.path().join("sentinel.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {}\n\
                         sentinel monitor {MASTER_NAME} 127.0.0.1 {} 2\n\
                         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                         sentinel failover-timeout {MASTER_NAME} 5000\n\
                         sentinel parallel-syncs {MASTER_NAME} 1\n{auth}",
                        dir.path().display(),
                        primary.port()
                    ),
                )
                .unwrap();
                let child = Command::new("redis-server")
                    .arg(&conf)
                    .arg("--sentinel")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server runs sentinels");
                (port, child, dir)
            })
            .collect();
        let setup = Self {
            primary,
            replica,
            sentinels,
            password: password.map(str::to_owned),
        };
        setup.wait_for_sentinels(Duration::from_secs(15));
        setup
    }

    pub fn addresses(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|(port, ..)| format!("127.0.0.1:{port}"))
            .collect()
    }

    /// A sentinel as a URL, with its password when it requires one.
    pub fn url(&self, port: u16) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{port}"),
            None => format!("redis://127.0.0.1:{port}"),
        }
    }

    /// Every sentinel as a URL.
    pub fn urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|(port, ..)| self.url(*port))
            .collect()
    }

    /// The primary's port, as the first sentinel that answers says.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|(port, ..)| {
            let mut conn = redis::Client::open(self.url(*port))
                .ok()?
                .get_connection_with_timeout(Duration::from_millis(300))
                .ok()?;
            let (_, port): (String, u16) = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(MASTER_NAME)
                .query(&mut conn)
                .ok()?;
            Some(port)
        })
    }

    /// Until every sentinel knows the primary, the replica and the other sentinels.
    fn wait_for_sentinels(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ready = self.sentinels.iter().all(|(port, ..)| {
                let answer = redis::Client::open(self.url(*port))
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(300)))
                    .and_then(|mut c| {
                        redis::cmd("SENTINEL")
                            .arg("master")
                            .arg(MASTER_NAME)
                            .query::<std::collections::HashMap<String, String>>(&mut c)
                    });
                answer.is_ok_and(|m| {
                    m.get("num-other-sentinels").map(String::as_str) == Some("2")
                        && m.get("num-slaves").map(String::as_str) == Some("1")
                })
            });
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "the sentinels never agreed");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SentinelSetup {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

//! A private `redis-server` per test, on a free port in a temporary directory, so that a
//! test may kill and restart it without touching anyone else's Redis.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct RedisServer {
    port: u16,
    dir: TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

/// No persistence: a restart comes back empty, or from a dump the test made with SAVE.
pub const NOT_PERSISTENT: &[&str] = &["--save", "", "--appendonly", "no"];
/// Every write on disk before Redis answers it.
pub const FSYNC_ALWAYS: &[&str] = &[
    "--save",
    "",
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
];

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(NOT_PERSISTENT)
    }

    /// A server with these extra arguments (persistence, replication), kept on restarts.
    pub fn start_with(args: &[&str]) -> Self {
        Self::start_on(free_port, args)
    }

    /// A server on a port from `pick`.
    pub fn start_on(pick: fn() -> u16, args: &[&str]) -> Self {
        for _ in 0..5 {
            let mut server = Self {
                port: pick(),
                dir: tempfile::tempdir().expect("temp dir for redis"),
                args: args.iter().map(|a| a.to_string()).collect(),
                child: None,
            };
            if server.launch() {
                return server;
            }
        }
        panic!("could not start redis-server (is it installed?)");
    }

    fn launch(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(&self.args)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                // Exited: most likely the port was taken in the meantime.
                self.child = None;
                return false;
            }
            if self.ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn ping(&self) -> bool {
        let answer = redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
        // A server that wants a password is up too.
        answer.is_ok() || answer.is_err_and(|e| e.to_string().contains("NOAUTH"))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Whether the process is still running (not killed by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server outright (SIGKILL): what a crash looks like to clients.
    pub fn kill(&mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory: empty without persistence, from
    /// its AOF or a dump the test made with SAVE otherwise.
    pub fn restart(&mut self) {
        self.stop();
        assert!(self.launch(), "redis-server did not come back on its port");
    }

    /// SIGSTOP: the process stays, its connections hang, it answers nothing.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis is running").id();
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Makes this server a replica of the one on `port` and waits until it has synced.
    pub async fn replicate(&self, port: u16) {
        let _: () = self.cmd(&["REPLICAOF", "127.0.0.1", &port.to_string()]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self
            .cmd::<String>(&["INFO", "replication"])
            .contains("master_link_status:up")
        {
            assert!(Instant::now() < deadline, "the replica never synced");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The replica says "up" a moment before the primary counts it online (Redis 7
        // puts a diskless-synced replica online at its first ACK). A server started in
        // that moment would find the primary short of replicas and refuse writes until
        // its next health check.
        let online = format!("port={},state=online", self.port);
        let primary = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        let mut primary = primary.get_connection().expect("the primary answers");
        while !redis::cmd("INFO")
            .arg("replication")
            .query::<String>(&mut primary)
            .expect("INFO on the primary")
            .contains(&online)
        {
            assert!(
                Instant::now() < deadline,
                "the primary never counted the replica online"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs one command on this server.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut self.connection()).expect("redis command")
    }

    /// How many certificate records the registry holds (every `certs:` bucket's fields).
    pub fn certificate_records(&self) -> usize {
        let buckets: Vec<String> = self.cmd(&["KEYS", "mqtt-lite:certs:*"]);
        buckets
            .iter()
            .map(|b| self.cmd::<usize>(&["HLEN", b]))
            .sum()
    }

    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .expect("test redis is up")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free port that leaves room for a cluster node's bus port (port + 10000).
pub fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port <= 55535 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

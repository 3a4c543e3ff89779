//! A private Mosquitto broker with a TLS listener that requires a client certificate from
//! our CA, on a free loopback port in a temporary directory; stopped when dropped.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::bin::BIN;
use super::redis::free_port;

pub struct Mosquitto {
    pub port: u16,
    dir: TempDir,
    child: Child,
}

impl Mosquitto {
    /// Starts a broker trusting `ca` (PEM) for client certificates and enforcing `crl`
    /// when given; its own server certificate comes from the CA in `certs_dir`
    /// (`provisiond ca server-cert`).
    pub fn start(certs_dir: &Path, ca: &Path, crl: Option<&Path>) -> Self {
        Self::launch(certs_dir, ca, crl, false, &[])
    }

    /// As [`Mosquitto::start`], with `ca server-cert` run with `env` as well (the CA key's
    /// settings, for a key in a token).
    pub fn start_with(
        certs_dir: &Path,
        ca: &Path,
        crl: Option<&Path>,
        env: &[(&str, String)],
    ) -> Self {
        Self::launch(certs_dir, ca, crl, false, env)
    }

    /// The README's recipe, word for word: the broker drops to user `mosquitto` (so the
    /// server key is given to it), and a `pattern` ACL lets each device use only
    /// `devices/<its id>/#` (`use_identity_as_username`: the certificate's CN).
    pub fn start_as_recipe(certs_dir: &Path, ca: &Path) -> Self {
        Self::launch(certs_dir, ca, None, true, &[])
    }

    fn launch(
        certs_dir: &Path,
        ca: &Path,
        crl: Option<&Path>,
        recipe: bool,
        env: &[(&str, String)],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
        let empty_config = dir.path().join("empty.toml");
        std::fs::write(&empty_config, "").unwrap();
        let made = Command::new(BIN)
            .args(["ca", "server-cert", "--ip", "127.0.0.1", "--config"])
            .arg(&empty_config)
            .arg("--cert-out")
            .arg(&cert)
            .arg("--key-out")
            .arg(&key)
            .env("CERTS_DIR", certs_dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(made.status.success(), "server-cert: {made:?}");
        let port = free_port();
        let user = if recipe {
            // The recipe's `chown mosquitto: server.key`; the temporary directory must
            // let that user in, as /etc/mosquitto does.
            let chowned = Command::new("chown")
                .arg("mosquitto:")
                .arg(&key)
                .status()
                .unwrap();
            assert!(
                chowned.success(),
                "chown mosquitto: (the tests run as root)"
            );
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            "mosquitto".to_owned()
        } else {
            String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap()
        };
        let config = dir.path().join("mosquitto.conf");
        let mut text = format!(
            "user {user}\npersistence false\nlog_dest stderr\n\
             listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
             require_certificate true\nuse_identity_as_username true\n",
            ca.display(),
            cert.display(),
            key.display()
        );
        if let Some(crl) = crl {
            text.push_str(&format!("crlfile {}\n", crl.display()));
        }
        if recipe {
            let acl = dir.path().join("acl");
            std::fs::write(&acl, "pattern readwrite devices/%u/#\n").unwrap();
            text.push_str(&format!("acl_file {}\n", acl.display()));
        }
        std::fs::write(&config, text).unwrap();
        let program = if Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto"
        } else {
            "mosquitto"
        };
        let child = Command::new(program)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (scripts/test installs it)");
        let broker = Self { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }

    /// The broker's process id, for a reload (SIGHUP).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `mosquitto_pub` with this client certificate and key (`None`: no certificate).
    pub fn publish(&self, ca: &Path, identity: Option<(&Path, &Path)>) -> Output {
        let mut command = Command::new("timeout");
        command
            .args(["10", "mosquitto_pub", "-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("--cafile")
            .arg(ca)
            .args(["-t", "provisiond/test", "-m", "hello", "-q", "1"]);
        if let Some((cert, key)) = identity {
            command.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        command.output().expect("mosquitto_pub is installed")
    }
}

/// `program` (a mosquitto client) to the broker on `port`, with this client certificate,
/// bounded by `timeout`.
fn client(
    program: &str,
    port: u16,
    ca: &Path,
    (cert, key): (&Path, &Path),
    limit: &str,
) -> Command {
    let mut command = Command::new("timeout");
    command
        .args([limit, program, "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .arg("--cafile")
        .arg(ca)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key);
    command
}

/// `mosquitto_sub` for one message on `topic` with this client certificate, started in
/// the background; its output once it got one or gave up after `-W 8` seconds.
pub fn subscribe_one(port: u16, ca: &Path, cert: &Path, key: &Path, topic: &str) -> Child {
    client("mosquitto_sub", port, ca, (cert, key), "15")
        .args(["-t", topic, "-C", "1", "-W", "8", "-q", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub is installed")
}

/// `mosquitto_pub` of `message` to `topic` with this client certificate.
pub fn publish_to(
    port: u16,
    ca: &Path,
    cert: &Path,
    key: &Path,
    topic: &str,
    message: &str,
) -> Output {
    client("mosquitto_pub", port, ca, (cert, key), "10")
        .args(["-t", topic, "-m", message, "-q", "1"])
        .output()
        .expect("mosquitto_pub is installed")
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

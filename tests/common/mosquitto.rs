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
            .output()
            .unwrap();
        assert!(made.status.success(), "server-cert: {made:?}");
        let port = free_port();
        let user =
            String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
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

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! A SoftHSM2 token in a temporary directory (`SOFTHSM2_CONF` points at it), and the
//! settings that put a CA key in it. SoftHSM2 is a library loaded by whoever uses it:
//! there is no process to stop, and the directory goes with the value.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const LABEL: &str = "provisiond";
pub const PIN: &str = "1234";

pub struct SoftHsm {
    dir: TempDir,
}

impl SoftHsm {
    /// A new token labelled [`LABEL`] with user PIN [`PIN`].
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, PIN).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let hsm = SoftHsm { dir };
        let made = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", LABEL])
            .args(["--pin", PIN, "--so-pin", "123456"])
            .env("SOFTHSM2_CONF", hsm.conf())
            .output()
            .expect("softhsm2-util is installed (scripts/test installs softhsm2)");
        assert!(made.status.success(), "softhsm2-util: {made:?}");
        hsm
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    /// Where the tokens are: moving it away takes the token away.
    pub fn tokens(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }

    /// The URI of the key `object` in this token.
    pub fn uri(object: &str) -> String {
        format!("pkcs11:token={LABEL};object={object}")
    }

    /// The environment of a server or command whose CA key is `object` in this token,
    /// with the CA certificate in `certs`.
    pub fn env(&self, object: &str, certs: &Path) -> Vec<(&'static str, String)> {
        vec![
            ("SOFTHSM2_CONF", self.conf().display().to_string()),
            ("CERTS_DIR", certs.display().to_string()),
            ("CA_KEY", Self::uri(object)),
            ("CA_PKCS11_MODULE", MODULE.to_owned()),
            (
                "CA_PKCS11_PIN_FILE",
                self.dir.path().join("pin").display().to_string(),
            ),
        ]
    }
}

//! What a device sends for its certificate: a CSR made from a key generated here, from a
//! key it already has, or a CSR it made itself (its key then never reaches this tool).

use std::path::{Path, PathBuf};

use crate::device::{DeviceKey, KeyKind, csr_public_key};

/// Where the CSR comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A new key of this type, written beside the certificate.
    Generate(KeyKind),
    /// An existing PKCS#8 PEM private key; it stays where it is.
    KeyFile(PathBuf),
    /// An existing PEM CSR, sent as is.
    CsrFile(PathBuf),
}

/// A CSR ready to send.
pub struct Request {
    pub csr: String,
    /// The public key the certificate must carry.
    pub public_key: Vec<u8>,
    /// The key made here, to be written with the certificate; `None` when the device's
    /// key lives elsewhere.
    pub new_key: Option<DeviceKey>,
}

impl KeySource {
    /// The CSR for `device_id` (CPU-bound for RSA: call it off the async runtime).
    pub fn request(&self, device_id: &str) -> anyhow::Result<Request> {
        match self {
            KeySource::Generate(kind) => {
                let key = DeviceKey::generate(*kind)
                    .map_err(|e| anyhow::anyhow!("cannot make a {kind} key: {e}"))?;
                from_key(key, device_id, true)
            }
            KeySource::KeyFile(path) => {
                let pem = read(path)?;
                let key = DeviceKey::from_pem(&pem).map_err(|e| {
                    anyhow::anyhow!("{} is not a PKCS#8 PEM private key: {e}", path.display())
                })?;
                from_key(key, device_id, false)
            }
            KeySource::CsrFile(path) => {
                let csr = read(path)?;
                let public_key =
                    csr_public_key(&csr).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                Ok(Request {
                    csr,
                    public_key,
                    new_key: None,
                })
            }
        }
    }

    /// Whether this tool writes the device's key (it made it).
    pub fn writes_key(&self) -> bool {
        matches!(self, KeySource::Generate(_))
    }
}

fn from_key(key: DeviceKey, device_id: &str, keep: bool) -> anyhow::Result<Request> {
    let csr = key
        .csr_pem(Some(device_id))
        .map_err(|e| anyhow::anyhow!("cannot make the CSR: {e}"))?;
    Ok(Request {
        csr,
        public_key: key.public_key_raw().to_vec(),
        new_key: keep.then_some(key),
    })
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

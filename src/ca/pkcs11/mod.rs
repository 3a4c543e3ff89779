//! A CA key that never leaves a PKCS#11 token (an HSM, SoftHSM2 for trying it out):
//! certificates, CRLs and OCSP responses are signed inside the token with `CKM_ECDSA`
//! over a digest computed here, which every ECDSA token offers.
//!
//! A token that goes away (unplugged, its directory moved, the HSM restarted) fails the
//! signatures in flight with [`rcgen::Error::RemoteKeyError`], which the API answers 503
//! `ca_unavailable`; the connection is dropped, the module finalized, and the next
//! signature (at most one attempt a second) initializes it again, finds the token and the
//! key, and logs in. No restart is needed when the token returns.

mod connection;
mod init;
mod uri;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;

pub use init::generate_key;
pub use uri::Pkcs11Uri;

use connection::{Connection, OpenError};

/// How long after a failed attempt to reach the token the next one is made; signatures
/// asked for meanwhile fail at once.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The curves a token key may be on: what `CKM_ECDSA` signs, and how X.509 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    /// The curve of an uncompressed point (`04 || X || Y`), by its length.
    pub fn of_point(point: &[u8]) -> Option<Self> {
        match (point.first(), point.len()) {
            (Some(4), 65) => Some(Curve::P256),
            (Some(4), 97) => Some(Curve::P384),
            _ => None,
        }
    }

    pub fn algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Curve::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Curve::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }

    fn digest(self, message: &[u8]) -> Vec<u8> {
        let algorithm = match self {
            Curve::P256 => &aws_lc_rs::digest::SHA256,
            Curve::P384 => &aws_lc_rs::digest::SHA384,
        };
        aws_lc_rs::digest::digest(algorithm, message)
            .as_ref()
            .to_vec()
    }

    /// The curve's OID as `CKA_EC_PARAMS` holds it (DER).
    fn ec_params(self) -> Vec<u8> {
        let oid: &[u64] = match self {
            Curve::P256 => &[1, 2, 840, 10045, 3, 1, 7],
            Curve::P384 => &[1, 3, 132, 0, 34],
        };
        yasna::construct_der(|w| w.write_oid(&yasna::models::ObjectIdentifier::from_slice(oid)))
    }
}

/// Where the key is and how to log in.
#[derive(Clone)]
pub struct TokenLocation {
    pub module: PathBuf,
    pub uri: Pkcs11Uri,
    pub pin: crate::secret::Secret,
}

/// A private key in a token, with its public point (from the CA certificate).
pub struct TokenKey {
    location: TokenLocation,
    curve: Curve,
    /// The uncompressed public point, as a SubjectPublicKeyInfo's BIT STRING holds it.
    public_point: Vec<u8>,
    /// Idle sessions kept: one per server worker, so workers do not wait on each other.
    pool: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    live: Option<Arc<Connection>>,
    /// A connection is being opened, outside the lock: a token that hangs holds up one
    /// request, and the others are answered at once.
    connecting: bool,
    /// Set once the last connection's module is finalized: a module is initialized
    /// again only after that (a connection dropped after a failure lives on while
    /// signatures in flight still hold it).
    closed: Option<Arc<AtomicBool>>,
    failed_at: Option<Instant>,
    /// The token refused the PIN: trying it again every second would lock the token
    /// (most lock after a few tries), so no more until a restart.
    pin_refused: bool,
}

impl TokenKey {
    /// Connects to the token and finds the key. `public_point` is the CA certificate's
    /// (or, at `ca init`, the key's own): whether the token's key matches it is for the
    /// caller to prove with a signature.
    pub fn open(
        location: TokenLocation,
        public_point: Vec<u8>,
        pool: usize,
    ) -> anyhow::Result<Self> {
        let curve = Curve::of_point(&public_point)
            .ok_or_else(|| anyhow::anyhow!("a CA key in a token must be ECDSA P-256 or P-384"))?;
        let key = TokenKey {
            location,
            curve,
            public_point,
            pool: pool.max(1),
            state: Mutex::new(State::default()),
        };
        key.connection().map_err(|e| {
            anyhow::anyhow!(
                "{} (module {}): {e}",
                key.location.uri,
                key.location.module.display()
            )
        })?;
        Ok(key)
    }

    pub fn curve(&self) -> Curve {
        self.curve
    }

    pub fn public_point(&self) -> &[u8] {
        &self.public_point
    }

    pub fn uri(&self) -> &Pkcs11Uri {
        &self.location.uri
    }

    /// The live connection, or a new one when the last failed more than a second ago.
    fn connection(&self) -> Result<Arc<Connection>, String> {
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(live) = &state.live {
                return Ok(live.clone());
            }
            if state.pin_refused {
                return Err("the token refused the PIN: fix it and restart".into());
            }
            if state.connecting {
                return Err("reconnecting to the token".into());
            }
            if state
                .closed
                .as_ref()
                .is_some_and(|closed| !closed.load(Ordering::Acquire))
            {
                return Err("the token's last connection is still closing".into());
            }
            if state.failed_at.is_some_and(|at| at.elapsed() < RETRY_AFTER) {
                return Err("the token did not answer a moment ago".into());
            }
            state.connecting = true;
        }
        let opened = Connection::open(
            &self.location.module,
            &self.location.uri,
            self.location.pin.expose(),
        );
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.connecting = false;
        match opened {
            Ok(connection) => {
                if state.failed_at.take().is_some() {
                    tracing::info!(key = %self.location.uri, "the CA's token answers again");
                }
                let connection = Arc::new(connection);
                state.live = Some(connection.clone());
                Ok(connection)
            }
            Err(e) => {
                state.failed_at = Some(Instant::now());
                tracing::warn!(
                    key = %self.location.uri,
                    error = %e,
                    "the CA's token does not answer: trying again on a request a second from now"
                );
                if let OpenError::PinRefused = e {
                    tracing::error!(
                        key = %self.location.uri,
                        "the CA's token refused the PIN: no more attempts (they would lock \
                         it) until the PIN is fixed and the server restarted"
                    );
                    state.pin_refused = true;
                }
                Err(e.to_string())
            }
        }
    }

    /// Drops `connection` after `error`, unless another signature dropped it first.
    fn retire(&self, connection: Arc<Connection>, error: &dyn std::fmt::Display) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state
            .live
            .as_ref()
            .is_some_and(|live| Arc::ptr_eq(live, &connection))
        {
            tracing::warn!(
                key = %self.location.uri,
                %error,
                "the CA's token failed a signature: reconnecting on the next request"
            );
            state.live = None;
            state.closed = Some(connection.closed());
            state.failed_at = Some(Instant::now());
        }
    }

    /// Signs `message` inside the token: ECDSA over its SHA-256 (P-256) or SHA-384
    /// (P-384), answered as X.509 writes it (`ECDSA-Sig-Value`, RFC 3279 §2.2.3).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let digest = self.curve.digest(message);
        // Each real attempt to reach the token is logged where it is made, at most one a
        // second; the requests refused meanwhile are not, or a fleet would flood the log.
        let connection = self.connection().map_err(|e| {
            tracing::debug!(key = %self.location.uri, error = %e, "the CA's token is unavailable");
            rcgen::Error::RemoteKeyError
        })?;
        let signed = connection.session().and_then(|session| {
            let raw = session.sign(&Mechanism::Ecdsa, connection.key, &digest)?;
            connection.give_back(session, self.pool);
            Ok(raw)
        });
        match signed {
            Ok(raw) => ecdsa_sig_value(&raw).ok_or(rcgen::Error::RemoteKeyError),
            Err(e) => {
                self.retire(connection, &e);
                Err(rcgen::Error::RemoteKeyError)
            }
        }
    }
}

/// `r || s` (PKCS#11's ECDSA signature) as `SEQUENCE { r INTEGER, s INTEGER }`.
fn ecdsa_sig_value(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    Some(yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_bigint_bytes(r, true);
            w.next().write_bigint_bytes(s, true);
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_r_and_s_as_positive_integers() {
        let mut raw = vec![0x80; 32];
        raw.extend([0x00; 31]);
        raw.push(0x01);
        let der = ecdsa_sig_value(&raw).unwrap();
        // r gets a zero byte to stay positive; s loses its leading zeros.
        assert_eq!(&der[..5], &[0x30, 0x26, 0x02, 0x21, 0x00]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x01]);
        assert!(ecdsa_sig_value(&[1, 2, 3]).is_none());
    }
}

//! `derived` onboarding: each device holds its own key, derived from the operator's
//! group secret, and signs its request with it; the key itself never travels.
//!
//! ```text
//! device_key = HMAC-SHA256(group_secret, device_id)                 (flashed at the factory)
//! Authorization: Device ts=<unix seconds>,sig=<base64url(HMAC-SHA256(device_key, "<device_id>:<ts>"))>
//! ```
//!
//! A leaked device key exposes that one device, not the fleet. A signature is accepted
//! within the configured clock skew, once: the store remembers each (device, ts) used.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::ApiError;
use crate::secret::Secret;

pub const SCHEME: &str = "Device";

/// A device's key, as the factory line flashes it.
pub fn device_key(group_secret: &[u8], device_id: &str) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, group_secret);
    hmac::sign(&key, device_id.as_bytes())
        .as_ref()
        .try_into()
        .expect("HMAC-SHA256 is 32 bytes")
}

pub fn encode_key(key: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

pub fn decode_key(text: &str) -> Option<[u8; 32]> {
    let mut key = [0u8; 32];
    match URL_SAFE_NO_PAD.decode_slice(text.trim(), &mut key) {
        Ok(32) => Some(key),
        _ => None,
    }
}

fn message(device_id: &str, ts: u64) -> String {
    format!("{device_id}:{ts}")
}

/// The `Authorization` header value a device sends at time `ts`.
pub fn authorization(device_key: &[u8; 32], device_id: &str, ts: u64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, device_key);
    let sig = hmac::sign(&key, message(device_id, ts).as_bytes());
    format!(
        "{SCHEME} ts={ts},sig={}",
        URL_SAFE_NO_PAD.encode(sig.as_ref())
    )
}

/// The server side: checks a `Device` authorization for a device id.
pub struct DerivedKeys {
    group_secret: hmac::Key,
    clock_skew: u64,
}

impl DerivedKeys {
    pub fn new(group_secret: &Secret, clock_skew: u64) -> Self {
        Self {
            group_secret: hmac::Key::new(hmac::HMAC_SHA256, group_secret.expose().as_bytes()),
            clock_skew,
        }
    }

    /// How far a signed timestamp may be from the server's clock.
    pub fn clock_skew(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.clock_skew)
    }

    /// Verifies `header` for `device_id` at `now`; answers the signed timestamp, which
    /// the caller must claim once.
    pub fn verify(&self, header: Option<&str>, device_id: &str, now: u64) -> Result<u64, ApiError> {
        let header = header.ok_or(ApiError::Unauthorized(
            "a `Device ts=...,sig=...` authorization is required",
        ))?;
        let (ts, sig) = parse(header).ok_or(ApiError::Unauthorized(
            "malformed `Device` authorization: expected `Device ts=<unix seconds>,sig=<base64url>`",
        ))?;
        if ts.abs_diff(now) > self.clock_skew {
            return Err(ApiError::Unauthorized(
                "the authorization's timestamp is too far from the server's clock",
            ));
        }
        let device_key = hmac::sign(&self.group_secret, device_id.as_bytes());
        let key = hmac::Key::new(hmac::HMAC_SHA256, device_key.as_ref());
        hmac::verify(&key, message(device_id, ts).as_bytes(), &sig)
            .map_err(|_| ApiError::Unauthorized("device signature not accepted"))?;
        Ok(ts)
    }
}

impl DerivedKeys {
    /// Whether `presented` is `device_id`'s key itself (base64url, as `derive-key`
    /// prints it), compared in constant time: EST's password, which a client like
    /// strongSwan's `pki` cannot sign per request.
    pub fn accepts_key(&self, device_id: &str, presented: &str) -> bool {
        let Some(presented) = decode_key(presented) else {
            return false;
        };
        let expected = hmac::sign(&self.group_secret, device_id.as_bytes());
        aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_ref(), &presented).is_ok()
    }
}

/// `Device ts=<u64>,sig=<base64url>`, parameters in any order.
fn parse(header: &str) -> Option<(u64, Vec<u8>)> {
    let (scheme, params) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let (mut ts, mut sig) = (None, None);
    for param in params.split(',') {
        match param.trim().split_once('=')? {
            ("ts", value) => ts = Some(value.trim().parse().ok()?),
            ("sig", value) => sig = Some(URL_SAFE_NO_PAD.decode(value.trim()).ok()?),
            _ => return None,
        }
    }
    Some((ts?, sig?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn keys() -> DerivedKeys {
        DerivedKeys::new(&Secret::new("group-secret-group-secret-group-secret"), 300)
    }

    #[test]
    fn a_device_signature_made_with_its_derived_key_verifies() {
        let key = device_key(b"group-secret-group-secret-group-secret", "dev-1");
        let header = authorization(&key, "dev-1", NOW - 10);
        assert_eq!(
            keys().verify(Some(&header), "dev-1", NOW).unwrap(),
            NOW - 10
        );
    }

    #[test]
    fn wrong_device_wrong_key_stale_time_and_bad_syntax_are_refused() {
        let key = device_key(b"group-secret-group-secret-group-secret", "dev-1");
        let other = device_key(b"another-group-secret-another-group", "dev-1");
        for (header, device) in [
            (authorization(&key, "dev-1", NOW), "dev-2"),
            (authorization(&other, "dev-1", NOW), "dev-1"),
            (authorization(&key, "dev-1", NOW - 301), "dev-1"),
            (authorization(&key, "dev-1", NOW + 301), "dev-1"),
            ("Device ts=abc,sig=xyz".to_owned(), "dev-1"),
            ("Bearer abc".to_owned(), "dev-1"),
            ("Device sig=abc".to_owned(), "dev-1"),
        ] {
            assert!(
                keys().verify(Some(&header), device, NOW).is_err(),
                "{header}"
            );
        }
        assert!(keys().verify(None, "dev-1", NOW).is_err());
    }

    #[test]
    fn keys_round_trip_through_base64url() {
        let key = device_key(b"s", "d");
        assert_eq!(decode_key(&encode_key(&key)), Some(key));
        assert_eq!(decode_key("short"), None);
    }
}

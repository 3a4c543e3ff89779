//! The enrollment code: the provisioning token's short form, for clients that cannot
//! carry a 250-character JWT (strongSwan's `pki --est` cuts `user:password` at about 170
//! bytes). It names the same store entry (the token's `jti`) and carries what the JWT's
//! claims carry for a device (epoch, group, expiry), under an HMAC-SHA256 tag bound to the
//! device id, so that it is verified without a store read and used once like the token.
//!
//! Layout before base64url (no padding): `jti` (16) | `exp` (u32, unix seconds) |
//! `epoch` (u64) | group name (none for `default`) | tag (16 bytes of
//! HMAC-SHA256(key, device id | 0 | all before)). For `default`: 44 bytes, 59 characters.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::domain::{DeviceId, Jti};
use crate::error::ApiError;

const TAG: usize = 16;
const FIXED: usize = 16 + 4 + 8;
/// The longest code: a 32-character group name.
pub const MAX_CODE_CHARS: usize = (FIXED + 32 + TAG) * 4 / 3 + 1;

/// What a code that verifies says.
#[derive(Debug)]
pub struct CodeClaims {
    pub jti: Jti,
    pub epoch: u64,
    pub group: String,
}

/// The key codes are tagged with: derived from the JWT secret, kept apart from it.
pub struct CodeKey([u8; 32]);

impl CodeKey {
    /// From the JWT secret and the tokens' issuer and audience: as a JWT is refused by a
    /// deployment with another `iss` or `aud`, so is a code.
    pub fn derive(jwt_secret: &[u8], issuer: &str, audience: &str) -> Self {
        Self(crate::crypto::hmac_sha256(
            jwt_secret,
            &[
                b"provisiond enrollment code v1\0",
                issuer.as_bytes(),
                b"\0",
                audience.as_bytes(),
            ],
        ))
    }

    /// The code for `device`'s token `jti` (store `epoch`, `group`), expiring at
    /// `expires_at` (unix seconds).
    pub fn encode(
        &self,
        device: &DeviceId,
        jti: &Jti,
        expires_at: u64,
        epoch: u64,
        group: &str,
    ) -> String {
        let mut bytes = Vec::with_capacity(FIXED + group.len() + TAG);
        bytes.extend_from_slice(jti.as_bytes());
        bytes.extend_from_slice(&(expires_at.min(u64::from(u32::MAX)) as u32).to_be_bytes());
        bytes.extend_from_slice(&epoch.to_be_bytes());
        if group != crate::registry::DEFAULT_GROUP {
            bytes.extend_from_slice(group.as_bytes());
        }
        let tag = self.tag(device, &bytes);
        bytes.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// What the code says for `device`, when its tag verifies and it has not expired at
    /// `now`. Whether it is still unused is the store's to answer, as for the JWT.
    ///
    /// Errors: 401 `token_invalid` (not a code, or not this device's), 401
    /// `token_expired`.
    pub fn decode(&self, device: &DeviceId, code: &str, now: u64) -> Result<CodeClaims, ApiError> {
        let invalid =
            || ApiError::TokenInvalid("the enrollment code does not verify for this device");
        if code.len() > MAX_CODE_CHARS {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(code).map_err(|_| invalid())?;
        if bytes.len() < FIXED + TAG || bytes.len() > FIXED + 32 + TAG {
            return Err(invalid());
        }
        let (body, tag) = bytes.split_at(bytes.len() - TAG);
        let expected = self.tag(device, body);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(tag, &expected[..])) {
            return Err(invalid());
        }
        let jti = Jti::from_bytes(body[..16].try_into().expect("16 bytes"));
        let expires_at = u64::from(u32::from_be_bytes(
            body[16..20].try_into().expect("4 bytes"),
        ));
        let epoch = u64::from_be_bytes(body[20..28].try_into().expect("8 bytes"));
        let group = match &body[FIXED..] {
            [] => crate::registry::DEFAULT_GROUP.to_owned(),
            name => String::from_utf8(name.to_vec()).map_err(|_| invalid())?,
        };
        if expires_at <= now {
            return Err(ApiError::TokenExpired);
        }
        Ok(CodeClaims { jti, epoch, group })
    }

    fn tag(&self, device: &DeviceId, body: &[u8]) -> [u8; TAG] {
        let mac = crate::crypto::hmac_sha256(&self.0, &[device.as_str().as_bytes(), &[0], body]);
        mac[..TAG].try_into().expect("16 bytes")
    }
}

/// Whether a bearer credential is a code rather than a JWT (which has dots).
pub fn is_code(credential: &str) -> bool {
    !credential.contains('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_verifies_for_its_device_only_and_expires() {
        let key = CodeKey::derive(
            b"0123456789abcdef0123456789abcdef",
            "provisiond",
            "provisiond",
        );
        let device = DeviceId::parse("sensor-1").unwrap();
        let jti = Jti::random();
        let code = key.encode(&device, &jti, 1_000, 7, "default");
        assert_eq!(code.len(), 59);
        let read = key.decode(&device, &code, 999).unwrap();
        assert_eq!(
            (read.jti, read.epoch, read.group.as_str()),
            (jti, 7, "default")
        );
        assert!(matches!(
            key.decode(&device, &code, 1_000),
            Err(ApiError::TokenExpired)
        ));
        let other = DeviceId::parse("sensor-2").unwrap();
        assert!(matches!(
            key.decode(&other, &code, 999),
            Err(ApiError::TokenInvalid(_))
        ));
        let grouped = key.encode(&device, &jti, 1_000, 7, "gateways");
        assert_eq!(
            key.decode(&device, &grouped, 999).unwrap().group,
            "gateways"
        );
        // One character changed, or another key: refused.
        let mut tampered = code.clone().into_bytes();
        tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(key.decode(&device, &tampered, 999).is_err());
        let another = CodeKey::derive(
            b"another-secret-another-secret-xx",
            "provisiond",
            "provisiond",
        );
        assert!(another.decode(&device, &code, 999).is_err());
        let another = CodeKey::derive(
            b"0123456789abcdef0123456789abcdef",
            "provisiond",
            "elsewhere",
        );
        assert!(another.decode(&device, &code, 999).is_err());
        for junk in ["", "!!", "AAAA", &"A".repeat(200)] {
            assert!(key.decode(&device, junk, 999).is_err(), "{junk}");
        }
    }
}

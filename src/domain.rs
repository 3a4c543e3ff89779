//! Values that are validated once, at the edge, and trusted everywhere after.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `[a-z0-9-]{1,32}`: the names of groups and issuers, safe in metric labels, URLs, log
/// lines and file names.
pub fn is_short_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A device identifier: 1..=64 characters of `[A-Za-z0-9._:-]`, not only dots, for a
/// device taking one ([`DeviceId::parse_new`]); up to 128 for ids stored before.
///
/// The alphabet keeps ids safe inside Redis hash tags (no braces), file names (no
/// slashes) and log lines (no spaces or control characters). `.` and `..` are refused
/// because browsers and HTTP clients resolve them as path segments (RFC 3986 §5.2.4):
/// the admin API and the console could not reach such a device.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(Box<str>);

pub const DEVICE_ID_MAX_LEN: usize = 128;

/// The longest id a device may take from now on: the id becomes its certificate's
/// common name, which RFC 5280 (Appendix A, `ub-common-name`) limits to 64 characters;
/// linters mark a longer one fatal and `openssl req -subj /CN=<id>` cannot request it.
/// Ids up to [`DEVICE_ID_MAX_LEN`] taken before stay readable.
pub const NEW_DEVICE_ID_MAX_LEN: usize = 64;

impl DeviceId {
    /// Any id the server may hold: what it stored, a token's subject, an admin's path.
    /// A device taking an id from now on goes through [`DeviceId::parse_new`].
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        if value.is_empty() {
            return Err("device_id must not be empty");
        }
        if value.len() > DEVICE_ID_MAX_LEN {
            return Err("device_id must be at most 128 characters");
        }
        if !value.bytes().all(is_device_id_byte) {
            return Err("device_id may contain only letters, digits and . _ : -");
        }
        Ok(Self(value.into()))
    }

    /// An id a device may take (onboarding, a CSR, a renewal, an import): [`DeviceId::parse`]
    /// and not only dots. Ids of only dots were accepted once and may still be stored;
    /// they stay readable, and reachable with the admin API by a client that does not
    /// resolve dot segments (`curl --path-as-is`).
    pub fn parse_new(value: &str) -> Result<Self, &'static str> {
        if !value.is_empty() && value.bytes().all(|b| b == b'.') {
            return Err("device_id must not be only dots (`.` and `..` are path segments)");
        }
        Self::parse(value)
    }

    /// An id onboarding may give a token to: [`DeviceId::parse_new`] and at most
    /// [`NEW_DEVICE_ID_MAX_LEN`] characters. Only onboarding (and the fleet commands that
    /// make devices) asks: a device that took a longer id before still signs the token it
    /// holds, renews and is imported.
    pub fn parse_onboarding(value: &str) -> Result<Self, &'static str> {
        let id = Self::parse_new(value)?;
        if id.0.len() > NEW_DEVICE_ID_MAX_LEN {
            return Err(
                "device_id must be at most 64 characters: it becomes the certificate's common \
                 name, which RFC 5280 limits to 64 (ub-common-name)",
            );
        }
        Ok(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_device_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for DeviceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A token id: 128 random bits, written as 22 base64url characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Jti([u8; 16]);

impl Jti {
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        crate::crypto::fill_random(&mut bytes);
        Self(bytes)
    }

    pub fn parse(value: &str) -> Option<Self> {
        if value.len() != 22 {
            return None;
        }
        let mut bytes = [0u8; 16];
        let n = URL_SAFE_NO_PAD.decode_slice(value, &mut bytes).ok()?;
        (n == 16).then_some(Self(bytes))
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The first characters, enough to follow one token through the logs.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(8);
        s
    }
}

impl fmt::Display for Jti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 22];
        let n = URL_SAFE_NO_PAD
            .encode_slice(self.0, &mut buf)
            .expect("16 bytes encode to 22 characters");
        f.write_str(std::str::from_utf8(&buf[..n]).expect("base64 is ASCII"))
    }
}

impl fmt::Debug for Jti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Jti({}…)", self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_follow_the_documented_alphabet() {
        for ok in ["device-001", "a", "A.b_c:d-9", &"x".repeat(128)] {
            assert!(DeviceId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            &"x".repeat(129),
            "has space",
            "{brace}",
            "a/b",
            "é",
            "a\nb",
            "a*b",
        ] {
            assert!(DeviceId::parse(bad).is_err(), "{bad:?}");
        }
        // A new id becomes a common name: 64 characters at most (RFC 5280).
        assert!(DeviceId::parse_onboarding(&"x".repeat(64)).is_ok());
        assert!(DeviceId::parse_onboarding(&"x".repeat(65)).is_err());
        assert!(
            DeviceId::parse_new(&"x".repeat(65)).is_ok(),
            "a device that has one renews"
        );
        assert!(
            DeviceId::parse(&"x".repeat(65)).is_ok(),
            "stored ids stay readable"
        );
        for dots in [".", "..", "..."] {
            assert!(DeviceId::parse_new(dots).is_err(), "{dots}");
            assert!(DeviceId::parse(dots).is_ok(), "{dots} as stored before");
        }
        assert!(DeviceId::parse_new("a..b").is_ok());
    }

    #[test]
    fn jti_round_trips_through_its_text_form() {
        let jti = Jti::random();
        let text = jti.to_string();
        assert_eq!(text.len(), 22);
        assert_eq!(Jti::parse(&text), Some(jti));
        assert_eq!(Jti::parse("short"), None);
        assert_eq!(Jti::parse(&"*".repeat(22)), None);
    }
}

/// A key type by the names fleets use: `p256`, `p384`, `ed25519`, `rsa2048`, `rsa3072`,
/// `rsa4096` (the CLI's `--key-type`, a group's `key_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    P256,
    P384,
    Ed25519,
    Rsa2048,
    Rsa3072,
    Rsa4096,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::P256 => "p256",
            KeyKind::P384 => "p384",
            KeyKind::Ed25519 => "ed25519",
            KeyKind::Rsa2048 => "rsa2048",
            KeyKind::Rsa3072 => "rsa3072",
            KeyKind::Rsa4096 => "rsa4096",
        })
    }
}

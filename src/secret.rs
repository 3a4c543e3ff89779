//! Secrets held in memory: a string that `Debug` never shows, and the shortest one the
//! token signer accepts.

use std::fmt;

use serde::Deserialize;

/// Shortest JWT secret accepted, in bytes: HS256 wants at least 256 bits of key
/// (RFC 7518 §3.2).
pub const MIN_SECRET_LEN: usize = 32;

/// A secret string: never shown by `Debug`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret's text, for a caller that keeps it in another form.
    pub fn into_exposed(self) -> String {
        self.0
    }
}

/// For command-line flags (and their environment variables) that carry a secret.
impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

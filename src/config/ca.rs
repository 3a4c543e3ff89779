//! `[ca]`: the local certificate authority, what it accepts and signs, and its CRL.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::ConfigError;
use crate::secret::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaSettings {
    pub dir: PathBuf,
    pub validity_days: u32,
    /// Common name of a CA generated on first start.
    pub common_name: String,
    pub allow_rsa: bool,
    pub allow_ecdsa: bool,
    pub allow_ed25519: bool,
    pub rsa_min_bits: usize,
    pub rsa_max_bits: usize,
    /// Where brokers fetch the CRL: written into issued certificates as their CRL
    /// distribution point when set.
    pub crl_url: Option<String>,
    /// Where relying parties ask about one certificate (this server's `/ocsp`): written
    /// into issued certificates as their Authority Information Access OCSP URL when set.
    pub ocsp_url: Option<String>,
    /// How long a CRL is valid (nextUpdate − thisUpdate); it is re-signed at half its life.
    pub crl_validity_hours: u32,
    /// Where the CA key is: unset for `<dir>/ca.key`, a PEM file's path, or a PKCS#11
    /// URI (RFC 7512) such as `pkcs11:token=provisiond;object=issuing-ca`.
    pub key: Option<String>,
    /// The PKCS#11 module (a shared library) for a key in a token.
    pub pkcs11_module: Option<PathBuf>,
    /// The token's user PIN, inline (better from the environment, `CA_PKCS11_PIN`).
    pub pkcs11_pin: Option<Secret>,
    /// A file holding the token's user PIN, private to its owner.
    pub pkcs11_pin_file: Option<PathBuf>,
}

impl Default for CaSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("certs"),
            validity_days: 365,
            common_name: "provisiond CA".into(),
            allow_rsa: true,
            allow_ecdsa: true,
            allow_ed25519: true,
            rsa_min_bits: 2048,
            rsa_max_bits: 4096,
            crl_url: None,
            ocsp_url: None,
            crl_validity_hours: 24,
            key: None,
            pkcs11_module: None,
            pkcs11_pin: None,
            pkcs11_pin_file: None,
        }
    }
}

impl CaSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.validity_days == 0 || self.validity_days > 3650 {
            return Err(ConfigError::key("ca.validity_days", "use 1..=3650 days"));
        }
        if !(1..=8760).contains(&self.crl_validity_hours) {
            return Err(ConfigError::key(
                "ca.crl_validity_hours",
                "use 1..=8760 hours (brokers refuse every client once a CRL's nextUpdate passes)",
            ));
        }
        if let Some(url) = &self.crl_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::key(
                "ca.crl_url",
                "must be an http:// (or https://) URL that brokers can fetch",
            ));
        }
        if let Some(url) = &self.ocsp_url
            && !((url.starts_with("http://") || url.starts_with("https://"))
                && url.is_ascii()
                && !url.contains(|c: char| c.is_ascii_whitespace() || c.is_ascii_control())
                && url::Url::parse(url).is_ok())
        {
            return Err(ConfigError::key(
                "ca.ocsp_url",
                "must be an http:// (or https://) URL in ASCII (punycode for a host), this \
                 server's /ocsp as clients reach it",
            ));
        }
        if self.common_name.is_empty() || self.common_name.chars().count() > 64 {
            return Err(ConfigError::key(
                "ca.common_name",
                "use 1..=64 characters (RFC 5280 ub-common-name)",
            ));
        }
        if self.rsa_min_bits > self.rsa_max_bits {
            return Err(ConfigError::key(
                "ca.rsa_min_bits",
                "must not be larger than ca.rsa_max_bits",
            ));
        }
        Ok(())
    }
}

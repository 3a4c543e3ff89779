//! `[[issuers]]`: the CAs that sign device certificates, for a rollover (README, "CA
//! rollover"). Read and judged here; loaded in [`crate::ca::Issuers`].

use std::collections::HashSet;
use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// The name of the one issuer `[ca]` makes when no `[[issuers]]` are configured, and of
/// the issuer whose CRL `/api/v1/crl` serves without `?issuer=`.
pub const DEFAULT_ISSUER: &str = "default";

/// One `[[issuers]]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IssuerSettings {
    /// `[a-z0-9-]{1,32}`, unique: in `/api/v1/crl?issuer=`, in groups' `issuer` and in
    /// the CRL distribution point of what it signs.
    pub name: String,
    /// The issuing CA's certificate, PEM, optionally followed by its chain up to a root.
    pub cert: PathBuf,
    /// Its private key: a PEM file's path, or a PKCS#11 URI (RFC 7512) with `[ca]`'s
    /// `pkcs11_module` and PIN.
    pub key: String,
    /// More of the chain (intermediates, root), PEM, when `cert` holds only the CA.
    pub chain: Option<PathBuf>,
}

/// Names valid and unique, every entry with its cert and key.
pub(super) fn validate(issuers: &[IssuerSettings]) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    for issuer in issuers {
        if !crate::domain::is_short_name(&issuer.name) {
            return Err(ConfigError::key(
                "issuers.name",
                format!("`{}` is not 1 to 32 of a-z, 0-9 and -", issuer.name),
            ));
        }
        if issuer.name == "all" {
            return Err(ConfigError::key(
                "issuers.name",
                "`all` is taken: `/api/v1/crl?issuer=all` is every issuer's CRL",
            ));
        }
        if !names.insert(issuer.name.as_str()) {
            return Err(ConfigError::key(
                "issuers.name",
                format!("two issuers are named `{}`", issuer.name),
            ));
        }
        if issuer.cert.as_os_str().is_empty() || issuer.key.is_empty() {
            return Err(ConfigError(format!(
                "issuer `{}`: `cert` and `key` are both needed",
                issuer.name
            )));
        }
    }
    Ok(())
}

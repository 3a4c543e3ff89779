//! `[hook]`: the pre-issuance hook, asked before every certificate is signed.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;
use crate::secret::Secret;

/// What signing does when the hook cannot give an answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookOnError {
    /// 503 `hook_unavailable`: nothing is signed without the hook's word.
    #[default]
    Deny,
    /// Sign as if it had allowed (logged loudly at start).
    Allow,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookSettings {
    /// `https://...` (or `http://` on loopback); none: no hook.
    pub url: Option<String>,
    /// The HMAC secret that signs each request (at least 32 bytes).
    pub secret: Option<Secret>,
    pub secret_file: Option<PathBuf>,
    /// The CA certificate(s), PEM, that the hook's TLS certificate must chain to: only
    /// these, instead of the built-in roots (a hook on a private CA).
    pub ca_file: Option<PathBuf>,
    /// How long the hook may take, in milliseconds.
    pub timeout_ms: u64,
    pub on_error: HookOnError,
}

impl Default for HookSettings {
    fn default() -> Self {
        Self {
            url: None,
            secret: None,
            secret_file: None,
            ca_file: None,
            timeout_ms: 2000,
            on_error: HookOnError::Deny,
        }
    }
}

impl HookSettings {
    /// Called at load, and again by whoever builds the hook from settings made in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let Some(url) = &self.url else {
            if self.secret.is_some() || self.secret_file.is_some() {
                return Err(ConfigError::key(
                    "hook.url",
                    "a hook secret is set but no hook.url (HOOK_URL): set it, or remove the secret",
                ));
            }
            return Ok(());
        };
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| ConfigError::key("hook.url", format!("not a URL: {e}")))?;
        let loopback = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name == "localhost",
            None => false,
        };
        match parsed.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                return Err(ConfigError::key(
                    "hook.url",
                    "use https:// (plain http:// only to a loopback address)",
                ));
            }
            other => {
                return Err(ConfigError::key(
                    "hook.url",
                    format!("the scheme is {other}: use https://"),
                ));
            }
        }
        if self.secret.is_none() && self.secret_file.is_none() {
            return Err(ConfigError::key(
                "hook.secret_file",
                "a hook needs a secret to sign its requests (hook.secret_file or HOOK_SECRET)",
            ));
        }
        if !(100..=30_000).contains(&self.timeout_ms) {
            return Err(ConfigError::key("hook.timeout_ms", "use 100..=30000"));
        }
        Ok(())
    }
}

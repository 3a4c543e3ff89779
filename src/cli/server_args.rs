//! Where the fleet commands find the server, and, for the commands that onboard, the
//! enrollment key. `crl` and `renew` never onboard, so they do not offer a key.

use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::client::{ApiClient, CredentialKind};
use crate::fsutil;

/// The server and the CA to trust for it.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Base URL of the provisioning server, with its scheme (http:// or https://)
    #[arg(
        long,
        env = "PROVISIOND_SERVER",
        default_value = "http://127.0.0.1:3002",
        value_parser = server_url
    )]
    pub server: String,
    /// CA certificate(s), PEM, to trust: for HTTPS to the server, and as the only CA a
    /// device certificate may chain to (instead of the one the server sends)
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

/// Refuses a URL without `http://` or `https://` on the command line: reqwest would
/// only say "builder error" later, and `host:3002` parses as a URL of scheme `host`.
fn server_url(text: &str) -> Result<String, String> {
    let needs_scheme = || format!("--server needs a scheme, e.g. http://host:3002 (not {text:?})");
    let url = url::Url::parse(text).map_err(|_| needs_scheme())?;
    match url.scheme() {
        "http" | "https" if url.has_host() => Ok(text.to_owned()),
        "http" | "https" => Err(format!("--server names no host: {text}")),
        _ => Err(needs_scheme()),
    }
}

impl ServerArgs {
    /// The pinned CA, if any.
    pub fn pinned_ca(&self) -> Result<Option<String>, CliError> {
        self.ca_file
            .as_ref()
            .map(|path| {
                std::fs::read_to_string(path).map_err(|e| {
                    CliError::LocalIo(anyhow::anyhow!("cannot read {}: {e}", path.display()))
                })
            })
            .transpose()
    }

    /// A client for the server, trusting the pinned CA for HTTPS too.
    pub fn client(&self, connections: usize) -> Result<ApiClient, CliError> {
        let roots = self.pinned_ca()?.unwrap_or_default();
        ApiClient::with_roots(&self.server, connections, roots.as_bytes())
            .map_err(|e| CliError::Failed(e.into()))
    }
}

/// The enrollment key of a server in `key` onboarding mode.
#[derive(Debug, Clone, Args)]
pub struct EnrollmentKeyArgs {
    /// Enrollment key for servers in `key` onboarding mode
    #[arg(long, env = "PROVISIOND_ENROLLMENT_KEY", hide_env_values = true)]
    pub enrollment_key: Option<String>,
    /// File holding the enrollment key (its first line; private to its owner, mode 0600)
    #[arg(
        long,
        env = "PROVISIOND_ENROLLMENT_KEY_FILE",
        value_name = "FILE",
        conflicts_with = "enrollment_key"
    )]
    pub enrollment_key_file: Option<PathBuf>,
    /// The enrollment group to onboard into, for servers with groups in `derived` or
    /// `open` mode (in `key` mode the key names it)
    #[arg(long, env = "PROVISIOND_GROUP", value_name = "NAME")]
    pub group: Option<String>,
}

impl EnrollmentKeyArgs {
    /// `,"group":"<name>"` (JSON-escaped) to add to an onboarding body, or nothing.
    pub fn group_field(&self) -> String {
        self.group.as_ref().map_or_else(String::new, |g| {
            format!(r#","group":{}"#, serde_json::Value::from(g.as_str()))
        })
    }

    /// The key, from the flag, the variable or the file.
    pub fn key(&self) -> Result<Option<String>, CliError> {
        match &self.enrollment_key_file {
            Some(path) => fsutil::read_secret(path)
                .map(Some)
                .map_err(|e| CliError::LocalIo(anyhow::anyhow!("--enrollment-key-file: {e}"))),
            None => Ok(self.enrollment_key.clone()),
        }
    }
}

/// What to tell an operator whose onboarding was answered 401 with a credential of this
/// kind: how to pass a key, or that the one passed was not accepted.
pub fn unauthorized_hint(credential: CredentialKind) -> &'static str {
    match credential {
        CredentialKind::None => {
            "the server wants an enrollment key: pass --enrollment-key KEY or \
             --enrollment-key-file FILE, or set PROVISIOND_ENROLLMENT_KEY or \
             PROVISIOND_ENROLLMENT_KEY_FILE"
        }
        CredentialKind::EnrollmentKey => {
            "the server did not accept this enrollment key: check it against the \
             server's onboarding.enrollment_keys (ENROLLMENT_KEYS)"
        }
        CredentialKind::DeviceKey => {
            "the server did not accept the device's signature: check the device key or \
             the group secret, and that this machine's clock is right"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::server_url;

    #[test]
    fn a_server_url_without_a_scheme_is_refused_with_an_example() {
        for bad in ["prov:3002", "127.0.0.1:3002", "prov", "ftp://prov"] {
            let err = server_url(bad).unwrap_err();
            assert!(err.contains("needs a scheme, e.g. http://"), "{bad}: {err}");
        }
        assert!(server_url("http://prov:3002").is_ok());
        assert!(server_url("https://prov").is_ok());
    }
}

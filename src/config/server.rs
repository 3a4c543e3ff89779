//! `[server]`: where and how the HTTP API listens, and its optional TLS.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::ConfigError;
use super::values::List;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// Actix workers; 0 means one per available core.
    pub workers: usize,
    pub body_limit_bytes: usize,
    pub shutdown_timeout_seconds: u64,
    /// How long a client may take to send a request's head.
    pub request_head_timeout_ms: u64,
    /// How long a client may take to send a request's body.
    pub body_timeout_ms: u64,
    pub keep_alive_seconds: u64,
    /// Proxies (addresses or CIDR blocks) whose X-Forwarded-For is believed.
    pub trusted_proxies: List,
    pub tls: TlsSettings,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 3002,
            workers: 0,
            body_limit_bytes: 64 * 1024,
            shutdown_timeout_seconds: 10,
            request_head_timeout_ms: 5000,
            body_timeout_ms: 10_000,
            keep_alive_seconds: 75,
            trusted_proxies: List::default(),
            tls: TlsSettings::default(),
        }
    }
}

/// HTTPS on the API port: both files, or neither.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

/// A TLS server's certificate chain and key, as rustls takes them.
pub type TlsIdentity = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

impl TlsSettings {
    /// The chain and key the files hold, `None` when TLS is off.
    ///
    /// Errors: a file that does not load or holds no certificate, a key file others may
    /// read (each named by its key).
    pub fn identity(&self) -> Result<Option<TlsIdentity>, ConfigError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (Some(cert), Some(key)) = (&self.cert, &self.key) else {
            return Ok(None);
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ConfigError::key("server.tls.cert", format!("{}: {e}", cert.display())))?;
        if chain.is_empty() {
            return Err(ConfigError::key(
                "server.tls.cert",
                format!("{} holds no certificate", cert.display()),
            ));
        }
        crate::fsutil::check_private(key).map_err(|e| ConfigError::key("server.tls.key", e))?;
        let key_der = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| ConfigError::key("server.tls.key", format!("{}: {e}", key.display())))?;
        Ok(Some((chain, key_der)))
    }
}

/// A rustls server configuration for `identity` (from [`TlsSettings::identity`]) with
/// these client-certificate rules, over aws-lc-rs: what the API and the MQTT listener each
/// make, with their own verifier and ALPN.
///
/// Errors: a key that does not fit the certificate (named as `server.tls.key`).
pub fn rustls_server_config(
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
    clients: std::sync::Arc<dyn rustls::server::danger::ClientCertVerifier>,
    (chain, key): TlsIdentity,
) -> anyhow::Result<rustls::ServerConfig> {
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(clients)
        .with_single_cert(chain, key)
        .map_err(|e| {
            ConfigError::key(
                "server.tls.key",
                format!("does not fit the certificate: {e}"),
            )
        })?)
}

impl ServerSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.body_limit_bytes < 20 * 1024 {
            return Err(ConfigError::key(
                "server.body_limit_bytes",
                "must be at least 20480 so that a 16 KiB CSR fits",
            ));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::key(
                "server.tls.cert",
                "set both server.tls.cert and server.tls.key, or neither",
            ));
        }
        Ok(())
    }
}

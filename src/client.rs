//! A typed client for the provisioning API, used by the fleet commands and the tests.

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use reqwest::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

/// What went wrong with a call, sorted by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused the request (4xx other than 429): fix the request, do not retry.
    #[error("{}", refusal(code, message, *status))]
    Refused {
        status: StatusCode,
        code: String,
        message: String,
    },
    /// The server is busy or cannot serve now (429, 5xx): retry later.
    #[error("{}", refusal(code, message, *status))]
    Unavailable {
        status: StatusCode,
        code: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused, reset, timed out.
    #[error("network error: {}", network(.0))]
    Network(#[from] reqwest::Error),
}

/// The server's code and message on one line, then the HTTP status.
fn refusal(code: &str, message: &str, status: StatusCode) -> String {
    if message.is_empty() || message == code {
        format!("{code} (HTTP {})", status.as_u16())
    } else {
        format!("{code}: {message} (HTTP {})", status.as_u16())
    }
}

impl ClientError {
    /// The server's error code, or `network_error`.
    pub fn code(&self) -> &str {
        match self {
            ClientError::Refused { code, .. } | ClientError::Unavailable { code, .. } => code,
            ClientError::Network(_) => "network_error",
        }
    }

    /// Worth retrying as is: the server asked for patience (429 or 503).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ClientError::Unavailable { status, .. }
            if *status == StatusCode::TOO_MANY_REQUESTS || *status == StatusCode::SERVICE_UNAVAILABLE)
    }

    /// A 401: the caller's credential (enrollment key, device key, proof) was refused.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, ClientError::Refused { status, .. } if *status == StatusCode::UNAUTHORIZED)
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// How a client proves it may onboard.
#[derive(Clone, Default)]
pub enum Credential {
    /// The server is in `open` mode.
    #[default]
    None,
    /// An enrollment key (`key` mode).
    EnrollmentKey(String),
    /// The device's own derived key (`derived` mode): each request is signed with it.
    DeviceKey([u8; 32]),
}

/// What kind of credential a client used, for telling it what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    None,
    EnrollmentKey,
    DeviceKey,
}

impl Credential {
    pub fn enrollment_key(key: Option<String>) -> Self {
        key.map_or(Self::None, Self::EnrollmentKey)
    }

    pub fn kind(&self) -> CredentialKind {
        match self {
            Credential::None => CredentialKind::None,
            Credential::EnrollmentKey(_) => CredentialKind::EnrollmentKey,
            Credential::DeviceKey(_) => CredentialKind::DeviceKey,
        }
    }

    fn authorization(&self, device_id: &str) -> Option<String> {
        match self {
            Credential::None => None,
            Credential::EnrollmentKey(key) => Some(format!("Bearer {key}")),
            Credential::DeviceKey(key) => Some(crate::auth::derived::authorization(
                key,
                device_id,
                crate::clock::unix_now(),
            )),
        }
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::None => "Credential::None",
            Credential::EnrollmentKey(_) => "Credential::EnrollmentKey([redacted])",
            Credential::DeviceKey(_) => "Credential::DeviceKey([redacted])",
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Onboarded {
    pub provisioning_token: String,
    pub expires_in: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Signed {
    pub certificate: String,
    pub ca_certificate: String,
    pub serial_number: String,
    pub expires_at: String,
    /// The server's clock when it answered (RFC 3339).
    #[serde(default)]
    pub timestamp: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    /// Sent as onboarding's `group`, when set.
    group: Option<String>,
}

impl ApiClient {
    /// A client for the server at `base` (`http://host:port`), keeping up to
    /// `connections` connections open for reuse.
    pub fn new(base: &str, connections: usize) -> Result<Self, reqwest::Error> {
        Self::with_roots(base, connections, &[])
    }

    /// A client that also trusts these CA certificates (PEM) for HTTPS, for servers
    /// whose certificate comes from their own provisioning CA.
    pub fn with_roots(
        base: &str,
        connections: usize,
        roots_pem: &[u8],
    ) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        if !roots_pem.is_empty() {
            for root in reqwest::Certificate::from_pem_bundle(roots_pem)? {
                builder = builder.add_root_certificate(root);
            }
        }
        let http = builder.build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            group: None,
        })
    }

    /// Onboards into enrollment group `group` (the body's `group`), or the server's
    /// choice with `None`.
    pub fn with_group(mut self, group: Option<String>) -> Self {
        self.group = group;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn onboard(
        &self,
        device_id: &str,
        credential: &Credential,
    ) -> Result<Onboarded, ClientError> {
        let mut request = self
            .http
            .post(format!("{}/api/v1/onboarding", self.base))
            .json(&match &self.group {
                Some(group) => json!({ "device_id": device_id, "group": group }),
                None => json!({ "device_id": device_id }),
            });
        if let Some(authorization) = credential.authorization(device_id) {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        Ok(answer(request.send().await?).await?.json().await?)
    }

    pub async fn sign_csr(
        &self,
        token: &str,
        device_id: &str,
        csr_pem: &str,
    ) -> Result<Signed, ClientError> {
        let request = self
            .http
            .post(format!("{}/api/v1/sign-csr", self.base))
            .bearer_auth(token)
            .json(&json!({ "device_id": device_id, "csr": csr_pem }));
        Ok(answer(request.send().await?).await?.json().await?)
    }

    /// Renews a certificate: `proof` is the signed JWT (with the certificate in `x5c`),
    /// or `None` when this client presents the certificate over TLS.
    pub async fn renew(
        &self,
        device_id: &str,
        csr_pem: &str,
        proof: Option<&str>,
    ) -> Result<Signed, ClientError> {
        let mut request = self
            .http
            .post(format!("{}/api/v1/renew", self.base))
            .json(&json!({ "device_id": device_id, "csr": csr_pem }));
        if let Some(proof) = proof {
            request = request.bearer_auth(proof);
        }
        Ok(answer(request.send().await?).await?.json().await?)
    }

    pub async fn ca(&self) -> Result<String, ClientError> {
        let request = self.http.get(format!("{}/api/v1/ca", self.base));
        Ok(answer(request.send().await?).await?.text().await?)
    }

    /// Every issuer's chain (`/api/v1/ca?bundle=all`), PEM.
    pub async fn ca_bundle(&self) -> Result<String, ClientError> {
        let request = self.http.get(format!("{}/api/v1/ca?bundle=all", self.base));
        Ok(answer(request.send().await?).await?.text().await?)
    }

    /// The current CRL, DER: the default issuer's, or `issuer`'s (`[[issuers]]`).
    pub async fn crl(&self, issuer: Option<&str>) -> Result<Vec<u8>, ClientError> {
        let query = issuer.map_or_else(String::new, |name| {
            format!(
                "?issuer={}",
                url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()
            )
        });
        let request = self.http.get(format!("{}/api/v1/crl{query}", self.base));
        Ok(answer(request.send().await?).await?.bytes().await?.to_vec())
    }

    pub async fn health(&self) -> Result<Value, ClientError> {
        let request = self.http.get(format!("{}/health", self.base));
        Ok(answer(request.send().await?).await?.json().await?)
    }
}

/// An error and its causes on one line: reqwest's own text leaves out the reason
/// ("connection refused") that the operator needs.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// A network error as the operator can act on it: what to do first, when we can tell,
/// then the raw cause.
fn network(e: &reqwest::Error) -> String {
    let causes = with_causes(e);
    let hint = if causes.contains("UnknownIssuer") || causes.contains("invalid peer certificate") {
        Some(
            "the server's TLS certificate is not from a CA this client trusts: pass \
             --ca-file with the CA that issued it (for a provisiond certificate, its \
             certs/ca.crt)",
        )
    } else if causes.contains("invalid HTTP version") {
        // A TLS server answers a plain HTTP request with a TLS alert, which hyper reads
        // as a response of a nonsensical HTTP version.
        Some(
            "the server speaks HTTPS: use https:// in --server, and --ca-file with the CA \
             of its certificate",
        )
    } else if causes.contains("InvalidContentType") {
        // The reverse: a TLS handshake answered in plain HTTP.
        Some("the server speaks plain HTTP, not HTTPS: use http:// in --server")
    } else {
        None
    };
    match hint {
        Some(hint) => format!("{hint}; cause: {causes}"),
        None => causes,
    }
}

/// Passes a success through; turns anything else into a [`ClientError`], reading the
/// server's `{"error": {"code", "message"}}` when there is one.
async fn answer(response: Response) -> Result<Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or(status.canonical_reason().unwrap_or("error"))
        .to_owned();
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
        Err(ClientError::Refused {
            status,
            code,
            message,
        })
    } else {
        Err(ClientError::Unavailable {
            status,
            code,
            message,
            retry_after,
        })
    }
}

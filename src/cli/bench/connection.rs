//! The load generator's side of the wire: one HTTP/1.1 connection per concurrency slot,
//! no pool and no locks.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;

use crate::cli::CliError;

/// Where the requests go: a plain-HTTP `host:port`.
pub(super) struct Target {
    authority: String,
}

impl Target {
    pub(super) fn parse(server: &str) -> Result<Self, CliError> {
        let uri: Uri = server
            .parse()
            .map_err(|e| CliError::Failed(anyhow::anyhow!("--server {server}: {e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(CliError::Failed(anyhow::anyhow!(
                "bench drives plain http:// servers; --server is {server}"
            )));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| CliError::Failed(anyhow::anyhow!("--server {server} has no host")))?;
        Ok(Self {
            authority: authority.to_string(),
        })
    }
}

/// A request's shape: what the bodies are, and whether each gets a connection of its own.
#[derive(Debug, Clone, Copy)]
pub(super) struct Wire {
    pub content_type: &'static str,
    /// A new connection per request, closed after its response: what a server that
    /// closes each one (OpenSSL's OCSP responder) forces, and the cost of TCP measured.
    pub connection_per_request: bool,
}

/// One keep-alive connection, reopened after a failure (or, with
/// [`Wire::connection_per_request`], for every request).
pub(super) struct Connection {
    sender: Option<SendRequest<Full<Bytes>>>,
    wire: Wire,
}

impl Connection {
    /// Connects now, so that the connection is made before the clock starts.
    pub(super) async fn connect(target: &Target, wire: Wire) -> std::io::Result<Self> {
        Ok(Self {
            sender: Some(Self::open(target).await?),
            wire,
        })
    }

    async fn open(target: &Target) -> std::io::Result<SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(&target.authority).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// The response body on a 2xx, the error code otherwise (the JSON error's `code`, or
    /// `http_<status>`; `network_error` when the connection failed).
    pub(super) async fn send(
        &mut self,
        target: &Target,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Bytes,
    ) -> Result<Bytes, String> {
        let result = self.try_send(target, method, path, bearer, body).await;
        if self.wire.connection_per_request
            || matches!(&result, Err(code) if code == "network_error")
        {
            self.sender = None;
        }
        result
    }

    async fn try_send(
        &mut self,
        target: &Target,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Bytes,
    ) -> Result<Bytes, String> {
        let network = |_| "network_error".to_owned();
        if self.sender.is_none() {
            self.sender = Some(Self::open(target).await.map_err(network)?);
        }
        let sender = self.sender.as_mut().expect("just opened");
        sender
            .ready()
            .await
            .map_err(|_| "network_error".to_owned())?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &target.authority)
            .header(CONTENT_TYPE, self.wire.content_type);
        if let Some(token) = bearer {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(body))
            .expect("the request is well formed");
        let response = sender
            .send_request(request)
            .await
            .map_err(|_| "network_error".to_owned())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|_| "network_error".to_owned())?
            .to_bytes();
        if status.is_success() {
            return Ok(body);
        }
        let code = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("http_{}", status.as_u16()));
        Err(code)
    }
}

//! The real server, in-process on port 0, and a client for its API.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use provisiond::config::{FallbackPolicy, OnboardingMode, Settings};
use provisiond::secret::Secret;
use provisiond::startup::Application;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

use super::redis::RedisServer;

/// The JWT secret tests configure, so that they can forge tokens to test refusals.
pub const TEST_JWT_SECRET: &str = "test-secret-test-secret-test-secret!";

/// Settings for a test server: loopback, port 0, open onboarding, fast health checks.
pub fn test_settings(redis: Option<&RedisServer>, certs: &Path) -> Settings {
    let mut s = Settings::default();
    s.server.host = "127.0.0.1".into();
    s.server.port = 0;
    s.server.workers = 2;
    s.server.shutdown_timeout_seconds = 1;
    s.ca.dir = certs.to_owned();
    s.onboarding.mode = OnboardingMode::Open;
    s.tokens.jwt_secret = Some(Secret::new(TEST_JWT_SECRET));
    s.redis.fallback = FallbackPolicy::Memory;
    s.redis.health_check_interval_ms = 100;
    s.redis.connect_timeout_ms = 300;
    s.redis.response_timeout_ms = 1000;
    s.redis.count_interval_seconds = 0.2;
    // Tests that want rate limits turn them on.
    s.rate_limit.per_ip_per_minute = 0;
    s.rate_limit.per_device_per_minute = 0;
    match redis {
        Some(redis) => s.redis.url = Some(redis.url()),
        None => s.redis.enabled = false,
    }
    s
}

/// The enrollment key of [`TestApp::spawn_key_mode`].
pub const FLEET_KEY: &str = "fleet-key-fleet-key-fleet-key-fleet-key";

pub struct TestApp {
    pub address: String,
    /// The MQTT listener's port, when `mqtt.listen` is set.
    pub mqtt_port: Option<u16>,
    pub client: reqwest::Client,
    pub certs: PathBuf,
    handle: ServerHandle,
    _certs_dir: Option<Arc<TempDir>>,
}

impl TestApp {
    /// A server with its own temporary certs directory.
    pub async fn spawn(redis: Option<&RedisServer>) -> Self {
        Self::spawn_with(redis, |_| {}).await
    }

    pub async fn spawn_with(
        redis: Option<&RedisServer>,
        adjust: impl FnOnce(&mut Settings),
    ) -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let mut settings = test_settings(redis, dir.path());
        adjust(&mut settings);
        let mut app = Self::spawn_settings(settings).await;
        app._certs_dir = Some(dir);
        app
    }

    /// A server in `key` onboarding mode whose one enrollment key is [`FLEET_KEY`].
    pub async fn spawn_key_mode(redis: Option<&RedisServer>) -> Self {
        Self::spawn_with(redis, |s| {
            s.onboarding.mode = provisiond::config::OnboardingMode::Key;
            s.onboarding.enrollment_keys =
                provisiond::config::KeyList(vec![Secret::new(FLEET_KEY)]);
        })
        .await
    }

    /// A server from exactly these settings (the caller owns the certs directory).
    pub async fn spawn_settings(settings: Settings) -> Self {
        // What `Settings::load` would refuse is not a setting a test may run with.
        settings.validate().expect("the test's settings are valid");
        let certs = settings.ca.dir.clone();
        let app = Application::build(settings).await.expect("server builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let mqtt_port = app.mqtt_address().map(|a| a.port());
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        Self {
            address,
            mqtt_port,
            client: reqwest::Client::new(),
            certs,
            handle,
            _certs_dir: None,
        }
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn onboard(&self, device_id: &str) -> Response {
        self.client
            .post(self.url("/api/v1/onboarding"))
            .json(&json!({ "device_id": device_id }))
            .send()
            .await
            .unwrap()
    }

    /// Onboards with this `Authorization` header (a key, or a derived-mode signature).
    pub async fn onboard_with(&self, device_id: &str, authorization: &str) -> Response {
        self.client
            .post(self.url("/api/v1/onboarding"))
            .header("authorization", authorization)
            .json(&json!({ "device_id": device_id }))
            .send()
            .await
            .unwrap()
    }

    /// Onboards and returns the token, insisting on success.
    pub async fn token_for(&self, device_id: &str) -> String {
        let response = self.onboard(device_id).await;
        assert_eq!(response.status(), StatusCode::OK, "onboarding {device_id}");
        let body: Value = response.json().await.unwrap();
        body["provisioning_token"].as_str().unwrap().to_owned()
    }

    pub async fn sign_csr(&self, token: &str, device_id: &str, csr: &str) -> Response {
        self.client
            .post(self.url("/api/v1/sign-csr"))
            .bearer_auth(token)
            .json(&json!({ "device_id": device_id, "csr": csr }))
            .send()
            .await
            .unwrap()
    }

    /// The CA chain the server serves.
    pub async fn ca_pem(&self) -> String {
        let response = self
            .client
            .get(self.url("/api/v1/ca"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    }

    /// The body of a GET, as text, whatever the status.
    pub async fn get_text(&self, path: &str) -> String {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The CRL, PEM, as `/api/v1/crl?format=pem` serves it.
    pub async fn crl_pem(&self) -> String {
        self.get_text("/api/v1/crl?format=pem").await
    }

    /// The CRL as OpenSSL prints it, its signature checked against the CA.
    pub async fn crl_text(&self) -> String {
        let dir = tempfile::tempdir().unwrap();
        let (crl, ca) = (dir.path().join("crl.pem"), dir.path().join("ca.crt"));
        std::fs::write(&crl, self.crl_pem().await).unwrap();
        std::fs::write(&ca, self.ca_pem().await).unwrap();
        super::pki::openssl_crl(&crl, "PEM", &ca)
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.get_text("/metrics").await
    }

    /// GET a JSON document with `Authorization: Bearer <key>`, insisting on a 200.
    pub async fn get_json_as(&self, key: &str, path: &str) -> Value {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.unwrap()
    }

    /// POST a JSON body with `Authorization: Bearer <key>`; the response, whatever it is.
    pub async fn post_json_as(&self, key: &str, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// DELETE with `Authorization: Bearer <key>`; the response, whatever it is.
    pub async fn delete_as(&self, key: &str, path: &str) -> Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }

    /// GET a JSON document.
    pub async fn get_json(&self, path: &str) -> Value {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn health(&self) -> Value {
        self.get_json("/health").await
    }

    /// Polls /health until no primary lacks the replicas `redis.wait_replicas` asks for:
    /// until a health check has seen them online, writes are refused up front.
    pub async fn wait_for_replicas(&self, within: Duration) -> Value {
        self.wait_for_health(within, |h| {
            h["redis"]["replicasMissing"]
                .as_array()
                .is_some_and(Vec::is_empty)
        })
        .await
    }

    /// Polls /health until `ready` holds for it, or panics after `within`.
    pub async fn wait_for_health(&self, within: Duration, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let health = self.health().await;
            if ready(&health) {
                return health;
            }
            assert!(
                Instant::now() < deadline,
                "health never reached the expected state: {health}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The error code of an error response, checking its shape on the way.
pub async fn error_code(response: Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.expect("error bodies are JSON");
    assert_eq!(body["success"], false, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    // Shown only when the test fails: which refusal it was, not just its code.
    eprintln!("{status}: {}", body["error"]["message"]);
    (
        status,
        body["error"]["code"].as_str().expect("a code").to_owned(),
    )
}

/// The JWT's `jti`, read from its payload (no verification: for checking the store).
pub fn jti_of(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: Value = serde_json::from_slice(&bytes).unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

/// A server on HTTPS, its certificate made by `provisiond ca server-cert --dns localhost`
/// from the CA in `certs` (as an operator would make it); its `https://localhost:<port>`
/// base URL.
pub async fn spawn_tls(certs: &Path, adjust: impl FnOnce(&mut Settings)) -> (TestApp, String) {
    let made = super::bin::run(
        &["ca", "server-cert", "--dns", "localhost"],
        &[("CERTS_DIR", certs.to_str().unwrap())],
    )
    .await;
    assert!(made.status.success(), "{}", super::bin::text(&made));
    let mut settings = test_settings(None, certs);
    settings.server.tls.cert = Some(certs.join("server.crt"));
    settings.server.tls.key = Some(certs.join("server.key"));
    adjust(&mut settings);
    let app = TestApp::spawn_settings(settings).await;
    let port = app.address.rsplit(':').next().unwrap().to_owned();
    (app, format!("https://localhost:{port}"))
}

/// A client that trusts the CA in `ca_file` for HTTPS and, with `identity_pem`
/// (certificate and key, PEM), presents it as its TLS client certificate.
pub fn https_client(ca_file: &Path, identity_pem: Option<&str>) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(&std::fs::read(ca_file).unwrap()).unwrap();
    let mut builder = reqwest::Client::builder().add_root_certificate(root);
    if let Some(identity) = identity_pem {
        builder = builder.identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

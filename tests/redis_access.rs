//! Redis as production runs it, locked down: a least-privilege ACL user, a wrong
//! password, TLS with a private CA and client certificates. What Redis refuses is told
//! apart from an outage in `/health` and the log, and the server works with the
//! permissions and files the README lists. Real `redis-server` processes.

mod common;

use std::time::Duration;

use common::app::test_settings;
use common::pki::quick_csr;
use common::redis::free_port;
use common::redis_tls::RedisTlsFiles;
use common::{RedisServer, TestApp};
use provisiond::config::Settings;
use provisiond::secret::Secret;
use reqwest::StatusCode;
use serde_json::Value;

const WITHIN: Duration = Duration::from_secs(10);
const PASSWORD: &str = "app-user-password-app-user";

/// Onboards and signs through `app`; answers the serial.
async fn certificate(app: &TestApp, device: &str) -> String {
    let token = app.token_for(device).await;
    let response = app.sign_csr(&token, device, &quick_csr(device)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["serial_number"].as_str().unwrap().to_owned()
}

/// The certificate's record is in Redis, in its bucket: the store was Redis, not memory.
fn recorded_in_redis(redis: &RedisServer, device: &str) -> bool {
    let keys: Vec<String> = redis.cmd(&["KEYS", "mqtt-lite:certs:*"]);
    keys.iter().any(|key| {
        let fields: Vec<Vec<u8>> = redis::cmd("HVALS")
            .arg(key)
            .query(&mut redis.connection())
            .unwrap();
        fields
            .iter()
            .any(|v| v.windows(device.len()).any(|w| w == device.as_bytes()))
    })
}

fn as_user(redis: &RedisServer, certs: &std::path::Path, user: &str) -> Settings {
    let mut s = test_settings(Some(redis), certs);
    s.redis.username = Some(user.into());
    s.redis.password = Some(Secret::new(PASSWORD));
    s.admin.keys = provisiond::config::KeyList(vec![Secret::new(ADMIN)]);
    s
}

const ADMIN: &str = "redis-access-admin-key-redis-access";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_a_permission_is_told_apart_from_an_outage_and_works_once_granted() {
    let mut redis = RedisServer::start();
    let _: () = redis.cmd(&[
        "ACL",
        "SETUSER",
        "app",
        "on",
        &format!(">{PASSWORD}"),
        "~mqtt-lite:*",
        "+@all",
        "-@dangerous",
    ]);
    let certs = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_settings(as_user(&redis, certs.path(), "app")).await;

    let health = app
        .wait_for_health(WITHIN, |h| h["redis"]["problem"] == "configuration")
        .await;
    assert_eq!(health["status"], "degraded", "{health}");
    let reason = health["redis"]["reason"].as_str().unwrap();
    assert!(reason.contains("NOPERM"), "{reason}");
    assert!(reason.contains("'info'"), "{reason}");
    assert!(reason.contains("ACL SETUSER app"), "{reason}");
    assert!(!reason.contains(PASSWORD), "{reason}");

    // Given what the README lists (and nothing more), it is used at the next check,
    // with no restart, and every step of a certificate's life runs under that user.
    let _: () = redis.cmd(&[
        "ACL",
        "SETUSER",
        "app",
        "reset",
        "on",
        &format!(">{PASSWORD}"),
        "~mqtt-lite:*",
        "-@all",
        "+@read",
        "+@write",
        "+@scripting",
        "+@connection",
        "+@keyspace",
        "+info",
        "+time",
        "+wait",
        "+cluster|slots",
        "+config|get",
    ]);
    let health = app.wait_for_health(WITHIN, |h| h["status"] == "ok").await;
    assert_eq!(health["redis"]["problem"], Value::Null, "{health}");
    assert_eq!(health["redis"]["reason"], Value::Null, "{health}");
    let serial = certificate(&app, "acl-device").await;
    assert!(recorded_in_redis(&redis, "acl-device"));
    // The CRL follows within its two-second look, from the list this user may read.
    let deadline = std::time::Instant::now() + WITHIN;
    while app
        .client
        .get(app.url("/api/v1/crl"))
        .send()
        .await
        .unwrap()
        .status()
        != StatusCode::OK
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no CRL under the granted user"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let revoked = app
        .post_json_as(
            ADMIN,
            &format!("/api/v1/certificates/{serial}/revoke"),
            &serde_json::json!({ "reason": "keyCompromise" }),
        )
        .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let listed = app
        .post_json_as(
            ADMIN,
            "/api/v1/crl/entries",
            &serde_json::json!({ "serial": "0A0B0C" }),
        )
        .await;
    assert_eq!(listed.status(), StatusCode::OK);
    let crl = app.crl_text().await;
    assert!(crl.contains(&format!("Serial Number: {serial}")), "{crl}");
    assert!(crl.contains("Serial Number: 0A0B0C"), "{crl}");

    // An outage is an outage.
    redis.kill();
    let health = app
        .wait_for_health(WITHIN, |h| h["redis"]["problem"] == "unreachable")
        .await;
    assert_eq!(health["status"], "degraded", "{health}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_configuration_problem() {
    let redis = RedisServer::start();
    let _: () = redis.cmd(&[
        "ACL",
        "SETUSER",
        "app",
        "on",
        ">another-password-entirely",
        "~*",
        "+@all",
    ]);
    let certs = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_settings(as_user(&redis, certs.path(), "app")).await;
    let health = app
        .wait_for_health(WITHIN, |h| h["redis"]["problem"] == "configuration")
        .await;
    let reason = health["redis"]["reason"].as_str().unwrap();
    assert!(reason.contains("redis.password"), "{reason}");
    assert!(!reason.contains(PASSWORD), "{reason}");
    app.stop().await;
}

/// A Redis that speaks only TLS with its own CA and requires client certificates.
fn tls_redis(files: &RedisTlsFiles) -> (RedisServer, u16) {
    let tls_port = free_port();
    let mut args: Vec<String> = files.server_args(tls_port);
    args.extend(["--save", "", "--appendonly", "no"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (RedisServer::start_with(&args), tls_port)
}

fn over_tls(redis: &RedisServer, tls_port: u16, certs: &std::path::Path) -> Settings {
    let mut s = test_settings(Some(redis), certs);
    s.redis.url = Some(format!("rediss://127.0.0.1:{tls_port}"));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_a_private_ca_and_a_client_certificate() {
    let files = RedisTlsFiles::new();
    let (redis, tls_port) = tls_redis(&files);
    let certs = tempfile::tempdir().unwrap();

    // The system trust store does not know the private CA.
    let app = TestApp::spawn_settings(over_tls(&redis, tls_port, certs.path())).await;
    let health = app
        .wait_for_health(WITHIN, |h| h["redis"]["problem"] == "configuration")
        .await;
    let reason = health["redis"]["reason"].as_str().unwrap();
    assert!(reason.contains("redis.tls_ca_file"), "{reason}");
    app.stop().await;

    // Trusted, but no client certificate: Redis refuses the handshake.
    let mut settings = over_tls(&redis, tls_port, certs.path());
    settings.redis.tls_ca_file = Some(files.ca.clone());
    let app = TestApp::spawn_settings(settings).await;
    let health = app
        .wait_for_health(WITHIN, |h| h["redis"]["problem"] == "configuration")
        .await;
    assert_eq!(health["status"], "degraded", "{health}");
    let reason = health["redis"]["reason"].as_str().unwrap();
    assert!(reason.contains("redis.tls_cert_file"), "{reason}");
    app.stop().await;

    // Both: served from Redis.
    let mut settings = over_tls(&redis, tls_port, certs.path());
    settings.redis.tls_ca_file = Some(files.ca.clone());
    settings.redis.tls_cert_file = Some(files.client_cert.clone());
    settings.redis.tls_key_file = Some(files.client_key.clone());
    let app = TestApp::spawn_settings(settings).await;
    app.wait_for_health(WITHIN, |h| h["status"] == "ok").await;
    certificate(&app, "tls-device").await;
    assert!(recorded_in_redis(&redis, "tls-device"));
    app.stop().await;
}

/// A process the test started, stopped when the test ends, passed or not.
struct Spawned(std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn with_tls_files(s: &mut Settings, files: &RedisTlsFiles) {
    s.redis.tls = true;
    s.redis.tls_ca_file = Some(files.ca.clone());
    s.redis.tls_cert_file = Some(files.client_cert.clone());
    s.redis.tls_key_file = Some(files.client_key.clone());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_over_tls_with_a_private_ca() {
    let files = RedisTlsFiles::new();
    let (primary, primary_tls) = tls_redis(&files);
    let dir = tempfile::tempdir().unwrap();
    let sentinel_port = free_port();
    let conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "{}bind 127.0.0.1\ndir {}\nsentinel monitor tlsmaster 127.0.0.1 {primary_tls} 1\n",
            files.sentinel_conf(sentinel_port),
            dir.path().display()
        ),
    )
    .unwrap();
    let _sentinel = Spawned(
        std::process::Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let certs = tempfile::tempdir().unwrap();
    let mut settings = test_settings(None, certs.path());
    settings.redis.enabled = true;
    settings.redis.sentinels = provisiond::config::List(vec![format!("127.0.0.1:{sentinel_port}")]);
    settings.redis.sentinel_master = Some("tlsmaster".into());
    with_tls_files(&mut settings, &files);
    let app = TestApp::spawn_settings(settings).await;
    let health = app
        .wait_for_health(Duration::from_secs(20), |h| h["status"] == "ok")
        .await;
    assert_eq!(health["redis"]["mode"], "sentinel", "{health}");
    certificate(&app, "sentinel-tls-device").await;
    assert!(recorded_in_redis(&primary, "sentinel-tls-device"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls_with_a_private_ca() {
    let files = RedisTlsFiles::new();
    let nodes: Vec<(RedisServer, u16)> = (0..3)
        .map(|_| {
            let tls_port = free_port();
            let mut args = files.server_args(tls_port);
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--tls-cluster",
                    "yes",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ]
                .map(String::from),
            );
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            (
                RedisServer::start_on(common::redis::free_cluster_port, &args),
                tls_port,
            )
        })
        .collect();
    let created = std::process::Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(nodes.iter().map(|(n, _)| format!("127.0.0.1:{}", n.port())))
        .args(["--cluster-yes"])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let certs = tempfile::tempdir().unwrap();
    let mut settings = test_settings(None, certs.path());
    settings.redis.enabled = true;
    settings.redis.cluster_nodes = provisiond::config::List(
        nodes
            .iter()
            .map(|(_, tls)| format!("rediss://127.0.0.1:{tls}"))
            .collect(),
    );
    with_tls_files(&mut settings, &files);
    let app = TestApp::spawn_settings(settings).await;
    let health = app
        .wait_for_health(Duration::from_secs(30), |h| h["status"] == "ok")
        .await;
    assert_eq!(health["redis"]["primaries"], 3, "{health}");
    for device in ["cluster-tls-a", "cluster-tls-b", "cluster-tls-c"] {
        certificate(&app, device).await;
        assert!(
            nodes.iter().any(|(n, _)| recorded_in_redis(n, device)),
            "{device}"
        );
    }
    app.stop().await;
}

//! Revocations and blocks that hold, and a CRL no cache or operator can roll back: what
//! the lifecycle review found, each driven over HTTP against real servers and a real
//! Redis.

mod common;

use std::time::Duration;

use common::app::test_settings;
use common::bin::{run, text};
use common::pki::{crl_field, openssl_crl, quick_csr};
use common::{RedisServer, TestApp, error_code};
use provisiond::config::KeyList;
use provisiond::secret::Secret;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN: &str = "revocation-admin-key-revocation-admin";
const WITHIN: Duration = Duration::from_secs(10);

/// Two instances on one Redis and one certs directory, as behind a load balancer.
async fn two_instances(redis: &RedisServer, certs: &std::path::Path) -> (TestApp, TestApp) {
    let settings = || {
        let mut s = test_settings(Some(redis), certs);
        s.admin.keys = KeyList(vec![Secret::new(ADMIN)]);
        s
    };
    let a = TestApp::spawn_settings(settings()).await;
    let b = TestApp::spawn_settings(settings()).await;
    (a, b)
}

async fn admin_post(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.post_json_as(ADMIN, path, &body).await
}

async fn admin_get(app: &TestApp, path: &str) -> Value {
    app.get_json_as(ADMIN, path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_blocked_through_another_instance_gets_nothing_for_a_token_held_in_memory() {
    let mut redis = RedisServer::start();
    let certs = tempfile::tempdir().unwrap();
    let (a, b) = two_instances(&redis, certs.path()).await;

    // During an outage, instance A issues the token into its own memory.
    redis.kill();
    a.wait_for_health(WITHIN, |h| h["status"] == "degraded")
        .await;
    let token = a.token_for("blocked-later").await;
    redis.restart();
    a.wait_for_health(WITHIN, |h| h["status"] == "ok").await;
    b.wait_for_health(WITHIN, |h| h["status"] == "ok").await;

    // The operator blocks the device through instance B, which never saw the token.
    let response = admin_post(
        &b,
        "/api/v1/devices/blocked-later/revoke",
        json!({ "reason": "keyCompromise", "block": true }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    let csr = quick_csr("blocked-later");
    let response = a.sign_csr(&token, "blocked-later", &csr).await;
    assert_eq!(
        error_code(response).await,
        (StatusCode::FORBIDDEN, "device_blocked".into())
    );
    // Nothing was recorded, through either instance.
    for app in [&a, &b] {
        let status = admin_get(app, "/api/v1/devices/blocked-later").await;
        assert_eq!(status["certificates"], json!([]), "{status}");
        assert!(status["blocked"].is_object(), "{status}");
    }
    // And no certificate was counted as issued.
    let metrics = a.metrics().await;
    assert!(
        metrics.contains(r#"provisiond_tokens_rejected_total{reason="device_blocked"} 1"#),
        "{metrics}"
    );
}

/// Onboards and signs; the sign-csr answer.
async fn issue(app: &TestApp, device: &str) -> Value {
    let token = app.token_for(device).await;
    let response = app.sign_csr(&token, device, &quick_csr(device)).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn revoke_serial(app: &TestApp, serial: &str) {
    let response = admin_post(
        app,
        &format!("/api/v1/certificates/{serial}/revoke"),
        json!({ "reason": "keyCompromise" }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// The CRL number as `openssl crl -text` prints it (decimal while it fits a long).
fn crl_number(text: &str) -> u64 {
    crl_field(text, "CRL Number").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_that_revalidates_after_a_revocation_gets_the_new_crl() {
    let app = TestApp::spawn_with(None, |s| s.admin.keys = KeyList(vec![Secret::new(ADMIN)])).await;
    let before = app.client.get(app.url("/api/v1/crl")).send().await.unwrap();
    assert_eq!(before.headers()["cache-control"], "public, no-cache");
    let old_tag = before.headers()["etag"].to_str().unwrap().to_owned();

    let serial = issue(&app, "cached-1").await["serial_number"]
        .as_str()
        .unwrap()
        .to_owned();
    revoke_serial(&app, &serial).await;

    let after = app
        .client
        .get(app.url("/api/v1/crl?format=pem"))
        .header("if-none-match", &old_tag)
        .send()
        .await
        .unwrap();
    assert_eq!(
        after.status(),
        StatusCode::OK,
        "the old tag no longer matches"
    );
    let dir = tempfile::tempdir().unwrap();
    let (crl, ca) = (dir.path().join("crl.pem"), dir.path().join("ca.crt"));
    std::fs::write(&crl, after.bytes().await.unwrap()).unwrap();
    std::fs::write(&ca, app.ca_pem().await).unwrap();
    let text = openssl_crl(&crl, "PEM", &ca);
    assert!(text.contains(&format!("Serial Number: {serial}")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crl_number_never_goes_back_across_a_restart_without_redis() {
    let certs = tempfile::tempdir().unwrap();
    let settings = || {
        let mut s = test_settings(None, certs.path());
        s.admin.keys = KeyList(vec![Secret::new(ADMIN)]);
        s
    };
    let first = TestApp::spawn_settings(settings()).await;
    let serial = issue(&first, "numbered-1").await["serial_number"]
        .as_str()
        .unwrap()
        .to_owned();
    revoke_serial(&first, &serial).await;
    let published = crl_number(&first.crl_text().await);
    first.stop().await;

    let second = TestApp::spawn_settings(settings()).await;
    let text = second.crl_text().await;
    assert!(text.contains(&format!("Serial Number: {serial}")), "{text}");
    assert!(
        crl_number(&text) >= published,
        "CRL number {} after the restart, {published} before",
        crl_number(&text)
    );
    let kept: u64 = std::fs::read_to_string(certs.path().join("crl-number"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(kept, crl_number(&text));
}

/// A server that answers every request with `body` as a CRL: an old CRL replayed, or a
/// cache that kept one.
async fn replaying(body: Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/pkix-crl\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body).await;
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisiond_crl_refuses_a_crl_older_than_the_one_installed() {
    let app = TestApp::spawn_with(None, |s| s.admin.keys = KeyList(vec![Secret::new(ADMIN)])).await;
    let old = app
        .client
        .get(app.url("/api/v1/crl"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let serial = issue(&app, "replayed-1").await["serial_number"]
        .as_str()
        .unwrap()
        .to_owned();
    revoke_serial(&app, &serial).await;

    let dir = tempfile::tempdir().unwrap();
    let (out, ca, marker) = (
        dir.path().join("crl.pem"),
        dir.path().join("ca.crt"),
        dir.path().join("reloaded"),
    );
    std::fs::write(&ca, app.ca_pem().await).unwrap();
    let exec = format!("echo reloaded >> {}", marker.display());
    let fetch = async |server: &str| {
        run(
            &[
                "crl",
                "--server",
                server,
                "--ca-file",
                ca.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--exec",
                &exec,
            ],
            &[],
        )
        .await
    };
    let current = fetch(&app.address).await;
    assert!(current.status.success(), "{}", text(&current));
    let installed = std::fs::read(&out).unwrap();
    assert!(openssl_crl(&out, "PEM", &ca).contains(&format!("Serial Number: {serial}")));

    // The same CA's older CRL, from a replaying server: refused, file and broker untouched.
    let replayed = fetch(&replaying(old).await).await;
    assert_eq!(replayed.status.code(), Some(6), "{}", text(&replayed));
    assert!(
        text(&replayed).contains("lower than the installed"),
        "{}",
        text(&replayed)
    );
    assert_eq!(std::fs::read(&out).unwrap(), installed);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "reloaded\n");

    // A file holding another CA's CRL says nothing about this one's: it is replaced.
    let other = TestApp::spawn(None).await;
    let other_pem = other
        .client
        .get(other.url("/api/v1/crl?format=pem"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    std::fs::write(&out, other_pem).unwrap();
    let replaced = fetch(&app.address).await;
    assert!(replaced.status.success(), "{}", text(&replaced));
    assert!(openssl_crl(&out, "PEM", &ca).contains(&format!("Serial Number: {serial}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_away_the_crl_is_re_signed_from_the_list_last_read() {
    use provisiond::ca::CertificateAuthority;
    use provisiond::crl::CrlPublisher;
    use provisiond::domain::DeviceId;
    use provisiond::registry::{CertificateRecord, Reason, Revocation, slots};
    use provisiond::store::{CertificateRegistry, RedisConfig, RedisStore};
    let mut redis = RedisServer::start();
    let certs = tempfile::tempdir().unwrap();
    let settings = test_settings(Some(&redis), certs.path());
    let ca = std::sync::Arc::new(CertificateAuthority::load_or_init(&settings.ca, 1).unwrap());
    let config = RedisConfig::from_settings(&settings.redis).unwrap();
    let (store, _tasks) = RedisStore::connect(config, Default::default())
        .await
        .unwrap();
    let validity = Duration::from_secs(24 * 3600);
    let issuers = std::sync::Arc::new(provisiond::ca::Issuers::single(ca));
    let publisher =
        CrlPublisher::new(issuers, store.clone(), validity, Default::default(), None).await;
    // One revoked certificate on the list.
    let record = CertificateRecord {
        serial: slots::serial_in(slots::slot_of("away-1")),
        device_id: DeviceId::parse("away-1").unwrap(),
        issued_at: provisiond::clock::unix_now(),
        not_after: provisiond::clock::unix_now() + 3600,
        key_type: "ecdsa-p256",
        fingerprint_sha256: [7; 32],
        revocation: None,
        group: "default".into(),
    };
    store.record_certificate(&record).await.unwrap();
    let revocation = Revocation {
        at: provisiond::clock::unix_now(),
        reason: Reason::KeyCompromise,
    };
    assert!(
        store
            .revoke(&record.serial, revocation)
            .await
            .unwrap()
            .is_some()
    );
    assert!(publisher.refresh().await.unwrap());
    let first = publisher.current().expect("a CRL while Redis is up");
    assert_eq!(first.crl().entries, 1);

    redis.kill();
    let now = time::OffsetDateTime::now_utc();
    // Within the slot nothing is due: the current CRL stays.
    assert!(publisher.refresh_at(now).await.is_err(), "Redis is away");
    assert_eq!(
        publisher.current().unwrap().crl().number,
        first.crl().number
    );
    // The next slot begins while Redis is still away: re-signed from the list held.
    let later = first.crl().this_update
        + provisiond::ca::BACKDATE
        + time::Duration::hours(12)
        + time::Duration::seconds(1);
    assert!(publisher.refresh_at(later).await.unwrap(), "re-signed");
    let next = publisher.current().unwrap();
    assert!(next.crl().number > first.crl().number);
    // Below what any instance reading the list this slot signs (see crl::number).
    // thisUpdate is the slot's start, back-dated for brokers whose clocks run behind.
    let slot_start = next.crl().this_update + provisiond::ca::BACKDATE;
    let slot_ms = slot_start.unix_timestamp() as u64 * 1000;
    assert_eq!(next.crl().number, slot_ms - 1);
    assert!(next.crl().next_update > first.crl().next_update);
    assert_eq!(
        next.crl().next_update - next.crl().this_update,
        time::Duration::hours(24)
    );
    assert_eq!(next.crl().entries, 1);
    assert_eq!(
        publisher.listed_revocation(&record.serial),
        Some(revocation)
    );
}

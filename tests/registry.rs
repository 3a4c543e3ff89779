//! The certificate registry over HTTP: every issued certificate recorded, looked up by
//! serial and by device, revoked once, listed in the CRL of every instance; a revocation
//! during an outage is refused whole; records made during an outage reach Redis.

mod common;

use std::time::Duration;

use common::pki::{crl_field, openssl_x509, quick_csr};
use common::{RedisServer, TestApp, error_code};
use provisiond::config::{KeyList, Settings};
use provisiond::secret::Secret;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN: &str = "registry-admin-key-registry-admin-key";
const WITHIN: Duration = Duration::from_secs(10);

fn with_admin(s: &mut Settings) {
    s.admin.keys = KeyList(vec![Secret::new(ADMIN)]);
}

async fn admin_get(app: &TestApp, path: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
}

async fn revoke(app: &TestApp, serial: &str, body: Option<Value>) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url(&format!("/api/v1/certificates/{serial}/revoke")))
        .bearer_auth(ADMIN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// Onboards and signs; the sign-csr answer.
async fn issue(app: &TestApp, device: &str) -> Value {
    let token = app.token_for(device).await;
    let response = app.sign_csr(&token, device, &quick_csr(device)).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn crl_text(app: &TestApp) -> String {
    app.crl_text().await
}

fn crl_number(text: &str) -> String {
    crl_field(text, "CRL Number").to_owned()
}

async fn records_in_redis(redis: &RedisServer) -> usize {
    let buckets: Vec<String> = redis.cmd(&["KEYS", "mqtt-lite:certs:*"]);
    buckets
        .iter()
        .map(|b| redis.cmd::<usize>(&["HLEN", b]))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_certificate_is_recorded_and_found_by_serial_and_device() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(Some(&redis), with_admin).await;
    let signed = issue(&app, "rec-1").await;
    let serial = signed["serial_number"].as_str().unwrap();

    let found: Value = admin_get(&app, &format!("/api/v1/certificates/{serial}"))
        .await
        .json()
        .await
        .unwrap();
    let record = &found["certificate"];
    assert_eq!(record["serial_number"], serial);
    assert_eq!(record["device_id"], "rec-1");
    assert_eq!(record["status"], "valid");
    assert_eq!(record["key_type"], "ecdsa-p256");
    assert_eq!(record["expires_at"], signed["expires_at"]);
    assert_eq!(record["revoked_at"], Value::Null);
    let fingerprint = openssl_x509(
        signed["certificate"].as_str().unwrap(),
        &["-fingerprint", "-sha256"],
    );
    let fingerprint = fingerprint
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "");
    assert_eq!(record["fingerprint_sha256"], fingerprint.to_lowercase());
    // Lower-case serials are the same serial.
    let lower = admin_get(
        &app,
        &format!("/api/v1/certificates/{}", serial.to_lowercase()),
    )
    .await;
    assert_eq!(lower.status(), StatusCode::OK);

    // The device lists it, beside a second one.
    let second = issue(&app, "rec-1").await;
    let device: Value = admin_get(&app, "/api/v1/devices/rec-1")
        .await
        .json()
        .await
        .unwrap();
    let serials: Vec<&str> = device["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["serial_number"].as_str().unwrap())
        .collect();
    assert_eq!(serials.len(), 2, "{device}");
    assert!(
        serials.contains(&serial) && serials.contains(&second["serial_number"].as_str().unwrap())
    );

    // In Redis, one record per certificate, and none for a request that failed.
    assert_eq!(records_in_redis(&redis).await, 2);
    let token = app.token_for("rec-2").await;
    assert_eq!(
        app.sign_csr(&token, "rec-2", &quick_csr("rec-2"))
            .await
            .status(),
        StatusCode::OK
    );
    let replay = app.sign_csr(&token, "rec-2", &quick_csr("rec-2")).await;
    assert_eq!(error_code(replay).await.1, "token_used");
    assert_eq!(records_in_redis(&redis).await, 3);

    // Bad lookups.
    for (path, expected) in [
        (
            "/api/v1/certificates/00112233445566778899AABBCCDDEEFF",
            (StatusCode::NOT_FOUND, "certificate_not_found"),
        ),
        (
            "/api/v1/certificates/not-hex",
            (StatusCode::BAD_REQUEST, "invalid_serial"),
        ),
        (
            "/api/v1/certificates/ABCD",
            (StatusCode::BAD_REQUEST, "invalid_serial"),
        ),
    ] {
        let (status, code) = error_code(admin_get(&app, path).await).await;
        assert_eq!((status, code.as_str()), expected, "{path}");
    }
    let anonymous = app
        .client
        .get(app.url(&format!("/api/v1/certificates/{serial}")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(anonymous).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_is_kept_once_and_reaches_every_instances_crl() {
    let redis = RedisServer::start();
    let a = TestApp::spawn_with(Some(&redis), with_admin).await;
    let mut shared = common::app::test_settings(Some(&redis), &a.certs);
    with_admin(&mut shared);
    let b = TestApp::spawn_settings(shared).await;
    let signed = issue(&a, "rev-1").await;
    let serial = signed["serial_number"].as_str().unwrap();
    let other = issue(&a, "rev-2").await;
    let number_before = crl_number(&crl_text(&a).await);

    let first = revoke(&a, serial, Some(json!({ "reason": "keyCompromise" }))).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["certificate"]["status"], "revoked");
    assert_eq!(first["certificate"]["reason"], "keyCompromise");
    // Again, through the other instance and with another reason: the first one stands.
    let again: Value = revoke(&b, serial, Some(json!({ "reason": "superseded" })))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["certificate"]["reason"], "keyCompromise");
    assert_eq!(
        again["certificate"]["revoked_at"],
        first["certificate"]["revoked_at"]
    );

    // This instance's CRL lists it at once, the other's within its next look.
    let text = crl_text(&a).await;
    assert!(text.contains(&format!("Serial Number: {serial}")), "{text}");
    assert!(text.contains("Key Compromise"), "{text}");
    assert!(!text.contains(other["serial_number"].as_str().unwrap()));
    let number = crl_number(&text);
    assert_ne!(number, number_before);
    let deadline = std::time::Instant::now() + WITHIN;
    while crl_number(&crl_text(&b).await) != number {
        assert!(
            std::time::Instant::now() < deadline,
            "instance b never caught up: {} vs {number}",
            crl_number(&crl_text(&b).await)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        crl_text(&b)
            .await
            .contains(&format!("Serial Number: {serial}"))
    );

    let metrics = a.client.get(a.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains(r#"provisiond_certificates_revoked_total{reason="keyCompromise"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("provisiond_crl_entries 1"), "{metrics}");

    // No body revokes as unspecified (omitted from the CRL entry); a bad reason is 400.
    let plain: Value = revoke(&a, other["serial_number"].as_str().unwrap(), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(plain["certificate"]["reason"], "unspecified");
    let signed = issue(&a, "rev-3").await;
    let bad = revoke(
        &a,
        signed["serial_number"].as_str().unwrap(),
        Some(json!({ "reason": "lost" })),
    )
    .await;
    assert_eq!(
        error_code(bad).await,
        (StatusCode::BAD_REQUEST, "invalid_reason".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_during_an_outage_is_refused_whole() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(Some(&redis), with_admin).await;
    let signed = issue(&app, "out-1").await;
    let serial = signed["serial_number"].as_str().unwrap();
    redis.pause();
    app.wait_for_health(WITHIN, |h| h["status"] == "degraded")
        .await;
    let refused = revoke(&app, serial, Some(json!({ "reason": "keyCompromise" }))).await;
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        error_code(refused).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable".into()
        )
    );
    redis.resume();
    app.wait_for_health(WITHIN, |h| h["status"] == "ok").await;
    let record: Value = admin_get(&app, &format!("/api/v1/certificates/{serial}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(record["certificate"]["status"], "valid");
    assert!(!crl_text(&app).await.contains(serial));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_made_during_an_outage_reach_redis_when_it_returns() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(Some(&redis), with_admin).await;
    redis.pause();
    app.wait_for_health(WITHIN, |h| h["status"] == "degraded")
        .await;
    let signed = issue(&app, "sync-1").await;
    assert_eq!(app.health().await["memory"]["recordsAwaitingRedis"], 1);
    redis.resume();
    app.wait_for_health(WITHIN, |h| h["memory"]["recordsAwaitingRedis"] == 0)
        .await;
    // Another instance, which never saw it in memory, finds it in Redis.
    let mut settings = common::app::test_settings(Some(&redis), &app.certs);
    with_admin(&mut settings);
    let other = TestApp::spawn_settings(settings).await;
    let serial = signed["serial_number"].as_str().unwrap();
    let found = admin_get(&other, &format!("/api/v1/certificates/{serial}")).await;
    assert_eq!(found.status(), StatusCode::OK);
    assert_eq!(records_in_redis(&redis).await, 1);
    // The instance that made it answers from Redis too, and can revoke it there.
    let revoked = revoke(&app, serial, Some(json!({ "reason": "keyCompromise" }))).await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let seen: Value = admin_get(&other, &format!("/api/v1/certificates/{serial}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen["certificate"]["status"], "revoked");
}

#[tokio::test]
async fn without_redis_the_registry_and_the_crl_work_from_memory() {
    let app = TestApp::spawn_with(None, with_admin).await;
    let signed = issue(&app, "mem-1").await;
    let serial = signed["serial_number"].as_str().unwrap();
    let revoked = revoke(
        &app,
        serial,
        Some(json!({ "reason": "cessationOfOperation" })),
    )
    .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let text = crl_text(&app).await;
    assert!(text.contains(&format!("Serial Number: {serial}")), "{text}");
    assert!(text.contains("Cessation Of Operation"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_stays_in_the_crl_when_redis_loses_it() {
    let mut redis = RedisServer::start();
    let app = TestApp::spawn_with(Some(&redis), with_admin).await;
    let first = issue(&app, "lost-rev-1").await;
    let first = first["serial_number"].as_str().unwrap();
    let revoked = revoke(&app, first, Some(json!({ "reason": "keyCompromise" }))).await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let epoch = app.health().await["redis"]["epoch"].as_u64().unwrap();

    // Redis comes back empty: the record and the revoked list are gone from it.
    redis.restart();
    app.wait_for_health(WITHIN, |h| h["redis"]["epoch"].as_u64() > Some(epoch))
        .await;
    let second = issue(&app, "lost-rev-2").await;
    let second = second["serial_number"].as_str().unwrap();
    let revoked = revoke(&app, second, Some(json!({ "reason": "superseded" }))).await;
    assert_eq!(revoked.status(), StatusCode::OK);

    // The new CRL lists the new revocation and still the one Redis forgot.
    let text = crl_text(&app).await;
    assert!(text.contains(&format!("Serial Number: {second}")), "{text}");
    assert!(text.contains(&format!("Serial Number: {first}")), "{text}");

    // So does an instance started after the loss, from the file beside the CA.
    let mut settings = common::app::test_settings(Some(&redis), &app.certs);
    with_admin(&mut settings);
    let late = TestApp::spawn_settings(settings).await;
    let text = crl_text(&late).await;
    assert!(text.contains(&format!("Serial Number: {first}")), "{text}");
    assert!(text.contains("Key Compromise"), "{text}");
}

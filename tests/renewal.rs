//! Renewal and blocking over HTTP: a device proves its current certificate (a JWT with
//! `x5c`, or mutual TLS) and gets a new one; a proof works once, even under a race; a
//! revoked or expired certificate and a blocked device cannot renew; blocking stops
//! onboarding until it is lifted, and all of it survives a restart, with Redis and
//! without.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::bin::{enroll_into, renew_files, text};
use common::device::{Enrolled, enroll, expired_certificate, renew};
use common::pki::{openssl_verify, openssl_x509};
use common::{RedisServer, TestApp, error_code};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use provisiond::auth::renewal::{ProofClaims, RENEW_AUDIENCE};
use provisiond::clock::unix_now;
use provisiond::config::{KeyList, Settings};
use provisiond::device::{DeviceKey, KeyKind};
use provisiond::secret::Secret;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN: &str = "renewal-admin-key-renewal-admin-key!";
const WITHIN: Duration = Duration::from_secs(10);

fn with_admin(s: &mut Settings) {
    s.admin.keys = KeyList(vec![Secret::new(ADMIN)]);
}

async fn admin(app: &TestApp, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(ADMIN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}

/// A certificate's record, through the admin API.
async fn record(app: &TestApp, serial: &str) -> Value {
    let path = format!("/api/v1/certificates/{serial}");
    admin(app, reqwest::Method::GET, &path, None).await
}

/// A device's status, through the admin API.
async fn device_status(app: &TestApp, device: &str) -> Value {
    let path = format!("/api/v1/devices/{device}");
    admin(app, reqwest::Method::GET, &path, None).await
}

fn status_of(device: &Value, serial: &str) -> String {
    device["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["serial_number"] == serial)
        .map(|c| c["status"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("{serial} not listed: {device}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_renews_once_with_every_key_type_and_openssl_accepts_the_result() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(Some(&redis), with_admin).await;
    let ca = app.ca_pem().await;
    for (device, kind) in [
        ("ren-p256", KeyKind::P256),
        ("ren-p384", KeyKind::P384),
        ("ren-ed", KeyKind::Ed25519),
        ("ren-rsa", KeyKind::Rsa2048),
    ] {
        let old = enroll(&app, device, kind).await;
        let proof = old.proof(device);
        let csr = old.key.csr_pem(Some(device)).unwrap();
        let renewed = renew(&app, device, &csr, Some(&proof)).await;
        assert_eq!(renewed.status(), StatusCode::OK, "{device}");
        let renewed: Value = renewed.json().await.unwrap();
        let cert = renewed["certificate"].as_str().unwrap();
        openssl_verify(&ca, cert);
        assert_ne!(renewed["serial_number"], old.serial.as_str());
        assert!(openssl_x509(cert, &["-subject"]).contains(device));

        // The same proof again: refused, nothing issued.
        let replay = renew(&app, device, &csr, Some(&proof)).await;
        assert_eq!(
            error_code(replay).await,
            (StatusCode::UNAUTHORIZED, "renewal_proof_invalid".into()),
            "{device}"
        );
        let status = device_status(&app, device).await;
        assert_eq!(
            status["certificates"].as_array().unwrap().len(),
            2,
            "{status}"
        );
        // renewal.revoke_previous is on by default: the old one is superseded.
        assert_eq!(status_of(&status, &old.serial), "revoked");
    }
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("provisiond_certificates_renewed_total 4"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_proof_sent_many_times_at_once_to_two_instances_gives_one_certificate() {
    let redis = RedisServer::start();
    let a = TestApp::spawn_with(Some(&redis), with_admin).await;
    let b = TestApp::spawn_settings(common::app::test_settings(Some(&redis), &a.certs)).await;
    let old = enroll(&a, "race-1", KeyKind::P256).await;
    let proof = old.proof("race-1");
    let csr = old.key.csr_pem(Some("race-1")).unwrap();
    let mut attempts = tokio::task::JoinSet::new();
    for i in 0..16 {
        let url = if i % 2 == 0 {
            a.url("/api/v1/renew")
        } else {
            b.url("/api/v1/renew")
        };
        let request = a
            .client
            .post(url)
            .bearer_auth(&proof)
            .json(&json!({ "device_id": "race-1", "csr": csr }));
        attempts.spawn(async move { request.send().await.unwrap().status() });
    }
    let statuses = attempts.join_all().await;
    let won = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(won, 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    let status = admin(&a, reqwest::Method::GET, "/api/v1/devices/race-1", None).await;
    assert_eq!(
        status["certificates"].as_array().unwrap().len(),
        2,
        "{status}"
    );
}

fn forged(cert_der: &[u8], key_pem: &str, claims: ProofClaims, alg: Algorithm) -> String {
    let mut header = Header::new(alg);
    header.x5c = Some(vec![STANDARD.encode(cert_der)]);
    let key = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(key_pem.as_bytes()),
        Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(key_pem.as_bytes()),
        _ => EncodingKey::from_ec_pem(key_pem.as_bytes()),
    }
    .unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn claims(device: &str, iat: u64, exp: u64, aud: &str) -> ProofClaims {
    ProofClaims {
        sub: device.into(),
        aud: aud.into(),
        iat,
        exp,
        jti: format!("jti-{iat}-{exp}-{aud}"),
        csr_key: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_proofs_are_refused_with_a_clear_code() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(Some(&redis), with_admin).await;
    // Another server, with its own CA.
    let other = TestApp::spawn(None).await;
    let device = "bad-1";
    let old = enroll(&app, device, KeyKind::P256).await;
    let stranger = enroll(&other, device, KeyKind::P256).await;
    let neighbour = enroll(&app, "bad-2", KeyKind::P256).await;
    let csr = old.key.csr_pem(Some(device)).unwrap();
    let key_pem = old.key.private_key_pem();
    let now = unix_now();
    let p384 = DeviceKey::generate(KeyKind::P384)
        .unwrap()
        .private_key_pem();
    let (neighbour_key, stranger_key) = (
        neighbour.key.private_key_pem(),
        stranger.key.private_key_pem(),
    );
    let valid = |sub: &str| claims(sub, now, now + 60, RENEW_AUDIENCE);
    // (what is wrong, certificate in x5c, signing key, claims, alg)
    let forgeries: Vec<(&str, Vec<u8>, &str, ProofClaims, Algorithm)> = vec![
        (
            "wrong audience",
            old.der(),
            &key_pem,
            claims(device, now, now + 60, "provisiond"),
            Algorithm::ES256,
        ),
        (
            "lives too long",
            old.der(),
            &key_pem,
            claims(device, now, now + 3600, RENEW_AUDIENCE),
            Algorithm::ES256,
        ),
        (
            "expired",
            old.der(),
            &key_pem,
            // Past even a device clock 600 s slow.
            claims(device, now - 1000, now - 700, RENEW_AUDIENCE),
            Algorithm::ES256,
        ),
        (
            "another device's subject",
            old.der(),
            &key_pem,
            valid("bad-2"),
            Algorithm::ES256,
        ),
        (
            "another device's certificate",
            neighbour.der(),
            &neighbour_key,
            valid(device),
            Algorithm::ES256,
        ),
        (
            "a certificate from another CA",
            stranger.der(),
            &stranger_key,
            valid(device),
            Algorithm::ES256,
        ),
        (
            "signed by another key",
            old.der(),
            &stranger_key,
            valid(device),
            Algorithm::ES256,
        ),
        (
            "an algorithm that does not fit the key",
            old.der(),
            &p384,
            valid(device),
            Algorithm::ES384,
        ),
    ];
    let mut cases: Vec<(&str, Option<String>)> =
        vec![("no proof", None), ("not a JWT", Some("abc.def".into()))];
    for (what, cert, key, claims, alg) in forgeries {
        cases.push((what, Some(forged(&cert, key, claims, alg))));
    }
    for (what, proof) in cases {
        let refused = renew(&app, device, &csr, proof.as_deref()).await;
        assert_eq!(
            error_code(refused).await,
            (StatusCode::UNAUTHORIZED, "renewal_proof_invalid".to_owned()),
            "{what}"
        );
    }
    // A good proof with a bad CSR is refused without using the proof up.
    let proof = old.proof(device);
    let bad_csr = renew(&app, device, "not a csr", Some(&proof)).await;
    assert_eq!(error_code(bad_csr).await.1, "invalid_csr");
    assert_eq!(
        renew(&app, device, &csr, Some(&proof)).await.status(),
        StatusCode::OK
    );
    let status = device_status(&app, device).await;
    assert_eq!(
        status["certificates"].as_array().unwrap().len(),
        2,
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_superseded_and_expired_certificates_renew_only_as_configured() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(Some(&redis), |s| {
        with_admin(s);
        s.renewal.revoke_previous = true;
    })
    .await;
    let device = "life-1";
    let old = enroll(&app, device, KeyKind::P256).await;
    let csr = old.key.csr_pem(Some(device)).unwrap();
    let renewed: Value = renew(&app, device, &csr, Some(&old.proof(device)))
        .await
        .json()
        .await
        .unwrap();
    let status = device_status(&app, device).await;
    assert_eq!(status_of(&status, &old.serial), "revoked");
    let listed = app.crl_text().await;
    assert!(
        listed.contains(&old.serial) && listed.contains("Superseded"),
        "{listed}"
    );

    // A retry (the first answer lost) gets the same successor, for the same key only: a
    // certificate renews once.
    let again: Value = renew(&app, device, &csr, Some(&old.proof(device)))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["serial_number"], renewed["serial_number"], "{again}");
    assert_eq!(again["certificate"], renewed["certificate"]);
    let other_key = DeviceKey::generate(KeyKind::P256).unwrap();
    let other_csr = other_key.csr_pem(Some(device)).unwrap();
    let refused = renew(&app, device, &other_csr, Some(&old.proof(device))).await;
    assert_eq!(
        error_code(refused).await,
        (StatusCode::FORBIDDEN, "certificate_superseded".into())
    );
    let status = device_status(&app, device).await;
    assert_eq!(status["certificates"].as_array().unwrap().len(), 2);
    // Nor can one an operator revoked.
    let current = Enrolled {
        key: DeviceKey::from_pem(&old.key.private_key_pem()).unwrap(),
        cert_pem: renewed["certificate"].as_str().unwrap().to_owned(),
        serial: renewed["serial_number"].as_str().unwrap().to_owned(),
    };
    admin(
        &app,
        reqwest::Method::POST,
        &format!("/api/v1/certificates/{}/revoke", current.serial),
        Some(json!({ "reason": "keyCompromise" })),
    )
    .await;
    let revoked = renew(&app, device, &csr, Some(&current.proof(device))).await;
    assert_eq!(
        error_code(revoked).await,
        (StatusCode::FORBIDDEN, "certificate_revoked".into())
    );

    // An expired certificate: refused by default, accepted within after_expiry_days.
    let expired = expired_certificate(&app.certs, "life-2");
    let csr2 = expired.key.csr_pem(Some("life-2")).unwrap();
    let refused = renew(&app, "life-2", &csr2, Some(&expired.proof("life-2"))).await;
    assert_eq!(
        error_code(refused).await,
        (StatusCode::UNAUTHORIZED, "certificate_expired".into())
    );
    let lenient = TestApp::spawn_settings({
        let mut s = common::app::test_settings(Some(&redis), &app.certs);
        with_admin(&mut s);
        s.renewal.after_expiry_days = 30;
        s
    })
    .await;
    // Signed by the CA's key outside the registry: unknown until an operator imports it.
    let unknown = renew(&lenient, "life-2", &csr2, Some(&expired.proof("life-2"))).await;
    assert_eq!(
        error_code(unknown).await,
        (StatusCode::FORBIDDEN, "certificate_unknown".into())
    );
    let imported = admin(
        &lenient,
        reqwest::Method::POST,
        "/api/v1/certificates",
        Some(json!({ "certificate": expired.cert_pem })),
    )
    .await;
    assert_eq!(imported["certificate"]["device_id"], "life-2", "{imported}");
    assert_eq!(imported["certificate"]["status"], "expired", "{imported}");
    let accepted = renew(&lenient, "life-2", &csr2, Some(&expired.proof("life-2"))).await;
    assert_eq!(accepted.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_device_cannot_onboard_or_renew_until_unblocked() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(Some(&redis), with_admin).await;
    let device = "stolen-1";
    let first = enroll(&app, device, KeyKind::P256).await;
    let second = enroll(&app, device, KeyKind::Ed25519).await;
    let pending = app.token_for(device).await;

    let answer = admin(
        &app,
        reqwest::Method::POST,
        &format!("/api/v1/devices/{device}/revoke"),
        Some(json!({ "reason": "keyCompromise", "block": true })),
    )
    .await;
    assert_eq!(answer["token_revoked"], true, "{answer}");
    assert_eq!(answer["blocked"]["reason"], "keyCompromise", "{answer}");
    for cert in answer["certificates"].as_array().unwrap() {
        assert_eq!(cert["status"], "revoked", "{answer}");
        assert_eq!(cert["reason"], "keyCompromise", "{answer}");
    }
    assert_eq!(answer["certificates"].as_array().unwrap().len(), 2);
    let blocked_key: String = redis.cmd(&["GET", &format!("mqtt-lite:blocked:{{{device}}}")]);
    assert!(blocked_key.ends_with(":1"), "{blocked_key}");

    // The pending token is gone, onboarding and renewal are refused.
    let used = app
        .sign_csr(&pending, device, &common::pki::quick_csr(device))
        .await;
    // Refused for what it is: the device is blocked (checked at consume).
    assert_eq!(error_code(used).await.1, "device_blocked");
    assert_eq!(
        error_code(app.onboard(device).await).await,
        (StatusCode::FORBIDDEN, "device_blocked".into())
    );
    let csr = second.key.csr_pem(Some(device)).unwrap();
    let refused = renew(&app, device, &csr, Some(&second.proof(device))).await;
    assert_eq!(error_code(refused).await.0, StatusCode::FORBIDDEN);
    // Another instance refuses it too, also from memory while Redis is away.
    let other = TestApp::spawn_settings(common::app::test_settings(Some(&redis), &app.certs)).await;
    assert_eq!(
        error_code(other.onboard(device).await).await.1,
        "device_blocked"
    );
    other.wait_for_health(WITHIN, |h| h["status"] == "ok").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.pause();
    other
        .wait_for_health(WITHIN, |h| h["status"] == "degraded")
        .await;
    assert_eq!(
        error_code(other.onboard(device).await).await.1,
        "device_blocked"
    );
    assert_eq!(other.onboard("not-blocked").await.status(), StatusCode::OK);
    // Blocking needs Redis: refused whole while it is known to be away.
    app.wait_for_health(WITHIN, |h| h["status"] == "degraded")
        .await;
    let during = app
        .delete_as(ADMIN, &format!("/api/v1/devices/{device}/block"))
        .await;
    assert_eq!(error_code(during).await.0, StatusCode::SERVICE_UNAVAILABLE);
    redis.resume();
    app.wait_for_health(WITHIN, |h| h["status"] == "ok").await;

    let status = device_status(&app, device).await;
    assert_eq!(status["blocked"]["reason"], "keyCompromise", "{status}");
    let lifted = admin(
        &app,
        reqwest::Method::DELETE,
        &format!("/api/v1/devices/{device}/block"),
        None,
    )
    .await;
    assert_eq!(lifted["unblocked"], true);
    assert_eq!(app.onboard(device).await.status(), StatusCode::OK);
    // The revoked certificates stay revoked: the device onboards anew.
    let stale = renew(
        &app,
        device,
        &first.key.csr_pem(Some(device)).unwrap(),
        Some(&first.proof(device)),
    )
    .await;
    assert_eq!(
        error_code(stale).await,
        (StatusCode::FORBIDDEN, "certificate_revoked".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_registry_blocks_and_proofs_survive_a_restart() {
    let certs = tempfile::tempdir().unwrap();
    let settings = || {
        let mut s = common::app::test_settings(None, certs.path());
        with_admin(&mut s);
        s
    };
    let app = TestApp::spawn_settings(settings()).await;
    let kept = enroll(&app, "file-1", KeyKind::P256).await;
    let revoked = enroll(&app, "file-2", KeyKind::P256).await;
    admin(
        &app,
        reqwest::Method::POST,
        &format!("/api/v1/certificates/{}/revoke", revoked.serial),
        Some(json!({ "reason": "keyCompromise" })),
    )
    .await;
    admin(
        &app,
        reqwest::Method::POST,
        "/api/v1/devices/file-3/revoke",
        Some(json!({ "block": true })),
    )
    .await;
    let proof = kept.proof("file-1");
    let csr = kept.key.csr_pem(Some("file-1")).unwrap();
    assert_eq!(
        renew(&app, "file-1", &csr, Some(&proof)).await.status(),
        StatusCode::OK
    );
    app.stop().await;

    let app = TestApp::spawn_settings(settings()).await;
    // Renewed, it was superseded (renewal.revoke_previous is on by default), and the
    // registry file kept that too.
    let found = record(&app, &kept.serial).await;
    assert_eq!(found["certificate"]["status"], "revoked");
    assert_eq!(found["certificate"]["reason"], "superseded");
    let gone = record(&app, &revoked.serial).await;
    assert_eq!(gone["certificate"]["reason"], "keyCompromise");
    assert_eq!(
        error_code(app.onboard("file-3").await).await.1,
        "device_blocked"
    );
    // A proof used before the restart stays used; a new one works.
    let stale = renew(&app, "file-1", &csr, Some(&proof)).await;
    assert_eq!(error_code(stale).await.1, "renewal_proof_invalid");
    assert_eq!(
        renew(&app, "file-1", &csr, Some(&kept.proof("file-1")))
            .await
            .status(),
        StatusCode::OK
    );
    let listed = app.crl_text().await;
    assert!(listed.contains(&revoked.serial), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_and_blocks_survive_a_server_restart_with_redis() {
    let redis = RedisServer::start();
    let certs = tempfile::tempdir().unwrap();
    let settings = || {
        let mut s = common::app::test_settings(Some(&redis), certs.path());
        with_admin(&mut s);
        s
    };
    let app = TestApp::spawn_settings(settings()).await;
    let device = enroll(&app, "keep-1", KeyKind::P256).await;
    admin(
        &app,
        reqwest::Method::POST,
        "/api/v1/devices/keep-1/revoke",
        Some(json!({ "block": true, "reason": "cessationOfOperation" })),
    )
    .await;
    app.stop().await;
    let app = TestApp::spawn_settings(settings()).await;
    let found = record(&app, &device.serial).await;
    assert_eq!(found["certificate"]["reason"], "cessationOfOperation");
    assert_eq!(
        error_code(app.onboard("keep-1").await).await.1,
        "device_blocked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_renews_with_a_new_key_and_mutual_tls_renews_on_the_tls_listener() {
    let certs = tempfile::tempdir().unwrap();
    let (_app, server) = common::app::spawn_tls(certs.path(), |_| {}).await;
    let ca_path = certs.path().join("ca.crt");
    let ca_file = ca_path.to_str().unwrap();

    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().to_str().unwrap();
    enroll_into(&server, "cli-1", out_dir, &["--ca-file", ca_file]).await;
    let (cert, key) = (out.path().join("cli-1.crt"), out.path().join("cli-1.key"));
    let before = std::fs::read_to_string(&cert).unwrap();
    let old_key = std::fs::read_to_string(&key).unwrap();

    let renewed = renew_files(&server, ca_file, &cert, &key, Some("ed25519")).await;
    assert!(renewed.status.success(), "{}", text(&renewed));
    let after = std::fs::read_to_string(&cert).unwrap();
    let new_key = std::fs::read_to_string(&key).unwrap();
    assert_ne!(before, after);
    assert_ne!(old_key, new_key);
    openssl_verify(&std::fs::read_to_string(ca_file).unwrap(), &after);
    // The new certificate carries the new key (OpenSSL's reading of both).
    let key_pub = common::pki::openssl_pkey_public(&key);
    assert_eq!(key_pub, openssl_x509(&after, &["-pubkey", "-noout"]));
    assert!(
        key_pub.contains("MCowBQYDK2Vw"),
        "an Ed25519 key: {key_pub}"
    );

    // A rekeying run cut off between writing the certificate and renaming the new key
    // into place: the next run finishes it before renewing.
    let staged = out.path().join("cli-1.key.new");
    std::fs::rename(&key, &staged).unwrap();
    std::fs::write(&key, &old_key).unwrap();
    let resumed = renew_files(&server, ca_file, &cert, &key, None).await;
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert!(!staged.exists());
    assert_eq!(std::fs::read_to_string(&key).unwrap(), new_key);
    let after = std::fs::read_to_string(&cert).unwrap();
    assert_eq!(
        common::pki::openssl_pkey_public(&key),
        openssl_x509(&after, &["-pubkey", "-noout"])
    );

    // Mutual TLS: the certificate itself is the proof, no Authorization header.
    let mtls = common::app::https_client(&ca_path, Some(&format!("{after}{new_key}")));
    let device_key = DeviceKey::from_pem(&new_key).unwrap();
    let csr = device_key.csr_pem(Some("cli-1")).unwrap();
    let response = mtls
        .post(format!("{server}/api/v1/renew"))
        .json(&json!({ "device_id": "cli-1", "csr": csr }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let renewed: Value = response.json().await.unwrap();
    openssl_verify(
        &std::fs::read_to_string(ca_file).unwrap(),
        renewed["certificate"].as_str().unwrap(),
    );
    // For another device, the client certificate proves nothing.
    let other = mtls
        .post(format!("{server}/api/v1/renew"))
        .json(&json!({ "device_id": "cli-2", "csr": device_key.csr_pem(Some("cli-2")).unwrap() }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(other).await.1, "renewal_proof_invalid");
    // Other routes work as before for clients without a certificate.
    let plain = common::app::https_client(&ca_path, None);
    let onboarded = plain
        .post(format!("{server}/api/v1/onboarding"))
        .json(&json!({ "device_id": "cli-3" }))
        .send()
        .await
        .unwrap();
    assert_eq!(onboarded.status(), StatusCode::OK);
    let anonymous = plain
        .post(format!("{server}/api/v1/renew"))
        .json(&json!({ "device_id": "cli-1", "csr": csr }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(anonymous).await.1, "renewal_proof_invalid");
}

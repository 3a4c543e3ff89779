//! What reaches the CRL however it was revoked: a serial the registry never recorded, a
//! revocation whose request stopped between its record and the list, and a certificate
//! an instance cut off from Redis issued to a device blocked meanwhile. Real servers, a
//! real Redis, OpenSSL reading the CRL.

mod common;

use std::time::{Duration, Instant};

use common::app::test_settings;
use common::device::{renew, signed_outside_the_registry};
use common::pki::quick_csr;
use common::proxy::SwitchableFront;
use common::{RedisServer, TestApp, error_code};
use provisiond::clock::unix_now;
use provisiond::config::{KeyList, Settings};
use provisiond::registry::slots;
use provisiond::secret::Secret;
use rcgen::ExtendedKeyUsagePurpose;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN: &str = "crl-listing-admin-key-crl-listing-admin";
const WITHIN: Duration = Duration::from_secs(10);
const PREFIX: &str = "mqtt-lite:";

fn settings(redis: Option<&RedisServer>, certs: &std::path::Path) -> Settings {
    let mut s = test_settings(redis, certs);
    s.admin.keys = KeyList(vec![Secret::new(ADMIN)]);
    s
}

async fn admin_post(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.post_json_as(ADMIN, path, &body).await
}

async fn list(app: &TestApp, serial: &str, reason: &str) -> Value {
    let response = admin_post(
        app,
        "/api/v1/crl/entries",
        json!({ "serial": serial, "reason": reason }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// Polls the CRL until it lists `serial` (as OpenSSL prints it), or panics.
async fn wait_until_listed(app: &TestApp, serial: &str) -> String {
    let deadline = Instant::now() + WITHIN;
    loop {
        let text = app.crl_text().await;
        if text.contains(&format!("Serial Number: {serial}")) {
            return text;
        }
        assert!(Instant::now() < deadline, "{serial} never listed: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A serial the CA signed outside the registry, listed on its own, stays listed (across
/// a restart with Redis off), keeps its first reason, and an import of its certificate
/// comes back revoked, so that it never renews.
async fn a_serial_without_a_record_is_listed(redis: Option<&RedisServer>) {
    let certs = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_settings(settings(redis, certs.path())).await;

    for bad in ["", "zz", "00:00", &"1".repeat(33)] {
        let response = admin_post(&app, "/api/v1/crl/entries", json!({ "serial": bad })).await;
        assert_eq!(
            error_code(response).await,
            (StatusCode::BAD_REQUEST, "invalid_serial".into()),
            "{bad:?}"
        );
    }
    let anonymous = app
        .client
        .post(app.url("/api/v1/crl/entries"))
        .json(&json!({ "serial": "012ABC" }))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    let listed = list(&app, "01:2A:BC", "keyCompromise").await;
    let entry = &listed["entry"];
    assert_eq!(
        entry["serial_number"],
        format!("{:0>32}", "012ABC"),
        "{listed}"
    );
    assert_eq!(entry["recorded"], false, "{listed}");
    assert_eq!(entry["device_id"], Value::Null, "{listed}");
    assert_eq!(entry["reason"], "keyCompromise", "{listed}");
    let again = list(&app, "012abc", "unspecified").await;
    assert_eq!(
        again["entry"]["reason"], "keyCompromise",
        "the first listing stands"
    );
    let text = wait_until_listed(&app, "012ABC").await;
    assert!(text.contains("Key Compromise"), "{text}");

    // With Redis off the listing is in the registry file: a restart keeps it.
    let app = match redis {
        Some(_) => app,
        None => {
            app.stop().await;
            let app = TestApp::spawn_settings(settings(None, certs.path())).await;
            wait_until_listed(&app, "012ABC").await;
            app
        }
    };

    // Its certificate turns up: imported, it is revoked, and it does not renew.
    let now = time::OffsetDateTime::now_utc();
    let device = "listed-before-found";
    let held = signed_outside_the_registry(
        &app.certs,
        device,
        now - time::Duration::days(10),
        now + time::Duration::days(300),
        &[0x01, 0x2a, 0xbc],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let imported = admin_post(
        &app,
        "/api/v1/certificates",
        json!({ "certificate": held.cert_pem }),
    )
    .await;
    assert_eq!(imported.status(), StatusCode::OK);
    let imported: Value = imported.json().await.unwrap();
    assert_eq!(imported["certificate"]["status"], "revoked", "{imported}");
    assert_eq!(
        imported["certificate"]["reason"], "keyCompromise",
        "{imported}"
    );
    let csr = held.key.csr_pem(Some(device)).unwrap();
    let refused = renew(&app, device, &csr, Some(&held.proof(device))).await;
    assert_eq!(
        error_code(refused).await,
        (StatusCode::FORBIDDEN, "certificate_revoked".into())
    );

    // A serial the registry knows is revoked through its record.
    let token = app.token_for("listed-by-serial").await;
    let signed = app
        .sign_csr(&token, "listed-by-serial", &quick_csr("listed-by-serial"))
        .await;
    let signed: Value = signed.json().await.unwrap();
    let serial = signed["serial_number"].as_str().unwrap();
    let listed = list(&app, serial, "cessationOfOperation").await;
    assert_eq!(listed["entry"]["recorded"], true, "{listed}");
    assert_eq!(listed["entry"]["device_id"], "listed-by-serial", "{listed}");
    let record = app
        .get_json_as(ADMIN, &format!("/api/v1/certificates/{serial}"))
        .await;
    assert_eq!(record["certificate"]["status"], "revoked", "{record}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_without_a_record_is_listed_on_redis() {
    let redis = RedisServer::start();
    a_serial_without_a_record_is_listed(Some(&redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_without_a_record_is_listed_with_redis_off() {
    a_serial_without_a_record_is_listed(None).await;
}

fn owed(redis: &RedisServer) -> Vec<String> {
    redis.cmd(&["ZRANGE", &format!("{PREFIX}revoked:pending"), "0", "-1"])
}

/// A revocation that changed its record but stopped before the revoked list (the
/// instance died between the two: they live in different cluster slots) is listed by
/// the next poll of any instance, from the debt it noted first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_stopped_before_the_list_is_listed_by_the_next_poll() {
    let redis = RedisServer::start();
    let certs = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_settings(settings(Some(&redis), certs.path())).await;
    let token = app.token_for("stopped-halfway").await;
    let signed: Value = app
        .sign_csr(&token, "stopped-halfway", &quick_csr("stopped-halfway"))
        .await
        .json()
        .await
        .unwrap();
    let serial_hex = signed["serial_number"].as_str().unwrap().to_owned();
    let serial: [u8; 16] = hex::decode(&serial_hex).unwrap().try_into().unwrap();

    // The first two of a revocation's three steps, as a request that died after them.
    let bucket = format!(
        "{PREFIX}certs:{{{}}}",
        slots::tag_for(slots::slot_of_serial(&serial))
    );
    let mut conn = redis.connection();
    let _: () = redis::cmd("ZADD")
        .arg(format!("{PREFIX}revoked:pending"))
        .arg(unix_now() - 60)
        .arg(&serial_hex)
        .query(&mut conn)
        .unwrap();
    let revoked: Vec<redis::Value> = redis::cmd("EVAL")
        .arg(include_str!("../src/store/redis/revoke.lua"))
        .arg(1)
        .arg(&bucket)
        .arg(&serial[..])
        .arg(unix_now())
        .arg(1)
        .query(&mut conn)
        .unwrap();
    assert_eq!(revoked.first(), Some(&redis::Value::Int(1)), "{revoked:?}");

    let text = wait_until_listed(&app, &serial_hex).await;
    assert!(text.contains("Key Compromise"), "{text}");
    assert!(owed(&redis).is_empty(), "the debt is settled");

    // A whole revocation and a renewal that supersedes leave no debt behind.
    let token = app.token_for("whole").await;
    let whole: Value = app
        .sign_csr(&token, "whole", &quick_csr("whole"))
        .await
        .json()
        .await
        .unwrap();
    let serial = whole["serial_number"].as_str().unwrap();
    let response = admin_post(
        &app,
        &format!("/api/v1/certificates/{serial}/revoke"),
        json!({}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(owed(&redis).is_empty(), "{:?}", owed(&redis));
    app.stop().await;
}

/// An instance cut off from Redis issues from memory, and cannot hear a block made
/// through another instance meanwhile. When it reaches Redis again, the certificate it
/// issued to the device blocked before is revoked (privilegeWithdrawn) and listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_issued_while_cut_off_to_a_device_blocked_meanwhile_is_revoked() {
    let redis = RedisServer::start();
    let front = SwitchableFront::start(redis.port()).await;
    let certs = tempfile::tempdir().unwrap();
    let mut cut_off = settings(Some(&redis), certs.path());
    cut_off.redis.url = Some(front.url());
    let a = TestApp::spawn_settings(cut_off).await;
    let b = TestApp::spawn_settings(settings(Some(&redis), certs.path())).await;
    a.wait_for_health(WITHIN, |h| h["status"] == "ok").await;

    // A loses Redis; B does not, and blocks the device.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    front.switch_to(dead_port);
    a.wait_for_health(WITHIN, |h| h["status"] == "degraded")
        .await;
    let response = admin_post(
        &b,
        "/api/v1/devices/blocked-unheard/revoke",
        json!({ "block": true }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A cannot know: it issues from memory.
    let token = a.token_for("blocked-unheard").await;
    let signed = a
        .sign_csr(&token, "blocked-unheard", &quick_csr("blocked-unheard"))
        .await;
    assert_eq!(signed.status(), StatusCode::OK);
    let signed: Value = signed.json().await.unwrap();
    let serial = signed["serial_number"].as_str().unwrap();

    // A is back: the record goes to Redis, revoked, and every CRL lists it.
    front.switch_to(redis.port());
    a.wait_for_health(WITHIN, |h| h["status"] == "ok").await;
    let text = wait_until_listed(&b, serial).await;
    assert!(text.contains("Privilege Withdrawn"), "{text}");
    let record = b
        .get_json_as(ADMIN, &format!("/api/v1/certificates/{serial}"))
        .await;
    assert_eq!(record["certificate"]["status"], "revoked", "{record}");
    assert_eq!(
        record["certificate"]["reason"], "privilegeWithdrawn",
        "{record}"
    );
    a.stop().await;
    b.stop().await;
}

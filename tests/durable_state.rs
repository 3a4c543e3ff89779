//! State that must not vanish with a Redis that does not persist: blocks come back from
//! the file beside the CA, and `/health` says what Redis keeps across a restart.

mod common;

use std::time::{Duration, Instant};

use common::app::test_settings;
use common::pki::quick_csr;
use common::redis::FSYNC_ALWAYS;
use common::{RedisServer, TestApp, error_code, within};
use provisiond::config::KeyList;
use provisiond::secret::Secret;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN: &str = "durable-state-admin-key-durable-state";
const WITHIN: Duration = Duration::from_secs(15);

fn settings(redis: &RedisServer, certs: &std::path::Path) -> provisiond::config::Settings {
    let mut s = test_settings(Some(redis), certs);
    s.admin.keys = KeyList(vec![Secret::new(ADMIN)]);
    s
}

async fn enroll(app: &TestApp, device: &str) -> Value {
    let token = app.token_for(device).await;
    let response = app.sign_csr(&token, device, &quick_csr(device)).await;
    assert_eq!(response.status(), StatusCode::OK, "enrolling {device}");
    response.json().await.unwrap()
}

async fn block(app: &TestApp, device: &str) {
    let path = format!("/api/v1/devices/{device}/revoke");
    let body = json!({ "reason": "keyCompromise", "block": true });
    let response = app.post_json_as(ADMIN, &path, &body).await;
    assert_eq!(response.status(), StatusCode::OK, "blocking {device}");
}

async fn unblock(app: &TestApp, device: &str) {
    let path = format!("/api/v1/devices/{device}/block");
    let response = app.delete_as(ADMIN, &path).await;
    assert_eq!(response.status(), StatusCode::OK, "unblocking {device}");
}

/// Waits until Redis holds the device's block again.
async fn block_back_in(redis: &RedisServer, device: &str) {
    let deadline = Instant::now() + WITHIN;
    let key = format!("mqtt-lite:blocked:{{{device}}}");
    while redis.cmd::<i64>(&["EXISTS", &key]) == 0 {
        assert!(
            Instant::now() < deadline,
            "the block of {device} never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_redis_lost_comes_back_from_the_file_and_a_lifted_one_does_not() {
    within(Duration::from_secs(60), async {
        let mut redis = RedisServer::start();
        let certs = tempfile::tempdir().unwrap();
        let app = TestApp::spawn_settings(settings(&redis, certs.path())).await;
        let health = app
            .wait_for_health(WITHIN, |h| h["redis"]["persistence"].is_string())
            .await;
        assert_eq!(health["redis"]["persistence"], "none", "{health}");

        enroll(&app, "kept-blocked").await;
        block(&app, "kept-blocked").await;
        enroll(&app, "lifted").await;
        block(&app, "lifted").await;
        unblock(&app, "lifted").await;
        let file = std::fs::read_to_string(certs.path().join("device-blocks.log")).unwrap();
        assert!(file.contains("blocked kept-blocked "), "{file}");
        assert!(file.contains("unblocked lifted "), "{file}");

        // Redis restarts empty: every block, record and note is gone.
        let epoch = app.health().await["redis"]["epoch"].as_u64().unwrap();
        redis.restart();
        assert_eq!(redis.cmd::<Vec<String>>(&["KEYS", "*blocked*"]).len(), 0);
        app.wait_for_health(WITHIN, |h| {
            h["status"] == "ok" && h["redis"]["epoch"].as_u64() > Some(epoch)
        })
        .await;
        block_back_in(&redis, "kept-blocked").await;
        let (status, code) = error_code(app.onboard("kept-blocked").await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::FORBIDDEN, "device_blocked")
        );
        // The lifted block stays lifted: the device enrolls.
        let lifted = "mqtt-lite:blocked:{lifted}";
        assert_eq!(redis.cmd::<i64>(&["EXISTS", lifted]), 0);
        enroll(&app, "lifted").await;
        app.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_issued_while_the_block_was_lost_is_revoked_when_it_comes_back() {
    within(Duration::from_secs(60), async {
        let mut redis = RedisServer::start();
        let certs = tempfile::tempdir().unwrap();
        let keeper = TestApp::spawn_settings(settings(&redis, certs.path())).await;
        enroll(&keeper, "slipped").await;
        block(&keeper, "slipped").await;
        keeper.stop().await;

        // Redis loses everything; an instance with another certs directory (which never
        // saw the block) lets the device enroll again meanwhile.
        redis.restart();
        let other = TestApp::spawn(Some(&redis)).await;
        let slipped = enroll(&other, "slipped").await;
        let serial = slipped["serial_number"].as_str().unwrap().to_owned();
        other.stop().await;

        // The instance that keeps the block starts: the block and a revocation follow.
        let keeper = TestApp::spawn_settings(settings(&redis, certs.path())).await;
        block_back_in(&redis, "slipped").await;
        let deadline = Instant::now() + WITHIN;
        loop {
            let device = keeper.get_json_as(ADMIN, "/api/v1/devices/slipped").await;
            let certificate = device["certificates"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["serial_number"] == serial.as_str())
                .cloned()
                .unwrap_or_default();
            if certificate["status"] == "revoked" {
                assert_eq!(certificate["reason"], "privilegeWithdrawn");
                assert!(device["blocked"].is_object(), "{device}");
                break;
            }
            assert!(Instant::now() < deadline, "never revoked: {device}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        keeper.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_what_redis_keeps_even_to_a_user_without_config() {
    within(Duration::from_secs(60), async {
        let redis = RedisServer::start_with(FSYNC_ALWAYS);
        let app = TestApp::spawn(Some(&redis)).await;
        let health = app
            .wait_for_health(WITHIN, |h| h["redis"]["persistence"].is_string())
            .await;
        assert_eq!(health["redis"]["persistence"], "always", "{health}");
        app.stop().await;

        // A locked-down user: INFO yes, CONFIG no. The append-only file is seen; its
        // sync policy cannot be.
        let _: String = redis.cmd(&[
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">app-password",
            "~*",
            "&*",
            "+@all",
            "-config",
        ]);
        let app = TestApp::spawn_with(Some(&redis), |s| {
            s.redis.username = Some("app".into());
            s.redis.password = Some(Secret::new("app-password"));
        })
        .await;
        let health = app
            .wait_for_health(WITHIN, |h| h["redis"]["persistence"].is_string())
            .await;
        assert_eq!(health["redis"]["persistence"], "aof", "{health}");
        app.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocks_file_that_cannot_be_written_stops_no_revocation() {
    within(Duration::from_secs(60), async {
        let mut redis = RedisServer::start();
        let certs = tempfile::tempdir().unwrap();
        let app = TestApp::spawn_settings(settings(&redis, certs.path())).await;
        // Where the file should be, a directory: it can be neither read nor written.
        let path = certs.path().join("device-blocks.log");
        std::fs::create_dir(&path).unwrap();
        let enrolled = enroll(&app, "unfiled").await;
        block(&app, "unfiled").await;
        let device = app.get_json_as(ADMIN, "/api/v1/devices/unfiled").await;
        let serial = enrolled["serial_number"].as_str().unwrap();
        let certificate = device["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["serial_number"] == serial)
            .unwrap();
        assert_eq!(certificate["status"], "revoked", "{device}");
        assert!(device["blocked"].is_object());

        // A loss of writes while the file is unreadable: the server is back on Redis at a
        // new epoch and enrolls; once the file is mended, a block is written to it again.
        let epoch = app.health().await["redis"]["epoch"].as_u64().unwrap();
        redis.restart();
        app.wait_for_health(WITHIN, |h| {
            h["status"] == "ok" && h["redis"]["epoch"].as_u64() > Some(epoch)
        })
        .await;
        enroll(&app, "after-loss").await;
        std::fs::remove_dir(&path).unwrap();
        block(&app, "after-loss").await;
        let file = std::fs::read_to_string(&path).unwrap();
        assert!(file.contains("blocked after-loss "), "{file}");
        app.stop().await;
    })
    .await;
}

//! Token life: single use under concurrency, replacement, expiry, in both stores.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::pki::{openssl_csr, quick_csr};
use common::{RedisServer, TestApp, error_code, jti_of};
use redis::Commands;
use reqwest::StatusCode;

async fn replay_is_refused(app: &TestApp) {
    let token = app.token_for("replay-1").await;
    let csr = quick_csr("replay-1");
    assert_eq!(
        app.sign_csr(&token, "replay-1", &csr).await.status(),
        StatusCode::OK
    );
    let again = app.sign_csr(&token, "replay-1", &csr).await;
    assert_eq!(
        error_code(again).await,
        (StatusCode::UNAUTHORIZED, "token_used".into())
    );
}

#[tokio::test]
async fn a_replayed_token_is_refused_with_token_used_in_redis() {
    let redis = RedisServer::start();
    replay_is_refused(&TestApp::spawn(Some(&redis)).await).await;
}

#[tokio::test]
async fn a_replayed_token_is_refused_with_token_used_in_memory() {
    replay_is_refused(&TestApp::spawn(None).await).await;
}

/// 64 requests carrying one token, all in flight at once: exactly one certificate.
async fn one_token_signs_once_under_concurrency(app: Arc<TestApp>) {
    let token = Arc::new(app.token_for("race-1").await);
    let csr = Arc::new(quick_csr("race-1"));
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (app, token, csr) = (app.clone(), token.clone(), csr.clone());
        requests.spawn(async move { app.sign_csr(&token, "race-1", &csr).await });
    }
    let (mut signed, mut used) = (0, 0);
    while let Some(response) = requests.join_next().await {
        let response = response.unwrap();
        match response.status() {
            StatusCode::OK => signed += 1,
            _ => {
                assert_eq!(
                    error_code(response).await,
                    (StatusCode::UNAUTHORIZED, "token_used".into())
                );
                used += 1;
            }
        }
    }
    assert_eq!((signed, used), (1, 63));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_uses_of_one_token_sign_exactly_once_in_redis() {
    let redis = RedisServer::start();
    one_token_signs_once_under_concurrency(Arc::new(TestApp::spawn(Some(&redis)).await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_uses_of_one_token_sign_exactly_once_in_memory() {
    one_token_signs_once_under_concurrency(Arc::new(TestApp::spawn(None).await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_redis_let_one_token_sign_once() {
    let redis = RedisServer::start();
    let certs = tempfile::tempdir().unwrap();
    let settings = common::app::test_settings(Some(&redis), certs.path());
    let a = Arc::new(TestApp::spawn_settings(settings.clone()).await);
    let b = Arc::new(TestApp::spawn_settings(settings).await);
    let token = Arc::new(a.token_for("shared-1").await);
    let csr = Arc::new(quick_csr("shared-1"));
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..32 {
        let app = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (token, csr) = (token.clone(), csr.clone());
        requests.spawn(async move { app.sign_csr(&token, "shared-1", &csr).await.status() });
    }
    let statuses = requests.join_all().await;
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1);
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::UNAUTHORIZED)
    );
}

async fn re_onboarding_kills_the_previous_token(app: &TestApp) {
    let first = app.token_for("again-1").await;
    let second = app.token_for("again-1").await;
    let csr = quick_csr("again-1");
    let old = app.sign_csr(&first, "again-1", &csr).await;
    assert_eq!(
        error_code(old).await,
        (StatusCode::UNAUTHORIZED, "token_used".into())
    );
    assert_eq!(
        app.sign_csr(&second, "again-1", &csr).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn re_onboarding_a_device_kills_its_previous_token_in_redis() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis)).await;

    let first = app.token_for("again-2").await;
    let second = app.token_for("again-2").await;
    let mut conn = redis.connection();
    let keys: Vec<String> = conn.keys("mqtt-lite:*{again-2}*").unwrap();
    let mut expected = vec![
        "mqtt-lite:device:{again-2}".to_owned(),
        format!("mqtt-lite:token:{{again-2}}:{}", jti_of(&second)),
    ];
    let mut keys = keys;
    keys.sort();
    expected.sort();
    assert_eq!(keys, expected, "only the newest token remains");
    let pending: String = conn.get("mqtt-lite:device:{again-2}").unwrap();
    assert_eq!(pending, jti_of(&second));
    assert_ne!(jti_of(&first), jti_of(&second));

    re_onboarding_kills_the_previous_token(&app).await;
}

#[tokio::test]
async fn re_onboarding_a_device_kills_its_previous_token_in_memory() {
    re_onboarding_kills_the_previous_token(&TestApp::spawn(None).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_re_onboarding_leaves_exactly_one_live_token() {
    let redis = RedisServer::start();
    let app = Arc::new(TestApp::spawn(Some(&redis)).await);
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let app = app.clone();
        requests.spawn(async move { app.token_for("storm-1").await });
    }
    let tokens = requests.join_all().await;
    let mut conn = redis.connection();
    let keys: Vec<String> = conn.keys("mqtt-lite:token:{storm-1}:*").unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(
        app.health().await["memory"]["tokenCount"],
        0,
        "contention in Redis is not a reason to issue into memory"
    );
    let csr = quick_csr("storm-1");
    let mut signed = 0;
    for token in &tokens {
        if app.sign_csr(token, "storm-1", &csr).await.status() == StatusCode::OK {
            signed += 1;
        }
    }
    assert_eq!(signed, 1);
}

async fn tokens_expire_with_their_ttl(app: &TestApp) {
    let token = app.token_for("short-1").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let csr = openssl_csr("p256", "short-1", &[]);
    let response = app.sign_csr(&token, "short-1", &csr.csr_pem).await;
    assert_eq!(
        error_code(response).await,
        (StatusCode::UNAUTHORIZED, "token_expired".into())
    );
}

#[tokio::test]
async fn tokens_expire_after_their_ttl_in_redis() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(Some(&redis), |s| s.tokens.ttl_seconds = 1).await;
    app.token_for("short-0").await;
    let mut conn = redis.connection();
    let ttl: i64 = conn.ttl("mqtt-lite:device:{short-0}").unwrap();
    assert_eq!(ttl, 1);
    tokens_expire_with_their_ttl(&app).await;
    // Redis dropped the keys itself.
    let left: Vec<String> = conn.keys("mqtt-lite:*{short-*").unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn tokens_expire_after_their_ttl_in_memory() {
    let app = TestApp::spawn_with(None, |s| s.tokens.ttl_seconds = 1).await;
    tokens_expire_with_their_ttl(&app).await;
    // Gone at once, long before the 60 s sweep.
    assert_eq!(app.health().await["memory"]["tokenCount"], 0);
}

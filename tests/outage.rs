//! Losing Redis and getting it back, under both fallback policies, without restarting
//! the server.

mod common;

use std::time::Duration;

use common::pki::quick_csr;
use common::{RedisServer, TestApp, error_code};
use provisiond::config::FallbackPolicy;
use redis::Commands;
use reqwest::StatusCode;

const WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_memory_fallback_the_server_degrades_and_recovers() {
    let mut redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis)).await;
    let held_in_redis = app.token_for("before-outage").await;

    redis.kill();
    let health = app
        .wait_for_health(WITHIN, |h| h["status"] == "degraded")
        .await;
    assert_eq!(health["storage"], "memory");
    assert_eq!(health["redis"]["connected"], false);

    // Onboarding goes on, into memory.
    let held_in_memory = app.token_for("during-outage").await;
    assert_eq!(app.health().await["memory"]["tokenCount"], 1);

    // A token that may sit in the dead Redis: come back later, not onboard again.
    let csr = quick_csr("before-outage");
    let response = app.sign_csr(&held_in_redis, "before-outage", &csr).await;
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        error_code(response).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable".into()
        )
    );
    // A token issued into memory works during the outage.
    let csr = quick_csr("during-outage");
    assert_eq!(
        app.sign_csr(&held_in_memory, "during-outage", &csr)
            .await
            .status(),
        StatusCode::OK
    );

    redis.restart();
    let health = app.wait_for_health(WITHIN, |h| h["status"] == "ok").await;
    assert_eq!(health["storage"], "redis");
    assert_eq!(health["redis"]["connected"], true);

    // New tokens go to Redis again.
    app.token_for("after-outage").await;
    let mut conn = redis.connection();
    let pending: Option<String> = conn.get("mqtt-lite:device:{after-outage}").unwrap();
    assert!(pending.is_some(), "the new token is in Redis");
    let csr = quick_csr("after-outage");
    let token = app.token_for("after-outage").await;
    assert_eq!(
        app.sign_csr(&token, "after-outage", &csr).await.status(),
        StatusCode::OK
    );
    // The restarted Redis kept nothing: the old token is simply gone now.
    let csr = quick_csr("before-outage");
    let response = app.sign_csr(&held_in_redis, "before-outage", &csr).await;
    assert_eq!(error_code(response).await.1, "token_used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_token_issued_during_an_outage_outranks_an_older_one_in_redis() {
    let mut redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis)).await;
    // Pause rather than kill, so Redis keeps the older token through the outage.
    let older = app.token_for("flip-1").await;
    redis.pause();
    let cut = app
        .wait_for_health(WITHIN, |h| h["status"] == "degraded")
        .await;
    assert_eq!(cut["storage"], "memory");
    let newer = app.token_for("flip-1").await;
    redis.resume();
    app.wait_for_health(WITHIN, |h| h["status"] == "ok").await;

    let csr = quick_csr("flip-1");
    let response = app.sign_csr(&older, "flip-1", &csr).await;
    assert_eq!(
        error_code(response).await.1,
        "token_used",
        "the replaced token is dead"
    );
    assert_eq!(
        app.sign_csr(&newer, "flip-1", &csr).await.status(),
        StatusCode::OK
    );
    redis.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fallback_none_an_outage_is_a_503_until_redis_returns() {
    let mut redis = RedisServer::start();
    let app = TestApp::spawn_with(Some(&redis), |s| s.redis.fallback = FallbackPolicy::None).await;
    app.token_for("strict-1").await;

    redis.kill();
    app.wait_for_health(WITHIN, |h| h["status"] == "unavailable")
        .await;
    let response = app.onboard("strict-2").await;
    assert_eq!(response.headers()["retry-after"].to_str().unwrap(), "2");
    assert_eq!(
        error_code(response).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable".into()
        )
    );
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let live = app.client.get(app.url("/livez")).send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);

    redis.restart();
    app.wait_for_health(WITHIN, |h| h["status"] == "ok").await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let token = app.token_for("strict-2").await;
    let csr = quick_csr("strict-2");
    assert_eq!(
        app.sign_csr(&token, "strict-2", &csr).await.status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_without_redis_serves_from_memory_and_moves_to_redis_when_it_appears() {
    let mut redis = RedisServer::start();
    redis.kill();
    let app = TestApp::spawn(Some(&redis)).await;
    let health = app.health().await;
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["storage"], "memory");
    let token = app.token_for("early-1").await;

    redis.restart();
    app.wait_for_health(WITHIN, |h| h["storage"] == "redis")
        .await;
    // The memory token still works after the switch.
    let csr = quick_csr("early-1");
    assert_eq!(
        app.sign_csr(&token, "early-1", &csr).await.status(),
        StatusCode::OK
    );
}

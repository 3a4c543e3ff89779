//! A token, a replaced token and a derived-mode proof are each accepted at most once,
//! across every storage switch: Redis paused and back, Redis restarted from a dump that
//! lacks recent writes, a replica promoted before it copied a consume. Each test is the
//! reproduction of a hole a security review found, driven over HTTP against a real Redis.

mod common;

use std::time::Duration;

use common::pki::quick_csr;
use common::proxy::SwitchableFront;
use common::redis::{FSYNC_ALWAYS, NOT_PERSISTENT};
use common::{RedisServer, TestApp, error_code};
use provisiond::auth::derived;
use provisiond::clock::unix_now;
use provisiond::config::OnboardingMode;
use provisiond::secret::Secret;
use redis::Commands;
use reqwest::StatusCode;

const WITHIN: Duration = Duration::from_secs(10);
const GROUP_SECRET: &str = "factory-group-secret-factory-group-secret";

async fn sign(app: &TestApp, token: &str, device: &str) -> (StatusCode, String) {
    let response = app.sign_csr(token, device, &quick_csr(device)).await;
    if response.status() == StatusCode::OK {
        return (StatusCode::OK, "ok".into());
    }
    error_code(response).await
}

fn ok() -> (StatusCode, String) {
    (StatusCode::OK, "ok".into())
}

fn used() -> (StatusCode, String) {
    (StatusCode::UNAUTHORIZED, "token_used".into())
}

async fn degraded(app: &TestApp) {
    app.wait_for_health(WITHIN, |h| h["status"] == "degraded")
        .await;
}

async fn back_on_redis(app: &TestApp) -> serde_json::Value {
    app.wait_for_health(WITHIN, |h| h["status"] == "ok").await
}

/// Waits until the server has checked a restarted Redis and found it lost writes.
async fn loss_noticed(app: &TestApp, epoch_before: &serde_json::Value) -> serde_json::Value {
    let before = epoch_before.as_u64().expect("an epoch");
    app.wait_for_health(WITHIN, |h| {
        h["status"] == "ok" && h["redis"]["epoch"].as_u64() > Some(before)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_replaced_during_an_outage_stays_dead_when_redis_returns() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis)).await;
    let t1 = app.token_for("swap-1").await;

    redis.pause();
    degraded(&app).await;
    let t2 = app.token_for("swap-1").await;
    assert_eq!(sign(&app, &t1, "swap-1").await, used());
    redis.resume();
    back_on_redis(&app).await;

    // The review's sequence: the new token, then the old one.
    assert_eq!(sign(&app, &t2, "swap-1").await, ok());
    assert_eq!(sign(&app, &t1, "swap-1").await, used());

    // And Redis itself no longer holds the replaced token once it is reconciled.
    let health = app
        .wait_for_health(WITHIN, |h| h["memory"]["staleInRedis"] == 0)
        .await;
    assert_eq!(health["storage"], "redis");
    let mut conn = redis.connection();
    let pending: Option<String> = conn.get("mqtt-lite:device:{swap-1}").unwrap();
    assert_eq!(pending, None, "the replaced token was deleted from Redis");
    assert_eq!(sign(&app, &t1, "swap-1").await, used());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_token_is_refused_before_the_new_one_is_used_too() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(&redis)).await;
    let t1 = app.token_for("swap-2").await;
    redis.pause();
    degraded(&app).await;
    let t2 = app.token_for("swap-2").await;
    redis.resume();
    back_on_redis(&app).await;

    assert_eq!(sign(&app, &t1, "swap-2").await, used());
    assert_eq!(sign(&app, &t2, "swap-2").await, ok());
    assert_eq!(sign(&app, &t2, "swap-2").await, used());
    // Onboarding again through Redis works as ever.
    let t3 = app.token_for("swap-2").await;
    assert_eq!(sign(&app, &t3, "swap-2").await, ok());
}

fn derived_app_settings(s: &mut provisiond::config::Settings) {
    s.onboarding.mode = OnboardingMode::Derived;
    s.onboarding.group_secret = Some(Secret::new(GROUP_SECRET));
    s.onboarding.clock_skew_seconds = 2;
}

fn proof(device: &str, ts: u64) -> String {
    let key = derived::device_key(GROUP_SECRET.as_bytes(), device);
    derived::authorization(&key, device, ts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_derived_proof_is_accepted_once_across_an_outage() {
    let redis = RedisServer::start();
    let app = TestApp::spawn_with(Some(&redis), derived_app_settings).await;
    let now = unix_now();
    let used_before = proof("sig-1", now);
    assert_eq!(
        app.onboard_with("sig-1", &used_before).await.status(),
        StatusCode::OK
    );

    redis.pause();
    degraded(&app).await;
    // Replayed while the shared replay memory is away: not accepted.
    let replay = app.onboard_with("sig-1", &used_before).await;
    assert_eq!(
        error_code(replay).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable".into()
        )
    );
    // A fresh proof during the outage is not accepted either, so none can be replayed
    // once Redis is back.
    let during = proof("sig-1", now + 1);
    assert_eq!(
        app.onboard_with("sig-1", &during).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Other onboarding modes keep working from memory; this one says why it waits.
    assert_eq!(app.health().await["storage"], "memory");
    redis.resume();
    back_on_redis(&app).await;

    assert_eq!(
        app.onboard_with("sig-1", &during).await.status(),
        StatusCode::OK
    );
    for replayed in [&used_before, &during] {
        let response = app.onboard_with("sig-1", replayed).await;
        assert_eq!(
            error_code(response).await,
            (StatusCode::UNAUTHORIZED, "unauthorized".into())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consume_lost_with_a_redis_restart_from_a_dump_does_not_give_a_second_certificate() {
    let mut redis = RedisServer::start_with(NOT_PERSISTENT);
    let app = TestApp::spawn(Some(&redis)).await;
    let consumed = app.token_for("dump-1").await;
    let pending = app.token_for("dump-2").await;
    let _: () = redis.cmd(&["SAVE"]);
    assert_eq!(sign(&app, &consumed, "dump-1").await, ok());
    let epoch = app.health().await["redis"]["epoch"].clone();

    redis.restart();
    // The dump brought the consumed token back to Redis...
    let mut conn = redis.connection();
    let back: Option<String> = conn.get("mqtt-lite:device:{dump-1}").unwrap();
    assert!(back.is_some(), "the dump should hold the token as pending");
    let health = loss_noticed(&app, &epoch).await;
    assert!(health["redis"]["lostWritesAt"].is_string(), "{health}");

    // ...but it is not accepted a second time, and neither is any token from before.
    assert_eq!(sign(&app, &consumed, "dump-1").await, used());
    assert_eq!(sign(&app, &pending, "dump-2").await, used());
    // Devices onboard again.
    let fresh = app.token_for("dump-2").await;
    assert_eq!(sign(&app, &fresh, "dump-2").await, ok());

    // An instance started after the loss knows of it too.
    let late = TestApp::spawn(Some(&redis)).await;
    assert_eq!(sign(&late, &consumed, "dump-1").await, used());
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("provisiond_redis_lost_writes_total ") && !l.ends_with(" 0")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_empty_is_not_trusted_for_tokens_from_before() {
    let mut redis = RedisServer::start_with(NOT_PERSISTENT);
    let app = TestApp::spawn(Some(&redis)).await;
    let before = app.token_for("empty-1").await;
    let epoch = app.health().await["redis"]["epoch"].clone();
    redis.restart();
    loss_noticed(&app, &epoch).await;
    assert_eq!(sign(&app, &before, "empty-1").await, used());
    let after = app.token_for("empty-1").await;
    assert_eq!(sign(&app, &after, "empty-1").await, ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_appendfsync_always_a_restart_loses_nothing_and_refuses_nothing() {
    let mut redis = RedisServer::start_with(FSYNC_ALWAYS);
    let app = TestApp::spawn(Some(&redis)).await;
    let consumed = app.token_for("aof-1").await;
    let pending = app.token_for("aof-2").await;
    assert_eq!(sign(&app, &consumed, "aof-1").await, ok());
    let epoch = app.health().await["redis"]["epoch"].clone();

    redis.restart();
    app.wait_for_health(WITHIN, |h| h["status"] == "ok").await;
    // Make sure the check of the new Redis process has run before looking.
    let deadline = std::time::Instant::now() + WITHIN;
    let health = loop {
        let response = app.sign_csr(&pending, "aof-2", &quick_csr("aof-2")).await;
        if response.status() != StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "the pending token survived"
            );
            break app.health().await;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "redis never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(health["redis"]["epoch"], epoch, "no loss was declared");
    assert_eq!(sign(&app, &consumed, "aof-1").await, used());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_loss_derived_proofs_from_before_wait_until_they_are_too_old() {
    let mut redis = RedisServer::start_with(NOT_PERSISTENT);
    let app = TestApp::spawn_with(Some(&redis), derived_app_settings).await;
    let now = unix_now();
    let used_before = proof("lost-sig", now);
    assert_eq!(
        app.onboard_with("lost-sig", &used_before).await.status(),
        StatusCode::OK
    );
    let epoch = app.health().await["redis"]["epoch"].clone();
    redis.restart();
    loss_noticed(&app, &epoch).await;
    let replay = app.onboard_with("lost-sig", &used_before).await;
    let retry_after: u64 = replay.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    assert_eq!(
        error_code(replay).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable".into()
        )
    );
    // Once every proof from before the loss is past the clock skew, new ones pass.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let fresh = proof("lost-sig", unix_now());
    let response = app.onboard_with("lost-sig", &fresh).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{:?}",
        response.text().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_promoted_before_it_copied_a_consume_does_not_give_a_second_certificate() {
    // Even a primary that fsyncs every write loses what its replica had not copied.
    let mut primary = RedisServer::start_with(FSYNC_ALWAYS);
    let replica = RedisServer::start_with(FSYNC_ALWAYS);
    // The replication link goes through a front too, so that the test can cut it.
    let link = SwitchableFront::start(primary.port()).await;
    replica.replicate(link.port).await;
    let front = SwitchableFront::start(primary.port()).await;
    let app = TestApp::spawn_with(None, |s| {
        s.redis.enabled = true;
        s.redis.url = Some(front.url());
    })
    .await;
    let token = app.token_for("failover-1").await;
    let deadline = std::time::Instant::now() + WITHIN;
    while replica
        .cmd::<Option<String>>(&["GET", "mqtt-lite:device:{failover-1}"])
        .is_none()
    {
        assert!(std::time::Instant::now() < deadline, "never copied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let epoch = app.health().await["redis"]["epoch"].clone();

    // The link breaks; the consume reaches only the primary, which then dies.
    link.switch_to(common::redis::free_port());
    assert_eq!(sign(&app, &token, "failover-1").await, ok());
    primary.kill();
    let _: () = replica.cmd(&["REPLICAOF", "NO", "ONE"]);
    front.switch_to(replica.port());

    loss_noticed(&app, &epoch).await;
    let stale: Option<String> = replica.cmd(&["GET", "mqtt-lite:device:{failover-1}"]);
    assert!(
        stale.is_some(),
        "the promoted replica still holds the token as pending"
    );
    assert_eq!(sign(&app, &token, "failover-1").await, used());
    let fresh = app.token_for("failover-1").await;
    assert_eq!(sign(&app, &fresh, "failover-1").await, ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_during_an_outage_still_refuses_the_replaced_token() {
    let redis = RedisServer::start();
    let certs = tempfile::tempdir().unwrap();
    let settings = common::app::test_settings(Some(&redis), certs.path());
    let app = TestApp::spawn_settings(settings.clone()).await;
    let t1 = app.token_for("crash-1").await;
    redis.pause();
    degraded(&app).await;
    let t2 = app.token_for("crash-1").await;
    assert_eq!(sign(&app, &t2, "crash-1").await, ok());
    // The instance goes away (its memory with it) before Redis returns.
    app.stop().await;
    let journal = certs.path().join("stale-in-redis");
    assert_eq!(std::fs::read_dir(&journal).unwrap().count(), 1);

    let again = TestApp::spawn_settings(settings).await;
    assert_eq!(again.health().await["memory"]["staleInRedis"], 1);
    redis.resume();
    back_on_redis(&again).await;
    assert_eq!(sign(&again, &t1, "crash-1").await, used());
    again
        .wait_for_health(WITHIN, |h| h["memory"]["staleInRedis"] == 0)
        .await;
    let pending: Option<String> = redis.cmd(&["GET", "mqtt-lite:device:{crash-1}"]);
    assert_eq!(pending, None, "the replaced token was deleted from Redis");
    assert_eq!(
        std::fs::read_dir(&journal).unwrap().count(),
        0,
        "journal kept"
    );
    let fresh = again.token_for("crash-1").await;
    assert_eq!(sign(&again, &fresh, "crash-1").await, ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_replicas_a_consume_no_replica_acknowledged_is_a_503() {
    let primary = RedisServer::start();
    let replica = RedisServer::start();
    replica.replicate(primary.port()).await;
    let app = TestApp::spawn_with(Some(&primary), |s| {
        s.redis.wait_replicas = 1;
        s.redis.wait_timeout_ms = 300;
    })
    .await;
    // Until a health check has seen the replica online, writes are refused up front.
    app.wait_for_replicas(WITHIN).await;
    let token = app.token_for("waited-1").await;
    assert_eq!(sign(&app, &token, "waited-1").await, ok());
    let copied: Option<String> = replica.cmd(&["GET", "mqtt-lite:device:{waited-1}"]);
    assert_eq!(copied, None, "the replica has the consume");

    // The replica stops acknowledging: no certificate on a consume it may not have.
    replica.pause();
    let token = app.token_for("waited-2").await;
    let refused = app
        .sign_csr(&token, "waited-2", &quick_csr("waited-2"))
        .await;
    assert_eq!(
        error_code(refused).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable".into()
        )
    );
    // Redis itself is fine: the server did not fall back to memory.
    assert_eq!(app.health().await["storage"], "redis");
    replica.resume();
    // The token stays used; the device onboards again.
    assert_eq!(sign(&app, &token, "waited-2").await, used());
    let again = app.token_for("waited-2").await;
    assert_eq!(sign(&app, &again, "waited-2").await, ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_replicas_a_failover_keeps_pending_tokens_and_consumes() {
    let mut primary = RedisServer::start_with(FSYNC_ALWAYS);
    let replica = RedisServer::start_with(FSYNC_ALWAYS);
    replica.replicate(primary.port()).await;
    let front = SwitchableFront::start(primary.port()).await;
    let app = TestApp::spawn_with(None, |s| {
        s.redis.enabled = true;
        s.redis.url = Some(front.url());
        s.redis.wait_replicas = 1;
        // Generous: primary and replicas fsync every write, and on CI, where the disk is
        // busy with builds, a write and its ack once took over 500 ms, then over 2 s (a
        // 503 before any failover). This test is about the failover; the timeout's own
        // refusal is the test above.
        s.redis.response_timeout_ms = 10_000;
        s.redis.wait_timeout_ms = 5_000;
    })
    .await;
    let consumed = app.token_for("waited-failover-1").await;
    assert_eq!(sign(&app, &consumed, "waited-failover-1").await, ok());
    let pending = app.token_for("waited-failover-2").await;
    let deadline = std::time::Instant::now() + WITHIN;
    while replica
        .cmd::<Option<String>>(&["GET", "mqtt-lite:device:{waited-failover-2}"])
        .is_none()
    {
        assert!(std::time::Instant::now() < deadline, "never copied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let epoch = app.health().await["redis"]["epoch"].clone();

    primary.kill();
    let _: () = replica.cmd(&["REPLICAOF", "NO", "ONE"]);
    // The promoted primary gets a replica of its own, as Sentinel would reconfigure one.
    let spare = RedisServer::start_with(FSYNC_ALWAYS);
    spare.replicate(replica.port()).await;
    front.switch_to(replica.port());

    // Once the promoted replica is checked, the pending token still works...
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        let answer = sign(&app, &pending, "waited-failover-2").await;
        if answer.0 != StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(answer, ok(), "the pending token survived the failover");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "redis never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.health().await["redis"]["epoch"],
        epoch,
        "no loss declared"
    );
    // ...and the consumed one stays consumed.
    assert_eq!(sign(&app, &consumed, "waited-failover-1").await, used());
}

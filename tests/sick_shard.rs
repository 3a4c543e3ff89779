//! One sick shard must not take the storage down: with `redis.wait_replicas`, a shard
//! whose promoted primary has no replica of its own refuses its devices' writes at once
//! (503, the primary named, nothing written), while every other shard serves as before;
//! `/health` names the primary. On a Redis Cluster under load on two instances, and on
//! Sentinel. Each test spawns its own Redis processes (stopped on drop) and is bounded.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{RedisCluster, SentinelSetup};
use common::pki::quick_csr;
use common::{TestApp, error_code, within};
use provisiond::config::{FallbackPolicy, List, Settings};
use reqwest::StatusCode;
use serde_json::Value;

fn waiting_for_a_replica(mut s: Settings) -> Settings {
    s.redis.fallback = FallbackPolicy::None;
    s.redis.wait_replicas = 1;
    s.redis.wait_timeout_ms = 500;
    s.redis.response_timeout_ms = 1000;
    s
}

async fn token(app: &TestApp, device: &str) -> String {
    let response = app.onboard(device).await;
    assert_eq!(response.status(), StatusCode::OK, "{device}");
    let body: Value = response.json().await.unwrap();
    body["provisioning_token"].as_str().unwrap().to_owned()
}

/// What sign-csr answers for the token: the status, the error message, Retry-After.
async fn sign(app: &TestApp, device: &str, token: &str) -> (StatusCode, String, Option<String>) {
    let response = app.sign_csr(token, device, &quick_csr(device)).await;
    let status = response.status();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap_or("").to_owned();
    (status, message, retry)
}

/// Polls `/health` until it names `primary` among those missing replicas (or, with
/// `None`, until none is).
async fn replicas_missing(app: &TestApp, primary: Option<&str>) -> Value {
    app.wait_for_health(Duration::from_secs(20), |h| {
        let missing = h["redis"]["replicasMissing"].as_array().unwrap();
        match primary {
            Some(primary) => missing.iter().any(|m| m["primary"] == primary),
            None => missing.is_empty() && h["status"] == "ok",
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_without_replicas_is_refused_alone_under_load_on_two_instances() {
    let mut cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .unwrap();
    let certs = tempfile::tempdir().unwrap();
    let settings = || {
        let mut s = common::app::test_settings(None, certs.path());
        s.redis.enabled = true;
        s.redis.url = None;
        s.redis.cluster_nodes = List(cluster.urls());
        waiting_for_a_replica(s)
    };
    let a = TestApp::spawn_settings(settings()).await;
    let b = TestApp::spawn_settings(settings()).await;
    within(Duration::from_secs(150), async {
        for app in [&a, &b] {
            app.wait_for_health(Duration::from_secs(20), |h| h["redis"]["primaries"] == 3)
                .await;
            replicas_missing(app, None).await;
        }
        let load = [
            tokio::spawn(common::bin::bench_flow(a.address.clone(), 8, 10)),
            tokio::spawn(common::bin::bench_flow(b.address.clone(), 8, 10)),
        ];
        tokio::time::sleep(Duration::from_secs(2)).await;

        // A primary dies and stays dead: its replica takes over, with no replica of its own.
        let victim = cluster.primaries()[0];
        let healthy: Vec<u16> = cluster.primaries()[1..].to_vec();
        cluster.node(victim).kill();
        let cluster = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while cluster.primaries().contains(&victim) || cluster.primaries().len() < 3 {
                assert!(Instant::now() < deadline, "no replica took over");
                std::thread::sleep(Duration::from_millis(50));
            }
            cluster
        })
        .await
        .unwrap();
        let promoted = *cluster
            .primaries()
            .iter()
            .find(|p| !healthy.contains(p))
            .unwrap();
        let sick_primary = format!("127.0.0.1:{promoted}");
        for app in [&a, &b] {
            replicas_missing(app, Some(&sick_primary)).await;
        }

        // Per shard, through both instances: the healthy shards' devices get their
        // certificates; the sick shard's get a 503 that names the primary, at once, and
        // their tokens stay pending.
        let mut pending = Vec::new();
        for (round, app) in [&a, &b].into_iter().enumerate() {
            for port in &healthy {
                for device in cluster.devices_served_by(*port, &format!("healthy-{round}"), 10) {
                    let token = token(app, &device).await;
                    let (status, message, _) = sign(app, &device, &token).await;
                    assert_eq!(status, StatusCode::OK, "{device} on {port}: {message}");
                }
            }
            for device in cluster.devices_served_by(promoted, &format!("sick-{round}"), 10) {
                let token = token(app, &device).await;
                let (status, message, retry) = sign(app, &device, &token).await;
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{device}");
                assert!(message.contains(&sick_primary), "{message}");
                assert!(message.contains("0 of the 1 replicas"), "{message}");
                assert!(retry.is_some(), "{device}: no Retry-After");
                pending.push((app, device, token));
            }
        }
        for report in load {
            let report = report.await.unwrap();
            assert!(
                report["results"]["flow"]["ok"].as_u64() > Some(0),
                "{report}"
            );
        }

        // The dead machine comes back as the promoted primary's replica: the shard is
        // whole again, and the tokens refused meanwhile were never used.
        let mut cluster = cluster;
        let cluster = tokio::task::spawn_blocking(move || {
            cluster.node(victim).restart();
            cluster.wait_until_ok(Duration::from_secs(30));
            cluster
        })
        .await
        .unwrap();
        for app in [&a, &b] {
            replicas_missing(app, None).await;
        }
        for (app, device, token) in pending {
            let (status, message, _) = sign(app, &device, &token).await;
            assert_eq!(status, StatusCode::OK, "{device}: {message}");
        }
        drop(cluster);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_primary_promoted_without_a_replica_says_so() {
    let mut setup = SentinelSetup::start().await;
    let certs = tempfile::tempdir().unwrap();
    let mut s = common::app::test_settings(None, certs.path());
    s.redis.enabled = true;
    s.redis.url = None;
    s.redis.sentinels = List(setup.addresses());
    s.redis.sentinel_master = Some(common::cluster::MASTER_NAME.into());
    let app = TestApp::spawn_settings(waiting_for_a_replica(s)).await;
    within(Duration::from_secs(90), async {
        replicas_missing(&app, None).await;
        let device = "sentinel-sick";
        let first = token(&app, device).await;
        assert_eq!(sign(&app, device, &first).await.0, StatusCode::OK);

        setup.primary.kill();
        let promoted = format!("127.0.0.1:{}", setup.replica.port());
        let health = replicas_missing(&app, Some(&promoted)).await;
        assert_eq!(
            health["redis"]["replicasMissing"][0]["online"], 0,
            "{health}"
        );
        assert_eq!(
            health["redis"]["replicasMissing"][0]["wanted"], 1,
            "{health}"
        );
        let pending = token(&app, device).await;
        let (status, message, retry) = sign(&app, device, &pending).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{message}");
        assert!(message.contains(&promoted), "{message}");
        assert!(retry.is_some());
        let refused = app.sign_csr(&pending, device, &quick_csr(device)).await;
        assert_eq!(
            error_code(refused).await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable".into()
            )
        );
    })
    .await;
}

//! Several instances on Redis Cluster and on Sentinel: the single-use promise across
//! instances and slots, and under failover while `provisiond bench` runs. Each test
//! spawns its own Redis processes (stopped on drop, also after a failed assertion) and
//! is bounded in time.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{MASTER_NAME, RedisCluster, SentinelSetup};
use common::pki::quick_csr;
use common::{TestApp, error_code, within};
use provisiond::config::{FallbackPolicy, KeyList, List, Settings};
use provisiond::secret::Secret;
use reqwest::StatusCode;
use serde_json::Value;

const ADMIN: &str = "scale-admin-key-scale-admin-key-scale!";

fn on_cluster(cluster: &RedisCluster, certs: &std::path::Path) -> Settings {
    let mut s = common::app::test_settings(None, certs);
    s.redis.enabled = true;
    s.redis.url = None;
    s.redis.cluster_nodes = List(cluster.urls());
    s.admin.keys = KeyList(vec![Secret::new(ADMIN)]);
    s
}

fn on_sentinels(setup: &SentinelSetup, certs: &std::path::Path) -> Settings {
    let mut s = common::app::test_settings(None, certs);
    s.redis.enabled = true;
    s.redis.url = None;
    s.redis.sentinels = List(setup.addresses());
    s.redis.sentinel_master = Some(MASTER_NAME.into());
    s.admin.keys = KeyList(vec![Secret::new(ADMIN)]);
    s
}

/// Bounds a test: the processes it spawned stop when it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_a_cluster_keep_every_token_single_use() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .unwrap();
    within(Duration::from_secs(120), async {
        let certs = tempfile::tempdir().unwrap();
        let a = TestApp::spawn_settings(on_cluster(&cluster, certs.path())).await;
        let b = TestApp::spawn_settings(on_cluster(&cluster, certs.path())).await;
        for app in [&a, &b] {
            let health = app
                .wait_for_health(Duration::from_secs(20), |h| h["redis"]["primaries"] == 3)
                .await;
            assert_eq!(health["redis"]["mode"], "cluster", "{health}");
            assert_eq!(health["storage"], "redis", "{health}");
        }

        // Issued through A, used through B.
        let token = a.token_for("c-dev-1").await;
        let signed = b.sign_csr(&token, "c-dev-1", &quick_csr("c-dev-1")).await;
        assert_eq!(signed.status(), StatusCode::OK);
        let again = a.sign_csr(&token, "c-dev-1", &quick_csr("c-dev-1")).await;
        assert_eq!(error_code(again).await.1, "token_used");

        // 64 concurrent uses of one token over both instances: one certificate.
        let token = a.token_for("c-dev-2").await;
        let csr = quick_csr("c-dev-2");
        let mut uses = tokio::task::JoinSet::new();
        for i in 0..64 {
            let app = if i % 2 == 0 { &a } else { &b };
            let request = app
                .client
                .post(app.url("/api/v1/sign-csr"))
                .bearer_auth(&token)
                .json(&serde_json::json!({ "device_id": "c-dev-2", "csr": csr }));
            uses.spawn(async move { request.send().await.unwrap().status() });
        }
        let statuses = uses.join_all().await;
        let won = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        assert_eq!(won, 1, "{statuses:?}");
        assert!(
            statuses
                .iter()
                .all(|s| *s == StatusCode::OK || *s == StatusCode::UNAUTHORIZED)
        );

        // Re-onboarding through B kills A's token.
        let first = a.token_for("c-dev-3").await;
        let _second = b.token_for("c-dev-3").await;
        let dead = a.sign_csr(&first, "c-dev-3", &quick_csr("c-dev-3")).await;
        assert_eq!(error_code(dead).await.1, "token_used");

        // Device ids spread over every primary; each device's keys stay in its slot.
        for n in 0..60 {
            let app = if n % 2 == 0 { &a } else { &b };
            assert_eq!(
                app.onboard(&format!("spread-{n}")).await.status(),
                StatusCode::OK
            );
        }
        // Counted by the devices' own keys: every primary also holds the health probe's.
        for port in cluster.primaries() {
            let node = cluster.nodes.iter().find(|n| n.port() == port).unwrap();
            let devices: Vec<String> = node.cmd(&["KEYS", "mqtt-lite:device:{spread-*"]);
            assert!(
                !devices.is_empty(),
                "primary {port} holds none of the devices"
            );
        }
        let counted = a
            .wait_for_health(Duration::from_secs(10), |h| {
                h["redis"]["deviceCount"].as_u64() >= Some(61)
            })
            .await;
        assert!(
            counted["redis"]["tokenCount"].as_u64() >= Some(61),
            "{counted}"
        );

        // The registry, revocation and CRL work across slots and instances.
        let signed: Value = signed.json().await.unwrap();
        let serial = signed["serial_number"].as_str().unwrap();
        let revoked = a
            .client
            .post(a.url(&format!("/api/v1/certificates/{serial}/revoke")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status(), StatusCode::OK);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = b.crl_text().await;
            if text.contains(serial) {
                break;
            }
            assert!(Instant::now() < deadline, "B's CRL never listed it: {text}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Blocking, through the other instance.
        let blocked = b
            .client
            .post(b.url("/api/v1/devices/c-dev-1/revoke"))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({ "block": true }))
            .send()
            .await
            .unwrap();
        assert_eq!(blocked.status(), StatusCode::OK);
        assert_eq!(
            error_code(a.onboard("c-dev-1").await).await.1,
            "device_blocked"
        );
    })
    .await;
}

/// From the kill, tries a whole flow through each instance every 50 ms (for devices of
/// the failed shard), until every instance signs again; the window from the kill.
async fn serving_again(apps: &[&TestApp], devices: &[String], killed: Instant) -> Duration {
    let deadline = killed + Duration::from_secs(60);
    let mut next = 0;
    loop {
        let mut all = true;
        for app in apps {
            let device = &devices[next % devices.len()];
            next += 1;
            let onboarded = app.onboard(device).await;
            let served = if onboarded.status() == StatusCode::OK {
                let body: Value = onboarded.json().await.unwrap();
                let token = body["provisioning_token"].as_str().unwrap();
                app.sign_csr(token, device, &quick_csr(device))
                    .await
                    .status()
                    == StatusCode::OK
            } else {
                false
            };
            all &= served;
        }
        if all {
            return killed.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the instances never served again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every flow request either succeeded or got a 503 (or a connection cut while a node
/// died): nothing else.
fn only_unavailable(report: &Value) {
    let errors = report["results"]["flow"]["errors"].as_object().unwrap();
    for (code, n) in errors {
        assert!(
            code == "onboarding_failed"
                || code.contains("storage_unavailable")
                || code.contains("503"),
            "{n} flows failed with {code}: {report}"
        );
    }
    for endpoint in ["onboarding", "sign-csr"] {
        if let Some(errors) = report["results"][endpoint]["errors"].as_object() {
            for (code, n) in errors {
                assert!(
                    code.contains("storage_unavailable") || code.contains("503"),
                    "{n} {endpoint} requests failed with {code}: {report}"
                );
            }
        }
    }
}

/// Consumes tokens just before a failover, then presents each again after it: every
/// one must be refused.
async fn spent_tokens(app: &TestApp, prefix: &str, n: usize) -> Vec<(String, String)> {
    let mut spent = Vec::new();
    for i in 0..n {
        let device = format!("{prefix}-{i}");
        let token = app.token_for(&device).await;
        let signed = app.sign_csr(&token, &device, &quick_csr(&device)).await;
        assert_eq!(
            signed.status(),
            StatusCode::OK,
            "{}",
            signed.text().await.unwrap()
        );
        spent.push((device, token));
    }
    spent
}

async fn still_spent(app: &TestApp, spent: &[(String, String)]) {
    for (device, token) in spent {
        let replay = app.sign_csr(token, device, &quick_csr(device)).await;
        assert_eq!(
            error_code(replay).await,
            (StatusCode::UNAUTHORIZED, "token_used".into()),
            "{device}'s token worked twice"
        );
    }
}

fn failover_settings(mut s: Settings) -> Settings {
    // Answer 503 rather than serve from memory, and count a consume only once a replica
    // has it: a failover then loses no consume.
    s.redis.fallback = FallbackPolicy::None;
    s.redis.wait_replicas = 1;
    s.redis.wait_timeout_ms = 500;
    s.redis.response_timeout_ms = 1000;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_primary_killed_under_load_fails_over_without_a_second_use() {
    let mut cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .unwrap();
    let certs = tempfile::tempdir().unwrap();
    let a = TestApp::spawn_settings(failover_settings(on_cluster(&cluster, certs.path()))).await;
    let b = TestApp::spawn_settings(failover_settings(on_cluster(&cluster, certs.path()))).await;
    within(Duration::from_secs(150), async {
        for app in [&a, &b] {
            app.wait_for_health(Duration::from_secs(20), |h| h["redis"]["primaries"] == 3)
                .await;
            app.wait_for_replicas(Duration::from_secs(20)).await;
        }
        let spent = spent_tokens(&a, "spent", 30).await;
        let load_a = tokio::spawn(common::bin::bench_flow(a.address.clone(), 16, 14));
        let load_b = tokio::spawn(common::bin::bench_flow(b.address.clone(), 16, 14));
        tokio::time::sleep(Duration::from_secs(3)).await;

        let victim = cluster.primaries()[0];
        let victims_devices = cluster.devices_served_by(victim, "shard-probe", 50);
        cluster.node(victim).kill();
        let killed = Instant::now();
        // The crashed machine comes back, and rejoins as the new primary's replica (with
        // redis.wait_replicas = 1, consumes in its slots wait for one).
        let cluster = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while cluster.primaries().contains(&victim) {
                assert!(Instant::now() < deadline, "no replica took over");
                std::thread::sleep(Duration::from_millis(50));
            }
            cluster.node(victim).restart();
            cluster
        })
        .await
        .unwrap();
        let failed_over = killed.elapsed();
        let window = serving_again(&[&a, &b], &victims_devices, killed).await;
        println!(
            "cluster failover: a replica took over {failed_over:?} after the kill; both \
             instances signed for the failed shard's devices again {window:?} after it"
        );
        let (report_a, report_b) = (load_a.await.unwrap(), load_b.await.unwrap());
        for report in [&report_a, &report_b] {
            only_unavailable(report);
            assert!(
                report["results"]["flow"]["ok"].as_u64() > Some(0),
                "{report}"
            );
        }
        println!(
            "cluster failover under load: flows ok {} + {}, failed {} + {}",
            report_a["results"]["flow"]["ok"],
            report_b["results"]["flow"]["ok"],
            report_a["results"]["flow"]["errors"],
            report_b["results"]["flow"]["errors"]
        );
        let cluster = tokio::task::spawn_blocking(move || {
            cluster.wait_until_ok(Duration::from_secs(30));
            cluster
        })
        .await
        .unwrap();
        assert_eq!(cluster.primaries().len(), 3);
        still_spent(&b, &spent).await;
        one_certificate_per_device(&a).await;
        drop(cluster);
    })
    .await;
}

/// The devices whose tokens were spent before the failover still have exactly one
/// certificate each.
async fn one_certificate_per_device(app: &TestApp) {
    for device in ["spent-0", "spent-1", "spent-29"] {
        let status = app
            .get_json_as(ADMIN, &format!("/api/v1/devices/{device}"))
            .await;
        assert_eq!(
            status["certificates"].as_array().map(Vec::len),
            Some(1),
            "{status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_under_load_is_followed_without_a_restart() {
    let mut setup = SentinelSetup::start().await;
    let certs = tempfile::tempdir().unwrap();
    let a = TestApp::spawn_settings(failover_settings(on_sentinels(&setup, certs.path()))).await;
    let b = TestApp::spawn_settings(failover_settings(on_sentinels(&setup, certs.path()))).await;
    within(Duration::from_secs(150), async {
        for app in [&a, &b] {
            let health = app
                .wait_for_health(Duration::from_secs(20), |h| h["redis"]["connected"] == true)
                .await;
            assert_eq!(health["redis"]["mode"], "sentinel", "{health}");
            app.wait_for_replicas(Duration::from_secs(20)).await;
        }
        let spent = spent_tokens(&a, "spent", 30).await;
        let load_a = tokio::spawn(common::bin::bench_flow(a.address.clone(), 16, 16));
        let load_b = tokio::spawn(common::bin::bench_flow(b.address.clone(), 16, 16));
        tokio::time::sleep(Duration::from_secs(3)).await;

        let old = setup.primary.port();
        setup.primary.kill();
        let killed = Instant::now();
        let deadline = killed + Duration::from_secs(30);
        while setup.primary_port() != Some(setup.replica.port()) {
            assert!(
                Instant::now() < deadline,
                "the sentinels never failed over from {old}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let failed_over = killed.elapsed();
        // The old primary comes back; the sentinels make it the new one's replica.
        setup.primary.restart();
        let devices: Vec<String> = (0..50).map(|n| format!("sentinel-probe-{n}")).collect();
        let window = serving_again(&[&a, &b], &devices, killed).await;
        println!(
            "sentinel failover: promoted {failed_over:?} after the kill; both instances \
             signed again {window:?} after it"
        );
        let (report_a, report_b) = (load_a.await.unwrap(), load_b.await.unwrap());
        for report in [&report_a, &report_b] {
            only_unavailable(report);
        }
        println!(
            "sentinel failover under load: flows ok {} + {}, failed {} + {}",
            report_a["results"]["flow"]["ok"],
            report_b["results"]["flow"]["ok"],
            report_a["results"]["flow"]["errors"],
            report_b["results"]["flow"]["errors"]
        );
        still_spent(&b, &spent).await;
        one_certificate_per_device(&a).await;
        // New work goes to the new primary.
        let token = b.token_for("after-failover").await;
        assert_eq!(
            a.sign_csr(&token, "after-failover", &quick_csr("after-failover"))
                .await
                .status(),
            StatusCode::OK
        );
    })
    .await;
}
